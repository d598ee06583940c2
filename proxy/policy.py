"""The loaded policy: settings, catalog and grants, parsed and indexed once.

`load_policy` reads the main config file and everything it points to, and either returns a
`Policy` ready for the per-request path (dictionary lookups only) or raises `ConfigError`
with every problem found. A policy is immutable: a reload builds a new one.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from citygate.directory.model import Person
from citygate.directory.problems import ConfigError, Problems
from citygate.directory.settings import DirectorySettings
from citygate.proxy.audit.config import AuditSettings, parse_audit_section
from citygate.proxy.catalog import Catalog, load_catalog
from citygate.proxy.enforcement import Enforcement, parse_enforcement
from citygate.proxy.flags import FlagSettings, parse_flags_section
from citygate.proxy.grants import Grant, GrantKind, GrantLoader, ReadFile
from citygate.proxy.grants.designees import Delegation, index_delegations
from citygate.proxy.identity.config import IdentitySettings, parse_identity_section
from citygate.proxy.metrics.config import MetricsSettings, parse_metrics_section
from citygate.proxy.pac import PacSettings, parse_pac_section
from citygate.proxy.requests.config import RequestSettings, parse_requests_section
from citygate.proxy.yamlfile import Node, read_yaml

DEFAULT_MAX_GRANT_DAYS = 365
CONFIG_KEYS = (
    "city",
    "timezone",
    "policy",
    "catalog",
    "grants",
    "max_grant_days",
    "approval",
    "directory",
    "mode",  # enforce or report (proxy/enforcement.py)
    "departments",  # per-department mode
)


class Role(StrEnum):
    DIRECTOR = "director"
    EXECUTIVE = "executive"
    # Approves in a Director's stead, while the delegation holds (proxy/grants/designees.py).
    DESIGNEE = "designee"


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Who may approve: Directors (or higher) of the employee's department, or executives city-wide."""

    director_groups: frozenset[str]
    executive_groups: frozenset[str]
    # Where a group's department comes from, for approving its group grants: this attribute of
    # the group's entry; None: the one department all its members are in.
    group_department_attribute: str | None = None

    def role_of(self, person: Person) -> Role | None:
        # isdisjoint: no set built per call, as `&` would on every decision.
        if not person.groups.isdisjoint(self.executive_groups):
            return Role.EXECUTIVE
        if not person.groups.isdisjoint(self.director_groups):
            return Role.DIRECTOR
        return None

    def approvers_for(self, department: str | None, candidates: Iterable[Person]) -> list[Person]:
        """Who could approve a grant for someone in `department`: its Directors, then executives."""
        directors, executives = [], []
        for person in candidates:
            role = None if person.disabled else self.role_of(person)
            if role is Role.EXECUTIVE:
                executives.append(person)
            elif role is Role.DIRECTOR and department is not None and person.department == department:
                directors.append(person)
        return sorted(directors, key=lambda p: p.name) + sorted(executives, key=lambda p: p.name)


