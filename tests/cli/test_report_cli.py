"""`citygate report` and `citygate grants review` on a known access log, checked by content.

The log is written by the real AuditWriter into two worker folders, as `citygate run --workers 2`
leaves it, and read by the installed `citygate` command. It is one Monday in November (city
time, PST) of the demo city:

    worker-0  09:00:10  jlee      allowed  /CityOfExampleParks         (a process's stray
                                                                        early warning recorded)
              09:01:05  jlee      allowed  /CityOfExampleParks/events
              19:30:00  jlee      allowed  /CityOfExampleParks/photos  flags: after-hours
              10:00:00  mnguyen   denied   no_grant
              10:04:00  mnguyen   denied   no_grant
    worker-1  09:02:30  jlee      allowed  /CityOfExampleParks/about
              09:03:00  jlee      denied   /messages (path_out_of_scope)   flags: out-of-scope
              10:02:00  mnguyen   denied   no_grant
              11:00:00  kwilliams tunnel passed through (facebook)
              11:00:00  (nobody)  407
    and one record the day before and one the day after, outside the period.

No process saw more than 3 of jlee's requests or 2 of mnguyen's denials: only the merged logs
show that jlee went over the daily budget and that mnguyen was refused 3 times in 10 minutes.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from citygate.proxy.audit.config import AuditSettings
from citygate.proxy.audit.record import DECISION_FIELDS, timestamp
from citygate.proxy.audit.writer import AuditWriter

ROOT = Path(__file__).resolve().parents[2]
CITYGATE = str(Path(sys.executable).parent / "citygate")
LA = ZoneInfo("America/Los_Angeles")

RULES = [
    {"id": "after-hours", "kind": "outside_business_hours", "hours": "07:00-18:00"},
    {"id": "out-of-scope", "kind": "path_out_of_scope"},
    {"id": "busy", "kind": "daily_requests", "limit": 3},
    {"id": "long", "kind": "daily_active_minutes", "limit": 2},
    {"id": "retries", "kind": "repeated_denials", "count": 3, "window_minutes": 10},
    {"id": "renew", "kind": "grant_expiring", "days": 60},
]


def citygate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CITYGATE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def record(
    at: datetime, user: str | None, action: str = "http-request", **fields: object
) -> dict[str, object]:
    departments = {"jlee": "Parks", "mnguyen": "Parks", "kwilliams": "Communications"}
    base: dict[str, object] = dict.fromkeys(DECISION_FIELDS)
    base.update(
        {
            "@timestamp": timestamp(at),
            "ecs.version": "8.11.0",
            "event.kind": "event",
            "event.category": ["web"],
            "event.id": f"{abs(hash((at, user, action))):032x}"[:32],
            "event.action": action,
            "event.type": "allowed",
            "event.reason": "granted",
            "user.name": user,
            "citygate.department": departments.get(user or ""),
            "url.domain": "www.facebook.com",
            "http.request.method": "GET",
            "citygate.site": "facebook",
            "citygate.mode": "enforce",
            "citygate.flags": [],
        }
    )
    base.update(fields)
    return base


def day(hour: int, minute: int, second: int = 0, *, date: tuple[int, int, int] = (2026, 11, 2)) -> datetime:
    return datetime(*date, hour, minute, second, tzinfo=LA)


PARKS = {"rule.id": "parks-2026-001", "citygate.approver": "ahernandez"}
NO_GRANT = {
    "event.type": "denied",
    "event.reason": "no_grant",
    "url.path": "/",
    "http.response.status_code": 403,
}

WORKER_0 = [
    record(day(9, 0, 10), "jlee", **PARKS, **{"url.path": "/CityOfExampleParks", "citygate.flags": ["busy"]}),
    record(day(9, 1, 5), "jlee", **PARKS, **{"url.path": "/CityOfExampleParks/events"}),
    record(
        day(19, 30),
        "jlee",
        **PARKS,
        **{"url.path": "/CityOfExampleParks/photos", "citygate.flags": ["after-hours"]},
    ),
    record(day(10, 0), "mnguyen", **NO_GRANT),
    record(day(10, 4), "mnguyen", **NO_GRANT),
]
WORKER_1 = [
    record(day(9, 2, 30), "jlee", **PARKS, **{"url.path": "/CityOfExampleParks/about"}),
    record(
        day(9, 3),
        "jlee",
        **PARKS,
        **{
            "event.type": "denied",
            "event.reason": "path_out_of_scope",
            "url.path": "/messages",
            "citygate.flags": ["out-of-scope"],
        },
    ),
    record(day(10, 2), "mnguyen", **NO_GRANT),
    record(
        day(11, 0),
        "kwilliams",
        "http-connect",
        **{"rule.id": "comms-2026-001", "citygate.tunnel": "passthrough", "event.category": ["network"]},
    ),
    record(
        day(11, 0), None, **{"event.type": "denied", "event.reason": "credentials_required", "url.path": "/"}
    ),
    record(day(23, 50, date=(2026, 11, 1)), "jlee", **PARKS, **{"url.path": "/CityOfExampleParks"}),  # before
    record(day(9, 0, date=(2026, 11, 3)), "kwilliams", **{"rule.id": "comms-2026-001"}),  # after
]


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> tuple[Path, Path]:
    """(config, log folder): the demo configuration with RULES, and the log above."""
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(ROOT / "config", root / "config")
    shutil.copytree(ROOT / "directory", root / "directory")
    config = root / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["flags"] = {"rules": RULES}
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    log = root / "log"
    for worker, records in (("worker-0", WORKER_0), ("worker-1", WORKER_1)):
        writer = AuditWriter(AuditSettings(directory=log / worker, compress=False), LA)
        writer.start()
        for item in records:
            writer.submit(item)
        writer.close()
    return config, log


def rows_of(text: str) -> dict[tuple[str, str, str], dict[str, str]]:
    return {
        (row["level"], row["department"], row["employee"]): row for row in csv.DictReader(io.StringIO(text))
    }


def test_the_csv_report_has_every_figure_per_department_and_employee(known):
    config, log = known
    result = citygate(
        "report", str(log), "--config", str(config), "--since", "2026-11-02", "--until", "2026-11-02"
    )

    assert result.returncode == 0, result.stderr
    assert "citygate: 10 decision record(s)" in result.stderr
    rows = rows_of(result.stdout)
    jlee = rows[("employee", "Parks", "jlee")]
    # 4 allowed requests in 4 distinct minutes (09:00, 09:01, 09:02, 19:30), one refusal.
    assert (jlee["requests"], jlee["denied"], jlee["active_minutes"]) == ("4", "1", "4")
    # Recorded per-request flags as recorded; the budgets found over both workers' logs, once
    # each, and the stray early warning recorded by one process not counted on top.
    assert {
        rule: jlee[f"flags:{rule}"]
        for rule in ("after-hours", "out-of-scope", "busy", "long", "retries", "renew")
    } == {
        "after-hours": "1",
        "out-of-scope": "1",
        "busy": "1",
        "long": "1",
        "retries": "0",
        "renew": "0",
    }
    assert (jlee["grants_used"], jlee["grants_unused"], jlee["grants_expiring"]) == ("1", "0", "0")

    mnguyen = rows[("employee", "Parks", "mnguyen")]
    assert (mnguyen["requests"], mnguyen["denied"], mnguyen["flags:retries"]) == ("0", "3", "1")

    kwilliams = rows[("employee", "Communications", "kwilliams")]
    assert (kwilliams["requests"], kwilliams["active_minutes"], kwilliams["grants_used"]) == ("1", "1", "1")

    # dbrown has a grant and no request: unused, and it ends within 60 days of the period.
    dbrown = rows[("employee", "Police", "dbrown")]
    assert (dbrown["requests"], dbrown["unused_grant_ids"], dbrown["expiring_grant_ids"]) == (
        "0",
        "police-2026-001;police-2026-002",
        "police-2026-001",
    )

    parks = rows[("department", "Parks", "")]
    assert (parks["requests"], parks["denied"], parks["active_minutes"], parks["flags:retries"]) == (
        "4",
        "4",
        "4",
        "1",
    )
    assert rows[("department", "Police", "")]["grants_unused"] == "2"
    assert not [key for key in rows if key[2] == "" and key[0] == "employee"]  # nobody signed in: left out


def test_a_shorter_period_counts_only_its_records_but_keeps_the_days_budget(known):
    config, log = known
    evening = citygate(
        "report",
        str(log),
        "--config",
        str(config),
        "--since",
        "2026-11-02T19:00",
        "--until",
        "2026-11-02T20:00",
    )

    jlee = rows_of(evening.stdout)[("employee", "Parks", "jlee")]
    # Only the 19:30 request is in the period, but it is the day's 4th: the budget flag is there.
    assert (jlee["requests"], jlee["flags:busy"], jlee["flags:after-hours"], jlee["flags:long"]) == (
        "1",
        "1",
        "1",
        "0",
    )


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_html_report_is_one_self_contained_page_with_charts(known, tmp_path):
    config, log = known
    output = tmp_path / "report.html"
    result = citygate(
        "report", str(log), "--config", str(config), "--since", "2026-11-02", "--until", "2026-11-02",
        "--format", "html", "--output", str(output),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    html = output.read_text()
    page = _Page()
    page.feed(html)
    tags = {tag for tag, _ in page.tags}
    assert "svg" in tags and "rect" in tags and "table" in tags
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    # Nothing to fetch: no source, no link, no stylesheet import (the SVG namespace is a name).
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name in ("src", "href") or (value and "url(" in value):
                raise AssertionError(f"<{tag} {name}={value!r}> loads something")
    assert "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html
    text = " ".join(" ".join(page.text).split())
    assert "Social-media use report" in text
    assert "City of Example: 2026-11-02 (America/Los_Angeles)" in text  # one whole city day
    assert "jlee Parks 4 1 0h 04m" in text  # employee, department, requests, denied, active time
    assert "busy 1" in text and "retries 1" in text
    assert "police-2026-001" in text


def test_grants_review_lists_each_directors_grants_with_last_use(known, tmp_path):
    config, log = known
    result = citygate("grants", "review", str(log), "--config", str(config))

    assert result.returncode == 0, result.stderr
    rows = {row["grant"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert set(rows) == {
        "parks-2026-001",
        "parks-2026-002",
        "comms-2026-001",
        "comms-2026-002",
        "police-2026-001",
        "police-2026-002",
        "city-2026-001",
    }
    assert (rows["parks-2026-002"]["kind"], rows["parks-2026-002"]["employee"]) == (
        "group",
        "group parks-social-team",
    )
    assert (rows["city-2026-001"]["kind"], rows["city-2026-001"]["employee"]) == ("city", "everyone")
    assert rows["parks-2026-001"]["used_by"] == "jlee"
    assert (rows["parks-2026-001"]["approver_name"], rows["parks-2026-001"]["employee_name"]) == (
        "Ana Hernandez",
        "Jordan Lee",
    )
    assert rows["police-2026-002"]["hours"] == "Mon-Fri 07:00-18:00"
    assert rows["parks-2026-001"]["hours"] == ""
    parks = rows["parks-2026-001"]
    assert (parks["approver"], parks["employee"], parks["department"], parks["sites"]) == (
        "ahernandez",
        "jlee",
        "Parks",
        "facebook;instagram",
    )
    assert parks["purpose"].startswith("Publish park closures")
    assert (parks["expires"], parks["requests"], parks["unused"]) == ("2027-01-11", "5", "no")
    assert parks["last_use"] == "2026-11-02T19:30:00-08:00"
    # The tunnel on the 2nd and the request on the 3rd.
    assert rows["comms-2026-001"]["last_use"] == "2026-11-03T09:00:00-08:00"
    police = rows["police-2026-001"]
    assert (police["approver"], police["requests"], police["last_use"], police["unused"]) == (
        "lgarcia",
        "0",
        "",
        "yes",
    )

    one = citygate(
        "grants", "review", str(log), "--config", str(config), "--approver", "lgarcia", "--format", "html"
    )
    assert one.returncode == 0, one.stderr
    page = _Page()
    page.feed(one.stdout)
    text = " ".join(" ".join(page.text).split())
    # A Director reviews people by name (the directory's), with their logins.
    assert "Approved by Luis Garcia (lgarcia)" in text and "police-2026-001" in text and "not used" in text
    assert "Dana Brown (dbrown)" in text
    assert "ahernandez" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("report", "/nonexistent/log"), "no such file or folder: /nonexistent/log"),
        (("report", ".", "--since", "last tuesday"), "is not a time; use a date"),
        (("report", ".", "--since", "2026-11-03", "--until", "2026-11-01"), "is not after --since"),
        (("grants", "review", ".", "--config", "/nonexistent.yaml"), "file not found"),
    ],
)
def test_mistakes_exit_2_and_say_what_to_do(args, message):
    result = citygate(*args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_has_examples():
    for command in (("report",), ("grants", "review")):
        result = citygate(*command, "--help")
        assert result.returncode == 0 and "examples:" in result.stdout
        assert re.search(rf"citygate {' '.join(command)} ", result.stdout)
