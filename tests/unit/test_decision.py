"""decide / decide_request: one row per reason, live directory facts, and several grants at once.

People are built here as `Person` objects (not read from demo.ldif), so each row states exactly
the directory facts the decision rests on. Times are aware datetimes in the city's timezone.
"""

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from citygate.directory.model import AccountState, Person
from citygate.proxy.decision import (
    Decision,
    Evidence,
    Identity,
    Reason,
    Result,
    decide,
    decide_request,
    people_involved,
)
from citygate.proxy.wording import PLAIN_REASONS, plain_reason

LA = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 6, 15, 10, 0, tzinfo=LA)

DIRECTORS = frozenset({"directors"})
ANA = Person("ahernandez", "Ana Hernandez", "Parks", "Director of Parks", DIRECTORS)
JLEE = Person("jlee", "Jordan Lee", "Parks", "Social Media Coordinator")
MINH = Person("mnguyen", "Minh Nguyen", "Parks", "Recreation Specialist")
RAVI = Person("rpatel", "Ravi Patel", "Communications", "Director of Communications", DIRECTORS)
TAYLOR = Person("tsmith", "Taylor Smith", "City Manager", "City Manager", frozenset({"city-managers"}))
PEOPLE = {p.uid: p for p in (ANA, JLEE, MINH, RAVI, TAYLOR)}

JLEE_ID = Identity("jlee", "basic")
ABSENT = object()  # the directory could not be asked about this uid


def grant(
    gid: str = "g1",
    *,
    employee: str = "jlee",
    sites: tuple[str, ...] = ("facebook",),
    approved_by: str = "ahernandez",
    approved_on: str = "2026-01-12",
    expires: str = "2026-12-31",
    **extra: object,
) -> dict:
    return {
        "id": gid,
        "employee": employee,
        "sites": list(sites),
        "purpose": "Post park closures",
        "approved_by": approved_by,
        "approved_on": approved_on,
        "expires": expires,
        **extra,
    }


SCOPED = {"paths": {"facebook": ["/FresnoParks"]}}


def people_with(**changes: object) -> dict[str, Person | None]:
    """PEOPLE with some uids replaced (a Person), unknown (None) or unanswered (ABSENT)."""
    people = dict(PEOPLE)
    for uid, value in changes.items():
        if value is ABSENT:
            people.pop(uid, None)
        else:
            people[uid] = value
    return people


@dataclass
class Case:
    expect: tuple[Result, Reason]
    grants: list[dict] = field(default_factory=lambda: [grant()])
    identity: Identity | None = JLEE_ID
    host: str = "www.facebook.com"
    path: str | None = "/"
    at: datetime = NOW
    people: dict = field(default_factory=dict)
    needs_path: bool = False
    grant_id: str | None = None
    detail: str = ""


ALLOW, DENY, AUTH = Result.ALLOW, Result.DENY, Result.AUTH_REQUIRED

