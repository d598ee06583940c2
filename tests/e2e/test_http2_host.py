"""HTTP/2 inside a decrypted tunnel: `:authority` and `host` must agree, and each is decided on.

RFC 9113 §8.3.1: a request's `:authority` and `host` name the same host; a proxy that decided on
one while the front end routed on the other would serve an undecided site. A real mitmproxy with
citygate, a real h2 client (the `h2` library mitmproxy itself uses) over a real TLS tunnel.
"""

from __future__ import annotations

import base64
import socket
import ssl
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from citygate.addons.gate import CityGate

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "citygate.yaml"
JLEE = "jlee:jlee-pass"  # Parks: instagram, the whole site


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon):
    return proxy_runner_factory([CityGate(), redirect_addon], {"citygate_config": str(DEMO_CONFIG)})


def h2_request(proxy, tunnel_host: str, headers: list[tuple[str, str]]) -> tuple[int | None, bytes]:
    """One HTTP/2 request through a CONNECT tunnel as jlee: (status or None if reset, body)."""
    raw = socket.create_connection(proxy.address, timeout=10)
    token = base64.b64encode(JLEE.encode()).decode()
    raw.sendall(
        f"CONNECT {tunnel_host}:443 HTTP/1.1\r\nHost: {tunnel_host}:443\r\n"
        f"Proxy-Authorization: Basic {token}\r\n\r\n".encode()
    )
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(raw, server_hostname=tunnel_host) as tls:
        assert tls.selected_alpn_protocol() == "h2"
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
            )
        )
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, headers, end_stream=True)
        tls.sendall(connection.data_to_send())
        status, body = None, b""
        while True:
            data = tls.recv(65536)
            if not data:
                return status, body
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return status, body
            tls.sendall(connection.data_to_send())


def request_headers(authority: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", "/"), *extra]


def test_an_h2_request_for_the_granted_site_is_served(proxy, tls_upstream):
    status, _ = h2_request(proxy, "www.instagram.com", request_headers("www.instagram.com"))

    assert status == 200
    assert [r.header("Host") for r in tls_upstream.requests] == ["www.instagram.com"]


def test_an_h2_authority_naming_another_social_site_is_decided_on_that_site(proxy, tls_upstream):
    status, body = h2_request(proxy, "www.instagram.com", request_headers("www.facebook.com"))

    assert status == 403  # jlee's facebook grant covers /CityOfExampleParks only; this is /
    assert b"path_out_of_scope" in body
    assert not tls_upstream.contacted


def test_an_h2_host_header_that_disagrees_with_authority_is_refused(proxy, tls_upstream):
    status, body = h2_request(
        proxy, "www.instagram.com", request_headers("www.instagram.com", ("host", "www.facebook.com"))
    )

    # mitmproxy's HTTP/2 layer (the h2 library) refuses such a request itself and resets it,
    # before any hook; citygate's own check (proxy/request_head.py) would answer 400 otherwise.
    assert status is None and body == b""
    assert not tls_upstream.contacted


def test_an_h2_host_header_that_agrees_with_authority_is_served(proxy, tls_upstream):
    status, _ = h2_request(
        proxy, "www.instagram.com", request_headers("www.instagram.com", ("host", "www.instagram.com"))
    )

    assert status == 200
    assert tls_upstream.request_count == 1
