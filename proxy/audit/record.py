"""Access-log records: a decision and what became of it, as one flat dict of ECS-named fields.

Pure: the recorder addon gathers the facts (the announced decision; status and body sizes when
the request completes) and this module turns them into the record that `audit_chain` seals and
the writer appends. Every record of a kind has the same keys, with None where a fact is
unknown, so a SIEM mapping never meets a new field and `citygate logs` never guesses.

Field names are Elastic Common Schema (ECS) names in their dotted form (`"user.name"`), which
Elasticsearch and the usual shippers expand into objects; fields ECS has no name for live under
`citygate.`. What is never in a record: passwords, tokens, cookies, any header value, the query
string (unless `audit.include_query`), and anything but host and byte counts for ordinary
(non-social) traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import quote

from citygate.proxy.decision import Decision, Result
from citygate.proxy.outcomes import tunnel_handling

ECS_VERSION = "8.11.0"
MODE = "enforce"  # the default `citygate.mode`; "report" comes from the event (proxy/enforcement.py)

# event.action values. Decision records are what `citygate logs` shows; the others are the log's
# own bookkeeping (file starts, writer start and stop) and the optional ordinary connections.
ACTION_REQUEST = "http-request"  # a plain-HTTP request, or one inside a decrypted tunnel
ACTION_CONNECT = "http-connect"  # a CONNECT: one record per tunnel
ACTION_CONNECTION = "connection"  # an ordinary (non-social) connection: host and bytes only
DECISION_ACTIONS = frozenset({ACTION_REQUEST, ACTION_CONNECT})

# Every decision record has exactly these keys (plus the chain fields `audit_chain` adds).
DECISION_FIELDS: tuple[str, ...] = (
    "@timestamp",
    "ecs.version",
    "event.kind",
    "event.category",
    "event.id",
    "event.action",
    "event.type",
    "event.reason",
    "event.end",
    "event.duration",
    "user.name",
    "citygate.department",
    "source.ip",
    "url.scheme",
    "url.domain",
    "url.path",
    "url.query",
    "http.request.method",
    "http.response.status_code",
    "http.request.body.bytes",
    "http.response.body.bytes",
    "rule.id",
    "rule.category",
    "citygate.purpose_kind",
    "citygate.site",
    "citygate.approver",
    "citygate.approver_role",
    "citygate.delegated_by",
    "citygate.identity_method",
    "citygate.mode",
    "citygate.would_deny",
    "citygate.flags",
    "citygate.tunnel",
    "citygate.detail",
    "error.message",
)


class Announced(Protocol):
    """What the gate announces (`citygate.addons.events.DecisionEvent` has these attributes)."""

    @property
    def id(self) -> str: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def stage(self) -> str: ...
    @property
    def client_ip(self) -> str | None: ...
    @property
    def method(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def status(self) -> int | None: ...
    @property
    def flags(self) -> list[str]: ...
    @property
    def mode(self) -> str: ...
    @property
    def would_deny(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Completion:
    """What became of an allowed request: known when its response (or error) has passed."""

    end: datetime
    status: int | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    error: str | None = None


def timestamp(at: datetime) -> str:
    """RFC 3339 in UTC with microseconds and "Z": fixed width, so text order is time order."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decision_record(
    event: Announced, completion: Completion | None = None, *, include_query: bool = False
) -> dict[str, object]:
    """The record of one social-media decision (`completion` for allowed, forwarded requests)."""
    decision, evidence = event.decision, event.decision.evidence
    is_request = str(event.stage) == "request"
    scheme = path = query = None
    if is_request:
        scheme, path, query = _url_parts(event.url)
        query = query if include_query else None
    status = event.status
    would_deny = bool(getattr(event, "would_deny", False))
    if completion is not None and completion.status is not None:
        status = completion.status
    return {
        "@timestamp": timestamp(event.timestamp),
        "ecs.version": ECS_VERSION,
        "event.kind": "event",
        "event.category": ["web"] if is_request else ["network"],
        "event.id": event.id,
        "event.action": ACTION_REQUEST if is_request else ACTION_CONNECT,
        # A report-mode denial was let through: its type is "allowed" (what happened), its reason
        # the deny reason and `citygate.would_deny` true (what enforce mode would have done).
        "event.type": "allowed" if decision.result is Result.ALLOW or would_deny else "denied",
        "event.reason": decision.reason.value,
        "event.end": timestamp(completion.end) if completion else None,
        # ECS durations are nanoseconds.
        "event.duration": _nanoseconds(completion.end - event.timestamp) if completion else None,
        "user.name": evidence.employee or None,
        "citygate.department": evidence.employee_department,
        "source.ip": event.client_ip,
        "url.scheme": scheme,
        "url.domain": decision.host,
        "url.path": path,
        "url.query": query,
        "http.request.method": event.method,
        "http.response.status_code": status,
        "http.request.body.bytes": completion.request_bytes if completion else None,
        "http.response.body.bytes": completion.response_bytes if completion else None,
        "rule.id": decision.grant.id if decision.grant else None,
        # Whom the grant is for (personal, group, department, city) and whether it is business
        # or personal use: reports and dashboards keep them apart.
        "rule.category": decision.grant.kind.value if decision.grant else None,
        "citygate.purpose_kind": decision.grant.purpose_kind.value if decision.grant else None,
        "citygate.site": decision.site_id,
        "citygate.approver": evidence.approver,
        "citygate.approver_role": evidence.approver_role,
        # A designee's approval names the Director they approved for (proxy/grants/designees.py).
        "citygate.delegated_by": evidence.delegated_by,
        "citygate.identity_method": evidence.identity_method,
        "citygate.mode": str(getattr(event, "mode", MODE)),
        "citygate.would_deny": would_deny,
        "citygate.flags": list(event.flags),  # rule ids of proxy/flags.py
        "citygate.tunnel": None if is_request else tunnel_handling(decision, event.status, would_deny),
        "citygate.detail": evidence.detail or None,
        "error.message": completion.error if completion else None,
    }