CASES = [
    pytest.param(
        Case((ALLOW, Reason.NOT_SOCIAL_MEDIA), identity=None, host="example.org"),
        id="not-social-anonymous",
    ),
    pytest.param(
        Case((ALLOW, Reason.NOT_SOCIAL_MEDIA), host="facebook.com.evil.example"),
        id="not-social-lookalike",
    ),
    pytest.param(
        Case((AUTH, Reason.CREDENTIALS_REQUIRED), identity=None),
        id="credentials-required",
    ),
    pytest.param(
        Case((AUTH, Reason.CREDENTIALS_REQUIRED), identity=None, host="157.240.1.35"),
        id="credentials-required-bare-ip",
    ),
    pytest.param(
        Case((AUTH, Reason.CREDENTIALS_INVALID), identity=Identity("jlee", "basic", False)),
        id="credentials-invalid",
    ),
    pytest.param(
        Case((ALLOW, Reason.GRANTED), grant_id="g1"),
        id="granted",
    ),
    pytest.param(
        Case((ALLOW, Reason.GRANTED), host="FaceBook.COM.:443", path=None, grant_id="g1"),
        id="granted-tunnel-odd-spelling",
    ),
    pytest.param(
        Case((DENY, Reason.NO_GRANT), identity=Identity("mnguyen", "basic")),
        id="no-grant-other-employee",
    ),
    pytest.param(
        Case((DENY, Reason.NO_GRANT), host="youtube.com"),
        id="no-grant-other-site",
    ),
    pytest.param(
        Case((DENY, Reason.GRANT_EXPIRED), at=datetime(2027, 1, 1, tzinfo=LA), grant_id="g1"),
        id="expired-local-midnight",
    ),
    pytest.param(
        Case((DENY, Reason.GRANT_EXPIRED), at=datetime(2027, 1, 1, 12, tzinfo=LA)),
        id="expired-day-after",
    ),
    pytest.param(
        Case((ALLOW, Reason.GRANTED), at=datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=LA)),
        id="last-day-last-microsecond",
    ),
    pytest.param(
        Case((ALLOW, Reason.GRANTED), at=datetime(2027, 1, 1, 7, 59, 59, tzinfo=UTC)),
        id="last-day-seen-from-utc",
    ),
    pytest.param(
        Case((DENY, Reason.GRANT_EXPIRED), at=datetime(2027, 1, 1, 8, 0, tzinfo=UTC)),
        id="expired-seen-from-utc",
    ),
    pytest.param(
        Case(
            (ALLOW, Reason.GRANTED),
            grants=[grant(expires="2026-07-31")],
            at=datetime(2026, 8, 1, 6, 59, 59, tzinfo=UTC),
        ),
        id="summer-last-second-pdt",
    ),
    pytest.param(
        Case(
            (DENY, Reason.GRANT_EXPIRED),
            grants=[grant(expires="2026-07-31")],
            at=datetime(2026, 8, 1, 7, 0, tzinfo=UTC),
        ),
        id="summer-expired-pdt",
    ),
    pytest.param(
        Case((DENY, Reason.GRANT_NOT_YET_VALID), grants=[grant(start="2026-07-01")]),
        id="not-yet-valid",
    ),
    pytest.param(
        Case(
            (DENY, Reason.GRANT_NOT_YET_VALID),
            grants=[grant(start="2026-07-01")],
            at=datetime(2026, 6, 30, 23, 59, 59, tzinfo=LA),
        ),
        id="not-yet-valid-eve",
    ),
    pytest.param(
        Case(
            (ALLOW, Reason.GRANTED),
            grants=[grant(start="2026-07-01")],
            at=datetime(2026, 7, 1, tzinfo=LA),
        ),
        id="start-day-midnight",
    ),
    pytest.param(
        Case(
            (DENY, Reason.GRANT_NOT_YET_VALID),
            at=datetime(2026, 1, 11, 23, 59, tzinfo=LA),
        ),
        id="before-approval-day",
    ),
    pytest.param(
        Case(
            (DENY, Reason.APPROVER_NOT_AUTHORIZED),
            people={"ahernandez": None},
            detail="not in the directory",
        ),
        id="approver-not-in-directory",
    ),
    pytest.param(
        Case(
            (DENY, Reason.APPROVER_NOT_AUTHORIZED),
            people={"ahernandez": replace(ANA, state=AccountState.DISABLED)},
            detail="disabled",
        ),
        id="approver-disabled",
    ),
    pytest.param(
        Case(
            (DENY, Reason.APPROVER_NOT_AUTHORIZED),
            people={"ahernandez": replace(ANA, state=AccountState.ACCOUNT_EXPIRED)},
            detail="disabled",
        ),
        id="approver-expired",
    ),
    pytest.param(
        # A director who mistyped a password (or must change it) is still a director.
        Case((ALLOW, Reason.GRANTED), people={"ahernandez": replace(ANA, state=AccountState.LOCKED)}),
        id="approver-locked-still-approves",
    ),
    pytest.param(
        Case(
            (DENY, Reason.APPROVER_NOT_AUTHORIZED),
            grants=[grant(approved_by="mnguyen")],
            detail="not a Director or higher",
        ),
        id="approver-not-a-director",
    ),
    pytest.param(
        Case(
            (DENY, Reason.APPROVER_NOT_AUTHORIZED),
            grants=[grant(approved_by="rpatel")],
            detail="directs Communications, not Parks",
        ),
        id="approver-director-of-other-department",
    ),
    pytest.param(
        Case(
            (DENY, Reason.APPROVER_NOT_AUTHORIZED),
            people={"tsmith": replace(TAYLOR, state=AccountState.DISABLED)},
            grants=[grant(approved_by="tsmith")],
            detail="disabled",
        ),
        id="executive-disabled",
    ),
    pytest.param(
        Case((ALLOW, Reason.GRANTED), grants=[grant(approved_by="tsmith")]),
        id="executive-of-other-department",
    ),
    pytest.param(
        Case((DENY, Reason.SELF_APPROVAL), grants=[grant(approved_by="jlee")]),
        id="self-approval",
    ),
    pytest.param(
        Case(
            (DENY, Reason.SELF_APPROVAL),
            grants=[grant(employee="ahernandez", approved_by="ahernandez")],
            identity=Identity("ahernandez", "basic"),
        ),
        id="director-self-approval",
    ),
    pytest.param(
        Case((DENY, Reason.EMPLOYEE_DISABLED), people={"jlee": replace(JLEE, state=AccountState.DISABLED)}),
        id="employee-disabled",
    ),
    pytest.param(
        Case((DENY, Reason.ACCOUNT_LOCKED), people={"jlee": replace(JLEE, state=AccountState.LOCKED)}),
        id="account_locked-from-the-directory",
    ),
    pytest.param(
        Case(
            (DENY, Reason.ACCOUNT_LOCKED),
            identity=Identity("jlee", "basic", False, state=AccountState.LOCKED),
            detail=AccountState.LOCKED.described,
        ),
        id="account_locked-from-the-bind",
    ),
    pytest.param(
        Case(
            (DENY, Reason.ACCOUNT_EXPIRED), people={"jlee": replace(JLEE, state=AccountState.ACCOUNT_EXPIRED)}
        ),
        id="account_expired-from-the-directory",
    ),
    pytest.param(
        Case(
            (DENY, Reason.ACCOUNT_EXPIRED),
            identity=Identity("jlee", "basic", False, state=AccountState.ACCOUNT_EXPIRED),
            detail=AccountState.ACCOUNT_EXPIRED.described,
        ),
        id="account_expired-from-the-bind",
    ),
    pytest.param(
        Case(
            (DENY, Reason.PASSWORD_EXPIRED),
            people={"jlee": replace(JLEE, state=AccountState.PASSWORD_EXPIRED)},
        ),
        id="password_expired-from-the-directory",
    ),
    pytest.param(
        Case(
            (DENY, Reason.PASSWORD_EXPIRED),
            identity=Identity("jlee", "basic", False, state=AccountState.PASSWORD_EXPIRED),
            detail=AccountState.PASSWORD_EXPIRED.described,
        ),
        id="password_expired-from-the-bind",
    ),
    pytest.param(
        Case(
            (DENY, Reason.PASSWORD_MUST_CHANGE),
            people={"jlee": replace(JLEE, state=AccountState.MUST_CHANGE_PASSWORD)},
        ),
        id="password_must_change-from-the-directory",
    ),
    pytest.param(
        Case(
            (DENY, Reason.PASSWORD_MUST_CHANGE),
            identity=Identity("jlee", "basic", False, state=AccountState.MUST_CHANGE_PASSWORD),
            detail=AccountState.MUST_CHANGE_PASSWORD.described,
        ),
        id="password_must_change-from-the-bind",
    ),
    pytest.param(
        Case(
            (DENY, Reason.LOGON_NOT_PERMITTED),
            people={"jlee": replace(JLEE, state=AccountState.NOT_PERMITTED_NOW)},
        ),
        id="logon_not_permitted-from-the-directory",
    ),
    pytest.param(
        Case(
            (DENY, Reason.LOGON_NOT_PERMITTED),
            identity=Identity("jlee", "basic", False, state=AccountState.NOT_PERMITTED_NOW),
            detail=AccountState.NOT_PERMITTED_NOW.described,
        ),
        id="logon_not_permitted-from-the-bind",
    ),
    pytest.param(
        Case((DENY, Reason.EMPLOYEE_DISABLED), people={"jlee": replace(JLEE, state=AccountState.DISABLED)}),
        id="employee_disabled-from-the-directory",
    ),
    pytest.param(
        Case(
            (DENY, Reason.EMPLOYEE_DISABLED),
            identity=Identity("jlee", "basic", False, state=AccountState.DISABLED),
            detail=AccountState.DISABLED.described,
        ),
        id="employee_disabled-from-the-bind",
    ),
    pytest.param(
        Case((DENY, Reason.UNKNOWN_EMPLOYEE), people={"jlee": None}),
        id="unknown-employee",
    ),
    pytest.param(
        Case((DENY, Reason.PATH_OUT_OF_SCOPE), grants=[grant(**SCOPED)], path="/evil"),
        id="path-out-of-scope",
    ),
    pytest.param(
        Case(
            (DENY, Reason.PATH_OUT_OF_SCOPE),
            grants=[grant(**SCOPED)],
            path="/FresnoParks/%2e%2e/evil",
            detail="/evil is outside /FresnoParks",
        ),
        id="path-encoded-escape",
    ),
    pytest.param(
        Case((DENY, Reason.PATH_OUT_OF_SCOPE), grants=[grant(**SCOPED)], path="/FresnoParksEvil"),
        id="path-prefix-not-segment",
    ),
    pytest.param(
        Case((ALLOW, Reason.GRANTED), grants=[grant(**SCOPED)], path="/FresnoParks/photos?a=1"),
        id="path-in-scope",
    ),
    pytest.param(
        Case(
            (ALLOW, Reason.GRANTED),
            grants=[grant(**SCOPED)],
            path=None,
            needs_path=True,
            detail="limited to /FresnoParks",
        ),
        id="scoped-tunnel-needs-path",
    ),
    pytest.param(
        Case(
            (ALLOW, Reason.GRANTED),
            grants=[grant(**SCOPED)],
            host="scontent.xx.fbcdn.net",
            path="/evil",
        ),
        id="asset-under-scoped-grant",
    ),
    pytest.param(
        Case(
            (ALLOW, Reason.GRANTED),
            grants=[grant(**SCOPED)],
            host="scontent.xx.fbcdn.net",
            path=None,
        ),
        id="asset-tunnel-under-scoped-grant",
    ),
    pytest.param(
        Case(
            (ALLOW, Reason.GRANTED),
            grants=[grant(sites=("facebook", "instagram"), **SCOPED)],
            host="instagram.com",
            path="/any/page",
        ),
        id="scope-only-for-named-site",
    ),
    pytest.param(
        Case(
            (DENY, Reason.PATH_OUT_OF_SCOPE),
            grants=[grant(**SCOPED)],
            host="157.240.1.35",
            path="/evil",
        ),
        id="scope-applies-to-bare-ip",
    ),
    pytest.param(
        Case(
            (DENY, Reason.DIRECTORY_UNAVAILABLE),
            identity=Identity("jlee", "basic", None),
            detail="could not verify the password",
        ),
        id="directory-down-at-authentication",
    ),
    pytest.param(
        Case((DENY, Reason.DIRECTORY_UNAVAILABLE), people={"jlee": ABSENT}),
        id="directory-no-answer-for-employee",
    ),
    pytest.param(
        Case(
            (DENY, Reason.DIRECTORY_UNAVAILABLE),
            people={"ahernandez": ABSENT},
            detail="about the approver",
        ),
        id="directory-no-answer-for-approver",
    ),
    # Time windows (NOW is Monday 10:00 in Los Angeles).
    pytest.param(
        Case((ALLOW, Reason.GRANTED), grants=[grant(hours="Mon-Fri 07:00-18:00")], grant_id="g1"),
        id="inside-hours",
    ),
    pytest.param(
        Case(
            (DENY, Reason.OUTSIDE_HOURS),
            grants=[grant(hours="Mon-Fri 07:00-18:00")],
            at=datetime(2026, 6, 15, 20, 0, tzinfo=LA),
            detail="outside the grant's hours (Mon-Fri 07:00-18:00); access resumes Tue 2026-06-16 07:00",
        ),
        id="outside-hours-evening",
    ),
    pytest.param(
        Case(
            (DENY, Reason.OUTSIDE_HOURS),
            grants=[grant(hours="Mon-Fri 07:00-18:00")],
            at=datetime(2026, 6, 16, 3, 0, tzinfo=UTC),  # Monday 20:00 in Los Angeles
            detail="access resumes Tue 2026-06-16 07:00",
        ),
        id="outside-hours-seen-from-utc",
    ),
    pytest.param(
        Case(
            (ALLOW, Reason.GRANTED),
            grants=[grant(hours="Mon-Fri 07:00-18:00")],
            path=None,
            needs_path=True,
            detail="limited to Mon-Fri 07:00-18:00",
        ),
        id="hours-tunnel-looked-into",
    ),
    pytest.param(
        Case(
            (DENY, Reason.OUTSIDE_HOURS),
            grants=[grant(hours=["Sat,Sun 10:00-14:00"]), grant("g2", expires="2026-06-01")],
            detail="access resumes Sat 2026-06-20 10:00",
        ),
        id="outside-hours-told-before-expired",
    ),
]


