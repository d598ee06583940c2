"""Deciding a request, end to end, for the CLI and the web portal alike.

The approver's authority is checked on the directory's answer of the moment (routing.py); the
grant an approval makes is checked as `citygate check` would before anything is saved; the
decision is saved only onto the request as it was read (two approvers at once: one wins); the
grant is then written into the department's file, and every step is handed to `record` as
evidence (the request chain of the audit log).

With `requests.email`, each step also queues its notices (notices.py) in the transaction that
saves it: the new request to its first stage's approvers, the next stage's, the escalation to
the executives, the decision to the employee; `remind` queues the reminders before a grant
ends. Whom to tell is asked of the directory before the transaction; while it cannot answer,
the step is saved without its notices and `queue_missed` (run with `advance`) queues them later.
mail.py sends them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from citygate.directory.model import Directory, DirectoryUnavailable, Person
from citygate.proxy.policy import Policy, Role
from citygate.proxy.requests import notices
from citygate.proxy.requests.config import Stage
from citygate.proxy.requests.evidence import decision_record, refusal_record, time_record
from citygate.proxy.requests.form import Draft
from citygate.proxy.requests.grant_file import GrantNotWritten, add_grant, problems_writing
from citygate.proxy.requests.model import AccessRequest, StageDecision, Status, Terms
from citygate.proxy.requests.notices import Notice
from citygate.proxy.requests.routing import Due, Refusal, authority, due, grant_of, with_decision
from citygate.proxy.requests.store import AlreadyOpen, RequestStore

Record = Callable[[dict[str, object]], None]
log = logging.getLogger("citygate.requests")
# How far back `queue_missed` looks for decided requests whose notice the directory kept back.
MISSED_DECISIONS = timedelta(days=1)


class Approver(NamedTuple):
    """Who decides, as they signed in: never a name typed into a form."""

    uid: str
    method: str  # negotiate, basic, cli
    address: str  # where from: an IP address, or "cli"


class Decided(NamedTuple):
    request: AccessRequest
    grant_file: Path | None  # where an approval's grant was written


class NotDecided(NamedTuple):
    why: str


def submit(
    *, store: RequestStore, policy: Policy, directory: Directory, person: Person, draft: Draft, now: datetime
) -> AccessRequest | AlreadyOpen:
    """Store the employee's request (unless one of its sites has an open one), with the notice to
    its first stage's approvers queued in the same transaction."""
    compose = None
    if policy.features.requests.email is not None:
        try:
            approvers = stage_approvers(
                directory,
                policy,
                policy.features.requests.stages[0],
                employee=person.uid,
                department=person.department,
                sites=draft.sites,
                at=now,
            )
        except DirectoryUnavailable as exc:
            _not_told(person.uid, exc)
        else:

            def compose(stored: AccessRequest) -> list[Notice]:
                found = [notices.new_request(stored, policy, approvers)]
                _log_unreachable(found)
                return found

    return store.submit(person, draft, now, notices=compose)


