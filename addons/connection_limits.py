"""Closing client connections that hold a file descriptor without using it.

mitmproxy closes a connection only after `tcp_timeout` (10 min) without a byte in either
direction, so a client that opens connections and sends nothing, or trickles a request head a
byte at a time (slowloris), keeps them as long as it likes; enough of them exhaust the proxy's
file descriptors. `ConnectionLimits` adds three rules, each counted in
`citygate_connections_closed_total{reason}`:

- header_timeout: a connection must send a whole request head within
  `citygate_header_timeout` seconds of opening, and a CONNECT tunnel its whole start (the
  ClientHello or request head the gate waits for) within as long after the CONNECT;
- idle_timeout: a connection on which citygate reads HTTP (plain HTTP, or a tunnel it
  decrypted) is closed once `citygate_idle_timeout` seconds pass after its last response without
  a new whole request head (so a head trickled on a kept-alive connection gets this long, not
  the header timeout: which bytes arrive between requests is not visible to an addon);
- client_limit: a client address may hold at most `citygate_max_client_connections` connections
  to this process (its file descriptors are what the limit protects), the tunnels the fast path
  relays included; the excess is closed as soon as it is accepted, before a byte is read.

A tunnel relayed without decryption, a WebSocket and a request waiting for its response are
never cut by these rules: what they carry is not visible (a long poll inside a tunnel can be
silent for minutes), so they keep mitmproxy's `tcp_timeout`.

Ordinary traffic pays a few dictionary operations per request. Deadlines are not timers: each
rule keeps its connections in a dict in the order they started waiting, which is the order
their deadlines fall due, and one task on the event loop closes the overdue ones at the front
once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import layer
from mitmproxy.proxy.server import ConnectionHandler

from citygate.proxy.metrics.definitions import CONNECTION_CLOSE_REASONS

log = logging.getLogger("citygate")

HEADER_TIMEOUT_OPTION = "citygate_header_timeout"
IDLE_TIMEOUT_OPTION = "citygate_idle_timeout"
CLIENT_LIMIT_OPTION = "citygate_max_client_connections"
_OPTIONS = (HEADER_TIMEOUT_OPTION, IDLE_TIMEOUT_OPTION, CLIENT_LIMIT_OPTION)

# Between Apache's default (mod_reqtimeout: 20 s, up to 40 s while bytes keep coming) and
# nginx's (client_header_timeout: 60 s): ample for a head over a slow mobile link.
HEADER_TIMEOUT = 30
# Squid's client_idle_pconn_timeout. A browser that finds its kept-alive connection closed opens
# another (and sends the request again if the close raced it): a shorter wait costs handshakes.
IDLE_TIMEOUT = 120
# Chrome opens at most 32 connections to one proxy: room for a NAT'd office of eight browsers
# behind one address, per proxy process (whose file descriptors the limit protects).
CLIENT_LIMIT = 256

HEADER, IDLE, LIMIT = CONNECTION_CLOSE_REASONS

# How often overdue connections are looked for: one is closed at most this late.
SWEEP_SECONDS = 1.0

_IN_FLIGHT = "citygate.limits.in_flight"

#: Told how many connections were closed, and why (the metrics addon counts them).
Observer = Callable[[str, int], None]


class ConnectionLimits:
    """The three rules. Add it before the gate, so that a request head ends the header timeout
    as it arrives, not once the gate has decided (a directory lookup can take seconds), and its
    `after_gate` after the gate, which alone knows when a tunnel's start is whole."""

    def __init__(self) -> None:
        self.observer: Observer | None = None
        self.after_gate = TunnelStartDecided(self)
        self.header_timeout = HEADER_TIMEOUT
        self.idle_timeout = IDLE_TIMEOUT
        self.client_limit = CLIENT_LIMIT
        # Every connection admitted: client id -> client address.
        self._clients: dict[str, str] = {}
        self._per_address: Counter[str] = Counter()
        self._open = 0
        # Waiting for a request head (or a tunnel's start), and idle after a response: client id
        # -> when the wait began. Insertion order is that order, so the overdue are at the front.
        self._heads: dict[str, float] = {}
        self._idle: dict[str, float] = {}
        # Requests read and not yet answered, per connection (several in an HTTP/2 tunnel).
        self._in_flight: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()  # by client address, since the last sweep
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def open_connections(self) -> int:
        """Client connections open now: mitmproxy's and the fast path's. An int, not a sum over
        the addresses: the metrics read it from their own thread."""
        return self._open

    # --- lifecycle ------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            HEADER_TIMEOUT_OPTION,
            int,
            HEADER_TIMEOUT,
            "Seconds a client connection may take to send a whole request head, and a CONNECT "
            "tunnel its first bytes, before it is closed; 0: no limit.",
        )
        loader.add_option(
            IDLE_TIMEOUT_OPTION,
            int,
            IDLE_TIMEOUT,
            "Seconds a kept-alive client connection may wait for its next request before it is "
            "closed (tunnels relayed undecrypted keep tcp_timeout); 0: no limit.",
        )
        loader.add_option(
            CLIENT_LIMIT_OPTION,
            int,
            CLIENT_LIMIT,
            "Most connections one client address may hold open to one proxy process; more are "
            "closed as they arrive. 0: no limit.",
        )

    def configure(self, updated: set[str]) -> None:
        if not updated.intersection(_OPTIONS):
            return
        values = {name: getattr(ctx.options, name) for name in _OPTIONS}
        negative = [name for name, value in values.items() if value < 0]
        if negative:
            raise exceptions.OptionsError(f"{', '.join(negative)}: must be 0 (no limit) or more")
        self.header_timeout = values[HEADER_TIMEOUT_OPTION]
        self.idle_timeout = values[IDLE_TIMEOUT_OPTION]
        self.client_limit = values[CLIENT_LIMIT_OPTION]

    def running(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def done(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    # --- connections (once each) ----------------------------------------------------------

    def client_connected(self, client: connection.Client) -> None:
        address = client.peername[0] if client.peername else ""
        if not self.admit(address):
            # mitmproxy closes a client with an error before reading from it.
            client.error = f"more than {self.client_limit} connections from {address}"
            return
        self._clients[client.id] = address
        if self.header_timeout:
            self._heads[client.id] = time.monotonic()

    def client_disconnected(self, client: connection.Client) -> None:
        cid = client.id
        address = self._clients.pop(cid, None)
        if address is None:
            return  # refused: never counted
        self.release(address)
        self._heads.pop(cid, None)
        self._idle.pop(cid, None)
        self._in_flight.pop(cid, None)

    def admit(self, address: str) -> bool:
        """Count a connection from `address` against the client limit; False, counted as refused,
        when the address holds the most it may. mitmproxy's connections are admitted by
        `client_connected`; the fast path's (addons/fast_path.py) call this and `release` itself."""
        if self.client_limit and self._per_address[address] >= self.client_limit:
            self._refused[address] += 1  # logged at the next sweep: one line a second at most
            if self.observer is not None:
                self.observer(LIMIT, 1)
            return False
        self._per_address[address] += 1
        self._open += 1
        return True

    def release(self, address: str) -> None:
        """The connection `admit` counted has closed (or was handed to mitmproxy, which admits it again)."""
        self._open -= 1
        left = self._per_address[address] - 1
        if left > 0:
            self._per_address[address] = left
        else:
            self._per_address.pop(address, None)

    # --- requests (a few dictionary operations each) --------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        cid = flow.client_conn.id
        if cid not in self._clients:
            return
        self._heads.pop(cid, None)
        self._idle.pop(cid, None)
        self._in_flight[cid] += 1
        flow.metadata[_IN_FLIGHT] = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._answered(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._answered(flow)

    def _answered(self, flow: http.HTTPFlow) -> None:
        # Once per request, whichever of `response` and `error` comes first.
        if flow.metadata.pop(_IN_FLIGHT, None) is None:
            return
        cid = flow.client_conn.id
        left = self._in_flight[cid] - 1
        if left > 0:
            self._in_flight[cid] = left
            return
        self._in_flight.pop(cid, None)
        if flow.response is not None and flow.response.status_code == 101:
            return  # a WebSocket (or another protocol) from now on: no requests to wait for
        if self.idle_timeout and cid in self._clients:
            self._idle[cid] = time.monotonic()

    # --- tunnels --------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # The CONNECT's head is whole; while the gate decides on it, no deadline runs.
        cid = flow.client_conn.id
        self._heads.pop(cid, None)
        self._idle.pop(cid, None)

    def http_connected(self, flow: http.HTTPFlow) -> None:
        cid = flow.client_conn.id
        if self.header_timeout and cid in self._clients:
            self._heads[cid] = time.monotonic()  # now the tunnel's start

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        # Refused (407, 403): the client may ask again on the same connection.
        cid = flow.client_conn.id
        if self.idle_timeout and cid in self._clients:
            self._idle[cid] = time.monotonic()

    def tunnel_started(self, client: connection.Client) -> None:
        """The gate chose what a tunnel carries. Relayed undecrypted, it is left to tcp_timeout;
        decrypted, the idle timeout applies once its first request has been answered."""
        self._heads.pop(client.id, None)

    # --- closing --------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                self.sweep(time.monotonic())
            except Exception:
                log.exception("citygate: could not close overdue client connections")

    def sweep(self, now: float) -> None:
        """Close every connection past its deadline; count and log what was closed."""
        closed = {
            HEADER: self._close_overdue(self._heads, self.header_timeout, now, HEADER),
            IDLE: self._close_overdue(self._idle, self.idle_timeout, now, IDLE),
        }
        if closed[HEADER]:
            log.info(
                "citygate: closed %d client connection(s) that sent no whole request head or tunnel start in %d s",
                closed[HEADER],
                self.header_timeout,
            )
        if closed[IDLE]:
            log.debug(
                "citygate: closed %d client connection(s) idle for %d s", closed[IDLE], self.idle_timeout
            )
        refused, self._refused = self._refused, Counter()
        for address, count in refused.most_common(3):
            log.warning(
                "citygate: refused %d connection(s) from %s: it holds %d, the most one client may (%s)",
                count,
                address,
                self.client_limit,
                CLIENT_LIMIT_OPTION,
            )
        observer = self.observer
        if observer is not None:
            for reason, count in closed.items():
                if count:
                    observer(reason, count)

    def _close_overdue(self, waiting: dict[str, float], timeout: int, now: float, reason: str) -> int:
        if not timeout:
            waiting.clear()  # the rule was turned off
            return 0
        overdue = []
        for cid, began in waiting.items():
            if now - began < timeout:
                break
            overdue.append(cid)
        closed = 0
        for cid in overdue:
            del waiting[cid]
            closed += _close(cid, reason)
        return closed


class TunnelStartDecided:
    """The part of `ConnectionLimits` that runs after the gate: a tunnel's start is whole once
    the gate has chosen its next layer (it leaves none while it waits for more bytes)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self._limits = limits

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        if nextlayer.layer is not None and nextlayer.context.server.address:
            self._limits.tunnel_started(nextlayer.context.client)


def _close(cid: str, reason: str) -> bool:
    server = ctx.master.addons.get("proxyserver")
    handler = server.connections.get(cid) if isinstance(server, Proxyserver) else None
    return handler is not None and close_connection(handler, reason)


def close_connection(handler: ConnectionHandler, reason: str) -> bool:
    """Close a client connection as mitmproxy's own inactivity timeout does: by cancelling the
    task that reads it, which closes it and every server connection it opened. False when it
    is closing already."""
    io = handler.transports.get(handler.client)
    if io is None or io.handler is None:
        return False
    io.handler.cancel(reason)
    return True
