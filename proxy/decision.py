"""The decision: may this person reach this host, on this path, now, under this policy?

`decide` is the one place a decision is made. It is pure: it reads only its arguments (the
identity, the host, the path, the time, the loaded policy and a snapshot of directory facts)
and returns a `Decision` carrying the result, a machine-readable reason, the grant used and the
evidence. The proxy, the CLI, logs and metrics are adapters around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from citygate.directory.model import Person
from citygate.proxy.catalog import SiteMatch
from citygate.proxy.grants import Grant, normalize_path, path_in_scope
from citygate.proxy.hosts import normalize_host
from citygate.proxy.policy import Policy, Role


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
    UNKNOWN_EMPLOYEE = "unknown_employee"
    PATH_OUT_OF_SCOPE = "path_out_of_scope"
    DIRECTORY_UNAVAILABLE = "directory_unavailable"
    # Set by the proxy shell, never by `decide`: a hook failed, so the request is refused.
    INTERNAL_ERROR = "internal_error"
    # Set by the proxy shell, never by `decide`: the audit log cannot be written, so an allowed
    # social-media request is refused rather than served without a record (audit.fail_closed).
    AUDIT_LOG_UNAVAILABLE = "audit_log_unavailable"


# When several grants cover a site and none allows the request, the reported reason is the
# one that tells the employee (and security staff) the most; transient failures come first.
_DENIAL_PRECEDENCE = (
    Reason.DIRECTORY_UNAVAILABLE,
    Reason.PATH_OUT_OF_SCOPE,
    Reason.APPROVER_NOT_AUTHORIZED,
    Reason.SELF_APPROVAL,
    Reason.GRANT_NOT_YET_VALID,
    Reason.GRANT_EXPIRED,
)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the proxy believes is asking, and how it came to believe it.

    `authenticated` is False when credentials were presented but did not verify, and None when
    the directory (or the token issuer's keys) could not be had to verify them. `problem` says
    why in plain words, for the log; it never holds a password or a token. `shared_role` marks
    a source-address role such as a library kiosk: not a person, so it never holds a grant.
    """

    user: str
    method: str
    authenticated: bool | None = True
    problem: str | None = None
    shared_role: bool = False


@dataclass(frozen=True, slots=True)
class Evidence:
    """The facts a decision rested on, for the block page, the access log and `explain`."""

    employee: str | None = None
    employee_department: str | None = None
    approver: str | None = None
    approver_role: str | None = None
    approver_department: str | None = None
    identity_method: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    result: Result
    reason: Reason
    host: str
    match: SiteMatch | None = None
    grant: Grant | None = None
    evidence: Evidence = Evidence()
    # True when the request was allowed without a path (a tunnel) under a grant limited to some
    # paths: the proxy must look inside the tunnel and decide again for each request.
    needs_path: bool = False

    @property
    def allowed(self) -> bool:
        return self.result is Result.ALLOW

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
                "purpose": grant.purpose,
                "approved_by": grant.approved_by,
                "approved_on": grant.approved_on.isoformat(),
                "valid_from": grant.valid_from.isoformat(),
                "valid_until": grant.valid_until.isoformat(),
                "paths": {site: list(paths) for site, paths in grant.paths.items()},
                "source": grant.location,
            },
            "evidence": asdict(self.evidence),
        }


class _Outcome(NamedTuple):
    """What one grant says about a request."""

    reason: Reason
    grant: Grant
    evidence: Evidence
    needs_path: bool = False


def people_involved(policy: Policy, user: str | None, hosts: Iterable[str]) -> set[str]:
    """Every uid `decide` may consult for this request: the employee and their approvers.

    The shell fetches these (off the event loop, through a cache) before calling `decide`.
    """
    if user is None:
        return set()
    uids = {user}
    # A request names its host up to three times, usually alike: look each one up once.
    for host in {normalize_host(raw) for raw in hosts}:
        match = policy.catalog.match(host) if host else None
        if match is not None:
            uids.update(grant.approved_by for grant in policy.grants_for(user, match.site.id))
    return uids