def run(policy_files, case: Case) -> Decision:
    policy = policy_files.load(case.grants)
    people = people_with(**case.people)
    return decide(case.identity, case.host, case.path, case.at, policy, people)


@pytest.mark.parametrize("case", CASES)
def test_decide(policy_files, case):
    decision = run(policy_files, case)
    assert (decision.result, decision.reason) == case.expect
    assert decision.allowed is (case.expect[0] is ALLOW)
    assert decision.needs_path is case.needs_path
    if case.grant_id is not None:
        assert decision.grant is not None
        assert decision.grant.id == case.grant_id
    assert case.detail in decision.evidence.detail


def test_every_decide_reason_has_a_row():
    """The table above exercises every reason `decide` can give (the others are the shell's)."""
    covered = {param.values[0].expect[1] for param in CASES}
    shells = {
        Reason.INTERNAL_ERROR,
        Reason.AUDIT_LOG_UNAVAILABLE,
        Reason.MALFORMED_REQUEST,
        Reason.UNRECOGNIZED_PROTOCOL,
    }
    assert covered == set(Reason) - shells


def test_not_social_media_carries_no_site(policy_files):
    decision = run(policy_files, Case((ALLOW, Reason.NOT_SOCIAL_MEDIA), host="Example.ORG."))
    assert decision.host == "example.org"
    assert (decision.match, decision.site_id, decision.is_social) == (None, None, False)
    assert decision.evidence == Evidence()


