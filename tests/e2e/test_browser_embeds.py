"""A real headless Chromium through a real citygate: an ordinary page that embeds social content.

An employee without a grant (mnguyen, signed in by a source-address mapping of 127.0.0.1, so no
dialog) opens an ordinary city page that embeds a YouTube frame, the Facebook SDK and a Facebook
tracking pixel. The page loads; each embed is refused with 403 in the form the browser can use
(a small panel in the frame, nothing for the script and the pixel); the access log records the
three denials; no credentials dialog opens. A top-level navigation to the social site gets the
full block page. Without the mapping, the browser's CONNECT meets a 407 and the recorder of auth
challenges (tests/browser.py) sees it: the "no dialog" assertions can fail.

The page is served by a local server; RedirectToUpstream sends the proxy's plain-HTTP upstream
connections there and its TLS ones to the test TLS upstream. Chromium trusts only the proxy CA's
key (mitmproxy signs every leaf with it) for the intercepted social tunnels.
"""

from __future__ import annotations

import pytest
from browser import Browser, spki_of
from demo_config import demo_config
from embedded_page import (
    COUNCIL_EMBED,
    COUNCIL_URL,
    IFRAME,
    PAGE_URL,
    PIXEL,
    SCRIPT,
    decisions,
    denials,
    embed_denials,
)
from harness import RedirectToUpstream

from citygate.addons.audit import AuditLog
from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate


@pytest.fixture
def start(proxy_runner_factory, page_server, tls_upstream, tmp_path):
    """start(identity) -> (proxy, log folder): citygate on the demo config with `identity:` set."""

    def start(identity: dict):
        config = demo_config(tmp_path, **({"identity": identity} if identity else {}))
        log_dir = tmp_path / "log"
        redirect = RedirectToUpstream(page_server, tls_upstream.address)
        proxy = proxy_runner_factory(
            [CityGate(), AuditLog(), DecisionLog(), redirect],
            {"citygate_config": str(config), "citygate_audit_directory": str(log_dir)},
        )
        return proxy, log_dir

    return start


@pytest.fixture
def browser_for():
    browsers: list[Browser] = []

    def launch(proxy) -> Browser:
        browser = Browser(proxy=proxy.address, trusted_spki=[spki_of(proxy.ca_pem)]).start()
        browsers.append(browser)
        return browser

    yield launch
    for browser in browsers:
        browser.close()


MNGUYEN_AT_THIS_DEVICE = {"source_addresses": [{"address": "127.0.0.1", "employee": "mnguyen"}]}


def test_a_page_with_social_embeds_loads_and_the_embeds_are_blocked_quietly(start, browser_for):
    proxy, log_dir = start(MNGUYEN_AT_THIS_DEVICE)
    browser = browser_for(proxy)

    load = browser.open(PAGE_URL)

    assert load.loaded, browser.log()
    assert load.status == 200
    assert "Summer events in our parks" in load.text
    assert browser.auth_challenges == []  # no credentials dialog
    assert browser.dialogs == []
    [frame] = load.responses_for(IFRAME)
    [script] = load.responses_for(SCRIPT)
    [pixel] = load.responses_for(PIXEL)
    assert (frame.status, script.status, pixel.status) == (403, 403, 403)
    assert frame.request_header("Sec-Fetch-Dest") == "iframe"
    panel = (browser.body(frame) or b"").decode()
    assert "Blocked by city policy: YouTube" in panel
    assert f'href="{IFRAME}" target="_blank"' in panel
    assert "How to request access" not in panel  # the panel, not the full page
    for embed in (script, pixel):
        assert embed.header("Content-Length") == "0"
        assert embed.header("Cache-Control") == "no-store"
        assert not browser.body(embed)
    # Each blocked embed is in the access log, as mnguyen, by source address.
    for record in embed_denials(log_dir):
        assert record["user.name"] == "mnguyen"
        assert record["citygate.identity_method"] == "source_ip"
        assert record["event.reason"] == "no_grant"
        assert record["http.response.status_code"] == 403


