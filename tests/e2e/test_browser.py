"""The test browser itself (tests/browser.py): what it trusts, and the policy it can install.

Certificates: only the keys a test names are trusted, so a certificate error the test did not
expect still fails the load. The Negotiate policy file exists for the browser's lifetime only, and
Chromium reads it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import DEEP_TEXT, POLICY_DIR, Browser, spki_of

from citygate.addons.gate import CityGate

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "citygate.yaml"


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon):
    return proxy_runner_factory([CityGate(), redirect_addon], {"citygate_config": str(DEMO_CONFIG)})


def test_only_the_named_keys_are_trusted(proxy, tls_upstream, pki):
    # An ordinary tunnel is not decrypted: the browser sees the test upstream's own certificate.
    with Browser(proxy=proxy.address, trusted_spki=[spki_of(proxy.ca_pem)]) as browser:
        refused = browser.open("https://www.example.org/")
    with Browser(proxy=proxy.address, trusted_spki=[spki_of(pki.server_cert.cert_pem)]) as browser:
        accepted = browser.open("https://www.example.org/")

    assert refused.error == "net::ERR_CERT_AUTHORITY_INVALID"
    assert refused.status is None
    assert accepted.error is None and accepted.status == 200 and accepted.loaded
    assert '"sni": "www.example.org"' in accepted.text  # the echo server's answer


def test_the_negotiate_policy_is_applied_by_chromium_and_removed_at_close():
    before = set(POLICY_DIR.glob("*.json")) if POLICY_DIR.exists() else set()
    with Browser(negotiate_policy=True) as browser:
        [written] = set(POLICY_DIR.glob("*.json")) - before
        shown = f"{DEEP_TEXT}.includes('DisableAuthNegotiateCnameLookup')"
        policies = browser.open("chrome://policy", wait_for=shown, read=DEEP_TEXT)

    assert policies.ready
    text = " ".join((policies.value or "").split())
    # As chrome://policy lists an applied machine policy (an unset one reads "Not set.").
    assert re.search(r"DisableAuthNegotiateCnameLookup true Platform Machine Mandatory OK", text), text[:2000]
    assert re.search(r"AuthServerAllowlist \* Platform Machine Mandatory OK", text), text[:2000]
    assert not written.exists()