@pytest.mark.parametrize(
    ("approved_by", "evidence"),
    [
        pytest.param(
            "ahernandez",
            Evidence("jlee", "Parks", "ahernandez", "director", "Parks", "basic"),
            id="director",
        ),
        pytest.param(
            "tsmith",
            Evidence("jlee", "Parks", "tsmith", "executive", "City Manager", "basic"),
            id="executive",
        ),
    ],
)
def test_granted_evidence(policy_files, approved_by, evidence):
    decision = run(policy_files, Case((ALLOW, Reason.GRANTED), grants=[grant(approved_by=approved_by)]))
    assert decision.evidence == evidence
    assert decision.site_id == "facebook"
    assert decision.match.matched == "facebook.com"
    assert decision.host == "www.facebook.com"


def test_denied_evidence_names_the_other_department(policy_files):
    decision = run(
        policy_files,
        Case((DENY, Reason.APPROVER_NOT_AUTHORIZED), grants=[grant(approved_by="rpatel")]),
    )
    evidence = decision.evidence
    assert (evidence.employee, evidence.employee_department) == ("jlee", "Parks")
    assert (evidence.approver, evidence.approver_role) == ("rpatel", "director")
    assert evidence.approver_department == "Communications"
    assert decision.grant.id == "g1"


@pytest.fixture
def scoped_tunnel_json(policy_files) -> dict:
    """A scoped grant's tunnel decision, through `to_dict` and a JSON round trip."""
    decision = run(policy_files, Case((ALLOW, Reason.GRANTED), grants=[grant(**SCOPED)], path=None))
    return json.loads(json.dumps(decision.to_dict()))


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param(("result",), "allow", id="result"),
        pytest.param(("reason",), "granted", id="reason"),
        pytest.param(("site",), "facebook", id="site"),
        pytest.param(("needs_path",), True, id="needs-path"),
        pytest.param(("grant", "paths"), {"facebook": ["/FresnoParks"]}, id="grant-paths"),
        pytest.param(("grant", "valid_until"), "2027-01-01T00:00:00-08:00", id="grant-valid-until-iso"),
        pytest.param(("evidence", "approver_role"), "director", id="evidence-approver-role"),
    ],
)
def test_to_dict_is_json_ready(scoped_tunnel_json, keys, expected):
    value = scoped_tunnel_json
    for key in keys:
        value = value[key]
    assert value == expected
    if isinstance(expected, bool):
        assert value is expected


