"""What an employee and a network admin see through a real citygate proxy on the demo config.

A real mitmproxy runs in-process with the citygate addon and the demo configuration
(config/citygate.yaml, directory/demo.ldif); curl and raw sockets talk to it; local servers on
127.0.0.1 stand in for the sites (RedirectToUpstream, added after citygate, sends every
upstream connection there, so no DNS or internet is involved).
"""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from harness import MITMPROXY_CA_CN, UPSTREAM_CA_CN, curl, raw_http_via_proxy, tunnel_peer_certificate

from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "citygate.yaml"
JLEE = "jlee:jlee-pass"  # Parks; grant: facebook limited to /CityOfExampleParks, instagram
MNGUYEN = "mnguyen:mnguyen-pass"  # Parks; no grant
KWILLIAMS = "kwilliams:kwilliams-pass"  # Communications; facebook, x, youtube, linkedin, nextdoor
BJONES = "bjones:bjones-pass"  # disabled account


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon):
    return proxy_runner_factory([CityGate(), redirect_addon], {"citygate_config": str(DEMO_CONFIG)})


# --- ordinary traffic -------------------------------------------------------------------------


def test_ordinary_http_passes_without_credentials_and_proxy_headers_are_stripped(proxy, plain_upstream):
    result = curl(
        proxy,
        "http://www.example.org/news?page=2",
        proxy_user=MNGUYEN,
        extra_args=("--proxy-header", "Proxy-Connection: keep-alive"),
    )

    assert result.status == 200, result.stderr
    [seen] = plain_upstream.requests
    assert seen.target == "/news?page=2"
    assert not seen.has_header("Proxy-Authorization")
    assert not seen.has_header("Proxy-Connection")


def test_ordinary_https_is_not_decrypted(proxy, tls_upstream):
    peer = tunnel_peer_certificate(proxy, "www.example.org")

    assert peer["connect_status"] == 200
    assert peer["issuer_cn"] == UPSTREAM_CA_CN  # the site's own certificate, not the proxy's
    assert tls_upstream.snis == ["www.example.org"]


class _SeesClientHellos:
    """Records the SNI of every ClientHello that reaches mitmproxy's TLS layers."""

    def __init__(self) -> None:
        self.snis: list[str | None] = []

    def tls_clienthello(self, data) -> None:
        self.snis.append(data.client_hello.sni)


def test_an_ordinary_tunnel_is_passed_through_before_any_tls_layer_and_a_social_sni_is_not(
    proxy_runner_factory, redirect_addon, tls_upstream
):
    hellos = _SeesClientHellos()
    proxy = proxy_runner_factory([CityGate(), hellos, redirect_addon], {"citygate_config": str(DEMO_CONFIG)})

    ordinary = tunnel_peer_certificate(proxy, "www.example.org")
    assert ordinary["issuer_cn"] == UPSTREAM_CA_CN
    assert hellos.snis == []  # decided on the CONNECT host and the SNI as the hello arrived

    with socket.create_connection(proxy.address, timeout=10) as raw:  # an ordinary CONNECT...
        raw.sendall(b"CONNECT www.example.org:443 HTTP/1.1\r\nHost: www.example.org:443\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(proxy.ca_pem))
        with context.wrap_socket(raw, server_hostname="www.facebook.com") as tls:  # ...social SNI
            issuer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).issuer
    assert hellos.snis == ["www.facebook.com"]  # left to the TLS layers and tls_clienthello
    assert issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == MITMPROXY_CA_CN


def test_ordinary_https_request_succeeds_end_to_end(proxy, tls_upstream):
    result = curl(proxy, "https://www.example.org/")

    assert result.status == 200, result.stderr
    assert result.json()["sni"] == "www.example.org"


# --- social media, plain HTTP -----------------------------------------------------------------


def test_social_media_without_credentials_gets_407(proxy, plain_upstream):
    result = curl(proxy, "http://www.facebook.com/")

    assert result.status == 407
    assert result.headers["proxy-authenticate"] == 'Basic realm="citygate"'
    assert not plain_upstream.contacted


