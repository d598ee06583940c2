"""Our ClientHello parser reads every input exactly as mitmproxy's does (addons/client_hello.py).

The proof is differential: for each input, `parse_client_hello` must return None exactly when
mitmproxy's `tls.ClientHello` raises, and otherwise the same extensions and the same SNI. The
inputs are ClientHellos built field by field (lengths that lie, odd cipher-suite lengths, server
names of every kind, ALPN bodies good and broken, bytes after the last extension) and mutations
of real ClientHellos made by Python's ssl module (bytes flipped, set, inserted and deleted,
truncations, length fields rewritten, generated extensions spliced in).

Budget: CITYGATE_HELLO_EXAMPLES examples across the two properties (10,000 by default, about
40 s on 2 cores). A failure prints the input's bytes and Hypothesis's reproduction blob.
"""

from __future__ import annotations

import os
import ssl
import string
import timeit
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from mitmproxy.tls import ClientHello

from citygate.addons.client_hello import parse_client_hello

EXAMPLES = int(os.environ.get("CITYGATE_HELLO_EXAMPLES", 10000))
BUILT_EXAMPLES = EXAMPLES // 2
MUTATED_EXAMPLES = EXAMPLES - BUILT_EXAMPLES

_RECORD_AND_HANDSHAKE_HEADERS = 9  # a 5-byte TLS record header, then a 4-byte handshake header
_SERVER_NAME, _ALPN = 0, 16


def real_hello(server_name: str | None, *, alpn: list[str] | None = None, tls12: bool = False) -> bytes:
    """The ClientHello body Python's ssl module sends (what follows the record and handshake headers)."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()[_RECORD_AND_HANDSHAKE_HEADERS:]


REAL_HELLOS = [
    real_hello("www.facebook.com"),
    real_hello("city.example.org", alpn=["h2", "http/1.1"]),
    real_hello("my_host.intranet"),
    real_hello("xn--bcher-kva.example", tls12=True),
    real_hello(None),  # no server_name extension at all
]


def assert_read_alike(raw: bytes) -> str:
    """The property: our parser fails exactly where mitmproxy's does, and otherwise agrees with it.

    Returns which of the three outcomes it was, for the properties' statistics."""
    ours = parse_client_hello(raw)
    try:
        theirs = ClientHello(raw)
    except Exception as error:  # mitmproxy's parser raises EOFError, ValueError and others
        assert ours is None, f"mitmproxy raised {error!r}, ours parsed it"
        return "mitmproxy cannot parse it"
    assert ours is not None, "mitmproxy parsed it, ours did not"
    assert ours.extensions == theirs.extensions
    assert all(type(body) is bytes for _, body in ours.extensions)
    assert ours.sni == theirs.sni
    return "parsed, with an SNI" if ours.sni is not None else "parsed, no SNI"


# --------------------------------------------------------------------------------------------
# ClientHellos built field by field
# --------------------------------------------------------------------------------------------


# True about one time in thirty: each field of a built hello lies or breaks that rarely, so that
# most hellos still parse and reach the SNI rule, and every kind of break is still drawn often.
# Hypothesis favours the simplest draw (0), so 0 is the honest one.
RARELY = st.integers(0, 29).map(lambda roll: roll == 29)


@st.composite
def length_of(draw: st.DrawFn, content: bytes, size: int) -> bytes:
    """A `size`-byte length field for `content`: mostly true, rarely off by a little or a lot."""
    length = len(content)
    if draw(RARELY):
        most = 2 ** (8 * size) - 1
        length = draw(st.integers(max(0, length - 3), min(most, length + 3)) | st.integers(0, most))
    return length.to_bytes(size, "big")


def with_length(content: bytes, size: int) -> st.SearchStrategy[bytes]:
    return length_of(content, size).map(lambda length: length + content)


def stray_bytes(draw: st.DrawFn) -> bytes:
    """Rarely, a few bytes after the last whole entry: an entry cut short."""
    return draw(st.binary(min_size=1, max_size=3)) if draw(RARELY) else b""


_LABEL = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12).map(
    str.encode
)

