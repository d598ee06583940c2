"""proxy/connect_head.py: the CONNECT heads the fast path takes, and everything it leaves to mitmproxy."""

from __future__ import annotations

import pytest

from citygate.proxy.connect_head import MAX_HEAD_BYTES, OTHER, WAIT, ConnectHead, read_connect

HEAD = b"CONNECT www.example.org:443 HTTP/1.1\r\nHost: www.example.org:443\r\nUser-Agent: t\r\n\r\n"


def test_a_connect_head_gives_its_authority_version_and_length():
    head = read_connect(HEAD + b"\x16\x03\x01")
    assert head == ConnectHead(
        "www.example.org:443", "www.example.org", 443, "HTTP/1.1", ("www.example.org:443",), len(HEAD)
    )


def test_every_prefix_of_a_head_waits_and_the_whole_gives_the_same_answer():
    for end in range(len(HEAD)):
        assert read_connect(HEAD[:end]) == WAIT, HEAD[:end]
    assert isinstance(read_connect(HEAD), ConnectHead)


def test_an_http_1_0_connect_is_answered_in_kind():
    head = read_connect(b"CONNECT 10.0.0.1:8443 HTTP/1.0\r\n\r\n")
    assert isinstance(head, ConnectHead)
    assert (head.host, head.port, head.http_version) == ("10.0.0.1", 8443, "HTTP/1.0")


@pytest.mark.parametrize(
    "data",
    [
        b"GET http://www.example.org/ HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 prior knowledge
        b"\x16\x03\x01\x00\x05hello",  # TLS straight to the proxy
        b"CONNECT www.example.org HTTP/1.1\r\nHost: www.example.org\r\n\r\n",  # no port
        b"CONNECT www.example.org:0 HTTP/1.1\r\nHost: www.example.org:0\r\n\r\n",
        b"CONNECT www.example.org:99999 HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
        b"CONNECT user@www.example.org:443 HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
        b"CONNECT www.example.org:443 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Host fields
        b"CONNECT www.example.org:443 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",  # a body
        b"CONNECT www.example.org:443 HTTP/1.1\r\nX: a\r\n b\r\n\r\n",  # obsolete line folding
        b"CONNECT www.example.org:443 HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES,  # too long
    ],
)
def test_anything_but_a_plain_connect_head_is_left_to_mitmproxy(data: bytes):
    assert read_connect(data) == OTHER


def test_a_head_that_cannot_be_a_connect_is_left_to_mitmproxy_before_it_is_whole():
    # Plain HTTP goes to mitmproxy at its first byte that rules a CONNECT out, not after its head.
    assert read_connect(b"G") == OTHER
    assert read_connect(b"CONNEC") == WAIT
    assert read_connect(b"CONNECTX") == OTHER


def test_a_head_with_bare_line_feeds_is_left_to_mitmproxy():
    # llhttp is strict where mitmproxy is lenient: mitmproxy, not the fast path, decides these.
    assert read_connect(b"CONNECT www.example.org:443 HTTP/1.1\nHost: www.example.org:443\n\n") == OTHER
