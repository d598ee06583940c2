"""A real proxy in front of a real slapd that stops or hangs: /readyz, social-media latency and
the directory attempts the proxy makes, counted at the wire.

The directory is reached through a TcpRelay (tests/tcp_relay.py) that notes every connection,
so the attempts are counted outside citygate. The directory section sets call_timeout 0.5 s and
check_interval 1 s; the cache keeps answers 0.2 s with no grace, so every decision after that
needs the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from harness import curl, probe
from slapd import directory_options
from tcp_relay import TcpRelay

from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
CALL_TIMEOUT = 0.5
CHECK_INTERVAL = 1.0
SLACK = 0.5  # scheduling on a shared machine, on top of each promised bound
IN_SCOPE = "http://www.facebook.com/CityOfExampleParks"
# Never looked up before the directory fails: each of their requests needs the directory.
OTHERS = ("kwilliams:kwilliams-pass", "mnguyen:mnguyen-pass", "dbrown:dbrown-pass", "tsmith:tsmith-pass")


@pytest.fixture
def relay(fresh_slapd):
    relay = TcpRelay(fresh_slapd.port)
    yield relay
    relay.close()


@pytest.fixture
def started(proxy_runner_factory, redirect_addon, fresh_slapd, relay, tmp_path):
    """(proxy, the metrics listener's base URL) for a proxy on the relayed slapd, ready."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tmp_path / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["audit"]["directory"] = str(tmp_path / "log")
    document["metrics"] = {"listen": "127.0.0.1:0", "refresh_seconds": 0.2}
    document["directory"] = {
        "backend": "ldap",
        **directory_options(fresh_slapd, tmp_path, "openldap", servers=[relay.url]),
        "call_timeout": CALL_TIMEOUT,
        "check_interval": CHECK_INTERVAL,
        "breaker_backoff": 0.25,
        "cache": {"ttl": 0.2, "negative_ttl": 0.2, "grace": 0, "credentials_ttl": 0.2},
    }
    config.write_text(yaml.safe_dump(document))
    metrics = Metrics()
    # Without the access-log addon: it holds each denial until its record is written and synced,
    # so a busy shared disk would add its own latency to what these tests measure of the directory.
    proxy = proxy_runner_factory([CityGate(), metrics, redirect_addon], {"citygate_config": str(config)})
    base = metrics.server.url.rsplit("/", 1)[0]
    assert readyz_turns(base, 200, 5.0) is not None
    assert curl(proxy, IN_SCOPE, proxy_user="jlee:jlee-pass").status == 200
    return proxy, base


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readyz_turns(base: str, status: int, timeout: float) -> float | None:
    """Seconds until /readyz answered `status` (asked every 50 ms), or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if probe(f"{base}/readyz")[0] == status:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def social_requests(proxy, seconds: float, clients: int = 4) -> list[tuple[float, int, str]]:
    """Social-media requests from `clients` parallel clients for `seconds`: (curl's total time,
    status, body) each."""

    def client(user: str) -> list[tuple[float, int, str]]:
        outcomes = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            result = curl(proxy, "http://www.facebook.com/", proxy_user=user)
            outcomes.append((float(result.write_out["time_total"]), result.status, result.body))
        return outcomes

    with ThreadPoolExecutor(clients) as pool:
        return [outcome for outcomes in pool.map(client, OTHERS[:clients]) for outcome in outcomes]


def every_worker_down(base: str) -> bool:
    status, body = probe(f"{base}/readyz")
    workers = body.get("workers", [])
    return status == 503 and len(workers) == 2 and not any(w["directory_available"] for w in workers)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def metric(base: str, line_start: str) -> float:
    """The sum of the /metrics samples whose line starts with `line_start`."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_a_stopped_directory_turns_readyz_within_a_check_interval_and_is_probed_with_backoff(
    started, fresh_slapd, relay
):
    proxy, base = started
    stopped_at = time.monotonic()
    fresh_slapd.stop()
    # No traffic: only the health checks can notice.
    down = readyz_turns(base, 503, CHECK_INTERVAL + SLACK)
    assert down is not None, "/readyz stayed 200 with the directory stopped"
    status, body = probe(f"{base}/readyz")
    assert status == 503 and body["workers"][0]["directory_available"] is False

    window_start = time.monotonic()
    outcomes = social_requests(proxy, 3.0)
    window = time.monotonic() - window_start
    assert len(outcomes) >= 20
    for _, status, page in outcomes:
        assert status == 403 and "directory_unavailable" in page  # failed closed
    assert curl(proxy, "http://www.example.org/").status == 200  # ordinary traffic flows

    # Every request would have asked the directory; the breaker lets one probe per backoff
    # interval through (capped at check_interval): a handful, whatever the traffic.
    during = relay.arrivals(since=window_start)
    assert len(during) <= window / CHECK_INTERVAL + 2, (len(during), len(outcomes))
    total = relay.arrivals(since=stopped_at)
    assert len(total) <= (time.monotonic() - stopped_at) / 0.25 + 2, total
    assert metric(base, "citygate_directory_breaker_opens_total") >= 1
    assert metric(base, 'citygate_directory_breaker_state{state="closed"}') == 0
    rejected = metric(base, "citygate_directory_breaker_rejections_total")
    assert rejected >= len(outcomes)
    # Calls failed at once still count as failed directory calls: CitygateDirectoryDown's ratio.
    assert (
        metric(base, 'citygate_directory_requests_total{operation="authenticate",result="unavailable"}')
        >= rejected
    )
    assert metric(base, 'citygate_directory_breaker_probes_total{result="failed"}') >= 2

    fresh_slapd.start()
    back = readyz_turns(base, 200, CHECK_INTERVAL + SLACK)
    assert back is not None, "/readyz did not return within a check interval of the directory"
    assert curl(proxy, IN_SCOPE, proxy_user="jlee:jlee-pass").status == 200
    assert metric(base, 'citygate_directory_breaker_state{state="closed"}') == 1