def test_wrong_password_gets_407(proxy, plain_upstream):
    result = curl(proxy, "http://www.facebook.com/", proxy_user="mnguyen:not-the-password")

    assert result.status == 407
    assert not plain_upstream.contacted


def test_employee_without_grant_sees_block_page_naming_policy_reason_and_approvers(proxy, plain_upstream):
    result = curl(proxy, "http://www.facebook.com/", proxy_user=MNGUYEN)

    assert result.status == 403
    assert result.headers["content-type"].startswith("text/html")
    page = result.body
    assert "Facebook is blocked" in page
    assert "Administrative Order 8-19" in page
    assert "You do not have a grant for this site" in page
    assert "Ana Hernandez" in page  # Director of Parks, mnguyen's department
    assert "Taylor Smith" in page  # City Manager, city-wide
    assert "Ravi Patel" not in page  # Director of another department
    assert "name each site" in page and "business purpose" in page
    assert not plain_upstream.contacted


def test_granted_employee_reaches_granted_site_within_scope(proxy, plain_upstream):
    result = curl(proxy, "http://www.facebook.com/CityOfExampleParks/events", proxy_user=JLEE)

    assert result.status == 200, result.body
    [seen] = plain_upstream.requests
    assert seen.target == "/CityOfExampleParks/events"
    assert seen.header("Host") == "www.facebook.com"
    assert not seen.has_header("Proxy-Authorization")


def test_granted_employee_blocked_outside_path_scope(proxy, plain_upstream):
    result = curl(proxy, "http://www.facebook.com/SomeoneElse", proxy_user=JLEE)

    assert result.status == 403
    assert "path_out_of_scope" in result.body
    assert not plain_upstream.contacted


def test_dot_segments_cannot_climb_out_of_the_scope(proxy, plain_upstream):
    result = curl(
        proxy,
        "http://www.facebook.com/CityOfExampleParks/%2e%2e/SomeoneElse",
        proxy_user=JLEE,
        extra_args=("--path-as-is",),
    )

    assert result.status == 403
    assert not plain_upstream.contacted


def test_granted_employee_blocked_on_a_site_outside_the_grant(proxy, plain_upstream):
    result = curl(proxy, "http://x.com/", proxy_user=JLEE)

    assert result.status == 403
    assert "no_grant" in result.body
    assert not plain_upstream.contacted


def test_disabled_account_cannot_sign_in(proxy, plain_upstream):
    result = curl(proxy, "http://www.reddit.com/", proxy_user=BJONES)

    assert result.status == 403 and "<dd>employee_disabled</dd>" in result.body
    assert not plain_upstream.contacted


def test_block_page_escapes_what_it_reflects(proxy):
    result = curl(
        proxy,
        'http://www.facebook.com/"><script>alert(1)</script>',
        proxy_user=MNGUYEN,
        extra_args=("--globoff", "--path-as-is"),
    )

    assert result.status == 403
    assert "<script>alert(1)</script>" not in result.body
    assert "&lt;script&gt;" in result.body


def test_a_host_header_disagreeing_with_the_target_is_refused_with_400(proxy, plain_upstream):
    # RFC 9112 3.2: a front end that routed on Host would serve a site that was never decided.
    response = raw_http_via_proxy(
        proxy,
        b"GET http://www.example.org/ HTTP/1.1\r\nHost: www.facebook.com\r\nConnection: close\r\n\r\n",
    )

    assert response.startswith(b"HTTP/1.1 400")
    assert b"malformed_request" in response
    assert not plain_upstream.contacted


# --- social media over HTTPS ------------------------------------------------------------------


def test_https_social_media_without_credentials_refuses_the_connect_with_407(proxy, tls_upstream):
    result = curl(proxy, "https://www.facebook.com/")

    assert result.connect_status == 407
    assert not tls_upstream.contacted


def test_https_block_page_is_served_inside_the_intercepted_tunnel(proxy, tls_upstream):
    result = curl(proxy, "https://www.facebook.com/", proxy_user=MNGUYEN)

    assert result.connect_status == 200
    assert result.status == 403
    assert "You do not have a grant for this site" in result.body
    assert not tls_upstream.contacted  # lazy: no upstream connection before the decision
    peer = tunnel_peer_certificate(proxy, "www.facebook.com", proxy_user=MNGUYEN)
    assert peer["issuer_cn"] == MITMPROXY_CA_CN


