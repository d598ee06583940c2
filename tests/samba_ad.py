"""A private Active Directory for tests: a Samba AD domain controller on a loopback address.

Real Samba (Debian's `samba-ad-dc`; `tools/system-deps` installs it), never a mock. The domain
CITY.TEST holds the demo city (directory/demo.ldif) as Active Directory holds people:

- every demo person under OU=Staff with sAMAccountName = the demo uid, userPrincipalName
  uid@city.test, `department`, `title`, `displayName`, `mail`; password "<uid>-pass" as in the
  demo; bjones (locked in the demo) is disabled (userAccountControl 514);
- the demo's groups (directors, city-managers) under OU=Groups, plus a nested one:
  deputy-city-managers (member ewhite) is itself a member of city-managers;
- accounts in every state a sign-in meets (`STATE_USERS`): disabled, locked (by real failed
  binds when the DC starts: a fine-grained password policy with a lockout threshold of 3
  applies to the accounts `lock()` is given, and only to them), must change password
  (pwdLastSet 0), password expired (set five days ago, under a policy of two days: libfaketime
  dates it), account expired (accountExpires in the past), outside logon hours;
- a lockout threshold of 999 for every person, so the DC counts wrong passwords
  (`bad_password_count`) without locking anybody a test did not mean to lock;
- a service account for citygate's directory reads (`bind_dn`, `bind_password_file`) and one for
  the proxy's Kerberos keytab: SPN HTTP/proxy.city.test with msDS-SupportedEncryptionTypes 24,
  exported with `samba-tool domain exportkeytab` (AES keys; without the attribute Samba
  exports RC4 only).

Samba's LDAP ports (389, 636, 3268, 3269) cannot be changed, so each DC gets a loopback address
of its own (127.x.y.z; the kernel answers all of 127/8), whose ports are checked free first:
sessions running side by side do not collide. Its TLS certificate (from a throw-away CA,
`ca_file`) names dc1.city.test and that address.

Provisioning and loading the directory take most of the time (tens of seconds on a busy
machine), so the loaded domain is built once into a cache folder keyed by the Samba version
and this file's text, and each session starts a copy (a domain unused for a day is removed).
`CITYGATE_SAMBA_CACHE` names the cache folder (default /var/tmp/citygate-samba);
`CITYGATE_SAMBA_CACHE=off` provisions every time.

Typical use (the session fixture `samba_ad` in tests/conftest.py)::

    def test_something(samba_ad, tmp_path):
        options = samba_ad.directory_options()        # a citygate `directory:` section
        assert samba_ad.kinit("jlee", tmp_path / "cc").returncode == 0
        samba_ad.bind_result("bjones", "bjones-pass")  # (49, '... data 533, v1db1')
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ldap3 import MODIFY_ADD, MODIFY_REPLACE, NONE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from slapd import DEMO_LDIF, write_pki

from citygate.directory.ldif import read_ldif

REALM = "CITY.TEST"
DNS_DOMAIN = "city.test"
NETBIOS_DOMAIN = "CITY"
DC_NAME = "dc1"
DC_FQDN = f"{DC_NAME}.{DNS_DOMAIN}"
BASE_DN = "DC=city,DC=test"
STAFF_BASE = f"OU=Staff,{BASE_DN}"
GROUPS_BASE = f"OU=Groups,{BASE_DN}"
SERVICES_BASE = f"OU=Service Accounts,{BASE_DN}"
ADMIN_DN = f"CN=Administrator,CN=Users,{BASE_DN}"
ADMIN_PASSWORD = "Samba-Admin-Pass-1"  # a throw-away test domain
SERVICE_ACCOUNT = "svc-citygate"
SERVICE_DN = f"CN={SERVICE_ACCOUNT},{SERVICES_BASE}"
SERVICE_PASSWORD = "test-ad-service-secret"
PROXY_ACCOUNT = "svc-proxy"
PROXY_SPN = "HTTP/proxy.city.test"
SERVICE_PRINCIPAL = f"{PROXY_SPN}@{REALM}"
LOCKOUT_POLICY_DN = f"CN=lockout-after-3,CN=Password Settings Container,CN=System,{BASE_DN}"
LOCKOUT_THRESHOLD = 3
EXPIRY_POLICY_DN = f"CN=passwords-last-2-days,CN=Password Settings Container,CN=System,{BASE_DN}"
COUNTING_POLICY_DN = f"CN=count-wrong-passwords,CN=Password Settings Container,CN=System,{BASE_DN}"
COUNTING_THRESHOLD = 999  # AD's highest

#: Which account is in which state when the DC has started.
STATE_USERS: Mapping[str, str] = {
    "disabled": "bjones",
    "locked": "lockeduser",
    "must_change_password": "mustchange",
    "password_expired": "oldpassword",
    "account_expired": "expireduser",
    "logon_hours": "nightshift",
}

# Samba listens on these fixed ports (LDAP and GC cannot be moved).
TCP_PORTS = (88, 389, 464, 636, 3268, 3269)
UDP_PORTS = (88, 464)

_UF_NORMAL_ACCOUNT = 0x200
_UF_ACCOUNTDISABLE = 0x2
_UF_DONT_EXPIRE_PASSWD = 0x10000
# Interval attributes are negative counts of 100 ns; this one means "never".
_NEVER = "-9223372036854775808"
_TEN_HOURS = str(-10 * 3600 * 10_000_000)
_TWO_DAYS = str(-2 * 86400 * 10_000_000)  # Samba treats a maximum password age under a day as none
# accountExpires is a FILETIME (100 ns since 1601-01-01); 2020-01-01 is long past.
_EXPIRED_2020 = str(
    (int(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC).timestamp()) + 11_644_473_600) * 10_000_000
)

# The extra people beyond the demo: (uid, full name, department, title).
_EXTRA_PEOPLE = (
    ("ewhite", "Evelyn White", "City Manager", "Deputy City Manager"),
    ("lockeduser", "Lou Locke", "Parks", "Park Ranger"),
    ("mustchange", "Morgan Change", "Parks", "Groundskeeper"),
    ("oldpassword", "Olive Oldham", "Parks", "Park Naturalist"),
    ("expireduser", "Erin Expired", "Parks", "Seasonal Lifeguard"),
    ("nightshift", "Nico Knight", "Police", "Dispatcher"),
)


class SambaError(RuntimeError):
    pass


def missing_tools() -> list[str]:
    tools = ["samba", "samba-tool", "kinit", "klist", "kvno", "faketime"]
    return [tool for tool in tools if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]


def samba_version() -> str:
    return subprocess.run(["samba", "--version"], check=True, capture_output=True, text=True).stdout.strip()


def password_of(uid: str) -> str:
    """Every person's password, as in the demo."""
    return f"{uid}-pass"