HOST_NAMES = st.one_of(
    st.sampled_from(
        [
            b"www.facebook.com",
            b"example.com.",  # a trailing dot
            b".",
            b"",
            b"a..b",
            b"-leading.example",
            b"my_host.example",
            b"www.facebook.com\x00",
            b"www.facebook.com\x00.example.org",
            b"host\n",  # mitmproxy's label pattern ends in `$`, which matches before a final newline
            b"www.facebook.com:443",
            b"user@www.facebook.com",
            b"127.0.0.1",
            b"1.2.3.256",
            b"::1",
            b"[::1]",
            b"2a03:2880:f12f:83:face:b00c:0:25de",
            b"fe80::1%eth0",
            b"xn--bcher-kva.example",
            b"XN--bcher-kva.example",
            b"xn--.example",
            b"xn--zz-\xff.example",
            "bücher.example".encode(),
            "www\u3002facebook\u3002com".encode(),
            b"\xff\xfe",
            b"a" * 63 + b".example",
            b"a" * 64 + b".example",
            b"a." * 127 + b"a",  # 255 bytes
            b"a." * 128,  # 256 bytes, ending in a dot
            b"a" * 1100,  # a label too long even for the IDNA codec
        ]
    ),
    st.lists(_LABEL, min_size=1, max_size=5).map(b".".join),
    st.lists(_LABEL, min_size=1, max_size=4).map(lambda labels: b".".join(labels) + b"."),
    st.ip_addresses().map(lambda address: str(address).encode()),
    st.text(max_size=12).map(str.encode),
    st.binary(max_size=16),
    st.integers(250, 300).map(lambda size: (b"abcdefgh." * 40)[:size]),
)


@st.composite
def server_name_entries(draw: st.DrawFn) -> bytes:
    """One ServerName: a type (0 is host_name), a length that may lie, a name."""
    name_type = draw(st.integers(0, 255)) if draw(RARELY) else 0
    name = draw(HOST_NAMES)
    return bytes([name_type]) + draw(with_length(name, 2))


@st.composite
def server_name_bodies(draw: st.DrawFn) -> bytes:
    """A server_name body: a list length that may lie, 0, 1 or several names, maybe stray bytes."""
    # One name is what a client sends; none and several are what mitmproxy refuses to read.
    count = draw(st.sampled_from([1, 1, 1, 1, 0, 2, 3]))
    entries = b"".join([draw(server_name_entries()) for _ in range(count)])
    body = draw(with_length(entries, 2)) + stray_bytes(draw)
    return draw(st.binary(max_size=2)) if draw(RARELY) else body


@st.composite
def alpn_bodies(draw: st.DrawFn) -> bytes:
    """An ALPN body: a length that may lie, protocol names whose lengths may lie, maybe stray bytes."""
    names = draw(st.lists(st.sampled_from([b"h2", b"http/1.1", b"", b"x" * 255]) | st.binary(max_size=8)))
    protocols = b"".join([draw(with_length(name, 1)) for name in names])
    body = draw(with_length(protocols, 2)) + stray_bytes(draw)
    return draw(st.binary(max_size=2)) if draw(RARELY) else body


@st.composite
def extensions(draw: st.DrawFn) -> bytes:
    """One extension: a type, a length that may lie, a body."""
    common = st.sampled_from([_SERVER_NAME] * 4 + [_ALPN, _ALPN, 10, 13, 43, 51, 0xFF01])
    kind = draw(st.integers(0, 0xFFFF) if draw(RARELY) else common)
    if kind == _SERVER_NAME:
        body = draw(server_name_bodies())
    elif kind == _ALPN:
        body = draw(alpn_bodies())
    else:
        body = draw(st.binary(max_size=12))
    return kind.to_bytes(2, "big") + draw(with_length(body, 2))


