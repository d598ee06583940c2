"""decide for grants that are not one person's: groups, departments, the whole city, personal use.

As in test_decision.py, people are built here, so each case states the directory facts it
rests on; `groups` is what the shell fetched about group grants' groups (their members'
departments), absent when the directory could not be asked.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from citygate.directory.model import AccountState, Person
from citygate.proxy.decision import (
    Identity,
    Reason,
    Result,
    approval_problem,
    decide,
    facts_needed,
    people_involved,
    sites_named,
)
from citygate.proxy.grants import GrantKind, PurposeKind

LA = ZoneInfo("America/Los_Angeles")
MONDAY_10 = datetime(2026, 6, 15, 10, 0, tzinfo=LA)
MONDAY_1230 = datetime(2026, 6, 15, 12, 30, tzinfo=LA)
MONDAY_14 = datetime(2026, 6, 15, 14, 0, tzinfo=LA)

DIRECTORS, EXECUTIVES = frozenset({"directors"}), frozenset({"city-managers"})
ANA = Person("ahernandez", "Ana Hernandez", "Parks", "Director of Parks", DIRECTORS)
RAVI = Person("rpatel", "Ravi Patel", "Communications", "Director of Communications", DIRECTORS)
TAYLOR = Person("tsmith", "Taylor Smith", "City Manager", "City Manager", EXECUTIVES)
TEAM = frozenset({"parks-social-team"})
JLEE = Person("jlee", "Jordan Lee", "Parks", "Social Media Coordinator", TEAM)
MINH = Person("mnguyen", "Minh Nguyen", "Parks", "Recreation Specialist")
KIM = Person("kwilliams", "Kim Williams", "Communications", "Public Information Officer")
PEOPLE = {p.uid: p for p in (ANA, RAVI, TAYLOR, JLEE, MINH, KIM)}
PARKS_ONLY = {"parks-social-team": frozenset({"Parks"})}
MIXED = {"parks-social-team": frozenset({"Parks", "Communications"})}


def grant(gid: str = "g1", *, approved_by: str = "ahernandez", sites=("facebook",), **whom: object) -> dict:
    return {
        "id": gid,
        **whom,
        "sites": list(sites),
        "purpose": "Post park news",
        "approved_by": approved_by,
        "approved_on": "2026-01-12",
        "expires": "2026-12-31",
    }


GROUP = grant(group="Parks-Social-Team")
CITY_PAGES = grant(
    "city", approved_by="tsmith", sites=("youtube",), city=True, paths={"youtube": ["/CityOfExample"]}
)
LUNCH = grant(
    "lunch",
    approved_by="tsmith",
    sites=("facebook",),
    city=True,
    hours="Mon-Fri 12:00-13:00",
    purpose_kind="personal",
)


def decided(
    policy_files, grants, user, host="www.facebook.com", path="/", at=MONDAY_10, groups=None, **people
):
    policy = policy_files.load(grants)
    everyone = {**PEOPLE, **people}
    identity = Identity(user, "basic") if user else None
    facts = {uid: everyone.get(uid) for uid in people_involved(policy, user, [host])}
    if user and everyone.get(user):
        needed = facts_needed(policy, everyone[user], sites_named(policy, [host]))
        facts |= {uid: everyone.get(uid) for uid in needed.approvers}
    return decide(identity, host, path, at, policy, facts, PARKS_ONLY if groups is None else groups)


# --------------------------------------------------------------------------------------- groups


def test_a_member_of_a_granted_group_passes_and_the_decision_names_the_group_grant(policy_files):
    decision = decided(policy_files, [GROUP], "jlee")

    assert (decision.result, decision.reason) == (Result.ALLOW, Reason.GRANTED)
    assert decision.grant.kind is GrantKind.GROUP and decision.grant.whom == "group parks-social-team"
    assert decision.to_dict()["grant"]["kind"] == "group"
    assert decision.evidence.approver == "ahernandez"


def test_membership_is_the_directory_s_answer_of_the_moment(policy_files):
    # The same person, no longer in the group (the directory's next answer): no grant.
    former = Person("jlee", "Jordan Lee", "Parks", "Social Media Coordinator", frozenset())
    decision = decided(policy_files, [GROUP], "jlee", jlee=former)
    assert (decision.result, decision.reason) == (Result.DENY, Reason.NO_GRANT)


def test_a_non_member_is_denied_no_grant(policy_files):
    assert decided(policy_files, [GROUP], "mnguyen").reason is Reason.NO_GRANT


def test_a_group_grant_approved_by_a_director_of_another_department_is_refused(policy_files):
    decision = decided(policy_files, [grant(group="parks-social-team", approved_by="rpatel")], "jlee")

    assert (decision.result, decision.reason) == (Result.DENY, Reason.APPROVER_NOT_AUTHORIZED)
    assert (
        decision.evidence.detail == "the approver directs Communications, not Parks (group parks-social-team)"
    )


def test_a_group_across_departments_needs_an_executive(policy_files):
    by_director = decided(policy_files, [GROUP], "jlee", groups=MIXED)
    by_executive = decided(
        policy_files, [grant(group="parks-social-team", approved_by="tsmith")], "jlee", groups=MIXED
    )

    assert by_director.reason is Reason.APPROVER_NOT_AUTHORIZED
    assert "spans Communications, Parks: a group across departments needs an executive's approval" in (
        by_director.evidence.detail
    )
    assert by_executive.reason is Reason.GRANTED


def test_a_group_the_directory_could_not_list_fails_closed(policy_files):
    decision = decided(policy_files, [GROUP], "jlee", groups={})

    assert (decision.result, decision.reason) == (Result.DENY, Reason.DIRECTORY_UNAVAILABLE)
    assert "group parks-social-team" in decision.evidence.detail


def test_a_group_named_by_its_dn_is_matched_by_its_cn(policy_files):
    by_dn = grant(group="cn=Parks-Social-Team,ou=groups,dc=city,dc=example")
    assert decided(policy_files, [by_dn], "jlee").reason is Reason.GRANTED


def test_the_approver_using_their_own_group_grant_is_self_approval(policy_files):
    ana = Person("ahernandez", "Ana Hernandez", "Parks", "Director of Parks", DIRECTORS | TEAM)
    assert decided(policy_files, [GROUP], "ahernandez", ahernandez=ana).reason is Reason.SELF_APPROVAL


def test_a_disabled_member_gets_nothing(policy_files):
    gone = Person("jlee", "Jordan Lee", "Parks", "Coordinator", TEAM, state=AccountState.DISABLED)
    assert decided(policy_files, [GROUP], "jlee", jlee=gone).reason is Reason.EMPLOYEE_DISABLED


# ---------------------------------------------------------------------------------- departments


def test_a_department_grant_covers_its_department_case_insensitively(policy_files):
    parks = grant(department="parks")

    assert decided(policy_files, [parks], "mnguyen").reason is Reason.GRANTED
    assert decided(policy_files, [parks], "kwilliams").reason is Reason.NO_GRANT


def test_a_department_grant_needs_that_department_s_director_or_an_executive(policy_files):
    by_other = decided(policy_files, [grant(department="Parks", approved_by="rpatel")], "mnguyen")
    by_executive = decided(policy_files, [grant(department="Parks", approved_by="tsmith")], "mnguyen")

    assert by_other.reason is Reason.APPROVER_NOT_AUTHORIZED
    assert by_other.evidence.detail == "the approver directs Communications, not Parks"
    assert by_executive.reason is Reason.GRANTED


# ----------------------------------------------------------------------------------- city-wide


def test_a_city_page_passes_without_sign_in_and_the_rest_of_the_site_asks_for_it(policy_files):
    page = decided(policy_files, [CITY_PAGES], None, host="www.youtube.com", path="/CityOfExample/videos")
    other = decided(policy_files, [CITY_PAGES], None, host="www.youtube.com", path="/somethingelse")
    tunnel = decided(policy_files, [CITY_PAGES], None, host="www.youtube.com", path=None)

    assert (page.result, page.reason, page.grant.id) == (Result.ALLOW, Reason.GRANTED, "city")
    assert page.evidence.employee is None and page.evidence.approver == "tsmith"
    assert (other.result, other.reason) == (Result.AUTH_REQUIRED, Reason.CREDENTIALS_REQUIRED)
    assert (tunnel.result, tunnel.needs_path) == (Result.ALLOW, True)  # decided again inside


def test_outside_the_city_pages_someone_without_a_grant_is_told_they_have_none(policy_files):
    decision = decided(policy_files, [CITY_PAGES], "mnguyen", host="www.youtube.com", path="/embed/x")

    assert (decision.result, decision.reason, decision.grant) == (Result.DENY, Reason.NO_GRANT, None)
    assert decision.evidence.detail == (
        "no grant for YouTube; /embed/x is outside /CityOfExample (the pages everyone may see)"
    )


def test_a_city_page_also_passes_for_someone_signed_in_without_a_grant(policy_files):
    decision = decided(policy_files, [CITY_PAGES], "mnguyen", host="www.youtube.com", path="/CityOfExample")
    assert (decision.reason, decision.grant.kind) == (Reason.GRANTED, GrantKind.CITY)


def test_a_city_allowance_approved_by_a_director_lets_nobody_through(policy_files):
    by_director = grant("city", sites=("youtube",), city=True, paths={"youtube": ["/CityOfExample"]})

    unsigned = decided(policy_files, [by_director], None, host="www.youtube.com", path="/CityOfExample")
    signed = decided(policy_files, [by_director], "jlee", host="www.youtube.com", path="/CityOfExample")

    assert unsigned.result is Result.AUTH_REQUIRED
    assert signed.reason is Reason.APPROVER_NOT_AUTHORIZED
    assert "must be approved by an executive" in signed.evidence.detail


# --------------------------------------------------------------------------- personal-use windows


def test_a_lunch_window_passes_at_1230_and_is_refused_at_14_for_a_signed_in_employee(policy_files):
    lunch = decided(policy_files, [LUNCH], "mnguyen", at=MONDAY_1230)
    afternoon = decided(policy_files, [LUNCH], "mnguyen", at=MONDAY_14)

    assert (lunch.result, lunch.grant.purpose_kind) == (Result.ALLOW, PurposeKind.PERSONAL)
    assert lunch.evidence.employee == "mnguyen"  # the log records who used it
    assert (afternoon.result, afternoon.reason) == (Result.DENY, Reason.OUTSIDE_HOURS)
    assert "access resumes Tue 2026-06-16 12:00" in afternoon.evidence.detail


def test_a_whole_site_window_still_asks_who_is_using_it(policy_files):
    decision = decided(policy_files, [LUNCH], None, at=MONDAY_1230)
    assert (decision.result, decision.reason) == (Result.AUTH_REQUIRED, Reason.CREDENTIALS_REQUIRED)


def test_a_personal_use_window_needs_an_executive(policy_files):
    by_director = grant("lunch", department="Parks", hours="Mon-Fri 12:00-13:00", purpose_kind="personal")
    decision = decided(policy_files, [by_director], "mnguyen", at=MONDAY_1230)
    assert decision.reason is Reason.APPROVER_NOT_AUTHORIZED
    assert "a personal-use allowance must be approved by an executive" in decision.evidence.detail


# ---------------------------------------------------------------------- what the shell must fetch


def test_facts_needed_names_the_approvers_and_groups_of_the_grants_that_apply(policy_files):
    policy = policy_files.load([GROUP, grant("dept", department="Parks", approved_by="tsmith"), CITY_PAGES])

    facts = facts_needed(policy, JLEE, ["facebook"])

    assert facts.approvers == {"ahernandez", "tsmith"}
    assert facts.groups == {"parks-social-team"}
    assert people_involved(policy, None, ["www.youtube.com"]) == {"tsmith"}  # city approvers first


def test_shared_grants_follow_the_directory_answer_not_what_was_remembered(policy_files):
    # Remembered per set of groups: a new answer (jlee left the team) is another key, not a stale hit.
    policy = policy_files.load([GROUP])
    assert [g.id for g in policy.grants_applying(JLEE, "facebook")] == ["g1"]

    left_the_team = Person("jlee", "Jordan Lee", "Parks", "Social Media Coordinator")
    assert policy.grants_applying(left_the_team, "facebook") == ()
    assert facts_needed(policy, left_the_team, ["facebook"]).approvers == frozenset()
    assert [g.id for g in policy.grants_applying(JLEE, "facebook")] == ["g1"]


def test_department_and_group_grants_for_one_site_are_both_found_department_first(policy_files):
    policy = policy_files.load(
        [
            grant("team-b", group="parks-events"),
            GROUP,
            grant("dept", department="parks", approved_by="tsmith"),
        ]
    )
    in_two_teams = Person("jlee", "Jordan Lee", "Parks", None, TEAM | {"parks-events"})

    applying = policy.grants_applying(in_two_teams, "facebook")

    # The department's, then the groups' in name order: not in the order a set happens to iterate.
    assert [g.id for g in applying] == ["dept", "team-b", "g1"]
    facts = facts_needed(policy, in_two_teams, ["facebook"])
    assert facts.approvers == {"ahernandez", "tsmith"}
    assert facts.groups == {"parks-events", "parks-social-team"}
    assert policy.grants_applying(MINH, "facebook") == tuple(g for g in applying if g.id == "dept")


def test_a_full_memory_of_shared_grants_starts_afresh_and_answers_alike(policy_files, monkeypatch):
    monkeypatch.setattr("citygate.proxy.policy._KINDS_REMEMBERED", 2)
    policy = policy_files.load([GROUP, grant("other", group="other-team", sites=("instagram",))])
    kinds = [Person(f"p{n}", "P", "Parks", None, TEAM | {f"extra-{n}"}) for n in range(5)]

    for _ in range(2):
        for person in kinds:
            assert [g.id for g in policy.grants_applying(person, "facebook")] == ["g1"]
            assert policy.grants_applying(person, "instagram") == ()


def test_approval_problem_judges_a_grant_whoever_uses_it(policy_files):
    policy = policy_files.load([GROUP])
    [group_grant] = policy.grants

    assert approval_problem(group_grant, policy, {"ahernandez": ANA}, PARKS_ONLY, MONDAY_10) is None
    reason, detail = approval_problem(group_grant, policy, {"ahernandez": ANA}, MIXED, MONDAY_10)
    assert reason is Reason.APPROVER_NOT_AUTHORIZED and "spans" in detail
