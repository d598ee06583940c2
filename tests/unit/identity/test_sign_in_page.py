"""Signing a browser in by navigation: who counts as a browser, the sign-in link, where it may return."""

from __future__ import annotations

import urllib.parse

import pytest

from citygate.proxy.identity.sign_in_page import (
    DEFAULT_SIGN_IN_HOST,
    Target,
    TargetProblem,
    is_browser,
    read_target,
    sign_in_location,
)

CHROMIUM = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0"


@pytest.mark.parametrize(
    ("agents", "browser"),
    [
        ([CHROMIUM], True),
        ([FIREFOX], True),
        (["curl/8.14.1"], False),
        (["python-requests/2.32"], False),
        ([], False),  # urllib3 and most SDKs send no User-Agent on a CONNECT
        ([CHROMIUM, "curl/8.14.1"], False),  # two values: not something a browser sends
        (["mozilla/5.0"], False),  # the token is case-sensitive in every browser
    ],
)
def test_a_browser_is_a_single_mozilla_user_agent(agents, browser):
    assert is_browser(agents) is browser


def test_the_sign_in_link_carries_the_page_to_return_to():
    target = "https://www.facebook.com/CityOfExampleParks?ref=a&b=c"
    parts = urllib.parse.urlsplit(sign_in_location(DEFAULT_SIGN_IN_HOST, target))
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "sign-in.citygate.invalid", "/sign-in")
    assert urllib.parse.parse_qs(parts.query) == {"to": [target]}


def test_a_clean_target_round_trips_with_its_host_and_path():
    target = "https://WWW.Facebook.com:443/CityOfExampleParks/events?x=1"
    query = urllib.parse.urlsplit(sign_in_location("sign-in.city.example", target)).query
    assert read_target(urllib.parse.parse_qs(query)["to"]) == Target(
        target, "www.facebook.com", "/CityOfExampleParks/events?x=1"
    )
    assert read_target(["http://flic.kr"]) == Target("http://flic.kr", "flic.kr", "/")


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ([], "one page to return to"),
        (["https://a.example/", "https://b.example/"], "one page to return to"),
        (["javascript:alert(1)"], "http or https URL"),
        (["//www.facebook.com/"], "http or https URL"),
        (["https://user:pw@www.facebook.com/"], "no user name"),
        (["https://www.facebook.com/\r\nSet-Cookie: a=b"], "control characters"),
        (["https://www.facebook.com/a b"], "spaces"),
        (["https://www.facebook.com:99999/"], "not a URL"),
        (["https://[::1/"], "not a URL"),
    ],
)
def test_a_target_that_is_not_one_clean_web_address_is_refused(values, words):
    with pytest.raises(TargetProblem, match=words):
        read_target(values)