# ---------------------------------------------------------------- facts are live


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({}, Reason.GRANTED, id="as-approved"),
        pytest.param(
            {"ahernandez": replace(ANA, groups=frozenset())},
            Reason.APPROVER_NOT_AUTHORIZED,
            id="approver-left-directors",
        ),
        pytest.param(
            {"ahernandez": replace(ANA, department="Police")},
            Reason.APPROVER_NOT_AUTHORIZED,
            id="approver-moved-department",
        ),
        pytest.param(
            {"jlee": replace(JLEE, department="Police")},
            Reason.APPROVER_NOT_AUTHORIZED,
            id="employee-moved-department",
        ),
        pytest.param(
            {"ahernandez": replace(ANA, groups=frozenset({"city-managers"}), department="Police")},
            Reason.GRANTED,
            id="approver-promoted-to-executive",
        ),
        pytest.param(
            {"jlee": replace(JLEE, state=AccountState.DISABLED)},
            Reason.EMPLOYEE_DISABLED,
            id="employee-disabled",
        ),
    ],
)
def test_same_grant_follows_the_directory(policy_files, changes, reason):
    policy = policy_files.load([grant()])
    decision = decide(JLEE_ID, "facebook.com", "/", NOW, policy, people_with(**changes))
    assert decision.reason is reason


