"""The SIEM copy over TCP and TLS, written by the real AuditWriter to a real rsyslogd
(tests/rsyslog.py): what arrives, the collector's certificate checked, the collector stopped for
30 s under traffic, a full spool, a spool that outlives the proxy, and a full disk under it.

What the collector kept is compared with the local log byte for byte, and checked with the
installed `citygate audit verify`, as security staff would check a SIEM's copy.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rsyslog import Rsyslog, Wiretap, write_collector_pki

from citygate.proxy.audit.chain import unseal
from citygate.proxy.audit.config import AuditSettings, SyslogSettings
from citygate.proxy.audit.files import log_files
from citygate.proxy.audit.forwarder import SIEM_GAP, SiemForwarder
from citygate.proxy.audit.spool import Spool
from citygate.proxy.audit.syslog_transport import octet_counted
from citygate.proxy.audit.writer import AuditWriter

LA = ZoneInfo("America/Los_Angeles")
CITYGATE = str(Path(sys.executable).parent / "citygate")
# A line of the collector's file: PRI HOSTNAME APP-NAME SD MSG (tests/rsyslog.py's template).
RECEIVED = re.compile(rb"^(\d+) (\S+) (\S+) (-|\[citygate@32473 [^\]]*\]) (\{.*\})$")
SD_PARAM = re.compile(rb'(\w+)="((?:[^"\\]|\\.)*)"')


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def record(n: int, **extra: object) -> dict[str, object]:
    return {"@timestamp": "2026-11-21T17:00:00.000000Z", "event.action": "http-request", "n": n, **extra}


@pytest.fixture
def start_writer() -> Iterator[Callable[..., AuditWriter]]:
    writers: list[AuditWriter] = []

    def start(directory: Path, syslog: SyslogSettings, **settings: object) -> AuditWriter:
        options = {"flush_interval_ms": 20, "compress": False, "syslog": syslog, **settings}
        writer = AuditWriter(AuditSettings(directory=directory, **options), LA)  # type: ignore[arg-type]
        writer.start()
        assert writer.wait_ready(5)
        writers.append(writer)
        return writer

    yield start
    for writer in writers:
        writer.close()


def siem_of(writer: AuditWriter) -> SiemForwarder:
    wait_until(lambda: any(isinstance(sink, SiemForwarder) for sink in writer.sinks))
    return next(sink for sink in writer.sinks if isinstance(sink, SiemForwarder))


def local_lines(folder: Path) -> list[bytes]:
    return [line for path in log_files(folder) for line in path.read_bytes().splitlines()]


def received(collector: Rsyslog) -> tuple[list[tuple[int, bytes, dict[str, str], bytes]], list[bytes]]:
    """The records the collector kept, as (PRI, APP-NAME, structured-data params, MSG), and the
    chain heads it was sent (messages without structured data)."""
    records, heads = [], []
    for line in collector.messages():
        match = RECEIVED.match(line)
        assert match is not None, line
        pri, _host, app, sd, msg = match.groups()
        if sd == b"-":
            heads.append(msg)
        else:
            params = {key.decode(): value.decode() for key, value in SD_PARAM.findall(sd)}
            records.append((int(pri), app, params, msg))
    return records, heads


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CITYGATE, "audit", "verify", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def records_only(collector: Rsyslog, path: Path) -> Path:
    """The collector's file without the published heads, as a SIEM selects citygate's records
    (by their structured data); the heads are given to `audit verify` as anchors instead."""
    path.write_bytes(b"".join(line + b"\n" for line in collector.messages() if b" - {" not in line))
    return path


def assert_copy_is_the_log(
    collector: Rsyslog, log: Path, tmp_path: Path
) -> list[tuple[int, bytes, dict[str, str], bytes]]:
    """Every record of the local log arrived once, in seq order, unchanged, its place in the
    chain in its structured data; the copy verifies against the heads published with it."""
    records, _ = received(collector)
    assert [msg for *_, msg in records] == local_lines(log)
    for _pri, _app, params, msg in records:
        body, place = unseal(msg + b"\n")
        assert params == {"seq": str(place.seq), "sha256": place.hash, "chain": body["citygate.chain.id"]}
    assert [int(params["seq"]) for _, _, params, _ in records] == list(range(1, len(records) + 1))
    copy = records_only(collector, tmp_path / "siem-records.log")
    checked = verify(copy, "--anchors-from", collector.received)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"OK: {len(records)} record(s)" in checked.stdout
    return records


# --- what arrives -------------------------------------------------------------------------------


def test_records_reach_a_tcp_collector_with_their_chain_place_in_structured_data(
    tmp_path, rsyslog_factory, start_writer
):
    collector = rsyslog_factory()
    log = tmp_path / "log"
    writer = start_writer(log, SyslogSettings(f"tcp://127.0.0.1:{collector.port}", "local3", "citygate-test"))
    writer.submit(record(1, **{"event.type": "denied"}))
    for n in range(2, 6):
        writer.submit(record(n))
    siem = siem_of(writer)
    wait_until(lambda: len(received(collector)[0]) == 7)  # the file's header, audit-start, 5 records
    writer.close()
    wait_until(lambda: len(received(collector)[0]) == len(local_lines(log)))  # and audit-stop

    records = assert_copy_is_the_log(collector, log, tmp_path)
    by_n = {json.loads(msg).get("n"): (pri, app) for pri, app, _, msg in records}
    assert by_n[1] == (19 * 8 + 5, b"citygate-test")  # local3, notice: a denial
    assert by_n[2] == (19 * 8 + 6, b"citygate-test")  # informational
    _, heads = received(collector)
    assert heads and {json.loads(head)["event.action"] for head in heads} == {"audit-chain-head"}
    assert siem.sent_total == len(records) + len(heads)
    assert (siem.spooled_total, siem.dropped_total, siem.queued, siem.spool_bytes) == (0, 0, 0, 0)


def test_over_tls_the_collector_s_certificate_is_checked_and_the_proxy_shows_its_own(
    tmp_path, rsyslog_factory, start_writer
):
    pki = write_collector_pki(tmp_path / "pki")
    # x509/name: the collector takes only a client certificate of its CA naming the proxy.
    collector = rsyslog_factory(pki=pki, auth_mode="x509/name")
    syslog = SyslogSettings(
        f"tls://127.0.0.1:{collector.port}",
        ca_file=pki.ca,
        cert_file=pki.client_cert,
        key_file=pki.client_key,
        server_name="localhost",
    )
    log = tmp_path / "log"
    writer = start_writer(log, syslog)
    for n in range(5):
        writer.submit(record(n))
    siem = siem_of(writer)
    wait_until(lambda: len(received(collector)[0]) == 7)
    assert siem.connected
    writer.close()
    wait_until(lambda: len(received(collector)[0]) == len(local_lines(log)))

    assert_copy_is_the_log(collector, log, tmp_path)
    assert siem.spooled_total == 0 and siem.dropped_total == 0


@pytest.mark.parametrize(
    ("collector_ca", "server_name", "why"),
    [
        ("another CA", None, "unable to get local issuer certificate"),
        ("ours", "siem.city.example", "Hostname mismatch"),
    ],
)
def test_a_collector_certificate_that_is_not_trusted_is_refused_and_nothing_is_sent(
    tmp_path, rsyslog_factory, start_writer, caplog, collector_ca, server_name, why
):
    ours = write_collector_pki(tmp_path / "ours")
    collector = rsyslog_factory(
        pki=ours if collector_ca == "ours" else write_collector_pki(tmp_path / "theirs", "another CA")
    )
    tap = Wiretap(collector.port)
    syslog = SyslogSettings(f"tls://127.0.0.1:{tap.port}", ca_file=ours.ca, server_name=server_name)
    caplog.set_level(logging.WARNING, logger="citygate.audit")
    log = tmp_path / "log"
    writer = start_writer(log, syslog)
    for n in range(5):
        writer.submit(record(n))
    siem = siem_of(writer)
    wait_until(lambda: siem.spooled_total >= 7 and tap.sent)
    time.sleep(1)  # a retry or two
    try:
        assert not siem.connected and siem.sent_total == 0
        assert siem.spool_bytes > 0  # kept for when the certificate is right
        refused = [r.getMessage() for r in caplog.records if "certificate is refused" in r.getMessage()]
        assert len(refused) == 1 and why in refused[0]  # logged once, not at every retry
        assert all(
            r.levelno == logging.ERROR for r in caplog.records if "certificate is refused" in r.getMessage()
        )
        # Only TLS handshakes crossed the wire: each connection starts with a ClientHello, and no
        # record (nor any part of one) went in clear.
        sent = tap.sent
        assert sent.startswith(b"\x16\x03") and b"citygate" not in sent and b"@timestamp" not in sent
        assert received(collector) == ([], [])
    finally:
        tap.close()


# --- the collector away ------------------------------------------------------------------------


def test_a_collector_stopped_for_30_seconds_under_traffic_gets_every_record_exactly_once(
    tmp_path, rsyslog_factory, start_writer
):
    pki = write_collector_pki(tmp_path / "pki")
    collector = rsyslog_factory(pki=pki)
    log = tmp_path / "log"
    writer = start_writer(
        log, SyslogSettings(f"tls://localhost:{collector.port}", ca_file=pki.ca), anchor_interval_s=5
    )
    siem = siem_of(writer)
    stop = threading.Event()

    def traffic() -> None:  # about 50 records a second, through the writer, as the proxy's are
        n = 0
        while not stop.is_set():
            writer.submit(record(n, pad="x" * 400))
            n += 1
            time.sleep(0.02)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_until(lambda: siem.sent_total > 50)
        collector.stop()
        peak, away_until = 0, time.monotonic() + 30
        while time.monotonic() < away_until:
            peak = max(peak, siem.spool_bytes)
            time.sleep(0.1)
        assert not siem.connected
        collector.start()
        wait_until(lambda: siem.connected, timeout=10)
        wait_until(lambda: siem.spool_bytes == 0, timeout=30)
        time.sleep(1)  # live again, under traffic
    finally:
        stop.set()
        sender.join()
    writer.close()
    wait_until(lambda: len(received(collector)[0]) >= len(local_lines(log)), timeout=15)

    assert peak > 100_000  # 30 s of records waited on disk ...
    assert siem.spool_bytes == 0 and not list((log / "syslog-spool").glob("*.spool"))  # ... and left it
    assert siem.spooled_total > 1000 and siem.dropped_total == 0
    records = assert_copy_is_the_log(collector, log, tmp_path)  # each once, in order, chain intact
    _, heads = received(collector)
    assert siem.sent_total == len(records) + len(heads)
    assert verify(log).returncode == 0


def test_a_full_spool_counts_logs_and_records_what_the_siem_lost(
    tmp_path, rsyslog_factory, start_writer, caplog
):
    collector = rsyslog_factory()
    collector.stop()  # away from the start: records go to the spool, and then beyond it
    caplog.set_level(logging.WARNING, logger="citygate.audit")
    log = tmp_path / "log"
    syslog = SyslogSettings(f"tcp://127.0.0.1:{collector.port}", spool_max_bytes=16 * 1024)
    writer = start_writer(log, syslog, anchor_interval_s=3600)
    for n in range(60):
        writer.submit(record(n, pad="x" * 400))
    siem = siem_of(writer)
    wait_until(lambda: siem.spooled_total + siem.dropped_total >= 62)
    assert 0 < siem.spool_bytes <= 16 * 1024 and siem.dropped_total > 20
    [dropping] = [r for r in caplog.records if "dropping messages" in r.getMessage()]  # once a spell
    assert dropping.levelno == logging.ERROR and "is full" in dropping.getMessage()

    collector.start()
    wait_until(lambda: siem.spool_bytes == 0, timeout=15)
    writer.submit(record(60))  # kept: the spell ends, and the local log says what the SIEM lacks
    wait_until(lambda: any(SIEM_GAP.encode() in msg for *_, msg in received(collector)[0]))

    local = [unseal(line + b"\n")[0] for line in local_lines(log)]
    [gap] = [r for r in local if r["event.action"] == SIEM_GAP]
    copy = [unseal(msg + b"\n")[0] for *_, msg in received(collector)[0]]
    copied = {r["citygate.chain.seq"] for r in copy}
    lost = [r["citygate.chain.seq"] for r in local if r["citygate.chain.seq"] not in copied]
    assert lost == list(range(gap["citygate.audit.missing_first"], gap["citygate.audit.missing_last"] + 1))
    assert gap["citygate.audit.missing_records"] == len(lost) <= siem.dropped_total
    assert "is full" in gap["citygate.audit.reason"] and gap["citygate.audit.siem"] == syslog.address
    assert any(
        f"seq {lost[0]}-{lost[-1]}" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
    )
    # The SIEM's copy shows the hole where it is; the local log, which has every record, verifies.
    checked = verify(records_only(collector, tmp_path / "siem-records.log"))
    assert checked.returncode == 1
    assert f"seq {lost[-1] + 1} where {lost[0]} was expected" in checked.stdout
    assert verify(log).returncode == 0


def test_what_waits_in_the_spool_when_the_proxy_stops_is_sent_after_it_starts_again(
    tmp_path, rsyslog_factory, start_writer
):
    collector = rsyslog_factory()
    collector.stop()
    log = tmp_path / "log"
    syslog = SyslogSettings(f"tcp://127.0.0.1:{collector.port}")
    first = start_writer(log, syslog)
    for n in range(10):
        first.submit(record(n))
    siem = siem_of(first)
    first.close()
    assert siem.spool_bytes > 0 and siem.sent_total == 0

    collector.start()
    second = start_writer(log, syslog)
    for n in range(10, 15):
        second.submit(record(n))
    wait_until(lambda: len(received(collector)[0]) >= len(local_lines(log)))
    second.close()
    wait_until(lambda: len(received(collector)[0]) == len(local_lines(log)))

    assert_copy_is_the_log(collector, log, tmp_path)  # the first run's records first, each once
    assert siem_of(second).spool_bytes == 0


def test_a_full_disk_under_the_spool_refuses_frames_without_leaving_files_behind(tmp_path):
    """A real 64 KiB tmpfs (root): the spool's own limit is far away, the disk is full first."""
    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tiny tmpfs and must run as root: {mounted.stderr.strip()}")
    try:
        spool = Spool(disk / "spool", max_bytes=1 << 30)
        frame = octet_counted(b"<134>1 - - - - - - " + b"x" * 1000)
        kept, _ = spool.append([frame] * 200)  # a batch, cut back where the disk filled up
        while spool.append([frame])[0]:  # then one at a time, until not even one fits
            kept += 1
        full = spool.append([frame])
        for _ in range(20):  # a disk that stays full
            assert spool.append([frame]) == full

        assert 0 < kept < 200 and full[0] == 0 and full[1] is not None
        assert "cannot be written" in full[1] and "No space left" in full[1]
        assert spool.held_bytes == kept * len(frame)
        assert sum(path.stat().st_size for path in spool.directory.glob("*.spool")) == spool.held_bytes
        assert all(path.stat().st_size for path in spool.directory.glob("*.spool"))  # no empty ones
        sent = spool.read(1 << 20)
        spool.delivered(sent[-1].end)
        assert len(sent) == kept and spool.held_bytes == 0
        assert spool.append([frame]) == (1, None)  # room again
        spool.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