def _utf16_password(password: str) -> bytes:
    return f'"{password}"'.encode("utf-16-le")


# --- addresses -------------------------------------------------------------------------------


def ports_taken(address: str) -> list[str]:
    """The ports of `address` Samba needs that something else holds (empty when all are free)."""
    taken = []
    for kind, ports in ((socket.SOCK_STREAM, TCP_PORTS), (socket.SOCK_DGRAM, UDP_PORTS)):
        for port in ports:
            with socket.socket(socket.AF_INET, kind) as sock:
                if kind == socket.SOCK_STREAM:
                    # As Samba binds: connections in TIME_WAIT do not hold a port, a listener does.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((address, port))
                except OSError:
                    taken.append(f"{port}/{'tcp' if kind == socket.SOCK_STREAM else 'udp'}")
    return taken


def free_loopback_address(attempts: int = 20) -> str:
    """A 127.x.y.z address on which every port Samba needs is free."""
    tried = []
    for _ in range(attempts):
        address = f"127.{random.randrange(1, 255)}.{random.randrange(0, 256)}.{random.randrange(2, 255)}"
        taken = ports_taken(address)
        if not taken:
            return address
        tried.append(f"{address} ({', '.join(taken)})")
    raise SambaError(
        "no loopback address has Samba's ports free (need root for ports below 1024); tried "
        + "; ".join(tried)
    )


# --- configuration files ---------------------------------------------------------------------