def test_director_without_department_cannot_approve_employee_without_department(policy_files):
    policy = policy_files.load([grant()])
    people = people_with(ahernandez=replace(ANA, department=None), jlee=replace(JLEE, department=None))
    decision = decide(JLEE_ID, "facebook.com", "/", NOW, policy, people)
    assert decision.reason is Reason.APPROVER_NOT_AUTHORIZED


# ---------------------------------------------------------------- several grants for one site

EXPIRED = {"approved_on": "2025-06-01", "expires": "2026-05-31"}


@pytest.mark.parametrize(
    ("grants", "path", "expect", "grant_id", "needs_path"),
    [
        pytest.param(
            [grant("old", **EXPIRED), grant("new")],
            "/",
            Reason.GRANTED,
            "new",
            False,
            id="valid-wins-over-expired",
        ),
        pytest.param(
            [grant("new"), grant("old", **EXPIRED)],
            "/",
            Reason.GRANTED,
            "new",
            False,
            id="valid-wins-over-expired-any-order",
        ),
        pytest.param(
            [grant("scoped", **SCOPED), grant("whole")],
            None,
            Reason.GRANTED,
            "whole",
            False,
            id="tunnel-unscoped-preferred",
        ),
        pytest.param(
            [grant("whole"), grant("scoped", **SCOPED)],
            None,
            Reason.GRANTED,
            "whole",
            False,
            id="tunnel-unscoped-preferred-any-order",
        ),
        pytest.param(
            [grant("scoped", **SCOPED), grant("old", **EXPIRED)],
            None,
            Reason.GRANTED,
            "scoped",
            True,
            id="tunnel-only-scoped-valid",
        ),
        pytest.param(
            [grant("scoped", **SCOPED), grant("bad", approved_by="rpatel")],
            "/evil",
            Reason.PATH_OUT_OF_SCOPE,
            "scoped",
            False,
            id="out-of-scope-outranks-unauthorized",
        ),
        pytest.param(
            [grant("old", **EXPIRED), grant("self", approved_by="jlee")],
            "/",
            Reason.SELF_APPROVAL,
            "self",
            False,
            id="self-approval-outranks-expired",
        ),
        pytest.param(
            [grant("old", **EXPIRED), grant("later", start="2026-09-01")],
            "/",
            Reason.GRANT_NOT_YET_VALID,
            "later",
            False,
            id="not-yet-valid-outranks-expired",
        ),
        pytest.param(
            [grant("a", approved_by="rpatel"), grant("b", approved_by="pkim")],
            "/",
            Reason.DIRECTORY_UNAVAILABLE,
            "b",
            False,
            id="unanswered-approver-outranks-unauthorized",
        ),
    ],
)
def test_several_grants_for_one_site(policy_files, grants, path, expect, grant_id, needs_path):
    policy = policy_files.load(grants)
    decision = decide(JLEE_ID, "facebook.com", path, NOW, policy, PEOPLE)
    assert decision.reason is expect
    assert decision.grant.id == grant_id
    assert decision.needs_path is needs_path


