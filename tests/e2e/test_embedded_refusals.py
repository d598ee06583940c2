"""A refusal's form follows `Sec-Fetch-Dest`, with the same decision and records (addons/embeds.py).

curl through a real citygate on the demo config, as mnguyen (Parks, no grant), sending the fetch
metadata a browser would send for a page, a frame, a script, a pixel or a fetch. The browser's own
view of the same answers is in test_browser_embeds.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import curl

from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "citygate.yaml"
MNGUYEN = "mnguyen:mnguyen-pass"  # Parks; no grant
JLEE = "jlee:jlee-pass"  # Parks; facebook limited to /CityOfExampleParks


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon):
    return proxy_runner_factory(
        [CityGate(), DecisionLog(), redirect_addon], {"citygate_config": str(DEMO_CONFIG)}
    )


def fetch(proxy, url: str, dest: str | None, mode: str | None, user: str = MNGUYEN):
    headers = [f"Sec-Fetch-Dest: {dest}"] if dest else []
    headers += [f"Sec-Fetch-Mode: {mode}"] if mode else []
    return curl(proxy, url, proxy_user=user, extra_args=[arg for h in headers for arg in ("-H", h)])


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(
    ("dest", "mode"), [(None, None), ("document", "navigate")], ids=["no-fetch-metadata", "document"]
)
def test_a_navigation_or_an_old_client_gets_the_full_block_page(proxy, plain_upstream, scheme, dest, mode):
    result = fetch(proxy, f"{scheme}://www.facebook.com/groups", dest, mode)

    assert result.status == 403
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert result.headers["cache-control"] == "no-store"
    assert "Facebook is blocked on the City of Example network" in result.body
    assert "How to request access" in result.body
    assert not plain_upstream.contacted


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("dest", ["iframe", "frame", "embed", "object"])
def test_a_frame_gets_the_small_panel(proxy, plain_upstream, scheme, dest):
    result = fetch(proxy, f"{scheme}://www.youtube.com/embed/x?autoplay=1", dest, "navigate")

    assert result.status == 403
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert result.headers["cache-control"] == "no-store"
    assert "Blocked by city policy: YouTube" in result.body
    # The link opens the same address in a new tab, where it is a navigation: the full page.
    assert f'href="{scheme}://www.youtube.com/embed/x?autoplay=1" target="_blank"' in result.body
    assert "How to request access" not in result.body
    assert not plain_upstream.contacted


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(
    ("dest", "mode"),
    [
        ("script", "no-cors"),
        ("image", "no-cors"),
        ("empty", "cors"),
        ("style", "no-cors"),
        ("video", "no-cors"),
    ],
)
def test_a_script_a_pixel_or_a_fetch_gets_an_empty_403(proxy, plain_upstream, scheme, dest, mode):
    result = fetch(proxy, f"{scheme}://connect.facebook.net/en_US/sdk.js", dest, mode)

    assert result.status == 403
    assert result.body == ""
    assert result.headers["content-length"] == "0"
    assert result.headers["cache-control"] == "no-store"
    assert "content-type" not in result.headers
    assert not plain_upstream.contacted


def test_every_form_is_recorded_as_the_same_denial(proxy):
    forms = [(None, None), ("document", "navigate"), ("iframe", "navigate"), ("image", "no-cors")]
    for dest, mode in forms:
        assert fetch(proxy, "http://www.facebook.com/tr?id=1", dest, mode).status == 403

    lines = [line for line in proxy.log_lines() if "deny reason=no_grant" in line]
    assert len(lines) == len(forms)
    assert all("host=www.facebook.com stage=request user=mnguyen identity=basic" in line for line in lines)


def test_an_allowed_request_is_not_touched_whatever_its_destination(proxy, plain_upstream):
    result = fetch(proxy, "http://www.facebook.com/CityOfExampleParks/photo.jpg", "image", "no-cors", JLEE)

    assert result.status == 200
    assert plain_upstream.requests[0].header("Sec-Fetch-Dest") == "image"
