"""How many bytes of a response body passed through the proxy, streamed or not.

The access log and the metrics both report it. A body larger than `stream_large_bodies` is
forwarded as it arrives and never lands in `raw_content`, so it is counted as it passes: one
counter per flow, however many addons want the figure.
"""

from __future__ import annotations

from collections.abc import Iterable

from mitmproxy import http

_STREAMED = "citygate.streamed_bytes"


def count_streamed_body(flow: http.HTTPFlow) -> None:
    """From `responseheaders`: count a streamed response body's bytes as they pass (once per flow)."""
    response = flow.response
    if response is None or not response.stream or _STREAMED in flow.metadata:
        return
    inner = response.stream
    flow.metadata[_STREAMED] = 0

    def count(chunk: bytes) -> Iterable[bytes] | bytes:
        flow.metadata[_STREAMED] += len(chunk)
        return inner(chunk) if callable(inner) else chunk

    response.stream = count


def response_body_bytes(flow: http.HTTPFlow) -> int | None:
    """The response body's size: held whole, or counted while streamed; None when unknown."""
    response = flow.response
    if response is not None and response.raw_content is not None:
        return len(response.raw_content)
    return flow.metadata.get(_STREAMED)


def message_body_bytes(message: http.Message | None) -> int | None:
    """A request's or response's body size: held whole, or as its Content-Length announces."""
    if message is None:
        return None
    if message.raw_content is not None:
        return len(message.raw_content)
    length = message.headers.get("content-length", "")
    return int(length) if length.isdigit() else None