def _smb_conf(folder: Path, address: str, pki: tuple[Path, Path, Path]) -> str:
    ca, cert, key = pki
    lines = [
        "[global]",
        f"netbios name = {DC_NAME.upper()}",
        f"realm = {REALM}",
        f"workgroup = {NETBIOS_DOMAIN}",
        "server role = active directory domain controller",
        # LDAP and the KDC only: no SMB, RPC, NetBIOS or DNS ports to collide on.
        "server services = ldap, kdc",
        f"interfaces = {address}/8",
        "bind interfaces only = yes",
        f"private dir = {folder / 'private'}",
        f"lock directory = {folder}",
        f"state directory = {folder / 'state'}",
        f"cache directory = {folder / 'cache'}",
        f"binddns dir = {folder / 'bind-dns'}",
        f"pid directory = {folder / 'run'}",
        f"ncalrpc dir = {folder / 'run' / 'ncalrpc'}",
        f"winbindd socket directory = {folder / 'run' / 'winbindd'}",
        f"ntp signd socket directory = {folder / 'run' / 'ntp_signd'}",
        "logging = file",
        f"log file = {folder / 'log' / 'samba.log'}",
        "log level = 1",
        "tls enabled = yes",
        f"tls cafile = {ca}",
        f"tls certfile = {cert}",
        f"tls keyfile = {key}",
    ]
    return "\n\t".join(lines) + "\n"


def krb5_conf(address: str) -> str:
    """A krb5.conf for the domain: the KDC by address, no DNS lookups (loopback only)."""
    return (
        "[libdefaults]\n"
        f"\tdefault_realm = {REALM}\n"
        "\tdns_lookup_kdc = false\n"
        "\tdns_lookup_realm = false\n"
        "\trdns = false\n"
        "\tdns_canonicalize_hostname = false\n"
        "\tudp_preference_limit = 1\n"
        "[realms]\n"
        f"\t{REALM} = {{\n\t\tkdc = {address}:88\n\t}}\n"
        "[domain_realm]\n"
        f"\t.{DNS_DOMAIN} = {REALM}\n"
        f"\t{DNS_DOMAIN} = {REALM}\n"
    )


# --- the domain as tests see it --------------------------------------------------------------