@st.composite
def built_hellos(draw: st.DrawFn) -> bytes:
    """A ClientHello from its fields, every length free to lie and every part free to be cut short."""
    hello = draw(st.sampled_from([b"\x03\x03", b"\x03\x01", b"\x00\x00"]))
    hello += bytes(range(32))  # the random, which neither parser looks into
    hello += draw(with_length(draw(st.binary(max_size=33)), 1))  # the session id
    suites = draw(st.one_of(st.just(b"\x13\x01\x13\x02\xc0\x2f"), st.binary(max_size=9)))  # odd lengths too
    hello += draw(with_length(suites, 2))
    hello += draw(with_length(draw(st.sampled_from([b"\x00", b"", b"\x01\x00"])), 1))  # compression
    ending = draw(st.sampled_from(["extensions"] * 8 + ["none", "empty list", "one byte"]))
    if ending == "extensions":
        listed = b"".join(draw(st.lists(extensions(), min_size=1, max_size=6)))
        hello += draw(with_length(listed, 2)) + stray_bytes(draw)
    elif ending == "empty list":
        hello += draw(length_of(b"", 2))
    elif ending == "one byte":
        hello += draw(st.binary(min_size=1, max_size=1))
    return hello


# --------------------------------------------------------------------------------------------
# Real ClientHellos, mutated
# --------------------------------------------------------------------------------------------


class Layout(NamedTuple):
    """Where a well-formed hello's parts are: the places worth editing."""

    # (offset, size) of every length field
    length_fields: list[tuple[int, int]]
    # where each extension starts, and where the last one ends: where one may be spliced in
    extension_boundaries: list[int]


def layout(hello: bytes) -> Layout:
    """The layout of a hello, read the RFC 8446 way; IndexError when it is too broken for that."""
    fields = [(34, 1)]
    offset = 35 + hello[34]
    fields.append((offset, 2))
    offset += 2 + int.from_bytes(hello[offset : offset + 2], "big")
    fields.append((offset, 1))
    offset += 1 + hello[offset]
    fields.append((offset, 2))
    offset += 2
    boundaries = [offset]
    while offset < len(hello):
        kind = int.from_bytes(hello[offset : offset + 2], "big")
        length = int.from_bytes(hello[offset + 2 : offset + 4], "big")
        fields.append((offset + 2, 2))
        body = offset + 4
        if kind in (_SERVER_NAME, _ALPN):
            fields.append((body, 2))
            entry = body + 2
            while entry < body + length:
                if kind == _SERVER_NAME:
                    fields.append((entry + 1, 2))
                    entry += 3 + int.from_bytes(hello[entry + 1 : entry + 3], "big")
                else:
                    fields.append((entry, 1))
                    entry += 1 + hello[entry]
        offset = body + length
        boundaries.append(offset)
    return Layout(fields, [at for at in boundaries if at <= len(hello)])


@st.composite
def mutations(draw: st.DrawFn, hello: bytes) -> bytes:
    """One edit to `hello`: it may be applied to an already edited hello."""
    edit = draw(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "length", "length", "splice"])
    )
    at = draw(st.integers(0, max(0, len(hello) - 1)))
    if edit == "flip" and hello:
        return hello[:at] + bytes([hello[at] ^ draw(st.integers(1, 255))]) + hello[at + 1 :]
    if edit == "set" and hello:
        return hello[:at] + bytes([draw(st.integers(0, 255))]) + hello[at + 1 :]
    if edit == "insert":
        return hello[:at] + draw(st.binary(min_size=1, max_size=4)) + hello[at:]
    if edit == "delete":
        return hello[:at] + hello[at + draw(st.integers(1, 4)) :]
    if edit == "truncate":
        return hello[:at]
    try:
        parts = layout(hello)
    except IndexError:  # an earlier edit left too little of the structure to find its parts
        return hello
    if edit == "length":
        offset, size = draw(st.sampled_from(parts.length_fields))
        old = int.from_bytes(hello[offset : offset + size], "big")
        most = 2 ** (8 * size) - 1
        new = draw(st.one_of(st.integers(max(0, old - 3), min(most, old + 3)), st.integers(0, most)))
        return hello[:offset] + new.to_bytes(size, "big") + hello[offset + size :]
    at = draw(st.sampled_from(parts.extension_boundaries or [len(hello)]))
    return hello[:at] + draw(extensions()) + hello[at:]


@st.composite
def mutated_hellos(draw: st.DrawFn) -> bytes:
    hello = draw(st.sampled_from(REAL_HELLOS))
    for _ in range(draw(st.integers(1, 3))):
        hello = draw(mutations(hello))
    return hello


# --------------------------------------------------------------------------------------------
# The properties
# --------------------------------------------------------------------------------------------

