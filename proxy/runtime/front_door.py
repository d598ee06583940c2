"""Where a listening socket's connections go first: mitmproxy, or a front protocol before it.

mitmproxy serves each TCP connection with `asyncio.start_server(instance.handle_stream, ...)`:
a StreamReader and StreamWriter per connection, then its whole connection machinery. A front
protocol (the fast path, addons/fast_path.py) is installed here to accept the connection first;
it is given `handle_stream` to hand a connection over to mitmproxy. Both ways of listening go
through `start_server`: mitmproxy's own `listen` (replaced by `install`) and the inherited
sockets of `citygate run --workers N` (workers.serve_inherited).

Only regular mode (an explicit HTTP proxy) has a front: other modes start differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mitmproxy.proxy.mode_servers import AsyncioServerInstance
    from mitmproxy.proxy.mode_specs import ProxyMode

#: What mitmproxy's servers call for each connection: handle_stream(reader, writer).
HandleStream = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
#: Makes the protocol that accepts a connection first, given where to hand it over.
Front = Callable[[HandleStream], asyncio.Protocol]

_front: Front | None = None


def set_front(front: Front | None) -> None:
    """Serve listeners started from now on through `front` (None: mitmproxy's streams directly)."""
    global _front
    _front = front


async def start_server(instance: AsyncioServerInstance[ProxyMode], **where: Any) -> asyncio.Server:
    """A server for `instance` on `where` (host and port, or sock): through the front if one is set."""
    from mitmproxy.proxy.mode_specs import RegularMode

    front = _front
    handle = instance.handle_stream
    if front is None or not isinstance(instance.mode, RegularMode):
        return await asyncio.start_server(handle, **where)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: front(handle), **where)


def install() -> None:
    """Route mitmproxy's own TCP listening through `start_server` (once; the workers' already is)."""
    from mitmproxy.net.free_port import get_free_port
    from mitmproxy.proxy import mode_servers

    original = mode_servers.AsyncioServerInstance.listen
    if original.__module__ != mode_servers.__name__:
        return  # replaced already: by an earlier install, or by serve_inherited (which calls start_server)

    async def listen(self: AsyncioServerInstance[ProxyMode], host: str, port: int) -> Any:
        if self.mode.transport_protocol != "tcp":
            return await original(self, host, port)
        # As mitmproxy does: a port of 0 becomes one free port, so IPv4 and IPv6 share it.
        return [await start_server(self, host=host, port=port or get_free_port())]

    # As in workers.serve_inherited: mypy rejects any assignment to a method.
    mode_servers.AsyncioServerInstance.listen = listen  # type: ignore[method-assign, assignment]
