"""An access request and the decisions on it: plain values, kept by the store, judged by routing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # every stage approved: the grant is written
    DENIED = "denied"
    EXPIRED = "expired"  # nobody decided in time

    @property
    def open(self) -> bool:
        return self is Status.PENDING


@dataclass(frozen=True, slots=True)
class StageDecision:
    """One stage's decision: evidence of who decided, as they signed in, when and from where."""

    stage: int  # index into the configured stages
    approver: str  # the uid they signed in as
    method: str  # how they signed in: negotiate, basic, cli
    approved: bool
    reason: str  # why (required for a denial)
    at: datetime
    address: str  # where they decided from (an IP address, or "cli")
    delegated_by: str | None = None  # the Director a designee decided for


@dataclass(frozen=True, slots=True)
class AccessRequest:
    id: str  # req-2026-0042
    employee: str  # the uid the proxy identified, never a form field
    # As the directory had them when the employee asked: the form's evidence.
    name: str
    department: str | None
    title: str | None
    sites: tuple[str, ...]
    purpose: str
    until: date  # the requested last day
    submitted_at: datetime
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    status: Status = Status.PENDING
    stage: int = 0  # the stage deciding now
    escalated: bool = False  # the current stage was escalated to the executives
    decisions: tuple[StageDecision, ...] = ()
    grant_id: str | None = None  # once approved and written
    closed_at: datetime | None = None
    version: int = 0  # the store's count of changes, so a change is saved only onto what was read

    @property
    def stage_started(self) -> datetime:
        """When the current stage was asked: submission, or the previous stage's approval."""
        return self.decisions[-1].at if self.decisions else self.submitted_at
