"""A directory loaded once from an LDIF file and answered from memory.

For demos, tests and small sites without LDAP. It reads the same LDIF a real OpenLDAP is
seeded with and follows LDAP's rules where they matter to a security decision: uids match
case-insensitively, ppolicy-locked accounts cannot sign in (a permanent lock, 000001010000Z,
is a disabled account; other lock times are locks, `pwdReset: TRUE` a forced password
change), only salted hashes log in.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace

from citygate.directory.bind_answers import ppolicy_state
from citygate.directory.ldif import LdifEntry, LdifError, read_ldif
from citygate.directory.model import BindOutcome, Person
from citygate.directory.passwords import verify_password

log = logging.getLogger(__name__)

_PERSON_CLASSES = frozenset({"inetorgperson"})
_GROUP_CLASSES = frozenset({"groupofnames", "groupofuniquenames"})
_MEMBER_ATTRIBUTES = ("member", "uniquemember")
_SUPPORTED_HASHES = ("{ssha}", "{ssha256}", "{ssha512}")
_DN_SPACES = re.compile(r"\s*([,=])\s*")


class DirectoryConfigError(ValueError):
    """The directory file cannot be used; the message says where and how to fix it."""


def normalize_dn(dn: str) -> str:
    """A DN in a form good enough to compare the DNs a person writes in one LDIF file.

    Not full RFC 4514 matching (no escapes, no attribute-specific rules): a group's
    `member: uid=JLee, ou=People,...` must still find `uid=jlee,ou=people,...`.
    """
    return _DN_SPACES.sub(r"\1", dn.strip()).lower()


@dataclass(frozen=True, slots=True)
class _Account:
    person: Person
    password_hashes: tuple[str, ...]


def _object_classes(entry: LdifEntry) -> set[str]:
    return {value.strip().lower() for value in entry.attributes.get("objectclass", [])}


def _first(entry: LdifEntry, attribute: str) -> str | None:
    values = entry.attributes.get(attribute)
    return values[0] if values else None


class StaticDirectory:
    """The Directory protocol over an in-memory snapshot; never blocks, never unavailable."""

    blocking = False

    def __init__(
        self,
        accounts: dict[str, _Account],
        groups: dict[str, list[Person]],
        group_entries: dict[str, LdifEntry] | None = None,
    ) -> None:
        # Keyed by casefolded uid / lower-cased group cn; use from_ldif() to build one.
        self._accounts = accounts
        self._groups = groups
        self._group_entries = group_entries or {}

    @classmethod
    def from_ldif(cls, path: str | os.PathLike[str]) -> StaticDirectory:
        """Load people and groups from an LDIF file; raises DirectoryConfigError if unusable."""
        name = str(path)
        people = _People(name)
        for entry in _read_entries(path):
            people.add(entry)
        members = _group_members(name, people.group_entries, people.by_dn)
        # Each person learns their groups, and each group its people (sorted by uid).
        accounts = people.accounts
        for group, uids in members.items():
            for uid in uids:
                account = accounts[uid]
                person = replace(account.person, groups=account.person.groups | {group})
                accounts[uid] = replace(account, person=person)
        groups = {
            group: sorted((accounts[uid].person for uid in uids), key=lambda p: p.uid.casefold())
            for group, uids in members.items()
        }
        entries = {cn.strip().lower(): entry for entry in people.group_entries if (cn := _first(entry, "cn"))}
        return cls(accounts, groups, entries)

    def lookup(self, uid: str) -> Person | None:
        account = self._accounts.get(uid.casefold())
        return account.person if account else None

    def authenticate(self, uid: str, password: str) -> BindOutcome:
        account = self._accounts.get(uid.casefold())
        if account is None or not password:
            return BindOutcome.WRONG_PASSWORD
        # A list, not any(): compare against every stored hash so timing does not depend on
        # which one (if any) matched.
        results = [verify_password(stored, password) for stored in account.password_hashes]
        if not any(results):
            return BindOutcome.WRONG_PASSWORD
        # Only the right password learns the account's state, as from a directory.
        return BindOutcome.of_state(account.person.state)

    def group_members(self, group: str) -> list[Person]:
        return list(self._groups.get(group.strip().lower(), []))

    def group_attribute(self, group: str, attribute: str) -> str | None:
        entry = self._group_entries.get(group.strip().lower())
        value = _first(entry, attribute.lower()) if entry is not None else None
        return value.strip() or None if value is not None else None

    def check(self) -> None:
        """Always answers: the directory is in memory."""


def _read_entries(path: str | os.PathLike[str]) -> list[LdifEntry]:
    """The file's entries; DirectoryConfigError, saying what to fix, when it cannot be read."""
    name = str(path)
    try:
        return read_ldif(path)
    except LdifError as error:
        raise DirectoryConfigError(str(error)) from error
    except FileNotFoundError:
        raise DirectoryConfigError(
            f"{name}: directory file not found; check the path in the configuration"
        ) from None
    except OSError as error:
        raise DirectoryConfigError(
            f"{name}: cannot read the directory file ({error.strerror}); "
            "check that it exists and is readable by the proxy's user"
        ) from None


