"""Body sizes for the access log and the metrics: streamed bodies are counted as they pass, once."""

from __future__ import annotations

from mitmproxy.test import tflow

from citygate.addons.body_bytes import count_streamed_body, message_body_bytes, response_body_bytes


def test_a_streamed_body_is_counted_once_however_many_addons_ask():
    flow = tflow.tflow(resp=True)
    flow.response.raw_content = None  # type: ignore[union-attr]
    flow.response.stream = True  # type: ignore[union-attr]

    count_streamed_body(flow)  # the access log
    count_streamed_body(flow)  # the metrics: the same counter, not a second wrapper
    passed = [flow.response.stream(chunk) for chunk in (b"abc", b"defgh", b"")]  # type: ignore[union-attr,operator]

    assert passed == [b"abc", b"defgh", b""]
    assert response_body_bytes(flow) == 8


def test_a_stream_function_keeps_working_under_the_counter():
    flow = tflow.tflow(resp=True)
    flow.response.raw_content = None  # type: ignore[union-attr]
    flow.response.stream = lambda chunk: chunk.upper()  # type: ignore[union-attr]

    count_streamed_body(flow)

    assert flow.response.stream(b"abc") == b"ABC"  # type: ignore[union-attr,operator]
    assert response_body_bytes(flow) == 3


def test_a_held_body_is_measured_and_an_unstreamed_one_is_not_wrapped():
    flow = tflow.tflow(resp=True)
    count_streamed_body(flow)

    assert response_body_bytes(flow) == len(flow.response.raw_content)  # type: ignore[union-attr,arg-type]
    assert not callable(flow.response.stream)  # type: ignore[union-attr]
    request = tflow.tflow().request
    request.raw_content = None
    request.headers["content-length"] = "42"
    assert message_body_bytes(request) == 42
    assert message_body_bytes(None) is None
