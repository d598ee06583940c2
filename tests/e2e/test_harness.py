"""The harness itself, proven against bare mitmproxy (no citygate addon)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from harness import (
    MITMPROXY_CA_CN,
    UPSTREAM_CA_CN,
    PlainUpstream,
    ProxyConnection,
    ProxyRunner,
    ProxyStartupError,
    TlsUpstream,
    curl,
    raw_http_via_proxy,
    tunnel_peer_certificate,
)
from mitmproxy import exceptions, http

from citygate.proxy.runtime.event_loop import chosen_event_loop

pytestmark = pytest.mark.e2e


def test_the_proxy_runs_on_the_event_loop_citygate_run_would_choose(proxy_runner_factory, redirect_addon):
    # `CITYGATE_EVENT_LOOP=uvloop` must put the in-process proxy on uvloop, or a suite run meant
    # to prove uvloop would silently prove the standard loop again.
    runner = proxy_runner_factory([redirect_addon])

    loop = runner.call(lambda: type(asyncio.get_running_loop()))

    expected = "uvloop" if chosen_event_loop() == "uvloop" else "asyncio"
    assert loop.__module__.split(".")[0] == expected


def test_plain_http_reaches_upstream_with_original_host(
    proxy_runner_factory, plain_upstream: PlainUpstream, tls_upstream: TlsUpstream, redirect_addon
):
    runner = proxy_runner_factory([redirect_addon])

    result = curl(runner, "http://www.example.org/some/path?q=1")

    assert (result.returncode, result.status) == (0, 200), result.stderr
    echo = result.json()
    assert echo["server"] == "plain"
    assert echo["path"] == "/some/path?q=1"  # mitmproxy forwards origin-form
    assert echo["headers"]["host"] == "www.example.org"
    [seen] = plain_upstream.requests
    assert (seen.method, seen.target, seen.header("Host")) == ("GET", "/some/path?q=1", "www.example.org")
    assert plain_upstream.connection_count == 1
    assert redirect_addon.redirects == [("http", ("www.example.org", 80), plain_upstream.address)]
    assert not tls_upstream.contacted


def test_bytes_endpoint(proxy_runner_factory, plain_upstream, redirect_addon):
    runner = proxy_runner_factory([redirect_addon])

    result = curl(runner, "http://example.org/bytes/100000")

    assert result.status == 200
    assert len(result.body) == 100000
    assert result.headers["content-length"] == "100000"


def test_https_is_intercepted_by_mitmproxy(
    proxy_runner_factory, plain_upstream, tls_upstream: TlsUpstream, redirect_addon
):
    runner = proxy_runner_factory([redirect_addon])

    result = curl(runner, "https://www.facebook.com/feed")

    assert (result.returncode, result.connect_status, result.status) == (0, 200, 200), result.stderr
    echo = result.json()
    assert (echo["server"], echo["path"], echo["headers"]["host"]) == (
        "tls",
        "/feed",
        "www.facebook.com",
    )
    # mitmproxy's own TLS connection upstream names the real host and verified our test CA.
    assert tls_upstream.snis == ["www.facebook.com"]
    assert echo["sni"] == "www.facebook.com"
    assert not plain_upstream.contacted

    # What the client is shown: a certificate for the host, issued by mitmproxy's CA.
    mitm_ca = x509.load_pem_x509_certificate(runner.ca_pem.read_bytes())
    ca_cn = mitm_ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert ca_cn == MITMPROXY_CA_CN
    before = tls_upstream.connection_count
    peer = tunnel_peer_certificate(runner, "www.instagram.com")
    assert peer["connect_status"] == 200
    assert peer["issuer_cn"] == MITMPROXY_CA_CN
    assert peer["subject_cn"] == "www.instagram.com"
    # connection_strategy=lazy: a handshake without a request never contacts upstream.
    assert tls_upstream.connection_count == before


def test_ignore_hosts_passes_tls_through(proxy_runner_factory, tls_upstream, redirect_addon):
    runner = proxy_runner_factory([redirect_addon], {"ignore_hosts": [r"^www\.linkedin\.com"]})

    peer = tunnel_peer_certificate(runner, "www.linkedin.com")

    assert peer["connect_status"] == 200
    assert peer["issuer_cn"] == UPSTREAM_CA_CN  # the origin's own certificate, untouched
    assert "www.linkedin.com" in peer["san_dns"]
    assert tls_upstream.snis == ["www.linkedin.com"]  # the client's own handshake arrived
    assert redirect_addon.redirects == [("tunnel", ("www.linkedin.com", 443), tls_upstream.address)]

    # A full request through the passthrough tunnel, verified by curl against the test CA.
    result = curl(runner, "https://www.linkedin.com/in/someone")
    assert (result.returncode, result.status) == (0, 200), result.stderr
    assert result.json()["sni"] == "www.linkedin.com"

    # Control: a host that is not ignored is still intercepted by the same proxy.
    assert tunnel_peer_certificate(runner, "www.facebook.com")["issuer_cn"] == MITMPROXY_CA_CN


def test_upstream_certificate_is_verified(proxy_runner_factory, tls_upstream, redirect_addon):
    # Without the upstream test CA, mitmproxy must refuse the upstream: proves the harness's
    # trust setting is what makes interception work, not a disabled verification.
    runner = proxy_runner_factory([redirect_addon], upstream_ca=None)

    result = curl(runner, "https://www.facebook.com/")

    assert result.status == 502
    assert "certificate verify failed" in result.body.lower()
    assert tls_upstream.request_count == 0


def test_six_plain_requests_on_one_keepalive_connection(
    proxy_runner_factory, plain_upstream: PlainUpstream, redirect_addon
):
    runner = proxy_runner_factory([redirect_addon])

    with ProxyConnection(runner, timeout=5) as conn:
        statuses = [
            conn.request(
                f"GET http://www.example.org/r{i} HTTP/1.1\r\nHost: www.example.org\r\n\r\n".encode()
            ).status
            for i in range(6)
        ]

    assert statuses == [200] * 6
    assert [r.target for r in plain_upstream.requests] == [f"/r{i}" for i in range(6)]
    assert plain_upstream.connection_count == 1  # mitmproxy reused its upstream connection


def test_seven_https_requests_on_one_keepalive_tunnel(
    proxy_runner_factory, tls_upstream: TlsUpstream, redirect_addon
):
    runner = proxy_runner_factory([redirect_addon])
    urls = [f"https://www.facebook.com/r{i}" for i in range(7)]

    result = curl(runner, urls[0], extra_args=["--http1.1", *urls[1:]], timeout=5)

    assert result.returncode == 0, result.stderr
    assert [w["http_code"] for w in result.write_outs] == [200] * 7
    assert sorted(r.target for r in tls_upstream.requests) == [f"/r{i}" for i in range(7)]
    assert tls_upstream.connection_count == 1


def test_absolute_form_with_mismatching_host_header(
    proxy_runner_factory, plain_upstream: PlainUpstream, redirect_addon
):
    runner = proxy_runner_factory([redirect_addon])

    raw = raw_http_via_proxy(
        runner,
        b"GET http://www.example.org/abs HTTP/1.1\r\n"
        b"Host: www.facebook.com\r\n"
        b"Proxy-Connection: Keep-Alive\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwdw==\r\n"
        b"\r\n",
    )

    assert raw.startswith(b"HTTP/1.1 200 ")
    [seen] = plain_upstream.requests
    # Bare mitmproxy routes by the request line, keeps the Host header as sent, and forwards
    # both proxy headers: the addon under test has to deal with all three.
    assert redirect_addon.redirects[0][1] == ("www.example.org", 80)
    assert seen.header("Host") == "www.facebook.com"
    assert seen.header("Proxy-Connection") == "Keep-Alive"
    assert seen.header("Proxy-Authorization") == "Basic dXNlcjpwdw=="


class _Refuse:
    """Answers plain HTTP with 403 and refuses CONNECT, like a policy addon would."""

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.response = http.Response.make(403, b"blocked by test", {"Content-Type": "text/plain"})

    def http_connect(self, flow: http.HTTPFlow) -> None:
        flow.response = http.Response.make(403, b"tunnel refused by test")


def test_answered_flows_never_reach_upstream(
    proxy_runner_factory, plain_upstream, tls_upstream, redirect_addon
):
    runner = proxy_runner_factory([_Refuse(), redirect_addon])

    plain = curl(runner, "http://www.facebook.com/")
    tunnel = curl(runner, "https://www.facebook.com/")
    peer = tunnel_peer_certificate(runner, "www.facebook.com")

    assert (plain.status, plain.body) == (403, "blocked by test")
    assert tunnel.connect_status == 403
    assert tunnel.status == 0  # curl got no response beyond the refused CONNECT
    assert tunnel.returncode != 0
    assert peer["connect_status"] == 403 and peer["issuer_cn"] is None
    assert b"tunnel refused by test" in peer["connect_response"]
    assert redirect_addon.redirects == []
    assert not plain_upstream.contacted and not tls_upstream.contacted


class _HostSpy:
    """Records which host earlier addons see in each hook while the redirect is active."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.seen.append(("requestheaders", flow.request.host))

    def request(self, flow: http.HTTPFlow) -> None:
        self.seen.append(("request", flow.request.host))

    def response(self, flow: http.HTTPFlow) -> None:
        self.seen.append(("response", flow.request.host))


