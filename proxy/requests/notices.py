"""What the access-request emails say, and to whom: pure composition from a request, the policy
and the people the directory named (workflow.py asks the directory; mail.py sends).

Each notice has a key naming the event it reports (`req-2026-0042:stage-0:new`): the store's
outbox keeps one row per key, so a notice queued twice (every `citygate requests advance`
queues the reminders that are due) is sent once. The free-text purpose is only ever in a body:
a subject is made of the request id, the directory's names and the catalog's, with line breaks
folded away, so no text anyone typed can start a header of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from citygate.directory.model import Person
from citygate.proxy.policy import Policy
from citygate.proxy.requests.config import MAIL_ADDRESS
from citygate.proxy.requests.model import AccessRequest, Status


class NoticeKind(StrEnum):
    NEW_REQUEST = "new-request"  # to the current stage's approvers
    ESCALATION = "escalation"  # to the executives, once the stage waited too long
    DECISION = "decision"  # to the employee: approved, denied, or expired undecided
    REMINDER = "reminder"  # before an approved request's grant ends


@dataclass(frozen=True, slots=True)
class Notice:
    key: str  # one notice per key: queued again, it is not sent again
    kind: NoticeKind
    request_id: str
    recipients: tuple[str, ...]  # mail addresses
    subject: str
    body: str
    # Whom it is for but the directory has no mail address for: they are not told (logged).
    unreachable: tuple[str, ...] = ()


# ---------------------------------------------------------------------- keys


def new_request_key(request: AccessRequest) -> str:
    return f"{request.id}:stage-{request.stage}:new"


def escalation_key(request: AccessRequest) -> str:
    return f"{request.id}:stage-{request.stage}:escalated"


def decision_key(request: AccessRequest) -> str:
    return f"{request.id}:{request.status.value}"


def reminder_keys(request: AccessRequest) -> tuple[str, str]:
    """The employee's reminder and the approvers'."""
    return f"{request.id}:reminder:employee", f"{request.id}:reminder:approvers"


def keys_called_for(request: AccessRequest) -> tuple[str, ...]:
    """The notices the request's state calls for (what a catch-up looks for in the outbox)."""
    if not request.status.open:
        return (decision_key(request),)
    if request.escalated:
        return new_request_key(request), escalation_key(request)
    return (new_request_key(request),)


# ---------------------------------------------------------------------- when


def ends_within(request: AccessRequest, today: date, days: int) -> bool:
    """Whether the grant an approved request made ends within `days` days of `today`, not before."""
    return request.status is Status.APPROVED and today <= request.terms.until <= today + timedelta(days=days)


def renewed(request: AccessRequest, others: Iterable[AccessRequest]) -> bool:
    """Whether the employee has asked again for every site of `request`: `others` are their
    requests; one open, or approved until later, is a renewal."""
    terms = request.terms
    renewals = [
        other
        for other in others
        if other.id != request.id
        and (other.status.open or (other.status is Status.APPROVED and other.terms.until > terms.until))
    ]
    return all(any(site in other.terms.sites for other in renewals) for site in terms.sites)


# ---------------------------------------------------------------------- what is said


def new_request(request: AccessRequest, policy: Policy, approvers: Iterable[Person]) -> Notice:
    """To the current stage's approvers: a request waits for their decision."""
    stage = policy.features.requests.stages[request.stage]
    stages = policy.features.requests.stages
    lines = [
        f"{_who(request)} asks for access to social media for work, and it waits for your decision.",
        "",
        *_described(request, policy),
        "",
        *_earlier_stages(request, policy),
        f"Stage: {stage.name}" + (f" ({request.stage + 1} of {len(stages)})" if len(stages) > 1 else ""),
        f"Decide: {_link(policy, f'/approvals/{request.id}')}",
        "",
        f"If nobody decides within {stage.escalate_after_business_days} business days, the executives are "
        f"asked too; undecided, the request expires {policy.features.requests.expire_after_business_days} "
        "business days after it was made.",
        "You receive this as one who may decide this stage: "
        + (
            f"a member of {stage.group}."
            if stage.group is not None
            else f"a Director of {request.department or 'the department'}, or their designee."
        ),
    ]
    subject = f"Social media request {request.id} from {request.name} awaits your decision"
    return _notice(
        new_request_key(request), NoticeKind.NEW_REQUEST, request, policy, approvers, subject, lines
    )


