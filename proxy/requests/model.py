"""An access request and the decisions on it: plain values, kept by the store, judged by routing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType

from citygate.proxy.grants import path_in_scope


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # every stage approved: the grant is written
    DENIED = "denied"
    EXPIRED = "expired"  # nobody decided in time

    @property
    def open(self) -> bool:
        return self is Status.PENDING


@dataclass(frozen=True, slots=True)
class Terms:
    """What an approval allows: sites, pages per site (none listed: the whole site), last day.

    An approver may allow less than was asked (fewer sites, fewer pages, an earlier day), never
    more; each stage's approval narrows what the previous one allowed.
    """

    sites: tuple[str, ...]
    until: date
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def covers(self, other: Terms) -> bool:
        """Whether `other` allows nothing these terms do not: its sites among ours, its last day
        no later, and on each site its pages within ours (ours none listed: the whole site)."""
        if not set(other.sites) <= set(self.sites) or other.until > self.until:
            return False
        for site in other.sites:
            ours = self.paths.get(site)
            if ours and not all(path_in_scope(page, ours) for page in other.paths.get(site) or ("/",)):
                return False
        return True


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
    # Less than was asked, when the approver narrowed it; None: approved as it stood.
    narrowed: Terms | None = None


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
    def terms(self) -> Terms:
        """What the decisions so far allow: as asked, narrowed by each approval that narrowed it."""
        for decision in reversed(self.decisions):
            if decision.narrowed is not None:
                return decision.narrowed
        return Terms(self.sites, self.until, self.paths)

    @property
    def stage_started(self) -> datetime:
        """When the current stage was asked: submission, or the previous stage's approval."""
        return self.decisions[-1].at if self.decisions else self.submitted_at