def decide_request(
    identity: Identity | None,
    hosts: Sequence[str],
    path: str | None,
    at: datetime,
    policy: Policy,
    people: Mapping[str, Person | None],
) -> Decision:
    """Decide for every host a request names (CONNECT authority, SNI, Host header): the strictest wins.

    A client can name one host in the CONNECT line and another in the TLS SNI or the Host
    header; the upstream acts on the latter, so no host may be skipped.
    """
    # Spellings of one host ("www.facebook.com:443" in the CONNECT line, "www.facebook.com" in
    # the SNI and the Host header) normalize alike and so get the same decision: decide once
    # per normalized host. A host that does not normalize is decided on its own text.
    distinct: dict[object, str] = {}
    for host in hosts:
        normalized = normalize_host(host)
        distinct.setdefault(host if normalized is None else normalized, host)
    decisions = [decide(identity, host, path, at, policy, people) for host in distinct.values()]
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
) -> Decision:
    """The decision for one host.

    `path` is None when only the tunnel is known (CONNECT, TLS SNI). `people` maps lower-case
    uids to the directory's answer (None: no such account); a uid that is absent means the
    directory could not be asked, and the request is refused rather than guessed at.
    """
    normalized = normalize_host(host)
    match = policy.catalog.match(normalized) if normalized else None
    host_name = normalized.name if normalized else host
    if match is None:
        return Decision(Result.ALLOW, Reason.NOT_SOCIAL_MEDIA, host_name)

    if identity is None:
        return Decision(Result.AUTH_REQUIRED, Reason.CREDENTIALS_REQUIRED, host_name, match)
    if identity.authenticated is None:
        return Decision(
            Result.DENY,
            Reason.DIRECTORY_UNAVAILABLE,
            host_name,
            match,
            evidence=Evidence(
                employee=identity.user,
                identity_method=identity.method,
                detail=identity.problem or "the directory could not verify the password",
            ),
        )
    if not identity.authenticated:
        return Decision(
            Result.AUTH_REQUIRED,
            Reason.CREDENTIALS_INVALID,
            host_name,
            match,
            evidence=Evidence(
                employee=identity.user, identity_method=identity.method, detail=identity.problem or ""
            ),
        )

    def deny(reason: Reason, evidence: Evidence, grant: Grant | None = None) -> Decision:
        return Decision(Result.DENY, reason, host_name, match, grant, evidence)

    user = identity.user
    base = Evidence(employee=user, identity_method=identity.method)
    if identity.shared_role:
        # A shared role (a kiosk's source address) is no directory account and no person: grants
        # name employees, so it has none, even if a grant file or a directory uid shares its name.
        return deny(
            Reason.NO_GRANT,
            _with(
                base,
                detail=f"{user} is a shared device role, not an employee; grants are for named employees",
            ),
        )
    if user not in people:
        return deny(
            Reason.DIRECTORY_UNAVAILABLE,
            _with(base, detail="the directory could not be asked about the employee"),
        )
    employee = people[user]
    if employee is None:
        return deny(Reason.UNKNOWN_EMPLOYEE, _with(base, detail="no such account in the directory"))
    base = _with(base, employee_department=employee.department)
    if employee.disabled:
        return deny(Reason.EMPLOYEE_DISABLED, _with(base, detail="the employee's account is disabled"))

    grants = policy.grants_for(user, match.site.id)
    if not grants:
        return deny(Reason.NO_GRANT, _with(base, detail=f"no grant for {match.site.name}"))

    outcomes = [_judge_grant(grant, employee, match, path, at, policy, people, base) for grant in grants]
    allowed = [outcome for outcome in outcomes if outcome.reason is Reason.GRANTED]
    if allowed:
        # Prefer a grant that needs no inspection, so the tunnel can stay encrypted end to end.
        best = min(allowed, key=lambda outcome: outcome.needs_path)
        return Decision(
            Result.ALLOW, best.reason, host_name, match, best.grant, best.evidence, best.needs_path
        )
    worst = min(outcomes, key=lambda outcome: _DENIAL_PRECEDENCE.index(outcome.reason))
    return deny(worst.reason, worst.evidence, worst.grant)


