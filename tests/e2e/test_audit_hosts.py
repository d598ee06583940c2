"""Logs gathered from several hosts and workers verify together, each chain against its own
published heads (issue 21): `citygate run --workers 2` on two simulated hosts (`audit.host_name`),
each started twice (a restart), the proxies' own logs kept in one file as journald would; then
`citygate audit verify` as the README says, and one line deleted on one host."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

from demo_config import demo_config
from test_audit_log import citygate, free_port, hammer, start_citygate_run, wait_until

HOSTS = ("hosta", "hostb")


def run_host(tmp_path: Path, host: str, proxy_log: Path) -> Path:
    """Two runs of `citygate run --workers 2` as `host`, each with denials to log; its log folder."""
    log = tmp_path / host / "log"
    config = demo_config(
        tmp_path / host, audit={"directory": str(log), "anchor_interval_s": 1, "host_name": host}
    )
    for _ in range(2):  # the second run: every worker restarted, its chain goes on
        port = free_port()
        process = start_citygate_run(
            port, log, tmp_path / "ca", workers=2, config=config, proxy_log=proxy_log
        )
        stop, references = threading.Event(), []
        clients = [threading.Thread(target=hammer, args=(port, stop, references)) for _ in range(4)]
        for client in clients:
            client.start()
        wait_until(lambda seen=references: len(seen) > 40, timeout=30)
        stop.set()
        for client in clients:
            client.join(10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    return log


def chain_blocks(output: str) -> dict[str, str]:
    """`audit verify`'s output per chain, by the chain's name."""
    blocks = re.split(r"^chain \d+ of \d+: ", output, flags=re.MULTILINE)[1:]
    return {re.search(r"\(([^)]+)\)", block.splitlines()[0]).group(1): block for block in blocks}


def test_two_hosts_with_two_workers_each_verify_together_and_a_deleted_line_is_named_for_its_chain(tmp_path):
    proxy_log = tmp_path / "proxy.log"
    logs = [run_host(tmp_path, host, proxy_log) for host in HOSTS]
    published = proxy_log.read_text()
    assert "audit chain head chain=hosta/worker-1 seq=" in published
    assert "audit chain head chain=hostb/worker-0 seq=" in published

    # The README's instructions: the folders, and the heads the proxies published.
    verified = citygate("audit", "verify", *map(str, logs), "--anchors-from", str(proxy_log))

    assert verified.returncode == 0, verified.stdout + verified.stderr
    blocks = chain_blocks(verified.stdout)
    assert sorted(blocks) == ["hosta/worker-0", "hosta/worker-1", "hostb/worker-0", "hostb/worker-1"]
    assert all("OK:" in block for block in blocks.values())

    active = logs[0] / "worker-1" / "citygate-audit.jsonl"
    lines = active.read_bytes().splitlines(keepends=True)
    active.write_bytes(b"".join(lines[:5] + lines[6:]))  # one record deleted
    tampered = citygate("audit", "verify", *map(str, logs), "--anchors-from", str(proxy_log))

    assert tampered.returncode == 1
    blocks = chain_blocks(tampered.stdout)
    assert [name for name, block in blocks.items() if "FAILED" in block] == ["hosta/worker-1"]
    assert f"{active}:6:" in blocks["hosta/worker-1"]


def test_an_anchored_worker_whose_folder_was_removed_is_reported(tmp_path):
    proxy_log = tmp_path / "proxy.log"
    log = run_host(tmp_path, "hosta", proxy_log)
    for path in (log / "worker-1").iterdir():
        path.unlink()
    (log / "worker-1").rmdir()

    result = citygate("audit", "verify", str(log), "--anchors-from", str(proxy_log))

    assert result.returncode == 1
    assert "FAILED: chain hosta/worker-1 published its head at seq" in result.stdout


def syslog_copy(log: Path, path: Path) -> list[bytes]:
    """The records of every chain in `log`, interleaved one by one as a SIEM receives them from
    two workers, each behind an RFC 5424 header, as rsyslog keeps them in a file."""
    chains = [
        [
            line
            for file in sorted(folder.glob("citygate-audit*.jsonl"))
            for line in file.read_bytes().splitlines(keepends=True)
        ]
        for folder in sorted(log.glob("worker-*"))
    ]
    lines = []
    for index in range(max(map(len, chains))):
        for worker, records in enumerate(chains):
            if index < len(records):
                lines.append(
                    b"<134>1 2026-12-08T10:00:00.000000Z hosta citygate %d audit - " % (100 + worker)
                    + records[index]
                )
    path.write_bytes(b"".join(lines))
    return lines


def test_the_siem_s_copy_verifies_chain_by_chain_and_a_missing_or_repeated_record_is_named(tmp_path):
    log = run_host(tmp_path, "hosta", tmp_path / "proxy.log")
    copy = tmp_path / "siem-copy.log"
    lines = syslog_copy(log, copy)

    verified = citygate("audit", "verify", str(copy))

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "chain hosta/worker-0 in" in verified.stdout and "chain hosta/worker-1 in" in verified.stdout
    assert verified.stdout.count("OK:") == 2

    copy.write_bytes(b"".join(lines[:9] + lines[10:]))  # one record lost on the way
    lost = citygate("audit", "verify", str(copy))
    assert lost.returncode == 1 and lost.stdout.count("FAILED") == 1
    assert f"{copy}:11: seq" in lost.stdout and "deleted or moved" in lost.stdout

    copy.write_bytes(b"".join(lines[:10] + lines[8:9] + lines[10:]))  # one record twice
    repeated = citygate("audit", "verify", str(copy))
    assert repeated.returncode == 1 and "records out of order, or a record was inserted" in repeated.stdout
