"""One log line per social-media decision, in the proxy's own log."""

from __future__ import annotations

import json
import logging

from citygate.addons.events import DecisionEvent

log = logging.getLogger("citygate.decisions")


class DecisionLog:
    def citygate_decision(self, event: DecisionEvent) -> None:
        decision, evidence = event.decision, event.decision.evidence
        # The detail may quote a request path or a value from a rejected token: JSON-quoted, so
        # spaces, quotes and control characters cannot break the line or forge another field.
        detail = f" detail={json.dumps(evidence.detail)}" if evidence.detail else ""
        if event.would_deny:  # report mode: denied as in enforce mode, but let through
            detail += " mode=report would_deny=true"
        log.info(
            "%s reason=%s site=%s host=%s stage=%s user=%s identity=%s department=%s grant=%s approver=%s source=%s id=%s%s",
            decision.result.value,
            decision.reason.value,
            decision.site_id,
            decision.host,
            event.stage.value,
            evidence.employee or "-",
            evidence.identity_method or "-",
            evidence.employee_department or "-",
            decision.grant.id if decision.grant else "-",
            # A designee's approval: "mnguyen(for ahernandez)".
            f"{evidence.approver}(for {evidence.delegated_by})"
            if evidence.delegated_by
            else evidence.approver or "-",
            event.client_ip or "-",
            event.id,
            detail,
        )
