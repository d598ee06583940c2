"""What became of a decision: how a tunnel was handled, and the use it counts as for the flags.

Pure: the access-log records, the flag rules and the gate ask the same questions of a decision
here, so that they cannot disagree about whether a tunnel was passed through.
"""

from __future__ import annotations

from datetime import datetime

from citygate.proxy.decision import Decision, Reason
from citygate.proxy.flags import Use, counting
from citygate.proxy.grants import PurposeKind


def tunnel_handling(decision: Decision, status: int | None, would_deny: bool = False) -> str | None:
    """What became of a CONNECT: passed through untouched, decrypted, or refused outright."""
    if status is not None:
        return None  # answered by the proxy itself (407, or 403 when the audit log is down)
    if decision.reason is Reason.UNRECOGNIZED_PROTOCOL:
        return "closed"  # its first bytes were neither TLS nor HTTP: nothing was relayed
    if (decision.allowed or would_deny) and passes_through(decision):  # would_deny: report mode
        # mitmproxy relays an ignored connection without any hook seeing its bytes, so this
        # record is written when the tunnel is decided, and its byte counts stay unknown.
        return "passthrough"
    # Decrypted: to decide each request on its own host and path, or to show the block page.
    return "decrypted"


def passes_through(decision: Decision) -> bool:
    """Whether an allowed social tunnel is relayed undecrypted rather than looked into.

    Only for a site whose catalog entry accepts the fronting risk (`pass_through_when_granted`),
    and only when no path scope needs checking: otherwise a request inside the tunnel could name
    another site on the same front end, which would never be decided.
    """
    match = decision.match
    return match is not None and match.site.pass_through_when_granted and not decision.needs_path


def use_of_decision(
    decision: Decision, is_request: bool, status: int | None, at: datetime, would_deny: bool = False
) -> Use:
    """The facts of a decision the gate announced (`status`: the proxy's own answer, if any).

    A report-mode denial (`would_deny`) counts as the attempt it would be in enforce mode.
    """
    tunnel = None if is_request else tunnel_handling(decision, status, would_deny)
    grant = decision.grant if decision.allowed else None
    return Use(
        at=at,
        user=decision.evidence.employee or None,
        site=decision.site_id,
        reason=decision.reason.value,
        counts=counting(is_request, decision.allowed, tunnel),
        grant_until=grant.valid_until if grant is not None else None,
        personal=grant is not None and grant.purpose_kind is PurposeKind.PERSONAL,
    )
