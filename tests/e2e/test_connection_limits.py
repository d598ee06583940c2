"""Header and idle timeouts and the per-client connection limit, on a real `citygate run`.

Each test starts `citygate run --workers 1` on the demo configuration with small limits and
talks to it over real sockets on 127.0.0.1; clients that must count as other addresses bind
other loopback addresses (127.0.0.0/8 is all local on Linux).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness import UPSTREAM_CA_CN, PlainUpstream, TestPKI, TlsUpstream
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
CITYGATE = str(Path(sys.executable).parent / "citygate")
IDLE_CLIENTS = 2000
SLOW_CLIENTS = 20
# The proxy closes an overdue connection at its next sweep, once a second; the rest is room
# for a machine shared with other tests.
LATE = 2.5


@dataclass
class Citygate:
    process: subprocess.Popen[bytes]
    port: int
    metrics_url: str

    def closed_total(self, reason: str) -> float:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            self.metrics_url, timeout=5
        ) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "citygate_connections_closed_total" and sample.labels["reason"] == reason:
                    return sample.value
        raise AssertionError("citygate_connections_closed_total is not on /metrics")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def file_limit(wanted: int) -> Iterator[None]:
    """Enough file descriptors for this process and the proxy it starts (which inherits them)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = before
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))  # above hard: root
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.fixture
def start_citygate(tmp_path: Path) -> Iterator:
    processes: list[subprocess.Popen[bytes]] = []

    def start(**options: int) -> Citygate:
        port, metrics_port = free_port(), free_port()
        settings = [f"--set={name}={value}" for name, value in options.items()]
        env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
        process = subprocess.Popen(
            [
                CITYGATE, "run", "--workers", "1", "--config", str(REPO / "config" / "citygate.yaml"),
                "--listen-port", str(port), "--confdir", str(tmp_path / "ca"),
                f"--set=citygate_audit_directory={tmp_path / 'log'}",
                f"--set=citygate_metrics_listen=127.0.0.1:{metrics_port}",
                *settings,
            ],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("wb"), env=env,
        )  # fmt: skip
        processes.append(process)
        proxy = Citygate(process, port, f"http://127.0.0.1:{metrics_port}/metrics")
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "stderr").read_text()
            with contextlib.suppress(OSError):
                proxy.closed_total("header_timeout")
                return proxy
            assert time.monotonic() < deadline, "citygate did not start"
            time.sleep(0.1)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def connect(proxy: Citygate, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", proxy.port))
    return sock


def get(proxy: Citygate, url: str, source: str = "127.0.0.1") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the other end closes `sock` within `timeout` (it sends nothing before)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def watch_closes(
    opened: dict[socket.socket, float], trickle: set[socket.socket], within: float
) -> dict[socket.socket, float]:
    """When the proxy closed each socket, sending one more byte of a request head each second
    on those in `trickle`, until every socket is closed or `within` seconds have passed."""
    selector = selectors.DefaultSelector()
    for sock in opened:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed: dict[socket.socket, float] = {}
    deadline = time.monotonic() + within
    next_byte = time.monotonic() + 1
    while len(closed) < len(opened) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            assert data == b"", f"the proxy answered a request it never got whole: {data[:80]!r}"
            closed[sock] = time.monotonic()
            selector.unregister(sock)
        if time.monotonic() >= next_byte:
            next_byte += 1
            for sock in trickle - closed.keys():
                with contextlib.suppress(OSError):
                    sock.send(b"a")
    selector.close()
    return closed


class Requests(threading.Thread):
    """Ordinary requests through the proxy, one after another, each on a new connection, and
    one kept-alive connection asking every half second (never idle long enough to be closed)."""

    def __init__(self, proxy: Citygate, url: str) -> None:
        super().__init__(daemon=True)
        self.proxy, self.url = proxy, url
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.kept_alive: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        kept = http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=10)
        next_kept = time.monotonic()
        while not self.stop.is_set():
            began = time.perf_counter()
            try:
                self.statuses.append(get(self.proxy, self.url))
                if time.monotonic() >= next_kept:
                    next_kept += 0.5
                    kept.request("GET", self.url)
                    response = kept.getresponse()
                    response.read()
                    self.kept_alive.append(response.status)
            except OSError as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.perf_counter() - began)
        kept.close()