def escalation(request: AccessRequest, policy: Policy, executives: Iterable[Person]) -> Notice:
    """To the executives: the current stage waited its business days without a decision."""
    stage = policy.features.requests.stages[request.stage]
    lines = [
        f"{_who(request)} asked for access to social media for work on "
        f"{request.stage_started.astimezone(policy.timezone):%Y-%m-%d}, and nobody has decided "
        f'the stage "{stage.name}" within {stage.escalate_after_business_days} business days.',
        "As an executive you may decide it.",
        "",
        *_described(request, policy),
        "",
        *_earlier_stages(request, policy),
        f"Decide: {_link(policy, f'/approvals/{request.id}')}",
        "",
        f"Undecided, the request expires {policy.features.requests.expire_after_business_days} business "
        "days after it was made.",
    ]
    subject = f"Social media request {request.id} from {request.name} is waiting for a decision"
    return _notice(
        escalation_key(request), NoticeKind.ESCALATION, request, policy, executives, subject, lines
    )


def decision(request: AccessRequest, policy: Policy, employee: Person | None) -> Notice:
    """To the employee: their request was approved, denied, or expired undecided."""
    assert not request.status.open, "only a closed request is decided"
    last = request.decisions[-1] if request.decisions else None
    if request.status is Status.APPROVED:
        assert last is not None, "an approval is a decision"
        terms = request.terms
        lines = [
            f"Your request {request.id} was approved by {_decider(last.approver, last.delegated_by)} on "
            f"{last.at.astimezone(policy.timezone):%Y-%m-%d}.",
            "",
            f"Grant: {request.grant_id or '-'}",
            f"Sites: {_site_names(policy, terms.sites)}",
            *_pages(policy, terms.paths),
            f"Until: {terms.until.isoformat()} (the last day)",
        ]
        if _allowed_so_far(request, policy):
            lines.append("This is less than you asked for: the approval narrowed the request.")
        lines += [
            "",
            "The proxy lets you in once it has loaded the grant, within a few minutes.",
            f"Before it ends, you will be reminded to ask again if you still need it. Your requests: "
            f"{_link(policy, '/requests/mine')}",
        ]
        subject = f"Your social media request {request.id} is approved"
    elif request.status is Status.DENIED:
        assert last is not None, "a denial is a decision"
        stage = (
            policy.features.requests.stages[last.stage].name
            if last.stage < len(policy.features.requests.stages)
            else ""
        )
        lines = [
            f"Your request {request.id} for {_site_names(policy, request.sites)} was denied by "
            f"{_decider(last.approver, last.delegated_by)}"
            + (f" ({stage})" if stage else "")
            + f" on {last.at.astimezone(policy.timezone):%Y-%m-%d}.",
            "",
            "Why:",
            *_indented(last.reason),
            "",
            f"Your requests: {_link(policy, '/requests/mine')}",
        ]
        subject = f"Your social media request {request.id} is denied"
    else:
        lines = [
            f"Nobody decided your request {request.id} for {_site_names(policy, request.sites)} within "
            f"{policy.features.requests.expire_after_business_days} business days, so it has expired.",
            "",
            "If you still need access, ask again, or talk to your Director:",
            *(f"  {_link(policy, f'/request?site={site}')}" for site in request.sites),
        ]
        subject = f"Your social media request {request.id} expired undecided"
    return _notice(
        decision_key(request),
        NoticeKind.DECISION,
        request,
        policy,
        _employee(request, employee),
        subject,
        lines,
    )


def reminders(
    request: AccessRequest, policy: Policy, employee: Person | None, approvers: Iterable[Person]
) -> list[Notice]:
    """Before an approved request's grant ends: the employee (with a link to ask again for each
    site) and the approver(s) who approved it."""
    terms = request.terms
    employee_key, approvers_key = reminder_keys(request)
    sites = _site_names(policy, terms.sites)
    to_employee = [
        f"Your access to {sites} (grant {request.grant_id or '-'}, request {request.id}) ends after "
        f"{terms.until.isoformat()}.",
        "",
        "If you still need it for your work, ask again before then:",
        *(f"  {_link(policy, f'/request?site={site}')}" for site in terms.sites),
        "",
        "Nothing is needed if you no longer need it: the access simply ends.",
    ]
    to_approvers = [
        f"The access you approved for {_who(request)} to {sites} (grant {request.grant_id or '-'}, "
        f"request {request.id}) ends after {terms.until.isoformat()}.",
        "",
        f"{request.name} has been reminded and may ask again; you will then be asked to decide.",
        f"The request: {_link(policy, f'/approvals/{request.id}')}",
    ]
    return [
        _notice(
            employee_key,
            NoticeKind.REMINDER,
            request,
            policy,
            _employee(request, employee),
            f"Your access to {sites} ends on {terms.until.isoformat()}",
            to_employee,
        ),
        _notice(
            approvers_key,
            NoticeKind.REMINDER,
            request,
            policy,
            [p for p in approvers if p.uid.casefold() != request.employee.casefold()],
            f"Access you approved for {request.name} ends on {terms.until.isoformat()}",
            to_approvers,
        ),
    ]


