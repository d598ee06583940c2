"""What the first bytes of a tunnel are: TLS, HTTP, something else, or not yet known.

mitmproxy picks a tunnel's next layer from whatever bytes have arrived so far: fewer than three
bytes, or a TLS record header it does not recognize, and it relays the tunnel as raw TCP. A
client that sends its ClientHello one byte at a time would then reach any host undecided. So
citygate reads the start of every tunnel itself, and tells mitmproxy to wait until the start is
complete: a whole ClientHello, a whole HTTP request head, or bytes that can be neither. The
answer depends only on the bytes, never on how the client split them (`classify` of every
prefix is either WAIT or the answer for the whole).

Pure: bytes in, a `Start` out. The ClientHello is read by addons/client_hello.py, a parser
proven to read it exactly as mitmproxy's does, so the SNI citygate decides on is the one
mitmproxy's TLS layer will see.
"""

from __future__ import annotations

import re
import struct
from enum import Enum
from typing import NamedTuple, Protocol
from urllib.parse import unquote

from citygate.addons.client_hello import ParsedHello, parse_client_hello
from citygate.proxy.hosts import strip_port

# The most a client may send before its tunnel's start is complete. A ClientHello is at most a
# few KiB (post-quantum key shares included) and a request head rarely more than 16 KiB;
# anything larger that is still incomplete is refused rather than relayed undecided.
MAX_START_BYTES = 64 * 1024

_HANDSHAKE, _CLIENT_HELLO = 0x16, 0x01
_RECORD_HEADER = 5
_MAX_RECORD = 2**14 + 2048  # RFC 8446 §5.2: the largest record a peer may send

# RFC 9110 §5.6.2 token characters: an HTTP method is one or more of these.
_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_REQUEST_LINE = re.compile(rb"%s+ [\x21-\x7e\x80-\xff]+ HTTP/[0-9]\.[0-9]\r?\n" % _TCHAR)
# Every proper prefix of a request line, so a request split anywhere is waited for.
_REQUEST_LINE_PREFIX = re.compile(
    rb"%s+(?: (?:[\x21-\x7e\x80-\xff]+(?: (?:H(?:T(?:T(?:P(?:/(?:[0-9](?:\.(?:[0-9]\r?)?)?)?)?)?)?)?)?)?)?)?"
    % _TCHAR
)
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class Kind(Enum):
    WAIT = "wait"  # not enough bytes yet to know
    TLS = "tls"  # a complete ClientHello
    HTTP = "http"  # a complete HTTP/1 request head
    OTHER = "other"  # neither TLS nor HTTP, whatever follows
    MALFORMED = "malformed"  # started like TLS or HTTP, then broke the format, or grew too long


class Start(NamedTuple):
    kind: Kind
    hello: ParsedHello | None = None
    # True when the TLS record header is one mitmproxy itself recognizes (16 03 00..03): its
    # TLS layer takes the tunnel. Other versions are not TLS to mitmproxy, only to some servers.
    standard_record: bool = False
    problem: str = ""


WAIT = Start(Kind.WAIT)
HTTP = Start(Kind.HTTP)
OTHER = Start(Kind.OTHER)


def classify(data: bytes) -> Start:
    """What a tunnel that began with `data` carries, or WAIT while that is not yet known."""
    if not data:
        return WAIT
    if data[0] == _HANDSHAKE:
        return _tls(data)
    if _TCHAR_FIRST.match(data):
        return _http(data)
    return OTHER


_TCHAR_FIRST = re.compile(_TCHAR)


def _tls(data: bytes) -> Start:
    if len(data) < 2:
        return WAIT
    if data[1] != 0x03:
        return OTHER  # every TLS and SSLv3 record version has major version 3
    message = bytearray()
    offset = 0
    while True:
        record = _record(data, offset)
        if isinstance(record, Start):
            return record
        message += record
        offset += _RECORD_HEADER + len(record)
        if len(message) >= 4:
            found = _client_hello(message, standard=data[2] <= 0x03)
            if found is not None:
                return found


def _record(data: bytes, offset: int) -> bytes | Start:
    """The body of the handshake record at `offset`, or what its absence means."""
    if len(data) < offset + _RECORD_HEADER:
        return _incomplete(data)
    header = data[offset : offset + _RECORD_HEADER]
    if header[0] != _HANDSHAKE or header[1] != 0x03:
        return _malformed("a TLS record that is not a handshake record before the ClientHello ended")
    (length,) = struct.unpack("!H", header[3:])
    if not 0 < length <= _MAX_RECORD:
        return _malformed(f"a TLS record of {length} bytes")
    body = data[offset + _RECORD_HEADER : offset + _RECORD_HEADER + length]
    return body if len(body) == length else _incomplete(data)


