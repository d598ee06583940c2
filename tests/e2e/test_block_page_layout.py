"""The block page on a phone: headless Chromium (Debian's) at 390 px, through a real proxy. The
page fits the screen (no sideways scroll) with a long address and the 32-character reference, and
it says why once; a page outside a grant says which pages the grant covers.

With CITYGATE_SCREENSHOTS=<folder>, the pages are also saved there at 1280 and 390 px
(`make screenshots`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import Browser, spki_of
from demo_config import demo_config
from harness import RedirectToUpstream

from citygate.addons.gate import CityGate

LONG = "https://www.facebook.com/CityOfExampleParks/posts/pfbid0x8Jk3mQxWvLzRtYp4HnGfDsAqZcVbNmLkJhGfDsAqWeRtYuIoP?__cft__=AZWx"
WIDTHS = (1280, 390)


def at_this_device(employee: str) -> dict:
    return {"source_addresses": [{"address": "127.0.0.1", "employee": employee}]}


@pytest.fixture
def open_as(proxy_runner_factory, page_server, tls_upstream, tmp_path):
    """open_as(employee, url, name) -> the page, read at 390 px (and saved at both widths)."""
    started: list[Browser] = []

    def open_as(employee: str, url: str, name: str):
        config = demo_config(tmp_path / employee, identity=at_this_device(employee))
        proxy = proxy_runner_factory(
            [CityGate(), RedirectToUpstream(page_server, tls_upstream.address)],
            {"citygate_config": str(config)},
        )
        browser = Browser(proxy=proxy.address, trusted_spki=[spki_of(proxy.ca_pem)]).start()
        started.append(browser)
        with browser.tab(width=390) as tab:
            load = tab.goto(url)
            width = int(tab.evaluate("document.documentElement.scrollWidth"))
            folder = os.environ.get("CITYGATE_SCREENSHOTS")
            for shot in WIDTHS if folder else ():
                tab.resize(shot, 900)
                tab.screenshot(Path(folder) / f"{name}-{shot}.png")
        return load, width

    yield open_as
    for browser in started:
        browser.close()


def test_the_block_page_fits_a_phone_and_says_why_once(open_as):
    load, width = open_as("mnguyen", LONG, "block-page-phone")

    assert load.status == 403 and "Facebook is blocked on the City of Example network" in load.text
    assert width <= 390, f"the page scrolls sideways: {width} px wide"
    assert "You do not have a grant" in load.text and "no grant for Facebook" not in load.text


def test_a_page_outside_the_grant_says_which_pages_it_covers(open_as):
    load, width = open_as("jlee", "https://www.facebook.com/messages/t/1234567890", "out-of-scope-page")

    assert load.status == 403 and width <= 390
    assert "This page of Facebook is outside your grant" in load.text
    assert "covers these pages" in load.text and "facebook.com/CityOfExampleParks" in load.text
    assert "ask the Director who approved your grant to add it" in load.text