def decide(
    *,
    store: RequestStore,
    policy: Policy,
    config_path: Path,
    directory: Directory,
    request_id: str,
    approver: Approver,
    approved: bool,
    reason: str,
    now: datetime,
    record: Record,
    narrowed: Terms | None = None,
) -> Decided | NotDecided:
    """Approve or deny the current stage of `request_id` as `approver`, now; an approval may
    allow less than the request does so far (`narrowed`), never more."""
    request = store.get(request_id)
    if request is None:
        return NotDecided(f"there is no request {request_id}")
    if not request.status.open:
        return NotDecided(f"{request.id} is already {request.status.value}")
    reason = reason.strip()
    if narrowed is not None and not (approved and request.terms.covers(narrowed)):
        return NotDecided("an approval may allow less than was asked, never more; a denial allows nothing")
    if not approved and not reason:
        return NotDecided("say why the request is denied: the employee is told")
    settings = policy.features.requests
    stage = settings.stages[request.stage]
    person, people = approver_facts(directory, policy, approver.uid)
    verdict = authority(request, stage, person, policy, people, now)
    if isinstance(verdict, Refusal):
        record(refusal_record(request, approver.uid, approver.method, approver.address, verdict.why, now))
        return NotDecided(verdict.why)
    decision = StageDecision(
        request.stage,
        approver.uid.casefold(),
        approver.method,
        approved,
        reason,
        now,
        approver.address,
        verdict.delegated_by,
        narrowed,
    )
    after = with_decision(request, decision, settings)
    grant = grant_of(after, settings, policy) if after.status is Status.APPROVED else None
    if grant is not None:
        problems = problems_writing(config_path, request.department or "", grant, loaded=policy)
        if problems:
            return NotDecided("the grant would not load: " + "; ".join(p.message for p in problems))
        after = dataclasses.replace(after, grant_id=grant.id)
    told = _notices_after(request, after, policy, directory, now)
    if not store.save(request, after, notices=told, at=now):
        return NotDecided(f"{request.id} was decided by someone else meanwhile: look at it again")
    _log_unreachable(told)
    record(decision_record(after, decision, stage.name, now))
    if grant is None:
        return Decided(after, None)
    try:
        written = add_grant(config_path, request.department or "", grant, loaded=policy)
    except (GrantNotWritten, OSError) as exc:
        # The approval stands (it is evidence); the grant is missing until written again.
        return NotDecided(f"{request.id} is approved, but its grant {grant.id} could not be written: {exc}")
    return Decided(after, written)


def advance(
    *, store: RequestStore, policy: Policy, directory: Directory, now: datetime, record: Record
) -> list[tuple[AccessRequest, Due]]:
    """Escalate and expire the open requests whose time has come (business days, city time),
    queuing the executives' and the employees' notices: what was done to which. Run every few
    minutes (`citygate requests advance`, a timer)."""
    settings = policy.features.requests
    now = now.astimezone(policy.timezone)
    done = []
    for request in store.pending():
        action = due(request, now, settings)
        if action is None:
            continue
        if action is Due.EXPIRE:
            after = dataclasses.replace(request, status=Status.EXPIRED, closed_at=now)
        else:
            after = dataclasses.replace(request, escalated=True)
        told = _notices_after(request, after, policy, directory, now)
        # Not saved: decided meanwhile; the next run looks again.
        if store.save(request, after, notices=told, at=now):
            record(time_record(after, action.value, settings.stages[request.stage].name, now))
            _log_unreachable(told)
            done.append((after, action))
    return done


def remind(*, store: RequestStore, policy: Policy, directory: Directory, now: datetime) -> list[Notice]:
    """Queue the reminders due now: an approved request's grant ends within
    `requests.email.remind_days_before` days, and its employee has not asked again. A reminder
    is queued once however often this runs (with `advance`); those queued now are returned."""
    email = policy.features.requests.email
    if email is None:
        return []
    today = now.astimezone(policy.timezone).date()
    ending = [
        r for r in store.approved_until_from(today) if notices.ends_within(r, today, email.remind_days_before)
    ]
    queued_before = store.queued_keys(key for r in ending for key in notices.reminder_keys(r))
    queued: list[Notice] = []
    for request in ending:
        if set(notices.reminder_keys(request)) <= queued_before:
            continue
        if notices.renewed(request, store.of_employee(request.employee)):
            continue
        try:
            employee = directory.lookup(request.employee)
            approvers = [
                person
                for uid in dict.fromkeys(d.approver for d in request.decisions if d.approved)
                if (person := directory.lookup(uid)) is not None
            ]
        except DirectoryUnavailable as exc:
            _not_told(request.id, exc)
            break  # the next run asks again
        queued += store.queue(notices.reminders(request, policy, employee, approvers), now)
    _log_unreachable(queued)
    return queued


def queue_missed(*, store: RequestStore, policy: Policy, directory: Directory, now: datetime) -> list[Notice]:
    """Queue the notices that the directory, not answering, kept from being queued with what they
    report: of open requests, and of those decided in the last day. Run with `advance`; those
    queued now are returned."""
    if policy.features.requests.email is None:
        return []
    candidates = store.pending() + store.closed_since(now - MISSED_DECISIONS)
    called_for = {request.id: notices.keys_called_for(request) for request in candidates}
    queued_before = store.queued_keys(key for keys in called_for.values() for key in keys)
    queued: list[Notice] = []
    for request in candidates:
        if not set(called_for[request.id]) <= queued_before:
            queued += store.queue(_notices_after(None, request, policy, directory, now), now)
    _log_unreachable(queued)
    return queued


