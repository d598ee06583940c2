"""A graceful stop (SIGTERM, SIGINT): no new connections, requests under way answered, then exit.

mitmproxy's own shutdown runs the `done` hooks at once, and the access log closed while
connections were still being served: a request decided in that moment (a 407, a denial) was
answered with no record written. `GracefulStop.stop` runs the stop in this order instead:

1. the listening sockets are closed: no new connection is accepted;
2. requests under way get up to `citygate_stop_timeout` seconds to be answered (each one's record
   is queued before its answer is sent; new requests on open connections are served likewise,
   and every answer says `Connection: close`, so that HTTP/1 clients leave);
3. every client connection still open is closed, so that no answer can follow;
4. only then does mitmproxy shut down, and the access log writes every queued record before the
   process exits.

A second signal stops at once, as mitmproxy would.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.server import ConnectionHandler

from citygate.addons.connection_limits import close_connection
from citygate.proxy.runtime.workers import STOP_GRACE

log = logging.getLogger("citygate")

# How long closed connections get to finish their handlers once they were told to close.
CLOSE_WAIT_SECONDS = 2.0
# Under `citygate run --workers N` the supervisor kills a worker STOP_GRACE (10) seconds after
# its SIGTERM: the wait, the closing of connections and the last write of the log fit in that.
STOP_TIMEOUT_SECONDS = STOP_GRACE - CLOSE_WAIT_SECONDS - 1.0
POLL_SECONDS = 0.05


class GracefulStop:
    """Add it first: a request counts as under way from before any other addon sees it."""

    def __init__(self) -> None:
        self._under_way: set[http.HTTPFlow] = set()
        self._stopping: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "citygate_stop_timeout",
            float,
            STOP_TIMEOUT_SECONDS,
            "Seconds a graceful stop (SIGTERM) gives requests under way to be answered before "
            "their connections are closed.",
        )

    # --- requests under way ---------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._under_way.add(flow)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._under_way.add(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._under_way.discard(flow)
        if self._stopping is not None and flow.response is not None:
            flow.response.headers["Connection"] = "close"

    def error(self, flow: http.HTTPFlow) -> None:
        self._under_way.discard(flow)

    def http_connected(self, flow: http.HTTPFlow) -> None:
        self._under_way.discard(flow)

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        self._under_way.discard(flow)

    def _busy(self) -> int:
        # A flow whose connection ended without a hook saying so is not waited for.
        self._under_way = {flow for flow in self._under_way if flow.live and flow.error is None}
        return len(self._under_way)

    # --- stopping -------------------------------------------------------------------------

    def stop(self) -> None:
        """The signal handler: start the graceful stop, or at a second signal, stop now."""
        if self._stopping is not None:
            log.warning("citygate: stopping now, without waiting for requests under way")
            ctx.master.shutdown()
            return
        log.info("citygate: stopping: no new connections; answering the requests under way")
        self._stopping = asyncio.get_running_loop().create_task(self._stop())

    async def _stop(self) -> None:
        loop = asyncio.get_running_loop()
        proxyserver = ctx.master.addons.get("proxyserver")
        try:
            await proxyserver.servers.update([])
            deadline = loop.time() + ctx.options.citygate_stop_timeout
            # Twice idle in a row: an answer is sent just after its last hook has run.
            idle = 0
            while idle < 2 and loop.time() < deadline:
                idle = idle + 1 if self._busy() == 0 else 0
                await asyncio.sleep(POLL_SECONDS)
            if self._busy():
                log.warning(
                    "citygate: %d request(s) still under way after %.1f s; closing their connections",
                    self._busy(),
                    ctx.options.citygate_stop_timeout,
                )
            await _close_connections(proxyserver.connections)
        finally:
            ctx.master.shutdown()


async def _close_connections(connections: dict[Any, ConnectionHandler]) -> None:
    """Close every client connection as mitmproxy's own idle timeout does, and wait for them."""
    for handler in list(connections.values()):
        close_connection(handler, "citygate is stopping")
    deadline = asyncio.get_running_loop().time() + CLOSE_WAIT_SECONDS
    while connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(POLL_SECONDS)
