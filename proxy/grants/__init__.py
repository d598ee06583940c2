"""Directors' grants: who, named sites, a business purpose, an approver, an expiry.

Who is one of (`GrantKind`):
- `employee: jlee`: one person (a personal grant);
- `group: communications-team`: the members of a directory group, as the directory resolves
  membership (nested groups where the preset does, e.g. AD's LDAP_MATCHING_RULE_IN_CHAIN);
- `department: Parks`: everyone whose directory department is Parks;
- `city: true`: everyone, a city-wide allowance. It must name the pages it allows (`paths:`)
  for every site, never a whole site, unless it is a personal-use window (`purpose_kind:
  personal` with `hours:`). Page-scoped city allowances apply to people who have not signed in.

`purpose_kind: personal` marks an allowance for personal use where a city's policy permits it
(El Paso's "when the employee is not required to be performing any duties"): only on
department or city grants, always with `hours:`. Everything else is `business`.

Grant files are written by hand, so the loader checks everything it can without the
directory and reports each mistake as `file:line: problem; fix`. Whether the approver really
may approve (a Director of the right department, an executive for city-wide and personal-use
allowances) is not decided here: that depends on the live directory and is checked by the
decision core on every request.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from citygate.directory.problems import Problem, Problems, Severity
from citygate.proxy.catalog import Catalog
from citygate.proxy.grants.designees import Delegation, parse_designees
from citygate.proxy.grants.hours import EXAMPLE as HOURS_EXAMPLE
from citygate.proxy.grants.hours import Hours, HoursProblem, parse_hours
from citygate.proxy.yamlfile import Items, Node, read_yaml

GRANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
REQUEST_ID = re.compile(r"req-[0-9]{4}-[0-9]{4,}")
GRANT_KEYS = (
    "id",
    "employee",
    "group",
    "department",
    "city",
    "sites",
    "purpose",
    "approved_by",
    "approved_on",
    "expires",
    "start",
    "paths",
    "hours",
    "purpose_kind",
    "request",  # the access request the grant was approved from (proxy/requests), when it was
)
# The last dates whose day-after can still be computed (valid_until is the day after expiry).
_EARLIEST, _LATEST = date.min, date.max - timedelta(days=2)
REQUIRED_KEYS = ("id", "sites", "purpose", "approved_by", "approved_on", "expires")
WHO_KEYS = ("employee", "group", "department", "city")


class GrantKind(StrEnum):
    """Whom a grant is for; metrics and logs label by it (never by a group's or person's name)."""

    PERSONAL = "personal"
    GROUP = "group"
    DEPARTMENT = "department"
    CITY = "city"


class PurposeKind(StrEnum):
    BUSINESS = "business"
    PERSONAL = "personal"


_WHO_KIND = {
    "employee": GrantKind.PERSONAL,
    "group": GrantKind.GROUP,
    "department": GrantKind.DEPARTMENT,
    "city": GrantKind.CITY,
}
_WHO_FIX = (
    "name whom the grant is for with one of: employee: jlee, group: communications-team, "
    "department: Parks, city: true"
)


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    employee: str  # the login name, for a personal grant; "" for the other kinds
    sites: tuple[str, ...]
    purpose: str
    approved_by: str
    approved_on: date
    valid_from: datetime
    valid_until: datetime  # exclusive
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    source: Path = Path()
    line: int = 0
    # The grant file's `department:`, as the director wrote it (None when the file has none).
    # Metrics and reports group grants by it without asking the directory about each employee.
    department: str | None = None
    # When in the week the grant may be used (city time); None: at any hour.
    hours: Hours | None = None
    kind: GrantKind = GrantKind.PERSONAL
    # The group (casefolded cn) of a group grant, the department of a department grant; "" otherwise.
    audience: str = ""
    purpose_kind: PurposeKind = PurposeKind.BUSINESS
    # The access request it was approved from (`request: req-2026-0042`); None when written by hand.
    request_id: str | None = None

    @property
    def whom(self) -> str:
        """Whom the grant is for, in words: "jlee", "group communications-team", "everyone"."""
        if self.kind is GrantKind.PERSONAL:
            return self.employee
        if self.kind is GrantKind.CITY:
            return "everyone"
        return f"{self.kind.value} {self.audience}"

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    def scope_for(self, site_id: str) -> tuple[str, ...] | None:
        """The path prefixes this grant allows on the site's pages, or None for the whole site."""
        return self.paths.get(site_id)