def stage_approvers(
    directory: Directory,
    policy: Policy,
    stage: Stage,
    *,
    employee: str,
    department: str | None,
    sites: Sequence[str],
    at: datetime,
) -> list[Person]:
    """Whom to ask to decide `stage` of a request by `employee` of `department` for `sites`, as the
    directory says now: the stage group's members, or the department's Directors and their
    designees in force; never the employee, nor a disabled account. Executives are asked only
    on escalation. Raises DirectoryUnavailable."""
    if stage.group is not None:
        return _told_people(directory.group_members(stage.group), employee)
    if department is None:
        return []
    members = [p for group in sorted(policy.approval.director_groups) for p in directory.group_members(group)]
    directors = [p for p in policy.approval.approvers_for(department, members) if p.department == department]
    uids = {director.uid.casefold() for director in directors}
    designees = [
        person
        for designee, delegations in sorted(policy.delegations.items())
        if any(d.director in uids and all(d.covers(site, at) for site in sites) for d in delegations)
        and (person := directory.lookup(designee)) is not None
    ]
    return _told_people([*directors, *designees], employee)


def executives(directory: Directory, policy: Policy, employee: str) -> list[Person]:
    """Whom to tell of an escalation: the executives (never the employee). Raises
    DirectoryUnavailable."""
    members = [
        p for group in sorted(policy.approval.executive_groups) for p in directory.group_members(group)
    ]
    return _told_people([p for p in members if policy.approval.role_of(p) is Role.EXECUTIVE], employee)


def _told_people(people: Iterable[Person], employee: str) -> list[Person]:
    """Each person once, by name, without the employee and disabled accounts."""
    found: dict[str, Person] = {}
    for person in people:
        uid = person.uid.casefold()
        if uid != employee.casefold() and not person.disabled:
            found.setdefault(uid, person)
    return sorted(found.values(), key=lambda person: (person.name, person.uid))


def _notices_after(
    before: AccessRequest | None, after: AccessRequest, policy: Policy, directory: Directory, now: datetime
) -> list[Notice]:
    """The notices `after` calls for that `before` did not (None: every one it calls for); none
    without `requests.email`, or while the directory cannot say whom to tell."""
    if policy.features.requests.email is None:
        return []
    found = []
    try:
        if not after.status.open:
            found.append(notices.decision(after, policy, directory.lookup(after.employee)))
        if after.status.open and (before is None or before.stage != after.stage):
            approvers = stage_approvers(
                directory,
                policy,
                policy.features.requests.stages[after.stage],
                employee=after.employee,
                department=after.department,
                sites=after.sites,
                at=now,
            )
            found.append(notices.new_request(after, policy, approvers))
        if after.status.open and after.escalated and (before is None or not before.escalated):
            found.append(notices.escalation(after, policy, executives(directory, policy, after.employee)))
    except DirectoryUnavailable as exc:
        _not_told(after.id, exc)
        return []
    return found


def _not_told(what: str, exc: DirectoryUnavailable) -> None:
    log.warning(
        "citygate: %s: the directory did not say whom to mail (%s); "
        "`citygate requests advance` queues the mail once it answers",
        what,
        exc,
    )


def _log_unreachable(queued: Iterable[Notice]) -> None:
    for notice in queued:
        if notice.unreachable:
            log.warning(
                "citygate: %s: not mailed to %s: the directory has no mail address for them",
                notice.key,
                ", ".join(notice.unreachable),
            )


def approver_facts(
    directory: Directory, policy: Policy, uid: str
) -> tuple[Person | None, dict[str, Person | None]]:
    """The approver, and the Directors whose designee they are, as the directory says now."""
    people: dict[str, Person | None] = {}
    person = None
    with contextlib.suppress(DirectoryUnavailable):
        person = directory.lookup(uid)
    for delegation in policy.delegations.get(uid.casefold(), ()):
        with contextlib.suppress(DirectoryUnavailable):
            people[delegation.director] = directory.lookup(delegation.director)
    return person, people
