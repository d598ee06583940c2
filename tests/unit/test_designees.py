"""Designees: approving in a Director's stead while the delegation holds, checked live."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from citygate.directory.model import AccountState, Person
from citygate.proxy.decision import (
    Identity,
    Reason,
    Result,
    decide,
    facts_needed,
    people_involved,
    sites_named,
)

LA = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 6, 15, 10, 0, tzinfo=LA)
DIRECTORS, EXECUTIVES = frozenset({"directors"}), frozenset({"city-managers"})
ANA = Person("ahernandez", "Ana Hernandez", "Parks", "Director of Parks", DIRECTORS)
DEPUTY = Person("dlopez", "Dana Lopez", "Parks", "Deputy Director of Parks")
JLEE = Person("jlee", "Jordan Lee", "Parks", "Social Media Coordinator")
KIM = Person("kwilliams", "Kim Williams", "Communications", "Public Information Officer")
TAYLOR = Person("tsmith", "Taylor Smith", "City Manager", "City Manager", EXECUTIVES)
PEOPLE = {p.uid: p for p in (ANA, DEPUTY, JLEE, KIM, TAYLOR)}


def grant(employee: str = "jlee", approved_by: str = "dlopez", sites=("facebook",), **extra) -> dict:
    return {
        "id": f"g-{employee}",
        "employee": employee,
        "sites": list(sites),
        "purpose": "Post park news",
        "approved_by": approved_by,
        "approved_on": "2026-01-12",
        "expires": "2026-12-31",
        **extra,
    }


def grant_file(*grants: dict, designees: str = "  - {designee: dlopez, director: ahernandez}\n") -> str:
    return (
        "department: Parks\ndesignees:\n"
        + designees
        + yaml.safe_dump({"grants": list(grants)}, sort_keys=False)
    )


def decided(
    policy_files, text: str, user: str = "jlee", at: datetime = NOW, host="www.facebook.com", **people
):
    policy = policy_files.load({"parks.yaml": text})
    everyone = {**PEOPLE, **people}
    facts = {uid: everyone.get(uid) for uid in people_involved(policy, user, [host])}
    facts |= {
        uid: everyone.get(uid)
        for uid in facts_needed(policy, everyone[user], sites_named(policy, [host])).approvers
    }
    return decide(Identity(user, "basic"), host, None, at, policy, facts)


def test_a_designee_s_approval_works_and_the_evidence_names_both(policy_files):
    decision = decided(policy_files, grant_file(grant()))

    assert (decision.result, decision.reason) == (Result.ALLOW, Reason.GRANTED)
    assert (decision.evidence.approver, decision.evidence.approver_role) == ("dlopez", "designee")
    assert decision.evidence.delegated_by == "ahernandez"


def test_it_stops_when_the_director_loses_the_role(policy_files):
    demoted = Person("ahernandez", "Ana Hernandez", "Parks", "Former Director", frozenset())

    decision = decided(policy_files, grant_file(grant()), ahernandez=demoted)

    assert (decision.result, decision.reason) == (Result.DENY, Reason.APPROVER_NOT_AUTHORIZED)
    assert (
        decision.evidence.detail
        == "ahernandez no longer holds a Director's role, so their delegation to dlopez is void"
    )


def test_it_stops_when_the_director_leaves(policy_files):
    gone = Person("ahernandez", "Ana Hernandez", "Parks", "Director", DIRECTORS, state=AccountState.DISABLED)
    decision = decided(policy_files, grant_file(grant()), ahernandez=gone)
    assert decision.reason is Reason.APPROVER_NOT_AUTHORIZED
    assert "as designee of ahernandez: the approver's account is disabled" in decision.evidence.detail


def test_it_stops_when_the_delegation_expires(policy_files):
    text = grant_file(
        grant(), designees="  - {designee: dlopez, director: ahernandez, expires: 2026-06-14}\n"
    )

    decision = decided(policy_files, text)

    assert decision.reason is Reason.APPROVER_NOT_AUTHORIZED
    assert decision.evidence.detail == "dlopez's delegation has ended or does not cover this site"


def test_a_delegation_limited_to_some_sites_covers_only_them(policy_files):
    text = grant_file(
        grant(sites=("facebook", "youtube")),
        designees="  - {designee: dlopez, director: ahernandez, sites: [youtube]}\n",
    )
    assert decided(policy_files, text, host="www.youtube.com").reason is Reason.GRANTED
    assert decided(policy_files, text, host="www.facebook.com").reason is Reason.APPROVER_NOT_AUTHORIZED


def test_a_designee_approving_their_own_grant_is_self_approval(policy_files):
    assert decided(policy_files, grant_file(grant("dlopez")), user="dlopez").reason is Reason.SELF_APPROVAL


def test_a_designee_approves_only_what_their_director_could(policy_files):
    decision = decided(policy_files, grant_file(grant("kwilliams")), user="kwilliams")
    assert decision.reason is Reason.APPROVER_NOT_AUTHORIZED
    assert (
        decision.evidence.detail
        == "as designee of ahernandez: the approver directs Parks, not Communications's department"
    )


def test_a_designee_never_approves_a_city_wide_allowance(policy_files):
    city = grant(approved_by="dlopez")
    del city["employee"]
    city |= {"city": True, "paths": {"facebook": ["/CityOfExample"]}}
    decision = decided(policy_files, grant_file(city), host="www.facebook.com")
    assert decision.reason is Reason.APPROVER_NOT_AUTHORIZED
    assert decision.evidence.detail == (
        "only an executive (a City Manager) approves city-wide and personal-use allowances, not a designee"
    )


@pytest.mark.parametrize(
    ("designees", "message"),
    [
        ("  - {designee: dlopez}\n", 'designee is missing "director"'),
        ("  - {designee: ahernandez, director: ahernandez}\n", "a Director cannot be their own designee"),
        ("  - {designee: dlopez, director: ahernandez, sites: [facebok]}\n", 'unknown site "facebok"'),
        (
            "  - {designee: dlopez, director: ahernandez, until: 2026-12-31}\n",
            'unknown key "until" in a designee',
        ),
        ("  - {designee: dlopez, director: ahernandez, expires: soon}\n", "expires 'soon' is not a date"),
        (
            "  - {designee: dlopez, director: ahernandez}\n  - {designee: jlee, director: dlopez}\n",
            "dlopez is a designee and cannot name designees of their own",
        ),
    ],
)
def test_designee_mistakes_name_the_file_and_line(policy_files, designees, message):
    problems = policy_files.problems({"parks.yaml": grant_file(grant(), designees=designees)})
    found = [p for p in problems if message in p.message]
    assert found, [str(p) for p in problems]
    assert found[0].path == policy_files.grants_dir / "parks.yaml" and found[0].line >= 3