FUZZ = {
    "deadline": None,  # a loaded machine must not fail a correct parser
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=BUILT_EXAMPLES, **FUZZ)
@given(hello=built_hellos())
def test_a_built_hello_is_read_as_mitmproxy_reads_it(hello: bytes):
    note(f"hello: {hello.hex()}")
    event(assert_read_alike(hello))


@settings(max_examples=MUTATED_EXAMPLES, **FUZZ)
@given(hello=mutated_hellos())
def test_a_mutated_real_hello_is_read_as_mitmproxy_reads_it(hello: bytes):
    note(f"hello: {hello.hex()}")
    event(assert_read_alike(hello))


# --------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------

_PREFIX = b"\x03\x03" + bytes(32) + b"\x00"  # version, random, no session id


def server_name_extension(*entries: bytes) -> bytes:
    """A server_name extension listing `entries` (each a type byte, a u2 length and a name)."""
    names = b"".join(entries)
    body = len(names).to_bytes(2, "big") + names
    return b"\x00\x00" + len(body).to_bytes(2, "big") + body


def host_name(name: bytes) -> bytes:
    return b"\x00" + len(name).to_bytes(2, "big") + name


def hello_with(
    *extensions: bytes, suites: bytes = b"\x00\x02\x13\x01", compression: bytes = b"\x01\x00"
) -> bytes:
    listed = b"".join(extensions)
    return _PREFIX + suites + compression + len(listed).to_bytes(2, "big") + listed


def test_a_real_hello_gives_its_sni_and_every_extension():
    for hello in REAL_HELLOS:
        assert_read_alike(hello)
    parsed = parse_client_hello(REAL_HELLOS[0])
    assert parsed is not None and parsed.sni == "www.facebook.com"
    assert (_SERVER_NAME, server_name_extension(host_name(b"www.facebook.com"))[4:]) in parsed.extensions
    assert parse_client_hello(REAL_HELLOS[-1]).sni is None


def test_an_odd_cipher_suite_length_leaves_its_last_byte_for_the_compression_methods():
    extension = server_name_extension(host_name(b"www.example.org"))
    # Three bytes of suites: one suite (13 01) is read, and the third byte is read again as the
    # compression methods' length. Here it is 01, so one method (00) and then the extensions.
    doubled = hello_with(extension, suites=b"\x00\x03\x13\x01", compression=b"\x01\x00")
    assert_read_alike(doubled)
    assert parse_client_hello(doubled).sni == "www.example.org"
    # Here it is ff, which RFC 8446 reads as a suite byte: 255 compression methods run off the end.
    extra = hello_with(extension, suites=b"\x00\x03\x13\x01\xff", compression=b"\x01\x00")
    assert_read_alike(extra)
    assert parse_client_hello(extra) is None


def test_a_server_name_entry_cut_short_fails_the_whole_hello():
    entry = host_name(b"www.example.org")[:-1]  # its length says one byte more than it holds
    hello = hello_with(server_name_extension(entry))
    assert_read_alike(hello)
    assert parse_client_hello(hello) is None


def test_bytes_after_the_last_whole_extension_fail_the_whole_hello():
    whole = hello_with(server_name_extension(host_name(b"www.example.org")))
    assert parse_client_hello(whole) is not None
    for stray in (b"\x00", b"\x00\x0a", b"\x00\x0a\x00"):
        assert_read_alike(whole + stray)
        assert parse_client_hello(whole + stray) is None


def test_the_sni_is_the_first_extension_with_one_valid_host_name():
    hello = hello_with(
        server_name_extension(host_name(b"www.example.org"), host_name(b"www.facebook.com")),
        server_name_extension(host_name(b"not a host")),
        server_name_extension(host_name(b"www.facebook.com")),
        server_name_extension(host_name(b"www.example.org")),
    )
    assert_read_alike(hello)
    assert parse_client_hello(hello).sni == "www.facebook.com"


def test_ours_is_at_least_three_times_faster_than_mitmproxys():
    hello = REAL_HELLOS[0]

    def seconds(read) -> float:
        return min(timeit.repeat(lambda: read(hello), number=200, repeat=5))

    assert seconds(ClientHello) >= 3 * seconds(parse_client_hello)
