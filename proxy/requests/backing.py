"""Which grants a recorded approval backs: `citygate check` with `requests.recorded_approvals`.

A grant written by an approval carries its request id; the request store holds who approved
it, how they signed in and what exactly they approved. A grant without one, or whose file entry
no longer matches what was approved (someone edited the sites, the dates or the approver by
hand), is named here. Pure: the caller reads the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from citygate.proxy.grants import Grant, GrantKind
from citygate.proxy.requests.config import RequestSettings
from citygate.proxy.requests.model import AccessRequest, Status


def unbacked(
    grants: Iterable[Grant], requests: Mapping[str, AccessRequest], settings: RequestSettings
) -> list[tuple[Grant, str]]:
    """Each grant no recorded approval backs, with why. `requests` holds the requests the grants
    name (absent: not in the store)."""
    found = []
    for grant in grants:
        why = _why_unbacked(grant, requests, settings)
        if why is not None:
            found.append((grant, why))
    return found


def _why_unbacked(
    grant: Grant, requests: Mapping[str, AccessRequest], settings: RequestSettings
) -> str | None:
    if grant.request_id is None:
        return "no recorded approval backs it (written by hand, without request:)"
    request = requests.get(grant.request_id)
    if request is None:
        return f"its request {grant.request_id} is not in the request store"
    if request.status is not Status.APPROVED or request.grant_id != grant.id:
        return f"its request {request.id} is {request.status.value}, and approved no grant {grant.id}"
    directors = next((i for i, stage in enumerate(settings.stages) if stage.by_directors), None)
    approvers = {d.approver for d in request.decisions if d.approved and d.stage == directors}
    differences = [
        what
        for what, differs in (
            ("whom it is for", grant.kind is not GrantKind.PERSONAL or grant.employee != request.employee),
            ("sites", set(grant.sites) != set(request.sites)),
            ("pages", {s: tuple(p) for s, p in grant.paths.items()} != dict(request.paths)),
            ("purpose", grant.purpose != request.purpose),
            ("approver", grant.approved_by not in approvers),
            ("end date", grant.valid_until.date().toordinal() - 1 != request.until.toordinal()),
        )
        if differs
    ]
    if differences:
        return f"its file entry differs from what request {request.id} approved: {', '.join(differences)}"
    return None
