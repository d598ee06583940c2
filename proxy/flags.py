"""Non-business-use flags: configurable rules, each with an id, over decisions and log records.

Pure: a rule reads a `Use` (the facts of one decision, taken from the gate's event or from an
access-log record), the time inside it and its settings; the windowed rules also read the uses
seen before, which a `WindowTracker` keeps. There is no clock and no I/O here, so the proxy,
the reports and the tests all evaluate the same code over the same facts.

Two kinds of rule:

- per request (`outside_business_hours`, `path_out_of_scope`, `grant_expiring`): one request
  decides them. The proxy evaluates them inline, records them on the access-log record
  (`citygate.flags`) and counts them in citygate_nonbusiness_flags_total.
- windowed (`daily_requests`, `daily_active_minutes`, `repeated_denials`): they need all of an
  employee's requests, which several worker processes, or several proxy hosts, share between
  them. The authoritative evaluation runs where all the data meets: over the merged access logs
  (`citygate report`). Each proxy process also evaluates them over the requests it has seen,
  as an early warning recorded like the others: exact with a single process, a lower bound
  (late or missing) when several processes share an employee's traffic.
"""

from __future__ import annotations

import difflib
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from enum import StrEnum
from pathlib import Path

from citygate.directory.problems import Problems
from citygate.proxy.yamlfile import Items, Node


class Kind(StrEnum):
    OUTSIDE_BUSINESS_HOURS = "outside_business_hours"
    PATH_OUT_OF_SCOPE = "path_out_of_scope"
    GRANT_EXPIRING = "grant_expiring"
    DAILY_REQUESTS = "daily_requests"
    DAILY_ACTIVE_MINUTES = "daily_active_minutes"
    REPEATED_DENIALS = "repeated_denials"


PER_REQUEST_KINDS = frozenset({Kind.OUTSIDE_BUSINESS_HOURS, Kind.PATH_OUT_OF_SCOPE, Kind.GRANT_EXPIRING})
WINDOWED_KINDS = frozenset({Kind.DAILY_REQUESTS, Kind.DAILY_ACTIVE_MINUTES, Kind.REPEATED_DENIALS})

# Denials that say something about the employee's use. Refusals caused by the system (the
# directory or the access log down, an internal error) or by a wrong password are not attempts
# to reach a site without a grant, so they never count towards repeated_denials by default.
POLICY_DENIALS = frozenset(
    {
        "no_grant",
        "grant_expired",
        "grant_not_yet_valid",
        "approver_not_authorized",
        "self_approval",
        "employee_disabled",
        "unknown_employee",
        "path_out_of_scope",
        "outside_hours",
    }
)
# An account that cannot sign in (locked, expired, ...) says nothing about the employee's use
# either: the directory refused the sign-in before any site was judged.
ACCOUNT_STATE_DENIALS = frozenset(
    {"account_locked", "account_expired", "password_expired", "password_must_change", "logon_not_permitted"}
)
ALL_REASONS = (
    POLICY_DENIALS
    | ACCOUNT_STATE_DENIALS
    | {
        "credentials_required",
        "credentials_invalid",
        "directory_unavailable",
        "internal_error",
        "audit_log_unavailable",
        "malformed_request",
        "unrecognized_protocol",
    }
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RULE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DAY_MINUTES = 24 * 60


class Counting(StrEnum):
    """How a decision counts for the windowed rules."""

    USE = "use"  # the employee used the site: an allowed request, or a tunnel passed through
    ATTEMPT = "attempt"  # a denied request, or a CONNECT refused outright
    NONE = "none"  # a tunnel decrypted to look inside: its requests count on their own


def counting(is_request: bool, allowed: bool, tunnel: str | None) -> Counting:
    """How one decision counts. `tunnel` is the CONNECT's handling (outcomes.tunnel_handling).

    A decrypted tunnel is followed by one decision per request inside it; counting its CONNECT
    as well would count every visit twice. A passed-through tunnel is all that is ever seen of
    the requests inside it, so it stands for them.
    """
    if is_request:
        return Counting.USE if allowed else Counting.ATTEMPT
    if tunnel == "decrypted":
        return Counting.NONE
    if allowed:
        return Counting.USE if tunnel == "passthrough" else Counting.NONE
    return Counting.ATTEMPT


@dataclass(frozen=True, slots=True)
class Use:
    """The facts of one decision that the flag rules look at."""

    at: datetime  # timezone-aware
    user: str | None
    site: str | None
    reason: str
    counts: Counting
    # When the grant that allowed it ends (exclusive), for grant_expiring; None if not known.
    grant_until: datetime | None = None
    # Allowed by a personal-use window (purpose_kind: personal): the city's policy permits it at
    # those hours, so it counts towards no rule on business use, and reports count it apart.
    personal: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    kind: Kind
    # outside_business_hours: business days (Monday = 0), hours as minutes since midnight
    # (start inclusive, end exclusive) and holidays (whole days outside business hours).
    weekdays: frozenset[int] = frozenset(range(5))
    start: int = 7 * 60
    end: int = 18 * 60
    holidays: frozenset[date] = frozenset()
    # daily_requests, daily_active_minutes: flagged once per employee, site and city day, on
    # the first use beyond this many.
    limit: int = 0
    # repeated_denials: `count` attempts within `window`, counting only these reasons.
    count: int = 5
    window: timedelta = timedelta(minutes=10)
    reasons: frozenset[str] = POLICY_DENIALS
    # grant_expiring: the grant ends within this many days of the request.
    days: int = 14


@dataclass(frozen=True, slots=True)
class FlagSettings:
    rules: tuple[Rule, ...] = ()

    @property
    def per_request(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.kind in PER_REQUEST_KINDS)

    @property
    def windowed(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.kind in WINDOWED_KINDS)

    def rule(self, rule_id: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.id == rule_id), None)


