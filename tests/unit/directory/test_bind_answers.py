"""Reading a directory's answer to a bind: AD's sub-codes, OpenLDAP's password policy control,
and the account attributes `lookup` reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pyasn1.codec.ber import encoder

from citygate.directory.bind_answers import (
    _Response,
    ad_bind_outcome,
    ad_state,
    combined_outcome,
    ppolicy_bind_outcome,
    ppolicy_state,
)
from citygate.directory.model import AccountState, BindOutcome

# What AD (and Samba) put in the diagnostic message of a refused simple bind.
AD_MESSAGE = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {}, v4563"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("525", BindOutcome.WRONG_PASSWORD),  # no such user: never told apart
        ("52e", BindOutcome.WRONG_PASSWORD),
        ("52E", BindOutcome.WRONG_PASSWORD),
        ("530", BindOutcome.NOT_PERMITTED_NOW),
        ("531", BindOutcome.NOT_PERMITTED_NOW),
        ("532", BindOutcome.PASSWORD_EXPIRED),
        ("533", BindOutcome.DISABLED),
        ("701", BindOutcome.ACCOUNT_EXPIRED),
        ("773", BindOutcome.MUST_CHANGE_PASSWORD),
        ("775", BindOutcome.LOCKED),
        ("569", BindOutcome.WRONG_PASSWORD),  # one not in the table: asked again, no state claimed
    ],
)
def test_ad_sub_codes(code, outcome):
    assert ad_bind_outcome(AD_MESSAGE.format(code)) is outcome


def test_samba_and_windows_2008_messages():
    samba = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 533, v1db1"
    assert ad_bind_outcome(samba) is BindOutcome.DISABLED
    old = "80090308: LdapErr: DSID-0C090334, comment: AcceptSecurityContext error, data 775, vece"
    assert ad_bind_outcome(old) is BindOutcome.LOCKED


@pytest.mark.parametrize(
    "message", [None, "", "Invalid credentials", "data 533", "AcceptSecurityContext error"]
)
def test_messages_that_are_not_ads_name_no_outcome(message):
    assert ad_bind_outcome(message) is None


def _control(**fields: object) -> bytes:
    response = _Response()
    for name, value in fields.items():
        if name == "warning":
            response["warning"]["graceAuthNsRemaining"] = value
        else:
            response[name] = value
    return encoder.encode(response)


def test_ppolicy_control_errors():
    assert ppolicy_bind_outcome(_control(error=0)) is BindOutcome.PASSWORD_EXPIRED
    assert ppolicy_bind_outcome(_control(error=1)) is BindOutcome.LOCKED
    assert ppolicy_bind_outcome(_control(error=2)) is BindOutcome.MUST_CHANGE_PASSWORD
    # The bytes OpenLDAP sends for accountLocked.
    assert ppolicy_bind_outcome(bytes.fromhex("3003810101")) is BindOutcome.LOCKED


@pytest.mark.parametrize(
    "value", [None, b"", b"\x30\x00", b"garbage", b"\x30\x03\x81\x01", _control(warning=2)]
)
def test_ppolicy_controls_without_a_refusal(value):
    assert ppolicy_bind_outcome(value) is None


def test_ppolicy_attributes():
    assert ppolicy_state({}) is AccountState.ACTIVE
    assert ppolicy_state({"pwdaccountlockedtime": ["000001010000Z"]}) is AccountState.DISABLED
    assert ppolicy_state({"pwdaccountlockedtime": ["20261207120000Z"]}) is AccountState.LOCKED
    assert ppolicy_state({"pwdreset": ["TRUE"]}) is AccountState.MUST_CHANGE_PASSWORD
    assert ppolicy_state({"pwdreset": ["FALSE"]}) is AccountState.ACTIVE


NOW = datetime(2026, 12, 7, tzinfo=UTC)
PAST = str(
    int((datetime(2026, 1, 1, tzinfo=UTC) - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds()) * 10_000_000
)
FUTURE = str(
    int((datetime(2027, 1, 1, tzinfo=UTC) - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds()) * 10_000_000
)


@pytest.mark.parametrize(
    ("attributes", "state"),
    [
        ({"useraccountcontrol": ["512"], "pwdlastset": ["1"]}, AccountState.ACTIVE),
        ({"useraccountcontrol": ["514"]}, AccountState.DISABLED),
        ({}, AccountState.DISABLED),  # unreadable: not vouched for
        ({"useraccountcontrol": ["junk"]}, AccountState.DISABLED),
        ({"useraccountcontrol": ["512"], "accountexpires": [PAST]}, AccountState.ACCOUNT_EXPIRED),
        ({"useraccountcontrol": ["512"], "accountexpires": [FUTURE]}, AccountState.ACTIVE),
        ({"useraccountcontrol": ["512"], "accountexpires": ["9223372036854775807"]}, AccountState.ACTIVE),
        ({"useraccountcontrol": ["512"], "accountexpires": ["0"]}, AccountState.ACTIVE),
        ({"useraccountcontrol": ["512"], "lockouttime": ["133000000000000000"]}, AccountState.LOCKED),
        ({"useraccountcontrol": ["512"], "lockouttime": ["0"]}, AccountState.ACTIVE),
        ({"useraccountcontrol": ["8389120"]}, AccountState.PASSWORD_EXPIRED),  # 0x800000 | 512
        ({"useraccountcontrol": ["512"], "pwdlastset": ["0"]}, AccountState.MUST_CHANGE_PASSWORD),
        # AD's computed flags outrank lockoutTime, which outlives a lock's duration.
        (
            {
                "useraccountcontrol": ["512"],
                "lockouttime": ["133"],
                "msds-user-account-control-computed": ["0"],
            },
            AccountState.ACTIVE,
        ),
        ({"useraccountcontrol": ["512"], "msds-user-account-control-computed": ["16"]}, AccountState.LOCKED),
        (
            {"useraccountcontrol": ["512"], "msds-user-account-control-computed": ["8388608"]},
            AccountState.PASSWORD_EXPIRED,
        ),
        (
            {
                "useraccountcontrol": ["512"],
                "pwdlastset": ["0"],
                "msds-user-account-control-computed": ["8388608"],
            },
            AccountState.MUST_CHANGE_PASSWORD,  # as AD (and Samba) flag it: expired too
        ),
        ({"useraccountcontrol": ["512"], "logonhours": ["ff" * 21]}, AccountState.ACTIVE),
        ({"useraccountcontrol": ["512"], "logonhours": ["00" * 21]}, AccountState.NOT_PERMITTED_NOW),
        ({"useraccountcontrol": ["512"], "logonhours": ["zz"]}, AccountState.ACTIVE),
    ],
)
def test_ad_attributes(attributes, state):
    assert ad_state(attributes, NOW) is state


def test_a_wrong_password_never_learns_the_state_from_the_attributes():
    for known in AccountState:
        assert combined_outcome(BindOutcome.WRONG_PASSWORD, known) is BindOutcome.WRONG_PASSWORD


def test_an_account_the_attributes_disable_stays_disabled():
    assert combined_outcome(BindOutcome.OK, AccountState.DISABLED) is BindOutcome.DISABLED
    # ppolicy calls a permanently locked (disabled) account "locked".
    assert combined_outcome(BindOutcome.LOCKED, AccountState.DISABLED) is BindOutcome.DISABLED
    # An accepted bind outranks a lock the attributes show: the lock may have ended.
    assert combined_outcome(BindOutcome.OK, AccountState.LOCKED) is BindOutcome.OK
    assert (
        combined_outcome(BindOutcome.MUST_CHANGE_PASSWORD, AccountState.ACTIVE)
        is BindOutcome.MUST_CHANGE_PASSWORD
    )


def test_logon_hours_are_read_in_utc_from_sunday():
    # NOW is Monday 2026-12-07 00:00 UTC: hour 24 of AD's week, bit 0 of byte 3.
    monday_midnight = bytearray(21)
    monday_midnight[3] = 0x01
    assert (
        ad_state({"useraccountcontrol": ["512"], "logonhours": [monday_midnight.hex()]}, NOW)
        is AccountState.ACTIVE
    )
    sunday_midnight = bytearray(21)
    sunday_midnight[0] = 0x01
    refused = ad_state({"useraccountcontrol": ["512"], "logonhours": [sunday_midnight.hex()]}, NOW)
    assert refused is AccountState.NOT_PERMITTED_NOW
