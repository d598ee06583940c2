"""The access log through a real proxy: what security staff get, and what they can rely on.

A real mitmproxy runs citygate with the demo configuration and the audit recorder; curl talks to
it; local servers stand in for the sites. The log is then checked with the installed `citygate`
command (`audit verify`, `logs`), as security staff would. A disk is made full with a real
tiny tmpfs (root), and a `citygate run` process is killed with SIGKILL under load.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import curl

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate
from citygate.proxy.audit.chain import unseal
from citygate.proxy.audit.files import ACTIVE_NAME, expand, log_files, open_log
from citygate.proxy.audit.record import DECISION_FIELDS

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "citygate.yaml"
CITYGATE = str(Path(sys.executable).parent / "citygate")
JLEE = "jlee:jlee-pass"  # Parks; facebook limited to /CityOfExampleParks, instagram
MNGUYEN = "mnguyen:mnguyen-pass"  # Parks; no grant
KWILLIAMS = "kwilliams:kwilliams-pass"  # Communications; facebook without a path scope
CHAIN_FIELDS = {"citygate.chain.seq", "citygate.chain.prev", "citygate.chain.hash", "citygate.chain.id"}


def citygate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CITYGATE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def all_lines(folder: Path) -> list[bytes]:
    lines = []
    for path in expand([folder]):
        with open_log(path) as handle:
            lines.extend(handle)
    return lines


def decisions(folder: Path) -> list[dict]:
    for line in all_lines(folder):
        unseal(line)  # intact, or this raises
    records = [json.loads(line) for line in all_lines(folder)]
    return [r for r in records if r["event.action"] in ("http-request", "http-connect")]


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def config_copy(tmp_path: Path, **audit: str) -> Path:
    """The demo configuration in tmp_path, with some audit settings replaced."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    (tmp_path / "directory").mkdir()
    shutil.copy(ROOT / "directory" / "demo.ldif", tmp_path / "directory" / "demo.ldif")
    config = tmp_path / "config" / "citygate.yaml"
    text = config.read_text()
    for key, value in audit.items():
        text, count = re.subn(rf"(?m)^  #? ?{key}: .*$", f"  {key}: {value}", text)
        assert count == 1, key
    config.write_text(text)
    return config


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def start(proxy_runner_factory, redirect_addon, log_dir):
    def start_proxy(config: Path = DEMO_CONFIG):
        audit = AuditLog()
        runner = proxy_runner_factory(
            [CityGate(), audit, redirect_addon],
            {"citygate_config": str(config), "citygate_audit_directory": str(log_dir)},
        )
        return runner, audit

    return start_proxy


def browse(runner) -> dict[str, object]:
    """A morning of traffic: allowed and denied, plain and HTTPS, with and without credentials."""
    results = {
        "denied": curl(runner, "http://www.facebook.com/groups?ref=bookmarks", proxy_user=MNGUYEN),
        "allowed": curl(runner, "http://www.facebook.com/CityOfExampleParks/events", proxy_user=JLEE),
        "out_of_scope": curl(runner, "http://www.facebook.com/messages", proxy_user=JLEE),
        "anonymous": curl(runner, "http://www.facebook.com/"),
        "wrong_password": curl(runner, "http://www.facebook.com/", proxy_user="jlee:not-my-password"),
        "https_inside": curl(runner, "https://www.facebook.com/CityOfExampleParks", proxy_user=JLEE),
        "https_blocked": curl(runner, "https://www.facebook.com/", proxy_user=MNGUYEN),
        "passthrough": curl(runner, "https://www.facebook.com/", proxy_user=KWILLIAMS),
        "ordinary": curl(runner, "http://www.example.org/news?page=2"),
        "ordinary_https": curl(runner, "https://www.example.org/"),
    }
    assert results["denied"].status == 403
    assert results["allowed"].status == 200
    assert results["https_inside"].status == 200
    assert results["passthrough"].status == 200
    assert results["ordinary"].status == 200 and results["ordinary_https"].status == 200
    return results


# --- the end-to-end run and tampering ---------------------------------------------------------


