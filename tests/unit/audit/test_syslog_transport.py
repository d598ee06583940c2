"""The SIEM copy's messages: RFC 5424 with the record's chain place in structured data, framed
by octet counting (RFC 6587 section 3.4.1 / RFC 5425 section 4.3), and read back from a spool."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citygate.proxy.audit.chain import ChainHead, canonical, seal
from citygate.proxy.audit.sinks import rfc5424
from citygate.proxy.audit.syslog_transport import (
    chain_place,
    frame_size,
    octet_counted,
    split_frames,
    structured_data,
)

AT = datetime(2026, 11, 21, 17, 0, tzinfo=UTC)


def test_a_record_s_message_names_its_place_in_the_chain_and_carries_the_line_unchanged():
    line, head = seal({"event.action": "http-request", "n": 1}, ChainHead(40, "a" * 64), "vm1/worker-0")

    place = chain_place(line)
    message = rfc5424(
        line,
        facility=16,
        severity=6,
        app_name="citygate",
        hostname="vm1",
        procid=4242,
        structured=structured_data(place),
        at=AT,
    )

    assert place == (41, head.hash, "vm1/worker-0")
    assert message == (
        b"<134>1 2026-11-21T17:00:00.000000Z vm1 citygate 4242 audit "
        + f'[citygate@32473 seq="41" sha256="{head.hash}" chain="vm1/worker-0"] '.encode()
        + line.rstrip(b"\n")
    )


def test_a_published_chain_head_is_no_record_and_has_no_structured_data():
    head_line = canonical({"event.action": "audit-chain-head", "citygate.chain.seq": 41}) + b"\n"

    assert chain_place(head_line) is None
    assert structured_data(None) == "-"


def test_an_edited_line_is_not_given_a_place():
    line, _ = seal({"n": 1}, ChainHead(), "vm1/main")

    assert chain_place(line.replace(b'"n":1', b'"n":2')) is None


def test_param_values_are_escaped_as_rfc5424_says():
    # '"', '\' and ']' are escaped in a PARAM-VALUE (section 6.3.3); a machine's name is not checked.
    assert structured_data((7, "b" * 64, 'odd"name\\x]/main')) == (
        f'[citygate@32473 seq="7" sha256="{"b" * 64}" chain="odd\\"name\\\\x\\]/main"]'
    )
    assert structured_data((7, "b" * 64, None)) == f'[citygate@32473 seq="7" sha256="{"b" * 64}"]'


def test_a_frame_is_its_length_a_space_and_the_message():
    assert octet_counted(b"<134>1 - - - - - - {}") == b"21 <134>1 - - - - - - {}"
    assert frame_size(b"21 <134>1 -") == 24
    assert frame_size(b"<134>1") is None


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20), st.integers(min_value=0))
def test_frames_are_read_back_whole_however_the_bytes_are_cut(messages, cut):
    stream = b"".join(octet_counted(message) for message in messages)
    cut = cut % (len(stream) + 1)

    frames, used = split_frames(stream[:cut])
    rest, _ = split_frames(stream[used:])

    assert frames + rest == [octet_counted(message) for message in messages]
    assert used == sum(map(len, frames)) <= cut


@pytest.mark.parametrize("data", [b"abc <134>1", b"012 <134>1", b"1234567890123 x", b"-5 x"])
def test_bytes_that_are_no_frame_are_refused(data):
    with pytest.raises(ValueError, match="no frame length"):
        split_frames(data)
