"""What citygate needs to know about people, and the interface every directory backend offers.

The decision core never talks to a directory: the proxy shell asks a backend for `Person`
records and hands them to the core as plain data. Backends differ (an LDIF file loaded in
memory, a live LDAP / Active Directory), so they all satisfy `Directory` and pass the same
contract tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
    disabled: bool = False
    mail: str | None = None


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

    def authenticate(self, uid: str, password: str) -> bool:
        """Whether this password is the person's current password.

        False for a wrong password, an unknown or disabled account, and an empty password.
        Raises DirectoryUnavailable when the directory cannot answer.
        """
        ...

    def group_members(self, group: str) -> list[Person]:
        """Everyone in the named group (matched case-insensitively), disabled accounts included.

        Raises DirectoryUnavailable when the directory cannot answer.
        """
        ...

    def check(self) -> None:
        """Return when the directory itself answers now (no cached answer counts).

        Raises DirectoryUnavailable otherwise. The gateway's health checks and probes call it.
        """
        ...
