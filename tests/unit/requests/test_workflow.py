"""Deciding a request end to end, on the demo city: authority from the directory (its LDIF, read
by the static backend), the decision saved in a real SQLite store, the grant written into the
department's file, evidence recorded; then the proxy's own decision lets the employee in."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from citygate.directory.backends import open_directory
from citygate.proxy.decision import Identity, Reason, decide_request, facts_needed, people_involved
from citygate.proxy.policy import load_policy
from citygate.proxy.requests.form import Draft
from citygate.proxy.requests.model import Status
from citygate.proxy.requests.store import RequestStore
from citygate.proxy.requests.workflow import Approver, Decided, NotDecided, advance, decide

REPO = Path(__file__).resolve().parents[3]
LA = ZoneInfo("America/Los_Angeles")
NOW = datetime.now(LA)
CAMP = Draft(("instagram",), "Post the summer camp schedule", NOW.date() + timedelta(days=60))


@pytest.fixture
def city(tmp_path: Path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "directory", tmp_path / "directory")
    config = tmp_path / "config" / "citygate.yaml"
    policy = load_policy(config)
    directory = open_directory(policy.directory, str(config))
    store = RequestStore(f"sqlite:///{tmp_path / 'requests.sqlite'}")
    store.migrate()
    records: list[dict] = []
    minh = directory.lookup("mnguyen")
    request = store.submit(minh, CAMP, NOW - timedelta(hours=2))

    def decided(uid: str, approved: bool = True, reason: str = ""):
        return decide(
            store=store,
            policy=load_policy(config),
            config_path=config,
            directory=directory,
            request_id=request.id,
            approver=Approver(uid, "basic", "10.0.0.7"),
            approved=approved,
            reason=reason,
            now=NOW,
            record=records.append,
        )

    yield config, store, request, records, decided, directory
    store.close()


def test_the_employees_director_approves_and_the_proxy_then_lets_them_in(city):
    config, store, request, records, decided, directory = city

    outcome = decided("ahernandez")

    assert isinstance(outcome, Decided)
    assert outcome.request.status is Status.APPROVED and outcome.grant_file.name == "parks.yaml"
    assert store.get(request.id).grant_id == "grant-" + request.id.removeprefix("req-")
    policy = load_policy(config)
    grant = {g.id: g for g in policy.grants}[outcome.request.grant_id]
    assert (
        grant.employee,
        grant.approved_by,
        grant.request_id,
        grant.expires if hasattr(grant, "expires") else None,
    )[:3] == (
        "mnguyen",
        "ahernandez",
        request.id,
    )
    [evidence] = records
    assert evidence["event.action"] == "access-request-approved"
    assert (evidence["user.name"], evidence["citygate.request.method"], evidence["source.ip"]) == (
        "ahernandez",
        "basic",
        "10.0.0.7",
    )
    # The proxy's own decision, on the same directory: mnguyen now reaches Instagram.
    hosts = ["www.instagram.com"]
    people = {uid: directory.lookup(uid) for uid in people_involved(policy, "mnguyen", hosts)}
    people |= {
        uid: directory.lookup(uid) for uid in facts_needed(policy, people["mnguyen"], ["instagram"]).approvers
    }
    decision = decide_request(Identity("mnguyen", "basic"), hosts, "/", NOW, policy, people)
    assert decision.reason is Reason.GRANTED and decision.grant.request_id == request.id


@pytest.mark.parametrize(
    ("uid", "why"),
    [
        ("rpatel", "you direct Communications, not Parks's department"),
        ("jlee", "only a Director of the employee's department, their designee or an executive decides"),
        ("mnguyen", "nobody decides their own request"),
        ("ghost", "you are not in the directory"),
    ],
)
def test_nobody_else_decides_and_each_attempt_is_evidence(city, uid, why):
    config, store, request, records, decided, _ = city
    parks = (config.parent / "grants" / "parks.yaml").read_bytes()

    assert decided(uid) == NotDecided(why)

    assert store.get(request.id).status is Status.PENDING
    assert (config.parent / "grants" / "parks.yaml").read_bytes() == parks
    [evidence] = records
    assert (evidence["event.action"], evidence["event.outcome"], evidence["user.name"]) == (
        "access-request-decision-refused",
        "failure",
        uid,
    )


def test_an_executive_may_deny_but_must_say_why(city):
    _, store, request, records, decided, _ = city

    assert decided("tsmith", approved=False) == NotDecided(
        "say why the request is denied: the employee is told"
    )
    outcome = decided("tsmith", approved=False, reason="Use the Parks page on Facebook instead")
    assert isinstance(outcome, Decided) and outcome.grant_file is None
    assert store.get(request.id).status is Status.DENIED
    assert records[-1]["citygate.request.reason"] == "Use the Parks page on Facebook instead"
    assert decided("ahernandez") == NotDecided(f"{request.id} is already denied")


def test_an_approval_whose_grant_would_not_load_is_not_saved(city):
    config, store, request, records, decided, _ = city
    taken = "grant-" + request.id.removeprefix("req-")
    police = config.parent / "grants" / "police.yaml"
    police.write_text(police.read_text().replace("id: police-2026-001", f"id: {taken}"))

    outcome = decided("ahernandez")

    assert isinstance(outcome, NotDecided)
    assert f'grant id "{taken}" is already used' in outcome.why
    assert store.get(request.id).status is Status.PENDING
    assert records == []


def test_a_stale_request_escalates_then_expires_by_the_configured_business_days(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "directory", tmp_path / "directory")
    config = tmp_path / "config" / "citygate.yaml"
    demo = config.read_text()
    config.write_text(
        demo[: demo.index("\nrequests:\n")]  # the demo's section, replaced
        + "\nrequests:\n  enabled: true\n  expire_after_business_days: 10\n"
        + "  stages: [{name: Department Director, approvers: department-directors, escalate_after_business_days: 3}]\n"
    )
    policy = load_policy(config)
    store = RequestStore(f"sqlite:///{tmp_path / 'requests.sqlite'}")
    store.migrate()
    monday = datetime(2026, 6, 15, 9, 0, tzinfo=LA)
    directory = open_directory(policy.directory, str(config))
    request = store.submit(directory.lookup("mnguyen"), CAMP, monday)
    records: list[dict] = []

    def advanced(at: datetime):
        done = advance(store=store, policy=policy, directory=directory, now=at, record=records.append)
        return [(r.id, action.value) for r, action in done]

    assert advanced(datetime(2026, 6, 17, 17, 0, tzinfo=LA)) == []  # Wednesday: 2 business days
    assert advanced(datetime(2026, 6, 18, 8, 0, tzinfo=LA)) == [(request.id, "escalate")]  # Thursday: 3
    assert store.get(request.id).escalated
    assert advanced(datetime(2026, 6, 18, 9, 0, tzinfo=LA)) == []  # escalated once
    assert advanced(datetime(2026, 6, 26, 8, 0, tzinfo=LA)) == []  # 9 business days
    assert advanced(datetime(2026, 6, 29, 8, 0, tzinfo=LA)) == [(request.id, "expire")]  # 10
    assert store.get(request.id).status is Status.EXPIRED
    assert [r["event.action"] for r in records] == ["access-request-escalated", "access-request-expired"]
    assert (
        store.submit(directory.lookup("mnguyen"), CAMP, datetime(2026, 6, 29, 9, 0, tzinfo=LA)).id
        != request.id
    )  # the site is free
    store.close()
