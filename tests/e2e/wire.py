"""Raw-wire helpers for tests that care about the exact bytes and how they are split.

- ``RecordingOrigin``: a raw TCP server on 127.0.0.1 that records every byte of every connection
  it accepts, with the address the proxy meant to reach (noted by ``RedirectEverything``), and
  answers ``ORIGIN-SAW\\n`` after the first bytes, so a client notices quickly that it got through.
- ``RedirectEverything``: ``RedirectToUpstream`` that lets no upstream connection escape (ports
  without a local server go to the origin) and notes every upstream connection it saw.
- ``MemoryTlsClient``: a TLS client over memory BIOs, so the ClientHello is bytes the test can
  split, rewrite (record version, SNI) and send as it likes, then finish the handshake.
- ``send_segmented``, ``TunnelClient``, ``read_answer``: send bytes in pieces, read what came back.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import re
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from cryptography import x509
from cryptography.x509.oid import NameOID
from harness import LOCALHOST, Address, ProxyRunner, RedirectToUpstream
from mitmproxy import http
from mitmproxy.proxy import server_hooks

ORIGIN_REPLY = b"ORIGIN-SAW\n"
#: What the origin answers when the first bytes it got look like an HTTP/1 request head.
ORIGIN_HTTP_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
    % (len(ORIGIN_REPLY), ORIGIN_REPLY)
)
_HTTP_START = re.compile(rb"[A-Za-z]{1,20}(?: |$)")


# --------------------------------------------------------------------------------------------
# The recording origin
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OriginConnection:
    """One TCP connection the origin accepted, as it stood when it was looked at."""

    peer: Address  # the proxy's end of the connection
    destination: Address | None  # where the proxy meant to go (None: not noted by a redirect)
    data: bytes  # every byte received, in order
    closed: bool  # the proxy closed (or reset) its end


class RecordingOrigin:
    """A raw TCP server on 127.0.0.1 recording every byte of every connection it accepts.

    After the first bytes of a connection it answers ``ORIGIN-SAW\\n``; when those bytes look like
    the start of an HTTP/1 request (``http_aware``) it waits for the end of the head and answers
    a ``200`` whose body is ``ORIGIN-SAW\\n`` instead, so an HTTP proxy in between gets a response
    it can parse. It keeps reading (and recording) until the peer closes.
    """

    def __init__(self, *, http_aware: bool = True) -> None:
        self.http_aware = http_aware
        self._listener = socket.create_server((LOCALHOST, 0))
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._conns: list[dict[str, object]] = []
        self._destinations: dict[Address, Address] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def address(self) -> Address:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._accept_loop, name="recording-origin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self._conns.clear()
            self._destinations.clear()

    def note_destination(self, peer: Address, destination: Address) -> None:
        """The proxy connected from ``peer`` meaning to reach ``destination``."""
        with self._lock:
            self._destinations[peer] = destination

    @property
    def connections(self) -> list[OriginConnection]:
        with self._lock:
            return [
                OriginConnection(
                    peer=c["peer"],  # type: ignore[arg-type]
                    destination=self._destinations.get(c["peer"]),  # type: ignore[arg-type]
                    data=bytes(c["data"]),  # type: ignore[arg-type]
                    closed=bool(c["closed"]),
                )
                for c in self._conns
            ]

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    @property
    def received(self) -> bytes:
        """Every byte of every connection, concatenated in accept order."""
        return b"".join(c.data for c in self.connections)

    @property
    def contacted(self) -> bool:
        return self.connection_count > 0

    def wait_for(self, n_bytes: int, timeout: float = 5.0) -> list[OriginConnection]:
        """Wait until the connections hold at least ``n_bytes`` bytes in all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(len(c["data"]) for c in self._conns) < n_bytes:  # type: ignore[arg-type]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        return self.connections

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return
            record: dict[str, object] = {"peer": (peer[0], peer[1]), "data": bytearray(), "closed": False}
            with self._changed:
                self._conns.append(record)
                self._changed.notify_all()
            threading.Thread(target=self._serve, args=(sock, record), daemon=True).start()

    def _serve(self, sock: socket.socket, record: dict[str, object]) -> None:
        data: bytearray = record["data"]  # type: ignore[assignment]
        answered = False
        with sock:
            sock.settimeout(60)
            while True:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                with self._changed:
                    if chunk:
                        data.extend(chunk)
                    else:
                        record["closed"] = True
                    self._changed.notify_all()
                if not chunk:
                    return
                if not answered:
                    reply = self._reply_for(bytes(data))
                    if reply is not None:
                        answered = True
                        with contextlib.suppress(OSError):
                            sock.sendall(reply)

    def _reply_for(self, data: bytes) -> bytes | None:
        if not self.http_aware or not _HTTP_START.match(data[:21]):
            return ORIGIN_REPLY
        if b"\r\n\r\n" in data or b"\n\n" in data:
            return ORIGIN_HTTP_REPLY
        if len(data) > 65536:
            return ORIGIN_REPLY
        return None  # the start of an HTTP head: wait for its end