def max_open_files(proxy: Citygate, wanted: int, within: float) -> int:
    """The most file descriptors the proxy holds until it holds `wanted` or `within` s pass."""
    deadline = time.monotonic() + within
    most = proxy.open_files()
    while most < wanted and time.monotonic() < deadline:
        time.sleep(0.01)
        most = max(most, proxy.open_files())
    return most


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99) - 1]


def test_idle_and_slowloris_clients_are_closed_while_ordinary_requests_are_served(
    start_citygate, plain_upstream: PlainUpstream
):
    header_timeout = 2
    with file_limit(IDLE_CLIENTS * 3 + 1000):
        proxy = start_citygate(citygate_header_timeout=header_timeout, citygate_idle_timeout=3)
        files_before = proxy.open_files()
        requests = Requests(proxy, f"http://127.0.0.1:{plain_upstream.port}/ordinary")
        requests.start()
        opened: dict[socket.socket, float] = {}
        try:
            # Ten addresses, 200 connections each: under the default limit of 256 per address.
            for n in range(IDLE_CLIENTS):
                sock = connect(proxy, f"127.0.0.{10 + n % 10}")
                opened[sock] = time.monotonic()
                if n % 32 == 31:
                    # mitmproxy listens with a backlog of 100: connections it has not accepted
                    # yet beyond that are dropped by the kernel, and their clients retry 1 s later.
                    while proxy.open_files() < files_before + n + 1 - 32:
                        time.sleep(0.002)
            slow = set()
            for _ in range(SLOW_CLIENTS):
                sock = connect(proxy, "127.0.0.20")
                sock.sendall(f"GET http://127.0.0.1:{plain_upstream.port}/ HTTP/1.1\r\nX-Slow: ".encode())
                opened[sock] = time.monotonic()
                slow.add(sock)
            files_held = max_open_files(proxy, files_before + IDLE_CLIENTS, within=1.0)
            closed = watch_closes(opened, slow, within=header_timeout + LATE + 10)
            time.sleep(1)  # ordinary requests go on after the closing, too
        finally:
            requests.stop.set()
            requests.join(timeout=30)
            for sock in opened:
                sock.close()

        assert len(closed) == len(opened), f"{len(opened) - len(closed)} connections were never closed"
        waited = [closed[sock] - began for sock, began in opened.items()]
        assert min(waited) >= header_timeout - 0.05
        slow_waited = [closed[sock] - opened[sock] for sock in slow]
        assert max(slow_waited) <= header_timeout + LATE, "a byte a second kept a head open"
        # The last idle connections opened seconds after the first (accepting 2,000 takes time).
        assert max(closed.values()) <= max(opened.values()) + header_timeout + LATE
        assert files_held >= files_before + IDLE_CLIENTS
        assert proxy.open_files() < files_before + 50, "the closed connections' descriptors were kept"
        assert requests.failures == []
        assert set(requests.statuses) == {200} and len(requests.statuses) > 20
        assert set(requests.kept_alive) == {200} and len(requests.kept_alive) >= 2 * header_timeout
        assert p99(requests.latencies) < 1.0, sorted(requests.latencies)[-10:]
        assert proxy.closed_total("header_timeout") == IDLE_CLIENTS + SLOW_CLIENTS
        assert proxy.closed_total("client_limit") == 0


