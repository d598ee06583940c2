"""How the core decides for identities from tokens and source addresses (demo config and directory)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from citygate.directory.static import StaticDirectory
from citygate.proxy.decision import Identity, Reason, Result, decide_request, people_involved
from citygate.proxy.policy import load_policy

REPO = Path(__file__).resolve().parents[2]
AT = datetime(2026, 6, 15, 12, tzinfo=ZoneInfo("America/Los_Angeles"))


@pytest.fixture(scope="module")
def demo():
    policy = load_policy(REPO / "config" / "citygate.yaml")
    directory = StaticDirectory.from_ldif(REPO / "directory" / "demo.ldif")
    return policy, directory


def decide_for(
    demo,
    identity: Identity | None,
    url_host: str = "www.facebook.com",
    path: str | None = "/CityOfExampleParks",
):
    policy, directory = demo
    user = identity.user if identity and identity.authenticated and not identity.shared_role else None
    people = {uid: directory.lookup(uid) for uid in people_involved(policy, user, [url_host])}
    return decide_request(identity, [url_host], path, AT, policy, people)


@pytest.mark.parametrize("method", ["basic", "bearer", "source_ip"])
def test_every_identity_method_reaches_the_evidence(demo, method):
    decision = decide_for(demo, Identity("jlee", method))
    assert (decision.result, decision.reason) == (Result.ALLOW, Reason.GRANTED)
    assert decision.evidence.identity_method == method
    assert decision.to_dict()["evidence"]["identity_method"] == method


def test_a_rejected_token_asks_again_and_says_why(demo):
    decision = decide_for(
        demo, Identity("", "bearer", False, problem="token expired at 2026-06-15T18:00:00Z")
    )
    assert (decision.result, decision.reason) == (Result.AUTH_REQUIRED, Reason.CREDENTIALS_INVALID)
    assert decision.evidence.detail == "token expired at 2026-06-15T18:00:00Z"
    assert decision.evidence.identity_method == "bearer"


def test_unreachable_token_keys_refuse_like_an_unreachable_directory(demo):
    problem = "the signing keys at https://sso.example.gov/certs could not be fetched (timed out)"
    decision = decide_for(demo, Identity("", "bearer", None, problem=problem))
    assert (decision.result, decision.reason) == (Result.DENY, Reason.DIRECTORY_UNAVAILABLE)
    assert decision.evidence.detail == problem


def test_a_valid_token_for_an_unknown_or_disabled_account_is_refused(demo):
    assert decide_for(demo, Identity("nobody", "bearer")).reason is Reason.UNKNOWN_EMPLOYEE
    assert decide_for(demo, Identity("bjones", "bearer")).reason is Reason.EMPLOYEE_DISABLED


def test_a_shared_role_never_holds_a_grant(demo):
    """Even a role named like an employee with a grant (jlee) gets no grant: roles are not people."""
    for role in ("library-kiosk", "jlee"):
        decision = decide_for(demo, Identity(role, "source_ip", shared_role=True))
        assert (decision.result, decision.reason) == (Result.DENY, Reason.NO_GRANT)
        assert decision.grant is None
        assert decision.evidence.employee_department is None
        assert (
            decision.evidence.detail
            == f"{role} is a shared device role, not an employee; grants are for named employees"
        )


def test_a_shared_role_passes_ordinary_traffic(demo):
    decision = decide_for(
        demo, Identity("library-kiosk", "source_ip", shared_role=True), "www.example.org", "/"
    )
    assert (decision.result, decision.reason) == (Result.ALLOW, Reason.NOT_SOCIAL_MEDIA)