def normalize_path(raw: str) -> str | None:
    """The path a server will act on, or None when servers may read it differently.

    The query and fragment are dropped, escapes decoded once, `;` parameters removed from each
    segment, then `.`/`..` and `//` resolved. Decoding and dropping parameters before resolving
    means `/FresnoParks/%2e%2e/evil` and `/FresnoParks/..;/evil` (a Tomcat-style `..;`) are both
    judged as `/evil`, so neither climbs out of a granted scope.

    None means ambiguous: still an escape after one decode (`%252e`), an encoded or literal
    backslash, an encoded slash (`%2f`: some servers split on it, others do not), or a control
    byte (some servers stop at a NUL). Such a path is refused, never guessed at.
    """
    path = raw.split("#", 1)[0].split("?", 1)[0]
    if path[:1] == "/" and not _NEEDS_WORK.search(path):
        return path  # nothing to decode or resolve: already in normal form
    if _AMBIGUOUS_RAW.search(path):
        return None
    decoded = unquote(path) if "%" in path else path
    if _AMBIGUOUS_DECODED.search(decoded):
        return None
    segments: list[str] = []
    for segment in decoded.split("/"):
        segment = segment.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    normalized = "/" + "/".join(segments)
    if decoded.endswith("/") and segments:
        normalized += "/"
    return normalized


# Anything but plain segments: an escape, a dot segment, an empty segment, a parameter.
_NEEDS_WORK = re.compile(r"%|/\.|//|;|[\\\x00-\x1f\x7f]")
_AMBIGUOUS_RAW = re.compile(r"\\|%2[fF]|%5[cC]")
_AMBIGUOUS_DECODED = re.compile(r"%[0-9A-Fa-f]{2}|[\x00-\x1f\x7f\\]")


def path_in_scope(path: str | None, scope: Iterable[str]) -> bool:
    """Whether a normalized path lies under one of the scope prefixes, at a segment boundary.

    An ambiguous path (`normalize_path` gave None) lies under none.
    """
    if path is None:
        return False
    for prefix in scope:
        base = prefix.rstrip("/")
        if not base or path == base or path.startswith(base + "/"):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ReadFile:
    """A grant file as a load read it, reused by the next load while nothing it rests on changed.

    A reload after one director's edit then reads one file instead of all of them: with 100,000
    grants in 50 files, a fraction of a second instead of tens of seconds (BENCHMARKS.md).
    """

    digest: bytes  # of the file's bytes
    context: Hashable  # everything else its checks depend on (GrantLoader.context)
    grants: tuple[Grant, ...]
    warnings: tuple[Problem, ...]
    ids: tuple[tuple[str, str], ...]  # (grant id, "file:line" of its id), in file order
    delegations: tuple[Delegation, ...] = ()  # its `designees:`


