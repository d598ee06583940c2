"""The Directory protocol over a live LDAP directory: OpenLDAP or Active Directory (ldap3).

Every call is blocking network I/O (`blocking = True`): the gateway runs it in a worker thread,
never on mitmproxy's event loop, and caches the answers.

Safety rules this module keeps:
- a login name only reaches a filter through `escape_filter_chars`, and names that no
  directory account could have (control characters, NUL, surrounding spaces, absurd length)
  are answered "no such person" before any query;
- passwords are checked by binding as the person's DN (found by a search as the service
  account) on a separate connection: password hashes are never read; an empty password is
  refused without binding (an empty password makes an unauthenticated bind, which succeeds);
  the bind asks for OpenLDAP's password policy control and reads AD's sub-code, so a refusal
  says whether the password was wrong or the account is disabled, locked, expired, ...
  (bind_answers.py); a wrong password never reveals the account's state;
- everything that means "the directory could not answer" (refused or timed-out connections,
  TLS failures, a refused service account, busy servers, missing bases) raises
  DirectoryUnavailable, never "no such person";
- no ldap3 retry loop or ServerPool: ldap3's ServerPool sleeps POOLING_LOOP_TIMEOUT (10 s)
  after each fruitless cycle, keeps a reference to every Connection it ever served and is not
  thread-safe, and RESTARTABLE retries 30 times. Failover here is explicit: servers in a fixed
  or round-robin order, a failed server skipped for `exhaust` seconds while another one is
  available, at most `retries` further servers per call, every socket bounded by
  `connect_timeout` / `receive_timeout`.
- thread-safe: the service connections are pooled; a connection is used by one thread at a
  time and dropped after any failure, so the next call reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from ldap3 import BASE, DEREF_NEVER, NONE, SIMPLE, SUBTREE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from citygate.directory.bind_answers import (
    PPOLICY_OID,
    ad_bind_outcome,
    ad_state,
    combined_outcome,
    ppolicy_bind_outcome,
    ppolicy_state,
)
from citygate.directory.breaker import GuardSettings
from citygate.directory.model import AccountState, BindOutcome, DirectoryUnavailable, Person

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longer login names are refused without a query (AD's sAMAccountName allows 20 characters).
MAX_LOGIN_LENGTH = 256
#: Longer passwords are refused without a bind.
MAX_PASSWORD_LENGTH = 1024
#: An idle pooled connection older than this is closed rather than reused: firewalls and AD
#: (MaxConnIdleTime) drop idle connections silently, and a dead one would cost a timeout.
IDLE_LIMIT = 30.0
#: Entries per page when listing a group's members (AD returns at most 1000 per search).
PAGE_SIZE = 500
#: Bind results that mean "these credentials do not log in" (not "the directory is down").
_REFUSED_BINDS = {
    48,  # inappropriateAuthentication
    49,  # invalidCredentials (wrong password, unknown DN, ppolicy lock, AD disabled/expired)
    50,  # insufficientAccessRights
    53,  # unwillingToPerform
}
_ACCEPTED_SEARCHES = {0, 4}  # success, sizeLimitExceeded (we asked for a limit)
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49
# The account attributes each way of marking accounts reads (see bind_answers.py).
_STATE_ATTRIBUTES = {
    "ppolicy": ("pwdAccountLockedTime", "pwdReset"),
    "user-account-control": (
        "userAccountControl",
        "msDS-User-Account-Control-Computed",  # AD's live lockout and password-expiry flags
        "lockoutTime",
        "pwdLastSet",
        "accountExpires",
        "logonHours",
    ),
}

DISABLED_MARKERS = ("ppolicy", "user-account-control", "filter")
GROUP_MODES = ("memberof", "search", "in-chain")
#: Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: a member of a group that is a member of a
#: group is a member of both, as Windows itself resolves membership.
IN_CHAIN = "1.2.840.113556.1.4.1941"
STRATEGIES = ("first", "round_robin")

#: What a preset sets; every key can be overridden in the config.
PRESETS: dict[str, dict[str, str]] = {
    "openldap": {
        "login_attribute": "uid",
        "user_filter": "(objectClass=inetOrgPerson)",
        "name_attribute": "displayName",
        "department_attribute": "departmentNumber",
        "title_attribute": "title",
        "mail_attribute": "mail",
        "groups": "memberof",
        "member_of_attribute": "memberOf",
        "group_filter": "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
        "group_name_attribute": "cn",
        "group_member_attribute": "member",
        "disabled": "ppolicy",
    },
    "active-directory": {
        "login_attribute": "sAMAccountName",
        "user_filter": "(&(objectCategory=person)(objectClass=user))",
        "name_attribute": "displayName",
        "department_attribute": "department",
        "title_attribute": "title",
        "mail_attribute": "mail",
        "groups": "in-chain",
        "member_of_attribute": "memberOf",
        "group_filter": "(objectClass=group)",
        "group_name_attribute": "cn",
        "group_member_attribute": "member",
        "disabled": "user-account-control",
    },
}


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """Everything LdapDirectory needs, validated (see directory/ldap_config.py)."""

    servers: tuple[str, ...]
    bind_dn: str
    bind_password: str = field(repr=False)
    user_base: str
    group_base: str
    login_attribute: str
    user_filter: str
    name_attribute: str
    department_attribute: str
    title_attribute: str
    mail_attribute: str
    groups: str
    member_of_attribute: str
    group_filter: str
    group_name_attribute: str
    group_member_attribute: str
    disabled: str
    disabled_filter: str | None = None
    start_tls: bool = False
    ca_file: str | None = None
    strategy: str = "first"
    exhaust: float = 30.0
    retries: int = 1
    connect_timeout: float = 3.0
    receive_timeout: int = 5
    pool_size: int = 8
    # How the gateway bounds and breaks calls to this directory (call_timeout, check_interval, ...).
    guard: GuardSettings = field(default_factory=GuardSettings)


class _Unanswered(Exception):
    """One server did not give a usable answer; the next one may."""


def acceptable_login(uid: object) -> bool:
    """Whether `uid` could be a login name at all; anything else is answered without a query."""
    if not isinstance(uid, str) or not uid or len(uid) > MAX_LOGIN_LENGTH or uid != uid.strip():
        return False
    # Control (incl. NUL), format (zero-width), surrogate, private-use and unassigned characters.
    return not any(unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn") for char in uid)


def _dn_key(dn: str) -> tuple[tuple[str, str], ...]:
    """A DN in a form to compare: attribute types and values lower-cased, spaces trimmed."""
    return tuple((attr.strip().lower(), value.strip().lower()) for attr, value, _ in parse_dn(dn))


def _unescape_rdn_value(value: str) -> str:
    """`Smith\\, John` -> `Smith, John`; `\\4a` -> `J` (RFC 4514 escapes)."""
    out = bytearray()
    i = 0
    raw = value.encode("utf-8")
    while i < len(raw):
        if raw[i] == 0x5C and i + 1 < len(raw):
            pair = raw[i + 1 : i + 3]
            try:
                out.append(int(pair, 16))
                i += 3
                continue
            except ValueError:
                out.append(raw[i + 1])
                i += 2
                continue
        out.append(raw[i])
        i += 1
    return out.decode("utf-8", errors="replace")


class _VerifyingTls(Tls):
    """ldap3's Tls with the standard library's certificate and host name checks.

    ldap3 2.9.1 turns the context's check_hostname off and checks names itself with a
    backport that ignores IP address SANs; a stock `ssl.create_default_context` verifies the
    chain and the name during the handshake instead.
    """

    def __init__(self, ca_file: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        self._context = ssl.create_default_context(cafile=ca_file)

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:  # ldap3 API
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake,
        )


@dataclass(frozen=True, slots=True)
class _Address:
    url: str
    host: str
    port: int
    ssl: bool


def parse_server_url(url: str) -> _Address:
    """ldap://host[:port] or ldaps://host[:port]; ValueError with the reason otherwise."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps"):
        raise ValueError("the URL must start with ldap:// or ldaps://")
    if not parts.hostname:
        raise ValueError("the URL has no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError("give only ldap[s]://host[:port]; set base DNs with user_base / group_base")
    try:
        port = parts.port or (636 if scheme == "ldaps" else 389)
    except ValueError:
        raise ValueError("the port is not a number between 1 and 65535") from None
    return _Address(url.strip(), parts.hostname, port, scheme == "ldaps")


# Binary attributes, kept as hexadecimal text rather than decoded as UTF-8.
_BINARY_ATTRIBUTES = frozenset({"logonhours"})


def _attributes(entry: dict[str, Any]) -> dict[str, list[str]]:
    raw = entry.get("raw_attributes") or {}
    return {name.lower(): [_text(name.lower(), value) for value in values] for name, values in raw.items()}


def _text(name: str, value: object) -> str:
    if not isinstance(value, bytes):
        return str(value)
    return value.hex() if name in _BINARY_ATTRIBUTES else value.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class _Found:
    dn: str
    login: str
    attributes: dict[str, list[str]]


class LdapDirectory:
    """People, groups and passwords from LDAP; see the module docstring for the rules."""

    blocking = True

    def __init__(self, settings: LdapSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._addresses = [parse_server_url(url) for url in settings.servers]
        needs_tls = settings.start_tls or any(address.ssl for address in self._addresses)
        self._tls = _VerifyingTls(settings.ca_file) if needs_tls else None
        self._lock = threading.Lock()
        self._idle: list[list[tuple[Connection, float]]] = [[] for _ in self._addresses]
        self._down_until = [0.0] * len(self._addresses)
        self._last_error = [""] * len(self._addresses)
        self._hung = [False] * len(self._addresses)  # its last failure was a timeout
        self._probe = threading.Lock()  # while every server hangs, one call at a time tries
        self._next = 0
        wanted = [
            settings.login_attribute,
            settings.name_attribute,
            "cn",
            settings.department_attribute,
            settings.title_attribute,
            settings.mail_attribute,
        ]
        if settings.groups == "memberof":
            wanted.append(settings.member_of_attribute)
        wanted += _STATE_ATTRIBUTES.get(settings.disabled, ())
        self._person_attributes = list(dict.fromkeys(wanted))
        self._group_base_key = _dn_key(settings.group_base)

    def __repr__(self) -> str:
        return f"LdapDirectory(servers={list(self.settings.servers)!r}, bind_dn={self.settings.bind_dn!r})"

    # --- the Directory protocol ----------------------------------------------------------

    def lookup(self, uid: str) -> Person | None:
        if not acceptable_login(uid):
            return None

        def find(connection: Connection) -> Person | None:
            found = self._find(connection, uid)
            return None if found is None else self._person(connection, found)

        return self._run(find, f"looking up {uid!r}")

    def authenticate(self, uid: str, password: str) -> BindOutcome:
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_LENGTH:
            return BindOutcome.WRONG_PASSWORD
        if not acceptable_login(uid):
            return BindOutcome.WRONG_PASSWORD

        def find(connection: Connection) -> tuple[str, AccountState] | None:
            found = self._find(connection, uid)
            return None if found is None else (found.dn, self._state(connection, found))

        account = self._run(find, f"looking up {uid!r} to verify a password")
        if account is None:
            return BindOutcome.WRONG_PASSWORD
        dn, known = account
        # Bound even when the attributes say the account cannot sign in: only the right
        # password may learn its state (combined_outcome), and binding a disabled or locked
        # account counts no failure against it.
        return combined_outcome(self._bind_as(dn, password), known)

    def group_members(self, group: str) -> list[Person]:
        name = group.strip() if isinstance(group, str) else ""
        if not acceptable_login(name):
            return []
        return self._run(lambda connection: self._members(connection, name), f"listing group {name!r}")

    def group_attribute(self, group: str, attribute: str) -> str | None:
        name = group.strip() if isinstance(group, str) else ""
        if not acceptable_login(name):
            return None
        s = self.settings

        def read(connection: Connection) -> str | None:
            query = f"(&{s.group_filter}({s.group_name_attribute}={escape_filter_chars(name)}))"
            entries = self._search(connection, s.group_base, query, [attribute])
            values = _attributes(entries[0]).get(attribute.lower(), []) if entries else []
            return str(values[0]).strip() or None if values else None

        return self._run(read, f"reading {attribute} of group {name!r}")

    def check(self) -> None:
        """The gateway's health check: the service account binds (or a pooled connection is
        reused) and the user base can be read; DirectoryUnavailable otherwise."""
        base = self.settings.user_base
        self._run(
            lambda connection: self._search(connection, base, "(objectClass=*)", ["1.1"], scope=BASE),
            "a health check",
        )

    def close(self) -> None:
        """Unbind the pooled service connections (the directory stays usable)."""
        with self._lock:
            idle = [connection for pool in self._idle for connection, _ in pool]
            for pool in self._idle:
                pool.clear()
        for connection in idle:
            _discard(connection)

    # --- queries -------------------------------------------------------------------------

    def _find(self, connection: Connection, uid: str) -> _Found | None:
        s = self.settings
        query = f"(&{s.user_filter}({s.login_attribute}={escape_filter_chars(uid)}))"
        entries = self._search(connection, s.user_base, query, self._person_attributes, size_limit=2)
        if len(entries) > 1:
            log.error(
                "directory: %d entries under %s have %s=%r; treating it as no such person",
                len(entries),
                s.user_base,
                s.login_attribute,
                uid,
            )
            return None
        if not entries:
            return None
        entry = entries[0]
        attributes = _attributes(entry)
        # The server matched by its own rules (which ignore repeated spaces, for one); keep the
        # answer only if it is the name that was asked for, so one spelling means one account.
        wanted = uid.casefold()
        login = next(
            (v for v in attributes.get(s.login_attribute.lower(), []) if v.casefold() == wanted), None
        )
        if login is None:
            return None
        return _Found(entry["dn"], login, attributes)

    def _person(self, connection: Connection, found: _Found) -> Person:
        s = self.settings
        attributes = found.attributes

        def first(name: str) -> str | None:
            values = attributes.get(name.lower())
            return values[0] if values else None

        department = (first(s.department_attribute) or "").strip() or None
        return Person(
            uid=found.login,
            name=first(s.name_attribute) or first("cn") or found.login,
            department=department,
            title=first(s.title_attribute),
            groups=self._groups(connection, found),
            state=self._state(connection, found),
            mail=first(s.mail_attribute),
        )

    def _groups(self, connection: Connection, found: _Found) -> frozenset[str]:
        s = self.settings
        if s.groups == "memberof":
            names: set[str] = set()
            for dn in found.attributes.get(s.member_of_attribute.lower(), []):
                name = self._group_name(connection, dn)
                if name:
                    names.add(name.strip().lower())
            return frozenset(names)
        # in-chain: the groups the person is in directly or through other groups, in one search.
        rule = f":{IN_CHAIN}:" if s.groups == "in-chain" else ""
        query = f"(&{s.group_filter}({s.group_member_attribute}{rule}={escape_filter_chars(found.dn)}))"
        entries = self._search(connection, s.group_base, query, [s.group_name_attribute])
        return frozenset(
            value.strip().lower()
            for entry in entries
            for value in _attributes(entry).get(s.group_name_attribute.lower(), [])[:1]
        )

    def _group_name(self, connection: Connection, dn: str) -> str | None:
        """The name of a memberOf group, if it is under group_base (others grant nothing)."""
        try:
            key = _dn_key(dn)
        except LDAPException:
            return None
        base = self._group_base_key
        if len(key) <= len(base) or key[len(key) - len(base) :] != base:
            return None
        rdn = parse_dn(dn)[0]
        if rdn[0].strip().lower() == self.settings.group_name_attribute.lower():
            return _unescape_rdn_value(rdn[1].strip())
        s = self.settings
        entries = self._search(
            connection, dn, s.group_filter, [s.group_name_attribute], scope=BASE, missing_ok=True
        )
        values = _attributes(entries[0]).get(s.group_name_attribute.lower(), []) if entries else []
        return values[0] if values else None

    def _state(self, connection: Connection, found: _Found) -> AccountState:
        s = self.settings
        state = AccountState.ACTIVE
        if s.disabled == "ppolicy":
            state = ppolicy_state(found.attributes)
        elif s.disabled == "user-account-control":
            state = ad_state(found.attributes, datetime.now(UTC))
            if not found.attributes.get("useraccountcontrol"):
                # Unreadable (an ACL?): an account citygate cannot vouch for (ad_state: disabled).
                log.warning(
                    "directory: %s has no usable userAccountControl; treating it as disabled", found.dn
                )
        if (
            state is AccountState.ACTIVE
            and s.disabled_filter
            and self._search(connection, found.dn, s.disabled_filter, ["1.1"], scope=BASE)
        ):
            state = AccountState.DISABLED
        return state

    def _members(self, connection: Connection, name: str) -> list[Person]:
        s = self.settings
        query = f"(&{s.group_filter}({s.group_name_attribute}={escape_filter_chars(name)}))"
        wanted = [s.group_member_attribute] if s.groups == "search" else []
        groups = self._search(connection, s.group_base, query, wanted or ["1.1"])
        found: dict[tuple[tuple[str, str], ...], _Found] = {}
        login = s.login_attribute.lower()

        def keep(entry: dict[str, Any]) -> None:
            attributes = _attributes(entry)
            logins = attributes.get(login)
            if logins:
                found.setdefault(_dn_key(entry["dn"]), _Found(entry["dn"], logins[0], attributes))

        for group in groups:
            if s.groups in ("memberof", "in-chain"):
                # in-chain: the members of groups inside the group too.
                rule = f":{IN_CHAIN}:" if s.groups == "in-chain" else ""
                query = (
                    f"(&{s.user_filter}({s.member_of_attribute}{rule}={escape_filter_chars(group['dn'])}))"
                )
                for entry in self._search(
                    connection, s.user_base, query, self._person_attributes, paged=True
                ):
                    keep(entry)
                continue
            for member in _attributes(group).get(s.group_member_attribute.lower(), []):
                # Nested groups and placeholders do not match user_filter: they grant nothing.
                for entry in self._search(
                    connection, member, s.user_filter, self._person_attributes, scope=BASE, missing_ok=True
                ):
                    keep(entry)
        people = [self._person(connection, entry) for entry in found.values()]
        return sorted(people, key=lambda person: person.uid.casefold())

    def _search(
        self,
        connection: Connection,
        base: str,
        query: str,
        attributes: list[str],
        *,
        scope: Literal["BASE", "SUBTREE"] = SUBTREE,
        size_limit: int = 0,
        paged: bool = False,
        missing_ok: bool = False,
    ) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        cookie: bytes | None = None
        while True:
            connection.search(
                base,
                query,
                search_scope=scope,
                dereference_aliases=DEREF_NEVER,
                attributes=attributes,
                size_limit=size_limit,
                time_limit=self.settings.receive_timeout,
                paged_size=PAGE_SIZE if paged else None,
                paged_cookie=cookie,
            )
            result = connection.result or {}
            code = result.get("result")
            if code == _NO_SUCH_OBJECT and missing_ok:
                return entries
            if code not in _ACCEPTED_SEARCHES:
                raise _Unanswered(
                    f"search under {base!r} failed: {result.get('description')} {result.get('message') or ''}".strip()
                )
            entries += [item for item in connection.response or [] if item.get("type") == "searchResEntry"]
            control = (result.get("controls") or {}).get("1.2.840.113556.1.4.319") or {}
            cookie = (control.get("value") or {}).get("cookie") if paged else None
            if not cookie:
                return entries

    # --- connections and failover --------------------------------------------------------

    def _order(self) -> list[int]:
        """Servers to try: healthy ones in strategy order, then the ones cooling down."""
        count = len(self._addresses)
        now = self._clock()
        with self._lock:
            start = 0
            if self.settings.strategy == "round_robin":
                start, self._next = self._next, (self._next + 1) % count
            rotated = [(start + i) % count for i in range(count)]
            healthy = [i for i in rotated if self._down_until[i] <= now]
            cooling = sorted(
                (i for i in rotated if self._down_until[i] > now), key=self._down_until.__getitem__
            )
        return healthy + cooling

    def _plan(self, what: str) -> tuple[list[int], bool]:
        """The servers to try, and whether this call is the one probing hung servers.

        When every server timed out within `exhaust` seconds, only one call at a time tries them
        again; the others fail at once instead of each holding a worker thread for a timeout
        (and the calls behind them queueing for those threads). Servers that refuse
        connections fail fast, so then every call tries, and recovery is immediate.
        """
        order = self._order()[: 1 + self.settings.retries]
        now = self._clock()
        with self._lock:
            all_hung = all(self._down_until[i] > now and self._hung[i] for i in order)
            errors = "; ".join(f"{self._addresses[i].url}: {self._last_error[i]}" for i in order)
        if not all_hung:
            return order, False
        if self._probe.acquire(blocking=False):
            return order, True
        raise DirectoryUnavailable(
            f"no LDAP server answered {what}: every server timed out recently ({errors}); "
            "another call is checking whether one answers again"
        )

    def _mark(self, index: int, ok: bool, failure: BaseException | None = None) -> None:
        """Record a server's health; a failed one is skipped for `exhaust` s while others answer."""
        why = _describe(failure) if failure is not None else ""
        with self._lock:
            was_down = self._down_until[index] > 0.0
            self._down_until[index] = 0.0 if ok else self._clock() + self.settings.exhaust
            self._hung[index] = failure is not None and _timed_out(failure)
            self._last_error[index] = why
        url = self._addresses[index].url
        if ok and was_down:
            log.warning("directory: %s answers again", url)
        elif not ok and not was_down:
            log.warning("directory: %s stopped answering: %s", url, why)

    def _connect(self, index: int, user: str, password: str) -> Connection:
        """An open connection to one server (TLS started when configured), not yet bound."""
        address, s = self._addresses[index], self.settings
        server = Server(
            address.host,
            port=address.port,
            use_ssl=address.ssl,
            tls=self._tls,
            get_info=NONE,
            connect_timeout=s.connect_timeout,
        )
        connection = Connection(
            server,
            user=user,
            password=password,
            authentication=SIMPLE,
            client_strategy=SYNC,
            auto_bind=False,
            raise_exceptions=False,
            read_only=True,
            receive_timeout=s.receive_timeout,
            auto_referrals=False,
            auto_range=False,
            check_names=False,
            return_empty_attributes=False,
            auto_escape=False,  # filters are escaped here, explicitly
        )
        try:
            connection.open(read_server_info=False)
            if s.start_tls and not address.ssl and not connection.start_tls(read_server_info=False):
                raise _Unanswered("StartTLS was refused")
        except BaseException:
            _discard(connection)
            raise
        return connection

    def _service_connection(self, index: int) -> tuple[Connection, bool]:
        """A bound service connection to one server and whether it was reused from the pool."""
        now = self._clock()
        stale: list[Connection] = []
        reused: Connection | None = None
        with self._lock:
            pool = self._idle[index]
            while pool:
                connection, since = pool.pop()
                if now - since < IDLE_LIMIT and not connection.closed:
                    reused = connection
                    break
                stale.append(connection)
        for connection in stale:
            _discard(connection)
        if reused is not None:
            return reused, True
        connection = self._connect(index, self.settings.bind_dn, self.settings.bind_password)
        try:
            if not connection.bind(read_server_info=False):
                result = connection.result or {}
                raise _Unanswered(
                    f"the service account {self.settings.bind_dn!r} was refused "
                    f"({result.get('description')}); check bind_dn and its password"
                )
        except BaseException:
            _discard(connection)
            raise
        return connection, False

    def _release(self, index: int, connection: Connection) -> None:
        with self._lock:
            pool = self._idle[index]
            if len(pool) < self.settings.pool_size:
                pool.append((connection, self._clock()))
                return
        _discard(connection)

    def _drop_idle(self, index: int) -> None:
        with self._lock:
            idle, self._idle[index] = self._idle[index], []
        for connection, _ in idle:
            _discard(connection)

    def _run(self, operation: Callable[[Connection], T], what: str) -> T:
        """Run `operation` on a service connection, failing over; DirectoryUnavailable if none answers."""
        order, probing = self._plan(what)
        try:
            failures: list[str] = []
            for index in order:
                try:
                    return self._run_on(index, operation)
                except (LDAPException, OSError, _Unanswered) as exc:
                    url = self._addresses[index].url
                    self._mark(index, ok=False, failure=exc)
                    failures.append(f"{url}: {_describe(exc)}")
                    log.debug("directory: %s failed %s: %s", url, what, _describe(exc))
            raise DirectoryUnavailable(f"no LDAP server answered {what}: {'; '.join(failures)}")
        finally:
            if probing:
                self._probe.release()

    def _run_on(self, index: int, operation: Callable[[Connection], T]) -> T:
        fresh_retry = True
        while True:
            connection: Connection | None = None
            reused = False
            try:
                connection, reused = self._service_connection(index)
                result = operation(connection)
            except (LDAPException, OSError, _Unanswered) as exc:
                if connection is not None:
                    _discard(connection)
                if reused and fresh_retry and not _timed_out(exc):
                    # A pooled connection the server closed (a restart): its siblings are dead
                    # too; try once more on a fresh connection to the same server.
                    self._drop_idle(index)
                    fresh_retry = False
                    continue
                raise
            except BaseException:
                if connection is not None:
                    _discard(connection)
                raise
            self._mark(index, ok=True)
            self._release(index, connection)
            return result

    def _bind_as(self, dn: str, password: str) -> BindOutcome:
        """What binding as `dn` with `password` answers, on a connection of its own (never pooled)."""
        order, probing = self._plan("a password check")
        try:
            failures: list[str] = []
            for index in order:
                url = self._addresses[index].url
                connection: Connection | None = None
                try:
                    connection = self._connect(index, dn, password)
                    # Not critical: a server without ppolicy (AD) ignores it.
                    accepted = connection.bind(read_server_info=False, controls=[(PPOLICY_OID, False, None)])
                    result = connection.result or {}
                    if accepted or result.get("result") in _REFUSED_BINDS:
                        self._mark(index, ok=True)
                        return _bind_outcome(bool(accepted), result)
                    raise _Unanswered(f"bind answered {(connection.result or {}).get('description')}")
                except (LDAPException, OSError, _Unanswered) as exc:
                    self._mark(index, ok=False, failure=exc)
                    failures.append(f"{url}: {_describe(exc)}")
                    log.debug("directory: %s failed verifying a password: %s", url, _describe(exc))
                finally:
                    if connection is not None:
                        _discard(connection)
            raise DirectoryUnavailable(f"no LDAP server answered a password check: {'; '.join(failures)}")
        finally:
            if probing:
                self._probe.release()


def _bind_outcome(accepted: bool, result: dict[str, Any]) -> BindOutcome:
    """A bind's answer as an outcome: the policy control's error (OpenLDAP), the sub-code of
    the message (AD), else accepted or wrong password."""
    control = (result.get("controls") or {}).get(PPOLICY_OID) or {}
    value = control.get("value")
    # ppolicy accepts the bind of an account that must change its password and says so only here.
    stated = ppolicy_bind_outcome(value if isinstance(value, bytes) else None)
    if stated is not None:
        return stated
    if accepted:
        return BindOutcome.OK
    if result.get("result") == _INVALID_CREDENTIALS:
        return ad_bind_outcome(result.get("message")) or BindOutcome.WRONG_PASSWORD
    return BindOutcome.WRONG_PASSWORD


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "timed out" in str(exc).lower()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


def _discard(connection: Connection) -> None:
    """Close a connection without waiting for the server (it may be the reason we close it)."""
    # Best effort: the socket may already be gone.
    with contextlib.suppress(Exception):
        if not connection.closed:
            connection.unbind()
    with contextlib.suppress(Exception):
        connection.strategy.close()


def preset_names() -> Iterable[str]:
    return PRESETS.keys()
