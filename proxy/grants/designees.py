"""Designees: a Director names someone who may approve grants in their stead (Glendale 6.5's
"Department Director/designee").

A department's grant file holds its Director's designees, beside its grants:

    department: Parks
    designees:
      - designee: mnguyen        # may approve as the Director would...
        director: ahernandez     # ...for as long as ahernandez is a Director (checked live)
        expires: 2026-12-31      # optional: the last day of the delegation
        sites: [facebook]        # optional: only grants for these sites

A designee's approval counts only while the delegation is unexpired and the delegating Director
still holds the role and may approve that grant, checked against the directory on every
decision like any approval (decision.py); the evidence names both. A designee never approves
their own access, never names designees of their own (a designee is not a Director), and never
approves what only an executive may (city-wide and personal-use allowances).

Pure: parsed when the grant files load; decision.py judges.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from citygate.directory.problems import Problems
from citygate.proxy.catalog import Catalog
from citygate.proxy.yamlfile import Items, Node

DESIGNEE_KEYS = ("designee", "director", "expires", "sites")
_EXAMPLE = "e.g. designees: [{designee: mnguyen, director: ahernandez, expires: 2026-12-31}]"


@dataclass(frozen=True, slots=True)
class Delegation:
    designee: str  # casefolded login
    director: str  # casefolded login
    valid_until: datetime | None  # exclusive; None: until the Director withdraws it
    sites: frozenset[str] | None  # None: every site
    source: Path = Path()
    line: int = 0

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    def covers(self, site_id: str, at: datetime) -> bool:
        """Whether it is in force at `at` for grants of the site."""
        return (self.valid_until is None or at < self.valid_until) and (
            self.sites is None or site_id in self.sites
        )


def parse_designees(
    path: Path, document: Node, catalog: Catalog, timezone: ZoneInfo, today: date, problems: Problems
) -> list[Delegation]:
    """A grant file's `designees:`; every mistake reported with its line and fix."""
    entries = document.get("designees")
    if entries is None:
        return []
    if not isinstance(entries, Items):
        problems.error(path, document.line_of("designees"), "designees must be a list", _EXAMPLE)
        return []
    delegations = []
    for entry, line in zip(entries, entries.item_lines, strict=True):
        delegation = _delegation(path, entry, line, catalog, timezone, today, problems)
        if delegation is not None:
            delegations.append(delegation)
    return delegations


def _delegation(
    path: Path,
    entry: object,
    line: int,
    catalog: Catalog,
    timezone: ZoneInfo,
    today: date,
    problems: Problems,
) -> Delegation | None:
    if not isinstance(entry, Node):
        problems.error(path, line, "a designee must be a mapping", _EXAMPLE)
        return None
    errors = len(problems.errors)
    for key in sorted(set(entry) - set(DESIGNEE_KEYS)):
        close = difflib.get_close_matches(key, DESIGNEE_KEYS, n=1)
        hint = f'did you mean "{close[0]}"?' if close else f"allowed keys: {', '.join(DESIGNEE_KEYS)}"
        problems.error(path, entry.line_of(key), f'unknown key "{key}" in a designee', hint)
    designee, director = _login(entry, "designee"), _login(entry, "director")
    for key, value in (("designee", designee), ("director", director)):
        if not value:
            problems.error(
                path, entry.line_of(key), f'designee is missing "{key}"', f"add {key}: <login name>"
            )
    if designee and designee == director:
        problems.error(path, entry.line_of("designee"), "a Director cannot be their own designee", _EXAMPLE)
    expires = _expires(path, entry, problems)
    if expires is not None and expires < today:
        problems.warning(
            path,
            entry.line_of("expires"),
            f"the delegation to {designee} ended on {expires}",
            "renew it or delete it",
        )
    sites = _sites(path, entry, catalog, problems)
    if len(problems.errors) > errors:
        return None
    valid_until = (
        None if expires is None else datetime.combine(expires + timedelta(days=1), time.min, tzinfo=timezone)
    )
    return Delegation(designee, director, valid_until, sites, path, line)


def _login(entry: Node, key: str) -> str:
    value = entry.get(key)
    return value.strip().casefold() if isinstance(value, str) else ""


def _expires(path: Path, entry: Node, problems: Problems) -> date | None:
    raw = entry.get("expires")
    if raw is None:
        return None
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    try:
        return date.fromisoformat(str(raw).strip())
    except ValueError:
        problems.error(
            path, entry.line_of("expires"), f"expires {raw!r} is not a date", "write it as YYYY-MM-DD"
        )
        return None


def _sites(path: Path, entry: Node, catalog: Catalog, problems: Problems) -> frozenset[str] | None:
    raw = entry.get("sites")
    if raw is None:
        return None
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values:
        problems.error(
            path, entry.line_of("sites"), "sites must be a list of site ids", "e.g. sites: [facebook]"
        )
        return None
    sites = set()
    for value in values:
        site_id = str(value).strip().lower()
        if site_id not in catalog.sites:
            close = difflib.get_close_matches(site_id, list(catalog.sites), n=1)
            hint = f'did you mean "{close[0]}"?' if close else "use a site id from the catalog (sites.yaml)"
            problems.error(path, entry.line_of("sites"), f'unknown site "{value}"', hint)
            continue
        sites.add(site_id)
    return frozenset(sites)


def index_delegations(
    delegations: list[Delegation], problems: Problems
) -> Mapping[str, tuple[Delegation, ...]]:
    """The delegations by designee; a designee named as someone's director is an error (a designee
    cannot name designees of their own)."""
    designees = {delegation.designee for delegation in delegations}
    by_designee: dict[str, list[Delegation]] = {}
    for delegation in delegations:
        if delegation.director in designees:
            problems.error(
                delegation.source,
                delegation.line,
                f"{delegation.director} is a designee and cannot name designees of their own",
                "have the Director name the designee directly",
            )
            continue
        by_designee.setdefault(delegation.designee, []).append(delegation)
    return {designee: tuple(found) for designee, found in by_designee.items()}