def connection_record(
    event_id: str,
    started: datetime,
    ended: datetime,
    host: str,
    request_bytes: int | None,
    response_bytes: int | None,
) -> dict[str, object]:
    """An ordinary (non-social) connection, when `audit.log_ordinary_connections` is on.

    Host and byte counts only: no path, no user, no client address. Byte counts are known for
    plain HTTP (the bodies citygate relayed); an HTTPS tunnel passes through unseen (None).
    """
    return {
        "@timestamp": timestamp(started),
        "ecs.version": ECS_VERSION,
        "event.kind": "event",
        "event.category": ["network"],
        "event.id": event_id,
        "event.action": ACTION_CONNECTION,
        "event.type": "allowed",
        "event.reason": "not_social_media",
        "event.end": timestamp(ended),
        "event.duration": _nanoseconds(ended - started),
        "url.domain": host,
        "http.request.body.bytes": request_bytes,
        "http.response.body.bytes": response_bytes,
        "citygate.mode": MODE,
    }


def state_record(action: str, at: datetime, **fields: object) -> dict[str, object]:
    """The log's own bookkeeping: a file starts, the writer starts or stops."""
    return {
        "@timestamp": timestamp(at),
        "ecs.version": ECS_VERSION,
        "event.kind": "state",
        "event.action": action,
        **{f"citygate.audit.{key}": value for key, value in fields.items()},
    }


def shown_url(url: str) -> str:
    """A request's URL as the log and the block page show it: printable, whatever was sent.

    mitmproxy keeps bytes that are not UTF-8 as lone surrogates (which no encoder takes, so a
    page or a log line holding one cannot be written) and passes control characters through.
    Every character that is not printable is percent-encoded as the bytes it came from; the
    rest, non-ASCII letters included, is kept as the client sent it.
    """
    if url.isprintable():
        return url
    return "".join(ch if ch.isprintable() else quote(_sent_bytes(ch), safe="") for ch in url)


def _sent_bytes(ch: str) -> bytes:
    try:
        return ch.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte: encoded as itself
        return ch.encode("utf-8", "surrogatepass")


# Where an absolute URL's authority ends (RFC 3986 §3.2).
_AUTHORITY_END = re.compile(r"[/?#]")


def _url_parts(url: str) -> tuple[str | None, str, str | None]:
    """Scheme, path and query of a request's URL; never raises, whatever the client sent.

    Not `urlsplit`: it refuses a URL whose authority holds an unbalanced or invalid bracketed
    address (`http://[:::]/`), which a client can put in its Host header, and a denial would
    then go out without its record. The authority is not needed here (the decision names the
    host), so it is skipped, not parsed.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    end = _AUTHORITY_END.search(rest)
    target = rest[end.start() :].partition("#")[0] if end else ""
    path, _, query = target.partition("?")
    return scheme or None, path or "/", query or None


def _nanoseconds(delta: timedelta) -> int:
    return max(0, round(delta.total_seconds() * 1_000_000) * 1000)
