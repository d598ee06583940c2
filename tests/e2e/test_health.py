"""/healthz and /readyz, and SIGHUP reloads of a running `citygate run` with several workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from harness import curl
from slapd import directory_options

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
CITYGATE = str(Path(sys.executable).parent / "citygate")


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


def probe(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except (urllib.error.URLError, ConnectionError) as error:
        return 0, {"error": str(error)}  # not listening yet: callers retry


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
    time.sleep(0.6)  # past the grace period
    curl(proxy, "http://www.facebook.com/", proxy_user="jlee:jlee-pass")
    status, body = probe(f"{base}/readyz")
    assert status == 503
    assert body["workers"][0]["directory_available"] is False
    assert body["workers"][0]["config_loaded"] is True
    assert probe(f"{base}/healthz")[0] == 200

    fresh_slapd.start()
    # Readiness returns with the first answer the directory gives.
    deadline = time.monotonic() + 20
    while probe(f"{base}/readyz")[0] != 200 and time.monotonic() < deadline:
        curl(proxy, "http://www.facebook.com/CityOfExampleParks", proxy_user="jlee:jlee-pass")
        time.sleep(0.2)
    assert probe(f"{base}/readyz")[0] == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sighup_reloads_every_worker_and_the_supervisor_answers_readyz(tmp_path):
    proxy_port, metrics_port = _free_port(), _free_port()
    config = copy_config(tmp_path)
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    process = subprocess.Popen(
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
        env=env,
    )

    def status(user: str) -> str:
        return subprocess.run(
            [
                "curl",
                "-sS",
                "--noproxy",
                "",
                "-x",
                f"http://127.0.0.1:{proxy_port}",
                "-U",
                user,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://www.facebook.com/CityOfExampleParks",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
        ).stdout

    try:
        ready_url = f"http://127.0.0.1:{metrics_port}/readyz"
        code, body = probe_until(ready_url, 200) if _wait_for_port(metrics_port) else (0, {})
        assert code == 200, body
        assert len(body["workers"]) == 2
        # 502: allowed and forwarded to the (unreachable, offline) site; 403: refused.
        assert {status("jlee:jlee-pass") for _ in range(6)} == {"502"}

        (config.parent / "grants" / "parks.yaml").write_text("grants: []\n")
        time.sleep(1)
        assert status("jlee:jlee-pass") == "502"  # not watching: nothing changed yet

        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if {status("jlee:jlee-pass") for _ in range(6)} == {"403"}:
                break
            time.sleep(0.2)
        assert {status("jlee:jlee-pass") for _ in range(6)} == {"403"}  # every worker reloaded
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def _wait_for_port(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False
