"""The request form's checks, who decides which stage, and what time does to an open request."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from citygate.directory.model import AccountState, Person
from citygate.proxy.policy import Role
from citygate.proxy.requests.config import RequestSettings, Stage
from citygate.proxy.requests.form import Draft, FormProblems, checked_form
from citygate.proxy.requests.model import AccessRequest, StageDecision, Status
from citygate.proxy.requests.routing import (
    Authority,
    Due,
    Refusal,
    authority,
    business_days_between,
    due,
    grant_of,
    with_decision,
)

LA = ZoneInfo("America/Los_Angeles")
TODAY = date(2026, 6, 15)  # a Monday
MONDAY_9 = datetime(2026, 6, 15, 9, 0, tzinfo=LA)
DIRECTORS, EXECUTIVES = frozenset({"directors"}), frozenset({"city-managers"})
ANA = Person("ahernandez", "Ana Hernandez", "Parks", "Director of Parks", DIRECTORS)
RAVI = Person("rpatel", "Ravi Patel", "Communications", "Director of Communications", DIRECTORS)
TAYLOR = Person("tsmith", "Taylor Smith", "City Manager", "City Manager", EXECUTIVES)
DANA = Person("dlopez", "Dana Lopez", "Parks", "Deputy Director")
KIM = Person("kwilliams", "Kim Williams", "Communications", "PIO", frozenset({"communications-office"}))
MINH = Person("mnguyen", "Minh Nguyen", "Parks", "Recreation Specialist")

ONE_STAGE = RequestSettings(enabled=True)
TWO_STAGES = RequestSettings(
    enabled=True,
    stages=(
        Stage("Department Director recommends"),
        Stage("Communications decides", "communications-office", 5),
    ),
)


def request(**changes) -> AccessRequest:
    values = {
        "id": "req-2026-0001",
        "employee": "mnguyen",
        "name": "Minh Nguyen",
        "department": "Parks",
        "title": "Recreation Specialist",
        "sites": ("facebook",),
        "purpose": "Post the summer camp schedule",
        "until": date(2026, 9, 30),
        "submitted_at": MONDAY_9,
    }
    return AccessRequest(**(values | changes))


def decision(approver: str, *, approved: bool = True, stage: int = 0, at: datetime = MONDAY_9, **more):
    return StageDecision(
        stage, approver, "negotiate", approved, more.pop("reason", ""), at, "127.0.0.1", **more
    )


# ---------------------------------------------------------------------- the form


def form(policy_files, person: Person = MINH, **fields):
    values = {
        "sites": ["facebook"],
        "purpose": "Post the summer camp schedule",
        "pages": "",
        "until": "2026-09-30",
    }
    return checked_form(person=person, policy=policy_files.load(), today=TODAY, **(values | fields))


def test_a_complete_form_makes_a_draft_with_its_pages_on_every_site(policy_files):
    draft = form(
        policy_files,
        sites=["facebook", "www.instagram.com"],
        pages="/CityOfExampleParks\n\n/Events/../Events",
    )

    assert draft == Draft(
        ("facebook", "instagram"),
        "Post the summer camp schedule",
        date(2026, 9, 30),
        {"facebook": ("/CityOfExampleParks", "/Events"), "instagram": ("/CityOfExampleParks", "/Events")},
    )


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"purpose": "   "}, "purpose", "State the business purpose"),
        ({"purpose": "x" * 1001}, "purpose", "1001 characters; keep it to 1000"),
        ({"purpose": "<script>alert(1)</script>"}, "purpose", "< and > (markup) are not accepted"),
        ({"sites": ["myspace-ish"]}, "sites", "myspace-ish is not a social media site in the catalog"),
        ({"sites": ["www.example.org"]}, "sites", "it needs no request"),
        ({"sites": []}, "sites", "Choose at least one site"),
        ({"pages": "CityOfExample"}, "pages", "is not a page address"),
        ({"pages": "/a%2Fb"}, "pages", "is not a page address"),
        ({"pages": "/<img src=x>"}, "pages", "is not a page address"),
        ({"until": "next year"}, "until", "as a date (YYYY-MM-DD)"),
        ({"until": "2026-06-14"}, "until", "in the past"),
        ({"until": "2027-06-15"}, "until", "choose 2027-06-14 or earlier"),
    ],
)
def test_each_bad_field_gets_its_own_message(policy_files, fields, field, says):
    checked = form(policy_files, **fields)

    assert isinstance(checked, FormProblems)
    assert says in checked.fields[field]
    assert set(checked.fields) == {field}


def test_the_last_day_allowed_is_the_grant_cap(policy_files):
    assert isinstance(form(policy_files, until="2027-06-14"), Draft)


def test_an_employee_without_a_department_is_told_why_no_director_can_decide(policy_files):
    checked = form(policy_files, person=dataclasses.replace(MINH, department=None), purpose="")

    assert isinstance(checked, FormProblems)
    assert "no department" in checked.fields["employee"]
    assert "purpose" in checked.fields  # every problem at once


# ---------------------------------------------------------------------- who decides


def judged(policy_files, approver, settings=ONE_STAGE, stage=0, people=None, designees="", req=None):
    grants = {"parks.yaml": "department: Parks\n" + designees + "grants: []\n"} if designees else None
    policy = policy_files.load(grants)
    people = people if people is not None else {"ahernandez": ANA}
    return authority(req or request(), settings.stages[stage], approver, policy, people, MONDAY_9)


def test_the_employees_own_director_decides(policy_files):
    assert judged(policy_files, ANA) == Authority(Role.DIRECTOR)


def test_an_executive_decides_any_stage(policy_files):
    assert judged(policy_files, TAYLOR) == Authority(Role.EXECUTIVE)
    assert judged(policy_files, TAYLOR, TWO_STAGES, 1) == Authority(Role.EXECUTIVE)


@pytest.mark.parametrize(
    ("approver", "says"),
    [
        (RAVI, "you direct Communications, not Parks's department"),
        (DANA, "only a Director of the employee's department, their designee or an executive decides"),
        (MINH, "nobody decides their own request"),
        (None, "you are not in the directory"),
        (dataclasses.replace(ANA, state=AccountState.DISABLED), "your account is disabled"),
    ],
)
def test_others_cannot_decide(policy_files, approver, says):
    assert judged(policy_files, approver) == Refusal(says)


def test_a_director_cannot_decide_their_own_request(policy_files):
    assert judged(policy_files, ANA, req=request(employee="ahernandez")) == Refusal(
        "nobody decides their own request"
    )


def test_a_designee_decides_while_their_director_directs_the_department(policy_files):
    designees = "designees:\n  - {designee: dlopez, director: ahernandez}\n"

    assert judged(policy_files, DANA, designees=designees) == Authority(Role.DESIGNEE, "ahernandez")
    demoted = dataclasses.replace(ANA, groups=frozenset())
    assert judged(policy_files, DANA, designees=designees, people={"ahernandez": demoted}) == Refusal(
        "the Director who named you designee no longer directs the employee's department"
    )
    assert isinstance(judged(policy_files, DANA, designees=designees, people={}), Refusal)  # not asked: no


def test_a_designee_limited_to_some_sites_cannot_decide_others(policy_files):
    designees = "designees:\n  - {designee: dlopez, director: ahernandez, sites: [youtube]}\n"

    assert isinstance(judged(policy_files, DANA, designees=designees), Refusal)
    youtube = request(sites=("youtube",))
    assert judged(policy_files, DANA, designees=designees, req=youtube) == Authority(
        Role.DESIGNEE, "ahernandez"
    )


def test_a_group_stage_is_decided_by_its_members_only(policy_files):
    assert judged(policy_files, KIM, TWO_STAGES, 1) == Authority(None)
    assert judged(policy_files, ANA, TWO_STAGES, 1) == Refusal(
        "this stage is decided by the members of communications-office"
    )
    assert judged(policy_files, KIM, TWO_STAGES, 0) == Refusal(
        "only a Director of the employee's department, their designee or an executive decides"
    )


# ---------------------------------------------------------------------- stages and the grant


def test_one_stage_approval_makes_the_grant(policy_files):
    approved = with_decision(request(), decision("ahernandez", at=MONDAY_9 + timedelta(days=1)), ONE_STAGE)

    assert approved.status is Status.APPROVED
    grant = grant_of(approved, ONE_STAGE, policy_files.load())
    assert (grant.id, grant.request_id, grant.approved_by, grant.approved_on, grant.expires) == (
        "grant-2026-0001",
        "req-2026-0001",
        "ahernandez",
        date(2026, 6, 16),
        date(2026, 9, 30),
    )


def test_with_two_stages_the_directors_recommendation_alone_makes_no_grant(policy_files):
    recommended = with_decision(request(), decision("ahernandez"), TWO_STAGES)

    assert (recommended.status, recommended.stage) == (Status.PENDING, 1)
    approved = with_decision(recommended, decision("kwilliams", stage=1), TWO_STAGES)
    assert approved.status is Status.APPROVED
    assert [d.approver for d in approved.decisions] == ["ahernandez", "kwilliams"]
    # The grant names the Director (checked live by the proxy); the request keeps both decisions.
    assert grant_of(approved, TWO_STAGES, policy_files.load()).approved_by == "ahernandez"


def test_a_denial_at_any_stage_ends_the_request():
    denied = with_decision(
        with_decision(request(), decision("ahernandez"), TWO_STAGES),
        decision("kwilliams", stage=1, approved=False, reason="Use the City's main page"),
        TWO_STAGES,
    )

    assert denied.status is Status.DENIED
    assert denied.closed_at == MONDAY_9
    assert denied.decisions[-1].reason == "Use the City's main page"


# ---------------------------------------------------------------------- time


def test_business_days_skip_weekends():
    friday = date(2026, 6, 19)
    assert business_days_between(friday, date(2026, 6, 20)) == 0  # Saturday
    assert business_days_between(friday, date(2026, 6, 22)) == 1  # Monday
    assert business_days_between(TODAY, TODAY + timedelta(days=14)) == 10
    assert business_days_between(TODAY, TODAY) == 0


def test_a_stale_request_escalates_then_expires_by_the_configured_business_days():
    settings = RequestSettings(
        enabled=True, stages=(Stage("Director", None, 3),), expire_after_business_days=10
    )
    pending = request()

    assert due(pending, datetime(2026, 6, 17, 17, 0, tzinfo=LA), settings) is None  # Wednesday: 2 days
    assert due(pending, datetime(2026, 6, 18, 8, 0, tzinfo=LA), settings) is Due.ESCALATE  # Thursday: 3
    escalated = dataclasses.replace(pending, escalated=True)
    assert due(escalated, datetime(2026, 6, 26, 8, 0, tzinfo=LA), settings) is None  # 9 business days
    assert due(escalated, datetime(2026, 6, 29, 8, 0, tzinfo=LA), settings) is Due.EXPIRE  # 10
    assert (
        due(dataclasses.replace(escalated, status=Status.DENIED), datetime(2026, 7, 30, tzinfo=LA), settings)
        is None
    )


def test_the_next_stage_has_its_own_escalation_clock():
    recommended = with_decision(
        request(), decision("ahernandez", at=datetime(2026, 6, 18, 9, 0, tzinfo=LA)), TWO_STAGES
    )

    assert (
        due(recommended, datetime(2026, 6, 23, 9, 0, tzinfo=LA), TWO_STAGES) is None
    )  # 3 business days of 5
    assert due(recommended, datetime(2026, 6, 25, 9, 0, tzinfo=LA), TWO_STAGES) is Due.ESCALATE


# ---------------------------------------------------------------------- the requests: section


def test_the_section_is_parsed_with_a_database_beside_the_config(policy_files):
    config = policy_files.mini_config + (
        "requests:\n  enabled: true\n  database: var/requests.sqlite\n  recorded_approvals: off\n"
        "  stages:\n    - {name: Director, approvers: department-directors, escalate_after_business_days: 2}\n"
        "    - {name: Communications, approvers: {group: Communications-Office}}\n"
    )
    settings = policy_files.load(config=config).features.requests

    assert settings.enabled
    assert settings.database == f"sqlite:///{policy_files.root.resolve() / 'var' / 'requests.sqlite'}"
    assert settings.stages == (
        Stage("Director", None, 2),
        Stage("Communications", "communications-office", 3),
    )


def test_a_bad_section_reports_every_problem_with_its_line(policy_files):
    config = policy_files.mini_config + (
        "requests:\n  enabled: yes please\n  expire_after_business_days: 0\n  recorded_approvals: sometimes\n"
        "  stages:\n    - {name: Communications, approvers: {group: communications-office}}\n  colour: blue\n"
    )
    problems = {(p.line, p.message.split(" ")[0]) for p in policy_files.problems(config=config)}

    assert problems == {
        (13, "requests.enabled"),
        (14, "requests.expire_after_business_days"),
        (15, "requests.recorded_approvals"),
        (16, "requests.stages"),  # no stage of department-directors
        (18, "unknown"),
    }


def test_the_two_stage_example_loads_as_glendales_procedure(policy_files):
    example = (
        Path(__file__).resolve().parents[3] / "config" / "examples" / "glendale-two-stage-requests.yaml"
    ).read_text()

    settings = policy_files.load(config=policy_files.mini_config + example).features.requests

    assert [(stage.name, stage.group) for stage in settings.stages] == [
        ("Department Director recommends", None),
        ("Office of Communication and Public Affairs decides", "communications-office"),
    ]
    assert (settings.enabled, settings.expire_after_business_days) == (True, 15)