@dataclass(frozen=True)
class ActiveDirectory:
    """A running test domain: where it is, what is in it, and helpers to change account states."""

    address: str
    ca_file: Path
    krb5_conf: Path
    keytab: Path
    bind_password_file: Path
    folder: Path
    people: tuple[str, ...]
    realm: str = REALM
    base_dn: str = BASE_DN
    users_base: str = STAFF_BASE
    groups_base: str = GROUPS_BASE
    bind_dn: str = SERVICE_DN
    bind_password: str = field(default=SERVICE_PASSWORD, repr=False)
    admin_dn: str = ADMIN_DN
    admin_password: str = field(default=ADMIN_PASSWORD, repr=False)
    service_principal: str = SERVICE_PRINCIPAL
    states: Mapping[str, str] = field(default_factory=lambda: dict(STATE_USERS))

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.address}:636"

    @property
    def ldap_url(self) -> str:
        """Plain LDAP: AD refuses simple binds on it (strongerAuthRequired)."""
        return f"ldap://{self.address}:389"

    def password(self, uid: str) -> str:
        return password_of(uid)

    def user_dn(self, uid: str) -> str:
        with self.admin() as connection:
            connection.search(STAFF_BASE, f"(sAMAccountName={escape_filter_chars(uid)})", attributes=["1.1"])
            if len(connection.entries) != 1:
                raise SambaError(f"no single account {uid!r} under {STAFF_BASE}")
            return str(connection.entries[0].entry_dn)

    def group_dn(self, name: str) -> str:
        return f"CN={name},{GROUPS_BASE}"

    # -- citygate configuration --

    def directory_options(self, **overrides: object) -> dict[str, object]:
        """A citygate `directory:` section (without `backend`) with preset active-directory.

        The whole domain is searched (base_dn only), as a city would configure it.
        """
        options: dict[str, object] = {
            "preset": "active-directory",
            "servers": [self.ldaps_url],
            "base_dn": self.base_dn,
            "bind_dn": self.bind_dn,
            "bind_password_file": str(self.bind_password_file),
            "ca_file": str(self.ca_file),
            "connect_timeout": 2,
            "receive_timeout": 3,
        }
        options.update(overrides)
        return options

    # -- Kerberos --

    def kerberos_env(self, ccache: Path | None = None) -> dict[str, str]:
        """os.environ plus KRB5_CONFIG (and KRB5CCNAME) for Kerberos clients of this domain."""
        env = dict(os.environ, KRB5_CONFIG=str(self.krb5_conf))
        if ccache is not None:
            env["KRB5CCNAME"] = f"FILE:{ccache}"
        return env

    def kinit(self, uid: str, ccache: Path, password: str | None = None) -> subprocess.CompletedProcess[str]:
        """`kinit uid@REALM` into `ccache` (the person's own password unless given); not checked."""
        secret = password_of(uid) if password is None else password
        return subprocess.run(
            ["kinit", f"{uid}@{self.realm}"],
            input=secret + "\n",
            env=self.kerberos_env(ccache),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def add_service(self, account: str, spn: str, *, encryption_types: int | None = None) -> str:
        """A new service account `account` holding `spn`; its DN.

        `encryption_types` is msDS-SupportedEncryptionTypes (24: AES); left out, as an
        administrator who runs `setspn` alone leaves it, the domain keys the SPN with RC4 only.
        """
        dn = f"CN={account},{SERVICES_BASE}"
        attributes: dict[str, object] = {"servicePrincipalName": [spn]}
        if encryption_types is not None:
            attributes["msDS-SupportedEncryptionTypes"] = encryption_types
        with self.admin() as connection:
            _add_user(connection, dn, account, "svc-" + os.urandom(16).hex(), attributes)
        return dn

    def change_service_password(self, dn: str) -> None:
        """A new random password for a service account: its key version goes up by one."""
        with self.admin() as connection:
            _set(connection, dn, unicodePwd=_utf16_password("svc-" + os.urandom(16).hex()))

    def export_keytab(self, spn: str, path: Path) -> Path:
        """`samba-tool domain exportkeytab` of `spn`'s current keys into `path` (mode 0600)."""
        result = subprocess.run(
            [
                "samba-tool",
                "domain",
                "exportkeytab",
                str(path),
                f"--principal={spn}",
                "-s",
                str(self.folder / "etc" / "smb.conf"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise SambaError(f"samba-tool domain exportkeytab {spn} failed: {result.stderr[-2000:]}")
        path.chmod(0o600)
        return path

    # -- LDAP as the administrator --

    def _server(self) -> Server:
        # The certificate names dc1.city.test; ldap3's own name check ignores IP addresses.
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca_file), valid_names=[DC_FQDN])
        # No schema read: ldap3 would check values (AD's "never" interval) against its own ideas.
        return Server(self.ldaps_url, use_ssl=True, tls=tls, connect_timeout=5, get_info=NONE)

    @contextlib.contextmanager
    def admin(self) -> Iterator[Connection]:
        connection = Connection(
            self._server(), user=self.admin_dn, password=self.admin_password, receive_timeout=10
        )
        if not connection.bind():
            raise SambaError(f"the Administrator cannot bind: {connection.result}")
        try:
            yield connection
        finally:
            connection.unbind()

    def bind_result(self, who: str, password: str) -> tuple[int, str]:
        """A simple bind over ldaps as `who` (a uid, a DN or user@realm): (result code, message)."""
        user = self.user_dn(who) if "=" not in who and "@" not in who and "\\" not in who else who
        connection = Connection(self._server(), user=user, password=password, receive_timeout=10)
        try:
            connection.bind()
            result = connection.result or {}
            return int(result.get("result", -1)), str(result.get("message", ""))
        finally:
            connection.unbind()

    def modify(self, uid: str, attribute: str, *values: object) -> None:
        dn = self.user_dn(uid)
        with self.admin() as connection:
            if not connection.modify(dn, {attribute: [(MODIFY_REPLACE, list(values))]}):
                raise SambaError(f"setting {attribute} on {dn}: {connection.result}")

    def read(self, uid: str, *attributes: str) -> dict[str, list[str]]:
        dn = self.user_dn(uid)
        with self.admin() as connection:
            connection.search(dn, "(objectClass=*)", search_scope="BASE", attributes=list(attributes))
            entry = (connection.response or [])[0]
            raw = entry["raw_attributes"].items()
            return {name: [value.decode("utf-8", "replace") for value in values] for name, values in raw}

    def bad_password_count(self, uid: str) -> int:
        """badPwdCount as the DC counts it: wrong passwords it really received for `uid`."""
        values = self.read(uid, "badPwdCount").get("badPwdCount") or ["0"]
        return int(values[0])

    # -- account states --

    def disable(self, uid: str) -> None:
        self.modify(uid, "userAccountControl", _UF_NORMAL_ACCOUNT | _UF_ACCOUNTDISABLE)

    def enable(self, uid: str) -> None:
        self.modify(uid, "userAccountControl", _UF_NORMAL_ACCOUNT)

    def lock(self, uid: str) -> None:
        """Lock the account the way AD does: wrong passwords until the lockout policy trips.

        The lockout policy applies to the accounts given to this method only, so a wrong
        password in another test never locks anyone else.
        """
        dn = self.user_dn(uid)
        with self.admin() as connection:
            connection.search(LOCKOUT_POLICY_DN, "(objectClass=*)", "BASE", attributes=["msDS-PSOAppliesTo"])
            policy = (connection.response or [])[0]["raw_attributes"]
            applies = {value.decode().lower() for value in policy.get("msDS-PSOAppliesTo", [])}
            if dn.lower() not in applies and not connection.modify(
                LOCKOUT_POLICY_DN, {"msDS-PSOAppliesTo": [(MODIFY_ADD, [dn])]}
            ):
                raise SambaError(f"putting {dn} under the lockout policy: {connection.result}")
        for _ in range(LOCKOUT_THRESHOLD):
            self.bind_result(dn, "not-" + password_of(uid))
        code, message = self.bind_result(dn, password_of(uid))
        if "data 775" not in message:
            raise SambaError(
                f"{uid} is not locked after {LOCKOUT_THRESHOLD} wrong passwords: {code} {message}"
            )

    def unlock(self, uid: str) -> None:
        self.modify(uid, "lockoutTime", 0)


# --- building the domain ---------------------------------------------------------------------


def _add(connection: Connection, dn: str, classes: list[str], attributes: dict[str, object]) -> None:
    if not connection.add(dn, classes, attributes):
        raise SambaError(f"adding {dn}: {connection.result}")


def _set(connection: Connection, dn: str, **attributes: object) -> None:
    changes = {name: [(MODIFY_REPLACE, [value])] for name, value in attributes.items()}
    if not connection.modify(dn, changes):
        raise SambaError(f"changing {dn}: {connection.result}")


def _add_user(
    connection: Connection, dn: str, uid: str, password: str, attributes: dict[str, object]
) -> None:
    _add(
        connection,
        dn,
        ["top", "person", "organizationalPerson", "user"],
        {"sAMAccountName": uid, "userPrincipalName": f"{uid}@{DNS_DOMAIN}", **attributes},
    )
    _set(connection, dn, unicodePwd=_utf16_password(password))
    _set(connection, dn, userAccountControl=_UF_NORMAL_ACCOUNT)


def _load_city(connection: Connection) -> None:
    """The demo city, the state accounts, the service accounts and the lockout policy."""
    # Demo passwords ("jlee-pass") are too simple for AD's defaults; passwords never expire,
    # so a cached domain stays usable; nobody locks out but the lockout policy's accounts.
    _set(connection, BASE_DN, pwdProperties=0, minPwdLength=0, maxPwdAge=_NEVER, lockoutThreshold=0)
    for ou in (STAFF_BASE, GROUPS_BASE, SERVICES_BASE):
        _add(connection, ou, ["top", "organizationalUnit"], {})

    dn_of: dict[str, str] = {}
    people = [
        entry
        for entry in read_ldif(DEMO_LDIF)
        if "inetorgperson" in map(str.lower, entry.attributes.get("objectclass", []))
    ]
    for entry in people:
        a = entry.attributes
        uid, cn = a["uid"][0], a["cn"][0]
        dn_of[entry.dn.lower()] = dn = f"CN={cn},{STAFF_BASE}"
        details: dict[str, object] = {
            "sn": a["sn"][0],
            "displayName": a["displayname"][0],
            "department": a["departmentnumber"][0],
            "title": a["title"][0],
            "mail": a["mail"][0],
        }
        _add_user(connection, dn, uid, password_of(uid), details)
        if "pwdaccountlockedtime" in a:
            _set(connection, dn, userAccountControl=_UF_NORMAL_ACCOUNT | _UF_ACCOUNTDISABLE)
    extra: dict[str, str] = {}
    for uid, name, department, title in _EXTRA_PEOPLE:
        extra[uid] = dn = f"CN={name},{STAFF_BASE}"
        details = {
            "sn": name.split()[-1],
            "displayName": name,
            "department": department,
            "title": title,
            "mail": f"{uid}@city.example",
        }
        _add_user(connection, dn, uid, password_of(uid), details)
    _set(connection, extra["mustchange"], pwdLastSet=0)
    _set(connection, extra["expireduser"], accountExpires=_EXPIRED_2020)
    _set(connection, extra["nightshift"], logonHours=bytes(21))  # 21 bytes of zero: never

    for entry in read_ldif(DEMO_LDIF):
        if "groupofnames" not in map(str.lower, entry.attributes.get("objectclass", [])):
            continue
        name = entry.attributes["cn"][0]
        members = [dn_of[m.lower()] for m in entry.attributes.get("member", [])]
        _add(
            connection,
            f"CN={name},{GROUPS_BASE}",
            ["top", "group"],
            {"sAMAccountName": name, "member": members},
        )
    deputies = f"CN=deputy-city-managers,{GROUPS_BASE}"
    _add(
        connection,
        deputies,
        ["top", "group"],
        {"sAMAccountName": "deputy-city-managers", "member": [extra["ewhite"]]},
    )
    if not connection.modify(f"CN=city-managers,{GROUPS_BASE}", {"member": [(MODIFY_ADD, [deputies])]}):
        raise SambaError(f"nesting {deputies}: {connection.result}")

    _add_user(connection, SERVICE_DN, SERVICE_ACCOUNT, SERVICE_PASSWORD, {})
    _set(connection, SERVICE_DN, userAccountControl=_UF_NORMAL_ACCOUNT | _UF_DONT_EXPIRE_PASSWD)
    proxy_dn = f"CN={PROXY_ACCOUNT},{SERVICES_BASE}"
    # msDS-SupportedEncryptionTypes 24 = AES128 + AES256, before the keytab is exported.
    _add_user(
        connection,
        proxy_dn,
        PROXY_ACCOUNT,
        "proxy-" + os.urandom(16).hex(),
        {"servicePrincipalName": [PROXY_SPN], "msDS-SupportedEncryptionTypes": 24},
    )
    _set(connection, proxy_dn, userAccountControl=_UF_NORMAL_ACCOUNT | _UF_DONT_EXPIRE_PASSWD)

    # AD counts wrong passwords (badPwdCount) only where a lockout threshold applies: a high
    # one for everybody makes the count visible to tests without locking anyone in practice.
    people_dns = [*dn_of.values(), *extra.values()]
    for dn, precedence, threshold, max_age, applies_to in (
        (EXPIRY_POLICY_DN, 1, 0, _TWO_DAYS, [extra["oldpassword"]]),
        (LOCKOUT_POLICY_DN, 2, LOCKOUT_THRESHOLD, _NEVER, []),
        (COUNTING_POLICY_DN, 3, COUNTING_THRESHOLD, _NEVER, people_dns),
    ):
        _add(
            connection,
            dn,
            ["msDS-PasswordSettings"],
            {
                "msDS-PasswordSettingsPrecedence": precedence,
                "msDS-PasswordReversibleEncryptionEnabled": "FALSE",
                "msDS-PasswordHistoryLength": 0,
                "msDS-PasswordComplexityEnabled": "FALSE",
                "msDS-MinimumPasswordLength": 0,
                "msDS-MinimumPasswordAge": 0,
                "msDS-MaximumPasswordAge": max_age,
                "msDS-LockoutThreshold": threshold,
                "msDS-LockoutObservationWindow": _TEN_HOURS,
                "msDS-LockoutDuration": _TEN_HOURS,
                **({"msDS-PSOAppliesTo": applies_to} if applies_to else {}),
            },
        )


def _set_password_days_ago(dc: Path, uid: str, days: int) -> None:
    """Set `uid`'s password as if `days` ago, so that its two-day maximum age has run out.

    AD lets nobody write pwdLastSet but 0 or -1, so the password is set by samba-tool on the
    domain's database directly, under libfaketime's clock.
    """
    result = subprocess.run(
        [
            "faketime",
            "-f",
            f"-{days}d",
            "samba-tool",
            "user",
            "setpassword",
            uid,
            f"--newpassword={password_of(uid)}",
            "-H",
            f"tdb://{dc / 'private' / 'sam.ldb'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SambaError(f"setting {uid}'s password {days} days ago failed: {result.stderr[-2000:]}")


def _people() -> tuple[str, ...]:
    demo = [
        entry.attributes["uid"][0]
        for entry in read_ldif(DEMO_LDIF)
        if "inetorgperson" in map(str.lower, entry.attributes.get("objectclass", []))
    ]
    return (*demo, *(uid for uid, *_ in _EXTRA_PEOPLE))


# --- the server ------------------------------------------------------------------------------


class SambaDC:
    """One Samba AD DC in `folder`: `start()` returns the ActiveDirectory, `stop()` removes it all."""

    def __init__(self, folder: Path, *, cache: Path | None = None) -> None:
        self.folder = folder
        self.cache = cache
        self.process: subprocess.Popen[bytes] | None = None
        self.timings: dict[str, float] = {}
        self.ad: ActiveDirectory | None = None

    # -- lifecycle --

    def start(self, timeout: float = 60.0) -> ActiveDirectory:
        missing = missing_tools()
        if missing:
            raise SambaError(
                f"Samba AD tools missing ({', '.join(missing)}); run tools/system-deps "
                "(make test does) or apt-get install samba-ad-dc winbind krb5-user ldb-tools faketime"
            )
        if os.geteuid() != 0:
            raise SambaError("the Samba AD DC must run as root (it binds ports 88, 389, 464 and 636)")
        began = time.monotonic()
        dc = self.folder / "dc"
        if self.cache is None:
            self._build(dc)
        else:
            _copy_cached_domain(self.cache, dc, self.timings)
        self.ad = self._launch(dc, timeout)
        locked = time.monotonic()
        self.ad.lock(STATE_USERS["locked"])
        self.timings["lock"] = time.monotonic() - locked
        self.timings["total"] = time.monotonic() - began
        return self.ad

    def _build(self, dc: Path) -> None:
        """Provision and load a domain into `dc` (stopped again afterwards)."""
        if dc.exists():
            shutil.rmtree(dc)
        began = time.monotonic()
        result = subprocess.run(
            [
                "samba-tool",
                "domain",
                "provision",
                f"--targetdir={dc}",
                f"--realm={REALM}",
                f"--domain={NETBIOS_DOMAIN}",
                f"--host-name={DC_NAME}",
                f"--adminpass={ADMIN_PASSWORD}",
                "--server-role=dc",
                "--dns-backend=NONE",
                "--option=interfaces=lo",
                "--option=bind interfaces only=yes",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SambaError(
                f"samba-tool domain provision failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        self.timings["provision"] = time.monotonic() - began
        ad = self._launch(dc, 60.0)
        loaded = time.monotonic()
        with ad.admin() as connection:
            _load_city(connection)
        _set_password_days_ago(dc, STATE_USERS["password_expired"], 5)
        self.timings["load"] = time.monotonic() - loaded
        result = subprocess.run(
            [
                "samba-tool",
                "domain",
                "exportkeytab",
                str(dc / "proxy.keytab"),
                f"--principal={PROXY_SPN}",
                "-s",
                str(dc / "etc" / "smb.conf"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SambaError(f"samba-tool domain exportkeytab failed: {result.stderr}")
        self.stop(remove=False)
        for transient in ("run", "log", "tls", "etc", "cache"):
            shutil.rmtree(dc / transient, ignore_errors=True)
        for path in dc.rglob("*"):
            if path.is_socket():  # ldapi sockets: a copy cannot hold them
                path.unlink()

    def _launch(self, dc: Path, timeout: float) -> ActiveDirectory:
        address = free_loopback_address()
        for transient in ("run", "log", "tls", "etc", "cache"):
            shutil.rmtree(dc / transient, ignore_errors=True)
            (dc / transient).mkdir(parents=True)
        pki = write_pki(dc / "tls", (DC_FQDN, "localhost"), (address,))
        for path in pki:
            path.chmod(0o600)  # Samba refuses a key file others can read
        pki[0].chmod(0o644)
        conf = dc / "etc" / "smb.conf"
        conf.write_text(_smb_conf(dc, address, pki), encoding="utf-8")
        (dc / "etc" / "krb5.conf").write_text(krb5_conf(address), encoding="utf-8")
        password_file = dc / "etc" / "ldap-service-password"
        password_file.write_text(SERVICE_PASSWORD + "\n", encoding="utf-8")
        password_file.chmod(0o600)
        ad = ActiveDirectory(
            address=address,
            ca_file=pki[0],
            krb5_conf=dc / "etc" / "krb5.conf",
            keytab=dc / "proxy.keytab",
            bind_password_file=password_file,
            folder=dc,
            people=_people(),
        )
        began = time.monotonic()
        log = (dc / "log" / "samba.out").open("wb")
        # A session of its own: stop() ends the whole process group.
        self.process = subprocess.Popen(
            ["samba", "-i", "-M", "single", "-s", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise SambaError(f"samba exited at start:\n{self.log_tail(dc)}")
            try:
                with ad.admin():
                    break
            except (LDAPException, OSError, SambaError) as exc:  # not listening yet, or still opening
                if time.monotonic() > deadline:
                    self.stop(remove=False)
                    raise SambaError(
                        f"samba did not answer ldaps within {timeout} s ({exc}):\n{self.log_tail(dc)}"
                    ) from exc
                time.sleep(0.1)
        self.timings["start"] = time.monotonic() - began
        return ad

    def stop(self, *, remove: bool = True) -> None:
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if remove:
            shutil.rmtree(self.folder / "dc", ignore_errors=True)

    @staticmethod
    def log_tail(dc: Path, lines: int = 30) -> str:
        text = ""
        for name in ("samba.out", "samba.log"):
            path = dc / "log" / name
            if path.exists():
                text += path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(no log)"


# --- the cache of loaded domains -------------------------------------------------------------


def cache_root() -> Path | None:
    """Where loaded domains are kept between sessions; None when caching is off."""
    setting = os.environ.get("CITYGATE_SAMBA_CACHE", "/var/tmp/citygate-samba")
    return None if setting.strip().lower() in ("", "off", "0", "no") else Path(setting)


def _cache_key() -> str:
    recipe = samba_version().encode() + Path(__file__).read_bytes() + DEMO_LDIF.read_bytes()
    return hashlib.sha256(recipe).hexdigest()[:16]


def _copy_cached_domain(root: Path, target: Path, timings: dict[str, float]) -> None:
    """Copy the loaded domain for this Samba and this recipe to `target`, built first if missing.

    Everything happens under one lock, so a session never copies a domain another is building
    or pruning. Domains of other recipes (other checkouts, other Samba versions) are kept a day
    after their last use, so checkouts that alternate do not rebuild each time.
    """
    root.mkdir(parents=True, exist_ok=True)
    ready = root / _cache_key()
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ready / "private" / "sam.ldb").exists():
            building = root / f"{ready.name}.building"
            shutil.rmtree(building, ignore_errors=True)
            builder = SambaDC(building)
            try:
                builder._build(building / "dc")
            finally:
                builder.stop(remove=False)
            timings.update(builder.timings)
            (building / "dc").rename(ready)
            shutil.rmtree(building)
        os.utime(ready)
        for stale in root.iterdir():
            if stale.is_dir() and stale != ready and time.time() - stale.stat().st_mtime > 86_400:
                shutil.rmtree(stale, ignore_errors=True)
        copied = time.monotonic()
        shutil.copytree(ready, target, symlinks=True)
        timings["copy"] = time.monotonic() - copied
