"""The access log under faults: a full disk, a deleted folder, a cut file. Nothing is lost silently.

Every answer a client got is reconciled against the records on disk: a social-media answer
whose record is missing must never happen; a record the writer had to drop is counted, and
`citygate audit verify` names its sequence numbers. Real parts throughout: a tmpfs with a size
limit (mounted as root), a real mitmproxy or `citygate run`, curl and raw sockets.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from harness import curl
from test_audit_log import (
    DEMO_CONFIG,
    JLEE,
    MNGUYEN,
    citygate,
    config_copy,
    fill,
    free_port,
    hammer,
    start_citygate_run,
    wait_until,
)

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate
from citygate.proxy.audit.chain import unseal
from citygate.proxy.audit.files import ACTIVE_NAME, expand, open_log

# A small queue, so that a test fills it with a few dozen requests (the proxy keeps 20,000).
PENDING_LIMIT = 40


def records(folder: Path) -> list[dict]:
    found = []
    for path in expand([folder]):
        with open_log(path) as handle:
            for line in handle:
                found.append(unseal(line)[0])
    return found


@pytest.fixture
def small_disk(tmp_path: Path):
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a small tmpfs and must run as root: {mounted.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_full_disk_refuses_social_answers_and_every_record_missing_is_counted_and_named(
    proxy_runner_factory, redirect_addon, small_disk, tmp_path, caplog
):
    caplog.set_level(logging.ERROR, logger="citygate.audit")
    log = small_disk / "log"
    config = config_copy(tmp_path, log_ordinary_connections="true")
    audit = AuditLog(pending_limit=PENDING_LIMIT)
    runner = proxy_runner_factory(
        [CityGate(), audit, redirect_addon],
        {"citygate_config": str(config), "citygate_audit_directory": str(log)},
    )
    social: list[tuple[str, int]] = []  # (url.path, status) of every social-media request
    ordinary: list[int] = []  # the status of every ordinary request (one connection each)

    def ask_social(n: int) -> int:
        # Three kinds: allowed (jlee, Parks page), denied (mnguyen), sign-in required (nobody).
        path, user = [
            (f"/CityOfExampleParks/fault-{n}", JLEE),
            (f"/fault-{n}", MNGUYEN),
            (f"/fault-{n}", None),
        ][n % 3]
        status = curl(runner, f"http://www.facebook.com{path}", proxy_user=user).status
        social.append((path, status))
        return status

    def ask_ordinary(n: int) -> None:
        ordinary.append(curl(runner, f"http://www.example.org/ordinary-{n}").status)

    assert ask_social(0) == 200
    filler = small_disk / "filler"
    fill(filler)
    n = 1
    while runner.call(lambda: audit.audit_write_errors_total) == 0:
        assert n < 200, "the disk never filled"
        ask_social(n)
        n += 1
    full_from = len(social)
    for _ in range(60):
        ask_social(n)
        n += 1
    for m in range(30):
        ask_ordinary(m)
    metrics = runner.call(audit.metrics)

    while_full = [status for _, status in social[full_from:]]
    assert 200 not in while_full  # nothing served while the log cannot be written
    assert while_full[-10:] == [0] * 10  # once the queue is nearly full: no answer at all
    assert ordinary == [200] * 30  # ordinary traffic goes on
    assert metrics["audit_log_healthy"] == 0.0
    # Each refusal counted once: an allowed request refused (audit_log_unavailable), or any
    # social-media request left unanswered.
    vetoed = sum(1 for path, status in social if status == 403 and path.startswith("/CityOfExampleParks"))
    unanswered = sum(1 for _, status in social if status == 0)
    assert vetoed > 0 and unanswered >= 10
    assert metrics["audit_refusals_total"] == vetoed + unanswered

    filler.unlink()
    wait_until(lambda: runner.call(lambda: audit.audit_log_healthy), timeout=10)
    assert ask_social(n + (-n % 3)) == 200  # an allowed one (see ask_social)
    wait_until(
        lambda: (
            runner.call(lambda: audit.audit_records_dropped_total) == metrics["audit_records_dropped_total"]
        )
    )
    dropped = runner.call(lambda: audit.audit_records_dropped_total)
    runner.stop()

    # Reconcile every answer a client got against the log.
    logged = records(log)
    by_path = {(r.get("url.path"), r.get("http.response.status_code")) for r in logged}
    unlogged_social = [(path, status) for path, status in social if status and (path, status) not in by_path]
    ordinary_logged = sum(
        1 for r in logged if r["event.action"] == "connection" and r.get("url.domain") == "www.example.org"
    )
    unlogged_ordinary = len(ordinary) - ordinary_logged
    assert unlogged_social == []
    assert unlogged_ordinary > 0  # the test is meant to make the writer drop records
    assert dropped == unlogged_ordinary

    # The chain marks the dropped records; verify fails and names them; so does the proxy log.
    gaps = [r for r in logged if r["event.action"] == "audit-gap"]
    assert sum(g["citygate.audit.missing_records"] for g in gaps) == dropped
    verify = citygate("audit", "verify", str(log))
    assert verify.returncode == 1, verify.stdout
    for gap in gaps:
        missing = (
            f"seq {gap['citygate.audit.missing_first']}-{gap['citygate.audit.missing_last']} are missing"
        )
        assert missing in verify.stdout
        assert missing in caplog.text
    assert "No space left on device" in verify.stdout


def test_a_full_disk_with_room_to_wait_loses_nothing_and_the_log_verifies(
    proxy_runner_factory, redirect_addon, small_disk
):
    log = small_disk / "log"
    audit = AuditLog(pending_limit=PENDING_LIMIT)
    runner = proxy_runner_factory(
        [CityGate(), audit, redirect_addon],
        {"citygate_config": str(DEMO_CONFIG), "citygate_audit_directory": str(log)},
    )
    answers = []
    fill(small_disk / "filler")
    for n in range(20):
        path = f"/wait-{n}"
        answers.append((path, curl(runner, f"http://www.facebook.com{path}", proxy_user=MNGUYEN).status))
    assert runner.call(lambda: audit.audit_write_errors_total) > 0
    (small_disk / "filler").unlink()
    wait_until(lambda: runner.call(lambda: audit.audit_log_healthy), timeout=10)
    assert runner.call(lambda: audit.audit_records_dropped_total) == 0
    runner.stop()

    logged = {(r.get("url.path"), r.get("http.response.status_code")) for r in records(log)}
    assert [answer for answer in answers if answer[1] and answer not in logged] == []
    assert citygate("audit", "verify", str(log)).returncode == 0


# --- the log deleted or cut under load ------------------------------------------------------


@pytest.mark.parametrize("damage", ["folder deleted", "file cut"])
def test_a_log_deleted_or_cut_under_load_fails_verify_naming_the_missing_range(tmp_path, damage):
    log, port = tmp_path / "log", free_port()
    process = start_citygate_run(port, log, tmp_path / "ca")
    stop, references = threading.Event(), []
    threads = [threading.Thread(target=hammer, args=(port, stop, references)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(references) > 100, timeout=30)
        if damage == "folder deleted":
            shutil.rmtree(log)
        else:
            active = log / ACTIVE_NAME
            kept = b"".join(active.read_bytes().splitlines(keepends=True)[:40])
            os.truncate(active, len(kept))
        seen = len(references)
        wait_until(lambda: len(references) > seen + 100, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        stop.set()
        for thread in threads:
            thread.join(10)

    if damage == "folder deleted":
        first = records(log)[0]
        assert first["event.action"] == "audit-file-start"
        missing = f"seq 1-{first['citygate.chain.seq'] - 1} are missing"
    else:
        # The writer notices the cut at its next write, keeps the file as evidence and goes on
        # in a new one (a write racing the cut may still land in the cut file: a jump in seq).
        logged = records(log)
        assert any(r.get("citygate.audit.reason") == "previous file was cut" for r in logged)
        missing = f"seq 41-{logged[40]['citygate.chain.seq'] - 1}"
    verify = citygate("audit", "verify", str(log))
    assert verify.returncode == 1, verify.stdout
    assert missing in verify.stdout, verify.stdout
    assert str(log) in verify.stdout
    # The gap is named at the line where it shows: the start of the next file ("are missing"),
    # or, when a write raced the cut into the cut file, that record's line ("where N was expected").
    gap = r"FAILED: .*citygate-audit[-0-9]*\.jsonl:\d+: seq \d+(-\d+ are missing| where \d+ was expected)"
    assert re.search(gap, verify.stdout), verify.stdout
