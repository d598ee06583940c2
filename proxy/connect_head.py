"""The head of a CONNECT request, read by h11 before mitmproxy sees the connection (the fast path).

Pure: bytes in, a `ConnectHead`, WAIT (not whole yet) or OTHER out. OTHER is anything the fast
path leaves to mitmproxy: another method, a head h11 refuses, a body, a target that is not
`host:port`, a head `request_head.head_problem` refuses. A head is whole only when h11 says so,
so how a client splits its bytes changes nothing.
"""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple

import h11

from citygate.proxy.request_head import head_problem

# What h11 holds while a head is incomplete; a longer head goes to mitmproxy, which decides.
MAX_HEAD_BYTES: Final = 16 * 1024
# host:port, the only request target a CONNECT may have (RFC 9110 §9.3.6).
_AUTHORITY = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:@/\[\]]+):([0-9]{1,5})")

WAIT: Final = "wait"
OTHER: Final = "other"


class ConnectHead(NamedTuple):
    authority: str  # the request target, host:port
    host: str
    port: int
    http_version: str  # as the client wrote it, e.g. HTTP/1.1: the 200 answers in kind
    host_fields: tuple[str, ...]
    length: int  # of the head in bytes; what follows it is the tunnel's


def read_connect(data: bytes) -> ConnectHead | Literal["wait", "other"]:
    """The CONNECT head `data` starts with, WAIT while it is incomplete, or OTHER."""
    if not data:
        return WAIT  # to h11, no bytes would mean the end of the connection
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    parser.receive_data(data)
    try:
        event = parser.next_event()
    except h11.RemoteProtocolError:
        return OTHER
    if event is h11.NEED_DATA:
        return WAIT
    if not isinstance(event, h11.Request) or event.method != b"CONNECT":
        return OTHER
    if any(name in (b"content-length", b"transfer-encoding") for name, _ in event.headers):
        return OTHER  # a CONNECT with a body: mitmproxy's business
    authority = event.target.decode("ascii", "replace")
    match = _AUTHORITY.fullmatch(authority)
    if match is None or not 0 < int(match[1]) < 65536:
        return OTHER
    version = "HTTP/" + event.http_version.decode("ascii")
    host_fields = tuple(value.decode("latin-1") for name, value in event.headers if name == b"host")
    problem = head_problem(
        method="CONNECT",
        scheme="",
        http_version=version,
        authority=authority,
        host_fields=host_fields,
        field_values=(value for _, value in event.headers),
    )
    if problem is not None:
        return OTHER
    trailing, _ = parser.trailing_data
    host = authority[: match.start(1) - 1].removeprefix("[").removesuffix("]")
    return ConnectHead(authority, host, int(match[1]), version, host_fields, len(data) - len(trailing))