# --------------------------------------------------------------------------------------------
# Redirect: no upstream connection escapes, every one is noted
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamConnection:
    """An upstream connection the proxy opened: where it meant to go, where it went."""

    original: Address
    target: Address
    tls: bool  # marked TLS: an intercepted tunnel, or a passed-through ClientHello


class RedirectEverything(RedirectToUpstream):
    """``RedirectToUpstream`` (add it last) whose unmapped ports go to a ``RecordingOrigin``.

    Connections mitmproxy may speak TLS on go to ``tls`` (mitmproxy marks a tunnel's server
    connection as TLS as soon as it sees a ClientHello, so passed-through ClientHellos go there
    too), other connections by ``port_map`` (80 to ``plain``, 443 to ``tls`` by default), the
    rest to the origin. Connections to ``raw_ports`` always go to the origin, to see their bytes
    exactly. Every upstream connection that was opened is in ``opened``.
    """

    name = "redirect_everything"

    def __init__(
        self,
        origin: RecordingOrigin,
        plain: Address | None = None,
        tls: Address | None = None,
        *,
        port_map: Mapping[int, Address] | None = None,
        raw_ports: Iterable[int] = (),
    ) -> None:
        super().__init__(plain or origin.address, tls or origin.address, port_map=port_map)
        self.origin = origin
        self.raw_ports = frozenset(raw_ports)
        self._local.add(origin.address)
        self._opened: list[UpstreamConnection] = []
        self._targets: dict[str, tuple[Address, Address, bool]] = {}

    @property
    def opened(self) -> list[UpstreamConnection]:
        with self._lock:
            return list(self._opened)

    def reset(self) -> None:
        with self._lock:
            self._opened.clear()
            self._redirects.clear()

    def _rewrite_plain(self, flow: http.HTTPFlow) -> None:
        if flow.request.port not in self.raw_ports:
            super()._rewrite_plain(flow)
            return
        plain, self.plain = self.plain, self.origin.address
        try:
            super()._rewrite_plain(flow)
        finally:
            self.plain = plain

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None or data.server.error:
            return
        original = (str(address[0]), int(address[1]))
        if original in self._local:
            target = original  # a plain-HTTP flow already rewritten in `request`
        elif original[1] in self.raw_ports:
            target = self.origin.address
        elif data.server.tls:
            target = self.tls
        else:
            target = self.port_map.get(original[1], self.origin.address)
        with self._lock:
            self._targets[data.server.id] = (original, target, bool(data.server.tls))
            if target != original:
                self._pending[data.server.id] = original
        if target != original:
            data.server.address = target
            self._note("tunnel", original, target)

    def fast_path_target(self, address: Address) -> Address | None:
        target = self.origin.address if address[1] in self.raw_ports else self.tls
        self._note("tunnel", address, target)
        with self._lock:
            self._opened.append(UpstreamConnection(address, target, True))
        return target

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        with self._lock:
            noted = self._targets.pop(data.server.id, None)
        if noted is not None:
            original, target, tls = noted
            # A plain-HTTP flow rewritten in `request` keeps its real destination in the flow.
            real = self._plain_original(data) or original
            with self._lock:
                self._opened.append(UpstreamConnection(real, target, tls))
            sockname = data.server.sockname
            if target == self.origin.address and sockname is not None:
                self.origin.note_destination((str(sockname[0]), int(sockname[1])), real)
        super().server_connected(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        with self._lock:
            self._targets.pop(data.server.id, None)
        super().server_connect_error(data)

    def _plain_original(self, data: server_hooks.ServerConnectionHookData) -> Address | None:
        address = data.server.address
        if address is None or tuple(address[:2]) not in self._local:
            return None
        with self._lock:
            for kind, original, target in reversed(self._redirects):
                if kind == "http" and target == tuple(address[:2]):
                    return original
        return None


def wait_until_idle(runner: ProxyRunner, timeout: float = 5.0) -> None:
    """Wait until the proxy holds no client connection. Call it after closing the test's clients:
    from then on no upstream connection can be opened on their behalf, so what the upstreams and
    ``RedirectEverything.opened`` hold is final."""
    proxyserver = runner.master.addons.get("proxyserver")  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while runner.call(lambda: len(proxyserver.connections)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the proxy still holds client connections after {timeout}s")
        time.sleep(0.001)


# --------------------------------------------------------------------------------------------
# TLS ClientHellos as bytes
# --------------------------------------------------------------------------------------------


class MemoryTlsClient:
    """A TLS client over memory BIOs: the ClientHello is bytes, the socket is the test's.

    ``hello()`` gives the ClientHello; after the test sent it (however it likes), ``handshake``
    completes the handshake over a ``TunnelClient``; ``request``/``read_all`` then speak inside.
    """

    def __init__(self, sni: str | None, *, alpn: Sequence[str] = ("http/1.1",)) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if alpn:
            context.set_alpn_protocols(list(alpn))
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=sni)

    def hello(self) -> bytes:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        else:  # pragma: no cover - a handshake cannot finish before the server spoke
            raise AssertionError("TLS handshake finished without a server")
        return self.outgoing.read()

    def handshake(self, conn: TunnelClient, timeout: float = 5.0) -> None:
        """Finish the handshake whose ClientHello was already sent on ``conn``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush(conn)
                chunk = conn.recv_some(max(0.01, deadline - time.monotonic()))
                if not chunk:
                    raise ConnectionError("the connection closed during the TLS handshake") from None
                self.incoming.write(chunk)
                continue
            self._flush(conn)
            return

    def _flush(self, conn: TunnelClient) -> None:
        pending = self.outgoing.read()
        if pending:
            conn.sock.sendall(pending)

    def peer_issuer_cn(self) -> str | None:
        der = self.tls.getpeercert(binary_form=True)
        if der is None:
            return None
        attrs = x509.load_der_x509_certificate(der).issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        value = attrs[0].value if attrs else None
        return value.decode() if isinstance(value, bytes) else value

    def send(self, conn: TunnelClient, data: bytes) -> None:
        self.tls.write(data)
        self._flush(conn)

    def read_all(self, conn: TunnelClient, timeout: float = 5.0) -> bytes:
        """Application data until the server closes (close_notify or EOF) or ``timeout``."""
        deadline = time.monotonic() + timeout
        out = bytearray()
        while time.monotonic() < deadline:
            try:
                while True:
                    piece = self.tls.read(65536)
                    if not piece:
                        return bytes(out)
                    out.extend(piece)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return bytes(out)
            if _complete_http_response(bytes(out)):
                return bytes(out)
            chunk = conn.recv_some(max(0.01, deadline - time.monotonic()))
            if not chunk:
                return bytes(out)
            self.incoming.write(chunk)
        return bytes(out)

    def request(self, conn: TunnelClient, data: bytes, timeout: float = 5.0) -> bytes:
        """Send a request inside the TLS session; the response (up to its end or EOF)."""
        self.send(conn, data)
        return self.read_all(conn, timeout)


def _complete_http_response(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return match is not None and len(body) >= int(match.group(1))


def client_hello(sni: str | None, *, alpn: Sequence[str] = ("http/1.1",)) -> bytes:
    """A real ClientHello (Python's OpenSSL) naming ``sni``."""
    return MemoryTlsClient(sni, alpn=alpn).hello()


def with_record_version(hello: bytes, version: bytes) -> bytes:
    """``hello`` with its record-layer version (bytes 1-2) replaced, e.g. ``b"\\x03\\x05"``."""
    assert len(version) == 2
    return hello[:1] + version + hello[3:]


@dataclass(frozen=True)
class HelloLayout:
    """Offsets into a single-record ClientHello."""

    extensions: int  # start of the extensions block (its 2-byte length)
    sni_extension: int | None  # start of the server_name extension (its 2-byte type)
    sni_name: int | None  # start of the host name bytes


def hello_layout(hello: bytes) -> HelloLayout:
    assert hello[0] == 0x16 and hello[5] == 0x01, "not a ClientHello record"
    pos = 5 + 4 + 2 + 32  # record header, handshake header, client_version, random
    pos += 1 + hello[pos]  # session id
    pos += 2 + struct.unpack_from("!H", hello, pos)[0]  # cipher suites
    pos += 1 + hello[pos]  # compression methods
    extensions = pos
    end = pos + 2 + struct.unpack_from("!H", hello, pos)[0]
    pos += 2
    while pos < end:
        ext_type, ext_len = struct.unpack_from("!HH", hello, pos)
        if ext_type == 0:
            return HelloLayout(extensions, pos, pos + 4 + 2 + 1 + 2)
        pos += 4 + ext_len
    return HelloLayout(extensions, None, None)


def with_sni(hello: bytes, sni: bytes | None) -> bytes:
    """``hello`` with its server_name extension naming ``sni`` byte for byte (any bytes at all,
    which ``ssl`` would refuse), or without one (None); every length is fixed up.

    A handshake cannot be finished after this (the transcript changed): use it to see what the
    proxy does with the ClientHello itself.
    """
    layout = hello_layout(hello)
    ext_start = layout.extensions
    ext_block_len = struct.unpack_from("!H", hello, ext_start)[0]
    body = bytearray(hello[ext_start + 2 : ext_start + 2 + ext_block_len])
    tail = hello[ext_start + 2 + ext_block_len :]
    if layout.sni_extension is not None:
        rel = layout.sni_extension - (ext_start + 2)
        old_len = struct.unpack_from("!H", body, rel + 2)[0]
        del body[rel : rel + 4 + old_len]
    if sni is not None:
        name = struct.pack("!BH", 0, len(sni)) + sni
        ext = struct.pack("!HH", 0, len(name) + 2) + struct.pack("!H", len(name)) + name
        body[0:0] = ext
    prefix = bytearray(hello[: ext_start + 2])
    struct.pack_into("!H", prefix, ext_start, len(body))
    handshake = bytes(prefix[5:]) + bytes(body) + tail
    handshake_body_len = len(handshake) - 4
    handshake = handshake[:1] + handshake_body_len.to_bytes(3, "big") + handshake[4:]
    return hello[:3] + struct.pack("!H", len(handshake)) + handshake


# --------------------------------------------------------------------------------------------
# Sending in pieces, reading answers
# --------------------------------------------------------------------------------------------


def pieces(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (out-of-range and duplicate cuts ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def send_segmented(sock: socket.socket, data: bytes, cuts: Iterable[int], pause: float = 0.02) -> int:
    """Send ``data`` in pieces cut at ``cuts``, with TCP_NODELAY and ``pause`` seconds between.

    Returns how many pieces went out: a peer that closes the connection midway (a proxy refusing
    a tunnel after its first bytes) stops the sending, it is not an error.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    parts = pieces(data, cuts)
    for i, part in enumerate(parts):
        try:
            sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            return i
        if i < len(parts) - 1 and pause:
            time.sleep(pause)
    return len(parts)


def basic_auth(user: str) -> str:
    """``Proxy-Authorization`` value for ``"user:password"``."""
    return "Basic " + base64.b64encode(user.encode()).decode()


def connect_request(authority: str, *, proxy_user: str | None = None, host: str | None = None) -> bytes:
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {host or authority}"]
    if proxy_user is not None:
        lines.append(f"Proxy-Authorization: {basic_auth(proxy_user)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Answer:
    """What a client got back: bytes, and how the exchange ended."""

    data: bytes
    eof: bool  # the proxy closed (or reset) the connection
    timed_out: bool

    @property
    def status(self) -> int | None:
        """Status of the HTTP response these bytes start with, if they do."""
        match = re.match(rb"HTTP/1\.[01] (\d{3})", self.data)
        return int(match.group(1)) if match else None

    @property
    def status_line(self) -> bytes:
        return self.data.split(b"\r\n", 1)[0] if self.data.startswith(b"HTTP/") else b""

    @property
    def head(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[0]

    @property
    def body(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[2]

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None

    @property
    def kind(self) -> str:
        """ "http" | "tls" | "origin" (raw origin reply) | "closed" (nothing, then EOF) |
        "silent" (nothing, no EOF) | "other"."""
        if self.data.startswith(b"HTTP/"):
            return "http"
        if self.data[:1] in (b"\x15", b"\x16") and self.data[1:2] == b"\x03":
            return "tls"
        if ORIGIN_REPLY in self.data:
            return "origin"
        if not self.data:
            return "closed" if self.eof else "silent"
        return "other"


def _answer_length(data: bytes) -> int | None:
    """Length of the whole answer ``data`` starts with (an HTTP response with its body, a TLS
    record, the origin's raw reply), or None while it is incomplete or its end is EOF."""
    if data.startswith(b"HTTP/"):
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        head_length = len(head) + len(sep)
        status = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        if status and (status.group(1)[:1] == b"1" or status.group(1) in (b"204", b"304")):
            return head_length
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if length is None and re.match(rb"HTTP/1\.[01] 2\d\d Connection established\r\n", data):
            return head_length  # a proxy's answer to CONNECT: no body
        if length is not None and len(body) >= int(length.group(1)):
            return head_length + int(length.group(1))
        return None  # incomplete, chunked or close-delimited: read on (to EOF)
    if data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03" and len(data) >= 5:
        record = 5 + struct.unpack_from("!H", data, 3)[0]
        return record if len(data) >= record else None
    end = data.find(ORIGIN_REPLY)
    return None if end == -1 else end + len(ORIGIN_REPLY)


class TunnelClient:
    """One client connection to the proxy, byte-level: CONNECT, then anything."""

    def __init__(self, address: Address, *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self._buffer = b""  # received, not yet handed out
        self.received = bytearray()  # every byte received, in order
        self.eof = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def recv_some(self, timeout: float) -> bytes:
        """Buffered bytes if any, else whatever arrives within ``timeout`` (b"" on EOF/timeout)."""
        if self._buffer:
            out, self._buffer = self._buffer, b""
            return out
        if self.eof:
            return b""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return b""
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.received.extend(chunk)
        return chunk

    def connect(self, request: bytes) -> Answer:
        """Send a CONNECT request and read the proxy's response (bytes after it stay buffered
        for what comes next)."""
        self.sock.sendall(request)
        return self.read_head(connect=True)

    def read_head(self, *, connect: bool = False) -> Answer:
        """One HTTP response: its head, and its body when Content-Length frames it (a 2xx to
        CONNECT has none)."""
        deadline = time.monotonic() + self.timeout
        data = b""
        while b"\r\n\r\n" not in data:
            left = deadline - time.monotonic()
            chunk = self.recv_some(left) if left > 0 else b""
            if not chunk:
                return Answer(data, self.eof, not self.eof)
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        head += b"\r\n\r\n"
        answer = Answer(head, False, False)
        length = answer.header("content-length")
        tunnel_opened = connect and 200 <= (answer.status or 0) < 300
        if length and not tunnel_opened:
            need = int(length)
            while len(rest) < need:
                left = deadline - time.monotonic()
                chunk = self.recv_some(left) if left > 0 else b""
                if not chunk:
                    break
                rest += chunk
            head += rest[:need]
            rest = rest[need:]
        self._buffer = rest + self._buffer
        return Answer(head, self.eof, False)

    def read_answer(self, timeout: float | None = None) -> Answer:
        """Read until a whole answer arrived (see ``_answer_length``), EOF, or ``timeout``;
        bytes after the answer stay buffered for the next read."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        data = b""
        while (length := _answer_length(data)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return Answer(data, self.eof, True)
            chunk = self.recv_some(left)
            if not chunk:
                return Answer(data, self.eof, not self.eof)
            data += chunk
        self._buffer = data[length:] + self._buffer
        return Answer(data[:length], self.eof, False)

    def send_segmented(self, data: bytes, cuts: Iterable[int], pause: float = 0.02) -> int:
        return send_segmented(self.sock, data, cuts, pause)


@dataclass(frozen=True)
class Segmentation:
    """A named way to cut bytes: ``cuts(data)`` gives the offsets."""

    name: str
    offsets: tuple[int, ...] = ()
    from_end: tuple[int, ...] = ()  # offsets counted back from the end
    in_sni: tuple[int, ...] = field(default=())  # offsets relative to the SNI host name's start

    def cuts(self, data: bytes) -> list[int]:
        out = [*self.offsets, *(len(data) - k for k in self.from_end)]
        if self.in_sni and data[:1] == b"\x16":
            with contextlib.suppress(AssertionError, struct.error, IndexError):
                layout = hello_layout(data)
                if layout.sni_name is not None:
                    out += [layout.sni_name + k for k in self.in_sni]
        return sorted({c for c in out if 0 < c < len(data)})

    def __str__(self) -> str:
        return self.name
