"""Which access-log records a security analyst asked for: `citygate logs` filters, pure.

`LogFilter.match(line)` looks at raw bytes first: the timestamp sits at a fixed place at the
start of every line (canonical JSON sorts "@timestamp" first and it has a fixed width), and each
other filter is a byte string that must occur in the line. Only lines that pass are parsed
and checked exactly. Most lines of a large log are rejected without being parsed, which is
what makes scanning fast (see bench/logs_scan.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from citygate.proxy.audit.record import ACTION_CONNECTION, DECISION_ACTIONS, timestamp

_TS_PREFIX = b'{"@timestamp":"'
_TS_END = len(_TS_PREFIX) + len("2026-01-01T00:00:00.000000Z")
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class LogQuery:
    user: str | None = None
    department: str | None = None
    site: str | None = None  # a site id ("facebook") or a domain ("facebook.com")
    decision: str | None = None  # "allowed" or "denied"
    reason: str | None = None
    grant: str | None = None
    flag: str | None = None
    event_id: str | None = None
    would_deny: bool = False  # only report-mode records that enforce mode would have denied
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    ordinary: bool = False  # also ordinary-connection records


class LogFilter:
    def __init__(self, query: LogQuery) -> None:
        self.query = query
        self._since = timestamp(query.since).encode() if query.since else None
        self._until = timestamp(query.until).encode() if query.until else None
        exact: list[bytes] = []  # must occur as they are
        folded: list[bytes] = []  # must occur in the lower-cased line
        if not query.ordinary:
            exact.append(b'"event.action":"http-')
        if query.decision:
            exact.append(b'"event.type":' + _json(query.decision))
        if query.reason:
            exact.append(b'"event.reason":' + _json(query.reason))
        if query.event_id:
            exact.append(b'"event.id":' + _json(query.event_id.lower()))
        if query.would_deny:
            exact.append(b'"citygate.would_deny":true')
        for key, value in (
            ("user.name", query.user),
            ("citygate.department", query.department),
            ("rule.id", query.grant),
        ):
            if value and value.isascii():
                folded.append(f'"{key}":'.encode() + _json(value.casefold()))
        for value in (query.site, query.flag):
            if value and value.isascii():
                folded.append(value.casefold().encode())
        self._exact = tuple(exact)
        self._folded = tuple(folded)

    def match(self, line: bytes) -> dict[str, object] | None:
        """The record in `line` if it is one the query asks for, else None."""
        if self._since is not None or self._until is not None:
            if not line.startswith(_TS_PREFIX):
                return None
            at = line[len(_TS_PREFIX) : _TS_END]
            if (self._since is not None and at < self._since) or (
                self._until is not None and at >= self._until
            ):
                return None
        for needle in self._exact:
            if needle not in line:
                return None
        if self._folded:
            lowered = line.lower()
            for needle in self._folded:
                if needle not in lowered:
                    return None
        try:
            record = json.loads(line)
        except ValueError:
            return None  # a damaged line: `citygate audit verify` is the tool for those
        return record if isinstance(record, dict) and self._exactly(record) else None

    def _exactly(self, record: dict[str, object]) -> bool:
        query = self.query
        action = record.get("event.action")
        if action not in DECISION_ACTIONS and not (query.ordinary and action == ACTION_CONNECTION):
            return False
        checks = (
            ("user.name", query.user),
            ("citygate.department", query.department),
            ("event.type", query.decision),
            ("event.reason", query.reason),
            ("rule.id", query.grant),
            ("event.id", query.event_id),
        )
        for key, wanted in checks:
            if wanted is not None and str(record.get(key) or "").casefold() != wanted.casefold():
                return False
        if query.would_deny and record.get("citygate.would_deny") is not True:
            return False
        if query.site is not None:
            site = query.site.casefold().strip(".")
            domain = str(record.get("url.domain") or "").casefold()
            if str(record.get("citygate.site") or "").casefold() != site and not (
                domain == site or domain.endswith("." + site)
            ):
                return False
        if query.flag is not None:
            flags = record.get("citygate.flags") or []
            if not isinstance(flags, list) or query.flag.casefold() not in (str(f).casefold() for f in flags):
                return False
        return True


def parse_when(text: str, zone: tzinfo, *, now: datetime, end_of_day: bool = False) -> datetime:
    """A --since/--until value: "7d", "12h", "30m" ago; a date; or an ISO 8601 time.

    Dates and times without an offset are in `zone` (the city's). A bare date means the start of
    that day, or its end with `end_of_day` (so `--until 2026-11-30` includes November 30).
    Raises ValueError with a message that says what is accepted.
    """
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is not None and len(value) == 10:
        if end_of_day:
            day += timedelta(days=1)
        return datetime.combine(day, time(), zone)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time; use a date (2026-11-21), a time (2026-11-21T08:30, "
            "2026-11-21T16:30Z) or an age (30m, 12h, 7d)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=zone)


def _json(value: str) -> bytes:
    return json.dumps(value).encode()
