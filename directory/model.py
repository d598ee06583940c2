"""What citygate needs to know about people, and the interface every directory backend offers.

The decision core never talks to a directory: the proxy shell asks a backend for `Person`
records and hands them to the core as plain data. Backends differ (an LDIF file loaded in
memory, a live LDAP / Active Directory), so they all satisfy `Directory` and pass the same
contract tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class AccountState(StrEnum):
    """Whether an account may sign in now, as the directory says; anything but ACTIVE refuses it.

    Read from the account's attributes by `lookup` (so `citygate explain` sees it without a
    password) and from the answer to a bind (AD's sub-codes, OpenLDAP's ppolicy control).
    """

    ACTIVE = "active"
    DISABLED = "disabled"
    LOCKED = "locked"
    ACCOUNT_EXPIRED = "account_expired"
    PASSWORD_EXPIRED = "password_expired"  # noqa: S105 (a state's name, not a password)
    MUST_CHANGE_PASSWORD = "must_change_password"  # noqa: S105 (a state's name, not a password)
    # Outside the account's logon hours, or from a workstation it may not use (AD 530, 531).
    NOT_PERMITTED_NOW = "not_permitted_now"

    @property
    def described(self) -> str:
        """The state in a few plain words, for logs and `explain` ("the account is locked")."""
        return _DESCRIBED[self]


_DESCRIBED = {
    AccountState.ACTIVE: "the account may sign in",
    AccountState.DISABLED: "the account is disabled",
    AccountState.LOCKED: "the account is locked",
    AccountState.ACCOUNT_EXPIRED: "the account has expired",
    AccountState.PASSWORD_EXPIRED: "the password has expired",
    AccountState.MUST_CHANGE_PASSWORD: "the password must be changed first",
    AccountState.NOT_PERMITTED_NOW: "the account may not sign in at this time or from this computer",
}


class BindOutcome(StrEnum):
    """What the directory answered to a password: the `authenticate` result of every backend."""

    OK = "ok"
    # A wrong password and an unknown account look the same, so a guess learns nothing.
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 (a state's name, not a password)
    DISABLED = "disabled"
    LOCKED = "locked"
    ACCOUNT_EXPIRED = "account_expired"
    PASSWORD_EXPIRED = "password_expired"  # noqa: S105 (a state's name, not a password)
    MUST_CHANGE_PASSWORD = "must_change_password"  # noqa: S105 (a state's name, not a password)
    NOT_PERMITTED_NOW = "not_permitted_now"
    # The directory could not say (the gateway's answer; backends raise DirectoryUnavailable).
    UNAVAILABLE = "unavailable"
    # The gateway's answer: too many binds for this account lately, so none was made.
    RATE_LIMITED = "rate_limited"

    @property
    def state(self) -> AccountState | None:
        """The account state this outcome reports, or None (accepted, wrong, or no answer)."""
        return _STATES.get(self)

    @classmethod
    def of_state(cls, state: AccountState) -> BindOutcome:
        """The outcome that reports `state` (ACTIVE: OK)."""
        return cls.OK if state is AccountState.ACTIVE else cls(state.value)


_STATES = {
    outcome: AccountState(outcome.value) for outcome in BindOutcome if outcome.value in set(AccountState)
}


@dataclass(frozen=True, slots=True)
class Person:
    """One directory account, as the policy sees it.

    `groups` holds group names (the group entry's `cn`), lower-cased, so that
    "Directors" in a directory and "directors" in the config are the same group.
    """

    uid: str
    name: str
    department: str | None
    title: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    state: AccountState = AccountState.ACTIVE
    mail: str | None = None

    @property
    def disabled(self) -> bool:
        """Whether the account is disabled or expired: no longer an employee in good standing, so
        the grants they approved stop counting. A lock, a password to change or logon hours
        keep them from signing in (`can_sign_in`), not from being an approver."""
        return self.state in (AccountState.DISABLED, AccountState.ACCOUNT_EXPIRED)

    @property
    def can_sign_in(self) -> bool:
        return self.state is AccountState.ACTIVE


class DirectoryUnavailable(Exception):
    """The directory could not answer (down, timed out, refused the service account).

    Distinct from "no such person": a social-media request fails closed on this,
    ordinary traffic never depends on it.
    """


class Directory(Protocol):
    """A source of truth for people, departments, roles and passwords."""

    #: True when calls do network I/O and must run off mitmproxy's event loop thread.
    blocking: bool

    def lookup(self, uid: str) -> Person | None:
        """The person with this login name, or None if there is none.

        Raises DirectoryUnavailable when the directory cannot answer.
        """
        ...

    def authenticate(self, uid: str, password: str) -> BindOutcome:
        """What the directory says to this password for this person.

        OK only for the current password of an account that may sign in; WRONG_PASSWORD for a
        wrong or empty password and for an unknown account; the account's state (DISABLED,
        LOCKED, ...) when the directory reports one. Never UNAVAILABLE or RATE_LIMITED: raises
        DirectoryUnavailable when the directory cannot answer.
        """
        ...

    def group_members(self, group: str) -> list[Person]:
        """Everyone in the named group (matched case-insensitively), disabled accounts included.

        Raises DirectoryUnavailable when the directory cannot answer.
        """
        ...

    def group_attribute(self, group: str, attribute: str) -> str | None:
        """The first value of an attribute of the named group's entry (e.g. its department);
        None when there is no such group or the entry has no such attribute.

        Raises DirectoryUnavailable when the directory cannot answer.
        """
        ...

    def check(self) -> None:
        """Return when the directory itself answers now (no cached answer counts).

        Raises DirectoryUnavailable otherwise. The gateway's health checks and probes call it.
        """
        ...
