"""citygate's `active-directory` preset against a real Active Directory (tests/samba_ad.py).

The session's Samba AD DC is shared: tests read it, and change only what they put back. What
AD answers for each account state is pinned here word for word, because citygate's reading of
AD's bind sub-codes (`data 52e`, `533`, ...) must match what a real domain controller says.
"""

from __future__ import annotations

import asyncio
import subprocess
from datetime import date, datetime
from pathlib import Path

import pytest
from demo_config import demo_config
from ldap3 import Connection, Server
from samba_ad import STATE_USERS, ActiveDirectory, SambaDC, cache_root, ports_taken

from citygate.directory.backends import open_directory
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.ldap import LdapDirectory
from citygate.directory.model import BindOutcome
from citygate.directory.settings import DirectorySettings
from citygate.proxy.decision import (
    Identity,
    Reason,
    Result,
    decide_request,
    facts_needed,
    people_involved,
    sites_named,
)
from citygate.proxy.policy import Policy, load_policy

REPO = Path(__file__).resolve().parents[2]
# AD's answer to a refused simple bind, with the sub-code that says why.
REFUSED = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {}, v1db1"


def open_ad(domain: ActiveDirectory, folder: Path, **overrides: object) -> LdapDirectory:
    options = domain.directory_options(**overrides)
    directory = open_directory(DirectorySettings("ldap", options, folder), str(folder / "citygate.yaml"))
    assert isinstance(directory, LdapDirectory)
    return directory


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "config" / "citygate.yaml", today=date(2026, 6, 15))


# --- people, departments, groups ------------------------------------------------------------


def test_a_person_as_active_directory_holds_them(samba_ad, tmp_path):
    directory = open_ad(samba_ad, tmp_path)
    jlee = directory.lookup("jlee")
    assert jlee is not None
    assert (jlee.uid, jlee.department, jlee.title, jlee.mail) == (
        "jlee",
        "Parks",
        "Social Media Coordinator",
        "jlee@city.example",
    )
    assert jlee.disabled is False
    assert directory.lookup("JLEE").uid == "jlee"  # sAMAccountName matches without case
    assert directory.lookup("nobody") is None


def test_groups_come_from_active_directory(samba_ad, tmp_path):
    directory = open_ad(samba_ad, tmp_path)
    assert "directors" in directory.lookup("ahernandez").groups
    assert "city-managers" in directory.lookup("tsmith").groups
    assert "directors" not in directory.lookup("jlee").groups
    assert "parks-social-team" in directory.lookup("jlee").groups
    members = {person.uid for person in directory.group_members("directors")}
    assert members == {"ahernandez", "rpatel", "lgarcia", "pkim"}


def test_nested_groups_count_as_active_directory_resolves_them(samba_ad, tmp_path):
    """ewhite is in deputy-city-managers, itself a member of city-managers.

    AD's memberOf lists direct groups only; the preset's `groups: in-chain` asks with
    LDAP_MATCHING_RULE_IN_CHAIN (1.2.840.113556.1.4.1941), as Windows resolves membership, so
    ewhite is in city-managers (an executive) and among its members. `memberof` sees the direct
    group only.
    """
    nested = open_ad(samba_ad, tmp_path / "in-chain")
    direct = open_ad(samba_ad, tmp_path / "memberof", groups="memberof")

    assert {"deputy-city-managers", "city-managers"} <= nested.lookup("ewhite").groups
    assert {person.uid for person in nested.group_members("city-managers")} == {"tsmith", "ewhite"}
    assert "city-managers" not in direct.lookup("ewhite").groups
    assert {person.uid for person in direct.group_members("city-managers")} == {"tsmith"}
    with samba_ad.admin() as connection:
        connection.search(
            samba_ad.users_base,
            f"(memberOf={samba_ad.group_dn('city-managers')})",
            attributes=["sAMAccountName"],
        )
        assert {str(entry.sAMAccountName) for entry in connection.entries} == {"tsmith"}


def test_a_group_grant_reaches_a_member_of_a_nested_group(samba_ad, tmp_path):
    # A grant for the group city-managers, approved by its executive: ewhite is in it only
    # through deputy-city-managers.
    config = demo_config(tmp_path)
    (config.parent / "grants" / "city-managers.yaml").write_text(
        "grants:\n  - id: cm-1\n    group: city-managers\n    sites: [facebook]\n"
        "    purpose: Follow residents' comments on the City's page\n    approved_by: tsmith\n"
        "    approved_on: 2026-01-12\n    expires: 2026-12-31\n"
    )
    policy = load_policy(config, today=date(2026, 6, 15))
    gateway = DirectoryGateway(open_ad(samba_ad, tmp_path))
    at = datetime(2026, 6, 15, 12, tzinfo=policy.timezone)

    def decide(user: str):
        return asyncio.run(_decided(gateway, policy, user, ["www.facebook.com"], at))

    assert (decide("ewhite").reason, decide("ewhite").grant.id) == (Reason.GRANTED, "cm-1")
    assert decide("mnguyen").reason is Reason.NO_GRANT