# ---------------------------------------------------------------- several hosts in one request


@pytest.mark.parametrize(
    ("identity", "grants", "hosts", "path", "expect", "host", "needs_path"),
    [
        pytest.param(
            None,
            [],
            ["203.0.113.9", "facebook.com"],
            None,
            (AUTH, Reason.CREDENTIALS_REQUIRED),
            "facebook.com",
            False,
            id="connect-ip-sni-social-anonymous",
        ),
        pytest.param(
            Identity("mnguyen", "basic"),
            [grant()],
            ["example.org", "facebook.com"],
            None,
            (DENY, Reason.NO_GRANT),
            "facebook.com",
            False,
            id="connect-ordinary-sni-social",
        ),
        pytest.param(
            None,
            [],
            ["example.org", "cdn.example.net"],
            "/",
            (ALLOW, Reason.NOT_SOCIAL_MEDIA),
            None,
            False,
            id="all-ordinary",
        ),
        pytest.param(
            JLEE_ID,
            [grant()],
            ["facebook.com", "youtube.com"],
            "/",
            (DENY, Reason.NO_GRANT),
            "youtube.com",
            False,
            id="allowed-then-denied",
        ),
        pytest.param(
            JLEE_ID,
            [grant()],
            ["youtube.com", "facebook.com"],
            "/",
            (DENY, Reason.NO_GRANT),
            "youtube.com",
            False,
            id="denied-then-allowed",
        ),
        pytest.param(
            JLEE_ID,
            [grant()],
            ["example.org", "facebook.com"],
            None,
            (ALLOW, Reason.GRANTED),
            "facebook.com",
            False,
            id="ordinary-and-granted",
        ),
        pytest.param(
            JLEE_ID,
            [grant(**SCOPED)],
            ["fbcdn.net", "www.facebook.com"],
            None,
            (ALLOW, Reason.GRANTED),
            "www.facebook.com",
            True,
            id="needs-path-is-kept",
        ),
        pytest.param(
            JLEE_ID,
            [grant(**SCOPED)],
            ["157.240.1.35", "facebook.com", "instagram.com"],
            "/evil",
            (DENY, Reason.PATH_OUT_OF_SCOPE),
            "157.240.1.35",
            False,
            id="out-of-scope-on-any-host",
        ),
        pytest.param(
            Identity("jlee", "basic", False),
            [grant()],
            ["instagram.com", "example.org"],
            None,
            (AUTH, Reason.CREDENTIALS_INVALID),
            "instagram.com",
            False,
            id="bad-password",
        ),
    ],
)
def test_decide_request(policy_files, identity, grants, hosts, path, expect, host, needs_path):
    policy = policy_files.load(grants)
    decision = decide_request(identity, hosts, path, NOW, policy, PEOPLE)
    assert (decision.result, decision.reason) == expect
    if host is not None:
        assert decision.host == host
    assert decision.needs_path is needs_path