def _judge_grant(
    grant: Grant,
    employee: Person,
    match: SiteMatch,
    path: str | None,
    at: datetime,
    policy: Policy,
    people: Mapping[str, Person | None],
    base: Evidence,
) -> _Outcome:
    # Each outcome builds its Evidence from `base` in one step: copying it costs microseconds,
    # and a decision judges every grant the employee holds for the site.
    approver_uid = grant.approved_by
    if at < grant.valid_from:
        return _Outcome(
            Reason.GRANT_NOT_YET_VALID,
            grant,
            _with(base, approver=approver_uid, detail=f"grant starts {grant.valid_from:%Y-%m-%d}"),
        )
    if at >= grant.valid_until:
        return _Outcome(
            Reason.GRANT_EXPIRED,
            grant,
            _with(base, approver=approver_uid, detail=f"grant ended {grant.valid_until:%Y-%m-%d}"),
        )
    if grant.approved_by == employee.uid.casefold():
        return _Outcome(
            Reason.SELF_APPROVAL,
            grant,
            _with(base, approver=approver_uid, detail="the employee approved their own grant"),
        )
    if grant.approved_by not in people:
        return _Outcome(
            Reason.DIRECTORY_UNAVAILABLE,
            grant,
            _with(base, approver=approver_uid, detail="the directory could not be asked about the approver"),
        )

    approver = people[grant.approved_by]
    if approver is None:
        return _Outcome(
            Reason.APPROVER_NOT_AUTHORIZED,
            grant,
            _with(base, approver=approver_uid, detail="the approver is not in the directory"),
        )
    role = policy.approval.role_of(approver)
    evidence = _with(
        base,
        approver=approver_uid,
        approver_role=role.value if role else None,
        approver_department=approver.department,
    )
    if approver.disabled:
        return _Outcome(
            Reason.APPROVER_NOT_AUTHORIZED,
            grant,
            _with(evidence, detail="the approver's account is disabled"),
        )
    if role is None:
        return _Outcome(
            Reason.APPROVER_NOT_AUTHORIZED,
            grant,
            _with(evidence, detail="the approver is not a Director or higher"),
        )
    # An unknown department matches nothing, not even another unknown department.
    if role is Role.DIRECTOR and (approver.department is None or approver.department != employee.department):
        detail = f"the approver directs {approver.department or 'no department'}, not {employee.department or 'the employee'}'s department"
        return _Outcome(Reason.APPROVER_NOT_AUTHORIZED, grant, _with(evidence, detail=detail))

    scope = None if match.is_asset else grant.scope_for(match.site.id)
    if scope is None:
        return _Outcome(Reason.GRANTED, grant, evidence)
    if path is None:
        return _Outcome(Reason.GRANTED, grant, _with(evidence, detail=f"limited to {', '.join(scope)}"), True)
    normalized = normalize_path(path)
    if path_in_scope(normalized, scope):
        return _Outcome(Reason.GRANTED, grant, evidence)
    return _Outcome(
        Reason.PATH_OUT_OF_SCOPE,
        grant,
        _with(evidence, detail=f"{normalized} is outside {', '.join(scope)}"),
    )


_EVIDENCE_FIELDS = tuple(f.name for f in fields(Evidence))


def _with(evidence: Evidence, **changes: object) -> Evidence:
    # dataclasses.replace() inspects the class on every call (~7 us, a third of a decision);
    # this builds the same Evidence, and an unknown field still raises TypeError.
    values = {name: getattr(evidence, name) for name in _EVIDENCE_FIELDS}
    values.update(changes)
    return Evidence(**values)  # type: ignore[arg-type]
