"""End-to-end test harness: a real in-process mitmproxy, local upstream servers, real clients.

Everything binds 127.0.0.1 only; nothing resolves names and nothing reaches the internet:
``RedirectToUpstream`` sends every upstream connection the proxy makes to ``PlainUpstream``
or ``TlsUpstream``, whose certificate (from ``TestPKI``) names the real sites.

Typical use (see conftest.py for the fixtures)::

    redirect = RedirectToUpstream(plain_upstream.address, tls_upstream.address)
    runner = proxy_runner_factory([citygate_addon, redirect], {"some_option": 1})
    result = curl(runner, "http://www.example.org/")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from mitmproxy import http, options
from mitmproxy.proxy import server_hooks
from mitmproxy.tools.dump import DumpMaster

Address = tuple[str, int]
T = TypeVar("T")

LOCALHOST = "127.0.0.1"

#: Names every TestPKI server certificate covers (explicit names, no wildcards).
DEFAULT_SERVER_NAMES: tuple[str, ...] = (
    "www.example.org",
    "example.org",
    "www.facebook.com",
    "facebook.com",
    "static.xx.fbcdn.net",
    "www.instagram.com",
    "www.linkedin.com",
    "www.youtube.com",
    "www.pinterest.com",
    "localhost",
)

UPSTREAM_CA_CN = "citygate test upstream CA"
#: Subject CN of the CA mitmproxy generates in its confdir.
MITMPROXY_CA_CN = "mitmproxy"


# --------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerCert:
    names: tuple[str, ...]
    cert_pem: Path
    key_pem: Path


class TestPKI:
    """A throw-away CA plus leaf certificates for the local upstream servers."""

    __test__ = False  # the name starts with "Test": keep pytest from collecting it

    def __init__(self, directory: Path, extra_names: Iterable[str] = ()) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # EC keys: generating RSA keys would cost most of the harness's start-up time.
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, UPSTREAM_CA_CN)])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key())
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ca_ski, critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_pem = self.directory / "ca.pem"
        self.ca_pem.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self.names: tuple[str, ...] = tuple(dict.fromkeys([*DEFAULT_SERVER_NAMES, *extra_names]))
        #: One certificate for all names: the upstream servers are SNI-agnostic.
        self.server_cert = self.issue(self.names, stem="server")

    def issue(self, names: Sequence[str], *, stem: str | None = None) -> ServerCert:
        """Issue a leaf certificate for ``names`` (plus IP 127.0.0.1) signed by the test CA."""
        if not names:
            raise ValueError("a certificate needs at least one name")
        stem = stem or names[0].replace("*", "_")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans.append(x509.IPAddress(ipaddress.ip_address(LOCALHOST)))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            # OpenSSL's strict verification (and Python >= 3.13 clients) require AKI/SKI.
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        cert_pem = self.directory / f"{stem}-cert.pem"
        key_pem = self.directory / f"{stem}-key.pem"
        cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return ServerCert(tuple(names), cert_pem, key_pem)


# --------------------------------------------------------------------------------------------
# Upstream servers
# --------------------------------------------------------------------------------------------

#: Largest body /bytes/N serves; guards against a typo turning into gigabytes.
MAX_BYTES_BODY = 256 * 1024 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    """One request as an upstream server saw it."""

    server: str  # "plain" or "tls"
    connection_id: int  # per-server counter of accepted TCP connections, from 1
    method: str
    target: str  # raw request target from the request line
    http_version: str
    raw_headers: tuple[tuple[str, str], ...]
    body: bytes
    sni: str | None = None

    def header(self, name: str) -> str | None:
        """Value of header ``name`` (case-insensitive; repeated headers joined by ", ")."""
        values = [v for k, v in self.raw_headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def has_header(self, name: str) -> bool:
        return any(k.lower() == name.lower() for k, _ in self.raw_headers)


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    # Idle keep-alive connections from a stopped proxy must not pin handler threads forever.
    timeout = 30
    server: _RecordingHTTPServer

    def setup(self) -> None:
        # Runs in the per-connection thread, so a slow TLS handshake never blocks accept().
        self.connection_id = self.server.next_connection_id()
        self.sni: str | None = None
        if self.server.ssl_context is not None:
            self.request.settimeout(self.timeout)
            tls = self.server.ssl_context.wrap_socket(self.request, server_side=True)
            self.request = tls
            self.sni = self.server.pop_sni(tls)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            # wrap_socket detached the accepted socket, so the server's own cleanup closes
            # nothing: close the TLS socket here.
            if isinstance(self.request, ssl.SSLSocket):
                self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the records are the log; stderr noise would only hide test output

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        record = RecordedRequest(
            server=self.server.kind,
            connection_id=self.connection_id,
            method=self.command,
            target=self.path,
            http_version=self.request_version,
            raw_headers=tuple(self.headers.items()),
            body=body,
            sni=self.sni,
        )
        self.server.record(record)

        path = self.path
        if "://" in path:  # absolute-form target: look at its path only
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        if path.startswith("/bytes/"):
            self._send_bytes(path)
            return
        payload = {
            "server": record.server,
            "connection_id": record.connection_id,
            "method": record.method,
            "path": record.target,
            "http_version": record.http_version,
            "headers": _headers_dict(record.raw_headers),
            "raw_headers": [list(h) for h in record.raw_headers],
            "body_length": len(body),
            "sni": record.sni,
        }
        self._send(HTTPStatus.OK, json.dumps(payload).encode(), "application/json")

    def _send_bytes(self, path: str) -> None:
        try:
            n = int(path.removeprefix("/bytes/").split("?")[0])
        except ValueError:
            self._send(HTTPStatus.BAD_REQUEST, b"bad size\n", "text/plain")
            return
        if not 0 <= n <= MAX_BYTES_BODY:
            self._send(HTTPStatus.BAD_REQUEST, b"size out of range\n", "text/plain")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        chunk = b"x" * 65536
        remaining = n
        while remaining:
            piece = chunk[: min(remaining, len(chunk))]
            self.wfile.write(piece)
            remaining -= len(piece)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


def _headers_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case header names; repeated headers joined by ", "."""
    out: dict[str, str] = {}
    for k, v in pairs:
        key = k.lower()
        out[key] = f"{out[key]}, {v}" if key in out else v
    return out