@dataclass(slots=True)
class GrantLoader:
    """Reads grant files into `Grant`s; the context every check needs travels with it.

    `previous` holds the files the last successful load read: a file whose bytes and context are
    unchanged is taken from there, its warnings reported again and its ids checked against the
    other files', exactly as reading it again would. `read` collects this load's files for the
    next one; a file with errors is not kept (it must be read again once fixed).
    """

    catalog: Catalog
    timezone: ZoneInfo
    max_days: int
    today: date
    problems: Problems
    seen_ids: dict[str, str] = field(default_factory=dict)
    # The catalog's identity (its file's digest) and the settings the checks use; a change in any
    # of them means every file must be read again.
    context: Hashable = None
    previous: Mapping[Path, ReadFile] = field(default_factory=dict)
    read: dict[Path, ReadFile] = field(default_factory=dict)
    #: Every file's `designees:`, in the order the files were loaded.
    delegations: list[Delegation] = field(default_factory=list)
    #: Files about to be written, by path: their text is read instead of what is on disk.
    pending: Mapping[Path, str] = field(default_factory=dict)

    def load_file(self, path: Path) -> list[Grant]:
        try:
            text = self.pending.get(path)
            digest = hashlib.sha256(path.read_bytes() if text is None else text.encode()).digest()
        except OSError:
            digest = b""  # read_yaml reports the problem
        earlier = self.previous.get(path)
        unchanged = earlier is not None and earlier.digest == digest and earlier.context == self.context
        if unchanged and self._reuse(earlier):  # type: ignore[arg-type]
            self.read[path] = earlier  # type: ignore[assignment]
            self.delegations += earlier.delegations  # type: ignore[union-attr]
            return list(earlier.grants)  # type: ignore[union-attr]
        problems_before, ids_before = len(self.problems), len(self.seen_ids)
        delegations_before = len(self.delegations)
        grants = self._read(path)
        found = self.problems[problems_before:]
        if digest and not any(problem.severity is Severity.ERROR for problem in found):
            ids = tuple(list(self.seen_ids.items())[ids_before:])
            delegations = tuple(self.delegations[delegations_before:])
            self.read[path] = ReadFile(digest, self.context, tuple(grants), tuple(found), ids, delegations)
        return grants

    def _reuse(self, earlier: ReadFile) -> bool:
        """Take an unchanged file's grants, unless one of its ids is now taken by another file."""
        if any(grant_id in self.seen_ids for grant_id, _ in earlier.ids):
            return False  # read it again, so the duplicate is reported where a fresh load would
        self.seen_ids.update(earlier.ids)
        self.problems.extend(earlier.warnings)
        return True

    def _read(self, path: Path) -> list[Grant]:
        document = read_yaml(
            path,
            self.problems,
            'write "grants: []" for a department with no grants yet',
            text=self.pending.get(path),
        )
        if document is None:
            return []
        entries = document.get("grants") if isinstance(document, Node) else None
        if not isinstance(entries, Items):
            self.problems.error(
                path,
                getattr(document, "line", 1),
                'a grant file must have a "grants:" list',
                'start the file with "grants:" followed by "- id: ..." entries (see config/grants/)',
            )
            return []
        unknown_top = set(document) - {"grants", "department", "designees", "notes"}
        for key in sorted(unknown_top):
            self.problems.error(
                path,
                document.line_of(key),
                f'unknown top-level key "{key}"',
                'use "grants:" (and optionally "department:", "designees:", "notes:")',
            )
        self.delegations += parse_designees(
            path, document, self.catalog, self.timezone, self.today, self.problems
        )
        grants = []
        department = _text(document.get("department")) or None
        for entry, line in zip(entries, entries.item_lines, strict=True):
            grant = self._parse(path, entry, line, department)
            if grant is not None:
                grants.append(grant)
        return grants

    def _parse(self, path: Path, entry: object, line: int, department: str | None = None) -> Grant | None:
        """One grant entry; None when it has an error (every one of them reported)."""
        problems = self.problems
        if not isinstance(entry, Node):
            problems.error(path, line, "a grant must be a mapping", 'write "- id: ...", "employee: ...", ...')
            return None
        errors_before = len(problems.errors)
        self._check_keys(path, entry)
        grant_id = self._grant_id(path, entry)
        kind, audience = self._whom(path, entry)
        employee = audience.casefold() if kind is GrantKind.PERSONAL else ""
        approver = _text(entry.get("approved_by")).casefold()
        purpose = self._purpose(path, entry)
        sites = self._sites(path, entry)
        approved_on = self._date(path, entry, "approved_on")
        start = self._date(path, entry, "start") if "start" in entry else None
        expires = self._date(path, entry, "expires")
        paths = self._paths(path, entry, sites)
        hours = self._hours(path, entry) if "hours" in entry else None
        purpose_kind = self._purpose_kind(path, entry, kind, hours)
        request_id = self._request_id(path, entry) if "request" in entry else None
        if kind is GrantKind.CITY and not (purpose_kind is PurposeKind.PERSONAL and hours):
            for site_id in sites:
                if site_id not in paths:
                    self._fail(
                        path,
                        entry,
                        "paths" if "paths" in entry else "city",
                        f'a city-wide allowance must name the pages it allows on "{site_id}", never the whole site',
                        f"add paths: {{{site_id}: [/CityOfExample]}}, or make it a personal-use window "
                        "(purpose_kind: personal with hours:)",
                    )
        self._check_period(path, entry, grant_id, approved_on, start, expires)
        if employee and employee == approver:
            problems.warning(
                path,
                entry.line_of("approved_by"),
                f'grant "{grant_id}" is approved by its own employee and will never be used',
                "have a Director of the employee's department approve it",
            )

        if len(problems.errors) > errors_before or not (approved_on and expires):
            return None
        return Grant(
            id=grant_id,
            employee=employee,
            sites=tuple(sites),
            purpose=purpose,
            approved_by=approver,
            approved_on=approved_on,
            valid_from=self._start_of(start or approved_on),
            valid_until=self._start_of(expires + timedelta(days=1)),
            paths=MappingProxyType(paths),
            source=path,
            line=line,
            department=department,
            hours=hours,
            kind=kind,
            audience="" if kind is GrantKind.PERSONAL else audience,
            purpose_kind=purpose_kind,
            request_id=request_id,
        )

    def _fail(self, path: Path, entry: Node, key: str, message: str, fix: str) -> None:
        """An error at the line of the entry's `key` (the entry's own line when it has none)."""
        self.problems.error(path, entry.line_of(key), message, fix)

    def _check_keys(self, path: Path, entry: Node) -> None:
        """Unknown keys (with the key most likely meant), then the required ones missing or empty."""
        for key in sorted(set(entry) - set(GRANT_KEYS)):
            close = (
                [_KEY_ALIASES[key]]
                if key in _KEY_ALIASES
                else difflib.get_close_matches(key, GRANT_KEYS, n=1)
            )
            hint = f'did you mean "{close[0]}"?' if close else f"allowed keys: {', '.join(GRANT_KEYS)}"
            self._fail(path, entry, key, f'unknown key "{key}" in a grant', hint)
        for key in REQUIRED_KEYS:
            if key not in entry or entry[key] in (None, "", []):
                self._fail(path, entry, key, f'grant is missing "{key}"', _REQUIRED_FIX[key])

    def _grant_id(self, path: Path, entry: Node) -> str:
        """The entry's id ("" when missing), taken for this load unless it is invalid or taken already."""
        grant_id = _text(entry.get("id"))
        if grant_id and not GRANT_ID.fullmatch(grant_id):
            self._fail(
                path,
                entry,
                "id",
                f"grant id {grant_id!r} is not valid",
                'use letters, digits, ".", "_" and "-", e.g. "parks-2026-001"',
            )
        elif grant_id in self.seen_ids:
            self._fail(
                path,
                entry,
                "id",
                f'grant id "{grant_id}" is already used at {self.seen_ids[grant_id]}',
                "give every grant its own id",
            )
        elif grant_id:
            self.seen_ids[grant_id] = f"{path}:{entry.line_of('id')}"
        return grant_id

    def _request_id(self, path: Path, entry: Node) -> str | None:
        request_id = _text(entry.get("request"))
        if not REQUEST_ID.fullmatch(request_id):
            self._fail(
                path,
                entry,
                "request",
                f"request id {request_id!r} is not valid",
                'use the id of the access request the grant was approved from, e.g. "req-2026-0042", '
                "or leave request: out for a grant written by hand",
            )
            return None
        return request_id

    def _purpose(self, path: Path, entry: Node) -> str:
        purpose = _text(entry.get("purpose"))
        if "purpose" in entry and not purpose:
            self._fail(
                path,
                entry,
                "purpose",
                "the business purpose is empty",
                'state what the access is for, e.g. "Post park closures on the Parks page"',
            )
        return purpose

    def _check_period(
        self,
        path: Path,
        entry: Node,
        grant_id: str,
        approved_on: date | None,
        start: date | None,
        expires: date | None,
    ) -> None:
        """Approved in the past; access that ends after it begins and lasts at most max_days."""
        if approved_on and approved_on > self.today:
            self._fail(
                path,
                entry,
                "approved_on",
                f"approved_on {approved_on} is in the future",
                "use the date the Director actually approved the grant",
            )
        if not (expires and approved_on):
            return  # a missing or unreadable date is reported already
        begins = max(start or approved_on, approved_on)
        if expires < begins:
            self._fail(
                path,
                entry,
                "expires",
                f"expires {expires} is before the grant begins ({begins})",
                "set an expiry after approved_on and start",
            )
        # Counted in days of access, both ends included.
        elif (expires - begins).days + 1 > self.max_days:
            latest = begins + timedelta(days=self.max_days - 1)
            self._fail(
                path,
                entry,
                "expires",
                f"expires {expires} would give {(expires - begins).days + 1} days of access "
                f"from {begins}, more than the maximum of {self.max_days}",
                f"grants last at most {self.max_days} days: expire on or before {latest} and renew after",
            )
        elif expires < self.today:
            self.problems.warning(
                path,
                entry.line_of("expires"),
                f'grant "{grant_id}" expired on {expires}',
                "renew it or delete it",
            )

    def _sites(self, path: Path, entry: Node) -> list[str]:
        raw = entry.get("sites")
        if raw is None:
            return []
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list):
            self.problems.error(
                path,
                entry.line_of("sites"),
                "sites must be a list of site ids",
                "write sites: [facebook, instagram]",
            )
            return []
        sites = []
        for value in values:
            site_id = _text(value).lower()
            if site_id in self.catalog.sites:
                sites.append(site_id)
                continue
            close = difflib.get_close_matches(site_id, list(self.catalog.sites), n=1)
            hint = f'did you mean "{close[0]}"?' if close else "use a site id from the catalog (sites.yaml)"
            if site_id in ("all", "*"):
                hint = "a grant must name each site it allows; list the site ids"
            self.problems.error(path, entry.line_of("sites"), f'unknown site "{value}"', hint)
        return sites

    def _date(self, path: Path, entry: Node, key: str) -> date | None:
        raw = entry.get(key)
        if raw is None or raw == "":
            return None
        if isinstance(raw, datetime):
            value: date | None = raw.date()
        elif isinstance(raw, date):
            value = raw
        else:
            try:
                value = date.fromisoformat(str(raw).strip())
            except ValueError:
                value = None
        if value is not None and _EARLIEST <= value <= _LATEST:
            return value
        self.problems.error(
            path,
            entry.line_of(key),
            f"{key} {raw!r} is not a date" if value is None else f"{key} {value} is out of range",
            f"write it as YYYY-MM-DD, e.g. {key}: 2026-12-31",
        )
        return None

    def _paths(self, path: Path, entry: Node, sites: list[str]) -> dict[str, tuple[str, ...]]:
        raw = entry.get("paths")
        if raw is None:
            return {}
        if not isinstance(raw, Node):
            self.problems.error(
                path,
                entry.line_of("paths"),
                "paths must map a site id to a list of paths",
                "write paths: {facebook: [/FresnoParks]}",
            )
            return {}
        scopes: dict[str, tuple[str, ...]] = {}
        named = entry.get("sites")
        named = {_text(v).lower() for v in (named if isinstance(named, list) else [named])}
        for site_id, prefixes in raw.items():
            line = raw.line_of(site_id)
            if site_id not in sites:
                if site_id in named:
                    continue  # the site id itself is wrong, and that is reported already
                self.problems.error(
                    path,
                    line,
                    f'paths names "{site_id}", which is not in this grant\'s sites',
                    "scope only sites the grant allows",
                )
                continue
            values = [prefixes] if isinstance(prefixes, str) else prefixes
            if not isinstance(values, list) or not values:
                self.problems.error(
                    path,
                    line,
                    f'paths for "{site_id}" must be a non-empty list',
                    f"write {site_id}: [/PageName]",
                )
                continue
            cleaned = []
            for value in values:
                text = _text(value)
                if not text.startswith("/") or "?" in text or "#" in text:
                    self.problems.error(
                        path,
                        line,
                        f"path {value!r} must start with / and have no query",
                        'write a path such as "/FresnoParks"',
                    )
                    continue
                normalized = normalize_path(text)
                if normalized is None:
                    self.problems.error(
                        path,
                        line,
                        f"path {value!r} is ambiguous: servers may read it differently",
                        "write it without %2F, %5C, backslashes, control characters or double escapes",
                    )
                    continue
                cleaned.append(normalized)
            if cleaned:
                scopes[site_id] = tuple(cleaned)
        return scopes

    def _whom(self, path: Path, entry: Node) -> tuple[GrantKind, str]:
        """Whom the grant is for: exactly one of employee, group, department, city."""
        named = [key for key in WHO_KEYS if key in entry]
        if len(named) != 1:
            message = (
                'grant is missing "employee" (or "group", "department", "city")'
                if not named
                else f"grant names {' and '.join(named)}: a grant is for one of them"
            )
            self._fail(path, entry, named[1] if len(named) > 1 else "employee", message, _WHO_FIX)
            return GrantKind.PERSONAL, ""
        key = named[0]
        value = entry.get(key)
        if key == "city":
            if value is not True:
                self._fail(path, entry, key, f"city: {value!r} is not true", "write city: true for everyone")
            return GrantKind.CITY, ""
        text = _text(value)
        if key == "group" and "=" in text:
            text = _group_cn(text)
        if not text or isinstance(value, (list, dict, bool)):
            self._fail(path, entry, key, f"{key} must be one name, not {value!r}", _WHO_FIX)
            return _WHO_KIND[key], ""
        return _WHO_KIND[key], text.casefold() if key == "group" else text

    def _purpose_kind(self, path: Path, entry: Node, kind: GrantKind, hours: Hours | None) -> PurposeKind:
        raw = _text(entry.get("purpose_kind")).lower() or PurposeKind.BUSINESS.value
        try:
            purpose_kind = PurposeKind(raw)
        except ValueError:
            self._fail(
                path, entry, "purpose_kind", f"purpose_kind {raw!r} is not known", "use business or personal"
            )
            return PurposeKind.BUSINESS
        if purpose_kind is PurposeKind.PERSONAL:
            if kind not in (GrantKind.CITY, GrantKind.DEPARTMENT):
                self._fail(
                    path,
                    entry,
                    "purpose_kind",
                    "personal use is allowed only city-wide or department-wide",
                    "make it a city: true or department: grant, approved by an executive, or drop purpose_kind",
                )
            elif hours is None:
                self._fail(
                    path,
                    entry,
                    "purpose_kind",
                    "a personal-use allowance must be limited by hours:",
                    "add the times personal use is allowed, e.g. hours: Mon-Fri 12:00-13:00",
                )
        return purpose_kind

    def _hours(self, path: Path, entry: Node) -> Hours | None:
        try:
            return parse_hours(entry.get("hours"))
        except HoursProblem as exc:
            self._fail(path, entry, "hours", f"hours: {exc}", f"write {HOURS_EXAMPLE}")
            return None

    def _start_of(self, day: date) -> datetime:
        return datetime.combine(day, time.min, tzinfo=self.timezone)


