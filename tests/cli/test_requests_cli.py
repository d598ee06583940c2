"""`citygate requests`: the real console script against a copy of the demo city with requests on.

The request is stored as the portal stores it (RequestStore.submit); deciding it goes through
the CLI, signed in with the approver's directory password (the demo's `<uid>-pass`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from demo_config import requests_city, with_sections
from smtp import PASSWORD, USER, SmtpServer, email_settings

from citygate.directory.model import Person
from citygate.proxy.policy import load_policy
from citygate.proxy.requests.form import Draft
from citygate.proxy.requests.store import RequestStore

ROOT = Path(__file__).resolve().parents[2]
CITYGATE = str(Path(sys.executable).parent / "citygate")
LA = ZoneInfo("America/Los_Angeles")
MINH = Person("mnguyen", "Minh Nguyen", "Parks", "Recreation Specialist")


def citygate(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CITYGATE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=f"{password}\n" if password else "",
    )


@pytest.fixture
def city(tmp_path: Path) -> tuple[Path, str]:
    config = requests_city(tmp_path)
    policy = load_policy(config)
    store = RequestStore(policy.features.requests.database)
    store.migrate()
    until = datetime.now(LA).date() + timedelta(days=60)
    request = store.submit(
        MINH, Draft(("instagram",), "Post the summer camp schedule", until), datetime.now(LA)
    )
    store.close()
    return config, request.id


def decide(config: Path, action: str, request_id: str, uid: str, password: str, *more: str):
    return citygate(
        "requests",
        action,
        request_id,
        "--config",
        str(config),
        "--as",
        uid,
        "--password-stdin",
        *more,
        password=password,
    )


def test_a_director_lists_shows_and_approves_and_the_evidence_verifies(city):
    config, request_id = city

    listed = citygate("requests", "list", "--config", str(config))
    assert listed.returncode == 0
    assert f"{request_id}\tpending\tDepartment Director\tmnguyen\tParks\tinstagram\t" in listed.stdout

    approved = decide(config, "approve", request_id, "ahernandez", "ahernandez-pass")
    assert approved.returncode == 0, approved.stderr
    grant_id = "grant-" + request_id.removeprefix("req-")
    assert f"{request_id}: approved" in approved.stdout
    assert f"grant {grant_id} written to {config.parent / 'grants' / 'parks.yaml'}" in approved.stdout

    assert f"request: {request_id}" in (config.parent / "grants" / "parks.yaml").read_text()
    checked = citygate("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shown = citygate("requests", "show", request_id, "--config", str(config))
    assert "decision    Department Director: approved by ahernandez" in shown.stdout
    assert "signed in with cli from cli" in shown.stdout
    assert f"grant       {grant_id}" in shown.stdout

    log = config.parent.parent / "log"
    verified = citygate("audit", "verify", str(log))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    [chain] = log.glob("requests-cli-*")
    evidence = (chain / "citygate-audit.jsonl").read_text()
    assert '"event.action":"access-request-approved"' in evidence.replace(" ", "")
    assert "ahernandez-pass" not in evidence


@pytest.mark.parametrize(
    ("uid", "password", "status", "says"),
    [
        ("rpatel", "rpatel-pass", 1, "you direct Communications, not Parks's department"),
        ("jlee", "jlee-pass", 1, "only a Director of the employee's department"),
        ("mnguyen", "mnguyen-pass", 1, "nobody decides their own request"),
        ("ahernandez", "not-her-password", 2, "sign-in refused for ahernandez: wrong password"),
    ],
)
def test_others_cannot_approve_from_the_terminal(city, uid, password, status, says):
    config, request_id = city

    refused = decide(config, "approve", request_id, uid, password)

    assert (refused.returncode, refused.stdout) == (status, "")
    assert says in refused.stderr
    assert password not in refused.stderr
    assert f"{request_id}\tpending" in citygate("requests", "list", "--config", str(config)).stdout


def test_a_director_may_allow_less_from_the_terminal_never_more(city):
    config, request_id = city
    shorter = (datetime.now(LA).date() + timedelta(days=30)).isoformat()

    wider = decide(
        config,
        "approve",
        request_id,
        "ahernandez",
        "ahernandez-pass",
        "--sites",
        "instagram,facebook",
        "--until",
        "2099-01-01",
    )
    assert wider.returncode == 2 and "--until: Choose a last day from" in wider.stderr
    approved = decide(
        config,
        "approve",
        request_id,
        "ahernandez",
        "ahernandez-pass",
        "--page",
        "/CityOfExampleParks",
        "--until",
        shorter,
    )

    assert approved.returncode == 0, approved.stderr
    grant = {g.request_id: g for g in load_policy(config).grants}[request_id]
    last_day = (grant.valid_until - timedelta(days=1)).date().isoformat()  # valid_until: the day after
    assert (grant.paths["instagram"], last_day) == (("/CityOfExampleParks",), shorter)
    shown = citygate("requests", "show", request_id, "--config", str(config)).stdout
    assert f"allowed     instagram until {shorter}; instagram: /CityOfExampleParks" in shown


def test_a_denial_needs_a_reason(city):
    config, request_id = city

    silent = decide(config, "deny", request_id, "ahernandez", "ahernandez-pass")
    assert silent.returncode == 1 and "say why the request is denied" in silent.stderr

    denied = decide(
        config, "deny", request_id, "ahernandez", "ahernandez-pass", "--reason", "Use the Parks page"
    )
    assert denied.returncode == 0 and f"{request_id}: denied" in denied.stdout
    assert "denied by ahernandez" in citygate("requests", "show", request_id, "--config", str(config)).stdout


def test_requests_off_says_how_to_turn_them_on(city):
    config, _ = city
    with_sections(config, requests={"enabled": False})

    off = citygate("requests", "list", "--config", str(config))

    assert off.returncode == 2
    assert "access requests are off" in off.stderr and "requests: {enabled: true}" in off.stderr


@pytest.mark.parametrize("setting", ["warn", "require"])
def test_check_names_grants_no_recorded_approval_backs(city, setting):
    config, request_id = city
    with_sections(
        config,
        requests={
            "enabled": True,
            "database": str(config.parents[1] / "requests.sqlite"),
            "recorded_approvals": setting,
        },
    )
    assert decide(config, "approve", request_id, "ahernandez", "ahernandez-pass").returncode == 0
    grant_id = "grant-" + request_id.removeprefix("req-")

    checked = citygate("check", "--no-directory", "--config", str(config))

    assert checked.returncode == (1 if setting == "require" else 0)
    assert (
        "grant parks-2026-001: no recorded approval backs it (written by hand, without request:)"
        in checked.stdout
    )
    assert grant_id not in checked.stdout  # the approved one is backed
    parks = config.parent / "grants" / "parks.yaml"
    parks.write_text(
        parks.read_text().replace(
            "    sites: [instagram]\n    purpose: Post the summer",
            "    sites: [instagram, x]\n    purpose: Post the summer",
        )
    )
    edited = citygate("check", "--no-directory", "--config", str(config))
    assert (
        f"grant {grant_id}: its file entry differs from what request {request_id} approved: sites"
        in edited.stdout
    )


def test_hand_written_grants_keep_working_by_default(city):
    config, _ = city

    checked = citygate("check", "--no-directory", "--config", str(config))

    assert checked.returncode == 0 and "recorded approval" not in checked.stdout + checked.stderr


def with_mail(config: Path, server: SmtpServer) -> None:
    """The city's requests section with mail through `server`, signed in with a password file."""
    with_sections(
        config,
        requests={
            "enabled": True,
            "database": str(config.parents[1] / "requests.sqlite"),
            "portal_url": "https://requests.city.example",
            "email": email_settings(server, config.parents[1]),
        },
    )