def test_a_hung_directory_fails_social_media_closed_within_the_call_timeout(started, fresh_slapd, relay):
    proxy, base = started
    with fresh_slapd.paused():
        paused_at = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            readiness = pool.submit(readyz_turns, base, 503, CHECK_INTERVAL + CALL_TIMEOUT + SLACK)
            outcomes = social_requests(proxy, 3.0)
            down = readiness.result()
        attempts = relay.arrivals(since=paused_at)
        ordinary = curl(proxy, "http://www.example.org/")
    assert down is not None, "/readyz stayed 200 while the directory hung"
    assert ordinary.status == 200
    assert len(outcomes) >= 20
    for _, status, page in outcomes:
        assert status == 403 and "directory_unavailable" in page
    latencies = [seconds for seconds, _, _ in outcomes]
    assert p99(latencies) < CALL_TIMEOUT + 0.1, sorted(latencies)[-5:]
    assert len(attempts) <= 10, attempts  # not one per request

    back = readyz_turns(base, 200, CHECK_INTERVAL + CALL_TIMEOUT + SLACK)
    assert back is not None, "/readyz did not return after the directory resumed"
    assert curl(proxy, IN_SCOPE, proxy_user="jlee:jlee-pass").status == 200


def test_under_workers_the_supervisors_readyz_follows_the_directory(fresh_slapd, relay, tmp_path):
    """`citygate run --workers 2`: each worker's breaker reaches the supervisor's /readyz."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tmp_path / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["audit"]["directory"] = str(tmp_path / "log")
    document["metrics"] = {"listen": "127.0.0.1:0", "refresh_seconds": 5}  # readiness must not wait for it
    document["directory"] = {
        "backend": "ldap",
        **directory_options(fresh_slapd, tmp_path, "openldap", servers=[relay.url]),
        "call_timeout": CALL_TIMEOUT,
        "check_interval": CHECK_INTERVAL,
    }
    config.write_text(yaml.safe_dump(document))
    proxy_port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{metrics_port}"
    citygate = str(Path(sys.executable).parent / "citygate")
    command = [citygate, "run", "--workers", "2", "--config", str(config), "--listen-port", str(proxy_port)]
    command += [
        "--confdir",
        str(tmp_path / "ca"),
        "--set",
        f"citygate_metrics_listen=127.0.0.1:{metrics_port}",
    ]
    environment = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
    )
    try:
        assert readyz_turns(base, 200, 30.0) is not None, "the workers did not become ready"
        fresh_slapd.stop()
        # Each worker checks on its own schedule: every one of them must notice within one interval.
        started = time.monotonic()
        while not every_worker_down(base) and time.monotonic() - started < CHECK_INTERVAL + SLACK:
            time.sleep(0.05)
        assert every_worker_down(base), probe(f"{base}/readyz")
        fresh_slapd.start()
        assert readyz_turns(base, 200, CHECK_INTERVAL + SLACK) is not None
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
