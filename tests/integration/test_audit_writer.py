"""The access-log writer on real files: chaining through rotation, compression, retention,
restarts, torn tails, and recovery from a full disk, a read-only folder, a deleted folder and a
second writer, without a restart.

Full disks and read-only folders are real: a 64 KiB tmpfs mounted for the test (root only;
unmounted afterwards). Permission bits cannot stop root, a mount can.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from citygate.proxy.audit.chain import unseal
from citygate.proxy.audit.config import AuditSettings, Fsync
from citygate.proxy.audit.files import ACTIVE_NAME, LOCK_NAME, log_files
from citygate.proxy.audit.writer import AuditWriter
from citygate.proxy.cli.audit import verify_files

LA = ZoneInfo("America/Los_Angeles")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def record(n: int, **extra: object) -> dict[str, object]:
    return {"@timestamp": "2026-11-21T17:00:00.000000Z", "event.action": "http-request", "n": n, **extra}


def records_in(folder: Path) -> list[dict]:
    out = []
    for path in log_files(folder):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            out.extend(unseal(line)[0] for line in handle)
    return out


@pytest.fixture
def start_writer() -> Iterator[Callable[..., AuditWriter]]:
    writers: list[AuditWriter] = []

    def start(
        directory: Path,
        clock: Callable[[], datetime] | None = None,
        pending_limit: int | None = None,
        **settings: object,
    ) -> AuditWriter:
        options = {"flush_interval_ms": 20, "compress": False, **settings}
        kwargs: dict[str, object] = {"clock": clock} if clock else {}
        if pending_limit is not None:
            kwargs["pending_limit"] = pending_limit
        writer = AuditWriter(AuditSettings(directory=directory, **options), LA, **kwargs)  # type: ignore[arg-type]
        writer.start()
        assert writer.wait_ready(5)
        writers.append(writer)
        return writer

    yield start
    for writer in writers:
        writer.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted at the end."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.fail(f"this test mounts a tiny tmpfs and must run as root: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path) -> None:
    """Write zeros to `path` until the disk is full, to the last block."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def test_records_reach_the_file_chained_and_a_denial_is_written_before_its_callback(tmp_path, start_writer):
    folder = tmp_path / "log"
    writer = start_writer(folder, flush_interval_ms=60_000, max_buffered_records=1000)
    seen_on_disk = []

    def written(ok: bool) -> None:  # what the proxy waits for before it sends a denial
        seen_on_disk.append((ok, b'"n":7' in (folder / ACTIVE_NAME).read_bytes()))

    for n in range(7):
        writer.submit(record(n))
    writer.submit(record(7), written, urgent=True)

    wait_until(lambda: seen_on_disk)
    assert seen_on_disk == [(True, True)]
    assert [r.get("n") for r in records_in(folder) if "n" in r] == list(range(8))
    assert verify_files(log_files(folder)).ok


def test_the_buffer_is_flushed_when_it_holds_max_buffered_records(tmp_path, start_writer):
    folder = tmp_path / "log"
    writer = start_writer(folder, flush_interval_ms=60_000, max_buffered_records=5)
    for n in range(5):
        writer.submit(record(n))

    wait_until(lambda: writer.records_written_total >= 6)  # audit-start + 5


def test_size_rotation_carries_the_chain_and_compresses(tmp_path, start_writer):
    folder = tmp_path / "log"
    writer = start_writer(folder, rotate_bytes=2048, compress=True)
    for n in range(60):
        writer.submit(record(n, padding="x" * 100))
        if n % 10 == 9:
            wait_until(lambda n=n: writer.records_written_total >= n + 2)
    writer.close()

    files = log_files(folder)
    assert len(files) >= 3
    assert all(path.name.endswith(".jsonl.gz") for path in files[:-1])
    assert files[-1].name == ACTIVE_NAME
    report = verify_files(files)
    assert report.ok, report.failure
    assert [r["n"] for r in records_in(folder) if "n" in r] == list(range(60))
    with gzip.open(files[1]) as second:
        header = unseal(second.readline())[0]
    assert header["citygate.audit.previous_file"] == files[0].name.removesuffix(".gz")
    assert header["citygate.audit.reason"] == "size"


