"""Through the proxy, with a real OpenLDAP and its password policy: an account that cannot sign in
gets a page naming its state, a wrong password gets a 407 saying so, and no browser retrying
stale passwords can lock an account.

slapd runs ppolicy with `ppolicy_use_lockout`; the people added here are under its strict policy
(tests/slapd.py LOCKOUT_POLICY_DN: locked after LOCKOUT_FAILURES wrong passwords, `pwdReset`
means "change your password first"). Binds are counted in slapd's own stats log, not in
citygate's metrics. `citygate explain`, run on the same configuration, must give the reason the
live proxy gave.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest
import yaml
from harness import citygate_explain, curl
from slapd import LOCKOUT_FAILURES, directory_options

from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
SOCIAL = "http://www.facebook.com/"
# Below the lockout threshold, as the README advises: then stale passwords can never lock.
BIND_RATE = LOCKOUT_FAILURES - 1


@pytest.fixture
def setup(proxy_runner_factory, redirect_addon, fresh_slapd, tmp_path):
    """(proxy, its config file, the metrics base URL) on a private slapd."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tmp_path / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["audit"]["directory"] = str(tmp_path / "log")
    document["metrics"] = {"listen": "127.0.0.1:0", "refresh_seconds": 0.2}
    document["directory"] = {
        "backend": "ldap",
        **directory_options(fresh_slapd, tmp_path, "openldap"),
        "bind_rate": BIND_RATE,
        "cache": {
            "ttl": 0.2,
            "negative_ttl": 0.2,
            "grace": 0,
            "credentials_ttl": 0.2,
            "failed_credentials_ttl": 300,
        },
    }
    config.write_text(yaml.safe_dump(document))
    metrics = Metrics()
    proxy = proxy_runner_factory(
        [CityGate(), DecisionLog(), metrics, redirect_addon], {"citygate_config": str(config)}
    )
    return proxy, config, metrics.server.url


@pytest.mark.parametrize(
    ("uid", "extra", "reason", "words"),
    [
        # A lock ppolicy set (not the permanent 000001010000Z an administrator uses to disable).
        ("locked", ("pwdAccountLockedTime: 20261201093000Z",), "account_locked", "account is locked"),
        ("reset", ("pwdReset: TRUE",), "password_must_change", "must be changed"),
    ],
)
def test_an_account_that_cannot_sign_in_gets_a_page_naming_its_state(
    setup, fresh_slapd, uid, extra, reason, words
):
    proxy, config, _ = setup
    fresh_slapd.add_person(uid, f"{uid}-pass", *extra)

    refused = curl(proxy, SOCIAL, proxy_user=f"{uid}:{uid}-pass")

    assert refused.status == 403, refused.body
    assert "proxy-authenticate" not in refused.headers
    assert f"<dd>{reason}</dd>" in refused.body
    assert words in refused.body and "service desk" in refused.body
    line = proxy.wait_for_log(f"reason={reason}")
    assert f"user={uid}" in line
    assert citygate_explain(config, uid, SOCIAL)["reason"] == reason


def test_a_disabled_account_gets_403_not_407_and_explain_agrees(setup):
    proxy, config, _ = setup
    refused = curl(proxy, SOCIAL, proxy_user="bjones:bjones-pass")
    assert refused.status == 403
    assert "<dd>employee_disabled</dd>" in refused.body and "disabled" in refused.body
    assert citygate_explain(config, "bjones", SOCIAL)["reason"] == "employee_disabled"


def test_a_disabled_account_inside_a_tunnel_gets_the_block_page(setup):
    proxy, _, _ = setup
    refused = curl(proxy, "https://www.facebook.com/", proxy_user="bjones:bjones-pass")
    assert (refused.connect_status, refused.status) == (200, 403)
    assert "<dd>employee_disabled</dd>" in refused.body


def test_a_wrong_password_gets_a_407_that_says_so(setup):
    proxy, _, _ = setup
    refused = curl(proxy, SOCIAL, proxy_user="jlee:not-her-password")
    assert refused.status == 407
    assert "proxy-authenticate" in refused.headers
    assert "password was not accepted" in refused.body
    assert "not-her-password" not in refused.body
    line = proxy.wait_for_log("reason=credentials_invalid")
    assert "password was not accepted" in line and "not-her-password" not in line


def test_twenty_requests_with_the_same_wrong_password_cost_slapd_one_bind(setup, fresh_slapd):
    proxy, _, metrics_url = setup
    dn = fresh_slapd.add_person("stale", "stale-pass")
    before = fresh_slapd.binds(dn)

    answers = [curl(proxy, SOCIAL, proxy_user="stale:last-years-password") for _ in range(20)]

    assert {answer.status for answer in answers} == {407}
    assert fresh_slapd.binds(dn) - before == 1  # counted by slapd itself
    assert not fresh_slapd.locked_out(dn)
    assert "remembered" in answers[-1].body
    metrics = _metrics(metrics_url)
    assert 'citygate_bind_refusals_total{reason="remembered_failure"} 19.0' in metrics
    assert 'citygate_directory_binds_total{result="wrong_password"} 1.0' in metrics
    # The right password still works at once: a different password is a different question.
    assert curl(proxy, SOCIAL, proxy_user="stale:stale-pass").status == 403  # no grant, signed in
    assert proxy.wait_for_log("reason=no_grant")


def test_a_browser_cycling_stale_passwords_cannot_lock_the_account(setup, fresh_slapd):
    proxy, _, metrics_url = setup
    dn = fresh_slapd.add_person("cycler", "cycler-pass")
    before = fresh_slapd.binds(dn)
    # Two more wrong passwords than the lockout threshold, each tried twice, in a loop.
    stale = [f"old-{n}" for n in range(LOCKOUT_FAILURES + 2)]
    answers = [curl(proxy, SOCIAL, proxy_user=f"cycler:{password}") for password in stale * 2]

    assert {answer.status for answer in answers} == {407}
    binds = fresh_slapd.binds(dn) - before
    # Without the proxy's limits this is 10 binds, and slapd would have locked the account.
    assert binds == BIND_RATE
    assert not fresh_slapd.locked_out(dn)

    # Past the rate, one more new password is refused without a bind, and the 407 says so.
    limited = curl(proxy, SOCIAL, proxy_user="cycler:yet-another")
    assert limited.status == 407
    assert "too many sign-in attempts" in limited.body and "try again in" in limited.body
    assert fresh_slapd.binds(dn) - before == binds
    metrics = _metrics(metrics_url)
    assert 'citygate_bind_refusals_total{reason="rate_limited"} 0.0' not in metrics
    assert f'citygate_directory_binds_total{{result="wrong_password"}} {float(BIND_RATE)}' in metrics


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
