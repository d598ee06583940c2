"""What the first bytes of a tunnel are, whatever the segmentation (addons/tunnel_start.py)."""

from __future__ import annotations

import random
import ssl

import pytest
from mitmproxy.tls import ClientHello

from citygate.addons.tunnel_start import MAX_START_BYTES, Kind, classify, server_names, sni_readable


def client_hello(sni: str | None) -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HELLO = client_hello("www.facebook.com")
REQUEST = b"GET /messages HTTP/1.1\r\nHost: www.facebook.com\r\nAccept: */*\r\n\r\n"


def every_prefix_waits_or_agrees(data: bytes) -> None:
    """The property that makes segmentation irrelevant: every proper prefix is WAIT, or the same answer."""
    final = classify(data)
    for cut in range(len(data)):
        early = classify(data[:cut])
        assert early.kind in (Kind.WAIT, final.kind), (cut, early, final)


def test_a_whole_client_hello_is_tls_with_its_sni():
    start = classify(HELLO)
    assert start.kind is Kind.TLS and start.standard_record
    assert start.hello is not None and start.hello.sni == "www.facebook.com"


def test_a_client_hello_split_anywhere_waits_until_whole():
    for cut in range(len(HELLO)):
        assert classify(HELLO[:cut]).kind is Kind.WAIT, cut
    every_prefix_waits_or_agrees(HELLO)


def test_a_client_hello_in_a_record_version_mitmproxy_does_not_take_is_still_read():
    start = classify(HELLO[:2] + b"\x05" + HELLO[3:])
    assert start.kind is Kind.TLS and not start.standard_record
    assert start.hello.sni == "www.facebook.com"


def test_a_client_hello_across_two_records_is_read():
    body = HELLO[5:]
    first, second = body[:40], body[40:]
    records = (
        HELLO[:3]
        + len(first).to_bytes(2, "big")
        + first
        + HELLO[:3]
        + len(second).to_bytes(2, "big")
        + second
    )
    start = classify(records)
    assert start.kind is Kind.TLS and start.hello.sni == "www.facebook.com"
    every_prefix_waits_or_agrees(records)


def test_a_request_head_split_anywhere_waits_until_whole():
    assert classify(REQUEST).kind is Kind.HTTP
    for cut in range(len(REQUEST)):
        assert classify(REQUEST[:cut]).kind is Kind.WAIT, cut


# Random tails from a fixed seed: the same bytes (and test ids) on every run.
_TAIL = random.Random(20261207)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"WA\x05\x02" + _TAIL.randbytes(40), id="whatsapp-noise-handshake"),
        pytest.param(b"\xef" + _TAIL.randbytes(63), id="mtproto-abridged"),
        pytest.param(b"\x00\x1c" + _TAIL.randbytes(28), id="dns-over-tcp"),
        pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n", id="ssh"),
        pytest.param(b"\x16\x02\x00", id="tls-major-version-2"),
        pytest.param(b"NICK someone\r\n", id="irc"),
        pytest.param(b"<?xml version='1.0'?>", id="xmpp"),
    ],
)
def test_bytes_that_are_neither_tls_nor_http_are_other(data):
    assert classify(data).kind is Kind.OTHER
    every_prefix_waits_or_agrees(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "does not start with a ClientHello"),
        (b"\x17\x03\x03\x00\x05hello", None),  # application data first: not TLS start, other
        (b"\x16\x03\x01\x00\x00", "record of 0 bytes"),
        (b"\x16\x03\x01\x00\x04\x01\x00\x00\x00", "cannot be parsed"),
    ],
)
def test_a_start_that_breaks_the_tls_format(data, problem):
    start = classify(data)
    if problem is None:
        assert start.kind is Kind.OTHER
    else:
        assert start.kind is Kind.MALFORMED and problem in start.problem