# ---------------------------------------------------------------------- shared


def _notice(
    key: str,
    kind: NoticeKind,
    request: AccessRequest,
    policy: Policy,
    people: Iterable[Person | str],
    subject: str,
    lines: Sequence[str],
) -> Notice:
    """The notice to `people` (a login: someone the directory no longer has)."""
    addresses: list[str] = []
    unreachable: list[str] = []
    seen: set[str] = set()
    for person in people:
        uid = (person if isinstance(person, str) else person.uid).casefold()
        if uid in seen:
            continue
        seen.add(uid)
        mail = "" if isinstance(person, str) else (person.mail or "").strip()
        if MAIL_ADDRESS.fullmatch(mail):
            addresses.append(mail)
        else:  # none, or something a header could not carry
            unreachable.append(uid)
    footer = [
        "",
        "-- ",
        f"Sent by citygate, the {policy.city} social media access proxy. Do not reply to this message.",
    ]
    return Notice(
        key,
        kind,
        request.id,
        tuple(addresses),
        _one_line(f"[{policy.city}] {subject}"),
        "\n".join((*lines, *footer)) + "\n",
        tuple(unreachable),
    )


def _employee(request: AccessRequest, employee: Person | None) -> list[Person | str]:
    """The employee to tell, or their login when they have left the directory (nobody to tell)."""
    return [employee if employee is not None else request.employee]


def _described(request: AccessRequest, policy: Policy) -> list[str]:
    return [
        f"Request: {request.id}",
        f"Employee: {_who(request)}",
        f"Sites: {_site_names(policy, request.sites)}",
        *_pages(policy, request.paths),
        f"Until: {request.until.isoformat()} (the last day asked for)",
        *_allowed_so_far(request, policy),
        f"Submitted: {request.submitted_at.astimezone(policy.timezone):%Y-%m-%d %H:%M}",
        "Business purpose:",
        *_indented(request.purpose),
    ]


def _allowed_so_far(request: AccessRequest, policy: Policy) -> list[str]:
    """What an earlier stage's approval allowed, where it is less than was asked."""
    terms = request.terms
    if (terms.sites, terms.until, dict(terms.paths)) == (request.sites, request.until, dict(request.paths)):
        return []
    return [
        f"Allowed by the earlier stage: {_site_names(policy, terms.sites)} until {terms.until.isoformat()}",
        *(f"  {line}" for line in _pages(policy, terms.paths)),
    ]


def _earlier_stages(request: AccessRequest, policy: Policy) -> list[str]:
    stages = policy.features.requests.stages
    lines = [
        f"{stages[d.stage].name}: approved by {_decider(d.approver, d.delegated_by)} on "
        f"{d.at.astimezone(policy.timezone):%Y-%m-%d}"
        for d in request.decisions
        if d.approved and d.stage < len(stages)
    ]
    return [*lines, ""] if lines else []


def _pages(policy: Policy, paths: Mapping[str, tuple[str, ...]]) -> list[str]:
    return [f"Pages on {_site_names(policy, (site,))}: {', '.join(scope)}" for site, scope in paths.items()]


def _who(request: AccessRequest) -> str:
    details = ", ".join(part for part in (request.title, request.department) if part)
    return f"{request.name} ({request.employee}" + (f", {details})" if details else ")")


def _decider(approver: str, delegated_by: str | None) -> str:
    return approver + (f" (designee of {delegated_by})" if delegated_by else "")


def _site_names(policy: Policy, sites: Iterable[str]) -> str:
    catalog = policy.catalog.sites
    return ", ".join(catalog[site].name if site in catalog else site for site in sites)


def _link(policy: Policy, path: str) -> str:
    url = policy.features.requests.portal_url
    return f"{url}{path}" if url else "the access-request portal (ask IT for its address)"


def _indented(text: str) -> list[str]:
    return [f"  {line}" for line in text.splitlines()] or ["  -"]


def _one_line(text: str) -> str:
    """Whitespace folded to single spaces: a header value never holds a line break."""
    return " ".join(text.split())
