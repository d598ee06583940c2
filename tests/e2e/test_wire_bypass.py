"""Bypasses at the wire: what a client can send after CONNECT, and how it splits it.

A real mitmproxy runs citygate on the demo configuration (config/citygate.yaml) with the access
log on; every upstream connection goes to a local server (``RedirectEverything``, added last):
intercepted TLS to the TLS echo server, port 80 to the plain echo server, everything else, and
port 443 where a test wants passed-through bytes recorded byte for byte, to a raw
``RecordingOrigin``. Clients are raw sockets, so the tests choose every byte and every split.

What citygate must do, whatever the split:
- a tunnel is decided before any byte goes upstream, on every host the client names (CONNECT
  authority, TLS SNI, Host and absolute-form target of every HTTP request inside the tunnel);
  bytes that are neither TLS nor HTTP, a ClientHello of an unknown record version, or one whose
  SNI is not a valid name, are relayed only when every host named is ordinary;
- a request whose Host is malformed or disagrees with its absolute-form target is refused with
  400 (RFC 9112 section 3.2) and logged as `malformed_request`;
- a tunnel to a social site is decrypted even when the grant has no path scope, so that every
  request inside it is decided on its own Host;
- credentials given on a CONNECT to an IP address count for the TLS tunnel it opens.

Every refusal test also checks that nothing reached any upstream (the redirect addon notes every
upstream connection, the servers every byte), and every shape has an ordinary twin that must
still get through (no false blocks).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from harness import MITMPROXY_CA_CN, UPSTREAM_CA_CN, PlainUpstream, ProxyRunner, TlsUpstream
from wire import (
    Answer,
    MemoryTlsClient,
    RecordingOrigin,
    RedirectEverything,
    Segmentation,
    TunnelClient,
    basic_auth,
    client_hello,
    connect_request,
    hello_layout,
    pieces,
    wait_until_idle,
    with_record_version,
    with_sni,
)

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate
from citygate.proxy.audit.files import expand, open_log

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "citygate.yaml"
JLEE = "jlee:jlee-pass"  # Parks; facebook limited to /CityOfExampleParks, instagram whole site
MNGUYEN = "mnguyen:mnguyen-pass"  # Parks; no grant
KWILLIAMS = "kwilliams:kwilliams-pass"  # Communications; facebook, x, youtube, linkedin, nextdoor

#: Pause between the pieces of a split message: long enough that the proxy reads each piece on
#: its own (127.0.0.1, TCP_NODELAY), short enough that a test with 16 pieces stays quick.
PAUSE = 0.02


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _recording_origin() -> Iterator[RecordingOrigin]:
    with RecordingOrigin() as origin:
        yield origin


@pytest.fixture
def origin(_recording_origin: RecordingOrigin) -> RecordingOrigin:
    _recording_origin.reset()
    return _recording_origin


@dataclass
class Gate:
    """A running citygate and everything that could have received upstream bytes."""

    runner: ProxyRunner
    redirect: RedirectEverything
    origin: RecordingOrigin
    plain: PlainUpstream
    tls: TlsUpstream
    log_dir: Path

    def client(self, timeout: float = 5.0) -> TunnelClient:
        return TunnelClient(self.runner.address, timeout=timeout)

    def settle(self) -> None:
        """Wait until the proxy holds no client connection (close the clients first)."""
        wait_until_idle(self.runner)

    def upstream_traffic(self) -> list[str]:
        """Everything that reached any upstream, described; empty when nothing did."""
        seen = [f"proxy opened {c}" for c in self.redirect.opened]
        seen += [
            f"origin got {len(c.data)} bytes for {c.destination}: {c.data[:60]!r}"
            for c in self.origin.connections
        ]
        if self.plain.connection_count:
            seen.append(f"plain upstream accepted {self.plain.connection_count} connection(s)")
        seen += [
            f"plain upstream got {r.method} {r.target} Host={r.header('Host')}" for r in self.plain.requests
        ]
        if self.tls.connection_count:
            seen.append(
                f"TLS upstream accepted {self.tls.connection_count} connection(s), SNI {self.tls.snis}"
            )
        return seen

    def assert_nothing_upstream(self) -> None:
        self.settle()
        assert self.upstream_traffic() == []

    def records(self) -> list[dict]:
        if not self.log_dir.exists():
            return []
        out = []
        for path in expand([self.log_dir]):
            with open_log(path) as handle:
                out.extend(json.loads(line) for line in handle if line.strip())
        return out

    def wait_for_record(self, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            for record in records:
                if predicate(record):
                    return record
            if time.monotonic() > deadline:
                summary = [
                    (r.get("event.action"), r.get("event.reason"), r.get("user.name")) for r in records
                ]
                raise AssertionError(f"no such access-log record; the log holds {summary}")
            time.sleep(0.02)


@pytest.fixture
def start_gate(
    proxy_runner_factory,
    origin: RecordingOrigin,
    plain_upstream: PlainUpstream,
    tls_upstream: TlsUpstream,
    tmp_path: Path,
) -> Callable[..., Gate]:
    def start(*, raw_ports: tuple[int, ...] = ()) -> Gate:
        """``raw_ports``: connections to these ports go to the recording origin (to see the exact
        bytes), even those mitmproxy would speak TLS on or send to an echo server."""
        redirect = RedirectEverything(
            origin, plain_upstream.address, tls_upstream.address, raw_ports=raw_ports
        )
        log_dir = tmp_path / "log"
        runner = proxy_runner_factory(
            [CityGate(), AuditLog(), redirect],
            {"citygate_config": str(DEMO_CONFIG), "citygate_audit_directory": str(log_dir)},
        )
        return Gate(runner, redirect, origin, plain_upstream, tls_upstream, log_dir)

    return start


@pytest.fixture
def gate(start_gate: Callable[..., Gate]) -> Gate:
    return start_gate()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

#: Ways to split a ClientHello. Offsets: 1 is the record type alone, 5 the end of the record
#: header, 9 the end of the handshake header; ``in_sni`` is relative to the SNI host name.
HELLO_SPLITS = [
    Segmentation("whole"),
    Segmentation("0x16 alone", (1,)),
    Segmentation("two bytes, then the rest", (2,)),
    Segmentation("record header byte by byte", (1, 2, 3, 4, 5)),
    Segmentation("record header, then the rest", (5,)),
    Segmentation("handshake header, then the rest", (9,)),
    Segmentation("right before the SNI extension", in_sni=(-9,)),
    Segmentation("inside the SNI host name", in_sni=(4,)),
    Segmentation("last byte late", from_end=(1,)),
    Segmentation("first 16 bytes one by one", tuple(range(1, 17))),
]

#: Ways to split a request head sent inside a tunnel.
HEAD_SPLITS = [
    Segmentation("whole"),
    Segmentation("G, then the rest", (1,)),
    Segmentation("GE, then the rest", (2,)),
    Segmentation("GET, then the rest", (3,)),
    Segmentation("GET and space, then the rest", (4,)),
    Segmentation("request line, then headers", (24,)),
    Segmentation("inside the Host value", (34,)),
    Segmentation("final CRLF late", from_end=(2,)),
    Segmentation("first 8 bytes one by one", tuple(range(1, 9))),
]

#: Bytes that are neither TLS nor HTTP, as chat apps send them through a CONNECT tunnel.
_RANDOM = random.Random(20260318)
NON_TLS_PAYLOADS = {
    "whatsapp-noise": b"WA\x05\x02" + _RANDOM.randbytes(60),
    "mtproto-abridged": b"\xef" + _RANDOM.randbytes(63),
    "binary-zeros": b"\x00\x01\x00\x00" + _RANDOM.randbytes(40),
}


def _get(host: str, path: str = "/", *, close: bool = False) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{connection}\r\n".encode()


def _tunnel(
    gate: Gate,
    authority: str,
    *,
    proxy_user: str | None = None,
    payload: bytes = b"",
    split: Segmentation = HELLO_SPLITS[0],
    pipelined: bool = False,
) -> tuple[TunnelClient, Answer]:
    """Open a client connection, CONNECT to ``authority`` and send ``payload`` split by
    ``split`` once the tunnel is open (``pipelined``: the first piece goes with the CONNECT,
    without waiting for its answer, as some clients do)."""
    client = gate.client()
    request = connect_request(authority, proxy_user=proxy_user)
    parts = pieces(payload, split.cuts(payload)) if payload else []
    if pipelined and parts:
        client.sock.sendall(request + parts[0])
        answer = client.read_head(connect=True)
        rest = b"".join(parts[1:])
        client.send_segmented(rest, _shift(split.cuts(payload), len(parts[0])), PAUSE)
        return client, answer
    answer = client.connect(request)
    if answer.status == 200 and payload:
        client.send_segmented(payload, split.cuts(payload), PAUSE)
    return client, answer


def _shift(cuts: list[int], by: int) -> list[int]:
    return [c - by for c in cuts if c > by]


def _assert_block_page(response: bytes, status: int = 403, reason: str | None = None) -> None:
    answer = Answer(response, False, False)
    assert answer.status == status, response[:300]
    assert (answer.header("content-type") or "").startswith("text/html"), response[:300]
    assert b"<!DOCTYPE html>" in answer.body, response[:300]
    if reason is not None:
        assert reason.encode() in answer.body, response[:300]


def _assert_citygate_400(answer: Answer) -> None:
    """A 400 answered by citygate's own page, not mitmproxy's protocol-error page."""
    assert answer.status == 400, answer.data[:300]
    assert (answer.header("content-type") or "").startswith("text/html"), answer.data[:300]
    assert not (answer.header("server") or "").startswith("mitmproxy"), answer.data[:300]
    assert b"<h1>400 Bad Request</h1>" not in answer.body, "mitmproxy's own error page"


def _tls_tunnel(
    gate: Gate,
    authority: str,
    sni: str,
    *,
    proxy_user: str | None = None,
    split: Segmentation = HELLO_SPLITS[0],
    pipelined: bool = False,
) -> tuple[TunnelClient, MemoryTlsClient]:
    """CONNECT, a ClientHello for ``sni`` sent as ``split`` says, and the finished handshake
    (with mitmproxy when it intercepts, with the upstream when it passes the tunnel through)."""
    tls = MemoryTlsClient(sni)
    client, answer = _tunnel(
        gate, authority, proxy_user=proxy_user, payload=tls.hello(), split=split, pipelined=pipelined
    )
    assert answer.status == 200, answer.data
    tls.handshake(client)
    return client, tls


# --------------------------------------------------------------------------------------------
# 1. TLS ClientHellos, however split
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-200", "pipelined"])
@pytest.mark.parametrize("split", HELLO_SPLITS, ids=str)
def test_an_ordinary_client_hello_passes_through_untouched_however_split(
    gate: Gate, split: Segmentation, pipelined: bool
):
    client, tls = _tls_tunnel(
        gate, "www.example.org:443", "www.example.org", split=split, pipelined=pipelined
    )
    with client:
        issuer = tls.peer_issuer_cn()
        response = tls.request(client, _get("www.example.org", "/after-split", close=True))

    assert issuer == UPSTREAM_CA_CN  # the site's own certificate: not decrypted
    assert Answer(response, True, False).status == 200, response[:300]
    assert gate.tls.snis == ["www.example.org"]
    assert [r.target for r in gate.tls.requests] == ["/after-split"]
    assert [(c.original, c.target) for c in gate.redirect.opened] == [
        (("www.example.org", 443), gate.tls.address)
    ]


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-200", "pipelined"])
@pytest.mark.parametrize("split", HELLO_SPLITS, ids=str)
def test_a_social_sni_under_an_ordinary_connect_is_intercepted_however_split(
    gate: Gate, split: Segmentation, pipelined: bool
):
    client, tls = _tls_tunnel(
        gate, "www.example.org:443", "www.facebook.com", split=split, pipelined=pipelined
    )
    with client:
        issuer = tls.peer_issuer_cn()
        response = tls.request(client, _get("www.facebook.com", "/messages", close=True))

    assert issuer == MITMPROXY_CA_CN, "the tunnel was relayed to the site instead of decrypted"
    _assert_block_page(response)
    gate.assert_nothing_upstream()


@pytest.mark.parametrize("split", HELLO_SPLITS, ids=str)
def test_an_employee_without_a_grant_gets_the_block_page_however_the_client_hello_is_split(
    gate: Gate, split: Segmentation
):
    """The issue's second shape: `CONNECT www.facebook.com:443` as an employee with no grant, then
    a split ClientHello: the tunnel is decrypted and refused, never relayed to Facebook."""
    client, tls = _tls_tunnel(
        gate, "www.facebook.com:443", "www.facebook.com", proxy_user=MNGUYEN, split=split
    )
    with client:
        issuer = tls.peer_issuer_cn()
        response = tls.request(client, _get("www.facebook.com", "/", close=True))

    assert issuer == MITMPROXY_CA_CN
    _assert_block_page(response)
    assert b"no_grant" in response
    gate.assert_nothing_upstream()


def test_every_single_cut_of_a_social_client_hello_is_intercepted(gate: Gate):
    """One cut at every offset of the record and handshake headers and around the SNI."""
    layout = hello_layout(client_hello("www.facebook.com"))
    assert layout.sni_name is not None
    offsets = [*range(1, 12), *range(layout.sni_name - 9, layout.sni_name + len("www.facebook.com") + 1)]
    outcomes: dict[int, str] = {}
    for offset in offsets:
        tls = MemoryTlsClient("www.facebook.com")
        client, answer = _tunnel(
            gate, "www.example.org:443", payload=tls.hello(), split=Segmentation(f"at {offset}", (offset,))
        )
        with client:
            assert answer.status == 200
            tls.handshake(client)
            issuer = tls.peer_issuer_cn()
            response = tls.request(client, _get("www.facebook.com", close=True))
        outcomes[offset] = f"{issuer} {Answer(response, True, False).status}"

    wrong = {offset: outcome for offset, outcome in outcomes.items() if outcome != f"{MITMPROXY_CA_CN} 403"}
    assert wrong == {}, f"cut offsets where the social SNI was not intercepted and refused: {wrong}"
    gate.assert_nothing_upstream()


# --- an SNI that is not a valid host name, but names a social site ----------------------------

INVALID_SOCIAL_SNIS = [
    pytest.param(b"www.facebook.com\x00", id="nul"),
    pytest.param(b"www.facebook.com\x00.example.org", id="nul-then-ordinary"),
    pytest.param("www\u3002facebook\u3002com".encode(), id="utf8-ideographic-dots"),
    pytest.param(b"www.facebook.com:443", id="port"),
    pytest.param(b"user@www.facebook.com", id="userinfo"),
    pytest.param(b"www.facebook.com ", id="trailing-space"),
]


# Passed through to the TLS echo server, a non-ASCII SNI makes its SNI callback raise inside
# OpenSSL, which Python reports as an unraisable exception: the failure says the rest.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("split", [HELLO_SPLITS[0], HELLO_SPLITS[1]], ids=str)
@pytest.mark.parametrize("sni", INVALID_SOCIAL_SNIS)
def test_a_client_hello_whose_sni_is_not_a_valid_name_but_names_a_social_site_is_not_relayed(
    gate: Gate, sni: bytes, split: Segmentation
):
    """mitmproxy reads such an SNI as no SNI at all; a server that reads it leniently (up to the
    NUL, IDNA-mapped, port dropped) would serve the social site."""
    hello = with_sni(client_hello("placeholder.invalid"), sni)

    client, answer = _tunnel(gate, "www.example.org:443", payload=hello, split=split)
    with client:
        assert answer.status == 200, answer.data
        client.read_answer()

    gate.assert_nothing_upstream()


def test_a_client_hello_with_a_patched_ordinary_sni_still_passes_through(gate: Gate):
    hello = with_sni(client_hello("placeholder.invalid"), b"www.example.org")

    client, answer = _tunnel(gate, "www.example.org:443", payload=hello)
    with client:
        assert answer.status == 200, answer.data
        after = client.read_answer()

    assert after.kind == "tls", after  # the upstream's ServerHello
    assert gate.tls.snis == ["www.example.org"]


# --- a ClientHello whose record version is unknown ---------------------------------------------

UNKNOWN_VERSION_CASES = [
    # (CONNECT authority, credentials, SNI, relayed?)
    pytest.param("www.example.org:443", None, "www.example.org", True, id="ordinary-connect-ordinary-sni"),
    pytest.param("www.example.org:443", None, "www.facebook.com", False, id="ordinary-connect-social-sni"),
    pytest.param("www.facebook.com:443", MNGUYEN, "www.example.org", False, id="social-connect-ordinary-sni"),
    pytest.param("www.facebook.com:443", MNGUYEN, "www.facebook.com", False, id="social-connect-social-sni"),
]


@pytest.mark.parametrize("split", [HELLO_SPLITS[0], HELLO_SPLITS[1], HELLO_SPLITS[4]], ids=str)
@pytest.mark.parametrize(("authority", "user", "sni", "relayed"), UNKNOWN_VERSION_CASES)
def test_a_client_hello_with_an_unknown_record_version_is_relayed_only_when_every_host_is_ordinary(
    start_gate, authority: str, user: str | None, sni: str, relayed: bool, split: Segmentation
):
    gate = start_gate(raw_ports=(443,))
    hello = with_record_version(client_hello(sni), b"\x03\x05")

    client, answer = _tunnel(gate, authority, proxy_user=user, payload=hello, split=split)
    with client:
        assert answer.status == 200, answer.data
        after = client.read_answer()

    if relayed:
        assert after.kind == "origin", after
        gate.origin.wait_for(len(hello))
        [seen] = gate.origin.connections
        assert seen.data == hello  # relayed byte for byte
        assert seen.destination == ("www.example.org", 443)
    else:
        assert after.kind == "closed", f"expected the proxy to close the connection, got {after}"
        gate.assert_nothing_upstream()


# --- bytes that are neither TLS nor HTTP -------------------------------------------------------


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-200", "pipelined"])
@pytest.mark.parametrize(
    "split",
    [Segmentation("whole"), Segmentation("first byte alone", (1,)), Segmentation("halves", (32,))],
    ids=str,
)
@pytest.mark.parametrize("payload", NON_TLS_PAYLOADS.values(), ids=NON_TLS_PAYLOADS.keys())
@pytest.mark.parametrize(
    "authority",
    [
        pytest.param("www.example.org:443", id="ordinary-443"),
        pytest.param("chat.example.org:5222", id="ordinary-5222"),
    ],
)
def test_non_tls_bytes_to_an_ordinary_host_are_relayed_raw(
    start_gate, authority: str, payload: bytes, split: Segmentation, pipelined: bool
):
    gate = start_gate(raw_ports=(443,))

    client, answer = _tunnel(gate, authority, payload=payload, split=split, pipelined=pipelined)
    with client:
        assert answer.status == 200, answer.data
        after = client.read_answer()

    assert after.kind == "origin", after
    gate.origin.wait_for(len(payload))
    [seen] = gate.origin.connections
    assert seen.data == payload
    host, port = authority.rsplit(":", 1)
    assert seen.destination == (host, int(port))


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-200", "pipelined"])
@pytest.mark.parametrize(
    "split",
    [Segmentation("whole"), Segmentation("first byte alone", (1,)), Segmentation("halves", (32,))],
    ids=str,
)
@pytest.mark.parametrize("payload", NON_TLS_PAYLOADS.values(), ids=NON_TLS_PAYLOADS.keys())
@pytest.mark.parametrize(
    ("authority", "user"),
    [
        pytest.param("www.facebook.com:443", MNGUYEN, id="facebook-443-no-grant"),
        pytest.param("g.whatsapp.net:5222", MNGUYEN, id="whatsapp-5222-no-grant"),
        pytest.param("www.facebook.com:443", None, id="facebook-443-anonymous"),
        pytest.param("g.whatsapp.net:5222", None, id="whatsapp-5222-anonymous"),
    ],
)
def test_non_tls_bytes_to_a_social_host_are_never_relayed(
    start_gate, authority: str, user: str | None, payload: bytes, split: Segmentation, pipelined: bool
):
    gate = start_gate(raw_ports=(443,))

    client, answer = _tunnel(
        gate, authority, proxy_user=user, payload=payload, split=split, pipelined=pipelined
    )
    with client:
        if answer.status == 200:
            after = client.read_answer()
            assert after.kind == "closed", f"expected the proxy to close the tunnel, got {after}"
        else:
            # No tunnel (407 to an anonymous client): bytes sent anyway must go nowhere either
            # (the proxy reads them as a next request, which never ends: no answer to wait for).
            assert answer.status == 407, answer.data
            if not pipelined:
                client.send_segmented(payload, split.cuts(payload), PAUSE)

    gate.assert_nothing_upstream()


# --- plain HTTP inside a CONNECT tunnel --------------------------------------------------------


@pytest.mark.parametrize("split", HEAD_SPLITS, ids=str)
def test_plain_http_inside_a_connect_tunnel_is_decided_on_its_host_however_split(
    gate: Gate, split: Segmentation
):
    client, answer = _tunnel(
        gate, "www.example.org:80", payload=_get("www.facebook.com", "/messages", close=True), split=split
    )
    with client:
        assert answer.status == 200, answer.data
        after = client.read_answer()

    assert after.status != 407, "a 407 inside a tunnel cannot be answered: it must be a block page"
    _assert_block_page(after.data)
    gate.assert_nothing_upstream()


@pytest.mark.parametrize("split", HEAD_SPLITS, ids=str)
def test_ordinary_http_inside_a_connect_tunnel_still_reaches_the_site_however_split(
    gate: Gate, split: Segmentation
):
    client, answer = _tunnel(
        gate, "www.example.org:80", payload=_get("www.example.org", "/messages", close=True), split=split
    )
    with client:
        assert answer.status == 200, answer.data
        after = client.read_answer()

    assert after.status == 200, after
    [seen] = gate.plain.requests
    assert (seen.target, seen.header("Host")) == ("/messages", "www.example.org")


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "both-at-once"])
def test_every_request_of_a_plain_http_tunnel_is_decided_not_only_the_first(gate: Gate, pipelined: bool):
    first, second = _get("www.example.org", "/first"), _get("www.facebook.com", "/messages", close=True)
    client, answer = _tunnel(gate, "www.example.org:80", payload=first + second if pipelined else first)
    with client:
        assert answer.status == 200, answer.data
        responses = [client.read_answer()]
        if not pipelined:
            client.sock.sendall(second)
        responses.append(client.read_answer())

    assert responses[0].status == 200, responses[0]
    _assert_block_page(responses[1].data)
    gate.settle()
    assert [(r.target, r.header("Host")) for r in gate.plain.requests] == [("/first", "www.example.org")]


ABSOLUTE_FORM_IN_TUNNEL = [
    pytest.param(b"GET http://www.facebook.com/messages HTTP/1.1\r\nConnection: close\r\n\r\n", id="no-host"),
    pytest.param(
        b"GET http://www.facebook.com/messages HTTP/1.1\r\nHost: www.facebook.com\r\nConnection: close\r\n\r\n",
        id="host-agrees",
    ),
    pytest.param(
        b"GET http://www.facebook.com/messages HTTP/1.1\r\nHost: www.example.org\r\nConnection: close\r\n\r\n",
        id="host-disagrees",
    ),
]


@pytest.mark.parametrize("split", [HEAD_SPLITS[0], HEAD_SPLITS[2]], ids=str)
@pytest.mark.parametrize("port", [80, 443])
@pytest.mark.parametrize("head", ABSOLUTE_FORM_IN_TUNNEL)
def test_an_absolute_form_target_inside_a_connect_tunnel_is_decided_on_too(
    start_gate, head: bytes, port: int, split: Segmentation
):
    """The request-target's authority is a host the request names, wherever it is sent."""
    gate = start_gate(raw_ports=(443,))
    client, answer = _tunnel(gate, f"www.example.org:{port}", payload=head, split=split)
    with client:
        assert answer.status == 200, answer.data
        after = client.read_answer()

    # Refused: a block page (403), or 400 for a missing or disagreeing Host; never 407.
    assert after.status in (400, 403), after
    gate.assert_nothing_upstream()


