"""The access-request portal, served by `citygate portal` (uvicorn) on 127.0.0.1, used over HTTP
with real clients: an employee asks, the Director approves, the grant is written."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_config import requests_city
from portal_server import CITYGATE, Portal, form_value, request_id_of, running_portal

from citygate.proxy.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    with running_portal(requests_city(tmp_path)) as portal:
        yield portal
    assert "mnguyen-pass" not in portal.output and "ahernandez-pass" not in portal.output


def submit(portal: Portal, uid: str = "mnguyen", **changes):
    form = {
        "csrf": portal.csrf(uid, "/request?site=www.instagram.com"),
        "sites": ["instagram"],
        "purpose": "Post the summer camp schedule",
        "pages": "/CityOfExampleParks",
        "until": load_policy(portal.config).timezone and "2099-01-01",
    }
    form["until"] = re.search(r'name="until" value="([^"]+)"', portal.call(uid, "GET", "/request")[2]).group(
        1
    )
    return portal.call(uid, "POST", "/request", form | changes)


def test_the_form_asks_for_a_sign_in_and_is_prefilled_from_the_directory(portal):
    status, headers, _ = portal.call(None, "GET", "/request")
    assert status == 401 and headers["www-authenticate"].startswith('Basic realm="citygate requests"')
    assert portal.call("mnguyen", "GET", "/request", password="wrong")[0] == 401

    status, headers, page = portal.call("mnguyen", "GET", "/request?site=www.instagram.com")

    assert status == 200 and headers["cache-control"] == "no-store"
    assert "Minh Nguyen (mnguyen)" in page and "<dd>Parks</dd>" in page and "Recreation Specialist" in page
    assert 'value="instagram" checked' in page
    assert "server" not in {name.lower() for name in headers}


def test_an_employee_asks_and_their_director_approves_in_the_browser_pages(portal):
    status, headers, _ = submit(portal)
    assert status == 303 and headers["location"].startswith("/requests/mine?submitted=req-")
    request_id = headers["location"].rsplit("=", 1)[1]
    mine = portal.call("mnguyen", "GET", "/requests/mine")[2]
    assert request_id in mine and "pending" in mine

    assert request_id in portal.call("ahernandez", "GET", "/approvals")[2]
    assert request_id not in portal.call("rpatel", "GET", "/approvals")[2]  # another department's Director
    decision = {
        "csrf": portal.csrf("ahernandez", f"/approvals/{request_id}"),
        "decision": "approve",
        "reason": "",
    }
    status, headers, _ = portal.call("ahernandez", "POST", f"/approvals/{request_id}", decision)
    assert status == 303

    page = portal.call("ahernandez", "GET", f"/approvals/{request_id}")[2]
    assert "approved by ahernandez" in page
    grant = {g.request_id: g for g in load_policy(portal.config).grants}[request_id]
    assert (grant.employee, grant.approved_by, grant.paths["instagram"]) == (
        "mnguyen",
        "ahernandez",
        ("/CityOfExampleParks",),
    )
    assert "approved" in portal.call("mnguyen", "GET", "/requests/mine")[2]
    evidence = next((portal.config.parent.parent / "log").glob("requests-portal-*")) / "citygate-audit.jsonl"
    record = evidence.read_text()
    assert '"user.name":"ahernandez"' in record.replace(
        " ", ""
    ) and '"source.ip":"127.0.0.1"' in record.replace(" ", "")


@pytest.mark.parametrize(
    ("uid", "says"),
    [
        ("rpatel", "you direct Communications"),
        ("jlee", "only a Director"),
        ("mnguyen", "nobody decides their own request"),
    ],
)
def test_nobody_else_approves_through_the_page(portal, uid, says):
    request_id = submit(portal)[1]["location"].rsplit("=", 1)[1]
    page = portal.call(uid, "GET", f"/approvals/{request_id}")[2]
    assert "Approve</button>" not in page and says in page

    decision = {"csrf": portal.csrf(uid, "/request"), "decision": "approve"}
    status, _, page = portal.call(uid, "POST", f"/approvals/{request_id}", decision)

    assert status == 400 and says in page
    assert "pending" in portal.call("mnguyen", "GET", "/requests/mine")[2]


def test_a_post_without_the_signed_in_persons_token_is_refused(portal):
    request_id = submit(portal)[1]["location"].rsplit("=", 1)[1]
    forged = {"decision": "approve"}
    assert portal.call("ahernandez", "POST", f"/approvals/{request_id}", forged)[0] == 403
    someone_elses = {"csrf": portal.csrf("mnguyen", "/request"), "decision": "approve"}
    assert portal.call("ahernandez", "POST", f"/approvals/{request_id}", someone_elses)[0] == 403
    assert "pending" in portal.call("mnguyen", "GET", "/requests/mine")[2]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"purpose": "x" * 1001}, "keep it to 1000"),
        ({"purpose": "<script>alert(1)</script>"}, "(markup) are not accepted"),
        ({"sites": ["notasite"]}, "notasite is not a social media site"),
        (
            {"sites": ["instagarm"]},
            "instagarm is not a social media site in the catalog: did you mean Instagram?",
        ),
        ({"sites": ["www.example.org"]}, "it needs no request"),
        ({"until": "2099-01-01"}, "Grants last at most 365 days"),
        ({"pages": "/<b>x</b>"}, "is not a page address"),
    ],
)
def test_bad_input_gets_a_message_on_the_form_and_nothing_is_stored(portal, changes, says):
    status, _, page = submit(portal, **changes)

    assert status == 400 and says in page.replace("&lt;", "<").replace("&gt;", ">")
    assert "<script>alert(1)</script>" not in page and "<b>x</b>" not in page  # reflected, escaped
    assert "You have no requests" in portal.call("mnguyen", "GET", "/requests/mine")[2]


def test_a_request_is_always_the_signed_in_employee_s_whatever_the_form_says(portal):
    status, headers, _ = submit(portal, employee="jlee", uid_field="jlee", name="Jordan Lee")

    assert status == 303
    request_id = request_id_of(headers["location"])
    assert request_id in portal.call("mnguyen", "GET", "/requests/mine")[2]
    assert request_id not in portal.call("jlee", "GET", "/requests/mine")[2]


def test_one_open_request_per_site(portal):
    first = submit(portal)[1]["location"].rsplit("=", 1)[1]

    status, _, page = submit(portal)

    assert status == 400 and f"You already have an open request for Instagram: {first}" in page


def test_an_oversize_body_is_refused(portal):
    status, _, _ = portal.call(
        "mnguyen", "POST", "/request", {"csrf": portal.csrf("mnguyen", "/request"), "purpose": "x" * 70_000}
    )
    assert status == 413


def test_the_director_may_allow_less_than_was_asked_and_the_grant_says_so(portal):
    request_id = submit(portal, sites=["instagram", "facebook"])[1]["location"].rsplit("=", 1)[1]
    page = portal.call("ahernandez", "GET", f"/approvals/{request_id}")[2]
    assert 'name="sites" value="facebook" checked' in page and ">/CityOfExampleParks</textarea>" in page
    decision = {
        "csrf": form_value(page, "csrf"),
        "decision": "approve",
        "sites": ["instagram"],
        "pages": "/CityOfExampleParks/events",
        "until": "2026-12-31",
    }
    wider = decision | {"pages": "/SomeoneElse"}

    status, _, refused = portal.call("ahernandez", "POST", f"/approvals/{request_id}", wider)

    assert status == 400 and "an approval may allow less than was asked, never more" in refused
    assert portal.call("ahernandez", "POST", f"/approvals/{request_id}", decision)[0] == 303
    grant = {g.request_id: g for g in load_policy(portal.config).grants}[request_id]
    assert (grant.sites, grant.paths["instagram"], grant.valid_until.date().isoformat()) == (
        ("instagram",),
        ("/CityOfExampleParks/events",),
        "2027-01-01",  # through 2026-12-31
    )
    assert (
        "allowed Instagram until 2026-12-31" in portal.call("mnguyen", "GET", f"/approvals/{request_id}")[2]
    )


def test_a_form_shown_by_one_portal_host_posts_to_another(portal):
    # Two hosts behind a balancer, one store: the forms' key is the store's, not a process's.
    with running_portal(portal.config) as other_host:
        form = {
            "csrf": portal.csrf("mnguyen", "/request?site=www.instagram.com"),
            "sites": ["instagram"],
            "purpose": "Post the summer camp schedule",
            "pages": "",
            "until": form_value(portal.call("mnguyen", "GET", "/request")[2], "until"),
        }

        status, headers, page = other_host.call("mnguyen", "POST", "/request", form)

    assert status == 303, page
    assert request_id_of(headers["location"]) in portal.call("mnguyen", "GET", "/requests/mine")[2]
    # Each portal process keeps its own evidence chain; both verify.
    log = portal.config.parent.parent / "log"
    assert len(list(log.glob("requests-portal-*"))) == 2
    verified = subprocess.run(
        [CITYGATE, "audit", "verify", str(log)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_director_sees_the_employees_grants_including_one_approved_since_the_portal_started(portal):
    first = request_id_of(submit(portal)[1]["location"])
    decision = {"csrf": portal.csrf("ahernandez", f"/approvals/{first}"), "decision": "approve"}
    assert portal.call("ahernandez", "POST", f"/approvals/{first}", decision)[0] == 303
    second = request_id_of(submit(portal, sites=["facebook"])[1]["location"])

    page = portal.call("ahernandez", "GET", f"/approvals/{second}")[2]

    grants = page.split("The employee's grants")[1].split("The employee's other requests")[0]
    assert f"grant-{first.removeprefix('req-')}" in grants and f"(request {first})" in grants