# Words a director may naturally write for a key, where spelling similarity would guess wrong.
_KEY_ALIASES = {
    "approver": "approved_by",
    "approved": "approved_by",
    "director": "approved_by",
    "user": "employee",
    "employee_id": "employee",
    "site": "sites",
    "business_purpose": "purpose",
    "reason": "purpose",
    "expiry": "expires",
    "expiration": "expires",
    "until": "expires",
    "path": "paths",
    "schedule": "hours",
    "times": "hours",
    "window": "hours",
}

_REQUIRED_FIX = {
    "id": 'add a unique id, e.g. "id: parks-2026-001"',
    "sites": 'list the site ids the grant allows, e.g. "sites: [facebook]"',
    "purpose": 'state the business purpose, e.g. "purpose: Post park closures on the Parks page"',
    "approved_by": 'add the approving Director\'s login name, e.g. "approved_by: ahernandez"',
    "approved_on": 'add the approval date, e.g. "approved_on: 2026-01-15"',
    "expires": 'add an expiry date, e.g. "expires: 2026-12-31"',
}


def _group_cn(dn: str) -> str:
    """A group named by its DN is matched by its cn (the first RDN's value), as memberships are."""
    first = dn.split(",", 1)[0]
    attribute, _, value = first.partition("=")
    return value.strip() if attribute.strip().lower() == "cn" else ""


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value).strip())