def test_a_run_leaves_a_log_that_verifies_and_every_tampering_is_named(start, log_dir, tmp_path):
    runner, _ = start()
    browse(runner)
    runner.stop()

    ok = citygate("audit", "verify", str(log_dir))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK:" in ok.stdout

    def tampered(name: str, change) -> subprocess.CompletedProcess[str]:
        copy = tmp_path / name
        shutil.copytree(log_dir, copy)
        path = copy / ACTIVE_NAME
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(change(lines)))
        result = citygate("audit", "verify", str(copy))
        assert result.returncode == 1, result.stdout
        return result

    def edit_one_byte(lines):
        lines[4] = lines[4].replace(b'"Parks"', b'"Psrks"', 1)
        return lines

    def swap(lines):
        lines[5], lines[6] = lines[6], lines[5]
        return lines

    edited = tampered("edited", edit_one_byte)
    assert f"{tmp_path}/edited/{ACTIVE_NAME}:5: the record was edited" in edited.stdout
    deleted = tampered("deleted", lambda lines: lines[:3] + lines[4:])
    assert f"{tmp_path}/deleted/{ACTIVE_NAME}:4: seq 5 where 4 was expected" in deleted.stdout
    swapped = tampered("swapped", swap)
    assert f"{tmp_path}/swapped/{ACTIVE_NAME}:6: seq 7 where 6 was expected" in swapped.stdout
    truncated = tampered("truncated", lambda lines: [*lines[:-1], lines[-1][:-25]])
    last = len(log_dir.joinpath(ACTIVE_NAME).read_bytes().splitlines())
    assert f"{tmp_path}/truncated/{ACTIVE_NAME}:{last}: torn tail" in truncated.stdout
    assert f"the {last - 1} record(s) before it verify" in truncated.stdout


def test_every_decision_record_has_every_field_typed(start, log_dir):
    runner, _ = start()
    browse(runner)
    runner.stop()

    records = decisions(log_dir)
    by_reason = {}
    for record in records:
        assert set(record) == set(DECISION_FIELDS) | CHAIN_FIELDS
        assert isinstance(record["@timestamp"], str) and record["@timestamp"].endswith("Z")
        assert isinstance(record["event.id"], str) and len(record["event.id"]) == 32
        assert record["event.type"] in ("allowed", "denied")
        assert isinstance(record["citygate.flags"], list)
        assert record["citygate.mode"] == "enforce"
        assert isinstance(record["source.ip"], str)
        assert isinstance(record["citygate.chain.seq"], int)
        by_reason.setdefault(
            (record["event.action"], record["event.reason"], record["user.name"]), []
        ).append(record)

    [allowed] = [
        r
        for r in by_reason[("http-request", "granted", "jlee")]
        if r["url.path"] == "/CityOfExampleParks/events"
    ]
    assert allowed["http.response.status_code"] == 200
    assert isinstance(allowed["http.response.body.bytes"], int) and allowed["http.response.body.bytes"] > 0
    assert allowed["http.request.body.bytes"] == 0
    assert isinstance(allowed["event.duration"], int)
    assert allowed["rule.id"] == "parks-2026-001" and allowed["citygate.approver"] == "ahernandez"
    assert allowed["citygate.department"] == "Parks" and allowed["citygate.identity_method"] == "basic"

    [denied] = by_reason[("http-request", "no_grant", "mnguyen")][:1]
    assert denied["http.response.status_code"] == 403
    assert denied["url.path"] == "/groups" and denied["url.query"] is None

    # A whole-site grant's tunnel is decrypted: the CONNECT's record says so, and the request
    # inside has its own record, with what was served.
    [tunnel] = by_reason[("http-connect", "granted", "kwilliams")]
    assert tunnel["citygate.tunnel"] == "decrypted"
    assert tunnel["http.response.body.bytes"] is None  # the tunnel's requests carry the bytes
    [request] = by_reason[("http-request", "granted", "kwilliams")]
    assert request["url.scheme"] == "https" and request["http.response.status_code"] == 200

    inside = [r for r in by_reason[("http-request", "granted", "jlee")] if r["url.scheme"] == "https"]
    assert inside and inside[0]["http.response.status_code"] == 200

    assert by_reason[("http-request", "credentials_required", None)][0]["http.response.status_code"] == 407
    assert by_reason[("http-request", "credentials_invalid", "jlee")]
    assert not [r for r in records if r["url.domain"] == "www.example.org"]  # ordinary: not logged


# --- secrets ------------------------------------------------------------------------------


