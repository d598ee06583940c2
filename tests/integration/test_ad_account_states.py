"""Against a real Active Directory (the Samba AD DC of tests/samba_ad.py): each account state's
bind sub-code becomes the outcome citygate names, `lookup` (what `citygate explain` reads) names
the same state, a wrong password is told no state, and a browser's stale password costs AD one
failed logon, counted by AD itself (badPwdCount)."""

from __future__ import annotations

import asyncio

import pytest

from citygate.directory.breaker import GuardSettings
from citygate.directory.cache import CacheSettings
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.ldap import LdapDirectory
from citygate.directory.ldap_config import ldap_settings
from citygate.directory.model import AccountState, BindOutcome

# samba_ad.STATE_USERS' keys -> the state citygate must name for that account.
EXPECTED = {
    "disabled": AccountState.DISABLED,  # data 533
    "locked": AccountState.LOCKED,  # data 775
    "must_change_password": AccountState.MUST_CHANGE_PASSWORD,  # data 773
    "password_expired": AccountState.PASSWORD_EXPIRED,  # data 532
    "account_expired": AccountState.ACCOUNT_EXPIRED,  # data 701
    "logon_hours": AccountState.NOT_PERMITTED_NOW,  # data 530
}


@pytest.fixture(scope="module")
def directory(samba_ad, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ad-states")
    return LdapDirectory(ldap_settings(samba_ad.directory_options(), folder, str(folder / "c.yaml")))


@pytest.mark.parametrize("state", sorted(EXPECTED))
def test_the_bind_and_the_lookup_name_the_same_state(samba_ad, directory, state):
    uid = samba_ad.states[state]
    code, message = samba_ad.bind_result(uid, samba_ad.password(uid))
    assert code == 49 and "AcceptSecurityContext" in message  # AD itself refuses it
    assert directory.authenticate(uid, samba_ad.password(uid)) is BindOutcome.of_state(EXPECTED[state])
    assert directory.lookup(uid).state is EXPECTED[state]


@pytest.mark.parametrize("state", sorted(set(EXPECTED) - {"locked"}))
def test_a_wrong_password_is_told_no_state(samba_ad, directory, state):
    # (AD answers 775 for a locked account whatever the password: that is AD telling, not citygate.)
    assert directory.authenticate(samba_ad.states[state], "not-the-password") is BindOutcome.WRONG_PASSWORD


def test_an_active_account(samba_ad, directory):
    assert directory.lookup("jlee").state is AccountState.ACTIVE
    assert directory.authenticate("jlee", samba_ad.password("jlee")) is BindOutcome.OK
    assert directory.authenticate("jlee", "wrong") is BindOutcome.WRONG_PASSWORD
    assert directory.authenticate("nobody-here", "wrong") is BindOutcome.WRONG_PASSWORD  # 525 or no entry


def test_twenty_checks_of_a_stale_password_cost_ad_one_failed_logon(samba_ad, directory):
    gateway = DirectoryGateway(
        directory, CacheSettings(failed_credentials_ttl=300), guard=GuardSettings(bind_rate=5)
    )
    try:
        before = samba_ad.bad_password_count("mnguyen")
        for _ in range(20):
            verification = asyncio.run(gateway.authenticate("mnguyen", "last-years-password"))
            assert verification.outcome is BindOutcome.WRONG_PASSWORD
        assert samba_ad.bad_password_count("mnguyen") - before == 1
    finally:
        gateway.close()