@dataclass(frozen=True, slots=True)
class PolicyText:
    """How the block page names the rule being enforced and tells people to ask for access."""

    name: str
    summary: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureSettings:
    """The config sections owned by one feature each (PAC file, identity providers, audit log, ...).

    Each field is the section of the same name, parsed by the feature's own module: so
    `citygate check` validates every section, and the feature reads `policy.features.<name>`.
    A section that is absent gets the feature's defaults.
    """

    pac: PacSettings = field(default_factory=PacSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    flags: FlagSettings = field(default_factory=FlagSettings)
    requests: RequestSettings = field(default_factory=RequestSettings)


#: The features' section names, in the order they are read (and listed among the known settings).
SECTION_NAMES = tuple(f.name for f in fields(FeatureSettings))


_Keyed = Mapping[tuple[str, str], tuple[Grant, ...]]
# group (or casefolded department) -> site -> grants: a kind of person's grants gathered at once.
_ByWhom = Mapping[str, Mapping[str, tuple[Grant, ...]]]


class SharedGrants(NamedTuple):
    """What a person has for one site through their department and groups (Policy.shared_grants)."""

    grants: tuple[Grant, ...] = ()
    # Who approved them, with the Directors of any designee among them: `decide` needs them all.
    approvers: frozenset[str] = frozenset()
    # Their groups: a group's department says who may approve its grants.
    groups: frozenset[str] = frozenset()

    def joined(self, other: SharedGrants) -> SharedGrants:
        return SharedGrants(
            self.grants + other.grants, self.approvers | other.approvers, self.groups | other.groups
        )


NO_SHARED_GRANTS = SharedGrants()
# Sets of groups (or departments) remembered before starting afresh: a city has far fewer; each
# holds only the sites its grants are for.
_KINDS_REMEMBERED = 1 << 15


def _remember[Key](
    memo: dict[Key, Mapping[str, SharedGrants]], key: Key, gather: Callable[[Key], Mapping[str, SharedGrants]]
) -> Mapping[str, SharedGrants]:
    """Gather `key`'s shared grants and remember them, starting afresh when the memo is full."""
    if len(memo) >= _KINDS_REMEMBERED:
        memo.clear()
    found = memo[key] = gather(key)
    return found


@dataclass(frozen=True, slots=True)
class GrantIndex:
    """The grants by whom they are for and site, built once per load: lookups only per request."""

    personal: _Keyed  # (login, site)
    groups: _ByWhom  # casefolded group cn, then site
    departments: _ByWhom  # casefolded department, then site
    city: Mapping[str, tuple[Grant, ...]]  # site
    # Whether any grant is a group's or a department's: without one, nobody's groups are looked at.
    shared: bool = False

    @classmethod
    def of(cls, grants: Iterable[Grant]) -> GrantIndex:
        keyed: dict[GrantKind, dict[tuple[str, str], list[Grant]]] = {kind: {} for kind in GrantKind}
        for grant in grants:
            whom = grant.employee if grant.kind is GrantKind.PERSONAL else grant.audience.casefold()
            for site_id in grant.sites:
                keyed[grant.kind].setdefault((whom, site_id), []).append(grant)

        def frozen(kind: GrantKind) -> _Keyed:
            return MappingProxyType({key: tuple(value) for key, value in keyed[kind].items()})

        def by_whom(kind: GrantKind) -> _ByWhom:
            whom_sites: dict[str, dict[str, tuple[Grant, ...]]] = {}
            for (whom, site_id), found in keyed[kind].items():
                whom_sites.setdefault(whom, {})[site_id] = tuple(found)
            return MappingProxyType({whom: MappingProxyType(sites) for whom, sites in whom_sites.items()})

        city = {site_id: grants for (_, site_id), grants in frozen(GrantKind.CITY).items()}
        return cls(
            frozen(GrantKind.PERSONAL),
            by_whom(GrantKind.GROUP),
            by_whom(GrantKind.DEPARTMENT),
            MappingProxyType(city),
            bool(keyed[GrantKind.GROUP] or keyed[GrantKind.DEPARTMENT]),
        )


@dataclass(frozen=True)
class Policy:
    city: str
    timezone: ZoneInfo
    text: PolicyText
    approval: ApprovalRule
    catalog: Catalog
    grants: tuple[Grant, ...]
    directory: DirectorySettings
    sources: tuple[Path, ...]
    warnings: tuple[str, ...] = ()
    features: FeatureSettings = field(default_factory=FeatureSettings)
    grants_dir: Path | None = None  # watched for new grant files
    max_grant_days: int = DEFAULT_MAX_GRANT_DAYS  # no grant may last longer
    _index: GrantIndex = field(default_factory=lambda: GrantIndex.of(()), repr=False)
    #: Directors' designees, by the designee's login (proxy/grants/designees.py).
    delegations: Mapping[str, tuple[Delegation, ...]] = field(default_factory=dict, repr=False)
    enforcement: Enforcement = field(default_factory=Enforcement)  # enforce or report, per department
    # The grant files as read, for the next load to reuse those that did not change.
    read_files: Mapping[Path, ReadFile] = field(default_factory=dict, repr=False)
    # shared_grants' answers by set of groups and by department: caches of what the fields above
    # determine, so neither compared nor given.
    _shared_by_groups: dict[frozenset[str], Mapping[str, SharedGrants]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _shared_by_department: dict[str, Mapping[str, SharedGrants]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def grants_for(self, employee: str, site_id: str) -> tuple[Grant, ...]:
        """The employee's personal grants for the site."""
        return self._index.personal.get((employee, site_id), ())

    def grants_applying(self, person: Person, site_id: str) -> tuple[Grant, ...]:
        """Every grant for the site that applies to `person`: personal, department, groups, city.

        Dictionary lookups only: one per kind (the department's and groups' remembered).
        """
        index = self._index
        found = index.personal.get((person.uid.casefold(), site_id), ())
        if index.shared:
            found += self.shared_grants(person, site_id).grants
        return found + index.city.get(site_id, ())

    def shared_grants(self, person: Person, site_id: str) -> SharedGrants:
        """The grants for the site that `person` has through their department and groups, and
        the directory facts that judging them takes.

        Gathered for every site at once per set of groups and per department, and remembered:
        people alike share one answer, and a request costs a lookup or two.
        """
        index = self._index
        if not index.shared:
            return NO_SHARED_GRANTS
        # A frozenset keeps its hash, and a cached directory answer keeps its set: a cheap key.
        by_site = self._shared_by_groups.get(person.groups)
        if by_site is None:
            by_site = _remember(self._shared_by_groups, person.groups, self._gather_group_grants)
        found = by_site.get(site_id, NO_SHARED_GRANTS)
        if index.departments and person.department:
            by_site = self._shared_by_department.get(person.department)
            if by_site is None:
                by_site = _remember(
                    self._shared_by_department, person.department, self._gather_department_grants
                )
            departments = by_site.get(site_id)
            if departments is not None:
                found = departments.joined(found) if found.grants else departments
        return found

    def _gather_group_grants(self, groups: frozenset[str]) -> Mapping[str, SharedGrants]:
        # Sorted: which grant is judged first does not depend on a set's order.
        return self._shared_by_site([self._index.groups.get(group) for group in sorted(groups)])

    def _gather_department_grants(self, department: str) -> Mapping[str, SharedGrants]:
        return self._shared_by_site([self._index.departments.get(department.casefold())])

    def _shared_by_site(
        self, sources: Iterable[Mapping[str, tuple[Grant, ...]] | None]
    ) -> Mapping[str, SharedGrants]:
        gathered: dict[str, tuple[Grant, ...]] = {}
        for by_site in sources:
            for site_id, grants in (by_site or {}).items():
                gathered[site_id] = gathered.get(site_id, ()) + grants
        return {
            site_id: SharedGrants(
                grants,
                frozenset(uid for grant in grants for uid in self.approvers_of(grant)),
                frozenset(grant.audience for grant in grants if grant.kind is GrantKind.GROUP),
            )
            for site_id, grants in gathered.items()
        }

    def watched_files(self) -> list[Path]:
        """Every file (and the grants folder: a file added) whose change should reload the policy."""
        files = list(self.sources)
        if self.grants_dir is not None:
            files.append(self.grants_dir)
        ldif = self.directory.options.get("ldif")
        if self.directory.backend == "static" and isinstance(ldif, str):
            files.append(self.directory.base / ldif)
        return files

    def approvers_of(self, grant: Grant) -> tuple[str, ...]:
        """The grant's approver, and the Directors they are a designee of."""
        delegations = self.delegations.get(grant.approved_by)
        if not delegations:
            return (grant.approved_by,)
        return (grant.approved_by, *(delegation.director for delegation in delegations))

    def city_grants(self, site_id: str) -> tuple[Grant, ...]:
        """The city-wide allowances for the site: the only grants for someone not signed in."""
        return self._index.city.get(site_id, ())

    def with_only(self, grant: Grant) -> Policy:
        """This policy as if `grant` were its only grant: to judge one grant on its own merits."""
        return replace(self, grants=(grant,), _index=GrantIndex.of((grant,)))

    @property
    def approver_groups(self) -> frozenset[str]:
        return self.approval.director_groups | self.approval.executive_groups


Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(paths: Iterable[Path]) -> Fingerprint:
    """What changes when any of the files is edited, replaced, created or deleted (it reads the
    disk: callers on an event loop run it in a thread)."""
    found = []
    for path in sorted(set(paths)):
        try:
            stat = path.stat()
        except OSError:
            found.append((str(path), -1, -1))
            continue
        found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def load_policy(
    config_path: Path,
    *,
    today: date | None = None,
    previous: Policy | None = None,
    pending: Mapping[Path, str] | None = None,
) -> Policy:
    """Read and validate the whole configuration; raise ConfigError listing every error.

    With `previous` (the policy being replaced), grant files that did not change are not read
    again (grants.ReadFile); the result is the same as a fresh load's. `pending` maps grant
    files about to be written (new or changed) to their text: the configuration is checked as
    it will be once they are.
    """
    problems = Problems()
    config_path = Path(config_path)
    document = read_yaml(config_path, problems, "see config/citygate.yaml for the settings it must hold")
    if document is None:
        raise ConfigError(problems)
    if not isinstance(document, Node):
        problems.error(
            config_path,
            1,
            "the config file must be a mapping of settings",
            "see config/citygate.yaml",
        )
        raise ConfigError(problems)
    base = config_path.parent

    known_keys = (*CONFIG_KEYS, *SECTION_NAMES)
    for key in sorted(set(document) - set(known_keys)):
        problems.error(
            config_path,
            document.line_of(key),
            f'unknown setting "{key}"',
            f"known settings: {', '.join(known_keys)}",
        )

    timezone = _timezone(config_path, document, problems)
    max_days = _max_days(config_path, document, problems)
    approval = _approval(config_path, document, problems)
    text = _policy_text(config_path, document, problems)
    directory = _directory(config_path, document, problems)
    enforcement = parse_enforcement(config_path, document, problems)

    catalog_path = base / str(document.get("catalog", "sites.yaml"))
    catalog = load_catalog(catalog_path, problems)

    grants_dir = base / str(document.get("grants", "grants"))
    grant_files = sorted(grants_dir.glob("*.yaml")) + sorted(grants_dir.glob("*.yml"))
    grant_files += sorted(set(pending or {}) - set(grant_files))
    if not grants_dir.is_dir():
        problems.error(
            config_path,
            document.line_of("grants"),
            f"grants folder {grants_dir} does not exist",
            "create it, or point grants: at the folder of grant files",
        )
    if today is None:
        today = datetime.now(timezone).date()
    loader = GrantLoader(
        catalog,
        timezone,
        max_days,
        today,
        problems,
        context=(_digest(catalog_path), timezone.key, max_days, today),
        previous=previous.read_files if previous is not None else {},
        pending=pending or {},
    )
    grants = [grant for path in grant_files for grant in loader.load_file(path)]
    delegations = index_delegations(loader.delegations, problems)

    # Read in SECTION_NAMES's order (keyword arguments are evaluated left to right), so their
    # problems are listed in that order.
    features = FeatureSettings(
        pac=_section(config_path, document, "pac", parse_pac_section, problems),
        identity=_section(
            config_path,
            document,
            "identity",
            functools.partial(parse_identity_section, directory_preset=_preset(directory)),
            problems,
        ),
        audit=_section(config_path, document, "audit", parse_audit_section, problems),
        metrics=_section(config_path, document, "metrics", parse_metrics_section, problems),
        flags=_section(config_path, document, "flags", parse_flags_section, problems),
        requests=_section(config_path, document, "requests", parse_requests_section, problems),
    )

    _check_sign_in_host_is_proxied(config_path, document, features, problems)
    _check_portal_kerberos(config_path, document, features, problems)
    if problems.errors:
        raise ConfigError(problems)
    return Policy(
        city=str(document.get("city", "")).strip() or "the City",
        timezone=timezone,
        text=text,
        approval=approval,
        catalog=catalog,
        grants=tuple(grants),
        directory=directory,
        sources=(config_path, catalog_path, *grant_files),
        grants_dir=grants_dir,
        max_grant_days=max_days,
        warnings=tuple(str(p) for p in problems.warnings),
        features=features,
        enforcement=enforcement,
        _index=GrantIndex.of(grants),
        delegations=MappingProxyType(dict(delegations)),
        read_files=MappingProxyType(loader.read),
    )


def _check_portal_kerberos(path: Path, document: Node, features: FeatureSettings, problems: Problems) -> None:
    """The portal's principal is read from the proxy's keytab, in the proxy's realms."""
    principal = features.requests.kerberos_principal
    if principal is None:
        return
    section = document.get("requests")
    line = section.line_of("kerberos_principal") if isinstance(section, Node) else None
    kerberos = features.identity.kerberos
    if kerberos is None:
        problems.error(
            path,
            line,
            "requests.kerberos_principal is set, but identity.kerberos is not: the portal reads its key from the proxy's keytab",
            "add identity.kerberos (keytab, principal) for the proxy, with the portal's key in the same keytab, or remove requests.kerberos_principal",
        )
    elif principal.rpartition("@")[2] not in kerberos.realms:
        problems.error(
            path,
            line,
            f"requests.kerberos_principal {principal} is not in the realms employees sign in from ({', '.join(kerberos.realms)})",
            f"name the portal's principal in {kerberos.realm}, e.g. HTTP/requests.city.example@{kerberos.realm}",
        )


def _check_sign_in_host_is_proxied(
    path: Path, document: Node, features: FeatureSettings, problems: Problems
) -> None:
    """The sign-in page is answered by the proxy: browsers the PAC file sends around it never see it."""
    host = features.identity.sign_in_host
    domain = features.pac.direct_domain_for(host)
    if domain is None:
        return
    identity, pac = document.get("identity"), document.get("pac")
    line = (
        identity.line_of("sign_in_host")
        if isinstance(identity, Node) and "sign_in_host" in identity
        else pac.line_of("direct_domains")
        if isinstance(pac, Node)
        else None
    )
    problems.error(
        path,
        line,
        f"the sign-in page's host {host} is in pac.direct_domains ({domain}), so browsers would not send it to the proxy",
        "set identity.sign_in_host to a host outside pac.direct_domains, e.g. sign-in.citygate.invalid",
    )


def _section[T](
    path: Path,
    document: Node,
    name: str,
    parse: Callable[[Path, Node | None, int, Problems], T],
    problems: Problems,
) -> T:
    """A feature's section, parsed by the feature's `parse` (its defaults when it is absent)."""
    node = document.get(name)
    if node is not None and not isinstance(node, Node):
        problems.error(
            path,
            document.line_of(name),
            f'"{name}:" must be a mapping of settings',
            "indent its settings under it",
        )
        node = None
    return parse(path, node, document.line_of(name), problems)


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None  # load_catalog reports it


def _timezone(path: Path, document: Node, problems: Problems) -> ZoneInfo:
    name = str(document.get("timezone", "UTC"))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.error(
            path,
            document.line_of("timezone"),
            f'unknown timezone "{name}"',
            'use an IANA name such as "America/Los_Angeles"',
        )
        return ZoneInfo("UTC")


def _max_days(path: Path, document: Node, problems: Problems) -> int:
    value = document.get("max_grant_days", DEFAULT_MAX_GRANT_DAYS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.error(
            path,
            document.line_of("max_grant_days"),
            f"max_grant_days {value!r} is not a positive number of days",
            "e.g. max_grant_days: 365",
        )
        return DEFAULT_MAX_GRANT_DAYS
    return value


_LDAP_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")


def _approval(path: Path, document: Node, problems: Problems) -> ApprovalRule:
    section = document.get("approval")
    if not isinstance(section, Node):
        problems.error(
            path,
            document.line_of("approval"),
            'missing "approval:" section',
            "name the directory groups of Directors and of city-wide executives: "
            "approval: {director_groups: [directors], executive_groups: [city-managers]}",
        )
        return ApprovalRule(frozenset(), frozenset())
    groups = {}
    for key in ("director_groups", "executive_groups"):
        value = section.get(key)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            problems.error(
                path,
                section.line_of(key),
                f"approval.{key} must be a list of group names",
                f"e.g. {key}: [directors]",
            )
            value = []
        groups[key] = frozenset(v.strip().lower() for v in value)
    if not groups["director_groups"] and not groups["executive_groups"]:
        problems.error(
            path,
            document.line_of("approval"),
            "nobody could approve a grant",
            "list at least one group in approval.director_groups",
        )
    attribute = section.get("group_department_attribute")
    if attribute is not None and not (
        isinstance(attribute, str) and _LDAP_ATTRIBUTE.fullmatch(attribute.strip())
    ):
        problems.error(
            path,
            section.line_of("group_department_attribute"),
            f"approval.group_department_attribute {attribute!r} is not an attribute name",
            "name the group entries' attribute that holds their department, e.g. group_department_attribute: "
            "department, or leave it out to use the department all of a group's members are in",
        )
        attribute = None
    return ApprovalRule(
        groups["director_groups"],
        groups["executive_groups"],
        attribute.strip() if isinstance(attribute, str) else None,
    )


def _policy_text(path: Path, document: Node, problems: Problems) -> PolicyText:
    section = document.get("policy")
    if section is None:
        return PolicyText(
            name="Social media policy",
            summary="Social media sites are blocked by default. A Director of your department "
            "can grant access for a stated business purpose.",
        )
    if not isinstance(section, Node) or not isinstance(section.get("name"), str):
        problems.error(
            path,
            document.line_of("policy"),
            'policy must have a "name"',
            'e.g. policy: {name: "Administrative Order 8-19", summary: "..."}',
        )
        return PolicyText("Social media policy", "")
    url = section.get("url")
    return PolicyText(
        str(section["name"]).strip(),
        str(section.get("summary", "")).strip(),
        str(url) if url else None,
    )


def _preset(directory: DirectorySettings) -> tuple[str, int | None] | None:
    """The LDAP directory's preset and its line: it sets the default sign-in schemes."""
    preset = directory.options.get("preset")
    if directory.backend != "ldap" or not isinstance(preset, str):
        return None
    return preset, directory.line_of("preset")


def _directory(path: Path, document: Node, problems: Problems) -> DirectorySettings:
    section = document.get("directory")
    if not isinstance(section, Node) or not isinstance(section.get("backend"), str):
        problems.error(
            path,
            document.line_of("directory"),
            'missing "directory:" section with a backend',
            "e.g. directory: {backend: static, ldif: ../directory/demo.ldif}",
        )
        return DirectorySettings("static", MappingProxyType({}), path.parent)
    options = {key: value for key, value in section.items() if key != "backend"}
    lines = MappingProxyType({key: section.line_of(key) for key in options})
    return DirectorySettings(section["backend"], MappingProxyType(options), path.parent, lines)
