"""The flags recorder: non-business-use flags on each decision, before the access log writes it.

Add it after the gate and before the access log (`AuditLog`): it puts the ids of the rules a
decision triggers on `event.flags`, which the log records as `citygate.flags` and the metrics
addon counts. The rules themselves are pure (proxy/flags.py); this addon only feeds them.

The windowed rules (daily budgets, repeated denials) are evaluated here over the decisions this
process has seen: an early warning, exact with a single process and a lower bound when several
workers or hosts share an employee's traffic. `citygate report` evaluates them over the merged
logs of every process, and its figures are the authoritative ones.
"""

from __future__ import annotations

import logging
from datetime import UTC, tzinfo

from citygate.addons.events import DecisionEvent, Stage
from citygate.addons.loaded import loaded_policy
from citygate.proxy.flags import FlagSettings, WindowTracker, request_flags
from citygate.proxy.outcomes import use_of_decision

log = logging.getLogger("citygate.flags")


class Flags:
    def __init__(self) -> None:
        self.settings = FlagSettings()
        self.zone: tzinfo = UTC
        self.tracker = WindowTracker(self.settings, self.zone)

    def configure(self, updated: set[str]) -> None:
        if "citygate_config" not in updated:
            return
        policy = loaded_policy()
        if policy is None:
            return
        settings = policy.features.flags
        if settings != self.settings or policy.timezone != self.zone:
            # New rules start counting afresh; unchanged rules keep today's counts.
            self.settings, self.zone = settings, policy.timezone
            self.tracker = WindowTracker(settings, policy.timezone)

    def citygate_decision(self, event: DecisionEvent) -> None:
        if not self.settings.rules:
            return
        try:
            use = use_of_decision(
                event.decision, event.stage is Stage.REQUEST, event.status, event.timestamp, event.would_deny
            )
            flags = request_flags(self.settings, use, self.zone) + self.tracker.observe(use)
        except Exception:
            # A flag is a note for reviewers: failing to raise one must never affect the request.
            log.exception("citygate: could not evaluate the flag rules for decision %s", event.id)
            return
        event.flags.extend(flag for flag in flags if flag not in event.flags)