def test_no_password_token_cookie_or_credential_reaches_the_log_or_stdout(
    proxy_runner_factory, redirect_addon, tmp_path, capfd
):
    config = config_copy(tmp_path, stdout="true", log_ordinary_connections="true")
    runner = proxy_runner_factory(
        [CityGate(), AuditLog(), redirect_addon],
        {"citygate_config": str(config), "citygate_audit_directory": str(tmp_path / "log")},
    )
    browse(runner)
    secrets_args = ("-H", "Cookie: c_user=SESSIONCOOKIE123", "-H", "Authorization: Bearer UPSTREAMTOKEN456")
    curl(
        runner,
        "http://www.facebook.com/CityOfExampleParks?access_token=QUERYTOKEN789",
        proxy_user=JLEE,
        extra_args=secrets_args,
    )
    curl(
        runner,
        "http://www.facebook.com/login?password=QUERYPASS000",
        proxy_user=MNGUYEN,
        extra_args=secrets_args,
    )
    curl(runner, "http://www.example.org/private/path?token=ORDINARYTOKEN", extra_args=secrets_args)
    proxy_log = "\n".join(runner.log_lines())
    runner.stop()
    stdout = capfd.readouterr().out

    log_text = b"".join(all_lines(tmp_path / "log")).decode()
    assert '"event.action":"http-request"' in stdout  # the stdout sink was on
    assert '"event.action":"connection"' in log_text  # and ordinary connections were logged
    secrets = [
        "jlee-pass",
        "mnguyen-pass",
        "kwilliams-pass",
        "not-my-password",
        *(base64.b64encode(user.encode()).decode() for user in (JLEE, MNGUYEN, KWILLIAMS)),
        "SESSIONCOOKIE123",
        "UPSTREAMTOKEN456",
        "QUERYTOKEN789",
        "QUERYPASS000",
        "ORDINARYTOKEN",
        "/private/path",  # no path of ordinary traffic, ever
    ]
    for secret in secrets:
        assert secret not in log_text, secret
        assert secret not in stdout, secret
        assert secret not in proxy_log, secret


# --- failing closed ---------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tiny tmpfs and must run as root: {mounted.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_a_full_disk_denies_social_media_only_and_recovers_without_a_restart(
    proxy_runner_factory, redirect_addon, tiny_disk
):
    audit = AuditLog()
    runner = proxy_runner_factory(
        [CityGate(), audit, redirect_addon],
        {"citygate_config": str(DEMO_CONFIG), "citygate_audit_directory": str(tiny_disk / "log")},
    )
    assert curl(runner, "http://www.facebook.com/CityOfExampleParks", proxy_user=JLEE).status == 200
    filler = tiny_disk / "filler"
    fill(filler)

    # Denials are written at once; the file's last page still has room for a few of them.
    for _ in range(20):
        assert curl(runner, "http://www.facebook.com/", proxy_user=MNGUYEN).status == 403
        if runner.call(lambda: audit.audit_write_errors_total) > 0:
            break
    assert runner.call(lambda: audit.audit_write_errors_total) > 0
    refused = curl(runner, "http://www.facebook.com/CityOfExampleParks", proxy_user=JLEE)
    tunnel = curl(runner, "https://www.facebook.com/", proxy_user=KWILLIAMS)
    ordinary = curl(runner, "http://www.example.org/")
    ordinary_https = curl(runner, "https://www.example.org/")

    assert refused.status == 403
    assert "audit_log_unavailable" in refused.body
    assert "temporary problem" in refused.body
    assert tunnel.connect_status == 403  # a passthrough tunnel cannot show a page: refused outright
    assert ordinary.status == 200 and ordinary_https.status == 200
    metrics = runner.call(audit.metrics)
    assert "No space left on device" in runner.call(lambda: audit.audit_last_error)
    assert metrics["audit_log_healthy"] == 0.0
    assert metrics["audit_write_errors_total"] >= 1
    assert metrics["audit_refusals_total"] >= 2

    filler.unlink()
    wait_until(lambda: runner.call(lambda: audit.audit_log_healthy))
    assert curl(runner, "http://www.facebook.com/CityOfExampleParks", proxy_user=JLEE).status == 200
    runner.stop()

    assert citygate("audit", "verify", str(tiny_disk / "log")).returncode == 0
    reasons = [(r["user.name"], r["event.reason"]) for r in decisions(tiny_disk / "log")]
    # The denials made while the disk was full were kept and written once it had room again.
    assert ("jlee", "audit_log_unavailable") in reasons and ("kwilliams", "audit_log_unavailable") in reasons
    assert reasons.count(("jlee", "granted")) == 2


