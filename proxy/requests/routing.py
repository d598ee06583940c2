"""Who decides a request, and what happens to it over time: pure rules over directory answers.

The same rules as the proxy's (decision.py): nobody decides their own request; a Director only
for their own department; a designee only within a delegation in force, while the delegating
Director still holds the role; an executive for anyone. A group stage (Glendale's Office of
Communication and Public Affairs) is decided by the group's members. Everything is judged on
the directory's answer of the moment, never on what the request recorded.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from citygate.directory.model import Person
from citygate.proxy.policy import Policy, Role
from citygate.proxy.requests.config import RequestSettings, Stage
from citygate.proxy.requests.grant_file import ApprovedGrant
from citygate.proxy.requests.model import AccessRequest, StageDecision, Status


class Authority(NamedTuple):
    """Why someone may decide the current stage: their role (None: a member of the stage's group)."""

    role: Role | None
    delegated_by: str | None = None


class Refusal(NamedTuple):
    why: str


def authority(
    request: AccessRequest,
    stage: Stage,
    approver: Person | None,
    policy: Policy,
    people: Mapping[str, Person | None],
    at: datetime,
) -> Authority | Refusal:
    """Whether `approver` may decide `stage` of `request` now. `people` holds the Directors of
    the approver's delegations (absent: the directory could not be asked, so no)."""
    if approver is None:
        return Refusal("you are not in the directory")
    if approver.uid.casefold() == request.employee.casefold():
        return Refusal("nobody decides their own request")
    if approver.disabled:
        return Refusal("your account is disabled")
    role = policy.approval.role_of(approver)
    if role is Role.EXECUTIVE:
        return Authority(role)
    if stage.group is not None:
        if stage.group in approver.groups:
            return Authority(role)
        return Refusal(f"this stage is decided by the members of {stage.group}")
    if role is Role.DIRECTOR:
        if approver.department is not None and approver.department == request.department:
            return Authority(role)
        return Refusal(
            f"you direct {approver.department or 'no department'}, not {request.department or 'the employee'}'s department"
        )
    return _as_designee(request, approver, policy, people, at)


def _as_designee(
    request: AccessRequest,
    designee: Person,
    policy: Policy,
    people: Mapping[str, Person | None],
    at: datetime,
) -> Authority | Refusal:
    delegations = [
        delegation
        for delegation in policy.delegations.get(designee.uid.casefold(), ())
        if all(delegation.covers(site, at) for site in request.sites)
    ]
    if not delegations:
        return Refusal("only a Director of the employee's department, their designee or an executive decides")
    for delegation in delegations:
        director = people.get(delegation.director)
        if (
            director is not None
            and not director.disabled
            and policy.approval.role_of(director) is Role.DIRECTOR
            and director.department is not None
            and director.department == request.department
        ):
            return Authority(Role.DESIGNEE, delegation.director)
    return Refusal("the Director who named you designee no longer directs the employee's department")


def business_days_between(start: date, end: date) -> int:
    """Monday-to-Friday days after `start` up to and including `end`."""
    if end <= start:
        return 0
    weeks, extra = divmod((end - start).days, 7)
    days = weeks * 5
    for offset in range(1, extra + 1):
        if (start + timedelta(days=offset)).weekday() < 5:
            days += 1
    return days


class Due(StrEnum):
    ESCALATE = "escalate"  # the stage's time passed: the executives are asked too
    EXPIRE = "expire"  # nobody decided in time: the request ends


def due(request: AccessRequest, now: datetime, settings: RequestSettings) -> Due | None:
    """What time has made of an open request at `now` (a time in the city's timezone)."""
    if not request.status.open:
        return None
    today = now.date()
    if business_days_between(request.submitted_at.astimezone(now.tzinfo).date(), today) >= (
        settings.expire_after_business_days
    ):
        return Due.EXPIRE
    stage = settings.stages[request.stage]
    started = request.stage_started.astimezone(now.tzinfo).date()
    if not request.escalated and business_days_between(started, today) >= stage.escalate_after_business_days:
        return Due.ESCALATE
    return None


def with_decision(
    request: AccessRequest, decision: StageDecision, settings: RequestSettings
) -> AccessRequest:
    """The request after its current stage's decision: denied, on to the next stage, or approved."""
    assert request.status.open and decision.stage == request.stage, "only the current stage decides"
    decisions = (*request.decisions, decision)
    if not decision.approved:
        return dataclasses.replace(request, status=Status.DENIED, decisions=decisions, closed_at=decision.at)
    if request.stage + 1 < len(settings.stages):
        return dataclasses.replace(request, stage=request.stage + 1, escalated=False, decisions=decisions)
    return dataclasses.replace(request, status=Status.APPROVED, decisions=decisions, closed_at=decision.at)


def grant_of(request: AccessRequest, settings: RequestSettings, policy: Policy) -> ApprovedGrant:
    """The grant an approved request makes: approved by the Directors' stage's decider (the
    approver the proxy checks live), dated the day the last stage approved."""
    assert request.status is Status.APPROVED, "only an approved request makes a grant"
    directors_stage = next(i for i, stage in enumerate(settings.stages) if stage.by_directors)
    approver = next(d.approver for d in request.decisions if d.stage == directors_stage and d.approved)
    last = request.decisions[-1]
    terms = request.terms  # as asked, or as the approvers narrowed it
    return ApprovedGrant(
        id=grant_id_of(request.id),
        employee=request.employee,
        sites=terms.sites,
        purpose=request.purpose,
        approved_by=approver,
        approved_on=last.at.astimezone(policy.timezone).date(),
        expires=terms.until,
        request_id=request.id,
        paths=terms.paths,
    )


_REQUEST_NUMBER = re.compile(r"req-(\d{4}-\d+)")


def grant_id_of(request_id: str) -> str:
    """grant-2026-0042 for req-2026-0042: the two named alike, so each leads to the other."""
    match = _REQUEST_NUMBER.fullmatch(request_id)
    assert match is not None, f"a request id: {request_id}"
    return f"grant-{match.group(1)}"
