"""What the gate announces after each social-media decision, for logs and metrics to record.

The gate triggers `citygate_decision` through mitmproxy's addon manager before it acts on the
decision (so a denial is recorded before its response is sent). Recorders are ordinary addons
that implement `citygate_decision(event)`; they must not block, as they run on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mitmproxy import hooks

from citygate.proxy.decision import Decision, Reason


class Stage(StrEnum):
    CONNECT = "connect"  # a CONNECT request: host known, path not
    REQUEST = "request"  # a plain-HTTP request, or one inside an intercepted tunnel


@dataclass(slots=True)
class Veto:
    """A recorder's objection to serving an allowed decision, e.g. the audit log cannot be written.

    Mutable on purpose: recorders answer through it, and the gate reads it once every recorder
    has run (`trigger_event` swallows exceptions, so a return value could not carry this).
    """

    reason: Reason | None = None
    detail: str = ""

    def refuse(self, reason: Reason, detail: str) -> None:
        if self.reason is None:  # the first objection is the one reported
            self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class DecisionEvent:
    id: str
    timestamp: datetime  # UTC
    decision: Decision
    stage: Stage
    client_ip: str | None
    method: str
    url: str
    # The status the proxy answers with itself (403 block page, 407); None when forwarded.
    status: int | None
    # Set by a recorder to refuse an allowed decision; the gate then answers with a denial.
    veto: Veto = field(default_factory=Veto)
    # Non-business-use flags (rule ids) raised on this decision. Mutable like `veto`: the flags
    # addon (citygate.addons.flags) fills it in before the access log records the event.
    flags: list[str] = field(default_factory=list)
    # Seconds from the request reaching citygate to this announcement (identity check,
    # directory lookups, the decision), for citygate_decision_duration_seconds; None if unknown.
    decision_seconds: float | None = None
    # "enforce", or "report" when the employee's department (or everyone) is in report mode
    # (proxy/enforcement.py). A report-mode denial is announced as the denial it is, so logs and
    # metrics count it exactly as in enforce mode, but `would_deny` is set and the request goes
    # through: the access log records it as allowed, with the deny reason.
    mode: str = "enforce"
    would_deny: bool = False

    @property
    def forwarded(self) -> bool:
        """Whether the proxy lets this request through: allowed, or a report-mode denial."""
        return self.decision.allowed or self.would_deny


@dataclass
class CitygateDecisionHook(hooks.Hook):
    """A social-media request was decided; called before the proxy acts on the decision."""

    event: DecisionEvent