def test_with_fail_closed_off_social_media_goes_on_while_the_log_is_read_only(
    proxy_runner_factory, redirect_addon, tiny_disk, tmp_path
):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    audit = AuditLog()
    runner = proxy_runner_factory(
        [CityGate(), audit, redirect_addon],
        {
            "citygate_config": str(config_copy(tmp_path, fail_closed="false")),
            "citygate_audit_directory": str(tiny_disk / "log"),
        },
    )

    assert curl(runner, "http://www.facebook.com/CityOfExampleParks", proxy_user=JLEE).status == 200
    assert "Read-only file system" in runner.call(lambda: audit.audit_last_error)
    assert runner.call(lambda: audit.audit_refusals_total) == 0


# --- kill -9 under load -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_citygate_run(
    port: int,
    log: Path,
    confdir: Path,
    workers: int = 1,
    *,
    config: Path = DEMO_CONFIG,
    proxy_log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`citygate run` with `config`, its access log in `log`; its own log (stderr) appended to
    `proxy_log` when given, as journald would keep it."""
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    process = subprocess.Popen(
        [
            CITYGATE,
            "run",
            "--config",
            str(config),
            "--workers",
            str(workers),
            "--listen-port",
            str(port),
            "--confdir",
            str(confdir),
            "--set",
            f"citygate_audit_directory={log}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=proxy_log.open("ab") if proxy_log is not None else subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError("citygate run did not start") from None
            time.sleep(0.05)


def hammer(port: int, stop: threading.Event, references: list[str]) -> None:
    """Denied requests on one keep-alive connection; notes each block page's Reference."""
    token = base64.b64encode(MNGUYEN.encode()).decode()
    request = (
        "GET http://www.facebook.com/ HTTP/1.1\r\nHost: www.facebook.com\r\n"
        f"Proxy-Authorization: Basic {token}\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            reader = sock.makefile("rb")
            while not stop.is_set():
                sock.sendall(request)
                status = reader.readline()
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":")[1])
                body = reader.read(length)
                if not status.startswith(b"HTTP/1.1 403") or len(body) != length:
                    return
                found = re.search(rb"<dt>Reference</dt><dd>([0-9a-f]{32})</dd>", body)
                references.append(found.group(1).decode())
    except OSError:
        return  # the proxy was killed


def test_kill_9_under_load_loses_no_denial_that_was_answered_and_the_tail_is_named(tmp_path):
    log, port = tmp_path / "log", free_port()
    process = start_citygate_run(port, log, tmp_path / "ca")  # one process: the one killed writes
    stop, references = threading.Event(), []
    workers = [threading.Thread(target=hammer, args=(port, stop, references)) for _ in range(6)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(references) > 300, timeout=30)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    stop.set()
    for worker in workers:
        worker.join(10)

    # Every denial a client saw was in the log before its block page was sent.
    logged = {r["event.id"] for r in decisions(log)} if (log / ACTIVE_NAME).exists() else set()
    assert set(references) <= logged
    after_kill = citygate("audit", "verify", str(log))
    assert after_kill.returncode == 0 or "torn tail" in after_kill.stdout, after_kill.stdout

    # A write cut short by the kill leaves half a record: named, with everything before it.
    active = log / ACTIVE_NAME
    lines = active.read_bytes().splitlines(keepends=True)
    active.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    torn = citygate("audit", "verify", str(log))
    assert torn.returncode == 1
    assert f"{active}:{len(lines)}: torn tail" in torn.stdout
    assert f"the {len(lines) - 1} record(s) before it verify" in torn.stdout

    # The next start keeps the torn file as evidence and carries the chain on past it.
    restarted = start_citygate_run(free_port(), log, tmp_path / "ca")
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(20) == 0
    final = citygate("audit", "verify", str(log))
    assert final.returncode == 0, final.stdout
    assert "incomplete record the writer left" in final.stdout
    assert len(log_files(log)) == 2


# --- citygate logs over rotated and compressed files ------------------------------------------