class _Slow(BaseHTTPRequestHandler):
    """Answers GET /N after N seconds."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(float(self.path.rsplit("/", 1)[1]))
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"slow")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout_not_while_a_request_waits(
    start_citygate, plain_upstream: PlainUpstream, slow_upstream: int
):
    proxy = start_citygate(citygate_header_timeout=1, citygate_idle_timeout=3)
    sock = connect(proxy)
    # Its upstream answers after 5 s: longer than both timeouts, with no byte in between.
    sock.sendall(f"GET http://127.0.0.1:{slow_upstream}/5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    answer = b""
    while not answer.endswith(b"slow"):
        chunk = sock.recv(4096)
        assert chunk, "the proxy closed a connection whose request was waiting for its response"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    answered = time.monotonic()
    assert not closed_by_peer(sock, 2.5), "closed before the idle timeout"
    assert closed_by_peer(sock, 0.5 + LATE), "not closed after the idle timeout"
    assert time.monotonic() - answered >= 3
    sock.close()
    assert proxy.closed_total("idle_timeout") == 1
    assert proxy.closed_total("header_timeout") == 0


def test_a_client_address_over_the_limit_is_refused_and_other_addresses_are_served(
    start_citygate, plain_upstream: PlainUpstream
):
    proxy = start_citygate(citygate_max_client_connections=5, citygate_header_timeout=60)
    url = f"http://127.0.0.1:{plain_upstream.port}/ordinary"
    held = [connect(proxy, "127.0.0.30") for _ in range(5)]
    excess = connect(proxy, "127.0.0.30")
    assert closed_by_peer(excess, 2), "the sixth connection from one address was kept"
    assert not any(closed_by_peer(sock, 0.1) for sock in held), "the first five were closed"
    assert get(proxy, url, source="127.0.0.31") == 200
    assert get(proxy, url) == 200
    held.pop().close()
    time.sleep(0.2)  # the proxy sees the close
    assert get(proxy, url, source="127.0.0.30") == 200
    for sock in held:
        sock.close()
    excess.close()
    assert proxy.closed_total("client_limit") == 1


def open_tunnel(proxy: Citygate, port: int) -> socket.socket:
    sock = connect(proxy)
    sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return sock


def test_a_tunnel_passed_through_outlives_the_timeouts_while_it_carries_data_and_while_silent(
    start_citygate, tls_upstream: TlsUpstream, pki: TestPKI
):
    proxy = start_citygate(citygate_header_timeout=1, citygate_idle_timeout=2)
    context = ssl.create_default_context(cafile=str(pki.ca_pem))
    tunnel = context.wrap_socket(open_tunnel(proxy, tls_upstream.port), server_hostname="localhost")
    issuer = dict(entry[0] for entry in tunnel.getpeercert()["issuer"])
    assert issuer["commonName"] == UPSTREAM_CA_CN  # the site's own certificate: not decrypted
    connection = http.client.HTTPConnection("localhost")
    connection.sock = tunnel

    def ask() -> None:
        connection.request("GET", "/inside")
        response = connection.getresponse()
        assert response.status == 200
        response.read()

    began = time.monotonic()
    while time.monotonic() - began < 4:  # twice the idle timeout, four times the header timeout
        ask()
        time.sleep(0.5)
    time.sleep(3.5)  # silent for longer than the idle timeout, as a long poll inside would be
    ask()
    connection.close()
    assert tls_upstream.connection_count == 1
    assert proxy.closed_total("idle_timeout") == 0
    assert proxy.closed_total("header_timeout") == 0


def test_a_tunnel_whose_start_never_completes_is_closed_after_the_header_timeout(
    start_citygate, tls_upstream: TlsUpstream
):
    proxy = start_citygate(citygate_header_timeout=2)
    silent = open_tunnel(proxy, tls_upstream.port)
    trickling = open_tunnel(proxy, tls_upstream.port)
    trickling.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello's first bytes, then one a second
    opened = time.monotonic()
    closed = watch_closes({silent: opened, trickling: opened}, {trickling}, within=2 + LATE + 5)
    assert len(closed) == 2
    assert all(2 - 0.05 <= at - opened <= 2 + LATE for at in closed.values()), closed
    assert not tls_upstream.contacted
    assert proxy.closed_total("header_timeout") == 2


def test_a_websocket_outlives_the_idle_timeout(start_citygate, websocket_upstream: int):
    proxy = start_citygate(citygate_header_timeout=1, citygate_idle_timeout=2)
    sock = connect(proxy)
    sock.sendall(
        f"GET http://127.0.0.1:{websocket_upstream}/chat HTTP/1.1\r\nHost: 127.0.0.1:{websocket_upstream}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WEBSOCKET_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert read_head(sock).startswith(b"HTTP/1.1 101")
    for message in (b"hello", b"after a silence longer than the idle timeout"):
        sock.sendall(websocket_frame(message, mask=b"\x01\x02\x03\x04"))
        assert read_frame(sock) == message, "the WebSocket was cut"
        time.sleep(3.5)
    sock.close()
    assert proxy.closed_total("idle_timeout") == 0


def test_a_tunnel_citygate_decrypts_is_closed_once_idle_after_its_requests(start_citygate, tmp_path: Path):
    proxy = start_citygate(citygate_header_timeout=1, citygate_idle_timeout=2)
    sock = connect(proxy)
    # mnguyen has no grant: the tunnel is decrypted to show the block page, and nothing goes upstream.
    sock.sendall(
        b"CONNECT www.facebook.com:443 HTTP/1.1\r\nHost: www.facebook.com:443\r\n"
        b"Proxy-Authorization: Basic bW5ndXllbjptbmd1eWVuLXBhc3M=\r\n\r\n"
    )
    assert read_head(sock).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(tmp_path / "ca" / "mitmproxy-ca-cert.pem"))
    tunnel = context.wrap_socket(sock, server_hostname="www.facebook.com")
    connection = http.client.HTTPConnection("www.facebook.com")
    connection.sock = tunnel
    for _ in range(4):  # over two idle timeouts, asking every second
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.status == 403
        response.read()
        time.sleep(1)
    answered = time.monotonic()
    tunnel.settimeout(2 + LATE)
    assert tunnel.recv(1) == b"", "an idle decrypted tunnel was kept"
    assert time.monotonic() - answered >= 2 - 1 - 0.05  # the last response came a second earlier
    tunnel.close()
    assert proxy.closed_total("idle_timeout") == 1


def test_negative_limits_are_refused_at_start(tmp_path: Path):
    result = subprocess.run(
        [
            CITYGATE, "run", "--workers", "1", "--config", str(REPO / "config" / "citygate.yaml"),
            "--listen-port", str(free_port()), "--confdir", str(tmp_path / "ca"),
            f"--set=citygate_audit_directory={tmp_path / 'log'}", "--set=citygate_idle_timeout=-1",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "citygate_idle_timeout: must be 0 (no limit) or more" in result.stderr


WEBSOCKET_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def read_head(sock: socket.socket) -> bytes:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, head
        head += byte
    return head


def websocket_frame(payload: bytes, mask: bytes = b"") -> bytes:
    """One final text frame (payloads under 126 bytes); a client's frames are masked."""
    assert len(payload) < 126
    if not mask:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(sock: socket.socket) -> bytes:
    def take(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "closed"
            data += chunk
        return data

    first, second = take(2)
    assert first == 0x81 and second & 0x7F < 126
    mask = take(4) if second & 0x80 else b""
    payload = take(second & 0x7F)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload


@pytest.fixture
def websocket_upstream() -> Iterator[int]:
    """A WebSocket echo server on 127.0.0.1 for one connection."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError, AssertionError):
            sock, _ = server.accept()
            with sock:
                head = read_head(sock)
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                accept = base64.b64encode(
                    hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
                )
                sock.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                while True:
                    sock.sendall(websocket_frame(read_frame(sock)))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
