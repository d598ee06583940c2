"""The decision: may this person reach this host, on this path, now, under this policy?

`decide` is the one place a decision is made. It is pure: it reads only its arguments (the
identity, the host, the path, the time, the loaded policy and a snapshot of directory facts:
people, and the departments of groups' members) and returns a `Decision` carrying the result, a
machine-readable reason, the grant used and the evidence. The proxy, the CLI, logs and metrics
are adapters around it; `facts_needed` tells them which directory facts to fetch first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from citygate.directory.model import AccountState, Person
from citygate.proxy.catalog import SiteMatch
from citygate.proxy.grants import Grant, GrantKind, PurposeKind, normalize_path, path_in_scope
from citygate.proxy.grants.hours import Hours
from citygate.proxy.hosts import normalize_host
from citygate.proxy.policy import NO_SHARED_GRANTS, Policy, Role, SharedGrants


class Result(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    AUTH_REQUIRED = "auth_required"


class Reason(StrEnum):
    NOT_SOCIAL_MEDIA = "not_social_media"
    GRANTED = "granted"
    CREDENTIALS_REQUIRED = "credentials_required"
    CREDENTIALS_INVALID = "credentials_invalid"
    NO_GRANT = "no_grant"
    GRANT_EXPIRED = "grant_expired"
    GRANT_NOT_YET_VALID = "grant_not_yet_valid"
    APPROVER_NOT_AUTHORIZED = "approver_not_authorized"
    SELF_APPROVAL = "self_approval"
    EMPLOYEE_DISABLED = "employee_disabled"
    # The account cannot sign in now, for the reason named (the directory's account state).
    ACCOUNT_LOCKED = "account_locked"
    ACCOUNT_EXPIRED = "account_expired"
    PASSWORD_EXPIRED = "password_expired"  # noqa: S105 (a state's name, not a password)
    PASSWORD_MUST_CHANGE = "password_must_change"  # noqa: S105 (a state's name, not a password)
    LOGON_NOT_PERMITTED = "logon_not_permitted"
    UNKNOWN_EMPLOYEE = "unknown_employee"
    PATH_OUT_OF_SCOPE = "path_out_of_scope"
    # The grant's `hours:` do not include now (city time).
    OUTSIDE_HOURS = "outside_hours"
    DIRECTORY_UNAVAILABLE = "directory_unavailable"
    # Set by the proxy shell, never by `decide`: a hook failed, so the request is refused.
    INTERNAL_ERROR = "internal_error"
    # Set by the proxy shell, never by `decide`: the audit log cannot be written, so an allowed
    # social-media request is refused rather than served without a record (audit.fail_closed).
    AUDIT_LOG_UNAVAILABLE = "audit_log_unavailable"
    # Set by the proxy shell, never by `decide`: the request names its host ambiguously (two Host
    # headers, an invalid Host, a folded line, a target that disagrees with Host): 400, any host.
    MALFORMED_REQUEST = "malformed_request"
    # Set by the proxy shell, never by `decide`: a tunnel to a social-media host carries bytes that
    # are neither TLS nor HTTP (or a TLS start mitmproxy cannot take), so it cannot be decided.
    UNRECOGNIZED_PROTOCOL = "unrecognized_protocol"


# When several grants cover a site and none allows the request, the reported reason is the
# one that tells the employee (and security staff) the most; transient failures come first.
_DENIAL_PRECEDENCE = (
    Reason.DIRECTORY_UNAVAILABLE,
    Reason.OUTSIDE_HOURS,
    Reason.PATH_OUT_OF_SCOPE,
    Reason.APPROVER_NOT_AUTHORIZED,
    Reason.SELF_APPROVAL,
    Reason.GRANT_NOT_YET_VALID,
    Reason.GRANT_EXPIRED,
)
_DENIAL_RANK = {reason: rank for rank, reason in enumerate(_DENIAL_PRECEDENCE)}

#: The denial for each account state that refuses a sign-in.
STATE_REASONS = {
    AccountState.DISABLED: Reason.EMPLOYEE_DISABLED,
    AccountState.LOCKED: Reason.ACCOUNT_LOCKED,
    AccountState.ACCOUNT_EXPIRED: Reason.ACCOUNT_EXPIRED,
    AccountState.PASSWORD_EXPIRED: Reason.PASSWORD_EXPIRED,
    AccountState.MUST_CHANGE_PASSWORD: Reason.PASSWORD_MUST_CHANGE,
    AccountState.NOT_PERMITTED_NOW: Reason.LOGON_NOT_PERMITTED,
}


class Identity(NamedTuple):
    """Who the proxy believes is asking, and how it came to believe it.

    `authenticated` is False when credentials were presented but did not verify, and None when
    the directory (or the token issuer's keys) could not be had to verify them. `problem` says
    why in plain words, for the log; it never holds a password or a token. `shared_role` marks
    a source-address role such as a library kiosk: not a person, so it never holds a grant.
    `state` is set (with authenticated False) when the directory refused the password because
    of the account's state (disabled, locked, ...): that is a denial naming the state, not a
    request to sign in again.
    """

    user: str
    method: str
    authenticated: bool | None = True
    problem: str | None = None
    shared_role: bool = False
    state: AccountState | None = None


# Identity, Evidence and Decision are named tuples rather than frozen dataclasses: just as
# immutable, and built in a third of the time (a frozen dataclass sets each field through
# object.__setattr__), which matters because every social-media request builds all three.


class Evidence(NamedTuple):
    """The facts a decision rested on, for the block page, the access log and `explain`."""

    employee: str | None = None
    employee_department: str | None = None
    approver: str | None = None
    approver_role: str | None = None
    approver_department: str | None = None
    identity_method: str | None = None
    detail: str = ""
    # The Director a designee approved for (proxy/grants/designees.py); None for a direct approval.
    delegated_by: str | None = None


_NO_EVIDENCE = Evidence()


class Decision(NamedTuple):
    result: Result
    reason: Reason
    host: str
    match: SiteMatch | None = None
    grant: Grant | None = None
    evidence: Evidence = _NO_EVIDENCE
    # True when the request was allowed without a path (a tunnel) under a grant limited to some
    # paths: the proxy must look inside the tunnel and decide again for each request.
    needs_path: bool = False

    @property
    def allowed(self) -> bool:
        return self.result is Result.ALLOW

    def as_sign_in_required(self) -> Decision:
        """This decision for someone asked to sign in first (a city-wide page they may already see
        is not the whole site)."""
        if self.result is Result.AUTH_REQUIRED:
            return self
        return Decision(Result.AUTH_REQUIRED, Reason.CREDENTIALS_REQUIRED, self.host, self.match)

    @property
    def is_social(self) -> bool:
        return self.match is not None

    @property
    def site_id(self) -> str | None:
        return self.match.site.id if self.match else None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view, for `citygate explain --json` and structured logs."""
        grant = self.grant
        return {
            "result": self.result.value,
            "reason": self.reason.value,
            "host": self.host,
            "site": self.site_id,
            "matched": self.match.matched if self.match else None,
            "needs_path": self.needs_path,
            "grant": None
            if grant is None
            else {
                "id": grant.id,
                "kind": grant.kind.value,
                "for": grant.whom,
                "purpose_kind": grant.purpose_kind.value,
                "purpose": grant.purpose,
                "approved_by": grant.approved_by,
                "approved_on": grant.approved_on.isoformat(),
                "valid_from": grant.valid_from.isoformat(),
                "valid_until": grant.valid_until.isoformat(),
                "paths": {site: list(paths) for site, paths in grant.paths.items()},
                "hours": grant.hours.text if grant.hours else None,
                "source": grant.location,
            },
            "evidence": self.evidence._asdict(),
        }


class _Verdict(NamedTuple):
    """What one grant says about a request; its Evidence is built once, for the verdict that wins."""

    reason: Reason
    grant: Grant
    detail: str = ""
    approver: Person | None = None
    role: Role | None = None
    needs_path: bool = False
    delegated_by: str | None = None


def people_involved(policy: Policy, user: str | None, hosts: Iterable[str]) -> set[str]:
    """The uids `decide` needs first: the employee, the approvers of their personal grants and of
    the sites' city-wide allowances (those apply to someone not signed in too).

    The shell fetches these (off the event loop, through a cache), then `facts_needed` for the
    person it found, before calling `decide`.
    """
    return people_for_sites(policy, user, sites_named(policy, hosts))


def people_for_sites(policy: Policy, user: str | None, site_ids: Iterable[str]) -> set[str]:
    """`people_involved` for the site ids the request's hosts name (`sites_named`)."""
    uids = {user} if user is not None else set()
    for site_id in site_ids:
        for grant in policy.city_grants(site_id):
            uids.update(policy.approvers_of(grant))
        if user is not None:
            for grant in policy.grants_for(user, site_id):
                uids.update(policy.approvers_of(grant))
    return uids


def facts_needed(policy: Policy, person: Person, site_ids: Iterable[str]) -> SharedGrants:
    """What `decide` needs beyond `people_involved`, once the employee is known: the grants that
    apply to `person` through their department and groups on the sites a request names
    (`sites_named`), with their approvers and groups to fetch."""
    found = NO_SHARED_GRANTS
    for site_id in site_ids:
        shared = policy.shared_grants(person, site_id)
        if not found.grants:
            found = shared
        elif shared.grants:  # a request naming two sites: rare, so a new answer is fine
            found = found.joined(shared)
    return found


def sites_named(policy: Policy, hosts: Iterable[str]) -> list[str]:
    """The catalog sites of a request's hosts, each once."""
    # A request names its host up to three times, usually alike: look each one up once.
    seen: set[str] = set()
    site_ids: list[str] = []
    for raw in hosts:
        host = normalize_host(raw)
        if host is None or host.name in seen:
            continue
        seen.add(host.name)
        match = policy.catalog.match(host)
        if match is not None and match.site.id not in site_ids:
            site_ids.append(match.site.id)
    return site_ids


_NO_GROUPS: Mapping[str, frozenset[str]] = {}


def decide_request(
    identity: Identity | None,
    hosts: Sequence[str],
    path: str | None,
    at: datetime,
    policy: Policy,
    people: Mapping[str, Person | None],
    groups: Mapping[str, frozenset[str]] = _NO_GROUPS,
) -> Decision:
    """Decide for every host a request names (CONNECT authority, SNI, Host header): the strictest wins.

    A client can name one host in the CONNECT line and another in the TLS SNI or the Host
    header; the upstream acts on the latter, so no host may be skipped.
    """
    # Spellings of one host ("www.facebook.com:443" in the CONNECT line, "www.facebook.com" in
    # the SNI and the Host header) normalize alike and so get the same decision: decide once
    # per normalized host. A host that does not normalize is decided on its own text; it cannot
    # be taken for one that does, because normalized names normalize to themselves.
    distinct: dict[str, str] = {}
    for host in hosts:
        normalized = normalize_host(host)
        distinct.setdefault(host if normalized is None else normalized.name, host)
    if len(distinct) == 1:
        return decide(identity, hosts[0], path, at, policy, people, groups)
    decisions = [decide(identity, host, path, at, policy, people, groups) for host in distinct.values()]
    return min(decisions, key=_strictness)


def _strictness(decision: Decision) -> int:
    if decision.result is Result.DENY:
        return 0
    if decision.result is Result.AUTH_REQUIRED:
        return 1
    if decision.needs_path:
        return 2
    return 3 if decision.is_social else 4


def decide(
    identity: Identity | None,
    host: str,
    path: str | None,
    at: datetime,
    policy: Policy,
    people: Mapping[str, Person | None],
    groups: Mapping[str, frozenset[str]] = _NO_GROUPS,
) -> Decision:
    """The decision for one host.

    `path` is None when only the tunnel is known (CONNECT, TLS SNI). `people` maps lower-case
    uids to the directory's answer (None: no such account); a uid that is absent means the
    directory could not be asked, and the request is refused rather than guessed at. `groups`
    maps a group grant's group to its members' departments, likewise (absent: not asked).

    Below, the policy's steps in their order: a step that cannot vouch for the request ends it
    with a refusal (fail closed), so what reaches the grants is a verified, enabled employee.
    """
    normalized = normalize_host(host)
    match = policy.catalog.match(normalized) if normalized else None
    host_name = normalized.name if normalized else host
    # 1. Not social media: the policy does not apply.
    if match is None:
        return Decision(Result.ALLOW, Reason.NOT_SOCIAL_MEDIA, host_name)

    # 2. Someone signed in, with credentials that verified; or a page every visitor may see.
    if identity is None:
        return _not_signed_in(host_name, match, path, at, policy, people)
    refusal = _unverified(identity, host_name, match)
    if refusal is not None:
        return refusal

    # 3. An employee the directory knows, whose account is not disabled.
    refusal = _not_an_employee(identity, host_name, match, people)
    if refusal is not None:
        return refusal
    employee = people[identity.user]
    assert employee is not None, "_not_an_employee refused an unknown account"

    # 4. A grant for the site: the employee's own, their department's, a group's, the city's...
    grants = policy.grants_applying(employee, match.site.id)
    if not grants:
        detail = f"no grant for {match.site.name}"
        return _deny(identity, host_name, match, Reason.NO_GRANT, detail, employee.department)

    # 5. ... in force now, approved by someone entitled to approve it, covering the path and hour.
    verdict = _best_verdict(grants, employee, match, path, at, policy, people, groups)
    if verdict.reason is Reason.PATH_OUT_OF_SCOPE and verdict.grant.kind is GrantKind.CITY:
        # Everyone's pages are not the employee's grant: outside them, they have none.
        detail = f"no grant for {match.site.name}; {verdict.detail} (the pages everyone may see)"
        return _deny(identity, host_name, match, Reason.NO_GRANT, detail, employee.department)
    result = Result.ALLOW if verdict.reason is Reason.GRANTED else Result.DENY
    evidence = _evidence(identity, employee, verdict)
    return Decision(result, verdict.reason, host_name, match, verdict.grant, evidence, verdict.needs_path)


def _not_signed_in(
    host_name: str,
    match: SiteMatch,
    path: str | None,
    at: datetime,
    policy: Policy,
    people: Mapping[str, Person | None],
) -> Decision:
    """Someone who has not signed in: allowed only on the pages of a city-wide allowance.

    A whole-site allowance (a personal-use window) still identifies who uses it; a page-scoped
    one is for every visitor, so that an ordinary page embedding the City's own videos loads for
    everyone. Anything else asks for a sign-in, which may bring the person's own grants.
    """
    scoped = [
        grant for grant in policy.city_grants(match.site.id) if grant.scope_for(match.site.id) is not None
    ]
    for grant in scoped:
        verdict = _judge_grant(grant, None, match, path, at, policy, people, _NO_GROUPS)
        if verdict.reason is Reason.GRANTED:
            approver, role = verdict.approver, verdict.role
            evidence = Evidence(
                None,
                None,
                grant.approved_by,
                role.value if role else None,
                approver.department if approver else None,
                None,
                verdict.detail,
                verdict.delegated_by,
            )
            return Decision(
                Result.ALLOW, Reason.GRANTED, host_name, match, grant, evidence, verdict.needs_path
            )
    return Decision(Result.AUTH_REQUIRED, Reason.CREDENTIALS_REQUIRED, host_name, match)


def _unverified(identity: Identity, host_name: str, match: SiteMatch) -> Decision | None:
    """Credentials that did not verify, or that could not be checked; None when they verified."""
    user, method = identity.user, identity.method
    if identity.authenticated is None:
        detail = identity.problem or "the directory could not verify the password"
        evidence = Evidence(employee=user, identity_method=method, detail=detail)
        return Decision(Result.DENY, Reason.DIRECTORY_UNAVAILABLE, host_name, match, evidence=evidence)
    if not identity.authenticated and identity.state not in (None, AccountState.ACTIVE):
        # Another 407 would only make the browser ask again (or retry a saved password) for an
        # account that cannot sign in whatever is typed: a page naming the state ends it.
        detail = identity.problem or identity.state.described
        return _deny(identity, host_name, match, STATE_REASONS[identity.state], detail)
    if not identity.authenticated:
        evidence = Evidence(employee=user, identity_method=method, detail=identity.problem or "")
        return Decision(Result.AUTH_REQUIRED, Reason.CREDENTIALS_INVALID, host_name, match, evidence=evidence)
    return None


def _not_an_employee(
    identity: Identity, host_name: str, match: SiteMatch, people: Mapping[str, Person | None]
) -> Decision | None:
    """A denial unless the directory answered that the user is an employee with an enabled account."""
    user = identity.user
    if identity.shared_role:
        # A shared role (a kiosk's source address) is no directory account and no person: grants
        # name employees, so it has none, even if a grant file or a directory uid shares its name.
        detail = f"{user} is a shared device role, not an employee; grants are for named employees"
        return _deny(identity, host_name, match, Reason.NO_GRANT, detail)
    if user not in people:
        detail = "the directory could not be asked about the employee"
        return _deny(identity, host_name, match, Reason.DIRECTORY_UNAVAILABLE, detail)
    employee = people[user]
    if employee is None:
        return _deny(identity, host_name, match, Reason.UNKNOWN_EMPLOYEE, "no such account in the directory")
    if not employee.can_sign_in:
        detail = employee.state.described
        return _deny(identity, host_name, match, STATE_REASONS[employee.state], detail, employee.department)
    return None


def _deny(
    identity: Identity,
    host_name: str,
    match: SiteMatch,
    reason: Reason,
    detail: str,
    department: str | None = None,
) -> Decision:
    """A denial before any grant is judged: the evidence names the user, never an approver."""
    evidence = Evidence(identity.user, department, None, None, None, identity.method, detail)
    return Decision(Result.DENY, reason, host_name, match, None, evidence)


def _best_verdict(
    grants: Sequence[Grant],
    employee: Person,
    match: SiteMatch,
    path: str | None,
    at: datetime,
    policy: Policy,
    people: Mapping[str, Person | None],
    groups: Mapping[str, frozenset[str]],
) -> _Verdict:
    """The verdict that decides, among those of every grant that applies to the employee.

    Every grant is judged until one allows the request without looking inside the tunnel (so it
    can stay encrypted end to end); otherwise the first that allows it with a path check wins,
    and failing both, the most telling denial.
    """
    if len(grants) > 1:
        # Whole-site grants first: one that allows the request ends the search before any grant
        # limited to some pages is judged (an employee with both a group's whole-site grant and
        # a personal page-scoped one is usually let through by the first).
        site_id = match.site.id
        whole_site = [grant for grant in grants if site_id not in grant.paths]
        if len(whole_site) != len(grants):
            grants = whole_site + [grant for grant in grants if site_id in grant.paths]
    allowed: _Verdict | None = None
    refused: _Verdict | None = None
    for grant in grants:
        verdict = _judge_grant(grant, employee, match, path, at, policy, people, groups)
        if verdict.reason is Reason.GRANTED:
            if not verdict.needs_path:
                return verdict
            if allowed is None:
                allowed = verdict
        elif refused is None or _DENIAL_RANK[verdict.reason] < _DENIAL_RANK[refused.reason]:
            refused = verdict
    chosen = allowed or refused
    assert chosen is not None, "a grant was judged"
    return chosen


def _evidence(identity: Identity, employee: Person, verdict: _Verdict) -> Evidence:
    approver, role = verdict.approver, verdict.role
    return Evidence(
        identity.user,
        employee.department,
        verdict.grant.approved_by,
        role.value if role else None,
        approver.department if approver else None,
        identity.method,
        verdict.detail,
        verdict.delegated_by,
    )


def _judge_grant(
    grant: Grant,
    employee: Person | None,
    match: SiteMatch,
    path: str | None,
    at: datetime,
    policy: Policy,
    people: Mapping[str, Person | None],
    groups: Mapping[str, frozenset[str]],
) -> _Verdict:
    """What one grant says: in force at `at`, approved by someone entitled to, covering the path.

    `employee` is None for someone not signed in (only city-wide allowances are judged then).
    """
    if at < grant.valid_from:
        return _Verdict(Reason.GRANT_NOT_YET_VALID, grant, f"grant starts {grant.valid_from:%Y-%m-%d}")
    if at >= grant.valid_until:
        return _Verdict(Reason.GRANT_EXPIRED, grant, f"grant ended {grant.valid_until:%Y-%m-%d}")
    approval = _judge_approval(grant, employee, policy, people, groups, at, match.site.id)
    if approval.reason is not Reason.GRANTED:
        return approval
    if grant.hours is not None:
        if not grant.hours.contains(at):
            return approval._replace(reason=Reason.OUTSIDE_HOURS, detail=_outside(grant.hours, at))
        if path is None:
            # A tunnel outlives the window it opened in: look inside it and decide each request.
            verdict = _judge_path(approval, match, path)
            return verdict._replace(
                needs_path=True, detail=verdict.detail or f"limited to {grant.hours.text}"
            )
    return _judge_path(approval, match, path)


def _outside(hours: Hours, at: datetime) -> str:
    resumes = hours.resumes(at)
    when = f"; access resumes {resumes:%a %Y-%m-%d %H:%M}" if resumes else ""
    return f"outside the grant's hours ({hours.text}){when}"


def _judge_approval(
    grant: Grant,
    employee: Person | None,
    policy: Policy,
    people: Mapping[str, Person | None],
    groups: Mapping[str, frozenset[str]],
    at: datetime,
    site_id: str,
) -> _Verdict:
    """Whether the grant's approver may approve it (now, by the directory): GRANTED when so.

    Who may approve depends on whom the grant is for: a Director of the employee's department
    (personal), of the department (department), of the one department all the group's members
    are in (group), or an executive; only an executive for a city-wide allowance and for any
    personal-use allowance. Nobody approves a grant they use themselves.
    """
    approver_uid = grant.approved_by
    if employee is not None and approver_uid == employee.uid.casefold() and grant.kind is not GrantKind.CITY:
        return _Verdict(Reason.SELF_APPROVAL, grant, "the employee approved their own grant")
    if approver_uid not in people:
        return _Verdict(
            Reason.DIRECTORY_UNAVAILABLE, grant, "the directory could not be asked about the approver"
        )
    approver = people[approver_uid]
    if approver is None:
        return _Verdict(Reason.APPROVER_NOT_AUTHORIZED, grant, "the approver is not in the directory")
    role = policy.approval.role_of(approver)
    if role is None and approver_uid in policy.delegations:
        return _judge_designee(grant, employee, approver, policy, people, groups, at, site_id)
    if grant.kind is GrantKind.GROUP and role is Role.DIRECTOR and grant.audience not in groups:
        detail = f"the directory could not be asked about group {grant.audience}"
        return _Verdict(Reason.DIRECTORY_UNAVAILABLE, grant, detail, approver, role)
    why_not = _why_not_entitled(approver, role, grant, employee, groups)
    if why_not is not None:
        return _Verdict(Reason.APPROVER_NOT_AUTHORIZED, grant, why_not, approver, role)
    return _Verdict(Reason.GRANTED, grant, "", approver, role)


def _judge_designee(
    grant: Grant,
    employee: Person | None,
    designee: Person,
    policy: Policy,
    people: Mapping[str, Person | None],
    groups: Mapping[str, frozenset[str]],
    at: datetime,
    site_id: str,
) -> _Verdict:
    """An approval by a designee: GRANTED when a delegation in force lets them approve it, as the
    delegating Director (live, by the directory) could themselves."""
    refused = _Verdict(Reason.APPROVER_NOT_AUTHORIZED, grant, "", designee, Role.DESIGNEE)
    if grant.kind is GrantKind.CITY or grant.purpose_kind is PurposeKind.PERSONAL:
        detail = "only an executive (a City Manager) approves city-wide and personal-use allowances, not a designee"
        return refused._replace(detail=detail)
    if designee.disabled:
        return refused._replace(detail="the approver's account is disabled")
    delegations = [d for d in policy.delegations[designee.uid.casefold()] if d.covers(site_id, at)]
    if not delegations:
        detail = f"{designee.uid}'s delegation has ended or does not cover this site"
        return refused._replace(detail=detail)
    for delegation in delegations:
        director_uid = delegation.director
        if director_uid not in people:
            detail = "the directory could not be asked about the delegating Director"
            return refused._replace(reason=Reason.DIRECTORY_UNAVAILABLE, detail=detail)
        director = people[director_uid]
        role = policy.approval.role_of(director) if director is not None else None
        if director is None or role is None:
            why = f"{director_uid} no longer holds a Director's role, so their delegation to {designee.uid} is void"
        elif grant.kind is GrantKind.GROUP and role is Role.DIRECTOR and grant.audience not in groups:
            detail = f"the directory could not be asked about group {grant.audience}"
            return refused._replace(reason=Reason.DIRECTORY_UNAVAILABLE, detail=detail)
        else:
            director_refuses = _why_not_entitled(director, role, grant, employee, groups)
            if director_refuses is None:
                return _Verdict(Reason.GRANTED, grant, "", designee, Role.DESIGNEE, delegated_by=director_uid)
            why = f"as designee of {director_uid}: {director_refuses}"
        refused = refused._replace(detail=why)
    return refused


def approval_problem(
    grant: Grant,
    policy: Policy,
    people: Mapping[str, Person | None],
    groups: Mapping[str, frozenset[str]],
    at: datetime,
) -> tuple[Reason, str] | None:
    """Why the grant's approver may not approve it now (`citygate check`); None when they may.

    For a grant that is not one person's: whoever uses it, this is what they would be told.
    """
    verdict = _judge_approval(grant, None, policy, people, groups, at, grant.sites[0])
    return None if verdict.reason is Reason.GRANTED else (verdict.reason, verdict.detail)


def _why_not_entitled(
    approver: Person,
    role: Role | None,
    grant: Grant,
    employee: Person | None,
    groups: Mapping[str, frozenset[str]],
) -> str | None:
    """Why the approver may not approve this grant; None when they may."""
    if approver.disabled:
        return "the approver's account is disabled"
    if role is None:
        return "the approver is not a Director or higher"
    if role is Role.EXECUTIVE:
        return None
    if grant.kind is GrantKind.CITY:
        return "a city-wide allowance must be approved by an executive (a City Manager), not a Director"
    if grant.purpose_kind is PurposeKind.PERSONAL:
        return "a personal-use allowance must be approved by an executive (a City Manager), not a Director"
    directs = approver.department or "no department"
    # An unknown department matches nothing, not even another unknown department.
    if grant.kind is GrantKind.DEPARTMENT:
        if approver.department is None or approver.department.casefold() != grant.audience.casefold():
            return f"the approver directs {directs}, not {grant.audience}"
        return None
    if grant.kind is GrantKind.GROUP:
        return _why_not_group_director(approver, grant.audience, groups[grant.audience])
    assert employee is not None, "a personal grant is judged for its employee"
    if approver.department is None or approver.department != employee.department:
        return f"the approver directs {directs}, not {employee.department or 'the employee'}'s department"
    return None


def _why_not_group_director(approver: Person, group: str, departments: frozenset[str]) -> str | None:
    """Why a Director may not approve the group's grants: the group's department is not theirs."""
    if not departments:
        return f"the directory gives group {group} no department: its grants need an executive's approval"
    if len(departments) != 1:
        spans = ", ".join(sorted(d or "no department" for d in departments))
        return f"group {group} spans {spans}: a group across departments needs an executive's approval"
    [department] = departments
    if approver.department is None or approver.department != department:
        directs = approver.department or "no department"
        return f"the approver directs {directs}, not {department or 'no department'} (group {group})"
    return None


def _judge_path(approval: _Verdict, match: SiteMatch, path: str | None) -> _Verdict:
    """A granted approval, limited to the grant's paths on the site's pages (not its assets)."""
    grant, approver, role = approval.grant, approval.approver, approval.role
    scope = None if match.is_asset else grant.scope_for(match.site.id)
    if scope is None:
        return approval  # the whole site
    if path is None:
        return _Verdict(Reason.GRANTED, grant, f"limited to {', '.join(scope)}", approver, role, True)
    normalized = normalize_path(path)
    if normalized is None:
        detail = f"{path[:200]} is ambiguous (an encoded slash, a double escape or a control byte)"
        return _Verdict(Reason.PATH_OUT_OF_SCOPE, grant, detail, approver, role)
    if path_in_scope(normalized, scope):
        return approval
    return _Verdict(
        Reason.PATH_OUT_OF_SCOPE, grant, f"{normalized} is outside {', '.join(scope)}", approver, role
    )