@pytest.mark.parametrize("port", [80, 443])
def test_an_ordinary_absolute_form_target_inside_a_connect_tunnel_still_gets_through(start_gate, port: int):
    gate = start_gate(raw_ports=(443,))
    head = b"GET http://www.example.org/news HTTP/1.1\r\nHost: www.example.org\r\nConnection: close\r\n\r\n"
    client, answer = _tunnel(gate, f"www.example.org:{port}", payload=head)
    with client:
        assert answer.status == 200, answer.data
        after = client.read_answer()

    assert after.status == 200, after
    gate.settle()
    assert gate.upstream_traffic() != []


def _h2c_prior_knowledge(authority: str) -> bytes:
    """An HTTP/2 cleartext connection with prior knowledge: preface, SETTINGS, one GET."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", "/messages")],
        end_stream=True,
    )
    return conn.data_to_send()


def _h2_authorities(received: bytes) -> list[str]:
    """The :authority of every HTTP/2 request in bytes an origin received (as an h2 server)."""
    if not received.startswith(b"PRI * HTTP/2.0"):
        return []
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    try:
        events = server.receive_data(received)
    except h2.exceptions.ProtocolError:
        return ["<unparsable HTTP/2>"]
    out = []
    for event in events:
        if isinstance(event, h2.events.RequestReceived):
            headers = {_text(k): _text(v) for k, v in event.headers}
            out.append(headers.get(":authority", "?"))
    return out


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@pytest.mark.parametrize(
    "split", [HEAD_SPLITS[0], HEAD_SPLITS[2], Segmentation("after the preface", (24,))], ids=str
)
def test_http2_with_prior_knowledge_inside_a_connect_tunnel_never_carries_a_social_authority(
    start_gate, split: Segmentation
):
    payload = _h2c_prior_knowledge("www.facebook.com")
    assert _h2_authorities(payload) == ["www.facebook.com"]  # the checker below sees such requests
    gate = start_gate(raw_ports=(80,))
    client, answer = _tunnel(gate, "www.example.org:80", payload=payload, split=split)
    with client:
        assert answer.status == 200, answer.data
        client.read_answer(timeout=1.0)

    gate.settle()
    carried = [a for c in gate.origin.connections for a in _h2_authorities(c.data)]
    assert carried == [], f"HTTP/2 requests that reached the origin: {carried}"
    assert not any(b"www.facebook.com" in c.data for c in gate.origin.connections)


# --- a path-scoped grant, with a split ClientHello ---------------------------------------------


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-200", "pipelined"])
@pytest.mark.parametrize(
    "split", [HELLO_SPLITS[0], HELLO_SPLITS[1], HELLO_SPLITS[4], HELLO_SPLITS[7]], ids=str
)
def test_a_path_scope_holds_inside_a_tunnel_whose_client_hello_was_split(
    gate: Gate, split: Segmentation, pipelined: bool
):
    client, tls = _tls_tunnel(
        gate, "www.facebook.com:443", "www.facebook.com", proxy_user=JLEE, split=split, pipelined=pipelined
    )
    with client:
        issuer = tls.peer_issuer_cn()
        outside = tls.request(client, _get("www.facebook.com", "/messages"))
        inside = tls.request(client, _get("www.facebook.com", "/CityOfExampleParks", close=True))

    assert issuer == MITMPROXY_CA_CN, "the tunnel was relayed to the site instead of decrypted"
    _assert_block_page(outside, reason="path_out_of_scope")
    assert Answer(inside, True, False).status == 200, inside[:300]
    assert [(r.target, r.header("Host")) for r in gate.tls.requests] == [
        ("/CityOfExampleParks", "www.facebook.com")
    ]


# --------------------------------------------------------------------------------------------
# 2. Host handling (RFC 9112 section 3.2)
# --------------------------------------------------------------------------------------------

_ABSOLUTE = b"GET http://www.example.org/ HTTP/1.1\r\n"
MALFORMED_PROXY_REQUESTS = [
    pytest.param(_ABSOLUTE + b"Host: www.example.org\r\nHost: www.facebook.com\r\n", id="two-host-headers"),
    pytest.param(_ABSOLUTE + b"Host: user@flic.kr\r\n", id="userinfo"),
    pytest.param(_ABSOLUTE + b"Host: threads.net\x00\r\n", id="nul"),
    pytest.param(_ABSOLUTE + b"Host: 127.0.0.1:18081@bsky.app\r\n", id="address-port-at-host"),
    pytest.param(_ABSOLUTE + b"Host: pinterest%2ede\r\n", id="percent-encoded-dot"),
    pytest.param(_ABSOLUTE + b"Host: www.example.org www.facebook.com\r\n", id="space"),
    pytest.param(_ABSOLUTE + b"Host: www.example.org:http\r\n", id="non-numeric-port"),
    pytest.param(
        _ABSOLUTE + b"Host: www.example.org\r\nX-A: b\r\n Host: www.facebook.com\r\n", id="obs-fold"
    ),
    pytest.param(_ABSOLUTE + b"Host: www.facebook.com\r\n", id="authority-disagrees-with-host"),
]


@pytest.mark.parametrize("head", MALFORMED_PROXY_REQUESTS)
def test_a_malformed_host_on_a_proxy_request_is_refused_with_400(gate: Gate, head: bytes):
    with gate.client() as client:
        client.sock.sendall(head + b"Connection: close\r\n\r\n")
        answer = client.read_answer()

    _assert_citygate_400(answer)
    record = gate.wait_for_record(lambda r: r.get("event.reason") == "malformed_request")
    assert record["event.type"] == "denied"
    assert record["http.response.status_code"] == 400
    gate.assert_nothing_upstream()


@pytest.mark.parametrize(
    "host", [b"WWW.Example.org:80", b"www.example.org", b"www.example.org.", b"www.example.org:80"]
)
def test_a_host_equal_to_the_authority_however_spelled_is_fine(gate: Gate, host: bytes):
    with gate.client() as client:
        client.sock.sendall(_ABSOLUTE + b"Host: " + host + b"\r\nConnection: close\r\n\r\n")
        answer = client.read_answer()

    assert answer.status == 200, answer
    [seen] = gate.plain.requests
    assert seen.target == "/"


_ORIGIN_FORM = b"GET / HTTP/1.1\r\n"
MALFORMED_TUNNEL_REQUESTS = [
    pytest.param(
        _ORIGIN_FORM + b"Host: www.instagram.com\r\nHost: www.facebook.com\r\n", id="two-host-headers"
    ),
    pytest.param(_ORIGIN_FORM + b"Host: user@flic.kr\r\n", id="userinfo"),
    pytest.param(_ORIGIN_FORM + b"Host: threads.net\x00\r\n", id="nul"),
    pytest.param(_ORIGIN_FORM + b"Host: 127.0.0.1:18081@bsky.app\r\n", id="address-port-at-host"),
    pytest.param(_ORIGIN_FORM + b"Host: pinterest%2ede\r\n", id="percent-encoded-dot"),
    pytest.param(_ORIGIN_FORM + b"Host: www.instagram.com www.facebook.com\r\n", id="space"),
    pytest.param(_ORIGIN_FORM + b"Host: www.instagram.com:https\r\n", id="non-numeric-port"),
    pytest.param(
        _ORIGIN_FORM + b"Host: www.instagram.com\r\nX-A: b\r\n Host: www.facebook.com\r\n", id="obs-fold"
    ),
    pytest.param(
        b"GET https://www.instagram.com/ HTTP/1.1\r\nHost: www.facebook.com\r\n",
        id="authority-disagrees-with-host",
    ),
]

#: Intercepted tunnels to send them in: (CONNECT authority, credentials, SNI).
INTERCEPTED_TUNNELS = [
    pytest.param("www.instagram.com:443", JLEE, "www.instagram.com", id="granted-instagram"),
    pytest.param("www.example.org:443", None, "www.facebook.com", id="anonymous-facebook-sni"),
]


@pytest.mark.parametrize(("authority", "user", "sni"), INTERCEPTED_TUNNELS)
@pytest.mark.parametrize("head", MALFORMED_TUNNEL_REQUESTS)
def test_a_malformed_host_inside_an_intercepted_tunnel_is_refused_with_400(
    gate: Gate, head: bytes, authority: str, user: str | None, sni: str
):
    client, tls = _tls_tunnel(gate, authority, sni, proxy_user=user)
    with client:
        assert tls.peer_issuer_cn() == MITMPROXY_CA_CN, "the tunnel was not intercepted"
        response = tls.request(client, head + b"Connection: close\r\n\r\n")

    _assert_citygate_400(Answer(response, True, False))
    gate.wait_for_record(lambda r: r.get("event.reason") == "malformed_request")
    gate.assert_nothing_upstream()


# --------------------------------------------------------------------------------------------
# 3. Granted social tunnels are decrypted, and every request inside is decided on its Host
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "granted_host", "other_host"),
    [
        pytest.param(JLEE, "www.instagram.com", "www.facebook.com", id="jlee-instagram"),
        pytest.param(KWILLIAMS, "www.facebook.com", "www.instagram.com", id="kwilliams-facebook"),
    ],
)
def test_a_granted_social_tunnel_is_intercepted_and_each_request_decided_on_its_host(
    gate: Gate, user: str, granted_host: str, other_host: str
):
    client, tls = _tls_tunnel(gate, f"{granted_host}:443", granted_host, proxy_user=user)
    with client:
        issuer = tls.peer_issuer_cn()
        granted = tls.request(client, _get(granted_host, "/"))
        smuggled = tls.request(client, _get(other_host, "/messages", close=True))

    assert issuer == MITMPROXY_CA_CN, "a granted social tunnel was passed through undecrypted"
    assert Answer(granted, True, False).status == 200, granted[:300]
    _assert_block_page(smuggled)
    assert [(r.target, r.header("Host")) for r in gate.tls.requests] == [("/", granted_host)]


def test_ordinary_tunnels_are_still_not_decrypted(gate: Gate):
    client, tls = _tls_tunnel(gate, "www.example.org:443", "www.example.org", proxy_user=KWILLIAMS)
    with client:
        assert tls.peer_issuer_cn() == UPSTREAM_CA_CN


# --------------------------------------------------------------------------------------------
# 4. Path scopes
# --------------------------------------------------------------------------------------------

ESCAPING_PATHS = ["/CityOfExampleParks/..;/messages", "/CityOfExampleParks/%252e%252e/messages"]


@pytest.mark.parametrize("path", ESCAPING_PATHS)
def test_a_path_that_climbs_out_of_the_scope_is_refused_over_plain_http(gate: Gate, path: str):
    request = (
        f"GET http://www.facebook.com{path} HTTP/1.1\r\nHost: www.facebook.com\r\n"
        f"Proxy-Authorization: {basic_auth(JLEE)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with gate.client() as client:
        client.sock.sendall(request)
        answer = client.read_answer()

    _assert_block_page(answer.data)
    gate.assert_nothing_upstream()


@pytest.mark.parametrize("path", ESCAPING_PATHS)
def test_a_path_that_climbs_out_of_the_scope_is_refused_inside_the_tunnel(gate: Gate, path: str):
    client, tls = _tls_tunnel(gate, "www.facebook.com:443", "www.facebook.com", proxy_user=JLEE)
    with client:
        response = tls.request(client, _get("www.facebook.com", path, close=True))

    _assert_block_page(response)
    gate.assert_nothing_upstream()


def test_a_path_inside_the_scope_still_gets_through(gate: Gate):
    client, tls = _tls_tunnel(gate, "www.facebook.com:443", "www.facebook.com", proxy_user=JLEE)
    with client:
        response = tls.request(client, _get("www.facebook.com", "/CityOfExampleParks/events", close=True))

    assert Answer(response, True, False).status == 200, response[:300]
    assert [r.target for r in gate.tls.requests] == ["/CityOfExampleParks/events"]


# --------------------------------------------------------------------------------------------
# 5. Credentials on a CONNECT to an IP address
# --------------------------------------------------------------------------------------------


def test_credentials_on_a_connect_to_an_ip_address_count_inside_its_tunnel(gate: Gate):
    client, tls = _tls_tunnel(gate, "127.0.0.1:443", "www.facebook.com", proxy_user=KWILLIAMS)
    with client:
        response = tls.request(client, _get("www.facebook.com", "/", close=True))

    assert Answer(response, True, False).status == 200, response[:300]
    assert [r.header("Host") for r in gate.tls.requests] == ["www.facebook.com"]
    record = gate.wait_for_record(lambda r: r.get("user.name") == "kwilliams")
    assert record["event.reason"] == "granted"
    assert not any(r.get("event.reason") == "credentials_required" for r in gate.records())


def test_the_same_sni_on_a_connection_without_credentials_is_not_allowed(gate: Gate):
    client, tls = _tls_tunnel(gate, "127.0.0.1:443", "www.facebook.com")
    with client:
        response = tls.request(client, _get("www.facebook.com", "/", close=True))

    _assert_block_page(response, reason="credentials_required")
    gate.assert_nothing_upstream()