def test_advance_sends_the_mail_due_and_prints_what_became_of_each(city, tmp_path):
    config, request_id = city  # stored before mail was set up: advance queues its notice
    server = SmtpServer(tmp_path / "smtp")
    with_mail(config, server)

    down = citygate("requests", "advance", "--config", str(config))

    assert down.returncode == 0, down.stderr  # the run did its work; the mail is tried again
    assert down.stdout.startswith("mail not sent (attempt 1, next try ")
    assert f"): {request_id} new-request to ahernandez@city.example: 127.0.0.1:{server.port}: " in down.stdout
    assert "Connection refused" in down.stdout
    assert citygate("requests", "advance", "--config", str(config)).stdout == ""  # not due for a minute

    # A minute later, with the server up, the next run (or the portal) sends it.
    store = RequestStore(load_policy(config).features.requests.database)
    [queued] = store.outbox(request_id)
    assert queued.next_attempt_at is not None and queued.attempts == 1
    store.mark_failed(
        queued.id, queued.last_error, queued.next_attempt_at - timedelta(minutes=1)
    )  # its minute passed
    store.close()
    with server:
        sent = citygate("requests", "advance", "--config", str(config))
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == f"mail sent: {request_id} new-request to ahernandez@city.example\n"
        [mail] = server.received
        assert mail.login == USER and request_id in mail.body
        assert citygate("requests", "advance", "--config", str(config)).stdout == ""  # sent once
    assert PASSWORD not in down.stdout + down.stderr + sent.stdout + sent.stderr


