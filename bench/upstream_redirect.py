"""Bench-only mitmproxy script: every upstream connection goes to 127.0.0.1, port unchanged.

Loaded with `-s` into bare mitmdump and with `--set scripts=` into `citygate run`, so both
proxies do the same work and neither resolves a name: the benchmark clients name real hosts
(www.example.org, www.facebook.com) with the local nginx's ports, the proxies decide on those
names, and this script only swaps the address right before a connection is opened.

- Plain HTTP: `flow.request.host` is rewritten in `request`, which runs after every addon's
  `requestheaders` (citygate decides there), and keeps mitmproxy's per-address connection reuse.
  Requests with streamed bodies are not handled: the benchmarks send GETs only.
- Tunnels: `server_connect` rewrites the address and `server_connected` puts the name back, so
  requests inside an intercepted tunnel keep matching their connection (see tests/e2e/harness.py).

Nothing is configured through options (a script's options do not exist yet when `citygate run`
applies `--set`): CITYGATE_BENCH_UPSTREAM_HOST may name another address than 127.0.0.1.
"""

from __future__ import annotations

import os

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks

UPSTREAM_HOST = os.environ.get("CITYGATE_BENCH_UPSTREAM_HOST", "127.0.0.1")


class UpstreamRedirect:
    def __init__(self) -> None:
        # Server connection id -> name, between server_connect and server_connected.
        self._pending: dict[str, tuple[str, int]] = {}

    def running(self) -> None:
        # citygate's fast path (citygate_fast_path) opens ordinary tunnels itself, without
        # `server_connect`: it is given the same swap.
        fast = ctx.master.addons.get("fastpath")
        if fast is not None:
            fast.upstream = lambda address: (UPSTREAM_HOST, address[1])

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and flow.request.scheme == "http":
            # Not the .host setter: it would rewrite the Host header too.
            flow.request.data.host = UPSTREAM_HOST

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None or address[0] == UPSTREAM_HOST:
            return
        self._pending[data.server.id] = (address[0], address[1])
        data.server.address = (UPSTREAM_HOST, address[1])

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)

    def _restore(self, data: server_hooks.ServerConnectionHookData) -> None:
        original = self._pending.pop(data.server.id, None)
        if original is not None:
            # Server.__setattr__ refuses to change an open connection's address; only the label
            # changes back, the socket stays connected to 127.0.0.1.
            object.__setattr__(data.server, "address", original)


addons = [UpstreamRedirect()]
