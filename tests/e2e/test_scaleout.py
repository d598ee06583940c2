"""Two citygate hosts behind HAProxy: every decision, log line and metric stays right.

Two `citygate run` processes, each with its own copy of the demo config (so its own access log
and metrics, as on two hosts), behind HAProxy in TCP mode. Requests go through HAProxy only, on
new connections, so both hosts take some. bench/scaleout.py is the fuller run (HTTPS, nginx,
throughput).
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CITYGATE = str(Path(sys.executable).parent / "citygate")
ANSWER = Path(__file__).with_name("answer_locally.py")
HAPROXY = shutil.which("haproxy") or next(
    (path for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(path, os.X_OK)), None
)

pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (make test installs it)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


class Host:
    """One citygate "host": its own config copy, port, metrics port and log."""

    def __init__(self, folder: Path) -> None:
        shutil.copytree(ROOT / "config", folder / "config")
        shutil.copytree(
            ROOT / "directory", folder / "directory", ignore=shutil.ignore_patterns("*.py", "__pycache__")
        )
        self.folder, self.port, self.metrics = folder, _free_port(), _free_port()
        self.log = folder / "proxy.log"
        env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    CITYGATE, "run", "--config", str(folder / "config" / "citygate.yaml"),
                    "--listen-port", str(self.port), "--confdir", str(folder.parent / "ca"), "--workers", "1",
                    "--set", f"scripts={ANSWER}", "--set", f"citygate_metrics_listen=127.0.0.1:{self.metrics}",
                ],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def denials(self) -> int:
        return len(re.findall(r"^\S+ deny reason=", self.log.read_text(), re.MULTILINE))

    def denial_metric(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10) as response:
            lines = response.read().decode().splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("citygate_decisions_total{") and 'decision="deny"' in line
        )


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[int, list[Host]]]:
    (tmp_path / "ca").mkdir()
    hosts = [Host(tmp_path / f"host{n}") for n in (1, 2)]
    processes: list[subprocess.Popen[bytes]] = [host.process for host in hosts]
    try:
        for host in hosts:
            _wait_for_port(host.port, host.process)
        port = _free_port()
        config = tmp_path / "haproxy.cfg"
        servers = "\n".join(f"    server h{n} 127.0.0.1:{h.port}" for n, h in enumerate(hosts, 1))
        config.write_text(
            "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
            f"frontend proxies\n    bind 127.0.0.1:{port}\n    default_backend citygate\n"
            f"backend citygate\n    balance roundrobin\n{servers}\n"
        )
        balancer = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
        processes.append(balancer)
        _wait_for_port(port, balancer)
        yield port, hosts
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def get(port: int, url: str, user: str | None = None) -> tuple[int, str]:
    """One request through the proxy on a new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    headers = {}
    if user:
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(f"{user}:{user}-pass".encode()).decode()
    try:
        connection.request("GET", url, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def test_decisions_logs_and_metrics_stay_right_behind_haproxy(balanced):
    port, hosts = balanced
    answered_by: set[str] = set()
    denied = 0

    for _ in range(6):
        status, body = get(port, "http://www.example.org/")
        assert status == 200
        answered_by.add(re.search(r"port (\d+)", body)[1])
        assert get(port, "http://www.facebook.com/")[0] == 407
        status, body = get(port, "http://www.facebook.com/", "mnguyen")
        assert status == 403
        assert "Administrative Order 8-19" in body
        status, body = get(port, "http://www.facebook.com/CityOfExampleParks", "jlee")
        assert status == 200
        answered_by.add(re.search(r"port (\d+)", body)[1])
        assert get(port, "http://www.facebook.com/messages", "jlee")[0] == 403
        denied += 2

    assert answered_by == {str(host.port) for host in hosts}
    assert all(host.denials() > 0 for host in hosts)
    assert sum(host.denials() for host in hosts) == denied
    assert sum(host.denial_metric() for host in hosts) == denied