COMMUNICATIONS_OFFICE = """
dn: cn=communications-office,ou=groups,dc=city,dc=example
objectClass: groupOfNames
cn: communications-office
member: uid=kwilliams,ou=people,dc=city,dc=example
"""


def test_with_two_stages_the_recommendation_makes_no_grant_and_both_decisions_are_evidence(tmp_path):
    # Glendale's procedure (config/examples/glendale-two-stage-requests.yaml), on the demo
    # directory with the Office of Communication and Public Affairs' group added.
    example = yaml.safe_load((ROOT / "config" / "examples" / "glendale-two-stage-requests.yaml").read_text())
    config = requests_city(tmp_path, stages=example["requests"]["stages"])
    ldif = tmp_path / "demo.ldif"
    ldif.write_text((ROOT / "directory" / "demo.ldif").read_text() + COMMUNICATIONS_OFFICE)
    document = yaml.safe_load(config.read_text())
    document["directory"]["ldif"] = str(ldif)
    config.write_text(yaml.safe_dump(document))
    store = RequestStore(load_policy(config).features.requests.database)
    store.migrate()
    until = datetime.now(LA).date() + timedelta(days=60)
    request = store.submit(
        MINH, Draft(("instagram",), "Post the summer camp schedule", until), datetime.now(LA)
    )
    store.close()
    grants = config.parent / "grants" / "parks.yaml"
    before = grants.read_text()

    recommended = decide(config, "approve", request.id, "ahernandez", "ahernandez-pass")

    assert recommended.returncode == 0, recommended.stderr
    assert f"{request.id}: pending, stage 2" in recommended.stdout
    assert grants.read_text() == before  # no grant from a recommendation
    assert decide(config, "approve", request.id, "rpatel", "rpatel-pass").returncode == 1  # not the Office
    decided = decide(config, "approve", request.id, "kwilliams", "kwilliams-pass")
    assert decided.returncode == 0, decided.stderr
    assert f"{request.id}: approved" in decided.stdout and f"request: {request.id}" in grants.read_text()

    log = config.parent.parent / "log"
    verified = citygate("audit", "verify", str(log))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    [chain] = log.glob("requests-cli-*")
    records = [json.loads(line) for line in (chain / "citygate-audit.jsonl").read_text().splitlines()]
    approvals = [
        (r["user.name"], r["citygate.request.stage_name"])
        for r in records
        if r.get("event.action") == "access-request-approved"
    ]
    assert approvals == [
        ("ahernandez", "Department Director recommends"),
        ("kwilliams", "Office of Communication and Public Affairs decides"),
    ]
