"""The fast path (addons/fast_path.py) through a real proxy: what it relays itself, what it hands
to mitmproxy, and that turning it off gives the old behaviour.

The rest of the end-to-end suite runs with the fast path on, as `citygate run` does, unless
`CITYGATE_FAST_PATH=0` (tests/e2e/conftest.py); these tests turn it on or off themselves,
whatever the environment.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import MITMPROXY_CA_CN, UPSTREAM_CA_CN, ProxyRunner, TlsUpstream
from test_metrics import scrape, values, wait_for
from wire import Answer, MemoryTlsClient, RecordingOrigin, RedirectEverything, TunnelClient, connect_request

from citygate.addons import fast_path
from citygate.addons.audit import AuditLog
from citygate.addons.connection_limits import ConnectionLimits
from citygate.addons.fast_path import OPTION, FastPath
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "citygate.yaml"


@dataclass
class Proxy:
    runner: ProxyRunner
    fast: FastPath
    metrics: Metrics
    redirect: RedirectEverything
    tls: TlsUpstream

    def counted(self) -> dict[tuple[str, ...], float]:
        assert self.metrics.server is not None
        return values(scrape(self.metrics.server.url), "citygate_fast_path_connections_total", "outcome")

    def passed_through(self) -> dict[tuple[str, ...], float]:
        assert self.metrics.server is not None
        return values(scrape(self.metrics.server.url), "citygate_passthrough_connections_total", "kind")

    def gauge(self, name: str) -> float:
        assert self.metrics.server is not None
        return sum(value for _, value in scrape(self.metrics.server.url).get(name, []))

    def closed(self) -> dict[tuple[str, ...], float]:
        assert self.metrics.server is not None
        return values(scrape(self.metrics.server.url), "citygate_connections_closed_total", "reason")

    def held(self) -> tuple[int, int]:
        """(tunnels the fast path relays, client connections mitmproxy holds) right now."""
        proxyserver = self.runner.master.addons.get("proxyserver")  # type: ignore[union-attr]
        return self.runner.call(lambda: (len(self.fast.relays), len(proxyserver.connections)))


@pytest.fixture
def _origin() -> Iterator[RecordingOrigin]:
    with RecordingOrigin() as origin:
        yield origin


@pytest.fixture
def start(
    proxy_runner_factory, _origin: RecordingOrigin, tls_upstream: TlsUpstream, tmp_path: Path
) -> Callable[[bool], Proxy]:
    def start_proxy(on: bool, **options: object) -> Proxy:
        redirect = RedirectEverything(_origin, tls=tls_upstream.address)
        gate = CityGate()
        fast = FastPath(gate, redirect.fast_path_target)
        metrics = Metrics()
        limits = ConnectionLimits()
        runner = proxy_runner_factory(
            [limits, gate, limits.after_gate, AuditLog(), metrics, fast, redirect],
            {
                "citygate_config": str(DEMO_CONFIG),
                "citygate_audit_directory": str(tmp_path / "log"),
                "citygate_metrics_listen": "127.0.0.1:0",
                OPTION: on,
                **options,
            },
        )
        return Proxy(runner, fast, metrics, redirect, tls_upstream)

    return start_proxy


def _tls_tunnel(proxy: Proxy, authority: str, sni: str) -> tuple[TunnelClient, MemoryTlsClient, Answer]:
    client = TunnelClient(proxy.runner.address, timeout=5.0)
    answer = client.connect(connect_request(authority))
    assert answer.status == 200, answer.data
    tls = MemoryTlsClient(sni)
    client.sock.sendall(tls.hello())
    tls.handshake(client)
    return client, tls, answer


def _get(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def test_an_ordinary_tunnel_is_relayed_by_the_fast_path_without_mitmproxy(start):
    proxy = start(True)
    client, tls, answer = _tls_tunnel(proxy, "www.example.org:443", "www.example.org")
    with client:
        assert answer.data == b"HTTP/1.1 200 Connection established\r\n\r\n"  # as mitmproxy answers
        assert tls.peer_issuer_cn() == UPSTREAM_CA_CN  # the site's own certificate
        assert proxy.held() == (1, 0)  # relayed by the fast path; mitmproxy never saw it
        # A whole MiB back through the relay: reading resumes after each pause (back-pressure).
        response = tls.request(client, _get("www.example.org", f"/bytes/{2**20}"), timeout=10)
    assert Answer(response, True, False).status == 200
    assert len(Answer(response, True, False).body) == 2**20
    assert proxy.tls.snis == ["www.example.org"]
    wait_for(lambda: proxy.held() == (0, 0))
    assert proxy.counted() == {("relayed",): 1}
    assert proxy.passed_through() == {("tunnel",): 1}  # still counted as a passed-through tunnel


def test_a_social_sni_after_the_fast_paths_200_is_decided_by_mitmproxy(start):
    proxy = start(True)
    client, tls, answer = _tls_tunnel(proxy, "www.example.org:443", "www.facebook.com")
    with client:
        # One 200 reached the client (a second would have broken the handshake just made).
        assert answer.data == b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert tls.peer_issuer_cn() == MITMPROXY_CA_CN  # decrypted: the gate decides inside
        response = tls.request(client, _get("www.facebook.com", "/messages"))
    assert Answer(response, True, False).status == 403  # no grant: the block page
    assert proxy.tls.connection_count == 0
    assert proxy.redirect.opened == []
    wait_for(lambda: proxy.counted() == {("handed_off",): 1})


def test_a_social_connect_and_plain_http_go_to_mitmproxy(start):
    proxy = start(True)
    with TunnelClient(proxy.runner.address, timeout=5.0) as client:
        answer = client.connect(connect_request("www.facebook.com:443"))
    assert answer.status == 407  # the gate's answer: sign in for social media
    with TunnelClient(proxy.runner.address, timeout=5.0) as client:
        client.sock.sendall(b"GET http://www.facebook.com/ HTTP/1.1\r\nHost: www.facebook.com\r\n\r\n")
        assert client.read_answer().status == 407
    wait_for(lambda: proxy.counted() == {("handed_off",): 2})
    assert proxy.redirect.opened == []


def test_turned_off_every_tunnel_goes_through_mitmproxy_as_before(start):
    proxy = start(False)
    client, tls, _ = _tls_tunnel(proxy, "www.example.org:443", "www.example.org")
    with client:
        assert tls.peer_issuer_cn() == UPSTREAM_CA_CN
        assert proxy.held() == (0, 1)  # mitmproxy holds it, the fast path never saw it
        response = tls.request(client, _get("www.example.org", "/off"))
    assert Answer(response, True, False).status == 200
    wait_for(lambda: proxy.passed_through() == {("tunnel",): 1})
    assert proxy.counted() == {}


def test_a_relayed_tunnel_idle_for_tcp_timeout_is_closed(start):
    proxy = start(True, tcp_timeout=1)
    client, _, _ = _tls_tunnel(proxy, "www.example.org:443", "www.example.org")
    with client:
        assert proxy.held() == (1, 0)
        client.sock.settimeout(5)
        began = time.monotonic()
        while client.sock.recv(4096):  # the site's session tickets, then the close
            pass
        assert 0.5 < time.monotonic() - began < 3.5
    assert proxy.held() == (0, 0)


def test_relayed_tunnels_count_against_the_client_limit_and_in_the_gauge(start):
    proxy = start(True, citygate_max_client_connections=2)
    first, _, _ = _tls_tunnel(proxy, "www.example.org:443", "www.example.org")
    second, _, _ = _tls_tunnel(proxy, "www.example.org:443", "www.example.org")
    with first, second:
        assert proxy.held() == (2, 0)
        wait_for(lambda: proxy.gauge("citygate_client_connections") == 2)
        with TunnelClient(proxy.runner.address, timeout=5.0) as third:
            third.sock.sendall(connect_request("www.example.org:443"))
            assert _closed_unanswered(third.sock)  # closed as it was accepted
        wait_for(lambda: proxy.closed() == {("client_limit",): 1})
    wait_for(lambda: proxy.held() == (0, 0))
    wait_for(lambda: proxy.gauge("citygate_client_connections") == 0)
    # Both closed: their address may open connections again.
    again, _, _ = _tls_tunnel(proxy, "www.example.org:443", "www.example.org")
    with again:
        assert proxy.held() == (1, 0)


def test_a_connection_handed_to_mitmproxy_is_counted_once(start):
    proxy = start(True, citygate_max_client_connections=1)
    with TunnelClient(proxy.runner.address, timeout=5.0) as client:
        # Plain HTTP: the fast path counts it, then hands it to mitmproxy, which counts it itself.
        client.sock.sendall(b"GET http://www.facebook.com/ HTTP/1.1\r\nHost: www.facebook.com\r\n\r\n")
        assert client.read_answer().status == 407
        assert proxy.held() == (0, 1)
        wait_for(lambda: proxy.gauge("citygate_client_connections") == 1)
    wait_for(lambda: proxy.gauge("citygate_client_connections") == 0)
    assert proxy.closed() == {}


def test_an_upstream_that_never_accepts_is_given_up_after_the_connect_timeout(start, monkeypatch):
    monkeypatch.setattr(fast_path, "CONNECT_SECONDS", 1)
    proxy = start(True)
    with _unanswering_listener() as address:
        proxy.fast.upstream = lambda _: address
        with TunnelClient(proxy.runner.address, timeout=10.0) as client:
            assert client.connect(connect_request("www.example.org:443")).status == 200
            client.sock.sendall(MemoryTlsClient("www.example.org").hello())
            wait_for(lambda: proxy.held() == (1, 0))
            began = time.monotonic()
            assert client.sock.recv(4096) == b""  # closed, not left hanging
            assert 0.5 < time.monotonic() - began < 4
        assert proxy.held() == (0, 0)
        assert proxy.counted() == {}  # never relayed


def _closed_unanswered(sock: socket.socket) -> bool:
    """Whether the proxy closed `sock` without a byte: a reset, when what was sent lay unread."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


@contextlib.contextmanager
def _unanswering_listener() -> Iterator[tuple[str, int]]:
    """An address whose connects hang: a listener with a full accept queue drops new SYNs (Linux)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(3):  # a backlog of 0 still queues one; the ones after are refused
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        time.sleep(0.2)
        yield address
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
