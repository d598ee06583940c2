"""Property test at the wire: whatever the bytes and however they are split, no social host is
reached without a grant, and the split never changes the outcome.

One real mitmproxy runs citygate on the demo configuration (config/citygate.yaml) for the whole
module; every upstream connection goes to a local server (``RedirectEverything``): connections
mitmproxy may speak TLS on to the TLS echo server, all others to a raw ``RecordingOrigin``,
which answers HTTP heads with a 200 and anything else with ``ORIGIN-SAW``. Clients are anonymous
or mnguyen (an employee with no grant).

Hypothesis generates cases:
- a plain proxy request head (method, origin- or absolute-form target, zero to two Host fields
  spelled in every way: case, trailing dot, ideographic dots, ports, userinfo, NUL, percent-
  encoding, spaces, lists, integer and hex IPv4; obsolete line folding), with or without
  mnguyen's credentials;
- a CONNECT (ordinary or social authority, name or IP in any spelling, port) followed by a TLS
  ClientHello (SNI spelled in every way, written by OpenSSL or patched in byte for byte; record
  version 03 00..03 or unknown), by bytes that are neither TLS nor HTTP (WhatsApp's Noise
  prologue, MTProto, SOCKS, zeros, then random bytes), or by a plain HTTP request head (origin-
  or absolute-form, or a nested CONNECT); inside a tunnel the proxy decrypts, one more request;
- and, for each case, one or two more segmentations of the same bytes (cut anywhere, small
  offsets such as the record type alone favoured, the first piece sent with the CONNECT).

Properties, for every case:
- a case that names a social host in any position (CONNECT authority, Host, folded Host,
  absolute-form or CONNECT target, SNI) gets no byte to any upstream, and neither does any
  request inside a tunnel the proxy decrypted; an SNI counts as naming whatever a lenient server
  could read in it (up to a NUL, IDNA-mapped, port or userinfo dropped, percent-decoded, one
  item of a list, an IP literal);
- so does a case with a malformed Host (RFC 9112 section 3.2);
- the outcome (the proxy's answers, the certificate's issuer, whether any upstream was reached)
  is the same for every segmentation;
- an ordinary, well-formed case does reach the origin (and gets its 200 for HTTP).

Budget: CITYGATE_FUZZ_EXAMPLES examples (2,000 by default; `make fuzz` runs 50,000). A failure
prints the case, each segmentation's outcome, this run's seed and Hypothesis's reproduction
blob; `CITYGATE_FUZZ_SEED=N` replays run N (each run draws its own seed).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import MITMPROXY_CA_CN, ProxyRunner, TestPKI, TlsUpstream
from hypothesis import HealthCheck, event, given, note, seed, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from wire import (
    Answer,
    MemoryTlsClient,
    RecordingOrigin,
    RedirectEverything,
    TunnelClient,
    basic_auth,
    client_hello,
    connect_request,
    pieces,
    wait_until_idle,
    with_record_version,
    with_sni,
)

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate

# A ClientHello whose SNI bytes are not ASCII, passed through to the TLS echo server, makes its
# SNI callback raise inside OpenSSL: Python reports that as an unraisable exception.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "citygate.yaml"
MNGUYEN = "mnguyen:mnguyen-pass"  # Parks; no grant
EXAMPLES = int(os.environ.get("CITYGATE_FUZZ_EXAMPLES", 2000))
#: Every run draws a new seed and prints it with a failure; CITYGATE_FUZZ_SEED=N replays run N.
SEED = int(os.environ.get("CITYGATE_FUZZ_SEED") or random.SystemRandom().randrange(2**32))

#: Pause between pieces: enough for the proxy to read most pieces on their own; the outcome must
#: not depend on it either way.
PAUSE = 0.002
#: How long a client waits for an answer that should come at once (the proxy answering, the
#: origin's reply, EOF). Only a proxy that holds a connection silently makes a run wait this long.
ANSWER_TIMEOUT = 2.0


# --------------------------------------------------------------------------------------------
# Host names as written on the wire
# --------------------------------------------------------------------------------------------

ORDINARY_HOSTS = ["www.example.org", "example.org", "news.example.net", "portal.city.example", "127.0.0.1"]
SOCIAL_HOSTS = [
    "www.facebook.com",
    "facebook.com",
    "m.facebook.com",
    "static.xx.fbcdn.net",
    "www.instagram.com",
    "threads.net",
    "g.whatsapp.net",
    "web.whatsapp.com",
    "flic.kr",
    "bsky.app",
    "pinterest.de",
    "x.com",
    "t.me",
    "157.240.22.35",  # Meta's network: counts as facebook
    "2a03:2880:f12f:83:face:b00c:0:25de",  # the same, IPv6
]

#: Spellings that name the same host (``agrees``: the same as the plain spelling after the
#: normalization every HTTP stack does: case, and the default port added separately).
SAME_HOST_STYLES = ("plain", "upper", "mixed", "trailing-dot", "fullwidth-dots")
#: Spellings that are not a valid Host value (RFC 9112 section 3.2 / RFC 3986 authority).
MALFORMED_STYLES = ("userinfo", "nul", "address-port-at", "percent-dot", "space", "non-numeric-port")
#: Spellings that are odd but not plainly invalid: only the social property applies.
ODD_STYLES = ("comma-list",)
#: Other spellings of an IPv4 address that resolvers accept.
IPV4_STYLES = ("ip-integer", "ip-hex")


#: How each style spells a host: (the host, bracketed if IPv6; the base it was made from) -> text.
SPELLINGS: dict[str, Callable[[str, str], str]] = {
    "plain": lambda host, base: host,
    "upper": lambda host, base: host.upper(),
    "mixed": lambda host, base: "".join(c.upper() if i % 2 else c for i, c in enumerate(host)),
    "trailing-dot": lambda host, base: host + ".",
    "fullwidth-dots": lambda host, base: host.replace(".", "\u3002"),
    "userinfo": lambda host, base: "user@" + host,
    "nul": lambda host, base: host + "\x00",
    "address-port-at": lambda host, base: "127.0.0.1:18081@" + host,
    "percent-dot": lambda host, base: host.replace(".", "%2e", 1),
    "space": lambda host, base: "www.example.org " + host,
    "non-numeric-port": lambda host, base: host + ":http",
    "comma-list": lambda host, base: "www.example.org, " + host,
    "ip-integer": lambda host, base: str(int(ipaddress.IPv4Address(base))),
    "ip-hex": lambda host, base: ".".join(f"0x{int(part):x}" for part in base.split(".")),
}
assert set(SPELLINGS) == {*SAME_HOST_STYLES, *MALFORMED_STYLES, *ODD_STYLES, *IPV4_STYLES}


@dataclass(frozen=True)
class Name:
    base: str  # the host it was made from
    style: str
    port: int | None = None  # an explicit ":port"

    @property
    def social(self) -> bool:
        return self.base in SOCIAL_HOSTS

    @property
    def is_ip(self) -> bool:
        return self.base[0].isdigit()

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.base

    @property
    def valid(self) -> bool:
        """Whether this style applies to this base."""
        if self.style in IPV4_STYLES:
            return self.is_ip and not self.is_ipv6
        return not (self.is_ip and self.style == "fullwidth-dots") and not (
            self.is_ipv6 and self.style == "trailing-dot"
        )

    @property
    def malformed(self) -> bool:
        return self.style in MALFORMED_STYLES

    @property
    def text(self) -> str:
        host = f"[{self.base}]" if self.is_ipv6 else self.base
        host = SPELLINGS[self.style](host, self.base)
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def simple(self) -> bool:
        """ASCII, and equal to the plain spelling up to case (and an explicit port)."""
        return self.style in ("plain", "upper", "mixed")

    def key(self, default_port: int) -> tuple[str, int]:
        """For ``simple`` names: what an HTTP stack compares (lower-case host, port)."""
        return self.base.lower(), self.port or default_port

    def agrees_with_target(self, target: Name) -> bool:
        """As Host, whether this names `target` (both ``simple``): the same host, and the same
        port unless this Host leaves the port out (citygate accepts that: proxy/request_head.py)."""
        if self.port is None:
            return self.base.lower() == target.base.lower()
        return self.key(80) == target.key(80)

    def __str__(self) -> str:
        return repr(self.text)


@st.composite
def names(
    draw: st.DrawFn, *, styles: tuple[str, ...], social: bool | None = None, ports: bool = True
) -> Name:
    """A host spelled in one of ``styles`` (those that apply to it), social or not (drawn)."""
    if social is None:
        social = draw(st.booleans())
    base = draw(st.sampled_from(SOCIAL_HOSTS if social else ORDINARY_HOSTS))
    style = draw(st.sampled_from([s for s in styles if Name(base, s).valid]))
    port = draw(st.one_of(st.none(), st.sampled_from([80, 443, 8080]))) if ports else None
    return Name(base, style, port)


# --------------------------------------------------------------------------------------------
# Request heads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    method: str
    path: str
    authority: Name | None  # absolute-form target http://authority/path; None: origin-form
    hosts: tuple[Name, ...]
    folded: Name | None  # an obsolete folded line continuing X-A with "Host: ..."
    credentials: bool = False  # Proxy-Authorization for mnguyen
    connect: bool = False  # a CONNECT with authority-form target (inside a tunnel: nested)

    def wire(self) -> bytes:
        if self.connect:
            assert self.authority is not None
            target = self.authority.text if self.authority.port else f"{self.authority.text}:443"
            method = "CONNECT"
        else:
            target = f"http://{self.authority.text}{self.path}" if self.authority else self.path
            method = self.method
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"Host: {h.text}" for h in self.hosts]
        if self.folded is not None:
            lines += ["X-A: b", f" Host: {self.folded.text}"]
        if self.credentials:
            lines.append(f"Proxy-Authorization: {basic_auth(MNGUYEN)}")
        if self.method in ("POST", "PUT"):
            lines.append("Content-Length: 0")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    @property
    def names(self) -> list[Name]:
        out = list(self.hosts)
        if self.authority is not None:
            out.append(self.authority)
        if self.folded is not None:
            out.append(self.folded)
        return out

    @property
    def malformed(self) -> bool:
        """Malformed by RFC 9112 section 3.2, as citygate promises to refuse it (400)."""
        if len(self.hosts) > 1 or self.folded is not None or any(h.malformed for h in self.hosts):
            return True
        if self.authority is not None and len(self.hosts) == 1 and not self.connect:
            host, authority = self.hosts[0], self.authority
            if host.simple and authority.simple and not host.agrees_with_target(authority):
                return True
        return False

    @property
    def well_formed(self) -> bool:
        """Exactly one plain Host, agreeing with an absolute-form authority."""
        if self.connect or len(self.hosts) != 1 or self.folded is not None or not self.hosts[0].simple:
            return False
        if self.authority is None:
            return True
        return self.authority.simple and self.hosts[0].agrees_with_target(self.authority)


@st.composite
def heads(
    draw: st.DrawFn, *, absolute: bool | None = None, credentials: bool = False, connect: bool = False
) -> Head:
    """A request head; ``connect``: it may be a CONNECT (only sent inside a tunnel)."""
    method = draw(st.sampled_from(["GET", "GET", "HEAD", "POST", "OPTIONS", "DELETE"]))
    path = draw(st.sampled_from(["/", "/messages", "/CityOfExampleParks", "/a/b?c=d"]))
    is_connect = connect and draw(st.integers(0, 5)) == 0
    use_absolute = is_connect or (draw(st.booleans()) if absolute is None else absolute)
    authority_styles = ("plain", "plain", "upper", "mixed", *IPV4_STYLES)
    authority = draw(names(styles=authority_styles)) if use_absolute else None
    simple_host = names(styles=("plain", "plain", "upper", "mixed"))
    any_host = names(styles=SAME_HOST_STYLES + MALFORMED_STYLES + ODD_STYLES + IPV4_STYLES)
    # Mostly one Host, often the authority's own (so that well-formed heads are common); two
    # Host fields, none, or an obsolete folded line carrying one, less often.
    first = draw(
        st.sampled_from(["same", "same", "simple", "any"]).flatmap(
            lambda pick: (
                st.just(authority)
                if pick == "same" and authority is not None
                else simple_host
                if pick in ("same", "simple")
                else any_host
            )
        )
    )
    count = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    hosts = (first,) if count == 1 else () if count == 0 else (first, draw(any_host))
    folded = draw(any_host) if draw(st.integers(0, 6)) == 0 else None
    return Head(method, path, authority, hosts, folded, credentials, is_connect)


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    sni: Name | None
    record_version: bytes  # b"\x03\x01" is what OpenSSL writes
    raw_sni: bool  # the SNI patched in byte for byte (the handshake cannot be finished)

    def wire(self) -> tuple[bytes, MemoryTlsClient | None]:
        """The ClientHello, and the client that can finish its handshake (None if none can)."""
        if self.raw_sni:
            sni = self.sni.text.encode("utf-8", "surrogateescape") if self.sni else None
            hello = with_sni(client_hello("placeholder.invalid"), sni)
            return with_record_version(hello, self.record_version), None
        tls = MemoryTlsClient(self.sni.text if self.sni else None)
        hello = with_record_version(tls.hello(), self.record_version)
        completable = self.record_version[:1] == b"\x03" and self.record_version[1] <= 3
        return hello, tls if completable else None

    @property
    def tls_like(self) -> bool:
        return self.record_version[1] <= 3


@dataclass(frozen=True)
class Case:
    kind: str  # "proxy-request" | "tls" | "raw" | "http-in-tunnel"
    user: str | None
    head: Head | None = None  # proxy-request, http-in-tunnel
    authority: Name | None = None  # CONNECT host
    port: int = 443
    hello: Hello | None = None
    raw: bytes = b""
    inner: Head | None = None  # request sent inside an intercepted TLS tunnel
    splits: tuple[tuple[tuple[int, ...], bool], ...] = field(default=())  # (cuts, pipelined)

    def payload(self) -> bytes:
        """The bytes that get split (a fresh ClientHello for TLS; same length every time)."""
        if self.kind == "proxy-request":
            return self.head.wire()  # type: ignore[union-attr]
        if self.kind == "http-in-tunnel":
            return self.head.wire()  # type: ignore[union-attr]
        if self.kind == "raw":
            return self.raw
        return self.hello.wire()[0]  # type: ignore[union-attr]

    @property
    def connect_line(self) -> bytes:
        assert self.authority is not None
        return connect_request(f"{self.authority.text}:{self.port}", proxy_user=self.user)

    def social_names(self) -> list[Name]:
        """Every name this case writes in cleartext before any decision, social ones only."""
        named: list[Name] = []
        if self.authority is not None:
            named.append(self.authority)
        if self.head is not None:
            named += self.head.names
        sni = self.hello.sni if self.hello is not None else None
        if sni is not None:
            named.append(sni)
        return [n for n in named if n.social]

    @property
    def ordinary_and_well_formed(self) -> bool:
        """Must reach the origin: every name ordinary and plainly spelled, nothing odd."""
        if self.social_names():
            return False
        if self.authority is not None and not self.authority.simple:
            return False
        match self.kind:
            case "proxy-request":
                return self.head.authority is not None and self.head.well_formed  # type: ignore[union-attr]
            case "http-in-tunnel":
                return self.head.authority is None and self.head.well_formed  # type: ignore[union-attr]
            case "raw":
                return True
            case _:
                hello = self.hello
                assert hello is not None
                return not hello.raw_sni and (hello.sni is None or hello.sni.simple)


PIPELINABLE = ("tls", "raw")


@st.composite
def segmentations(draw: st.DrawFn, *, pipelinable: bool) -> tuple[tuple[tuple[int, ...], bool], ...]:
    """Cut offsets (up to 8; small ones common: the record type alone, the record header)."""
    cut = st.one_of(st.integers(1, 6), st.integers(1, 600))
    one = st.tuples(
        st.lists(cut, min_size=1, max_size=8).map(lambda c: tuple(sorted(set(c)))), st.just(False)
    )
    if pipelinable:
        one = st.one_of(
            one, st.tuples(st.lists(cut, max_size=4).map(lambda c: tuple(sorted(set(c)))), st.just(True))
        )
    return tuple(draw(st.lists(one, min_size=1, max_size=2)))


users = st.sampled_from([None, None, MNGUYEN])
connect_ports = st.sampled_from([443, 443, 80, 5222, 8443])


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(
        st.sampled_from(
            ["proxy-request", "proxy-request", "tls", "tls", "tls", "raw", "http-in-tunnel", "http-in-tunnel"]
        )
    )
    user = draw(users)
    if kind == "proxy-request":
        head = draw(heads(absolute=draw(st.integers(0, 4)) > 0, credentials=user is not None))
        return Case(kind, user, head=head, splits=draw(segmentations(pipelinable=False)))
    # Mostly ordinary: a social CONNECT without credentials only gets its 407. With credentials
    # of an employee without a grant it opens (for a block page): what comes next is what counts.
    social_authority = draw(st.integers(0, 4)) < 2
    if social_authority and draw(st.booleans()):
        user = MNGUYEN
    authority = draw(
        names(
            styles=("plain", "plain", "upper", "mixed", "trailing-dot", "fullwidth-dots", *IPV4_STYLES),
            social=social_authority,
            ports=False,
        )
    )
    port = draw(connect_ports)
    splits = draw(segmentations(pipelinable=kind in PIPELINABLE))
    if kind == "http-in-tunnel":
        head = draw(heads(absolute=draw(st.sampled_from([False, False, False, True])), connect=True))
        return Case(kind, user, head=head, authority=authority, port=port, splits=splits)
    if kind == "raw":
        prefix = draw(
            st.sampled_from(
                [b"WA\x05\x02", b"\xef", b"\xee\xee\xee\xee", b"\x00\x01\x00\x00", b"\x05\x01\x00"]
            )
        )
        raw = prefix + draw(st.binary(min_size=8, max_size=120))
        return Case(kind, user, raw=raw, authority=authority, port=port, splits=splits)
    raw_sni = draw(st.booleans())
    styles = (
        SAME_HOST_STYLES + MALFORMED_STYLES + ODD_STYLES + IPV4_STYLES
        if raw_sni
        else ("plain", "upper", "mixed", "trailing-dot")
    )
    sni = draw(st.one_of(st.none(), names(styles=styles, ports=False), names(styles=styles, ports=False)))
    if sni is not None and sni.is_ip and not raw_sni:
        sni = None  # OpenSSL sends no SNI for an IP address
    version = draw(
        st.sampled_from([b"\x03\x01", b"\x03\x01", b"\x03\x03", b"\x03\x00", b"\x03\x05", b"\x03\x09"])
    )
    inner = draw(heads(absolute=False))
    return Case(
        kind,
        user,
        authority=authority,
        port=port,
        hello=Hello(sni, version, raw_sni),
        inner=inner,
        splits=splits,
    )


# --------------------------------------------------------------------------------------------
# The proxy, once for the module
# --------------------------------------------------------------------------------------------


@dataclass
class Fuzz:
    runner: ProxyRunner
    redirect: RedirectEverything
    origin: RecordingOrigin
    tls: TlsUpstream

    def reset(self) -> None:
        self.origin.reset()
        self.tls.reset()
        self.redirect.reset()

    def settle(self) -> None:
        """Wait until the proxy holds no client connection (none can open upstream any more)."""
        wait_until_idle(self.runner)

    def reached(self) -> list[str]:
        seen = [f"proxy opened {c.original} -> {c.target}" for c in self.redirect.opened]
        seen += [f"origin got {c.data[:80]!r}" for c in self.origin.connections]
        if self.tls.connection_count:
            seen.append(f"TLS upstream: {self.tls.connection_count} connection(s), SNI {self.tls.snis}")
        return seen


@pytest.fixture(scope="module")
def fuzz(
    pki: TestPKI, _mitm_confdir: Path, _tls_upstream_server: TlsUpstream, tmp_path_factory
) -> Iterator[Fuzz]:
    with RecordingOrigin() as origin:
        redirect = RedirectEverything(
            origin,
            origin.address,
            _tls_upstream_server.address,
            port_map={80: origin.address, 443: origin.address},
        )
        log_dir = tmp_path_factory.mktemp("fuzz-log")
        runner = ProxyRunner(
            [CityGate(), AuditLog(), redirect],
            {"citygate_config": str(DEMO_CONFIG), "citygate_audit_directory": str(log_dir)},
            upstream_ca=pki.ca_pem,
            confdir=_mitm_confdir,
            # Thousands of connections: keep the captured log to warnings and up.
            log_level=logging.WARNING,
        )
        runner.start()
        try:
            yield Fuzz(runner, redirect, origin, _tls_upstream_server)
        finally:
            runner.stop()


# --------------------------------------------------------------------------------------------
# Running one case, one segmentation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    connect: int | None  # status of the CONNECT (None: no CONNECT)
    answer: str  # what came back first: an HTTP status line, "tls", "origin", "closed", ...
    issuer: str | None = None  # issuer CN of the certificate, when a TLS handshake finished
    inner: str | None = None  # the answer to the request inside an intercepted tunnel
    reached: bool = False
    detail: tuple[str, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        return (
            f"CONNECT={self.connect} answer={self.answer} issuer={self.issuer} inner={self.inner} "
            f"reached={self.reached} {list(self.detail)}"
        )


def _describe(answer: Answer) -> str:
    if answer.kind == "http":
        return answer.status_line.decode("latin-1")
    return answer.kind


def _shift(cuts: tuple[int, ...], by: int) -> list[int]:
    return [c - by for c in cuts if c > by]


def run(fuzz: Fuzz, case: Case, cuts: tuple[int, ...], pipelined: bool) -> Outcome:
    fuzz.reset()
    connect: int | None = None
    issuer = inner = None
    tls: MemoryTlsClient | None = None
    with TunnelClient(fuzz.runner.address, timeout=ANSWER_TIMEOUT) as client:
        if case.kind == "tls":
            payload, tls = case.hello.wire()  # type: ignore[union-attr]
        else:
            payload = case.payload()
        if case.kind == "proxy-request":
            client.send_segmented(payload, cuts, PAUSE)
            answer = _describe(client.read_answer())
        else:
            parts = pieces(payload, cuts)
            if pipelined:
                client.sock.sendall(case.connect_line + parts[0])
                head = client.read_head(connect=True)
                connect = head.status
                if connect == 200:
                    client.send_segmented(b"".join(parts[1:]), _shift(cuts, len(parts[0])), PAUSE)
            else:
                head = client.connect(case.connect_line)
                connect = head.status
                if connect == 200:
                    client.send_segmented(payload, cuts, PAUSE)
            if connect != 200:
                answer = "no tunnel"
            elif tls is not None:
                answer, issuer, inner = _finish_tls(client, tls, case)
            else:
                answer = _describe(client.read_answer())
    fuzz.settle()
    reached = fuzz.reached()
    return Outcome(connect, answer, issuer, inner, bool(reached), tuple(reached))


def _finish_tls(client: TunnelClient, tls: MemoryTlsClient, case: Case) -> tuple[str, str | None, str | None]:
    try:
        tls.handshake(client, timeout=ANSWER_TIMEOUT)
    except (ConnectionError, ssl.SSLError, OSError):
        received = bytes(client.received)
        return _describe(Answer(_after_connect(received), client.eof, not client.eof)), None, None
    issuer = tls.peer_issuer_cn()
    if issuer != MITMPROXY_CA_CN:
        return "tls", issuer, None  # passed through: the site's own certificate
    try:
        response = tls.request(client, case.inner.wire(), timeout=ANSWER_TIMEOUT)  # type: ignore[union-attr]
    except (ConnectionError, ssl.SSLError, OSError):
        response = b""
    return "tls", issuer, _describe(Answer(response, True, False))


def _after_connect(received: bytes) -> bytes:
    """What came after the proxy's answer to CONNECT."""
    _, _, rest = received.partition(b"\r\n\r\n")
    return rest


