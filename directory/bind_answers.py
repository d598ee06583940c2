"""What a directory's answer to a bind says about the account: pure functions, no I/O.

Active Directory refuses every unusable bind with the same result code (49) and says why only
in the diagnostic message, as a hexadecimal sub-code after `data`:
`80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563`.
OpenLDAP says why in the password policy response control (draft-behera-ldap-password-policy),
which it sends only when the bind asked for it; its value is BER, decoded here with pyasn1.

Both also show in an account's attributes, which is what `lookup` (and so `citygate explain`)
reads: OpenLDAP's `pwdAccountLockedTime` and `pwdReset`, AD's `userAccountControl`,
`msDS-User-Account-Control-Computed` (or `lockoutTime`), `pwdLastSet`, `accountExpires` and
`logonHours`. AD's workstation restriction (531) depends on the computer signing in, so only
the bind can tell it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, namedval, tag, univ

from citygate.directory.model import AccountState, BindOutcome

#: The OID of the password policy control (request and response).
PPOLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"

# AD's sub-codes (Win32 error numbers, in hexadecimal) -> what they mean for the account.
AD_SUBCODES: dict[str, BindOutcome] = {
    "525": BindOutcome.WRONG_PASSWORD,  # no such user: never told apart from a wrong password
    "52e": BindOutcome.WRONG_PASSWORD,
    "530": BindOutcome.NOT_PERMITTED_NOW,  # outside the account's logon hours
    "531": BindOutcome.NOT_PERMITTED_NOW,  # not from this workstation
    "532": BindOutcome.PASSWORD_EXPIRED,
    "533": BindOutcome.DISABLED,
    "701": BindOutcome.ACCOUNT_EXPIRED,
    "773": BindOutcome.MUST_CHANGE_PASSWORD,
    "775": BindOutcome.LOCKED,
}
_AD_DATA = re.compile(r"\bdata\s+([0-9a-f]+)\b", re.IGNORECASE)


def ad_bind_outcome(message: str | None) -> BindOutcome | None:
    """The outcome an AD bind refusal's message names; None when it names none (not AD)."""
    if not message or "AcceptSecurityContext" not in message:
        return None
    found = _AD_DATA.search(message)
    if found is None:
        return None
    # A sub-code not in the table (a new Windows version's) still refuses the bind: as a wrong
    # password, so the employee is asked again rather than shown a state that may be untrue.
    return AD_SUBCODES.get(found.group(1).lower(), BindOutcome.WRONG_PASSWORD)


class _Warning(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "timeBeforeExpiration",
            univ.Integer().subtype(implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 0)),
        ),
        namedtype.NamedType(
            "graceAuthNsRemaining",
            univ.Integer().subtype(implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 1)),
        ),
    )


class _Error(univ.Enumerated):
    namedValues = namedval.NamedValues(
        ("passwordExpired", 0),
        ("accountLocked", 1),
        ("changeAfterReset", 2),
        ("passwordModNotAllowed", 3),
        ("mustSupplyOldPassword", 4),
        ("insufficientPasswordQuality", 5),
        ("passwordTooShort", 6),
        ("passwordTooYoung", 7),
        ("passwordInHistory", 8),
    )


class _Response(univ.Sequence):
    # A CHOICE cannot be tagged implicitly, so `warning` carries an explicit tag.
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType(
            "warning",
            _Warning().subtype(explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 0)),
        ),
        namedtype.OptionalNamedType(
            "error", _Error().subtype(implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 1))
        ),
    )


_PPOLICY_ERRORS = {
    0: BindOutcome.PASSWORD_EXPIRED,
    1: BindOutcome.LOCKED,
    2: BindOutcome.MUST_CHANGE_PASSWORD,
}


def ppolicy_error(value: bytes | None) -> int | None:
    """The `error` of a password policy response control's value; None if it has none (or is garbage)."""
    if not value:
        return None
    try:
        decoded, rest = decoder.decode(value, asn1Spec=_Response())
    except PyAsn1Error:
        return None
    if rest:
        return None
    error = decoded.getComponentByName("error")
    return int(error) if error.isValue else None


def ppolicy_bind_outcome(value: bytes | None) -> BindOutcome | None:
    """The outcome a password policy response control reports; None when it reports none that
    refuses a sign-in (no error, or one about changing a password)."""
    error = ppolicy_error(value)
    return None if error is None else _PPOLICY_ERRORS.get(error)