@dataclass
class _People:
    """The people of an LDIF file, entry by entry; the groups are kept to be read once all are known."""

    name: str  # the file, for messages
    accounts: dict[str, _Account] = field(default_factory=dict)  # casefolded uid -> account
    first_line: dict[str, int] = field(default_factory=dict)  # casefolded uid -> line of its entry
    by_dn: dict[str, str] = field(default_factory=dict)  # normalized DN -> casefolded uid
    group_entries: list[LdifEntry] = field(default_factory=list)
    seen_dns: dict[str, int] = field(default_factory=dict)  # normalized DN -> line of its entry

    def add(self, entry: LdifEntry) -> None:
        dn = normalize_dn(entry.dn)
        if dn in self.seen_dns:
            raise DirectoryConfigError(
                f"{self.name}:{entry.line}: dn {entry.dn!r} already used on line "
                f"{self.seen_dns[dn]}; remove or rename one of the two entries"
            )
        self.seen_dns[dn] = entry.line
        classes = _object_classes(entry)
        if classes & _GROUP_CLASSES:
            self.group_entries.append(entry)
        if not classes & _PERSON_CLASSES:
            return
        account = _account(self.name, entry)
        key = account.person.uid.casefold()
        if key in self.accounts:
            raise DirectoryConfigError(
                f"{self.name}:{entry.line}: uid {account.person.uid!r} is already used by the "
                f"entry on line {self.first_line[key]} (uids are case-insensitive); "
                "give each person a unique uid"
            )
        self.accounts[key] = account
        self.first_line[key] = entry.line
        self.by_dn[dn] = key


def _group_members(name: str, group_entries: list[LdifEntry], by_dn: dict[str, str]) -> dict[str, set[str]]:
    """Each group's name (lower-case cn) -> the casefolded uids of its members who are people."""
    members: dict[str, set[str]] = {}
    for entry in group_entries:
        group = _first(entry, "cn")
        if not group:
            raise DirectoryConfigError(f"{name}:{entry.line}: group {entry.dn!r} has no cn; add a `cn:` line")
        uids = members.setdefault(group.strip().lower(), set())
        for attribute in _MEMBER_ATTRIBUTES:
            for member_dn in entry.attributes.get(attribute, []):
                # Non-person members (placeholders for empty groupOfNames, nested groups)
                # grant nothing, so they are skipped rather than rejected.
                uid = by_dn.get(normalize_dn(member_dn))
                if uid is not None:
                    uids.add(uid)
    return members


def _account(path: str, entry: LdifEntry) -> _Account:
    uids = entry.attributes.get("uid", [])
    if not uids or not uids[0].strip():
        raise DirectoryConfigError(
            f"{path}:{entry.line}: person {entry.dn!r} has no uid; add a `uid:` line with the login name"
        )
    if len(uids) > 1:
        raise DirectoryConfigError(
            f"{path}:{entry.line}: person {entry.dn!r} has {len(uids)} uid values; "
            "keep one uid per person so a login name means one account"
        )
    uid = uids[0].strip()
    hashes = tuple(entry.attributes.get("userpassword", []))
    for stored in hashes:
        if not stored.lower().startswith(_SUPPORTED_HASHES):
            # Loading still succeeds (one bad entry should not lock out everyone), but the
            # administrator should know this person cannot log in.
            log.warning(
                "%s:%d: userPassword of %r is not {SSHA}, {SSHA256} or {SSHA512} and will "
                "never match; store a salted hash",
                path,
                entry.line,
                uid,
            )
    # A blank departmentNumber means "no department", not a department named "".
    department = (_first(entry, "departmentnumber") or "").strip() or None
    person = Person(
        uid=uid,
        name=_first(entry, "displayname") or _first(entry, "cn") or uid,
        department=department,
        title=_first(entry, "title"),
        state=ppolicy_state(entry.attributes),
        mail=_first(entry, "mail"),
    )
    return _Account(person=person, password_hashes=hashes)
