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
from embedded_page import IFRAME, PAGE_URL, PIXEL, SCRIPT, embed_denials
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


def test_without_a_dialog_free_sign_in_the_recorder_sees_the_proxy_challenge(start, browser_for):
    proxy, _ = start({})
    browser = browser_for(proxy)

    browser.open("https://www.facebook.com/")

    assert [(c.source, c.scheme, c.realm) for c in browser.auth_challenges] == [
        ("Proxy", "basic", "citygate")
    ]


def test_the_recorder_sees_the_challenges_of_embeds_too(start, browser_for):
    # What the issue saw: without a dialog-free sign-in, each embed's CONNECT asks for credentials.
    proxy, _ = start({})
    browser = browser_for(proxy)

    load = browser.open(PAGE_URL)

    assert load.loaded and load.status == 200
    # Chromium may hold requests waiting for the same proxy's credentials behind one challenge,
    # so not every embed gets its own.
    challenged = {challenge.url.split("/")[2] for challenge in browser.auth_challenges}
    assert challenged
    assert challenged <= {"www.youtube.com", "connect.facebook.net", "www.facebook.com"}
    assert {challenge.source for challenge in browser.auth_challenges} == {"Proxy"}
