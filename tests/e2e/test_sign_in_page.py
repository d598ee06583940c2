"""Sign-in by navigation, on the wire, with real curl: what a browser's CONNECT without credentials
gets, what the requests inside its tunnel get, and the proxy's own sign-in page.

curl stands in for a browser by sending a browser's `User-Agent` on its CONNECT
(`--proxy-header`) and the browser's `Sec-Fetch-*` fields inside the tunnel; the real browser
is in test_browser_embeds.py and test_browser_negotiate.py. The directory is the demo's
(jlee has a Facebook grant; bjones is locked).
"""

from __future__ import annotations

import urllib.parse

import pytest
from demo_config import demo_config
from harness import curl

from citygate.addons.audit import AuditLog
from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate
from citygate.proxy.identity.sign_in_page import DEFAULT_SIGN_IN_HOST, sign_in_location

PAGE = "https://www.facebook.com/CityOfExampleParks"
BROWSER = ("--proxy-header", "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36")
NAVIGATION = ("-H", "Sec-Fetch-Dest: document", "-H", "Sec-Fetch-Mode: navigate")
SCRIPT = ("-H", "Sec-Fetch-Dest: script", "-H", "Sec-Fetch-Mode: no-cors")


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon, tmp_path):
    config = demo_config(tmp_path)
    return proxy_runner_factory(
        [CityGate(), AuditLog(), DecisionLog(), redirect_addon],
        {"citygate_config": str(config), "citygate_audit_directory": str(tmp_path / "log")},
    )


def sign_in(target: str) -> str:
    return sign_in_location(DEFAULT_SIGN_IN_HOST, target)


def test_a_browser_s_navigation_in_a_tunnel_without_sign_in_goes_to_the_sign_in_page(proxy):
    # --http2: the tunnel opened for signing in speaks HTTP/1.1 all the same, so it can be closed.
    result = curl(proxy, PAGE, extra_args=[*BROWSER, *NAVIGATION, "--http2"])

    assert result.connect_status == 200  # no 407: the browser would ask for a password
    assert result.status == 302
    assert result.headers["location"] == sign_in(PAGE)
    assert result.headers["connection"] == "close"
    assert result.write_out["http_version"] == "1.1"
    assert any(
        "auth_required reason=credentials_required site=facebook host=www.facebook.com stage=request" in line
        for line in proxy.log_lines()
    )


def test_a_browser_s_embed_in_a_tunnel_without_sign_in_is_refused_quietly(proxy):
    result = curl(proxy, "https://connect.facebook.net/en_US/sdk.js", extra_args=[*BROWSER, *SCRIPT])

    assert (result.connect_status, result.status, result.body) == (200, 403, "")
    assert result.headers["connection"] == "close"
    assert "proxy-authenticate" not in result.headers


def test_clients_that_are_not_browsers_keep_the_407_at_the_connect(proxy):
    result = curl(proxy, PAGE, extra_args=[*NAVIGATION])

    assert result.connect_status == 407
    assert 'Basic realm="citygate"' in result.header_blocks[0]


def test_the_sign_in_page_asks_for_credentials_and_says_where_it_leads(proxy):
    target = PAGE + "/<script>alert(1)</script>"
    result = curl(proxy, sign_in(target))

    assert result.status == 407
    assert result.headers["proxy-authenticate"] == 'Basic realm="citygate"'
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert "Sign in to continue to Facebook" in result.body
    assert "<script>alert" not in result.body and "&lt;script&gt;alert(1)&lt;/script&gt;" in result.body
    assert "user name and password your browser asks for" in result.body


def test_once_signed_in_the_browser_goes_back_and_its_next_connects_get_the_407(proxy):
    signed_in = curl(proxy, sign_in(PAGE), proxy_user="jlee:jlee-pass")

    assert signed_in.status == 302
    assert signed_in.headers["location"] == PAGE
    assert any("jlee signed in (basic) from 127.0.0.1" in line for line in proxy.log_lines())
    # The same address's browser CONNECT without credentials: now a 407 it answers silently
    # with the password it keeps for the proxy (a browser signed in with Kerberos, with its ticket).
    again = curl(proxy, PAGE, extra_args=[*BROWSER, *NAVIGATION])
    assert again.connect_status == 407


def test_a_wrong_password_on_the_sign_in_page_is_asked_again_saying_so(proxy):
    result = curl(proxy, sign_in(PAGE), proxy_user="jlee:wrong")

    assert result.status == 407
    assert "the password was not accepted" in result.body
    assert "wrong" not in result.body


def test_an_account_that_cannot_sign_in_gets_its_page_on_the_sign_in_page(proxy):
    result = curl(proxy, sign_in(PAGE), proxy_user="bjones:bjones-pass")

    assert result.status == 403
    assert "<dd>employee_disabled</dd>" in result.body  # a permanent ppolicy lock: disabled
    assert "service desk" in result.body
    assert PAGE in result.body  # the page it is about, not the sign-in page


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (sign_in("https://www.example.org/"), "the page to return to is not a social media site"),
        (sign_in("javascript:alert(1)"), "must be an http or https URL"),
        (f"http://{DEFAULT_SIGN_IN_HOST}/sign-in", "must name one page to return to"),
        (
            f"http://{DEFAULT_SIGN_IN_HOST}/other?" + urllib.parse.urlencode({"to": PAGE}),
            "there is no page at /other; the sign-in page is /sign-in",
        ),
    ],
)
def test_the_sign_in_page_sends_nobody_anywhere_but_back_to_a_social_page(proxy, url, words):
    result = curl(proxy, url, proxy_user="jlee:jlee-pass")

    assert result.status == 400
    assert "location" not in result.headers
    assert words in result.body and "Open the social media page again" in result.body


def test_a_browser_connect_with_a_wrong_password_is_asked_again_not_let_into_a_tunnel(proxy):
    result = curl(proxy, PAGE, proxy_user="jlee:wrong", extra_args=[*BROWSER, *NAVIGATION])

    assert result.connect_status == 407
    assert any(
        "reason=credentials_invalid" in line and 'detail="the password was not accepted' in line
        for line in proxy.log_lines()
    )
