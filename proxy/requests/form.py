"""The Social Media Request Form, checked: every field's problem in words, or a clean draft.

What the employee typed is checked here, field by field, so that the form can show each
message beside its field and nothing is stored until all of it is right. Who the employee is
never comes from the form: the caller passes the person the proxy's sign-in identified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType

from citygate.directory.model import Person
from citygate.proxy.grants import normalize_path, path_in_scope
from citygate.proxy.hosts import normalize_host
from citygate.proxy.policy import Policy
from citygate.proxy.requests.model import Terms

MAX_PAGES = 20


@dataclass(frozen=True, slots=True)
class Draft:
    """A request ready to be stored."""

    sites: tuple[str, ...]
    purpose: str
    until: date
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class FormProblems:
    """Each field's problem, by the field's name (sites, purpose, pages, until, employee)."""

    fields: Mapping[str, str]


def checked_form(
    *,
    person: Person,
    sites: Iterable[str],
    purpose: str,
    pages: str,
    until: str,
    policy: Policy,
    today: date,
) -> Draft | FormProblems:
    """The form's fields (as posted) checked against the policy; `today` is the city's day."""
    problems: dict[str, str] = {}
    if not person.department:
        problems["employee"] = (
            "The directory gives you no department, so no Director can decide a request: ask IT to set it."
        )
    site_ids = _sites(list(sites), policy, problems)
    text = _purpose(purpose, policy.features.requests.max_purpose_chars, problems)
    scope = _pages(pages, problems)
    last_day = _until(until, today, policy.max_grant_days, problems)
    if problems:
        return FormProblems(MappingProxyType(problems))
    assert last_day is not None, "a date without a problem"
    paths = MappingProxyType({site: scope for site in site_ids} if scope else {})
    return Draft(tuple(site_ids), text, last_day, paths)


def checked_narrowing(
    *, terms: Terms, sites: Iterable[str], pages: str, until: str, today: date
) -> Terms | FormProblems | None:
    """What an approver allows of `terms` (what the request allows so far): less, or the same
    (None), never more. No pages given keeps each site's pages as they stand, never widening a
    page-scoped request to the whole site; pages given apply to every site kept, each within
    what that site allowed."""
    problems: dict[str, str] = {}
    given = {value.strip() for value in sites if value.strip()}
    kept = [site for site in terms.sites if site in given]
    unasked = sorted(given - set(terms.sites))
    if unasked:
        # Never dropped quietly: a misspelled site would otherwise shrink the approval unseen.
        problems["sites"] = (
            f"{unasked[0][:100]} was not asked for (asked: {', '.join(terms.sites)}): an approval "
            "may allow less than was asked, never more."
        )
    elif not kept:
        problems["sites"] = "Keep at least one of the requested sites, or deny the request."
    scope = _pages(pages, problems)
    paths: dict[str, tuple[str, ...]] = {}
    for site in kept:
        allowed = terms.paths.get(site)
        if not scope:
            if allowed:
                paths[site] = allowed
            continue
        outside = [page for page in scope if allowed and not path_in_scope(page, allowed)]
        if outside:
            problems["pages"] = (
                f"{outside[0]} is outside the pages asked for on {site} ({', '.join(allowed or ())}): "
                "an approval may allow less than was asked, never more."
            )
            break
        paths[site] = scope
    last_day = None
    try:
        last_day = date.fromisoformat(until.strip())
    except ValueError:
        problems["until"] = "Give the last day as a date (YYYY-MM-DD)."
    if last_day is not None and not today <= last_day <= terms.until:
        problems["until"] = (
            f"Choose a last day from {today.isoformat()} to {terms.until.isoformat()} (the day asked for): "
            "an approval may shorten a request, never lengthen it."
        )
    if problems:
        return FormProblems(MappingProxyType(problems))
    assert last_day is not None, "a date without a problem"
    narrowed = Terms(tuple(kept), last_day, MappingProxyType(paths))
    same = narrowed.sites == terms.sites and last_day == terms.until and dict(paths) == dict(terms.paths)
    return None if same else narrowed


def _sites(values: list[str], policy: Policy, problems: dict[str, str]) -> list[str]:
    """Site ids, or hosts of catalog sites (the blocked host the block page passes on)."""
    catalog = policy.catalog
    found: list[str] = []
    for value in (v.strip() for v in values if v.strip()):
        site = catalog.sites.get(value.casefold())
        if site is None:
            host = normalize_host(value)
            match = catalog.match(host) if host is not None else None
            if match is None:
                close = catalog.closest(value)
                problems["sites"] = (
                    f"{value[:100]} is not a social media site in the catalog: "
                    + (f"did you mean {close.name}? " if close else "it needs no request ")
                    + "(or choose a site from the list)."
                )
                return []
            site = match.site
        if site.id not in found:
            found.append(site.id)
    if not found and "sites" not in problems:
        problems["sites"] = "Choose at least one site."
    return found


def _purpose(value: str, limit: int, problems: dict[str, str]) -> str:
    text = value.strip()
    if not text:
        problems["purpose"] = "State the business purpose: what you will do on the site, for the City."
    elif len(text) > limit:
        problems["purpose"] = f"The purpose is {len(text)} characters; keep it to {limit}."
    elif "<" in text or ">" in text:
        problems["purpose"] = "Describe the purpose in words: < and > (markup) are not accepted."
    elif any(ord(c) < 32 and c not in "\n\t" for c in text):
        problems["purpose"] = "The purpose contains control characters: type it again as plain text."
    return text


def _pages(value: str, problems: dict[str, str]) -> tuple[str, ...]:
    """One page (path) per line, each starting with /; none: the whole site."""
    pages: list[str] = []
    for line in (line.strip() for line in value.splitlines() if line.strip()):
        path = normalize_path(line) if line.startswith("/") and "<" not in line and ">" not in line else None
        if path is None:
            problems["pages"] = (
                f"{line[:100]} is not a page address: write one per line, starting with /, "
                "e.g. /CityOfExampleParks."
            )
            return ()
        if path not in pages:
            pages.append(path)
    if len(pages) > MAX_PAGES:
        problems["pages"] = f"Name at most {MAX_PAGES} pages, or leave the list empty for the whole site."
        return ()
    return tuple(pages)


def _until(value: str, today: date, max_days: int, problems: dict[str, str]) -> date | None:
    try:
        last_day = date.fromisoformat(value.strip())
    except ValueError:
        problems["until"] = "Give the last day you need access as a date (YYYY-MM-DD)."
        return None
    cap = today + timedelta(days=max_days - 1)
    if last_day < today:
        problems["until"] = "The last day is in the past: choose today or a later day."
    elif last_day > cap:
        problems["until"] = (
            f"Grants last at most {max_days} days: choose {cap.isoformat()} or earlier (a renewal can follow)."
        )
    return last_day