def test_addon_under_test_sees_original_host(proxy_runner_factory, plain_upstream, redirect_addon):
    spy = _HostSpy()
    runner = proxy_runner_factory([spy, redirect_addon])

    assert curl(runner, "http://www.example.org/").status == 200

    assert spy.seen == [
        ("requestheaders", "www.example.org"),
        ("request", "www.example.org"),
        ("response", "www.example.org"),
    ]
    assert plain_upstream.request_count == 1


class _BadConfig:
    def load(self, loader) -> None:
        loader.add_option("harness_bad_option", str, "", "An option whose value is never valid.")

    def configure(self, updated: set[str]) -> None:
        raise exceptions.OptionsError("harness test: policy file is invalid")


def test_options_error_in_configure_fails_start(proxy_runner_factory, plain_upstream, redirect_addon):
    with pytest.raises(exceptions.OptionsError, match="harness test: policy file is invalid"):
        proxy_runner_factory([_BadConfig(), redirect_addon])

    # The failed runner released the one-master slot and its listener: a new one starts.
    runner = proxy_runner_factory([redirect_addon])
    assert curl(runner, "http://www.example.org/").status == 200


class _FailsWhenRunning:
    def running(self) -> None:
        raise RuntimeError("harness test: cannot reach the directory")


def test_error_logged_during_startup_fails_start(proxy_runner_factory):
    # mitmdump exits on errors logged during start-up; the runner raises them instead.
    with pytest.raises(ProxyStartupError, match="harness test: cannot reach the directory"):
        proxy_runner_factory([_FailsWhenRunning()])


class _RaisesInRequest:
    def request(self, flow: http.HTTPFlow) -> None:
        raise ValueError("harness test: hook exploded")


def test_hook_errors_are_captured_in_logs(proxy_runner_factory, plain_upstream, redirect_addon):
    runner = proxy_runner_factory([_RaisesInRequest(), redirect_addon])

    result = curl(runner, "http://www.example.org/")

    assert any("harness test: hook exploded" in line for line in runner.errors)
    # mitmproxy's documented fail-open: the request went upstream anyway.
    assert result.status == 200
    assert plain_upstream.request_count == 1
    assert any(r.levelno == logging.INFO and r.name.startswith("mitmproxy") for r in runner.log_records)


def test_only_one_runner_at_a_time(proxy_runner_factory, pki):
    runner = proxy_runner_factory([])

    with pytest.raises(RuntimeError, match="another ProxyRunner is still running"):
        ProxyRunner([], upstream_ca=pki.ca_pem).start()

    runner.stop()
    with ProxyRunner([], upstream_ca=pki.ca_pem) as second:
        assert second.port != 0