# --------------------------------------------------------------------------------------------
# The property
# --------------------------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # Under .pytest_cache (ignored by git): failing examples are replayed first on the next run.
    database=DirectoryBasedExampleDatabase(ROOT / ".pytest_cache" / "hypothesis"),
)
@seed(SEED)
@given(case=cases())
def test_no_social_host_is_reached_without_a_grant_however_the_bytes_are_split(fuzz: Fuzz, case: Case):
    note(f"this run's seed: CITYGATE_FUZZ_SEED={SEED} replays it")
    note(f"case: {case}")
    note(f"bytes: {case.payload()!r}")
    whole = run(fuzz, case, (), False)
    outcomes = {"whole": whole}
    for cuts, pipelined in case.splits:
        outcomes[f"cuts={list(cuts)}{' pipelined' if pipelined else ''}"] = run(fuzz, case, cuts, pipelined)
    for name, outcome in outcomes.items():
        note(f"{name}: {outcome}")

    social = case.social_names()
    # `pytest --hypothesis-show-statistics` shows how the examples spread over these.
    label = (
        "social" if social else "ordinary, well-formed" if case.ordinary_and_well_formed else "ordinary, odd"
    )
    event(f"{case.kind}: {label}")
    event(f"{case.kind}: {'reached' if whole.reached else 'not reached'}, answer {whole.answer}")
    for name, outcome in outcomes.items():
        if social:
            assert not outcome.reached, (
                f"{name}: social {[str(n) for n in social]} reached upstream: {outcome}"
            )
        if case.head is not None and case.head.malformed:
            assert not outcome.reached, f"{name}: a malformed Host reached upstream: {outcome}"
        if case.kind == "tls" and outcome.issuer == MITMPROXY_CA_CN:
            assert not outcome.reached, f"{name}: a request inside an intercepted tunnel reached upstream"
    if case.ordinary_and_well_formed:
        assert whole.reached, f"ordinary traffic did not reach the origin: {whole}"
        if case.kind in ("proxy-request", "http-in-tunnel"):
            assert whole.answer.startswith("HTTP/1.1 200"), whole
    differing = {name: str(o) for name, o in outcomes.items() if o != whole}
    assert not differing, f"the outcome depends on the split; whole: {whole}; others: {differing}"