# OpenLDAP's convention: this lock time means "locked until an administrator unlocks it", the
# way an OpenLDAP directory disables an account.
PERMANENT_LOCK = "000001010000Z"
# AD's "never" for accountExpires (0 means never as well).
_AD_NEVER = 0x7FFF_FFFF_FFFF_FFFF
_UF_ACCOUNTDISABLE = 0x2
_UF_LOCKOUT = 0x10
_UF_PASSWORD_EXPIRED = 0x80_0000
_HOURS_A_WEEK = 7 * 24
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def ppolicy_state(attributes: Mapping[str, Sequence[str]]) -> AccountState:
    """An OpenLDAP account's state from its ppolicy attributes (names lower-cased)."""
    locked = attributes.get("pwdaccountlockedtime") or ()
    if locked:
        return AccountState.DISABLED if locked[0].strip() == PERMANENT_LOCK else AccountState.LOCKED
    reset = attributes.get("pwdreset") or ()
    if reset and reset[0].strip().upper() == "TRUE":
        return AccountState.MUST_CHANGE_PASSWORD
    return AccountState.ACTIVE


def ad_state(attributes: Mapping[str, Sequence[str]], now: datetime) -> AccountState:
    """An AD account's state from its attributes (names lower-cased); DISABLED when
    userAccountControl is missing or unreadable (an account citygate cannot vouch for)."""
    try:
        control = int(attributes["useraccountcontrol"][0])
    except (KeyError, IndexError, ValueError):
        return AccountState.DISABLED
    if control & _UF_ACCOUNTDISABLE:
        return AccountState.DISABLED
    expires = _integer(attributes, "accountexpires")
    if expires not in (None, 0, _AD_NEVER) and _filetime(expires) <= now:
        return AccountState.ACCOUNT_EXPIRED
    computed = _integer(attributes, "msds-user-account-control-computed")
    if computed is not None:
        # AD computes these live (a lock whose duration has passed is no lock).
        control |= computed
    elif (_integer(attributes, "lockouttime") or 0) > 0:
        control |= _UF_LOCKOUT
    if control & _UF_LOCKOUT:
        return AccountState.LOCKED
    # Before the expiry flag: AD flags a password that must be changed (pwdLastSet 0) as expired too.
    if _integer(attributes, "pwdlastset") == 0:
        return AccountState.MUST_CHANGE_PASSWORD
    if control & _UF_PASSWORD_EXPIRED:
        return AccountState.PASSWORD_EXPIRED
    if not _within_logon_hours(attributes, now):
        return AccountState.NOT_PERMITTED_NOW
    return AccountState.ACTIVE


def _within_logon_hours(attributes: Mapping[str, Sequence[str]], now: datetime) -> bool:
    """Whether AD's `logonHours` (hex text of its 21 bytes: one bit per hour of the week in UTC,
    Sunday 00:00 first, low bit first) allows `now`; no (or an unreadable) value allows all."""
    values = attributes.get("logonhours") or ()
    try:
        hours = bytes.fromhex(values[0]) if values else b""
    except ValueError:
        return True
    if len(hours) * 8 != _HOURS_A_WEEK:
        return True
    moment = now.astimezone(UTC)
    hour = ((moment.weekday() + 1) % 7) * 24 + moment.hour  # weekday(): Monday 0; AD: Sunday 0
    return bool(hours[hour // 8] >> (hour % 8) & 1)


def combined_outcome(bound: BindOutcome, known: AccountState) -> BindOutcome:
    """A bind's outcome, with what the account's attributes said before the bind.

    A wrong password stays a wrong password whatever the attributes say: citygate tells an
    account's state only to someone who knows its password (a directory may tell more: ppolicy
    reports a lock whatever the password, and that is passed on). An account the attributes call disabled
    stays disabled even when the directory accepts the bind (a `disabled_filter` the directory
    itself does not enforce) or calls it locked (ppolicy says "locked" for both). Any other
    state the attributes show gives way to an accepted bind: the server knows whether a lock
    or a forced change still holds.
    """
    if bound is BindOutcome.WRONG_PASSWORD:
        return bound
    if known is AccountState.DISABLED and bound in (BindOutcome.OK, BindOutcome.LOCKED):
        return BindOutcome.DISABLED
    return bound


def _integer(attributes: Mapping[str, Sequence[str]], name: str) -> int | None:
    values = attributes.get(name) or ()
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


def _filetime(value: int) -> datetime:
    """A Windows FILETIME (100 ns since 1601) as a UTC datetime; far futures are capped."""
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=value // 10)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)
