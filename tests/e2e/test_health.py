"""/healthz and /readyz, and SIGHUP reloads of a running `citygate run` with several workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from harness import curl, probe
from slapd import directory_options, person_dn

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
CITYGATE = str(Path(sys.executable).parent / "citygate")
NO_PROXY_ENV = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}


def copy_config(tmp_path: Path, **changes: object) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(
        REPO / "directory", tmp_path / "directory", ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    config = tmp_path / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["audit"]["directory"] = str(tmp_path / "log")
    document["metrics"] = {"listen": "127.0.0.1:0", "refresh_seconds": 0.2}
    document.update(changes)
    config.write_text(yaml.safe_dump(document))
    return config


def probe_until(url: str, status: int, timeout: float = 20.0) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = probe(url)
        if found[0] == status or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_readyz_follows_the_directory_and_healthz_only_the_process(
    proxy_runner_factory, redirect_addon, fresh_slapd, tmp_path
):
    config = copy_config(tmp_path)
    document = yaml.safe_load(config.read_text())
    document["directory"] = {
        "backend": "ldap",
        **directory_options(fresh_slapd, tmp_path, "openldap"),
        "check_interval": 0.5,
        "cache": {"ttl": 0.2, "negative_ttl": 0.2, "grace": 0.5, "credentials_ttl": 0.2},
    }
    config.write_text(yaml.safe_dump(document))
    metrics = Metrics()
    proxy = proxy_runner_factory(
        [CityGate(), AuditLog(), metrics, redirect_addon], {"citygate_config": str(config)}
    )
    base = metrics.server.url.rsplit("/", 1)[0]

    assert probe(f"{base}/healthz") == (200, {"status": "alive"})
    assert probe(f"{base}/readyz")[0] == 200

    fresh_slapd.stop()
    curl(proxy, "http://www.facebook.com/", proxy_user="jlee:jlee-pass")  # the directory fails
    # The directory is checked every check_interval (0.5 s): readiness follows within one check.
    status, body = probe_until(f"{base}/readyz", 503, timeout=1.5)
    assert status == 503
    assert body["workers"][0]["directory_available"] is False
    assert body["workers"][0]["config_loaded"] is True
    assert probe(f"{base}/healthz")[0] == 200
    # What a Kubernetes probe asks (deploy/kubernetes): every replica shares the directory, so
    # it is left out of routing; the proxy still serves ordinary traffic and refuses social media.
    status, body = probe(f"{base}/readyz?exclude=directory")
    assert (status, body["ready"], body["excluded"]) == (200, True, ["directory"])
    assert probe(f"{base}/readyz?exclude=directory,audit_log")[0] == 200
    status, body = probe(f"{base}/readyz?exclude=directroy")
    assert status == 400
    assert body["error"] == "unknown check directroy; ?exclude= takes: config, directory, audit_log"

    fresh_slapd.start()
    # Readiness returns with the first check that finds the directory answering.
    assert probe_until(f"{base}/readyz", 200, timeout=1.5)[0] == 200
    assert (
        curl(proxy, "http://www.facebook.com/CityOfExampleParks", proxy_user="jlee:jlee-pass").status == 200
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_workers(config: Path, tmp_path: Path, proxy_port: int, metrics_port: int) -> subprocess.Popen[str]:
    """`citygate run --workers 2` on `config`, reloaded by SIGHUP only."""
    return subprocess.Popen(
        [
            CITYGATE,
            "run",
            "--workers",
            "2",
            "--config",
            str(config),
            "--listen-port",
            str(proxy_port),
            "--confdir",
            str(tmp_path / "ca"),
            "--set",
            f"citygate_metrics_listen=127.0.0.1:{metrics_port}",
            "--set",
            "citygate_reload_interval_ms=0",  # no watching: only SIGHUP reloads
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=NO_PROXY_ENV,
    )


def wait_until_ready(metrics_port: int) -> None:
    ready_url = f"http://127.0.0.1:{metrics_port}/readyz"
    code, body = probe_until(ready_url, 200) if _wait_for_port(metrics_port) else (0, {})
    assert code == 200, body
    assert len(body["workers"]) == 2


def status(proxy_port: int, user: str, url: str = "http://www.facebook.com/CityOfExampleParks") -> str:
    """The status code of one request through the proxy, on a new connection."""
    command = ["curl", "-sS", "--noproxy", "", "-x", f"http://127.0.0.1:{proxy_port}", "-U", user]
    command += ["-o", "/dev/null", "-w", "%{http_code}", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=20, env=NO_PROXY_ENV).stdout


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def test_sighup_reloads_every_worker_and_the_supervisor_answers_readyz(tmp_path):
    proxy_port, metrics_port = _free_port(), _free_port()
    config = copy_config(tmp_path)
    process = start_workers(config, tmp_path, proxy_port, metrics_port)
    try:
        wait_until_ready(metrics_port)
        # 502: allowed and forwarded to the (unreachable, offline) site; 403: refused.
        assert {status(proxy_port, "jlee:jlee-pass") for _ in range(6)} == {"502"}

        (config.parent / "grants" / "parks.yaml").write_text("grants: []\n")
        time.sleep(1)
        assert status(proxy_port, "jlee:jlee-pass") == "502"  # not watching: nothing changed yet

        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if {status(proxy_port, "jlee:jlee-pass") for _ in range(6)} == {"403"}:
                break
            time.sleep(0.2)
        assert {status(proxy_port, "jlee:jlee-pass") for _ in range(6)} == {"403"}  # every worker reloaded
        assert process.poll() is None
    finally:
        stop(process)


def test_workers_share_directory_answers_so_the_directory_is_asked_once_per_person(fresh_slapd, tmp_path):
    proxy_port, metrics_port = _free_port(), _free_port()
    config = copy_config(tmp_path)
    document = yaml.safe_load(config.read_text())
    document["directory"] = {"backend": "ldap", **directory_options(fresh_slapd, tmp_path, "openldap")}
    config.write_text(yaml.safe_dump(document))
    process = start_workers(config, tmp_path, proxy_port, metrics_port)
    try:
        wait_until_ready(metrics_port)
        # Each request on a new connection: the kernel spreads them over both workers.
        assert {status(proxy_port, "jlee:jlee-pass") for _ in range(16)} == {"502"}
        assert {status(proxy_port, "mnguyen:mnguyen-pass") for _ in range(16)} == {"403"}
    finally:
        stop(process)

    # Both workers decided for jlee (their access logs say so), so both needed jlee's facts.
    served = {
        folder.name: sum(line.count('"jlee"') for line in (folder / "citygate-audit.jsonl").open())
        for folder in (tmp_path / "log").iterdir()
    }
    assert sorted(served) == ["worker-0", "worker-1"] and all(served.values()), served
    searches = [line for line in fresh_slapd.log_text().splitlines() if " SRCH " in line]

    def searched(uid: str) -> int:
        return sum(1 for line in searches if f"(uid={uid})" in line)

    # jlee's grant's approver is only ever looked up: once for both workers (alone: once each).
    assert searched("ahernandez") == 1
    # Passwords are checked by each worker itself (never shared): a search for the account and a
    # bind as it, per worker. Looking the employee up for the decision is shared: one search.
    for uid in ("jlee", "mnguyen"):
        password_checks = fresh_slapd.binds(person_dn(uid))
        assert password_checks == 2, password_checks
        assert searched(uid) == 1 + password_checks, (uid, searched(uid))


def _wait_for_port(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False
