"""Deciding a request, end to end, for the CLI and the web portal alike.

The approver's authority is checked on the directory's answer of the moment (routing.py); the
grant an approval makes is checked as `citygate check` would before anything is saved; the
decision is saved only onto the request as it was read (two approvers at once: one wins); the
grant is then written into the department's file, and every step is handed to `record` as
evidence (the request chain of the audit log).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from citygate.directory.model import Directory, DirectoryUnavailable, Person
from citygate.proxy.policy import Policy
from citygate.proxy.requests.evidence import decision_record, refusal_record, time_record
from citygate.proxy.requests.grant_file import GrantNotWritten, add_grant, problems_writing
from citygate.proxy.requests.model import AccessRequest, StageDecision, Status
from citygate.proxy.requests.routing import Due, Refusal, authority, due, grant_of, with_decision
from citygate.proxy.requests.store import RequestStore

Record = Callable[[dict[str, object]], None]


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
) -> Decided | NotDecided:
    """Approve or deny the current stage of `request_id` as `approver`, now."""
    request = store.get(request_id)
    if request is None:
        return NotDecided(f"there is no request {request_id}")
    if not request.status.open:
        return NotDecided(f"{request.id} is already {request.status.value}")
    reason = reason.strip()
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
    )
    after = with_decision(request, decision, settings)
    grant = grant_of(after, settings, policy) if after.status is Status.APPROVED else None
    if grant is not None:
        problems = problems_writing(config_path, request.department or "", grant, loaded=policy)
        if problems:
            return NotDecided("the grant would not load: " + "; ".join(p.message for p in problems))
        after = dataclasses.replace(after, grant_id=grant.id)
    if not store.save(request, after):
        return NotDecided(f"{request.id} was decided by someone else meanwhile: look at it again")
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
    *, store: RequestStore, policy: Policy, now: datetime, record: Record
) -> list[tuple[AccessRequest, Due]]:
    """Escalate and expire the open requests whose time has come (business days, city time):
    what was done to which. Run every few minutes (`citygate requests advance`, a timer)."""
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
        if store.save(request, after):  # not saved: decided meanwhile; the next run looks again
            record(time_record(after, action.value, settings.stages[request.stage].name, now))
            done.append((after, action))
    return done


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
