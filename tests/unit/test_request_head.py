"""Which request heads are refused with 400 before anything is decided (proxy/request_head.py)."""

from __future__ import annotations

import pytest

from citygate.proxy.request_head import head_problem, host_problem


def problem(
    *,
    host_fields=("www.example.org",),
    authority="",
    method="GET",
    scheme="http",
    http_version="HTTP/1.1",
    field_values=(b"www.example.org",),
):
    return head_problem(
        method=method,
        scheme=scheme,
        http_version=http_version,
        authority=authority,
        host_fields=list(host_fields),
        field_values=list(field_values),
    )


@pytest.mark.parametrize(
    "value",
    [
        "www.example.org",
        "www.example.org:8080",
        "WWW.Example.ORG.",
        "127.0.0.1",
        "[2001:db8::1]:443",
        "xn--bcher-kva.example",
        "under_score.example",
        "www.example.org:",
    ],
)
def test_a_plain_host_is_accepted(value):
    assert host_problem(value) is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("user@flic.kr", "userinfo"),
        ("127.0.0.1:18081@bsky.app", "userinfo after a port"),
        ("threads.net\x00", "NUL"),
        ("pinterest%2ede", "percent-encoding"),
        ("www.facebook.com www.example.org", "space"),
        ("www.example.org:https", "port not a number"),
        ("www.example.org:99999", "port out of range"),
        ("", "empty"),
        ("bücher.example", "not ASCII"),
        ("[::1", "unclosed bracket"),
    ],
)
def test_an_ambiguous_host_is_refused(value, why):
    found = host_problem(value)
    assert found is not None, why
    assert "Host header" in found


def test_the_value_is_shown_safely_and_shortened():
    found = host_problem("evil\x00\x1b[31m" + "a" * 200)
    assert found is not None
    assert "\x00" not in found and "\x1b" not in found
    assert len(found) < 200


def test_a_well_formed_head_has_no_problem():
    assert problem() is None
    assert problem(authority="www.example.org:80") is None
    assert problem(authority="WWW.EXAMPLE.ORG", host_fields=["www.example.org:80"]) is None
    assert problem(scheme="https", authority="www.example.org:443", host_fields=["www.example.org"]) is None


def test_two_host_headers_are_refused_even_when_equal():
    assert "2 Host headers" in problem(host_fields=["www.example.org", "www.example.org"])
    assert "2 Host headers" in problem(host_fields=["www.example.org", "www.facebook.com"])


def test_a_folded_line_or_a_nul_in_any_field_is_refused():
    assert "line break" in problem(field_values=[b"www.example.org", b"b\r\n Host: www.facebook.com"])
    assert "line break" in problem(field_values=[b"a\x00b"])


def test_an_absolute_target_that_disagrees_with_host_is_refused():
    found = problem(authority="www.example.org", host_fields=["www.facebook.com"])
    assert found is not None and "www.facebook.com" in found
    assert problem(authority="www.example.org:8080", host_fields=["www.example.org:8081"]) is not None
    assert problem(authority="www.example.org", host_fields=["www.example.org:8080"]) is not None
    assert problem(authority="user@www.example.org", host_fields=["www.example.org"]) is not None


def test_a_host_without_a_port_agrees_with_any_target_port():
    # Common in clients, and harmless: mitmproxy connects to the target's port either way.
    assert problem(authority="www.example.org:8080", host_fields=["www.example.org"]) is None
    assert problem(scheme="https", authority="www.example.org:8443", host_fields=["WWW.example.org"]) is None


def test_connect_compares_no_host_but_still_refuses_duplicates():
    assert problem(method="CONNECT", authority="www.example.org:443", host_fields=["other:443"]) is None
    assert problem(method="CONNECT", authority="www.example.org:443", host_fields=["a", "b"]) is not None


def test_http11_needs_a_host_and_http10_does_not():
    assert "without a Host" in problem(host_fields=[])
    assert problem(host_fields=[], http_version="HTTP/1.0") is None
    assert problem(host_fields=[], authority="www.example.org:80") is None