# ---------------------------------------------------------------- who the shell must look up

INVOLVED_GRANTS = [
    grant("fb-ana"),
    grant("fb-taylor", approved_by="tsmith"),
    grant("yt", sites=("youtube",), approved_by="rpatel"),
    grant("minh", employee="mnguyen", approved_by="pkim"),
]


@pytest.mark.parametrize(
    ("user", "hosts", "expected"),
    [
        pytest.param("jlee", ["facebook.com"], {"jlee", "ahernandez", "tsmith"}, id="facebook"),
        pytest.param("jlee", ["youtube.com"], {"jlee", "rpatel"}, id="youtube"),
        pytest.param("jlee", ["instagram.com"], {"jlee"}, id="no-grant-for-site"),
        pytest.param("jlee", ["example.org"], {"jlee"}, id="not-social"),
        pytest.param("jlee", ["157.240.1.35"], {"jlee", "ahernandez", "tsmith"}, id="bare-ip"),
        pytest.param("jlee", ["cdn.fbcdn.net"], {"jlee", "ahernandez", "tsmith"}, id="asset"),
        pytest.param(
            "jlee",
            ["example.org", "m.facebook.com:443", "youtube.com"],
            {"jlee", "ahernandez", "tsmith", "rpatel"},
            id="several-hosts",
        ),
        pytest.param("mnguyen", ["facebook.com"], {"mnguyen", "pkim"}, id="other-employee"),
        pytest.param("mnguyen", ["youtube.com"], {"mnguyen"}, id="other-employee-no-grant"),
        pytest.param("tsmith", ["facebook.com"], {"tsmith"}, id="approver-has-no-grant"),
        pytest.param(None, ["facebook.com"], set(), id="anonymous"),
        pytest.param("jlee", ["", "[]"], {"jlee"}, id="garbage-hosts"),
    ],
)
def test_people_involved(policy_files, user, hosts, expected):
    policy = policy_files.load(INVOLVED_GRANTS)
    assert people_involved(policy, user, hosts) == expected


@pytest.mark.parametrize("host", ["facebook.com", "youtube.com", "instagram.com", "example.org"])
def test_people_involved_is_enough_for_decide(policy_files, host):
    """Given only the people `people_involved` names, decide never lacks a directory answer."""
    policy = policy_files.load(INVOLVED_GRANTS)
    people = {**PEOPLE, "pkim": Person("pkim", "Pat Kim", "Public Works", groups=DIRECTORS)}
    wanted = people_involved(policy, "jlee", [host])
    decision = decide(JLEE_ID, host, "/", NOW, policy, {uid: people[uid] for uid in wanted})
    assert decision.reason is not Reason.DIRECTORY_UNAVAILABLE


def test_decide_is_pure(policy_files):
    """The same inputs give the same decision, and deciding changes nothing it was given."""
    policy = policy_files.load([grant()])
    people = dict(PEOPLE)
    first = decide(JLEE_ID, "facebook.com", "/", NOW, policy, people)
    again = decide(JLEE_ID, "facebook.com", "/", NOW, policy, people)
    assert first == again
    assert people == PEOPLE


# ---------------------------------------------------------------- wording


@pytest.mark.parametrize("reason", list(Reason), ids=lambda reason: reason.value)
def test_every_reason_has_plain_words(reason):
    text = PLAIN_REASONS[reason]
    assert plain_reason(reason) == text
    assert text.strip() and text[0].isupper() and text.endswith(".")
    assert reason.value not in text  # words for people, not the machine-readable code


def test_plain_reasons_are_distinct():
    assert set(PLAIN_REASONS) == set(Reason)
    assert len(set(PLAIN_REASONS.values())) == len(Reason)
