"""The fast path: ordinary HTTPS tunnels decided and relayed before mitmproxy's connection machinery.

With `citygate_fast_path` on, each connection to the regular-mode listener is accepted by a
`_Front` protocol first (proxy/runtime/front_door.py). It reads the request head with h11
(proxy/connect_head.py). A `CONNECT host:port` whose host the catalog says is ordinary is
answered 200 as mitmproxy would; then the tunnel's start is read whole (addons/tunnel_start.py,
with its size and time limits) and decided on every server name the ClientHello may be read as.
Only when every host named is ordinary is the upstream connection opened: the buffered bytes
are written to it, and the two transports are relayed to each other (`_Relay`), with
back-pressure (pause/resume reading) and half-close.

Everything else is handed to mitmproxy unchanged, with the bytes already read replayed, so it
sees the connection the client opened: a social CONNECT host, plain HTTP, any other head or
protocol, malformed input. A tunnel whose start turns out not to be an ordinary standard
ClientHello after our 200 (a social SNI, HTTP inside, anything else) is handed over too, with
its CONNECT head replayed: mitmproxy's answer to that CONNECT is swallowed if it is a 2xx (the
client already has ours), and the connection is closed otherwise, so the client never sees two
answers and the gate decides the tunnel exactly as without the fast path (`tls_clienthello`,
`next_layer`). No byte goes upstream before that decision.

The policy is the gate's (`CityGate.config`), and the decision the same pure core: every host
normalized by `normalize_host` and looked up in the catalog. A host that does not normalize is
left to mitmproxy rather than guessed at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import cast

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader

from citygate.addons.connection_limits import HEADER, ConnectionLimits
from citygate.addons.gate import START_SECONDS, CityGate
from citygate.addons.tunnel_start import Kind, classify, server_names, sni_readable
from citygate.proxy.connect_head import WAIT, ConnectHead, read_connect
from citygate.proxy.hosts import normalize_host
from citygate.proxy.metrics.definitions import FAST_PATH_OUTCOMES
from citygate.proxy.runtime import front_door
from citygate.proxy.runtime.front_door import HandleStream

log = logging.getLogger("citygate")

OPTION = "citygate_fast_path"
RELAYED, HANDED_OFF = FAST_PATH_OUTCOMES
Address = tuple[str, int]
#: Told of each connection the fast path relayed or handed to mitmproxy (the metrics count them).
Observer = Callable[[str], None]
# How often idle relayed tunnels are looked for: one is closed at most this late.
SWEEP_SECONDS = 1.0
# How long a relay waits for its upstream to accept the connection: Squid's and nginx's default
# (connect_timeout, proxy_connect_timeout), where the system's own SYN retries take two minutes.
CONNECT_SECONDS = 60
# asyncio.start_server's, which mitmproxy uses: a handed-over connection reads as it would have.
_STREAM_LIMIT = 2**16


class FastPath:
    """Owns the option and the front listener. `upstream` maps where a tunnel goes to where it is
    opened, None for nowhere (tests point tunnels at local servers, as their mitmproxy addon does)."""

    def __init__(self, gate: CityGate, upstream: Callable[[Address], Address | None] | None = None) -> None:
        self.gate = gate
        self.upstream = upstream
        self.observer: Observer | None = None
        self.relays: set[_Relay] = set()
        self.limits: ConnectionLimits | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            OPTION,
            bool,
            True,
            "Decide ordinary HTTPS tunnels (CONNECT host and TLS SNI) before mitmproxy and relay "
            "them directly; everything else goes to mitmproxy. Takes effect when the listeners start.",
        )
        # mitmproxy announces only options changed from their defaults (`configure`): the default
        # applies from here, before any listener starts.
        self._apply(loader.master.options.citygate_fast_path)

    def configure(self, updated: set[str]) -> None:
        if OPTION in updated:
            self._apply(ctx.options.citygate_fast_path)

    def _apply(self, on: bool) -> None:
        if on:
            # Only then: turned off, mitmproxy listens exactly as it always did.
            front_door.install()
            front_door.set_front(self._front)
        else:
            front_door.set_front(None)

    def running(self) -> None:
        limits = ctx.master.addons.get("connectionlimits")
        self.limits = limits if isinstance(limits, ConnectionLimits) else None
        if ctx.options.citygate_fast_path:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def done(self) -> None:
        front_door.set_front(None)
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        # After the graceful stop (addons/stopping.py): tunnels still relayed close, their
        # buffered bytes written first.
        for relay in list(self.relays):
            relay.close()

    async def _sweep_forever(self) -> None:
        """Close relayed tunnels idle for mitmproxy's `tcp_timeout`, as mitmproxy closes the ones it
        passes through, and those whose upstream has not answered in CONNECT_SECONDS: a relay
        checks no timer per byte or connection, only the time of its last byte."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            idle_since, connecting_since = now - ctx.options.tcp_timeout, now - CONNECT_SECONDS
            for relay in list(self.relays):
                if relay.server is None and relay.active < connecting_since:
                    log.info("citygate: fast path gave up connecting after %d s", CONNECT_SECONDS)
                    relay.close()
                elif relay.active < idle_since:
                    relay.close()

    def _front(self, handle: HandleStream) -> _Front:
        return _Front(self, handle)

    def ordinary(self, hosts: list[str]) -> bool:
        """Whether every host is surely not social: each normalizes and is not in the catalog."""
        loaded = self.gate.config.current
        if loaded is None:
            return False
        catalog = loaded.policy.catalog
        for host in hosts:
            normalized = normalize_host(host)
            if normalized is None or catalog.match(normalized) is not None:
                return False
        return True

    def count(self, outcome: str) -> None:
        if self.observer is not None:
            self.observer(outcome)

    def header_timeout(self) -> float:
        """The connection limits' header timeout (addons/connection_limits.py); 0 without them."""
        return self.limits.header_timeout if self.limits is not None else 0

    def admit(self, address: str) -> bool:
        """Count a new client connection against the client limit; False when it is over."""
        return self.limits.admit(address) if self.limits is not None else True

    def release(self, address: str) -> None:
        if self.limits is not None:
            self.limits.release(address)

    def closed(self, reason: str) -> None:
        """Count a connection closed by a connection limit, as mitmproxy's are counted."""
        if self.limits is not None and self.limits.observer is not None:
            self.limits.observer(reason, 1)