# --- per-request rules -----------------------------------------------------------------------


def outside_business_hours(rule: Rule, at: datetime, zone: tzinfo) -> bool:
    """Whether `at` falls outside business hours in the city's timezone (DST included).

    The wall-clock time is what counts: 07:30 is inside 07:00-18:00 on the Monday after the
    clocks went forward, although it is an hour nearer in UTC than on the Friday before.
    """
    local = at.astimezone(zone)
    if local.weekday() not in rule.weekdays or local.date() in rule.holidays:
        return True
    minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    return not rule.start <= minute < rule.end


def expires_within(until: datetime, at: datetime, days: int) -> bool:
    """Whether a grant valid until `until` (exclusive) ends within `days` days of `at`."""
    return at < until and until - at <= timedelta(days=days)


def request_flags(settings: FlagSettings, use: Use, zone: tzinfo) -> list[str]:
    """The ids of the per-request rules this decision triggers, in configuration order."""
    flags: list[str] = []
    if use.personal:
        return flags
    for rule in settings.rules:
        if rule.kind is Kind.OUTSIDE_BUSINESS_HOURS:
            hit = use.counts is Counting.USE and outside_business_hours(rule, use.at, zone)
        elif rule.kind is Kind.PATH_OUT_OF_SCOPE:
            hit = use.reason == "path_out_of_scope"
        elif rule.kind is Kind.GRANT_EXPIRING:
            hit = (
                use.counts is Counting.USE
                and use.grant_until is not None
                and expires_within(use.grant_until, use.at, rule.days)
            )
        else:
            continue
        if hit:
            flags.append(rule.id)
    return flags


# --- windowed rules --------------------------------------------------------------------------


