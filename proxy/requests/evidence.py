"""Access requests as audit-log records (Elastic Common Schema): what was asked, who decided, how
they signed in, when and from where. `citygate audit verify` checks them with the rest."""

from __future__ import annotations

from datetime import datetime

from citygate.proxy.audit.record import ECS_VERSION, timestamp
from citygate.proxy.requests.model import AccessRequest, StageDecision

CATEGORY = "iam"  # ECS: identity and access management


def submitted_record(request: AccessRequest, method: str, address: str, at: datetime) -> dict[str, object]:
    """An employee asked: the form as stored, who asked (as they signed in) and from where."""
    record = _about(request, "access-request-submitted", at)
    record |= {
        "event.outcome": "success",
        "user.name": request.employee,
        "source.ip": address,
        "citygate.request.method": method,
        "citygate.request.purpose": request.purpose,
        "citygate.request.until": request.until.isoformat(),
        "citygate.request.pages": {site: list(pages) for site, pages in request.paths.items()},
    }
    return record


def decision_record(
    request: AccessRequest, decision: StageDecision, stage: str, at: datetime
) -> dict[str, object]:
    """One stage's decision on a request."""
    record = _about(request, "access-request-approved" if decision.approved else "access-request-denied", at)
    record |= {
        "event.outcome": "success",
        "user.name": decision.approver,
        "source.ip": decision.address if decision.address != "cli" else None,
        "citygate.request.stage": decision.stage,
        "citygate.request.stage_name": stage,
        "citygate.request.method": decision.method,
        "citygate.request.reason": decision.reason or None,
        "citygate.request.delegated_by": decision.delegated_by,
        "citygate.request.status": request.status.value,
        "citygate.grant.id": request.grant_id,
    }
    if decision.narrowed is not None:  # what was allowed, where it is less than was asked
        record |= {
            "citygate.request.allowed_sites": list(decision.narrowed.sites),
            "citygate.request.allowed_until": decision.narrowed.until.isoformat(),
            "citygate.request.allowed_pages": {
                site: list(pages) for site, pages in decision.narrowed.paths.items()
            },
        }
    return {key: value for key, value in record.items() if value is not None}


def refusal_record(
    request: AccessRequest, uid: str, method: str, address: str, why: str, at: datetime
) -> dict[str, object]:
    """Someone tried to decide a request they may not decide."""
    record = _about(request, "access-request-decision-refused", at)
    record |= {
        "event.outcome": "failure",
        "event.reason": why,
        "user.name": uid,
        "citygate.request.method": method,
    }
    if address != "cli":
        record["source.ip"] = address
    return record


def time_record(request: AccessRequest, action: str, stage: str, at: datetime) -> dict[str, object]:
    """Time acted on a request: its stage escalated to the executives, or the request expired."""
    record = _about(request, f"access-request-{'escalated' if action == 'escalate' else 'expired'}", at)
    record |= {
        "event.outcome": "success",
        "citygate.request.stage_name": stage,
        "citygate.request.status": request.status.value,
    }
    return record


def _about(request: AccessRequest, action: str, at: datetime) -> dict[str, object]:
    return {
        "@timestamp": timestamp(at),
        "ecs.version": ECS_VERSION,
        "event.kind": "event",
        "event.category": [CATEGORY],
        "event.action": action,
        "citygate.request.id": request.id,
        "user.target.name": request.employee,
        "citygate.request.department": request.department,
        "citygate.request.sites": list(request.sites),
    }
