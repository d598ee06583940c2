"""`citygate run --workers N`: N processes on one port, one CA, and no process left behind."""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import os
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CITYGATE = str(Path(sys.executable).parent / "citygate")
ECHO = Path(__file__).with_name("worker_echo.py")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers share the port with SO_REUSEPORT")


@dataclass
class Service:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the output:\n" + "".join(self.lines))

    @property
    def port(self) -> int:
        return int(self.wait_for(r"workers serving on port (\d+)")[1])

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return [int(pid) for pid in children.split()]


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    services: list[Service] = []

    def start_service(*extra: str, env: dict[str, str] | None = None) -> Service:
        # The access log in the test's folder, not the checkout's var/ (the demo config's).
        command = [CITYGATE, "run", "--listen-port", "0", "--confdir", str(tmp_path / "ca")]
        command += ["--set", f"citygate_audit_directory={tmp_path / 'log'}", *extra]
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env or _env()
        )
        service = Service(process)
        threading.Thread(target=lambda: service.lines.extend(process.stdout or ()), daemon=True).start()
        services.append(service)
        return service

    yield start_service
    for service in services:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait(10)


def ask_worker(port: int) -> str:
    """One request on a new connection; the answer names the worker that served it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "http://worker.test/")
        response = connection.getresponse()
        assert response.status == 200
        return re.search(r"worker=(\d+)", response.read().decode())[1]
    finally:
        connection.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose, but only its parent can reap it: check its state.
    status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}").exists() else ""
    return "State:\tZ" not in status


def wait_gone(pids: list[int], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)]


def test_two_workers_share_the_port_and_stop_together_on_sigterm(start, tmp_path: Path):
    service = start("--workers", "2", "--set", f"scripts={ECHO}")
    port = service.port
    workers = service.worker_pids()
    assert len(workers) == 2

    served = {ask_worker(port) for _ in range(40)}  # new connections, spread by the kernel

    assert served == {"0", "1"}
    # One CA, created before the workers started.
    assert sorted(p.name for p in (tmp_path / "ca").glob("mitmproxy-ca*.pem")) == [
        "mitmproxy-ca-cert.pem",
        "mitmproxy-ca.pem",
    ]
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(20) == 0
    wait_gone(workers)


def test_a_worker_that_dies_is_reported_and_replaced(start):
    service = start("--workers", "2", "--set", f"scripts={ECHO}")
    port = service.port
    first, second = service.worker_pids()

    os.kill(first, signal.SIGKILL)

    service.wait_for(rf"worker \d \(pid {first}\) exited with status -9 .*starting a new one")
    deadline = time.monotonic() + 30
    while (len(service.worker_pids()) < 2 or first in service.worker_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    replacement = next(pid for pid in service.worker_pids() if pid != second)
    assert replacement != first
    # The replacement serves the same port: both indexes answer again.
    deadline = time.monotonic() + 30
    served: set[str] = set()
    while served != {"0", "1"} and time.monotonic() < deadline:
        served.add(ask_worker(port))
    assert served == {"0", "1"}
    service.process.send_signal(signal.SIGINT)
    assert service.process.wait(20) == 0
    wait_gone([second, replacement])


def test_workers_do_not_outlive_a_killed_supervisor(start):
    service = start("--workers", "2")
    service.wait_for("workers serving on port")
    workers = service.worker_pids()

    service.process.kill()  # SIGKILL: no chance to stop the workers itself
    service.process.wait(10)

    wait_gone(workers)


def test_a_worker_failing_at_start_stops_the_service(start):
    service = start("--workers", "2", "--set", "no_such_option=1")

    assert service.process.wait(30) == 2
    service.wait_for("no_such_option")
    assert not any("Traceback" in line for line in service.lines), "\n".join(service.lines)


def test_workers_must_be_a_positive_number():
    result = subprocess.run([CITYGATE, "run", "--workers", "0"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "--workers must be at least 1" in result.stderr


def test_a_port_in_use_is_refused_not_shared(start):
    first = start("--workers", "2")
    port = first.port

    second = start("--workers", "2", "--listen-port", str(port))

    assert second.process.wait(30) == 2
    second.wait_for("cannot listen on 127.0.0.1:.*Address already in use")
    assert first.process.poll() is None


class _UpstreamProxy(http.server.BaseHTTPRequestHandler):
    """A parent proxy: answers every proxied request itself, and notes its request line."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.requestline)
        body = f"upstream proxy saw {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        self.seen.append(self.requestline)
        self.send_error(502)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream_proxy() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_UpstreamProxy,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def _get_through(port: int, url: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_workers_serve_in_upstream_mode(start, upstream_proxy):
    upstream_port, seen = upstream_proxy
    service = start(
        "--workers",
        "2",
        "--set",
        f"scripts={ECHO}",
        "--set",
        f"mode=upstream:http://127.0.0.1:{upstream_port}",
    )
    port = service.port

    served = {ask_worker(port) for _ in range(40)}  # both workers took their sockets
    ordinary = _get_through(port, "http://www.example.org/via-parent")
    social = _get_through(port, "http://www.facebook.com/")
    tunnel = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    tunnel.set_tunnel("www.facebook.com", 443)
    with pytest.raises(OSError, match="407 Proxy Authentication Required"):
        tunnel.connect()
    tunnel.close()

    assert served == {"0", "1"}
    assert ordinary == (200, "upstream proxy saw http://www.example.org/via-parent\n")
    assert social[0] == 407 and "sign in with your City account" in social[1]
    assert seen == ["GET http://www.example.org/via-parent HTTP/1.1"]  # the social ones went nowhere
    assert not any("Address already in use" in line for line in service.lines), "".join(service.lines)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(20) == 0


@pytest.mark.parametrize("where", ["xdg-runtime-dir", "temp-dir"])
def test_the_shared_folder_of_a_killed_supervisor_is_removed_at_the_next_start(
    start, tmp_path: Path, where: str
):
    env = {key: value for key, value in _env().items() if key != "XDG_RUNTIME_DIR"}
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    if where == "xdg-runtime-dir":
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg")
        (tmp_path / "xdg").mkdir(mode=0o700)
        base = tmp_path / "xdg"
    else:  # /run/citygate first, where a service manager made it for this user
        run = Path("/run/citygate")
        base = run if run.is_dir() and os.access(run, os.W_OK | os.X_OK) else tmp_path / "tmp"
    runs = base / f"citygate-run-{os.getuid()}"
    killed = start("--workers", "2", env=env)
    killed.wait_for("workers serving on port")
    [stale] = runs.glob(f"shared-{killed.process.pid}-*")
    assert (runs.stat().st_mode & 0o777, stale.stat().st_mode & 0o777) == (0o700, 0o700)
    workers = killed.worker_pids()
    killed.process.kill()  # SIGKILL: no chance to clean up
    killed.process.wait(10)
    wait_gone(workers)
    # Where earlier versions made it: straight in the temp dir.
    old = tmp_path / "tmp" / f"citygate-shared-{killed.process.pid}-abc123"
    old.mkdir()
    assert stale.is_dir()

    again = start("--workers", "2", env=env)
    again.wait_for("workers serving on port")

    assert not stale.exists() and not old.exists()
    assert [folder.name.split("-")[1] for folder in runs.glob("shared-*")] == [str(again.process.pid)]
    again.process.send_signal(signal.SIGTERM)
    assert again.process.wait(20) == 0
    assert list(runs.glob("shared-*")) == []


class _HelloEcho(socketserver.BaseRequestHandler):
    """An upstream that answers a tunnel's first bytes with their length and first byte."""

    def handle(self) -> None:
        data = self.request.recv(65536)
        self.request.sendall(f"upstream got {len(data)} bytes starting {data[:1].hex()}".encode())


def _client_hello(server_name: str) -> bytes:
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize(
    ("settings", "counted"),
    [
        # The default: relayed by the workers' fast path, not by mitmproxy (which would relay it too).
        ([], 'citygate_fast_path_connections_total{outcome="relayed"} 20.0'),
        # Turned off: mitmproxy takes every connection, as before the fast path.
        (["--set", "citygate_fast_path=false"], 'citygate_passthrough_connections_total{kind="tunnel"} 20.0'),
    ],
)
def test_workers_relay_ordinary_tunnels_on_the_fast_path_unless_it_is_off(start, settings, counted):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HelloEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            metrics_port = probe.getsockname()[1]
        service = start(
            "--workers", "2", *settings, "--set", f"citygate_metrics_listen=127.0.0.1:{metrics_port}"
        )
        port = service.port
        upstream = server.server_address[1]
        for _ in range(20):
            hello = _client_hello("upstream.test")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(
                    f"CONNECT 127.0.0.1:{upstream} HTTP/1.1\r\nHost: 127.0.0.1:{upstream}\r\n\r\n".encode()
                )
                answer = b""
                while not answer.endswith(b"\r\n\r\n"):
                    answer += client.recv(1)
                assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
                client.sendall(hello)
                assert client.recv(100) == f"upstream got {len(hello)} bytes starting 16".encode()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 15
        while counted not in (text := opener.open(metrics_url, timeout=5).read().decode()):
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        relayed = re.search(r'citygate_fast_path_connections_total\{outcome="relayed"\} (\S+)', text)
        assert (float(relayed[1]) if relayed else 0.0) == (0.0 if settings else 20.0)
    finally:
        server.shutdown()
        server.server_close()


def browser_connect(port: int) -> int:
    """A browser's CONNECT to a social host without credentials, on a new connection: its status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"CONNECT www.facebook.com:443 HTTP/1.1\r\nHost: www.facebook.com:443\r\n"
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0\r\n\r\n"
        )
        return int(sock.makefile("rb").readline().split()[1])


def test_a_sign_in_on_one_worker_is_known_to_every_worker(start):
    # The kernel spreads a browser's connections over the workers: after signing in on one,
    # its CONNECTs must get the 407 from all of them, or some would be sent to sign in again.
    service = start("--workers", "2")
    port = service.port
    assert {browser_connect(port) for _ in range(20)} == {200}  # not signed in: tunnels, no 407

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    credentials = base64.b64encode(b"jlee:jlee-pass").decode()
    connection.request(
        "GET",
        "http://sign-in.citygate.invalid/sign-in?to=https%3A%2F%2Fwww.facebook.com%2F",
        headers={"Proxy-Authorization": f"Basic {credentials}"},
    )
    signed_in = connection.getresponse()
    assert (signed_in.status, signed_in.getheader("Location")) == (302, "https://www.facebook.com/")
    connection.close()

    assert {browser_connect(port) for _ in range(20)} == {407}