def test_a_start_that_never_completes_is_refused_past_the_limit():
    endless_line = b"GET /" + b"a" * MAX_START_BYTES
    assert classify(endless_line).kind is Kind.MALFORMED
    endless_head = b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_START_BYTES // 8)
    assert classify(endless_head).kind is Kind.MALFORMED
    assert classify(b"GET /" + b"a" * 1000).kind is Kind.WAIT


def test_a_request_line_that_is_not_http_is_other():
    assert classify(b"GET / FTP/1.0\r\n").kind is Kind.OTHER
    assert classify(b"HELLO\r\n").kind is Kind.OTHER
    assert classify(b"HELLO world\x00").kind is Kind.OTHER


def test_an_http_request_with_no_header_fields_is_whole():
    assert classify(b"GET / HTTP/1.0\r\n\r\n").kind is Kind.HTTP
    assert classify(b"GET / HTTP/1.0\n\n").kind is Kind.HTTP


def hello_naming(*names: bytes, extensions: int = 1) -> ClientHello:
    """A minimal ClientHello whose server_name extension(s) list `names` as host names."""
    entries = b"".join(b"\x00" + len(name).to_bytes(2, "big") + name for name in names)
    server_name = len(entries).to_bytes(2, "big") + entries
    extension = b"\x00\x00" + len(server_name).to_bytes(2, "big") + server_name
    all_extensions = extension * extensions
    body = (
        b"\x03\x03"
        + bytes(32)  # random
        + b"\x00"  # no session id
        + b"\x00\x02\x13\x01"  # one cipher suite
        + b"\x01\x00"  # no compression
        + len(all_extensions).to_bytes(2, "big")
        + all_extensions
    )
    return ClientHello(body)


def test_a_valid_sni_is_the_one_name():
    hello = hello_naming(b"www.example.org")
    assert sni_readable(hello)
    assert server_names(hello) == ["www.example.org"]


def test_an_sni_is_readable_only_as_one_host_name_in_one_extension():
    assert sni_readable(classify(client_hello(None)).hello)  # no server_name at all
    assert sni_readable(hello_naming(b"my_host.city.example"))
    assert not sni_readable(hello_naming(b"www.example.org", extensions=2))
    assert not sni_readable(hello_naming(b"www.example.org", b"www.facebook.com"))
    assert not sni_readable(hello_naming(b"www.facebook.com\x00"))


@pytest.mark.parametrize(
    ("names", "social"),
    [
        ((b"www.facebook.com\x00",), "www.facebook.com"),
        ((b"www.facebook.com\x00.example.org",), "www.facebook.com"),
        (("www\u3002facebook\u3002com".encode(),), "www\u3002facebook\u3002com"),
        ((b"www.facebook.com:443",), "www.facebook.com"),
        ((b"user@www.facebook.com",), "www.facebook.com"),
        ((b"www.facebook.com ",), "www.facebook.com"),
        ((b"www.example.org", b"www.facebook.com"), "www.facebook.com"),
        ((b"www%2efacebook.com",), "www.facebook.com"),
        ((b"user@[2a03:2880:f12f:83:face:b00c:0:25de]",), "2a03:2880:f12f:83:face:b00c:0:25de"),
        ((b"[2a03:2880::1]:443",), "2a03:2880::1"),
        ((b"www.example.org [2a03:2880:f12f:83:face:b00c:0:25de]",), "2a03:2880:f12f:83:face:b00c:0:25de"),
        ((b"www.example.org,user@[2a03:2880::1]:443",), "2a03:2880::1"),
    ],
)
def test_an_sni_mitmproxy_cannot_read_is_every_name_it_could_be_read_as(names, social):
    hello = hello_naming(*names)
    assert hello.sni is None and not sni_readable(hello)  # mitmproxy sees no SNI at all
    assert social in server_names(hello)


def test_two_server_name_extensions_give_every_name_in_both():
    hello = hello_naming(b"www.example.org", extensions=2)
    assert server_names(hello).count("www.example.org") >= 2