@dataclass
class WindowTracker:
    """The windowed rules over a stream of uses in time order, one employee at a time each.

    `observe` returns the ids of the windowed rules a use triggers. Memory stays bounded: daily
    counts are kept for the current and the previous city day only (a long request can be
    recorded after midnight), and each employee's recent attempts only within the window.
    """

    settings: FlagSettings
    zone: tzinfo
    _daily: dict[tuple[str, str, str, date], int] = field(default_factory=dict)
    _minutes: dict[tuple[str, str, str, date], set[int]] = field(default_factory=dict)
    _attempts: dict[tuple[str, str], deque[datetime]] = field(default_factory=dict)
    _latest_day: date | None = None

    def observe(self, use: Use) -> list[str]:
        if use.user is None or use.counts is Counting.NONE or use.personal:
            return []
        local = use.at.astimezone(self.zone)
        self._forget_before(use.at, local.date())
        flags = []
        for rule in self.settings.rules:
            if rule.kind is Kind.DAILY_REQUESTS and use.counts is Counting.USE:
                key = (rule.id, use.user, use.site or "", local.date())
                seen = self._daily.get(key, 0) + 1
                self._daily[key] = seen
                if seen == rule.limit + 1:  # once a day: on the first request over the budget
                    flags.append(rule.id)
            elif rule.kind is Kind.DAILY_ACTIVE_MINUTES and use.counts is Counting.USE:
                key = (rule.id, use.user, use.site or "", local.date())
                minutes = self._minutes.setdefault(key, set())
                before = len(minutes)
                minutes.add(local.hour * 60 + local.minute)
                if len(minutes) == rule.limit + 1 and before == rule.limit:
                    flags.append(rule.id)
            elif (
                rule.kind is Kind.REPEATED_DENIALS
                and use.counts is Counting.ATTEMPT
                and use.reason in rule.reasons
            ):
                recent = self._attempts.setdefault((rule.id, use.user), deque())
                recent.append(use.at)
                while recent and recent[0] <= use.at - rule.window:
                    recent.popleft()
                if len(recent) >= rule.count:
                    flags.append(rule.id)
                    recent.clear()  # the next flag needs `count` new attempts
        return flags

    def _forget_before(self, at: datetime, day: date) -> None:
        """Drop what no later use can need; runs once per new city day, so it costs nothing."""
        if self._latest_day is not None and day <= self._latest_day:
            return
        self._latest_day = day
        keep_from = day - timedelta(days=1)
        for table in (self._daily, self._minutes):
            for key in [key for key in table if key[3] < keep_from]:
                del table[key]
        longest = max((rule.window for rule in self.settings.rules), default=timedelta(0))
        stale = [
            attempt for attempt, times in self._attempts.items() if not times or times[-1] <= at - longest
        ]
        for attempt in stale:
            del self._attempts[attempt]


def windowed_flags(
    settings: FlagSettings, uses: Iterable[Use], zone: tzinfo
) -> Iterator[tuple[Use, list[str]]]:
    """Each use with the windowed rules it triggers, given every use before it (in time order)."""
    tracker = WindowTracker(settings, zone)
    for use in uses:
        yield use, tracker.observe(use)


def use_of_record(record: Mapping[str, object]) -> Use | None:
    """The facts of an access-log decision record; None for any other record."""
    action = record.get("event.action")
    if action not in ("http-request", "http-connect"):
        return None
    try:
        at = datetime.fromisoformat(str(record.get("@timestamp")))
    except ValueError:
        return None
    tunnel = record.get("citygate.tunnel")
    return Use(
        at=at,
        user=str(record["user.name"]) if record.get("user.name") else None,
        site=str(record["citygate.site"]) if record.get("citygate.site") else None,
        reason=str(record.get("event.reason") or ""),
        counts=counting(
            action == "http-request",
            # A report-mode record (would_deny) is "allowed" but counts as the attempt it was.
            record.get("event.type") == "allowed" and not record.get("citygate.would_deny"),
            str(tunnel) if tunnel else None,
        ),
        personal=record.get("citygate.purpose_kind") == "personal" and record.get("event.type") == "allowed",
    )


# --- the `flags:` section --------------------------------------------------------------------

SECTION_KEYS = ("rules",)
_COMMON_KEYS = ("id", "kind")
KIND_KEYS: dict[Kind, tuple[str, ...]] = {
    Kind.OUTSIDE_BUSINESS_HOURS: ("weekdays", "hours", "holidays"),
    Kind.PATH_OUT_OF_SCOPE: (),
    Kind.GRANT_EXPIRING: ("days",),
    Kind.DAILY_REQUESTS: ("limit",),
    Kind.DAILY_ACTIVE_MINUTES: ("limit",),
    Kind.REPEATED_DENIALS: ("count", "window_minutes", "reasons"),
}
_EXAMPLE = (
    "e.g. rules: [{id: after-hours, kind: outside_business_hours, hours: 07:00-18:00}]; "
    'README "Flags" lists every kind'
)


def parse_flags_section(config_path: Path, node: Node | None, line: int, problems: Problems) -> FlagSettings:
    """The flag rules in `node`; no rules (no flags) when there is no `flags:` section."""
    if node is None:
        return FlagSettings()
    for key in sorted(set(node) - set(SECTION_KEYS)):
        problems.error(
            config_path, node.line_of(key), f'unknown setting "flags.{key}"', 'list the rules under "rules:"'
        )
    entries = node.get("rules")
    if entries is None:
        return FlagSettings()
    if not isinstance(entries, Items):
        problems.error(config_path, node.line_of("rules"), "flags.rules must be a list of rules", _EXAMPLE)
        return FlagSettings()
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for entry, entry_line in zip(entries, entries.item_lines, strict=True):
        rule = _rule(config_path, entry, entry_line, seen, problems)
        if rule is not None:
            rules.append(rule)
    return FlagSettings(tuple(rules))


