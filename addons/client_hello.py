"""A TLS ClientHello read in one pass, exactly as mitmproxy reads it.

Why our own parser: citygate reads the ClientHello of every new HTTPS tunnel before it lets the
tunnel through (addons/tunnel_start.py), on the proxy's hot path. mitmproxy's `tls.ClientHello`
builds a tree of kaitai-struct objects (about 28 µs for a browser's hello), and its `extensions`
and `sni` properties walk that tree again on each read (about 10 µs more for citygate's reads).
This parser reads the same bytes once, keeps only what citygate uses, and takes about 4 µs.

Why it must be mitmproxy's reading and no other: mitmproxy's TLS layer, not this module, is what
later acts on the hello, so citygate must decide on the SNI that mitmproxy will see and refuse
what mitmproxy cannot parse. The grammar below therefore mirrors mitmproxy's kaitai one
(mitmproxy/contrib/kaitaistruct/tls_client_hello.py) quirk for quirk, not RFC 8446:

- the cipher suites are a u2 byte length read as length // 2 two-byte suites, so an odd length
  leaves its last byte to be read as the compression methods' length;
- the extensions' own u2 length is read and ignored: extensions run to the end of the input, and
  bytes after the last whole extension make the whole hello unparsable;
- only server_name (0) and ALPN (16) bodies are parsed, each to the end of its body with its
  u2 list length ignored, and a short read in either fails the whole hello;
- the SNI (mitmproxy/tls.py) is the first server_name extension that holds exactly one name,
  of type host_name, that `is_valid_host` accepts; every other extension is skipped.

The equivalence is proven by tests/unit/addons/test_client_hello.py, a differential test that
gives both parsers generated and mutated ClientHellos and requires the same answer from each.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

from mitmproxy.net.check import is_valid_host

_SERVER_NAME, _ALPN = 0x0000, 0x0010
_HOST_NAME = 0  # the one ServerName type (RFC 6066 §3)
# The client version (2 bytes) and random (32) come before the session id's length byte.
_SESSION_ID_LENGTH_AT = 34
# Host names up to this long have their validity remembered: a proxy sees the same few names over
# and over, and mitmproxy's check costs as much as the rest of the parse. Longer ones (never valid
# DNS names, RFC 1035) are checked each time, so a remembered name holds at most this many bytes.
_LONGEST_REMEMBERED_NAME = 255
# An extension's type and body length, both u2, read in one call.
_read_type_and_length = struct.Struct(">HH").unpack_from


class ParsedHello(NamedTuple):
    """What citygate reads from a ClientHello, equal to mitmproxy's `ClientHello` fields of the same names."""

    # Every extension in order, as (type, raw body).
    extensions: list[tuple[int, bytes]]
    # The host name mitmproxy takes for the SNI, or None when it sees none.
    sni: str | None


class _Unparsable(Exception):
    """Raised where mitmproxy's parser would read past the end of the hello or of an extension."""


def parse_client_hello(raw: bytes) -> ParsedHello | None:
    """The hello in `raw` (a ClientHello handshake body, after its 4-byte header), or None when
    mitmproxy's `ClientHello(raw)` would raise."""
    try:
        extensions, sole_host_names = _read_extensions(raw, _extensions_offset(raw))
    except _Unparsable:
        return None
    # Checked only once the whole hello has parsed, as mitmproxy checks on reading `sni`.
    return ParsedHello(extensions, _sni(sole_host_names))


def _extensions_offset(raw: bytes) -> int:
    """Where the extensions start: past the version, random, session id, cipher suites and
    compression methods (the end of `raw` when there are no extensions)."""
    end = len(raw)
    if end <= _SESSION_ID_LENGTH_AT:
        raise _Unparsable
    offset = _SESSION_ID_LENGTH_AT + 1 + raw[_SESSION_ID_LENGTH_AT]
    if offset + 2 > end:
        raise _Unparsable
    # Read as length // 2 suites: an odd length's last byte is left for what follows.
    offset += 2 + ((raw[offset] << 8 | raw[offset + 1]) & ~1)
    if offset >= end:
        raise _Unparsable
    offset += 1 + raw[offset]  # the compression methods
    if offset > end:
        raise _Unparsable
    return offset


def _read_extensions(raw: bytes, offset: int) -> tuple[list[tuple[int, bytes]], list[bytes]]:
    """Every extension from `offset` to the end of `raw`, and the one host name of each
    server_name extension that has exactly one, both in order."""
    extensions: list[tuple[int, bytes]] = []
    sole_host_names: list[bytes] = []
    end = len(raw)
    if offset == end:
        return extensions, sole_host_names
    offset += 2  # the extensions' length, which mitmproxy ignores
    if offset > end:
        raise _Unparsable
    while offset < end:
        if offset + 4 > end:
            raise _Unparsable
        kind, length = _read_type_and_length(raw, offset)
        body_start = offset + 4
        offset = body_start + length
        if offset > end:
            raise _Unparsable
        if kind == _SERVER_NAME:
            host_name = _sole_host_name(raw, body_start, offset)
            if host_name is not None:
                sole_host_names.append(host_name)
        elif kind == _ALPN:
            _check_alpn(raw, body_start, offset)
        extensions.append((kind, raw[body_start:offset]))
    return extensions, sole_host_names


def _sni(sole_host_names: list[bytes]) -> str | None:
    """The first of the sole host names that mitmproxy's `is_valid_host` accepts."""
    for host_name in sole_host_names:
        if (
            _remembered_is_valid_host(host_name)
            if len(host_name) <= _LONGEST_REMEMBERED_NAME
            else is_valid_host(host_name)
        ):
            return host_name.decode("ascii")
    return None


@functools.lru_cache(maxsize=4096)
def _remembered_is_valid_host(host_name: bytes) -> bool:
    """mitmproxy's `is_valid_host`, remembered for the names a proxy sees again and again."""
    return is_valid_host(host_name)


def _sole_host_name(raw: bytes, start: int, end: int) -> bytes | None:
    """The host name of a server_name body holding exactly one name of type host_name, else None.

    Every entry is read (type u1, length u2, name) after the list's u2 length, which is ignored.
    """
    offset = start + 2
    if offset > end:
        raise _Unparsable
    entries = 0
    first_type, first_name = -1, b""
    while offset < end:
        if offset + 3 > end:
            raise _Unparsable
        name_start = offset + 3
        name_end = name_start + (raw[offset + 1] << 8 | raw[offset + 2])
        if name_end > end:
            raise _Unparsable
        if not entries:
            first_type, first_name = raw[offset], raw[name_start:name_end]
        entries += 1
        offset = name_end
    return first_name if entries == 1 and first_type == _HOST_NAME else None


def _check_alpn(raw: bytes, start: int, end: int) -> None:
    """Read an ALPN body as mitmproxy does, only for its failures: a u2 length (ignored), then
    protocol names (u1 length and bytes) to the end of the body."""
    offset = start + 2
    if offset > end:
        raise _Unparsable
    while offset < end:
        offset += 1 + raw[offset]
    if offset > end:
        raise _Unparsable
