"""Changing grants without a restart: watched files, an invalid change, and traffic during reloads."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from harness import curl

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate
from citygate.addons.reload import ConfigWatcher

REPO = Path(__file__).resolve().parents[2]
JLEE = "jlee:jlee-pass"
MNGUYEN = "mnguyen:mnguyen-pass"
IN_SCOPE = "http://www.facebook.com/CityOfExampleParks"
MNGUYEN_GRANT = """
  - id: parks-2026-090
    employee: mnguyen
    sites: [facebook]
    purpose: Announce recreation programs on the Parks page
    approved_by: ahernandez
    approved_on: 2026-03-01
    expires: 2026-12-31
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(
        REPO / "directory", tmp_path / "directory", ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    config = tmp_path / "config" / "citygate.yaml"
    # The access log is not what this test is about; keep it inside the test's folder.
    config.write_text(config.read_text().replace("../var/log", str(tmp_path / "log")))
    return config


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon, config):
    gate = CityGate()
    runner = proxy_runner_factory(
        [gate, AuditLog(), ConfigWatcher(), redirect_addon],
        {"citygate_config": str(config), "citygate_reload_interval_ms": 200},
    )
    runner.gate = gate
    runner.log_folder = config.parents[1] / "log"
    return runner


def status_within(proxy, url: str, user: str | None, expected: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        status = curl(proxy, url, proxy_user=user).status
        if status == expected or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_a_revoked_grant_stops_working_within_seconds(proxy, config):
    parks = config.parent / "grants" / "parks.yaml"
    assert curl(proxy, IN_SCOPE, proxy_user=JLEE).status == 200

    parks.write_text("grants: []\n")

    assert status_within(proxy, IN_SCOPE, JLEE, 403) == 403


def test_a_new_grant_file_is_picked_up(proxy, config):
    assert curl(proxy, "http://www.facebook.com/", proxy_user=MNGUYEN).status == 403

    (config.parent / "grants" / "parks-extra.yaml").write_text("grants:" + MNGUYEN_GRANT)

    assert status_within(proxy, "http://www.facebook.com/", MNGUYEN, 200) == 200


def test_an_invalid_change_keeps_the_last_good_policy_and_says_where(proxy, config):
    parks = config.parent / "grants" / "parks.yaml"
    failures = proxy.gate.config.loads["failure"]

    parks.write_text(parks.read_text().replace("sites: [facebook, instagram]", "sites: [facebok, instagram]"))

    line = proxy.wait_for_log("still serving the previous one", timeout=15)
    assert "still serving the previous one" in line
    assert any('parks.yaml:7: unknown site "facebok"' in entry for entry in proxy.log_lines())
    assert proxy.gate.config.loads["failure"] == failures + 1
    assert curl(proxy, IN_SCOPE, proxy_user=JLEE).status == 200  # the old grant still works


def test_reloads_under_continuous_traffic_lose_no_request(proxy, config, plain_upstream):
    parks = config.parent / "grants" / "parks.yaml"
    original = parks.read_text()
    outcomes: list[tuple[str, int]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            outcomes.append(("ordinary", curl(proxy, "http://www.example.org/").status))
            outcomes.append(("granted", curl(proxy, IN_SCOPE, proxy_user=JLEE).status))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        for number in range(4):
            # Each rewrite changes the file (a comment) but keeps jlee's grant.
            parks.write_text(original + f"# edit {number}\n")
            time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=30)

    assert proxy.gate.config.loads["success"] >= 3
    assert len(outcomes) > 10
    assert {status for _, status in outcomes} == {200}, outcomes
    # ... and no log line: every granted request has its access-log record.
    granted = sum(1 for kind, _ in outcomes if kind == "granted")
    assert wait_for_records(proxy.log_folder, "parks-2026-001", granted) == granted


def wait_for_records(folder: Path, grant_id: str, expected: int, timeout: float = 10.0) -> int:
    """How many access-log records name the grant, once the writer has flushed them."""
    deadline = time.monotonic() + timeout
    while True:
        found = sum(
            1
            for path in folder.rglob("*.jsonl")
            for line in path.read_text().splitlines()
            if json.loads(line).get("rule.id") == grant_id
        )
        if found >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