Fail = Callable[[str, str, str], None]  # (key, problem, fix), reported at the key's line


def _rule(
    config_path: Path, entry: object, line: int, seen: dict[str, int], problems: Problems
) -> Rule | None:
    """One `rules:` entry; None when it has any problem (every one of them reported)."""
    if not isinstance(entry, Node):
        problems.error(config_path, line, "a flag rule must be a mapping", _EXAMPLE)
        return None
    errors = len(problems.errors)
    fail = _AtKey(config_path, entry, problems)
    rule_id = _rule_id(entry, seen, fail)
    kind = _rule_kind(entry, fail)
    if kind is None:
        return None
    allowed = (*_COMMON_KEYS, *KIND_KEYS[kind])
    for key in sorted(set(entry) - set(allowed)):
        fail(key, f'"{key}" is not a setting of a {kind.value} rule', f"its settings: {', '.join(allowed)}")
    values = _KIND_SETTINGS[kind](entry, fail)
    if rule_id is None or len(problems.errors) > errors:
        return None
    return Rule(id=rule_id, kind=kind, **values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _AtKey:
    """A Fail that reports a rule's problem at the line of the key it is about."""

    config_path: Path
    entry: Node
    problems: Problems

    def __call__(self, key: str, message: str, fix: str) -> None:
        self.problems.error(self.config_path, self.entry.line_of(key), message, fix)


def _rule_id(entry: Node, seen: dict[str, int], fail: Fail) -> str | None:
    """The rule's id, taken for this section; None when it is missing or not valid (reported)."""
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not RULE_ID.fullmatch(rule_id):
        fail(
            "id",
            f"flag rule id {rule_id!r} is not valid" if rule_id is not None else "a flag rule needs an id",
            'use lower-case letters, digits, "-" and "_", e.g. id: after-hours (it names the flag in logs and metrics)',
        )
        return None
    if rule_id in seen:
        fail(
            "id",
            f'flag rule id "{rule_id}" is already used on line {seen[rule_id]}',
            "give every rule its own id",
        )
    else:
        seen[rule_id] = entry.line_of("id")
    return rule_id


def _rule_kind(entry: Node, fail: Fail) -> Kind | None:
    raw_kind = entry.get("kind")
    try:
        return Kind(str(raw_kind))
    except ValueError:
        close = difflib.get_close_matches(str(raw_kind), [k.value for k in Kind], n=1)
        hint = f'did you mean "{close[0]}"?' if close else f"kinds: {', '.join(k.value for k in Kind)}"
        fail("kind", f"unknown flag rule kind {raw_kind!r}" if raw_kind else "a flag rule needs a kind", hint)
        return None


def _no_settings(entry: Node, fail: Fail) -> dict[str, object]:
    return {}


def _grant_expiring(entry: Node, fail: Fail) -> dict[str, object]:
    if "days" not in entry:
        return {}
    return {"days": _whole(entry, "days", 1, 366, "days: 14", fail)}


def _daily_requests(entry: Node, fail: Fail) -> dict[str, object]:
    return _daily_limit(entry, fail, Kind.DAILY_REQUESTS, 10_000_000, "limit: 2000")


def _daily_active_minutes(entry: Node, fail: Fail) -> dict[str, object]:
    return _daily_limit(entry, fail, Kind.DAILY_ACTIVE_MINUTES, _DAY_MINUTES - 1, "limit: 240")


def _daily_limit(entry: Node, fail: Fail, kind: Kind, high: int, example: str) -> dict[str, object]:
    """A daily rule's limit, which it must have: there is no default."""
    if "limit" not in entry:
        fail("kind", f"a {kind.value} rule needs a limit", f"e.g. {example}")
        return {}
    return {"limit": _whole(entry, "limit", 1, high, example, fail)}


def _repeated_denials(entry: Node, fail: Fail) -> dict[str, object]:
    values: dict[str, object] = {}
    if "count" in entry:
        values["count"] = _whole(entry, "count", 2, 100_000, "count: 5", fail)
    if "window_minutes" in entry:
        values["window"] = timedelta(
            minutes=_whole(entry, "window_minutes", 1, 7 * _DAY_MINUTES, "window_minutes: 10", fail)
        )
    if "reasons" in entry:
        values["reasons"] = _reasons(entry, fail)
    return values


def _whole(entry: Node, key: str, low: int, high: int, example: str, fail: Fail) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        fail(key, f"{key} {value!r} is not a whole number from {low} to {high}", f"e.g. {example}")
        return low
    return value


_DAY_NAMES = {
    **{name: index for index, name in enumerate(WEEKDAYS)},
    **{
        name: index
        for index, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}


def _business_hours(entry: Node, fail: Fail) -> dict[str, object]:
    values: dict[str, object] = {}
    for key, read in _BUSINESS_HOURS_READERS.items():
        if key in entry:
            values.update(read(entry[key], fail))
    return values


def _weekdays(raw: object, fail: Fail) -> dict[str, object]:
    names = [raw] if isinstance(raw, str) else raw
    days = set()
    if not isinstance(names, list) or not names:
        fail("weekdays", "weekdays must be a list of day names", "e.g. weekdays: [mon, tue, wed, thu, fri]")
    else:
        for name in names:
            index = _DAY_NAMES.get(str(name).strip().lower())
            if index is None:
                fail("weekdays", f"{name!r} is not a day of the week", f"use {', '.join(WEEKDAYS)}")
            else:
                days.add(index)
    return {"weekdays": frozenset(days)}


def _hours(raw: object, fail: Fail) -> dict[str, object]:
    # A string on purpose: YAML 1.1 reads an unquoted 18:00 as the number 1080 (base 60),
    # while 07:00-18:00 stays text.
    match = _HOURS.match(raw) if isinstance(raw, str) else None
    if match:
        h1, m1, h2, m2 = (int(part) for part in match.groups())
        if m1 < 60 and m2 < 60 and 0 <= h1 * 60 + m1 < h2 * 60 + m2 <= _DAY_MINUTES:
            return {"start": h1 * 60 + m1, "end": h2 * 60 + m2}
    fail(
        "hours",
        f"hours {raw!r} is not a span of the day such as 07:00-18:00",
        "write START-END in 24-hour time, START before END (24:00 is midnight at the end of the day)",
    )
    return {}


def _holidays(raw: object, fail: Fail) -> dict[str, object]:
    holidays = set()
    if not isinstance(raw, list):
        fail("holidays", "holidays must be a list of dates", "e.g. holidays: [2026-11-26, 2026-12-25]")
    else:
        for value in raw:
            if isinstance(value, date) and not isinstance(value, datetime):
                holidays.add(value)
                continue
            try:
                holidays.add(date.fromisoformat(str(value).strip()))
            except ValueError:
                fail(
                    "holidays",
                    f"holiday {value!r} is not a date",
                    "write it as YYYY-MM-DD, e.g. 2026-12-25",
                )
    return {"holidays": frozenset(holidays)}


# In the order their problems are reported; each gives the Rule fields it sets.
_BUSINESS_HOURS_READERS: dict[str, Callable[[object, Fail], dict[str, object]]] = {
    "weekdays": _weekdays,
    "hours": _hours,
    "holidays": _holidays,
}

# The settings of each kind of rule, beyond its id and kind (KIND_KEYS names them).
_KIND_SETTINGS: dict[Kind, Callable[[Node, Fail], dict[str, object]]] = {
    Kind.OUTSIDE_BUSINESS_HOURS: _business_hours,
    Kind.PATH_OUT_OF_SCOPE: _no_settings,
    Kind.GRANT_EXPIRING: _grant_expiring,
    Kind.DAILY_REQUESTS: _daily_requests,
    Kind.DAILY_ACTIVE_MINUTES: _daily_active_minutes,
    Kind.REPEATED_DENIALS: _repeated_denials,
}


def _reasons(entry: Node, fail: Fail) -> frozenset[str]:
    raw = entry["reasons"]
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names:
        fail(
            "reasons", "reasons must be a list of reason codes", "e.g. reasons: [no_grant, path_out_of_scope]"
        )
        return POLICY_DENIALS
    reasons = set()
    for name in names:
        if str(name) in ALL_REASONS:
            reasons.add(str(name))
            continue
        close = difflib.get_close_matches(str(name), sorted(ALL_REASONS), n=1)
        hint = f'did you mean "{close[0]}"?' if close else f"reasons: {', '.join(sorted(ALL_REASONS))}"
        fail("reasons", f"unknown reason {name!r}", hint)
    return frozenset(reasons)