class _Front(asyncio.Protocol):
    """A client connection until it is decided: relayed, or handed to mitmproxy."""

    def __init__(self, fast: FastPath, handle: HandleStream) -> None:
        self.fast = fast
        self.handle = handle
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.head: ConnectHead | None = None
        self.started = 0.0  # when the CONNECT was answered
        self.eof = False
        self.timer: asyncio.TimerHandle | None = None
        # Counted against the client limit (addons/connection_limits.py) until the connection
        # closes or goes to mitmproxy, which counts it itself; None when not counted (any more).
        self.address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = _stream(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if not self.fast.admit(address):
            transport.close()  # as mitmproxy closes the excess: before a byte is read
            self.transport = None
            return
        self.address = address
        self._start_timer()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.head is None:
            self._read_head()
        else:
            self._read_start()

    def eof_received(self) -> bool:
        # The client will send nothing more: mitmproxy takes what there is (as it would have).
        self.eof = True
        self._hand_off()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._release()

    def _release(self) -> None:
        """Stop counting this connection here (once: closed, or handed to mitmproxy)."""
        address, self.address = self.address, None
        if address is not None:
            self.fast.release(address)

    def _start_timer(self) -> None:
        """The header timeout mitmproxy's connections have (addons/connection_limits.py): for the
        request head, and again from the CONNECT on for the tunnel's start."""
        self._stop_timer()
        timeout = self.fast.header_timeout()
        if timeout:
            self.timer = asyncio.get_running_loop().call_later(timeout, self._header_timeout)

    def _header_timeout(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
            self.fast.closed(HEADER)

    def _read_head(self) -> None:
        head = read_connect(bytes(self.data))
        if head == WAIT:
            return
        if not isinstance(head, ConnectHead) or not self.fast.ordinary([head.host, *head.host_fields]):
            self._hand_off()
            return
        self.head = head
        assert self.transport is not None
        self.transport.write(f"{head.http_version} 200 Connection established\r\n\r\n".encode())
        self.started = time.monotonic()
        self._start_timer()
        if len(self.data) > head.length:
            self._read_start()

    def _read_start(self) -> None:
        head = self.head
        assert head is not None
        start = classify(bytes(self.data[head.length :]))
        if start.kind is Kind.WAIT:
            # As addons/gate.py: a start still incomplete this long after the CONNECT is closed
            # (checked when bytes arrive; silence is the header timeout's business).
            if time.monotonic() - self.started > START_SECONDS and self.transport is not None:
                log.info("citygate: closed a tunnel to %s: its start was not whole in time", head.authority)
                self.transport.close()
                self.transport = None
            return
        hello = start.hello
        if (
            start.kind is Kind.TLS
            and start.standard_record
            and hello is not None
            and sni_readable(hello)
            and self.fast.ordinary([head.host, *server_names(hello)])
        ):
            self._relay(head)
        else:
            self._hand_off()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _relay(self, head: ConnectHead) -> None:
        self._stop_timer()
        transport = self.transport
        assert transport is not None
        relay = _Relay(self.fast, transport, bytes(self.data[head.length :]), self.address)
        self.transport = self.address = None  # the relay owns the connection and its count now
        address = (head.host, head.port)
        target = self.fast.upstream(address) if self.fast.upstream else address
        if target is None:
            relay.close()
            return
        relay.start(target)

    def _hand_off(self) -> None:
        """Give the connection to mitmproxy as the client opened it, replaying what was read."""
        self._stop_timer()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.transport = None
        self._release()  # mitmproxy's client_connected counts it from here on
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_STREAM_LIMIT, loop=loop)
        shown: asyncio.Transport = transport
        if self.head is not None:
            # The client has our 200 already: mitmproxy's answer to the same CONNECT must not reach it.
            shown = _AnswerSwallowed(transport)
        protocol = asyncio.StreamReaderProtocol(reader, self.handle, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(shown)
        if self.data:
            reader.feed_data(bytes(self.data))
        if self.eof:
            reader.feed_eof()
        self.fast.count(HANDED_OFF)


class _AnswerSwallowed(asyncio.Transport):
    """The client's transport as mitmproxy writes to it after the fast path answered the CONNECT.

    mitmproxy answers the replayed CONNECT first: a 2xx is dropped (the client has ours), and
    anything else (a refusal) closes the connection, since the client believes its tunnel is
    open. Everything after the answer passes unchanged.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self.inner = transport
        self.answer: bytearray | None = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.answer is None:
            self.inner.write(data)
            return
        self.answer += data
        end = self.answer.find(b"\r\n\r\n")
        if end == -1:
            return
        answer, rest = bytes(self.answer[:end]), bytes(self.answer[end + 4 :])
        self.answer = None
        status = answer.split(b" ", 2)[1:2]
        if not (status and status[0].startswith(b"2") and len(status[0]) == 3):
            log.info("citygate: closed a fast-path tunnel mitmproxy refused: %r", answer.split(b"\r\n")[0])
            self.inner.close()
            return
        if rest:
            self.inner.write(rest)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.inner.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def write_eof(self) -> None:
        self.inner.write_eof()

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def is_reading(self) -> bool:
        return self.inner.is_reading()

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.inner.set_write_buffer_limits(high, low)


class _Relay:
    """Two transports relayed to each other once the tunnel is decided."""

    def __init__(self, fast: FastPath, client: asyncio.Transport, first: bytes, address: str | None) -> None:
        self.fast = fast
        self.client = _Side(self, client)
        self.server: _Side | None = None
        # Bytes from the client before the upstream connection is open: the ClientHello first.
        self.pending = bytearray(first)
        self.active = time.monotonic()  # when the last byte went either way
        self.address = address  # counted against the client limit under it, until closed
        self.connecting: asyncio.Task[None] | None = None
        client.pause_reading()
        client.set_protocol(self.client)

    def start(self, target: Address) -> None:
        self.fast.relays.add(self)
        self.connecting = asyncio.get_running_loop().create_task(self._connect(target))
        self.connecting.add_done_callback(_log_failure)

    async def _connect(self, target: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, side = await loop.create_connection(lambda: _Side(self, None), *target)
        except asyncio.CancelledError:
            return  # by close(), which has closed the rest: the connect timeout, the client left, a stop
        except Exception as exc:
            self.connecting = None  # over: close() has nothing to cancel
            if isinstance(exc, OSError):
                log.info("citygate: fast path could not connect to %s:%s: %s", *target, exc)
            else:
                log.exception("citygate: fast path could not connect to %s:%s", *target)
            self.close()
            return
        self.connecting = None
        self.server = side
        if self.client.transport.is_closing():
            transport.close()
            self.close()
            return
        # Reading resumes first: writing may fill the upstream's buffer, which pauses it again.
        self.client.transport.resume_reading()
        transport.write(bytes(self.pending))
        self.pending.clear()
        self.fast.count(RELAYED)

    def peer(self, side: _Side) -> _Side | None:
        return self.server if side is self.client else self.client

    def close(self) -> None:
        """Close both ends (each writes what it has buffered first); any number of times."""
        self.fast.relays.discard(self)
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()
        address, self.address = self.address, None
        if address is not None:
            self.fast.release(address)
        for side in (self.client, self.server):
            if side is not None and side.transport is not None:
                side.transport.close()


class _Side(asyncio.Protocol):
    """One end of a relay: what it receives is written to the other end."""

    def __init__(self, relay: _Relay, transport: asyncio.Transport | None) -> None:
        self.relay = relay
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]  # set by connection_made
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = _stream(transport)

    def data_received(self, data: bytes) -> None:
        self.relay.active = time.monotonic()
        peer = self.relay.peer(self)
        if peer is None:
            self.relay.pending += data  # only the client, before the upstream is connected
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.relay.peer(self)
        if peer is not None and not peer.transport.is_closing() and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer is None or peer.eof:
            self.relay.close()
        return True  # the other direction may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.close()

    # The peer's writes are buffered beyond its high-water mark: stop reading the other end.
    def pause_writing(self) -> None:
        peer = self.relay.peer(self)
        if peer is not None:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.relay.peer(self)
        if peer is not None:
            peer.transport.resume_reading()


def _stream(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """A TCP connection's transport. Not an isinstance check: uvloop's transports implement
    asyncio.Transport's methods without deriving from it."""
    return cast(asyncio.Transport, transport)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("citygate: fast-path relay failed", exc_info=task.exception())