class _RecordingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Never rebind a port another test server just released.
    allow_reuse_address = False

    def __init__(self, kind: str, ssl_context: ssl.SSLContext | None) -> None:
        self.kind = kind
        self.ssl_context = ssl_context
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[RecordedRequest] = []
        self.snis: list[str | None] = []
        self.handler_errors: list[str] = []
        # SNI seen by the callback, keyed by SSL object; the handler pops it after the handshake.
        self._pending_sni: dict[int, str | None] = {}
        super().__init__((LOCALHOST, 0), _UpstreamHandler)

    def next_connection_id(self) -> int:
        with self.lock:
            self.connections += 1
            return self.connections

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def sni_callback(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext
    ) -> None:
        with self.lock:
            self.snis.append(name)
            self._pending_sni[id(sslobj)] = name

    def pop_sni(self, tls: ssl.SSLSocket) -> str | None:
        with self.lock:
            return self._pending_sni.pop(id(tls), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes and resets are expected in tests (e.g. a client aborting):
        # record them for assertions instead of printing tracebacks.
        exc = sys.exc_info()[1]
        with self.lock:
            self.handler_errors.append(repr(exc))

    def reset(self) -> None:
        with self.lock:
            self.connections = 0
            self.requests.clear()
            self.snis.clear()
            self.handler_errors.clear()
            self._pending_sni.clear()


class Upstream:
    """Base for the local upstream servers; each serves in its own daemon thread."""

    kind = "plain"

    def __init__(self) -> None:
        self._server = _RecordingHTTPServer(self.kind, self._ssl_context())
        self._thread: threading.Thread | None = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        return None

    @property
    def address(self) -> Address:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.kind}-upstream",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._server.shutdown()  # returns once serve_forever has left its loop
        self._server.server_close()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"{self.kind} upstream thread did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all records (a test's view starts from zero)."""
        self._server.reset()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._server.lock:
            return list(self._server.requests)

    @property
    def request_count(self) -> int:
        with self._server.lock:
            return len(self._server.requests)

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since the last reset."""
        with self._server.lock:
            return self._server.connections

    @property
    def handler_errors(self) -> list[str]:
        with self._server.lock:
            return list(self._server.handler_errors)

    @property
    def contacted(self) -> bool:
        return self.connection_count > 0

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests were recorded (for fire-and-forget clients)."""
        deadline = time.monotonic() + timeout
        while self.request_count < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} upstream saw {self.request_count} < {n} requests")
            time.sleep(0.01)
        return self.requests


