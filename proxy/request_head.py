"""Which request heads must be refused before anything is decided (RFC 9112 §3.2, §5.2; RFC 9110 §5.5).

A request names its host in up to two places: the request target's authority (absolute-form,
CONNECT, HTTP/2's `:authority`) and the Host field. citygate decides on the names it reads; a
server behind it, a CDN or a front end may route on another one (a second Host field, the part
after an `@`, a name hidden behind a NUL byte or a folded line). So a head whose host is not
stated exactly once, unambiguously, is answered 400 and goes nowhere, whatever its host: the
RFC says a server "MUST respond with a 400" to such a request, and it is the only way to make
sure that what goes upstream is exactly what was decided on.

Pure: strings in, a problem in plain words (or None) out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from citygate.proxy.hosts import normalize_host

# uri-host [ ":" port ] (RFC 3986 §3.2.2) without the parts that only ever serve a trick in a
# Host field: percent-encoding (`pinterest%2ede`), userinfo (`user@flic.kr`). A reg-name may use
# unreserved characters and sub-delims; an IP literal is bracketed.
_HOST_FIELD = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=-]+)(?::[0-9]{0,5})?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Bytes no field value may contain (RFC 9110 §5.5): CR and LF only appear there through obsolete
# line folding, which mitmproxy joins into the value instead of replacing it with a space.
_FORBIDDEN_IN_VALUE = re.compile(rb"[\r\n\x00]")


def host_problem(value: str, where: str = "Host header") -> str | None:
    """Why `value` is not a usable `host[:port]`, or None when it is."""
    if not _HOST_FIELD.fullmatch(value):
        return f"the {where} {_shown(value)} is not a host name or address with an optional numeric port"
    port = _port(value)
    if port is not None and port > 65535:
        return f"the {where} {_shown(value)} has a port above 65535"
    return None


def head_problem(
    *,
    method: str,
    scheme: str,
    http_version: str,
    authority: str,
    host_fields: Sequence[str],
    field_values: Iterable[bytes],
) -> str | None:
    """Why a request head must be refused with 400, or None when its host is stated unambiguously.

    `authority` is the request target's authority ("" for origin-form); `host_fields` every
    Host field; `field_values` every field value, raw.
    """
    for value in field_values:
        if _FORBIDDEN_IN_VALUE.search(value):
            return (
                "a header field contains a line break or a NUL byte (obsolete line folding is not accepted)"
            )
    if len(host_fields) > 1:
        return f"the request has {len(host_fields)} Host headers; exactly one is allowed"
    if authority:
        problem = host_problem(authority, "request target's authority")
        if problem:
            return problem
    if not host_fields:
        if not authority and http_version == "HTTP/1.1":
            return "an HTTP/1.1 request without a Host header"
        return None
    [host] = host_fields
    problem = host_problem(host)
    if problem:
        return problem
    if authority and method != "CONNECT" and not _same_host(authority, host, scheme):
        return f"the request target names {_shown(authority)} but the Host header names {_shown(host)}"
    return None


def _same_host(authority: str, host: str, scheme: str) -> bool:
    """Whether Host names the target's host; a Host without a port agrees with any target port.

    Clients that leave the port out of Host are common and harmless here (mitmproxy connects to
    the target's port, and the decision is about the host), so only an explicit, different port
    disagrees.
    """
    first, second = normalize_host(authority), normalize_host(host)
    if first is None or second is None or first.name != second.name:
        return False
    host_port = _port(host)
    if host_port is None:
        return True
    default = _DEFAULT_PORTS.get(scheme)
    return (_port(authority) or default) == host_port


def _port(value: str) -> int | None:
    after_bracket = value.rpartition("]")[2] if value.startswith("[") else value
    _, colon, digits = after_bracket.rpartition(":")
    return int(digits) if colon and digits else None


def _shown(value: str) -> str:
    """A client's value made safe to print: printable ASCII, at most 80 characters."""
    text = value.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return repr(text[:80] + ("..." if len(text) > 80 else ""))