def test_https_path_scoped_grant_is_intercepted_and_enforced(proxy, tls_upstream):
    inside = curl(proxy, "https://www.facebook.com/CityOfExampleParks", proxy_user=JLEE)
    outside = curl(proxy, "https://www.facebook.com/messages", proxy_user=JLEE)

    assert inside.status == 200, inside.body
    assert outside.status == 403
    assert "path_out_of_scope" in outside.body
    assert [r.target for r in tls_upstream.requests] == ["/CityOfExampleParks"]
    assert not tls_upstream.requests[0].has_header("Proxy-Authorization")


def test_https_unscoped_grant_is_decrypted_so_each_request_is_decided(proxy, tls_upstream):
    # A granted whole-site tunnel is looked into by default: a front end serving several brands
    # would otherwise serve any of them inside it (see test_wire_bypass.py for the fronting).
    peer = tunnel_peer_certificate(proxy, "www.instagram.com", proxy_user=JLEE)
    served = curl(proxy, "https://www.instagram.com/home", proxy_user=JLEE)

    assert peer["connect_status"] == 200
    assert peer["issuer_cn"] == MITMPROXY_CA_CN
    assert served.status == 200, served.body
    assert [r.target for r in tls_upstream.requests] == ["/home"]


def test_https_asset_domain_of_a_granted_site_is_decrypted_too(proxy):
    peer = tunnel_peer_certificate(proxy, "static.xx.fbcdn.net", proxy_user=JLEE)

    assert peer["issuer_cn"] == MITMPROXY_CA_CN


def test_a_site_that_passes_through_when_granted_is_not_decrypted(
    proxy_runner_factory, redirect_addon, tmp_path, tls_upstream
):
    config = _demo_copy(tmp_path)
    sites = config.parent / "sites.yaml"
    sites.write_text(
        sites.read_text().replace(
            "    domains: [x.com, twitter.com, tweetdeck.com]\n",
            "    domains: [x.com, twitter.com, tweetdeck.com]\n    pass_through_when_granted: true\n",
        )
    )
    proxy = proxy_runner_factory([CityGate(), redirect_addon], {"citygate_config": str(config)})

    granted = tunnel_peer_certificate(proxy, "x.com", proxy_user=KWILLIAMS)
    not_granted = tunnel_peer_certificate(proxy, "x.com", proxy_user=MNGUYEN)

    assert granted["issuer_cn"] == UPSTREAM_CA_CN  # the site's own certificate
    assert not_granted["issuer_cn"] == MITMPROXY_CA_CN  # decrypted to show the block page
    assert any("pass_through_when_granted" in line for line in proxy.log_lines())  # the warning


def _demo_copy(tmp_path: Path) -> Path:
    """The demo configuration copied to tmp_path (with the directory it points at), to edit."""
    shutil.copytree(DEMO_CONFIG.parent, tmp_path / "config")
    shutil.copytree(DEMO_CONFIG.parents[1] / "directory", tmp_path / "directory")
    return tmp_path / "config" / DEMO_CONFIG.name


def test_sni_naming_a_social_site_inside_an_ordinary_connect_is_intercepted(proxy, tls_upstream):
    # CONNECT to an ordinary host, then a TLS ClientHello for facebook: decided on the SNI.
    with socket.create_connection(proxy.address, timeout=10) as raw:
        raw.sendall(b"CONNECT www.example.org:443 HTTP/1.1\r\nHost: www.example.org:443\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(proxy.ca_pem))
        with context.wrap_socket(raw, server_hostname="www.facebook.com") as tls:
            issuer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).issuer
            tls.sendall(b"GET / HTTP/1.1\r\nHost: www.facebook.com\r\nConnection: close\r\n\r\n")
            response = _read_all(tls)

    assert issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == MITMPROXY_CA_CN
    assert response.startswith(b"HTTP/1.1 403")
    assert not tls_upstream.contacted