def test_a_top_level_navigation_to_the_social_site_gets_the_full_block_page(start, browser_for):
    proxy, _ = start(MNGUYEN_AT_THIS_DEVICE)
    browser = browser_for(proxy)

    load = browser.open("https://www.facebook.com/")

    assert load.loaded, browser.log()
    assert load.status == 403
    assert "Facebook is blocked on the City of Example network" in load.text
    assert "How to request access" in load.text
    assert browser.auth_challenges == []


def test_without_a_dialog_free_sign_in_a_top_level_navigation_asks_for_sign_in(start, browser_for):
    proxy, log_dir = start({})
    browser = browser_for(proxy)

    load = browser.open("https://www.facebook.com/CityOfExampleParks")

    # The navigation inside the social tunnel was sent to the proxy's sign-in page, whose 407
    # opened the one credentials dialog (cancelled here: the 407's page is shown).
    assert [(c.source, c.scheme, c.realm) for c in browser.auth_challenges] == [
        ("Proxy", "basic", "citygate")
    ]
    [challenge] = browser.auth_challenges
    assert challenge.url.startswith(
        "http://sign-in.citygate.invalid/sign-in?to=https%3A%2F%2Fwww.facebook.com"
    )
    assert load.status == 407 and "Sign in to continue to Facebook" in load.text
    assert "user name and password your browser asks for" in load.text
    # The navigation is in the access log twice, as refused for want of a sign-in: sent to the
    # sign-in page (302), and asked for credentials there (407), both about the page it wanted.
    records = [r for r in denials(log_dir, 2) if r["url.path"] == "/CityOfExampleParks"]
    assert sorted(r["http.response.status_code"] for r in records) == [302, 407]
    assert {r["event.reason"] for r in records} == {"credentials_required"}
    assert {r["url.domain"] for r in records} == {"www.facebook.com"}


def test_without_a_dialog_free_sign_in_embeds_are_blocked_quietly(start, browser_for):
    # What the issue saw: each embed's CONNECT asked for credentials, on a page that had
    # nothing to do with social media. Now the embeds are refused and nothing asks.
    proxy, log_dir = start({})
    browser = browser_for(proxy)

    load = browser.open(PAGE_URL)

    assert load.loaded and load.status == 200, browser.log()
    assert "Summer events in our parks" in load.text
    assert browser.auth_challenges == [] and browser.dialogs == []
    statuses = {url: [r.status for r in load.responses_for(url)] for url in (IFRAME, SCRIPT, PIXEL)}
    assert statuses == {IFRAME: [403], SCRIPT: [403], PIXEL: [403]}
    [frame] = load.responses_for(IFRAME)
    assert "Blocked by city policy: YouTube" in (browser.body(frame) or b"").decode()
    records = embed_denials(log_dir)
    for record in records:
        assert record["event.reason"] == "credentials_required"
        assert record["http.response.status_code"] == 403
        assert record["user.name"] is None


def test_the_city_s_own_embedded_video_plays_for_someone_not_signed_in(start, browser_for, tls_upstream):
    # city-2026-001 lets everyone see /embed/council-2026-11-18: no sign-in, no dialog.
    proxy, log_dir = start({})
    browser = browser_for(proxy)

    load = browser.open(COUNCIL_URL)

    assert load.loaded and load.status == 200, browser.log()
    assert browser.auth_challenges == [] and browser.dialogs == []
    [frame] = load.responses_for(COUNCIL_EMBED)
    assert frame.status == 200  # the test upstream's answer: allowed and forwarded
    [record] = [r for r in decisions(log_dir, 1) if r["url.path"] == "/embed/council-2026-11-18"]
    assert (record["event.type"], record["rule.id"], record["rule.category"], record["user.name"]) == (
        "allowed",
        "city-2026-001",
        "city",
        None,
    )
