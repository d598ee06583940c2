"""Keeping the proxy's memory flat under sustained load.

mitmproxy keeps no flows in `citygate run` (no view addon), but two things still grow with the
traffic of decrypted connections (plain HTTP, and tunnels citygate decrypts to check a path or
show a block page):

- a body is buffered whole before it is forwarded, unless it is streamed: `citygate run` sets
  mitmproxy's `stream_large_bodies` (STREAM_LARGE_BODIES), so a 1 GiB download costs 1 MiB;
- every WebSocket (and raw TCP/UDP) message of a decrypted connection is appended to the flow
  and kept until the connection closes (mitmproxy declined a cap: a long-lived chat socket
  grows without bound). `MemoryGuard` keeps only the message being handled, which is all any
  addon may look at in `websocket_message`.
"""

from __future__ import annotations

from mitmproxy import http, tcp, udp

#: mitmproxy's `stream_large_bodies` for `citygate run` (`--set stream_large_bodies=...` overrides).
STREAM_LARGE_BODIES = "1m"

#: Messages kept per connection: the one being handled in this hook.
KEEP_MESSAGES = 1


class MemoryGuard:
    """Drop WebSocket, TCP and UDP messages once every addon has seen them.

    Add it last: the hook runs for each addon in order, and messages are trimmed only after the
    earlier addons have handled the newest one (which stays in place, so that `messages[-1]`
    keeps working for them and for mitmproxy, which forwards it after the hook).
    """

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is not None:
            _trim(flow.websocket.messages)

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        _trim(flow.messages)

    def udp_message(self, flow: udp.UDPFlow) -> None:
        _trim(flow.messages)


def _trim[M](messages: list[M]) -> None:
    if len(messages) > KEEP_MESSAGES:
        del messages[:-KEEP_MESSAGES]
