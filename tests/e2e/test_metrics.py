"""Metrics and flags through a real proxy: scraped over HTTP and checked by value.

A real mitmproxy runs citygate with the flags recorder, the access log and the metrics addon;
curl sends a known morning of traffic; /metrics is then fetched over HTTP from the listener and
parsed with prometheus_client's own parser. Expected values come from the traffic sent (each
request below says what it must be counted as), from the access log the same run wrote, and
from the grant files read with plain YAML. `citygate run --workers 2` is checked the same way,
through the supervisor's single listener.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from harness import curl
from prometheus_client.parser import text_string_to_metric_families
from test_audit_log import fill

from citygate.addons.audit import AuditLog
from citygate.addons.decision_log import DecisionLog
from citygate.addons.flags import Flags
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics
from citygate.proxy.audit.files import expand, open_log

ROOT = Path(__file__).resolve().parents[2]
# A real tmpfs that can be made read-only under the running proxy (tests/e2e/test_audit_log.py).
pytest_plugins = ["test_audit_log"]
CITYGATE = str(Path(sys.executable).parent / "citygate")
LA = ZoneInfo("America/Los_Angeles")
JLEE, MNGUYEN, KWILLIAMS = "jlee:jlee-pass", "mnguyen:mnguyen-pass", "kwilliams:kwilliams-pass"


# --- a configuration for the run -------------------------------------------------------------


def config_copy(tmp_path: Path, *, metrics: dict | None = None, flags: list | None = None) -> Path:
    """The demo configuration in tmp_path, with its metrics and flags sections replaced."""
    (tmp_path / "config").mkdir()
    (tmp_path / "directory").mkdir()
    for name in ("sites.yaml",):
        (tmp_path / "config" / name).write_bytes((ROOT / "config" / name).read_bytes())
    (tmp_path / "config" / "grants").mkdir()
    for grant_file in (ROOT / "config" / "grants").glob("*.yaml"):
        (tmp_path / "config" / "grants" / grant_file.name).write_bytes(grant_file.read_bytes())
    (tmp_path / "directory" / "demo.ldif").write_bytes((ROOT / "directory" / "demo.ldif").read_bytes())
    document = yaml.safe_load((ROOT / "config" / "citygate.yaml").read_text())
    document["metrics"] = {"listen": "127.0.0.1:0", "refresh_seconds": 0.2, **(metrics or {})}
    document["flags"] = {"rules": flags if flags is not None else scenario_rules()}
    config = tmp_path / "config" / "citygate.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    return config


def scenario_rules() -> list[dict]:
    """Rules that this morning of traffic triggers, each at a known request."""
    today = datetime.now(LA).date()
    return [
        # Today (and the days around it, should the test run at midnight) is a holiday, so any
        # use now is outside business hours.
        {
            "id": "after-hours",
            "kind": "outside_business_hours",
            "holidays": [today - timedelta(days=1), today, today + timedelta(days=1)],
        },
        {"id": "out-of-scope", "kind": "path_out_of_scope"},
        {"id": "busy", "kind": "daily_requests", "limit": 2},
        # Fires on a request in a second distinct minute, if the run crosses a minute boundary:
        # the test works out from the log's timestamps which request that was, if any.
        {"id": "long", "kind": "daily_active_minutes", "limit": 1},
        {"id": "retries", "kind": "repeated_denials", "count": 2, "window_minutes": 10},
        {"id": "renew", "kind": "grant_expiring", "days": 366},
    ]


# --- the traffic, and what each request must be counted as -----------------------------------


@dataclass
class Sent:
    user: str | None
    url: str
    status: int
    decision: str | None  # the decision's result label, None for ordinary traffic
    reason: str | None
    department: str | None
    flags: set[str] = field(default_factory=set)
    data: str | None = None
    body_bytes: int = 0  # filled in from curl


ON_A_GRANT = {"after-hours", "renew"}

MORNING = [
    Sent("mnguyen", "http://www.facebook.com/", 403, "deny", "no_grant", "Parks"),
    Sent("mnguyen", "http://www.facebook.com/groups", 403, "deny", "no_grant", "Parks", {"retries"}),
    Sent(
        "jlee",
        "http://www.facebook.com/CityOfExampleParks/events",
        200,
        "allow",
        "granted",
        "Parks",
        ON_A_GRANT,
    ),
    Sent("jlee", "http://www.facebook.com/CityOfExampleParks", 200, "allow", "granted", "Parks", ON_A_GRANT),
    Sent(
        "jlee",
        "http://www.facebook.com/CityOfExampleParks/photos",
        200,
        "allow",
        "granted",
        "Parks",
        ON_A_GRANT | {"busy"},
    ),
    Sent(
        "jlee",
        "http://www.facebook.com/CityOfExampleParks/posts",
        200,
        "allow",
        "granted",
        "Parks",
        ON_A_GRANT,
        data="x" * 100,
    ),
    Sent(
        "jlee",
        "http://www.facebook.com/messages",
        403,
        "deny",
        "path_out_of_scope",
        "Parks",
        {"out-of-scope"},
    ),
    Sent(None, "http://www.facebook.com/", 407, "auth_required", "credentials_required", "unknown"),
    Sent("kwilliams", "https://www.facebook.com/", 200, "allow", "granted", "Communications", ON_A_GRANT),
    Sent(None, "http://www.example.org/news", 200, None, None, None),
    Sent(None, "https://www.example.org/", 200, None, None, None),
]
PASSWORDS = {"jlee": JLEE, "mnguyen": MNGUYEN, "kwilliams": KWILLIAMS}


def send(runner, morning: list[Sent]) -> None:
    for sent in morning:
        extra = ["--data-binary", sent.data] if sent.data else []
        result = curl(runner, sent.url, proxy_user=PASSWORDS.get(sent.user or ""), extra_args=extra)
        assert result.status == sent.status, (sent.url, result.status, result.stderr)
        sent.body_bytes = len(result.body.encode())


# --- reading /metrics ---------------------------------------------------------------------------


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample on /metrics by sample name, as (labels, value)."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def values(samples, name: str, *label_names: str) -> dict[tuple[str, ...], float]:
    """{label values: value} of one sample name, zero-valued series left out."""
    return {
        tuple(labels[label] for label in label_names): value
        for labels, value in samples.get(name, [])
        if value
    }


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def people_in_directory() -> set[str]:
    """Every login and full name in the demo directory: none may appear in a label."""
    text = (ROOT / "directory" / "demo.ldif").read_text()
    return {
        value.strip()
        for key, value in re.findall(r"(?m)^(uid|cn|sn|givenName):\s*(.+)$", text)
        if key != "cn" or " " in value
    }


def expected_grant_gauges(at: datetime, expiring_days: int) -> tuple[Counter, Counter]:
    """Active and expiring grants by (site, department), from the grant files read as plain YAML."""
    active, expiring = Counter(), Counter()
    for path in (ROOT / "config" / "grants").glob("*.yaml"):
        document = yaml.safe_load(path.read_text())
        for grant in document["grants"]:
            starts = datetime.combine(grant.get("start") or grant["approved_on"], datetime.min.time(), LA)
            ends = datetime.combine(grant["expires"] + timedelta(days=1), datetime.min.time(), LA)
            if not starts <= at < ends:
                continue
            for site in grant["sites"]:
                active[(site, document.get("department", "unknown"))] += 1
                if ends - at <= timedelta(days=expiring_days):
                    expiring[(site, document.get("department", "unknown"))] += 1
    return active, expiring


# --- one process ---------------------------------------------------------------------------------


@pytest.fixture
def run(proxy_runner_factory, redirect_addon, tmp_path):
    def start(config: Path):
        metrics = Metrics()
        runner = proxy_runner_factory(
            [CityGate(), Flags(), AuditLog(), DecisionLog(), metrics, redirect_addon],
            {
                "citygate_config": str(config),
                "citygate_audit_directory": str(tmp_path / "log"),
                "citygate_metrics_listen": "127.0.0.1:0",
            },
        )
        assert metrics.server is not None
        return runner, metrics

    return start


def test_after_a_run_metrics_show_the_right_counts_with_no_employee_in_any_label(run, tmp_path):
    runner, metrics = run(config_copy(tmp_path, metrics={"expiring_days": 60}))
    send(runner, MORNING)
    url = metrics.server.url
    samples = wait_for(lambda: (s := scrape(url)) and values(s, "citygate_audit_log_healthy") and s)

    # Decisions by site, department, decision and reason: one per social request sent, and one
    # more for the CONNECT of each allowed HTTPS request (its tunnel is decrypted, so the request
    # inside is decided on its own).
    expected = Counter(
        ("facebook", s.department, s.decision, s.reason) for s in MORNING if s.decision is not None
    )
    expected.update(
        ("facebook", s.department, s.decision, s.reason)
        for s in MORNING
        if s.decision == "allow" and s.url.startswith("https:")
    )
    assert values(samples, "citygate_decisions_total", "site", "department", "decision", "reason") == expected

    # Bytes relayed for allowed requests, plain HTTP and inside decrypted tunnels: what curl
    # sent and received.
    relayed = [s for s in MORNING if s.decision == "allow"]
    assert values(samples, "citygate_bytes_total", "site", "department", "direction") == {
        (site, department, direction): total
        for (site, department, direction), total in {
            ("facebook", "Parks", "request"): sum(
                len(s.data or "") for s in relayed if s.department == "Parks"
            ),
            ("facebook", "Parks", "response"): sum(s.body_bytes for s in relayed if s.department == "Parks"),
            ("facebook", "Communications", "request"): sum(
                len(s.data or "") for s in relayed if s.department == "Communications"
            ),
            ("facebook", "Communications", "response"): sum(
                s.body_bytes for s in relayed if s.department == "Communications"
            ),
        }.items()
        if total
    }

    # One latency observation per decision; ordinary connections counted, by kind.
    assert values(samples, "citygate_decision_duration_seconds_count") == {(): sum(expected.values())}
    assert values(samples, "citygate_passthrough_connections_total", "kind") == {("http",): 1, ("tunnel",): 1}

    # The directory calls the gateway made, all answered.
    calls = runner.call(lambda: dict(runner.master.addons.get("citygate").config.current.directory.calls))
    assert values(samples, "citygate_directory_requests_total", "operation", "result") == {
        (operation, "ok"): count for operation, count in calls.items()
    }
    assert values(samples, "citygate_directory_request_duration_seconds_count", "operation") == {
        (operation,): count for operation, count in calls.items()
    }

    # Grants in force and ending within metrics.expiring_days, by site and grant-file department.
    active, expiring = expected_grant_gauges(datetime.now(LA), 60)
    assert values(samples, "citygate_active_grants", "site", "department") == active
    assert values(samples, "citygate_grants_expiring", "site", "department") == expiring
    assert expiring  # the demo has grants ending within 60 days of the test's date

    assert values(samples, "citygate_config_reloads_total", "result") == {("success",): 1}
    assert values(samples, "citygate_audit_log_healthy") == {(): 1}
    assert values(samples, "citygate_audit_write_errors_total") == {}
    assert [labels for labels, _ in samples["citygate_build_info"]] == [{"version": "0.1.0"}]

    # No employee anywhere: not in a label name, not in a label value.
    names = people_in_directory()
    assert {"jlee", "Jordan Lee", "kwilliams"} <= names
    for sample_list in samples.values():
        for labels, _ in sample_list:
            assert not {"user", "employee", "uid", "user_name"} & set(labels)
            assert not names & set(labels.values()), labels

    # The same flags are on the access-log records of the same requests.
    runner.stop()
    records = [json.loads(line) for path in expand([tmp_path / "log"]) for line in open_log(path)]
    decisions = [r for r in records if r.get("event.action") in ("http-request", "http-connect")]
    second_minute = second_active_minutes(decisions)
    flagged = Counter()
    for sent in MORNING:
        if sent.decision is None:
            continue
        # HTTPS included: the request inside the decrypted tunnel carries the flags.
        path = "/" + sent.url.split("/", 3)[3]
        [record] = [r for r in decisions if r["user.name"] == sent.user and r["url.path"] == path]
        flags = sent.flags | ({"long"} if record["event.id"] in second_minute else set())
        assert set(record["citygate.flags"]) == flags, (sent.url, record["citygate.flags"])
        flagged.update(("facebook", sent.department, flag) for flag in flags)
    assert len(decisions) == sum(expected.values())
    # Flags by site, department and rule, in the metric: those the requests above raised.
    assert values(samples, "citygate_nonbusiness_flags_total", "site", "department", "rule") == flagged


def second_active_minutes(records: list[dict]) -> set[str]:
    """Event ids of the uses that made an employee active in a second minute on a site."""
    minutes: dict[tuple[str, str], set[str]] = {}
    found = set()
    for record in sorted(records, key=lambda r: r["@timestamp"]):
        passthrough = record["event.action"] == "http-connect" and record["citygate.tunnel"] == "passthrough"
        if record["event.type"] != "allowed" or not (record["event.action"] == "http-request" or passthrough):
            continue
        minute = datetime.fromisoformat(record["@timestamp"]).astimezone(LA).strftime("%Y-%m-%d %H:%M")
        seen = minutes.setdefault((record["user.name"], record["citygate.site"]), set())
        if minute not in seen:
            seen.add(minute)
            if len(seen) == 2:
                found.add(record["event.id"])
    return found


def test_a_failed_reload_and_a_failing_access_log_show_in_the_metrics(
    proxy_runner_factory, redirect_addon, tiny_disk, tmp_path
):
    config = config_copy(tmp_path, flags=[])
    metrics = Metrics()
    runner = proxy_runner_factory(
        [CityGate(), Flags(), AuditLog(), DecisionLog(), metrics, redirect_addon],
        {
            "citygate_config": str(config),
            "citygate_audit_directory": str(tiny_disk / "log"),
            "citygate_metrics_listen": "127.0.0.1:0",
        },
    )
    url = metrics.server.url
    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text().replace("max_grant_days: 365", "max_grant_days: lots"))
    with pytest.raises(Exception, match="max_grant_days"):
        runner.update_options(citygate_config=str(broken))
    samples = wait_for(
        lambda: (
            (s := scrape(url))
            and values(s, "citygate_config_reloads_total", "result").get(("failure",))
            and s
        )
    )
    # The start-up load, the failure, and mitmproxy's rollback, which loads the previous file again.
    assert values(samples, "citygate_config_reloads_total", "result") == {("success",): 2, ("failure",): 1}
    assert values(samples, "citygate_audit_log_healthy") == {(): 1}

    # The log's disk fills up: denials cannot be written, and an allowed request is refused
    # rather than served unrecorded (audit.fail_closed).
    filler = tiny_disk / "filler"
    fill(filler)
    for _ in range(20):
        assert curl(runner, "http://www.facebook.com/", proxy_user=MNGUYEN).status == 403
        if not values(scrape(url), "citygate_audit_log_healthy"):
            break
    refused = curl(runner, "http://www.facebook.com/CityOfExampleParks", proxy_user=JLEE)
    assert refused.status == 403 and "audit_log_unavailable" in refused.body
    samples = wait_for(lambda: (s := scrape(url)) and values(s, "citygate_audit_refusals_total") and s)
    assert values(samples, "citygate_audit_log_healthy") == {}  # 0
    assert values(samples, "citygate_audit_write_errors_total")[()] >= 1
    assert values(samples, "citygate_audit_refusals_total") == {(): 1}
    # Nothing lost: the denials wait in memory until the disk has room (none is dropped).
    assert samples["citygate_audit_records_dropped_total"] == [({}, 0.0)]
    # The refusal is counted once, as the denial it became, not also as the allowed request.
    decisions = values(samples, "citygate_decisions_total", "department", "decision", "reason")
    assert decisions[("Parks", "deny", "audit_log_unavailable")] == 1
    assert ("Parks", "allow", "granted") not in decisions

    filler.unlink()  # room again: the log recovers by itself, and so does the gauge
    wait_for(lambda: values(scrape(url), "citygate_audit_log_healthy") == {(): 1})


def test_an_unreachable_directory_shows_as_unavailable_calls(run, tmp_path):
    config = config_copy(tmp_path, flags=[])
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    password = tmp_path / "ldap-password"
    password.write_text("secret")
    document = yaml.safe_load(config.read_text())
    document["directory"] = {
        "backend": "ldap",
        "preset": "openldap",
        "servers": [f"ldap://127.0.0.1:{dead}"],
        "base_dn": "dc=city,dc=example",
        "bind_dn": "cn=citygate,dc=city,dc=example",
        "bind_password_file": str(password),
        "connect_timeout": 1,
        "retries": 0,
    }
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    runner, metrics = run(config)

    result = curl(runner, "http://www.facebook.com/CityOfExampleParks", proxy_user=JLEE)

    assert result.status == 403  # directory_unavailable: refused, not guessed
    samples = scrape(metrics.server.url)
    calls = values(samples, "citygate_directory_requests_total", "operation", "result")
    assert calls.get(("authenticate", "unavailable"), 0) >= 1
    assert not [key for key in calls if key[1] == "ok"]
    assert values(samples, "citygate_decisions_total", "site", "department", "decision", "reason") == {
        ("facebook", "unknown", "deny", "directory_unavailable"): 1
    }


# --- several workers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_with_two_workers_one_listener_serves_every_workers_counts(tmp_path):
    config = config_copy(tmp_path, flags=[])
    port, metrics_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    stderr = (tmp_path / "stderr").open("wb")
    process = subprocess.Popen(
        [
            CITYGATE, "run", "--workers", "2", "--config", str(config),
            "--listen-port", str(port), "--confdir", str(tmp_path / "ca"),
            "--set", f"citygate_audit_directory={tmp_path / 'log'}",
            "--set", f"citygate_metrics_listen=127.0.0.1:{metrics_port}",
        ],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        pids = wait_for(
            lambda: re.search(
                rb"workers serving on port \d+ \(pids (\d+), (\d+)\)", (tmp_path / "stderr").read_bytes()
            ),
            30,
        )

        def deny_some(connections: int) -> None:
            # Separate connections, so that the kernel spreads them over both workers.
            for _ in range(connections):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(
                        b"GET http://www.facebook.com/ HTTP/1.1\r\nHost: www.facebook.com\r\n"
                        b"Proxy-Authorization: Basic bW5ndXllbjptbmd1eWVuLXBhc3M=\r\nConnection: close\r\n\r\n"
                    )
                    answer = b""
                    while chunk := sock.recv(65536):
                        answer += chunk
                    assert answer.startswith(b"HTTP/1.1 403"), answer[:100]

        deny_some(40)
        samples = scrape(url)
        key = ("facebook", "Parks", "deny", "no_grant")
        assert values(samples, "citygate_decisions_total", "site", "department", "decision", "reason") == {
            key: 40
        }
        # Both workers served some of them: each wrote its own access log.
        per_worker = {
            folder.name: sum(
                1 for path in expand([folder]) for line in open_log(path) if b'"no_grant"' in line
            )
            for folder in (tmp_path / "log").iterdir()
        }
        assert sorted(per_worker) == ["worker-0", "worker-1"] and all(per_worker.values()), per_worker
        # Gauges that every worker reports alike are not doubled; health is every worker's.
        active, _ = expected_grant_gauges(datetime.now(LA), 14)
        assert values(samples, "citygate_active_grants", "site", "department") == active
        assert values(
            wait_for(lambda: (s := scrape(url)) and values(s, "citygate_audit_log_healthy") and s),
            "citygate_audit_log_healthy",
        ) == {(): 1}
        assert values(samples, "citygate_build_info", "version") == {("0.1.0",): 1}

        # A worker dies and is replaced: the counts it made stay counted.
        os.kill(int(pids.group(1)), signal.SIGKILL)
        wait_for(lambda: b"starting a new one" in (tmp_path / "stderr").read_bytes(), 20)
        deny_some(10)
        samples = scrape(url)
        assert values(samples, "citygate_decisions_total", "site", "department", "decision", "reason") == {
            key: 50
        }
        assert values(samples, "citygate_active_grants", "site", "department") == active
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        stderr.close()
    with pytest.raises(OSError):  # the listener went with the service
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2)
    assert (
        f"metrics of all 2 workers on http://127.0.0.1:{metrics_port}/metrics"
        in (tmp_path / "stderr").read_text()
    )