async def _decided(gateway, policy, user, hosts, at):
    people = await gateway.people(people_involved(policy, user, hosts))
    facts = facts_needed(policy, people[user], sites_named(policy, hosts))
    people |= await gateway.people(facts.approvers - people.keys())
    groups = await gateway.group_departments(facts.groups)
    return decide_request(Identity(user, "basic"), hosts, "/", at, policy, people, groups)


def test_a_grant_is_decided_with_facts_from_active_directory(samba_ad, tmp_path, policy):
    # Parks' grant: jlee may use facebook.com/CityOfExampleParks, approved by ahernandez (Parks).
    gateway = DirectoryGateway(open_ad(samba_ad, tmp_path))
    at = datetime(2026, 6, 15, 12, tzinfo=policy.timezone)

    def decide(user: str):
        hosts = ["www.facebook.com"]
        people = asyncio.run(gateway.people(people_involved(policy, user, hosts)))
        return decide_request(Identity(user, "basic"), hosts, "/CityOfExampleParks", at, policy, people)

    assert decide("jlee").result is Result.ALLOW
    assert (decide("bjones").result, decide("bjones").reason) == (Result.DENY, Reason.EMPLOYEE_DISABLED)


# --- passwords and account states -----------------------------------------------------------


def test_right_and_wrong_passwords(samba_ad, tmp_path):
    directory = open_ad(samba_ad, tmp_path)
    assert directory.authenticate("jlee", "jlee-pass") is BindOutcome.OK
    assert directory.authenticate("jlee", "jlee-pass2") is BindOutcome.WRONG_PASSWORD
    assert directory.authenticate("jlee", "mnguyen-pass") is BindOutcome.WRONG_PASSWORD
    assert directory.authenticate("nobody", "x") is BindOutcome.WRONG_PASSWORD


def test_a_disabled_account_is_reported_disabled(samba_ad, tmp_path):
    directory = open_ad(samba_ad, tmp_path)
    bjones = directory.lookup("bjones")
    assert bjones is not None and bjones.disabled is True
    assert directory.authenticate("bjones", "bjones-pass") is BindOutcome.DISABLED
    # AD itself refuses him too (userAccountControl 514): citygate is not the only lock.
    assert samba_ad.bind_result("bjones", "bjones-pass") == (49, REFUSED.format("533"))


@pytest.mark.parametrize(
    "state", ["locked", "must_change_password", "password_expired", "account_expired", "logon_hours"]
)
def test_accounts_ad_refuses_cannot_sign_in(samba_ad, tmp_path, state):
    directory = open_ad(samba_ad, tmp_path)
    uid = STATE_USERS[state]
    assert directory.lookup(uid) is not None
    assert directory.authenticate(uid, samba_ad.password(uid)) not in (
        BindOutcome.OK,
        BindOutcome.WRONG_PASSWORD,
    )


@pytest.mark.parametrize(
    ("who", "password", "sub_code"),
    [
        ("jlee", "wrong-pass", "52e"),  # wrong password
        ("nobody@city.test", "x-pass", "52e"),  # unknown user: AD does not say 525 to a bind
        ("bjones", "bjones-pass", "533"),  # disabled
        ("bjones", "wrong-pass", "52e"),  # a state shows only with the right password
        ("lockeduser", "lockeduser-pass", "775"),  # locked out
        ("mustchange", "mustchange-pass", "773"),  # must change password (pwdLastSet 0)
        ("oldpassword", "oldpassword-pass", "532"),  # password expired
        ("expireduser", "expireduser-pass", "701"),  # account expired
        ("nightshift", "nightshift-pass", "530"),  # outside logon hours
    ],
)
def test_what_active_directory_answers_for_each_state(samba_ad, who, password, sub_code):
    assert samba_ad.bind_result(who, password) == (49, REFUSED.format(sub_code))


def test_the_right_password_binds_by_dn_upn_and_down_level_name(samba_ad):
    for who in (samba_ad.user_dn("jlee"), "jlee@city.test", "CITY\\jlee"):
        assert samba_ad.bind_result(who, "jlee-pass") == (0, "")


def test_plain_ldap_refuses_simple_binds(samba_ad):
    connection = Connection(Server(samba_ad.ldap_url), user="jlee@city.test", password="jlee-pass")
    assert connection.bind() is False
    assert connection.result["description"] == "strongerAuthRequired"
    connection.unbind()