def test_a_new_file_starts_at_midnight_city_time(tmp_path, start_writer):
    folder = tmp_path / "log"
    now = [datetime(2026, 11, 21, 23, 59, 30, tzinfo=LA)]
    writer = start_writer(folder, clock=lambda: now[0])
    writer.submit(record(1), urgent=True)
    wait_until(lambda: writer.records_written_total >= 2)

    now[0] += timedelta(minutes=1)  # 00:00:30 on the 22nd in Los Angeles, 08:00 UTC
    writer.submit(record(2), urgent=True)
    wait_until(lambda: writer.records_written_total >= 3)

    files = log_files(folder)
    assert [path.name for path in files] == ["citygate-audit-20261121-000000000001.jsonl", ACTIVE_NAME]
    assert verify_files(files).ok


def test_retention_removes_old_rotated_files_only(tmp_path, start_writer):
    folder = tmp_path / "log"
    folder.mkdir()
    old = folder / "citygate-audit-20260101-000000000001.jsonl.gz"
    recent = folder / "citygate-audit-20261101-000000000500.jsonl.gz"
    for path in (old, recent):
        path.write_bytes(gzip.compress(b""))
    forty_days_ago = time.time() - 40 * 86400
    os.utime(old, (forty_days_ago, forty_days_ago))
    unrelated = folder / "notes.txt"
    unrelated.write_text("kept")

    writer = start_writer(folder, retention_days=30)

    assert not old.exists()
    assert recent.exists() and unrelated.exists() and (folder / ACTIVE_NAME).exists()
    # Recorded in the chain, so that `audit verify` accepts a chain starting after that file.
    writer.submit(record(1), urgent=True)
    wait_until(lambda: any(r["event.action"] == "audit-retention" for r in records_in(folder)))
    (removed,) = [r for r in records_in(folder) if r["event.action"] == "audit-retention"]
    assert removed["citygate.audit.removed_files"] == [old.name.removesuffix(".gz")]


def test_a_restart_continues_the_chain(tmp_path, start_writer):
    folder = tmp_path / "log"
    first = start_writer(folder)
    first.submit(record(1))
    first.close()
    second = start_writer(folder)
    second.submit(record(2), urgent=True)
    wait_until(lambda: second.records_written_total >= 2)

    actions = [r["event.action"] for r in records_in(folder)]
    assert actions == [
        "audit-file-start",
        "audit-start",
        "http-request",
        "audit-stop",
        "audit-start",
        "http-request",
    ]
    assert verify_files(log_files(folder)).ok


def test_a_torn_tail_is_kept_as_evidence_and_acknowledged_by_the_next_file(tmp_path, start_writer):
    folder = tmp_path / "log"
    first = start_writer(folder, fsync=Fsync.NEVER)
    first.submit(record(1))
    first.close()
    with (folder / ACTIVE_NAME).open("ab") as handle:
        handle.write(b'{"@timestamp":"2026-11-21T17:00:01.000000Z","event.act')  # cut mid-write
    second = start_writer(folder)
    second.submit(record(2), urgent=True)
    wait_until(lambda: second.records_written_total >= 2)

    files = log_files(folder)
    assert len(files) == 2 and files[-1].name == ACTIVE_NAME
    alone = verify_files(files[:1])
    assert not alone.ok and "torn tail" in alone.failure.problem and alone.failure.line == 5
    report = verify_files(files)
    assert report.ok, report.failure
    assert any("incomplete record the writer left" in note for note in report.notes)


def test_a_full_disk_is_counted_refused_and_recovered_from_without_a_restart(tiny_disk, start_writer):
    folder = tiny_disk / "log"
    writer = start_writer(folder)
    assert writer.healthy
    filler = tiny_disk / "filler"
    fill(filler)

    for n in range(20):
        writer.submit(record(n, padding="y" * 200), urgent=True)
    wait_until(lambda: not writer.healthy)
    assert writer.write_errors_total >= 1
    assert "No space left" in (writer.last_error or "")

    filler.unlink()
    wait_until(lambda: writer.healthy)
    wait_until(lambda: writer.records_written_total >= 21)
    writer.close()
    report = verify_files(log_files(folder))
    assert report.ok, report.failure  # no torn record in the middle: the failed write was cut back
    assert [r["n"] for r in records_in(folder) if "n" in r] == list(range(20))