def _client_hello(message: bytearray, *, standard: bool) -> Start | None:
    """The ClientHello once the handshake message is whole; None while it is not."""
    if message[0] != _CLIENT_HELLO:
        return _malformed("a TLS handshake that does not start with a ClientHello")
    size = int.from_bytes(message[1:4], "big") + 4
    if size > MAX_START_BYTES:
        return _malformed(f"a ClientHello of {size} bytes")
    if len(message) < size:
        return None
    hello = parse_client_hello(bytes(message[4:size]))
    if hello is None:
        return _malformed("a ClientHello that cannot be parsed")
    return Start(Kind.TLS, hello, standard)


def _http(data: bytes) -> Start:
    line_end = data.find(b"\n")
    if line_end == -1:
        if not _REQUEST_LINE_PREFIX.fullmatch(data):
            return OTHER
        return _incomplete(data)
    if not _REQUEST_LINE.fullmatch(data, 0, line_end + 1):
        return OTHER
    # A request line whose head ends right after it (no header fields) also ends the head.
    if _HEAD_END.search(data, line_end - 1 if line_end else 0):
        return HTTP
    return _incomplete(data)


class AnyClientHello(Protocol):
    """A ClientHello as `sni_readable` and `server_names` read it: ours from `classify` before the
    tunnel's layer is chosen, or mitmproxy's `tls.ClientHello` in its `tls_clienthello` hook."""

    @property
    def extensions(self) -> list[tuple[int, bytes]]: ...

    @property
    def sni(self) -> str | None: ...


def sni_readable(hello: AnyClientHello) -> bool:
    """Whether the ClientHello names its server the one way mitmproxy reads: one host name, or none."""
    extensions = sum(1 for kind, _ in hello.extensions if kind == _SERVER_NAME)
    return extensions == 0 or (extensions == 1 and hello.sni is not None)


def server_names(hello: AnyClientHello) -> list[str]:
    """The names a ClientHello asks for, as the most lenient server might read them.

    mitmproxy reads the SNI only when there is one server_name extension holding exactly one
    valid host name; otherwise it sees none, and neither would a decision made on its reading.
    A server may be less strict: stop at a NUL, drop a port or a user part, decode a percent
    escape, take a bracketed address, map ideographic dots.
    So an SNI mitmproxy cannot read is decided on every name it could be read as, and a tunnel
    whose SNI might name a social site is never taken for an ordinary one.
    """
    extensions = [body for kind, body in hello.extensions if kind == _SERVER_NAME]
    sni = hello.sni
    if sni is not None and len(extensions) == 1:
        return [sni]
    names: list[str] = []
    for body in extensions:
        for raw in _raw_server_names(body):
            text = raw.decode("utf-8", "replace")
            for reading in dict.fromkeys((text, unquote(text))):
                for piece in (reading, *_LIST_BREAK.split(reading)):
                    after_user = piece.rpartition("@")[2]
                    names += (piece, after_user, strip_port(after_user))
                names.extend(part for part in _NAME_BREAK.split(reading) if part)
    return names


_SERVER_NAME = 0x0000
# What a lenient reader may take for the end of a name: anything but letters, digits, "-", "_"
# and the dots UTS #46 maps to ".".
_NAME_BREAK = re.compile(r"[^\w.\-\u3002\uff0e\uff61]+")
# What may separate several names written as one: white space, list punctuation, a NUL.
_LIST_BREAK = re.compile(r"[\s,;/\\\x00]+")


def _raw_server_names(body: bytes) -> list[bytes]:
    """Every name in a server_name extension's list (RFC 6066 §3), whatever its type."""
    names = []
    offset = 2  # the list's own length
    while offset + 3 <= len(body):
        length = int.from_bytes(body[offset + 1 : offset + 3], "big")
        names.append(body[offset + 3 : offset + 3 + length])
        offset += 3 + length
    return names


def _incomplete(data: bytes) -> Start:
    if len(data) > MAX_START_BYTES:
        return _malformed(f"more than {MAX_START_BYTES} bytes without a complete ClientHello or request head")
    return WAIT


def _malformed(problem: str) -> Start:
    return Start(Kind.MALFORMED, problem=problem)