def test_the_directory_counts_wrong_passwords(samba_ad, tmp_path):
    """badPwdCount: evidence at the DC of how many wrong passwords reached it."""
    directory = open_ad(samba_ad, tmp_path)
    before = samba_ad.bad_password_count("mnguyen")
    assert directory.authenticate("mnguyen", "not-mnguyen-pass") is BindOutcome.WRONG_PASSWORD
    assert samba_ad.bad_password_count("mnguyen") == before + 1
    assert directory.authenticate("mnguyen", "mnguyen-pass") is BindOutcome.OK
    assert samba_ad.bad_password_count("mnguyen") == 0  # a good bind resets it


def test_lock_and_unlock(samba_ad):
    samba_ad.lock("dbrown")
    try:
        assert samba_ad.bind_result("dbrown", "dbrown-pass") == (49, REFUSED.format("775"))
    finally:
        samba_ad.unlock("dbrown")
    assert samba_ad.bind_result("dbrown", "dbrown-pass") == (0, "")


# --- Kerberos -------------------------------------------------------------------------------


def test_an_employee_gets_a_ticket(samba_ad, tmp_path):
    ccache = tmp_path / "jlee.ccache"
    result = samba_ad.kinit("jlee", ccache)
    assert result.returncode == 0, result.stderr
    tickets = subprocess.run(
        ["klist"], env=samba_ad.kerberos_env(ccache), capture_output=True, text=True, check=True
    ).stdout
    assert "Default principal: jlee@CITY.TEST" in tickets
    assert "krbtgt/CITY.TEST@CITY.TEST" in tickets
    # A service ticket for the proxy, with AES keys (the account's msDS-SupportedEncryptionTypes).
    subprocess.run(
        ["kvno", samba_ad.service_principal],
        env=samba_ad.kerberos_env(ccache),
        check=True,
        capture_output=True,
    )
    tickets = subprocess.run(
        ["klist", "-e"], env=samba_ad.kerberos_env(ccache), capture_output=True, text=True, check=True
    ).stdout
    proxy_ticket = tickets[tickets.index(samba_ad.service_principal) :]
    assert "aes256-cts-hmac-sha1-96" in proxy_ticket.splitlines()[1]
    # The proxy's keytab decrypts that ticket: its keys are the ones the KDC uses.
    verified = subprocess.run(
        ["kvno", "-k", str(samba_ad.keytab), samba_ad.service_principal],
        env=samba_ad.kerberos_env(ccache),
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert "keytab entry valid" in verified.stdout


@pytest.mark.parametrize(
    ("uid", "password", "message"),
    [
        ("bjones", "bjones-pass", "Client's credentials have been revoked"),  # disabled
        ("lockeduser", "lockeduser-pass", "Client's credentials have been revoked"),  # locked
        ("expireduser", "expireduser-pass", "Client's credentials have been revoked"),
        # kinit then asks for a new password, and finds none on its input.
        ("oldpassword", "oldpassword-pass", "Password expired.  You must change it now."),
        ("mustchange", "mustchange-pass", "Password expired.  You must change it now."),
        ("jlee", "wrong-pass", "Password incorrect"),
        ("nobody", "x-pass", "not found in Kerberos database"),
    ],
)
def test_kinit_is_refused(samba_ad, tmp_path, uid, password, message):
    result = samba_ad.kinit(uid, tmp_path / "ccache", password)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_the_proxy_keytab_holds_aes_keys_only(samba_ad):
    listing = subprocess.run(
        ["klist", "-k", "-e", str(samba_ad.keytab)], capture_output=True, text=True, check=True
    ).stdout
    keys = [line for line in listing.splitlines() if samba_ad.service_principal in line]
    assert len(keys) == 2
    assert any("aes256-cts-hmac-sha1-96" in key for key in keys)
    assert any("aes128-cts-hmac-sha1-96" in key for key in keys)
    assert "arcfour" not in listing


# --- the fixture itself ---------------------------------------------------------------------


def test_a_second_domain_controller_runs_beside_the_first_and_leaves_nothing_behind(samba_ad, tmp_path):
    assert {"88/tcp", "389/tcp", "636/tcp", "88/udp"} <= set(ports_taken(samba_ad.address))
    server = SambaDC(tmp_path / "second", cache=cache_root())
    try:
        second = server.start()
        assert second.address != samba_ad.address
        assert second.bind_result("jlee", "jlee-pass") == (0, "")
        assert samba_ad.bind_result("jlee", "jlee-pass") == (0, "")
        process = server.process
        assert process is not None
    finally:
        server.stop()
    assert process.poll() is not None
    assert ports_taken(second.address) == []
    assert not (tmp_path / "second" / "dc").exists()