def test_a_read_only_folder_keeps_the_log_unhealthy_until_it_is_writable(tiny_disk, start_writer):
    folder = tiny_disk / "log"
    folder.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    try:
        writer = start_writer(folder)
        assert not writer.healthy
        assert "Read-only" in (writer.last_error or "")
        writer.submit(record(1), urgent=True)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)
    wait_until(lambda: writer.healthy)
    wait_until(lambda: writer.records_written_total >= 2)
    assert verify_files(log_files(folder)).ok


def test_a_deleted_folder_is_recreated_and_the_chain_goes_on(tmp_path, start_writer):
    folder = tmp_path / "log"
    writer = start_writer(folder)
    writer.submit(record(1), urgent=True)
    wait_until(lambda: writer.records_written_total >= 2)
    seq_before = writer.head.seq

    shutil.rmtree(folder)
    writer.submit(record(2), urgent=True)
    wait_until(lambda: (folder / ACTIVE_NAME).exists() and writer.records_written_total >= 3)

    records = records_in(folder)
    assert records[0]["event.action"] == "audit-file-start"
    assert records[0]["citygate.chain.seq"] == seq_before + 1
    assert records[0]["citygate.audit.reason"] == "previous file disappeared"
    report = verify_files(log_files(folder))
    assert report.ok
    assert any(f"starts at seq {seq_before + 1}" in note for note in report.notes)
    # As a folder, the chain is incomplete: the records of the deleted file are missing.
    whole = verify_files(log_files(folder), whole=True)
    assert whole.failure is not None and f"seq 1-{seq_before} are missing" in whole.failure.problem


def test_a_second_writer_on_the_same_folder_waits_for_the_lock(tmp_path, start_writer):
    folder = tmp_path / "log"
    folder.mkdir()
    holder = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another citygate process
    try:
        writer = start_writer(folder)
        assert not writer.healthy
        assert "another process" in (writer.last_error or "")
    finally:
        os.close(holder)
    wait_until(lambda: writer.healthy)


def test_records_that_cannot_be_kept_are_dropped_counted_and_marked_as_a_gap(tmp_path, start_writer, caplog):
    folder = tmp_path / "log"
    folder.mkdir()
    holder = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        writer = start_writer(folder, pending_limit=10)
        # The writer's own audit-start record waits too: 9 places are left, 1 is the reserve.
        answers = [writer.submit(record(n), refusable=True) for n in range(10)]
        others = [writer.submit(record(n)) for n in range(10, 15)]
    finally:
        os.close(holder)
    # Records backing an answer are refused (the caller does not answer) before any is dropped.
    assert answers == [True] * 8 + [False] * 2
    assert others == [True] + [False] * 4
    assert writer.records_dropped_total == 4

    wait_until(lambda: writer.healthy and writer.records_written_total >= 10, timeout=10)
    written = records_in(folder)
    (gap,) = [r for r in written if r["event.action"] == "audit-gap"]
    first = gap["citygate.audit.missing_first"]
    assert (gap["citygate.audit.missing_last"], gap["citygate.audit.missing_records"]) == (first + 3, 4)
    assert gap["citygate.chain.seq"] == first + 4
    assert "another process" in gap["citygate.audit.reason"]
    assert [r["n"] for r in written if r["event.action"] == "http-request"] == [*range(8), 10]
    report = verify_files(log_files(folder), whole=True)
    assert report.failure is None and [g.problem for g in report.gaps] == [
        f"seq {first}-{first + 3} are missing: 4 record(s) the writer dropped ({gap['citygate.audit.reason']})"
    ]
    assert f"seq {first}-{first + 3} are missing from the chain" in caplog.text


def test_timestamps_in_names_use_the_city_day(tmp_path, start_writer):
    folder = tmp_path / "log"
    # 02:00 UTC on the 22nd is still the 21st in Los Angeles.
    writer = start_writer(folder, clock=lambda: datetime(2026, 11, 22, 2, 0, tzinfo=UTC), rotate_bytes=1024)
    for n in range(10):
        writer.submit(record(n, padding="z" * 200), urgent=True)
        wait_until(lambda n=n: writer.records_written_total >= n + 2)
    assert log_files(folder)[0].name.startswith("citygate-audit-20261121-")