def test_logs_csv_for_one_employee_and_a_time_range_reads_rotated_and_compressed_files(
    proxy_runner_factory, redirect_addon, tmp_path
):
    config = config_copy(tmp_path, rotate_bytes="4096", compress="true")
    log = tmp_path / "log"
    runner = proxy_runner_factory(
        [CityGate(), AuditLog(), redirect_addon],
        {"citygate_config": str(config), "citygate_audit_directory": str(log)},
    )
    before = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(12):
        assert curl(runner, f"http://www.facebook.com/CityOfExampleParks/{n}", proxy_user=JLEE).status == 200
        assert curl(runner, f"http://www.facebook.com/page{n}", proxy_user=MNGUYEN).status == 403
    runner.stop()

    files = log_files(log)
    assert len(files) >= 3 and all(f.name.endswith(".gz") for f in files[:-1])
    since = before.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = citygate(
        "logs", str(log), "--user", "jlee", "--since", since, "--format", "csv", "--config", str(config)
    )

    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["url.path"] for row in rows] == [f"/CityOfExampleParks/{n}" for n in range(12)]
    for row in rows:
        assert row["user.name"] == "jlee" and row["citygate.department"] == "Parks"
        assert row["event.type"] == "allowed" and row["event.reason"] == "granted"
        assert row["rule.id"] == "parks-2026-001" and row["citygate.approver"] == "ahernandez"
        assert row["http.response.status_code"] == "200"
        assert row["local_time"].endswith(("-08:00", "-07:00"))  # city time, beside UTC
    denied = citygate("logs", str(log), "--department", "parks", "--decision", "denied", "--format", "jsonl")
    assert [json.loads(line)["user.name"] for line in denied.stdout.splitlines()] == ["mnguyen"] * 12
    later = citygate("logs", str(log), "--user", "jlee", "--since", "1m", "--until", before.isoformat())
    assert later.stdout.count("\n") == 1  # only the table's heading


# --- SIEM copies -------------------------------------------------------------------------------


def test_records_also_go_to_stdout_and_to_syslog_as_rfc5424(
    proxy_runner_factory, redirect_addon, tmp_path, capfd
):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    config = config_copy(
        tmp_path,
        stdout="true",
        syslog=f"{{address: udp://127.0.0.1:{port}, facility: local3, app_name: citygate-test}}",
        anchor_interval_s="1",
    )
    runner = proxy_runner_factory(
        [CityGate(), AuditLog(), redirect_addon],
        {"citygate_config": str(config), "citygate_audit_directory": str(tmp_path / "log")},
    )
    result = curl(runner, "http://www.facebook.com/", proxy_user=MNGUYEN)
    reference = re.search(r"<dt>Reference</dt><dd>([0-9a-f]{32})</dd>", result.body).group(1)
    datagrams = []
    with receiver:
        while not any(reference.encode() in d for d in datagrams):
            datagrams.append(receiver.recv(65535))
    runner.stop()

    [denial] = [d for d in datagrams if reference.encode() in d]
    header = re.match(
        rb"<(\d+)>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) citygate-test (\d+) audit - ", denial
    )
    assert header is not None, denial
    assert int(header.group(1)) == 19 * 8 + 5  # local3, notice (a denial)
    line = denial[header.end() :]
    in_file = [raw for raw in all_lines(tmp_path / "log") if reference.encode() in raw]
    assert in_file == [line + b"\n"]  # the same sealed line, hash and all
    assert line.decode() in capfd.readouterr().out
    # The chain head is published too (anchor_interval_s: 1), for `audit verify --anchor`.
    anchors = [json.loads(d[d.index(b"{") :]) for d in datagrams if b'"audit-chain-head"' in d]
    assert anchors and isinstance(anchors[0]["citygate.chain.seq"], int)
    assert len(anchors[0]["citygate.chain.hash"]) == 64


# --- several worker processes -----------------------------------------------------------------


def test_each_worker_keeps_its_own_chain_and_the_tools_read_them_together(tmp_path):
    log, port = tmp_path / "log", free_port()
    process = start_citygate_run(port, log, tmp_path / "ca", workers=2)
    stop, references = threading.Event(), []
    clients = [threading.Thread(target=hammer, args=(port, stop, references)) for _ in range(8)]
    for client in clients:
        client.start()
    wait_until(lambda: len(references) > 40, timeout=30)
    stop.set()
    for client in clients:
        client.join(10)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0

    assert sorted(path.name for path in log.iterdir()) == ["worker-0", "worker-1"]
    verified = citygate("audit", "verify", str(log))
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.count("OK:") == 2
    shown = citygate("logs", str(log), "--user", "mnguyen", "--format", "jsonl")
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    assert set(references) <= {record["event.id"] for record in records}
    stamps = [record["@timestamp"] for record in records]
    assert stamps == sorted(stamps)  # the workers' chains interleaved by time
