"""Through the proxy, with a real OpenLDAP: grants follow the live directory.

A private slapd holds the demo city; citygate runs on the demo config with its `directory:`
section pointed at that slapd. Changing the directory changes decisions within the cache TTL,
a stopped directory fails social media closed while ordinary traffic flows, and citygate
recovers when the directory returns, without a restart.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from harness import curl
from slapd import directory_options, group_dn, person_dn

from citygate.addons.gate import CityGate

REPO = Path(__file__).resolve().parents[2]
TTL = 0.5  # seconds; short so the test sees the directory change quickly
JLEE = "jlee:jlee-pass"
IN_SCOPE = "http://www.facebook.com/CityOfExampleParks"


def ldap_config(tmp_path: Path, server, preset: str) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tmp_path / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["directory"] = {
        "backend": "ldap",
        **directory_options(server, tmp_path, preset),
        "cache": {"ttl": TTL, "negative_ttl": TTL, "grace": 0, "credentials_ttl": TTL},
    }
    if preset == "active-directory":
        # These tests sign in with passwords; the preset's default adds Kerberos (test_negotiate.py).
        document["identity"] = {"sign_in": ["basic"]}
    config.write_text(yaml.safe_dump(document))
    return config


def wait_for(status: int, proxy, url: str, user: str | None, timeout: float = 20.0):
    """Retry until the proxy answers `status`: the cache expires on its own clock."""
    deadline = time.monotonic() + timeout
    while True:
        result = curl(proxy, url, proxy_user=user)
        if result.status == status or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon, fresh_slapd, tmp_path):
    config = ldap_config(tmp_path, fresh_slapd, "openldap")
    return proxy_runner_factory([CityGate(), redirect_addon], {"citygate_config": str(config)})


def test_granted_employee_is_allowed_and_loses_access_when_the_approver_loses_the_role(
    proxy, fresh_slapd, plain_upstream
):
    assert curl(proxy, IN_SCOPE, proxy_user=JLEE).status == 200

    fresh_slapd.remove_member(group_dn("directors"), person_dn("ahernandez"))

    refused = wait_for(403, proxy, IN_SCOPE, JLEE)
    assert refused.status == 403
    assert "approver_not_authorized" in refused.body
    forwarded = plain_upstream.request_count
    assert curl(proxy, IN_SCOPE, proxy_user=JLEE).status == 403
    assert plain_upstream.request_count == forwarded  # refused requests never reach the site


def test_grant_stops_when_the_approver_moves_to_another_department(proxy, fresh_slapd):
    assert curl(proxy, IN_SCOPE, proxy_user=JLEE).status == 200

    fresh_slapd.replace(person_dn("ahernandez"), "departmentNumber", "Police")

    refused = wait_for(403, proxy, IN_SCOPE, JLEE)
    assert "approver_not_authorized" in refused.body


def test_disabled_employee_is_refused(proxy, fresh_slapd):
    assert curl(proxy, IN_SCOPE, proxy_user=JLEE).status == 200

    fresh_slapd.lock(person_dn("jlee"))

    # A disabled account gets a page saying so, never another request for credentials.
    refused = wait_for(403, proxy, IN_SCOPE, JLEE)
    assert refused.status == 403
    assert "<dd>employee_disabled</dd>" in refused.body


def test_directory_down_fails_social_media_closed_and_recovers_without_restart(
    proxy, fresh_slapd, plain_upstream
):
    assert curl(proxy, IN_SCOPE, proxy_user=JLEE).status == 200

    fresh_slapd.stop()
    time.sleep(TTL + 0.1)
    down = curl(proxy, IN_SCOPE, proxy_user=JLEE)
    ordinary = curl(proxy, "http://www.example.org/")

    assert down.status == 403
    assert "directory_unavailable" in down.body
    assert ordinary.status == 200

    fresh_slapd.start()
    assert wait_for(200, proxy, IN_SCOPE, JLEE).status == 200


def test_active_directory_preset_end_to_end(proxy_runner_factory, redirect_addon, fresh_slapd, tmp_path):
    config = ldap_config(tmp_path, fresh_slapd, "active-directory")
    proxy = proxy_runner_factory([CityGate(), redirect_addon], {"citygate_config": str(config)})

    allowed = curl(proxy, IN_SCOPE, proxy_user=JLEE)
    no_grant = curl(proxy, "http://www.facebook.com/", proxy_user="mnguyen:mnguyen-pass")
    disabled = curl(proxy, "http://www.facebook.com/", proxy_user="bjones:bjones-pass")

    assert allowed.status == 200
    assert no_grant.status == 403 and "Ana Hernandez" in no_grant.body
    assert disabled.status == 403 and "<dd>employee_disabled</dd>" in disabled.body


def test_active_directory_preset_against_a_real_domain_controller(
    proxy_runner_factory, redirect_addon, samba_ad, tmp_path
):
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tmp_path / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["directory"] = {"backend": "ldap", **samba_ad.directory_options()}
    document["identity"] = {
        "sign_in": ["basic"]
    }  # Kerberos sign-in against AD: test_negotiate_active_directory.py
    config.write_text(yaml.safe_dump(document))
    proxy = proxy_runner_factory([CityGate(), redirect_addon], {"citygate_config": str(config)})

    allowed = curl(proxy, IN_SCOPE, proxy_user=JLEE)
    no_grant = curl(proxy, "http://www.facebook.com/", proxy_user="mnguyen:mnguyen-pass")
    wrong = curl(proxy, IN_SCOPE, proxy_user="jlee:not-jlee-pass")

    assert allowed.status == 200
    assert no_grant.status == 403 and "Ana Hernandez" in no_grant.body
    assert wrong.status == 407