class PlainUpstream(Upstream):
    """HTTP/1.1 echo server on 127.0.0.1 (see module docstring)."""

    kind = "plain"


class TlsUpstream(Upstream):
    """The echo server over TLS, certificate from ``TestPKI`` naming all test hosts."""

    kind = "tls"

    def __init__(self, pki: TestPKI) -> None:
        self._pki = pki
        super().__init__()

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self._pki.server_cert.cert_pem, self._pki.server_cert.key_pem)
        ctx.set_alpn_protocols(["http/1.1"])
        # Bound late: the server object the callback records into does not exist yet.
        ctx.sni_callback = lambda sslobj, name, c: self._server.sni_callback(sslobj, name, c)
        return ctx

    @property
    def snis(self) -> list[str | None]:
        """SNI of every TLS handshake (None when the client sent none), in order."""
        with self._server.lock:
            return list(self._server.snis)


# --------------------------------------------------------------------------------------------
# Test-only mitmproxy addon: route all upstream traffic to the local servers
# --------------------------------------------------------------------------------------------

REDIRECT_METADATA_KEY = "redirect_to_upstream"


class RedirectToUpstream:
    """Send every upstream connection the proxy makes to the local upstream servers.

    Add it LAST, after the addon under test, so that addon decides on the original request.

    - Plain HTTP: ``flow.request.host/port`` are rewritten (the Host header is kept), which keeps
      mitmproxy's per-address connection reuse working. The rewrite happens in ``request``
      (``requestheaders`` for streamed requests, whose connection opens right after it), and the
      original host/port are put back in ``responseheaders``/``error``: hooks of earlier addons
      see 127.0.0.1 only in ``responseheaders`` (and ``request`` for streamed requests). Rewritten
      flows carry ``flow.metadata["redirect_to_upstream"]`` = the original (host, port).
    - Tunnels (intercepted TLS, passthrough, CONNECT to port 80): ``server_connect`` changes
      ``data.server.address`` (``server.sni`` is left alone, so TLS still names the real host),
      and ``server_connected`` puts the original address back. Without that, requests inside an
      intercepted tunnel would not match the connection's address, each would open a new
      upstream connection, and mitmproxy's limit of 5 per address and client connection would
      hang the sixth.
    - Flows already answered by the proxy (``flow.response`` set) are never touched; ports with no
      local server get a connection error instead of reaching the network.
    """

    name = "redirect_to_upstream"

    def __init__(
        self,
        plain: Address,
        tls: Address,
        *,
        port_map: Mapping[int, Address] | None = None,
    ) -> None:
        self.plain = plain
        self.tls = tls
        self.port_map: dict[int, Address] = {80: plain, 443: tls, **(port_map or {})}
        self._local = {plain, tls, *self.port_map.values()}
        self._lock = threading.Lock()
        self._redirects: list[tuple[str, Address, Address]] = []
        # Server connection id -> original address, between server_connect and server_connected.
        self._pending: dict[str, Address] = {}

    @property
    def redirects(self) -> list[tuple[str, Address, Address]]:
        """(kind "http"|"tunnel", original address, local address) of every redirect made."""
        with self._lock:
            return list(self._redirects)

    def _note(self, kind: str, original: Address, target: Address) -> None:
        with self._lock:
            self._redirects.append((kind, original, target))

    def _rewrite_plain(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.request.scheme != "http":
            return
        if REDIRECT_METADATA_KEY in flow.metadata:
            return
        original = (flow.request.host, flow.request.port)
        if original in self._local:
            return
        # Not the .host/.port setters: they would rewrite the Host header too.
        flow.request.data.host, flow.request.data.port = self.plain
        flow.metadata[REDIRECT_METADATA_KEY] = original
        self._note("http", original, self.plain)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.request.stream:
            self._rewrite_plain(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        self._rewrite_plain(flow)

    def _restore_plain(self, flow: http.HTTPFlow) -> None:
        original = flow.metadata.get(REDIRECT_METADATA_KEY)
        if original is not None:
            flow.request.data.host, flow.request.data.port = original

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._restore_plain(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._restore_plain(flow)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None or data.server.error:
            return
        host, port = address[0], address[1]
        if (host, port) in self._local:
            return  # a plain-HTTP flow this addon already rewrote
        target = self.tls if data.server.tls else self.port_map.get(port)
        if target is None:
            data.server.error = f"RedirectToUpstream: no local upstream for port {port}"
            return
        with self._lock:
            self._pending[data.server.id] = (host, port)
        data.server.address = target
        self._note("tunnel", (host, port), target)

    def fast_path_target(self, address: Address) -> Address | None:
        """Where the fast path (addons/fast_path.py) opens a tunnel to `address`, as
        `server_connect` sends mitmproxy's: it relays only ClientHellos, which go to ``tls``."""
        self._note("tunnel", address, self.tls)
        return self.tls

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        with self._lock:
            original = self._pending.pop(data.server.id, None)
        if original is not None:
            # Server.__setattr__ forbids changing the address of an open connection (a guard
            # for addons); the socket is already connected, only the label changes back.
            object.__setattr__(data.server, "address", original)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        with self._lock:
            original = self._pending.pop(data.server.id, None)
        if original is not None:
            object.__setattr__(data.server, "address", original)


# --------------------------------------------------------------------------------------------
# ProxyRunner
# --------------------------------------------------------------------------------------------


class ProxyStartupError(RuntimeError):
    """The proxy logged errors during start-up or exited before listening."""


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._records: list[logging.LogRecord] = []
        self._records_lock = threading.Lock()
        self.formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        with self._records_lock:
            self._records.append(record)

    def snapshot(self) -> list[logging.LogRecord]:
        with self._records_lock:
            return list(self._records)

    def clear(self) -> None:
        with self._records_lock:
            self._records.clear()


class _StartupProbe:
    """Added after all other addons: its ``running`` hook runs once everything else started."""

    name = "harness_startup_probe"

    def __init__(self, runner: ProxyRunner) -> None:
        self._runner = runner

    def running(self) -> None:
        try:
            self._runner._on_running()
        except Exception as e:  # mitmproxy would only log it; the test must hear about it
            self._runner._fail_startup(e)


_active_runner: ProxyRunner | None = None
_active_lock = threading.Lock()

#: Loggers whose INFO records are captured (others reach the collector from WARNING up).
DEFAULT_CAPTURED_LOGGERS = ("mitmproxy", "citygate")


class ProxyRunner:
    """A mitmproxy ``DumpMaster`` with the given addons, in a background thread with its own loop.

    Only one may run at a time: mitmproxy keeps the master and options in process-global
    ``mitmproxy.ctx``.
    """

    def __init__(
        self,
        addons: Sequence[object] = (),
        options: Mapping[str, Any] | None = None,
        *,
        upstream_ca: Path | None = None,
        confdir: Path | None = None,
        startup_timeout: float = 15.0,
        log_level: int = logging.INFO,
        captured_loggers: Sequence[str] = DEFAULT_CAPTURED_LOGGERS,
    ) -> None:
        self._addons = list(addons)
        self._options = dict(options or {})
        self.upstream_ca = Path(upstream_ca) if upstream_ca else None
        self._own_confdir = confdir is None
        self.confdir = Path(confdir or tempfile.mkdtemp(prefix="citygate-mitm-"))
        self.startup_timeout = startup_timeout
        self._log_level = log_level
        self._captured_loggers = tuple(captured_loggers)
        self._saved_levels: dict[str, int] = {}
        self._logs = _LogCollector()

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.master: DumpMaster | None = None
        self._ready = threading.Event()
        self._startup_exc: BaseException | None = None
        self._crash_exc: BaseException | None = None
        self._port: int | None = None
        self._shutdown_task: asyncio.Future[None] | None = None
        self._started = False
        self._stopped = False

    # -- public properties ---------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("proxy is not running")
        return self._port

    @property
    def address(self) -> Address:
        return (LOCALHOST, self.port)

    @property
    def proxy_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def ca_pem(self) -> Path:
        """mitmproxy's CA certificate (issuer of every intercepted site's certificate)."""
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def client_ca_bundle(self) -> Path:
        """mitmproxy's CA and the upstream test CA: what a client in the city would trust."""
        return self.confdir / "harness-client-ca-bundle.pem"

    @property
    def log_records(self) -> list[logging.LogRecord]:
        return self._logs.snapshot()

    def log_lines(self, min_level: int = logging.DEBUG) -> list[str]:
        """Captured records as "LEVEL logger: message" lines."""
        return [self._logs.format(r) for r in self._logs.snapshot() if r.levelno >= min_level]

    @property
    def errors(self) -> list[str]:
        """Captured ERROR-and-above lines (e.g. "Addon error: ..." from a hook that raised)."""
        return self.log_lines(logging.ERROR)

    def clear_logs(self) -> None:
        self._logs.clear()

    def wait_for_log(self, substring: str, *, timeout: float = 5.0, min_level: int = logging.DEBUG) -> str:
        """Wait for a captured line containing ``substring`` (some hooks log after the client
        already has its response, e.g. client_disconnected)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines(min_level):
                if substring in line:
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line containing {substring!r} within {timeout}s")
            time.sleep(0.01)

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        global _active_runner
        if self._started:
            raise RuntimeError("a ProxyRunner can be started only once")
        with _active_lock:
            if _active_runner is not None:
                raise RuntimeError(
                    "another ProxyRunner is still running; mitmproxy's ctx (master, options) is "
                    "process-global, so stop it before starting a new one"
                )
            _active_runner = self
        self._started = True
        try:
            self._install_log_capture()
            self._thread = threading.Thread(target=self._thread_main, name="mitmproxy-runner", daemon=True)
            self._thread.start()
            if not self._ready.wait(self.startup_timeout):
                raise ProxyStartupError(
                    f"proxy did not start within {self.startup_timeout}s; log:\n"
                    + "\n".join(self.log_lines(logging.WARNING))
                )
            if self._startup_exc is not None:
                raise self._startup_exc
            if self._port is None:
                raise ProxyStartupError(
                    "proxy exited during start-up; log:\n" + "\n".join(self.log_lines(logging.WARNING))
                )
            self._write_client_bundle()
        except BaseException:
            self.stop(_raise=False)
            raise
        return self

    def stop(self, timeout: float = 10.0, *, _raise: bool = True) -> None:
        """Close client connections, shut the master down (``done`` hooks run), join the thread."""
        global _active_runner
        if not self._started or self._stopped:
            return
        self._stopped = True
        try:
            thread, loop = self._thread, self._loop
            if thread is not None and thread.is_alive() and loop is not None:
                with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                    # The coroutine is created on the loop, so none is left un-awaited when
                    # the loop has already finished (e.g. after a failed start).
                    loop.call_soon_threadsafe(self._begin_graceful_shutdown)
                thread.join(timeout)
                if thread.is_alive():
                    raise RuntimeError(f"proxy thread did not stop within {timeout}s")
        finally:
            self._uninstall_log_capture()
            with _active_lock:
                if _active_runner is self:
                    _active_runner = None
            if self._own_confdir:
                shutil.rmtree(self.confdir, ignore_errors=True)
        if _raise and self._crash_exc is not None:
            raise RuntimeError("proxy event loop crashed") from self._crash_exc

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 5.0) -> T:
        """Run ``fn(*args)`` on the proxy's event loop (e.g. to read addon state or update
        options while the proxy runs) and return its result."""
        if self._loop is None or self._port is None:
            raise RuntimeError("proxy is not running")

        async def _call() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(_call(), self._loop).result(timeout)

    def update_options(self, **updates: Any) -> None:
        """``master.options.update(...)`` on the proxy loop; OptionsError propagates."""
        master = self.master
        if master is None:
            raise RuntimeError("proxy is not running")
        self.call(lambda: master.options.update(**updates))

    # -- internals -----------------------------------------------------------------------

    def _effective_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            # Decide before contacting upstream (see research notes): a denied request must
            # make no upstream connection.
            "connection_strategy": "lazy",
        }
        if self.upstream_ca is not None:
            opts["ssl_verify_upstream_trusted_ca"] = str(self.upstream_ca)
        opts.update(self._options)
        return opts

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # SystemExit included: report instead of dying silently
            if self._port is None:
                self._startup_exc = self._startup_exc or e
            else:
                self._crash_exc = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        master: DumpMaster | None = None
        try:
            opts = options.Options(listen_host=LOCALHOST, listen_port=0, confdir=str(self.confdir))
            master = DumpMaster(opts, with_termlog=False, with_dumper=False)
            self.master = master
            # ErrorCheck calls sys.exit(1) when errors were logged during start-up. The probe
            # does the same check and reports the logged errors to the test instead.
            if errorcheck := master.addons.get("errorcheck"):
                errorcheck.finish()
                master.addons.remove(errorcheck)
            master.addons.add(*self._addons)
            master.addons.add(_StartupProbe(self))
            # Options registered by addons exist only now; OptionsError from an addon's
            # configure propagates from here (mitmproxy rolls the options back first).
            master.options.update(**self._effective_options())
        except BaseException as e:
            self._startup_exc = e
            if master is not None:
                # run() never started, so done() will not uninstall this root log handler.
                master._legacy_log_events.uninstall()
            return
        try:
            await master.run()
        finally:
            # After a failed start run() returns without _graceful_shutdown having run, and
            # mitmproxy never closes its listeners itself.
            await self._close_listeners()

    def _fail_startup(self, exc: BaseException) -> None:
        self._startup_exc = exc
        if self.master is not None:
            self.master.shutdown()
        self._ready.set()

    def _on_running(self) -> None:
        """Called on the proxy loop when every addon's ``running`` hook has run."""
        assert self.master is not None
        errors = [r for r in self._logs.snapshot() if r.levelno >= logging.ERROR]
        if errors:
            self._startup_exc = ProxyStartupError(
                "errors logged during proxy start-up:\n" + "\n".join(self._logs.format(r) for r in errors)
            )
            self.master.shutdown()
        else:
            proxyserver = self.master.addons.get("proxyserver")
            addrs = proxyserver.listen_addrs()
            if addrs:
                self._port = int(addrs[0][1])
            else:
                self._startup_exc = ProxyStartupError("proxy is running but not listening")
                self.master.shutdown()
        self._ready.set()

    def _begin_graceful_shutdown(self) -> None:
        # Keep a reference: the loop holds tasks only weakly.
        self._shutdown_task = asyncio.ensure_future(self._graceful_shutdown())

    async def _graceful_shutdown(self) -> None:
        """Stop listening, close client connections (their disconnect hooks run), then shut
        the master down. mitmproxy itself leaves listeners open after shutdown()."""
        master = self.master
        if master is None:
            return
        try:
            await self._close_listeners()
            proxyserver = master.addons.get("proxyserver")
            if proxyserver is not None:
                for handler in list(proxyserver.connections.values()):
                    io = handler.transports.get(handler.client)
                    if io is not None and io.handler is not None:
                        io.handler.cancel("harness shutdown")
                deadline = time.monotonic() + 5
                while proxyserver.connections and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
        except Exception:
            logging.getLogger(__name__).exception("harness: error while closing connections")
        finally:
            master.shutdown()

    async def _close_listeners(self) -> None:
        proxyserver = self.master.addons.get("proxyserver") if self.master else None
        if proxyserver is not None and len(proxyserver.servers):
            await asyncio.wait_for(proxyserver.servers.update([]), 5)

    def _install_log_capture(self) -> None:
        for name in self._captured_loggers:
            logger = logging.getLogger(name)
            self._saved_levels[name] = logger.level
            if logger.getEffectiveLevel() > self._log_level:
                logger.setLevel(self._log_level)
        logging.getLogger().addHandler(self._logs)

    def _uninstall_log_capture(self) -> None:
        logging.getLogger().removeHandler(self._logs)
        for name, level in self._saved_levels.items():
            logging.getLogger(name).setLevel(level)
        self._saved_levels.clear()

    def _write_client_bundle(self) -> None:
        parts = [self.ca_pem.read_text()]
        if self.upstream_ca is not None:
            parts.append(self.upstream_ca.read_text())
        self.client_ca_bundle.write_text("\n".join(p.strip() + "\n" for p in parts))


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

_WRITE_OUT_MARK = "@@harness-write-out@@"
_PROXY_ENV_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}


def _clean_env() -> dict[str, str]:
    """The environment minus every *_proxy variable (either case) and curl's config home."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in _PROXY_ENV_VARS and k not in {"CURL_HOME", "SSLKEYLOGFILE"}
    }
    env["CURL_HOME"] = "/nonexistent"
    return env


@dataclass
class CurlResult:
    status: int  # final response's status; 0 when there was none (e.g. CONNECT refused)
    headers: dict[str, str]  # last response's headers, lower-case names
    body: str  # body for ``url``
    returncode: int
    stderr: str
    connect_status: int  # the proxy's answer to CONNECT; 0 when curl sent no CONNECT
    write_out: dict[str, Any] = field(default_factory=dict)  # curl's %{json} for ``url``
    write_outs: list[dict[str, Any]] = field(default_factory=list)  # one per URL fetched
    header_blocks: list[str] = field(default_factory=list)  # every response head curl saw
    stdout: str = ""  # bodies of URLs after the first (passed in extra_args) land here

    def json(self) -> Any:
        return json.loads(self.body)


def curl(
    runner: ProxyRunner,
    url: str,
    *,
    proxy_user: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 10,
    env: Mapping[str, str] | None = None,
) -> CurlResult:
    """Fetch ``url`` through the proxy with the real curl binary.

    ``env`` adds to curl's environment (KRB5CCNAME and KRB5_CONFIG for --proxy-negotiate).

    More URLs may follow in ``extra_args`` (curl then reuses its connection); their results are
    in ``write_outs`` (one %{json} dict per URL, ``url`` first) and their bodies in ``stdout``.

    ``proxy_user`` is "user:password". The proxy resolves names (curl never does when it talks
    to an HTTP proxy), so no DNS is needed.
    """
    with tempfile.TemporaryDirectory(prefix="citygate-curl-") as tmp:
        head_file = Path(tmp) / "headers"
        body_file = Path(tmp) / "body"
        cmd = [
            "curl",
            "-q",  # must come first: ignore any .curlrc
            "-sS",
            "--noproxy",
            "",
            "-x",
            runner.proxy_url,
            "--cacert",
            str(runner.client_ca_bundle),
            "--max-time",
            str(timeout),
            "-D",
            str(head_file),
            "-o",
            str(body_file),
            "-w",
            # One marked line per URL: with several URLs, later bodies also go to stdout.
            f"\n{_WRITE_OUT_MARK}%{{json}}\n",
        ]
        if proxy_user is not None:
            cmd += ["--proxy-user", proxy_user]
        # ``url`` first: "-o" applies to it; further URLs in extra_args print to stdout.
        cmd += [url, *extra_args]
        proc = subprocess.run(
            cmd, capture_output=True, timeout=timeout + 5, env={**_clean_env(), **(env or {})}, check=False
        )
        heads = head_file.read_text("latin-1") if head_file.exists() else ""
        body = body_file.read_bytes().decode("utf-8", "replace") if body_file.exists() else ""
    stdout = proc.stdout.decode("utf-8", "replace")
    write_outs = [
        json.loads(line.removeprefix(_WRITE_OUT_MARK))
        for line in stdout.splitlines()
        if line.startswith(_WRITE_OUT_MARK)
    ]
    write_out = write_outs[0] if write_outs else {}
    blocks = [b for b in heads.replace("\r\n", "\n").split("\n\n") if b.strip()]
    status = int(write_out.get("http_code") or write_out.get("response_code") or 0)
    connect_status = int(write_out.get("http_connect") or 0)
    final_headers: dict[str, str] = {}
    # The last head curl received (with a failed CONNECT there is no final response).
    if blocks and status:
        final_headers = _parse_header_block(blocks[-1])[1]
    return CurlResult(
        status=status,
        headers=final_headers,
        body=body,
        returncode=proc.returncode,
        stderr=proc.stderr.decode("utf-8", "replace"),
        connect_status=connect_status,
        write_out=write_out,
        write_outs=write_outs,
        header_blocks=blocks,
        stdout=stdout,
    )


def _parse_header_block(block: str) -> tuple[str, dict[str, str]]:
    lines = block.replace("\r\n", "\n").split("\n")
    pairs = []
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            pairs.append((k.strip(), v.strip()))
    return lines[0], _headers_dict(pairs)


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    raw: bytes  # head and body exactly as received

    def json(self) -> Any:
        return json.loads(self.body)


class ProxyConnection:
    """One client TCP connection to the proxy, for crafted and keep-alive requests."""

    def __init__(self, runner: ProxyRunner, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(runner.address, timeout=timeout)
        self._buf = b""  # received, not yet consumed
        self._raw = b""  # consumed bytes of the response being read

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, data: bytes) -> HttpResponse:
        """Send one request and read its response (keep-alive: call again for the next)."""
        self.send(data)
        method = data.split(b" ", 1)[0].decode("latin-1")
        return self.read_response(method=method)

    def read_response(self, *, method: str = "GET") -> HttpResponse:
        """Read one response; body framed by Content-Length, chunked, or connection close."""
        self._raw = b""
        while True:
            status, reason, headers = _parse_head(self._read_until(b"\r\n\r\n"))
            if not 100 <= status < 200 or status == 101:
                break  # skip interim responses such as 100 Continue
        no_body = (
            method == "HEAD"
            or (method == "CONNECT" and 200 <= status < 300)
            or status in (204, 304)
            or 100 <= status < 200
        )
        if no_body:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body = self._take(len(self._buf))
        return HttpResponse(status, reason, headers, body, self._raw)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self._buf += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise ConnectionError(
                    f"connection closed after {len(self._raw) + len(self._buf)} bytes; "
                    f"received so far: {self._raw + self._buf!r}"
                )
        out, self._buf = self._buf[:n], self._buf[n:]
        self._raw += out
        return out

    def _read_until(self, delimiter: bytes) -> bytes:
        while delimiter not in self._buf:
            if not self._fill():
                raise ConnectionError(
                    f"connection closed before {delimiter!r}; received: {self._raw + self._buf!r}"
                )
        return self._take(self._buf.index(delimiter) + len(delimiter))

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0].strip(), 16)
            if size == 0:
                while self._read_until(b"\r\n") != b"\r\n":
                    pass  # trailers
                return body
            body += self._take(size)
            self._read_until(b"\r\n")


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    text = head.decode("latin-1")
    status_line, headers = _parse_header_block(text.strip())
    parts = status_line.split(" ", 2)
    status = int(parts[1])
    return status, parts[2] if len(parts) > 2 else "", headers


def raw_http_via_proxy(runner: ProxyRunner, request_bytes: bytes, *, timeout: float = 10.0) -> bytes:
    """Send crafted bytes on a fresh connection to the proxy; return the first response
    (head and body) exactly as received."""
    with ProxyConnection(runner, timeout=timeout) as conn:
        return conn.request(request_bytes).raw


def tunnel_peer_certificate(
    runner: ProxyRunner,
    host: str,
    port: int = 443,
    proxy_user: str | None = None,
    *,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """CONNECT to ``host:port`` through the proxy and, if the tunnel opens, do a TLS handshake
    with SNI=host without verification. Returns::

        {"connect_status": int, "connect_response": bytes,
         "issuer_cn": str | None, "subject": str | None, "subject_cn": str | None,
         "san_dns": list[str]}

    The certificate fields are None when the proxy refused the CONNECT.
    """
    lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
    if proxy_user is not None:
        token = base64.b64encode(proxy_user.encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    result: dict[str, Any] = {
        "connect_status": 0,
        "connect_response": b"",
        "issuer_cn": None,
        "subject": None,
        "subject_cn": None,
        "san_dns": [],
    }
    with ProxyConnection(runner, timeout=timeout) as conn:
        conn.send(request)
        response = conn.read_response(method="CONNECT")
        result["connect_status"] = response.status
        result["connect_response"] = response.raw
        if response.status != 200:
            return result
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(conn.sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    result["issuer_cn"] = _common_name(cert.issuer)
    result["subject"] = cert.subject.rfc4514_string()
    result["subject_cn"] = _common_name(cert.subject)
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        result["san_dns"] = san.value.get_values_for_type(x509.DNSName)
    return result


def _common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value.decode() if isinstance(value, bytes) else value


@contextlib.contextmanager
def running_proxy(
    addons: Sequence[object] = (), options: Mapping[str, Any] | None = None, **kwargs: Any
) -> Iterator[ProxyRunner]:
    """``with running_proxy([...]) as runner:`` for code outside pytest fixtures."""
    runner = ProxyRunner(addons, options, **kwargs)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def probe(url: str) -> tuple[int, dict]:
    """GET a JSON health endpoint (/readyz, /healthz): its status and body; 0 while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except (urllib.error.URLError, ConnectionError) as error:
        return 0, {"error": str(error)}  # not listening yet: callers ask again


def citygate_explain(config: Path, user: str, url: str) -> dict[str, Any]:
    """`citygate explain --json` for `user` and `url`, run as an admin would (it exits 1 on a denial)."""
    answer = subprocess.run(
        [
            str(Path(sys.executable).parent / "citygate"),
            "explain",
            "--config",
            str(config),
            "--json",
            user,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode in (0, 1), answer.stderr
    result: dict[str, Any] = json.loads(answer.stdout)
    return result
