"""What the access-request notices say and to whom (pure composition), and when a reminder is due."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from citygate.directory.model import Person
from citygate.proxy.requests import notices
from citygate.proxy.requests.model import AccessRequest, StageDecision, Status, Terms
from citygate.proxy.requests.notices import NoticeKind

LA = ZoneInfo("America/Los_Angeles")
MONDAY_9 = datetime(2026, 6, 15, 9, 0, tzinfo=LA)
TODAY = date(2026, 6, 15)
ANA = Person("ahernandez", "Ana Hernandez", "Parks", "Director", mail="ahernandez@city.example")
DANA = Person("dlopez", "Dana Lopez", "Parks", "Deputy Director", mail=None)
MINH = Person("mnguyen", "Minh Nguyen", "Parks", "Recreation Specialist", mail="mnguyen@city.example")
REQUESTS = "requests:\n  enabled: true\n  portal_url: https://requests.city.example\n"


@pytest.fixture
def policy(policy_files):
    return policy_files.load(config=policy_files.mini_config + REQUESTS)


def request(**changes) -> AccessRequest:
    values = {
        "id": "req-2026-0042",
        "employee": "mnguyen",
        "name": "Minh Nguyen",
        "department": "Parks",
        "title": "Recreation Specialist",
        "sites": ("facebook", "instagram"),
        "purpose": "Post the summer camp schedule\nand the pool hours",
        "until": date(2026, 9, 30),
        "submitted_at": MONDAY_9,
        "paths": MappingProxyType({"facebook": ("/CityOfExampleParks",)}),
    }
    return AccessRequest(**(values | changes))


def approval(at: datetime = MONDAY_9, narrowed: Terms | None = None) -> StageDecision:
    return StageDecision(0, "ahernandez", "basic", True, "", at, "10.0.0.7", None, narrowed)


def approved(**changes) -> AccessRequest:
    return request(
        **({"status": Status.APPROVED, "decisions": (approval(),), "grant_id": "grant-2026-0042"} | changes)
    )


def test_a_new_request_goes_to_the_approvers_with_a_mail_address(policy):
    notice = notices.new_request(request(), policy, [ANA, DANA, ANA])

    assert (notice.key, notice.kind, notice.request_id) == (
        "req-2026-0042:stage-0:new",
        NoticeKind.NEW_REQUEST,
        "req-2026-0042",
    )
    assert notice.recipients == ("ahernandez@city.example",)  # once
    assert notice.unreachable == ("dlopez",)  # no mail in the directory: said, not sent
    assert (
        notice.subject
        == "[Testville] Social media request req-2026-0042 from Minh Nguyen awaits your decision"
    )
    assert "Decide: https://requests.city.example/approvals/req-2026-0042" in notice.body
    assert "Business purpose:\n  Post the summer camp schedule\n  and the pool hours\n" in notice.body
    assert "Pages on Facebook: /CityOfExampleParks" in notice.body


def test_no_typed_or_directory_text_can_break_out_of_the_subject(policy):
    notice = notices.new_request(request(name="Minh\r\nBcc: everyone@city.example"), policy, [ANA])

    assert "\n" not in notice.subject and "\r" not in notice.subject
    assert "summer camp" not in notice.subject  # the purpose is never in a header
    broken = dataclasses.replace(ANA, mail="ahernandez@city.example\nBcc: x@evil.example")
    assert notices.new_request(request(), policy, [broken]).recipients == ()


def test_the_decision_tells_the_employee_what_was_allowed(policy):
    narrowed = Terms(("instagram",), date(2026, 8, 31))
    notice = notices.decision(approved(decisions=(approval(narrowed=narrowed),)), policy, MINH)

    assert (notice.key, notice.recipients) == ("req-2026-0042:approved", ("mnguyen@city.example",))
    assert "Grant: grant-2026-0042\nSites: Instagram\nUntil: 2026-08-31 (the last day)" in notice.body
    assert "less than you asked for" in notice.body


def test_a_denial_says_why_and_an_expiry_how_to_ask_again(policy):
    denial = dataclasses.replace(approval(), approved=False, reason="Use the Parks page")
    denied = notices.decision(request(status=Status.DENIED, decisions=(denial,)), policy, MINH)
    assert "Why:\n  Use the Parks page\n" in denied.body

    expired = notices.decision(request(status=Status.EXPIRED), policy, MINH)
    assert "  https://requests.city.example/request?site=facebook\n" in expired.body
    assert "  https://requests.city.example/request?site=instagram\n" in expired.body

    gone = notices.decision(request(status=Status.EXPIRED), policy, None)  # left the directory
    assert (gone.recipients, gone.unreachable) == ((), ("mnguyen",))


def test_reminders_go_to_the_employee_with_a_renewal_link_and_to_the_approver(policy):
    to_employee, to_approvers = notices.reminders(approved(), policy, MINH, [ANA, MINH])

    assert to_employee.recipients == ("mnguyen@city.example",)
    assert "  https://requests.city.example/request?site=facebook" in to_employee.body
    assert to_employee.subject == "[Testville] Your access to Facebook, Instagram ends on 2026-09-30"
    assert to_approvers.recipients == ("ahernandez@city.example",)  # never the employee as approver


def test_without_a_portal_address_the_mail_names_the_portal_without_a_link(policy_files):
    policy = policy_files.load(config=policy_files.mini_config + "requests:\n  enabled: true\n")

    assert (
        "Decide: the access-request portal (ask IT for its address)"
        in notices.new_request(request(), policy, [ANA]).body
    )


def test_a_reminder_is_due_within_its_days_before_the_grant_ends():
    ending = approved(until=TODAY + timedelta(days=7))

    assert notices.ends_within(ending, TODAY, 7)
    assert not notices.ends_within(ending, TODAY, 6)
    assert not notices.ends_within(ending, TODAY + timedelta(days=8), 7)  # ended
    assert not notices.ends_within(request(until=TODAY + timedelta(days=3)), TODAY, 7)  # not approved
    narrowed = approved(
        until=TODAY + timedelta(days=60), decisions=(approval(narrowed=Terms(("facebook",), TODAY)),)
    )
    assert notices.ends_within(narrowed, TODAY, 7)  # the day the approver allowed, not the one asked


def test_asking_again_for_every_site_is_a_renewal():
    ending = approved(until=TODAY + timedelta(days=5))
    facebook_again = request(id="req-2026-0050", sites=("facebook",))
    instagram_later = approved(id="req-2026-0051", sites=("instagram",), until=TODAY + timedelta(days=90))
    instagram_sooner = approved(id="req-2026-0052", sites=("instagram",), until=TODAY + timedelta(days=1))

    assert not notices.renewed(ending, [ending])
    assert not notices.renewed(ending, [facebook_again])  # Instagram still ends
    assert notices.renewed(ending, [facebook_again, instagram_later])
    assert not notices.renewed(ending, [facebook_again, instagram_sooner])
    denied = dataclasses.replace(instagram_later, status=Status.DENIED)
    assert not notices.renewed(ending, [facebook_again, denied])


def test_the_notices_a_requests_state_calls_for():
    assert notices.keys_called_for(request()) == ("req-2026-0042:stage-0:new",)
    assert notices.keys_called_for(request(stage=1, escalated=True)) == (
        "req-2026-0042:stage-1:new",
        "req-2026-0042:stage-1:escalated",
    )
    assert notices.keys_called_for(approved()) == ("req-2026-0042:approved",)


def test_an_escalation_asks_the_executives(policy):
    notice = notices.escalation(request(), policy, [ANA])

    assert (notice.key, notice.kind) == ("req-2026-0042:stage-0:escalated", NoticeKind.ESCALATION)
    assert "As an executive you may decide it." in notice.body
    assert notice.subject.endswith("from Minh Nguyen is waiting for a decision")