def _read_all(sock: ssl.SSLSocket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- failure handling -------------------------------------------------------------------------


class ExplodingGate(CityGate):
    """A citygate whose decision step fails, as a bug or a broken directory would."""

    async def _decide(self, *args, **kwargs):
        raise RuntimeError("simulated failure while deciding")


def test_a_failing_hook_denies_social_media_but_not_ordinary_traffic(
    proxy_runner_factory, redirect_addon, plain_upstream, tls_upstream
):
    proxy = proxy_runner_factory([ExplodingGate(), redirect_addon], {"citygate_config": str(DEMO_CONFIG)})

    social = curl(proxy, "http://www.facebook.com/", proxy_user=JLEE)
    social_tls = curl(proxy, "https://www.facebook.com/CityOfExampleParks", proxy_user=JLEE)
    ordinary = curl(proxy, "http://www.example.org/")

    assert social.status == 403
    assert social_tls.connect_status == 403
    assert ordinary.status == 200
    assert [r.header("Host") for r in plain_upstream.requests] == ["www.example.org"]
    assert not tls_upstream.contacted
    assert any("simulated failure" in line for line in proxy.log_lines())


def test_an_invalid_config_stops_startup_with_file_line_and_fix(proxy_runner_factory, tmp_path):
    config = tmp_path / "citygate.yaml"
    config.write_text(
        DEMO_CONFIG.read_text().replace("catalog: sites.yaml", f"catalog: {DEMO_CONFIG.parent}/sites.yaml")
    )
    (tmp_path / "grants").mkdir()
    (tmp_path / "grants" / "parks.yaml").write_text(
        "grants:\n  - id: g1\n    employee: jlee\n    sites: [facebok]\n    purpose: x\n"
        "    approved_by: ahernandez\n    approved_on: 2026-01-01\n    expires: 2026-06-01\n"
    )
    config.write_text(
        config.read_text().replace(
            "../directory/demo.ldif", str(DEMO_CONFIG.parents[1] / "directory" / "demo.ldif")
        )
    )

    with pytest.raises(Exception, match=r'parks\.yaml:4: unknown site "facebok"; did you mean "facebook"\?'):
        proxy_runner_factory([CityGate()], {"citygate_config": str(config)})


def test_citygate_refuses_to_run_with_eager_upstream_connections(proxy_runner_factory):
    with pytest.raises(Exception, match="connection_strategy=lazy"):
        proxy_runner_factory(
            [CityGate()], {"citygate_config": str(DEMO_CONFIG), "connection_strategy": "eager"}
        )


def test_citygate_refuses_to_run_without_a_config(proxy_runner_factory):
    with pytest.raises(Exception, match="citygate_config is not set"):
        proxy_runner_factory([CityGate()])


# --- what recorders (logs, metrics) are told --------------------------------------------------


class EventRecorder:
    def __init__(self) -> None:
        self.events = []

    def citygate_decision(self, event) -> None:
        self.events.append(event)


def test_every_social_decision_is_announced_once_and_ordinary_traffic_never(
    proxy_runner_factory, redirect_addon
):
    recorder = EventRecorder()
    proxy = proxy_runner_factory(
        [CityGate(), DecisionLog(), recorder, redirect_addon], {"citygate_config": str(DEMO_CONFIG)}
    )

    curl(proxy, "http://www.example.org/")
    denied = curl(proxy, "http://www.facebook.com/", proxy_user=MNGUYEN)
    curl(proxy, "http://www.facebook.com/CityOfExampleParks", proxy_user=JLEE)
    curl(proxy, "http://www.facebook.com/")

    summary = [
        (e.decision.reason.value, e.decision.evidence.employee, e.stage.value, e.status)
        for e in recorder.events
    ]
    assert summary == [
        ("no_grant", "mnguyen", "request", 403),
        ("granted", "jlee", "request", None),
        ("credentials_required", None, "request", 407),
    ]
    assert recorder.events[0].id in denied.body  # the block page's reference finds the log record
    assert recorder.events[1].decision.grant.id == "parks-2026-001"
    line = proxy.wait_for_log(f"id={recorder.events[0].id}")
    assert "deny reason=no_grant site=facebook" in line and "user=mnguyen" in line
    assert "jlee-pass" not in "\n".join(proxy.log_lines())
