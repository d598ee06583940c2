"""A private OpenLDAP slapd for tests: started in a temp dir on a free 127.0.0.1 port.

Real slapd, real ldapadd/ldapmodify (Debian's `slapd` and `ldap-utils`; `tools/system-deps`
installs them), never ldap3's MOCK strategy. One instance starts in well under a second.

What an instance has:
- suffix dc=city,dc=example on an mdb database, with the `memberof` overlay (entries are
  loaded with ldapadd after start, so memberOf is filled) and `ppolicy` with a default policy
  whose `pwdLockout: TRUE` makes slapd refuse a bind for a `pwdAccountLockedTime` account
  (`ppolicy_use_lockout`: the refusal's policy control says accountLocked), and a stricter
  policy, LOCKOUT_POLICY_DN, for people added with `add_person`: locked after
  LOCKOUT_FAILURES wrong passwords, and `pwdReset: TRUE` means "change your password first";
- directory/demo.ldif itself (ou=people / ou=groups), plus an Active-Directory-flavoured copy
  of the same people under ou=ad (sAMAccountName, userAccountControl 514 for the disabled
  account, `department`, objectClass user/group from a small test schema with Microsoft's OIDs);
- a service account for citygate (SERVICE_DN / SERVICE_PASSWORD) and ACLs like a real site:
  nobody but the entry itself reads userPassword; anonymous users read nothing;
- optionally TLS: ldaps:// on a second port and StartTLS on the plain one, with a throw-away CA
  (`ca_file`) whose server certificate names "localhost" and 127.0.0.1;
- a stats log (`binds()`, `searches()`): what the server really did, to count directory calls.

Typical use (fixtures in tests/conftest.py)::

    def test_something(fresh_slapd):
        fresh_slapd.replace("uid=jlee,ou=people,dc=city,dc=example", "departmentNumber", "Police")
        with fresh_slapd.paused():      # SIGSTOP: a hung server
            ...
        fresh_slapd.stop(); fresh_slapd.start()
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[1]
DEMO_LDIF = REPO / "directory" / "demo.ldif"

SLAPD = "/usr/sbin/slapd"
SUFFIX = "dc=city,dc=example"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "test-admin-secret"  # a throw-away test directory
SERVICE_DN = f"cn=citygate,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "test-service-secret"
PEOPLE_BASE = f"ou=people,{SUFFIX}"
GROUPS_BASE = f"ou=groups,{SUFFIX}"
AD_BASE = f"ou=ad,{SUFFIX}"
AD_USERS_BASE = f"ou=Users,{AD_BASE}"
AD_GROUPS_BASE = f"ou=Groups,{AD_BASE}"

MODULES = ("back_mdb", "memberof", "ppolicy", "pw-sha2")

# Active Directory attributes OpenLDAP lacks, with Microsoft's OIDs. userAccountControl needs
# an ORDERING rule or `>=` filters match nothing. `department` is AD's department attribute.
AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch ORDERING integerOrderingMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.782 NAME 'objectCategory'
  EQUALITY caseIgnoreMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.141 NAME 'department'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP top AUXILIARY
  MAY ( sAMAccountName $ userPrincipalName $ userAccountControl $ objectCategory $ department ) )
objectclass ( 1.2.840.113556.1.5.8 NAME 'group' SUP top AUXILIARY
  MAY ( sAMAccountName $ objectCategory ) )
"""

# Like AD's default lockout threshold, small: the tests show the proxy never reaches it.
LOCKOUT_FAILURES = 3
LOCKOUT_POLICY_DN = f"cn=lockout,ou=policies,{SUFFIX}"

# Loaded after demo.ldif: the ppolicy default policy (without pwdLockout a locked account
# still binds) and citygate's service account.
POLICIES_LDIF = f"""\
dn: ou=policies,{SUFFIX}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,{SUFFIX}
objectClass: device
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE

dn: {LOCKOUT_POLICY_DN}
objectClass: device
objectClass: pwdPolicy
cn: lockout
pwdAttribute: userPassword
pwdLockout: TRUE
pwdMaxFailure: {LOCKOUT_FAILURES}
pwdMustChange: TRUE

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: citygate
userPassword: {SERVICE_PASSWORD}
"""


class SlapdError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_tools() -> list[str]:
    tools = [SLAPD, "ldapadd", "ldapmodify", "slappasswd"]
    return [tool for tool in tools if shutil.which(tool) is None]


# --- LDIF helpers ----------------------------------------------------------------------------


def _records(text: str) -> list[list[tuple[str, str]]]:
    """Entries of a simple LDIF content text as lists of (attribute, value); comments dropped."""
    records: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    lines: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        elif not raw.startswith("#"):
            lines.append(raw)
    for line in [*lines, ""]:
        if not line.strip():
            if current:
                records.append(current)
            current = []
            continue
        name, _, value = line.partition(":")
        if name.lower() == "version":
            continue
        current.append((name, value.strip()))
    return records


def _value(record: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in record if k.lower() == name.lower()), None)


def _values(record: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in record if k.lower() == name.lower()]


def ad_flavoured_ldif(demo: str) -> str:
    """The demo city as an Active Directory would hold it, under ou=ad.

    People are `cn=<full name>,ou=Users,...` with sAMAccountName = the demo uid, `department`
    instead of departmentNumber and userAccountControl 512 (514 = disabled for the account the
    demo locks with ppolicy; no pwdAccountLockedTime here, so slapd itself would let it bind:
    only citygate's userAccountControl check keeps it out, as AD's own refusal would).
    """
    out = [
        f"dn: {AD_BASE}\nobjectClass: organizationalUnit\nou: ad\n",
        f"dn: {AD_USERS_BASE}\nobjectClass: organizationalUnit\nou: Users\n",
        f"dn: {AD_GROUPS_BASE}\nobjectClass: organizationalUnit\nou: Groups\n",
    ]
    new_dn: dict[str, str] = {}
    records = _records(demo)
    for record in records:
        classes = {v.lower() for v in _values(record, "objectClass")}
        if "inetorgperson" not in classes:
            continue
        uid = _value(record, "uid")
        cn = _value(record, "cn")
        dn = f"cn={cn},{AD_USERS_BASE}"
        new_dn[_value(record, "dn").lower()] = dn
        disabled = _value(record, "pwdAccountLockedTime") is not None
        lines = [
            f"dn: {dn}",
            "objectClass: inetOrgPerson",
            "objectClass: user",
            f"cn: {cn}",
            f"sn: {_value(record, 'sn')}",
            f"displayName: {_value(record, 'displayName')}",
            f"sAMAccountName: {uid}",
            f"userPrincipalName: {uid}@city.example",
            "objectCategory: person",
            f"userAccountControl: {514 if disabled else 512}",
            f"department: {_value(record, 'departmentNumber')}",
            f"title: {_value(record, 'title')}",
            f"mail: {_value(record, 'mail')}",
            f"userPassword: {_value(record, 'userPassword')}",
        ]
        out.append("\n".join(lines) + "\n")
    for record in records:
        classes = {v.lower() for v in _values(record, "objectClass")}
        if "groupofnames" not in classes:
            continue
        cn = _value(record, "cn")
        lines = [
            f"dn: cn={cn},{AD_GROUPS_BASE}",
            "objectClass: groupOfNames",
            "objectClass: group",
            f"cn: {cn}",
            f"sAMAccountName: {cn}",
            "objectCategory: group",
        ]
        lines += [f"member: {new_dn[m.lower()]}" for m in _values(record, "member")]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


# --- TLS -------------------------------------------------------------------------------------


def write_pki(
    folder: Path, dns_names: tuple[str, ...] = ("localhost",), addresses: tuple[str, ...] = ("127.0.0.1",)
) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for these names and addresses: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "citygate test LDAP CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(name) for name in dns_names),
                    *(x509.IPAddress(ipaddress.ip_address(address)) for address in addresses),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# --- the server ------------------------------------------------------------------------------


class Slapd:
    """One private slapd. `start()` loads the demo city on the first start only."""

    def __init__(self, folder: Path, *, tls: bool = False, load_demo: bool = True) -> None:
        self.folder = folder
        self.tls = tls
        self.load_demo = load_demo
        self.port = 0
        self.tls_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "slapd.log"
        self._loaded = False
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "db").mkdir(exist_ok=True)
        (folder / "ad.schema").write_text(AD_SCHEMA, encoding="utf-8")
        self.ca_file: Path | None = None
        if tls:
            self.ca_file, self._cert, self._key = write_pki(folder)
        self.config = folder / "slapd.conf"

    # -- addresses --

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """ldaps:// by the name in the certificate (ldap3 checks it)."""
        if not self.tls:
            raise SlapdError("this slapd was started without tls=True")
        return f"ldaps://localhost:{self.tls_port}"

    @property
    def ldaps_url_not_in_certificate(self) -> str:
        """The same ldaps:// server by an address its certificate does not name."""
        if not self.tls:
            raise SlapdError("this slapd was started without tls=True")
        return f"ldaps://127.0.0.2:{self.tls_port}"

    # -- lifecycle --

    def _write_config(self) -> None:
        rootpw = subprocess.run(
            ["slappasswd", "-s", ADMIN_PASSWORD], check=True, capture_output=True, text=True
        ).stdout.strip()
        lines = [
            "include /etc/ldap/schema/core.schema",
            "include /etc/ldap/schema/cosine.schema",
            "include /etc/ldap/schema/inetorgperson.schema",
            f"include {self.folder / 'ad.schema'}",
            "modulepath /usr/lib/ldap",
            *(f"moduleload {module}" for module in MODULES),
            f"pidfile {self.folder / 'slapd.pid'}",
        ]
        if self.tls:
            lines += [
                f"TLSCACertificateFile {self.ca_file}",
                f"TLSCertificateFile {self._cert}",
                f"TLSCertificateKeyFile {self._key}",
            ]
        lines += [
            "database mdb",
            "maxsize 10485760",
            "dbnosync",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ADMIN_DN}"',
            f"rootpw {rootpw}",
            f"directory {self.folder / 'db'}",
            "index objectClass,uid,cn,member,memberOf,sAMAccountName eq",
            "overlay memberof",
            "overlay ppolicy",
            f'ppolicy_default "cn=default,ou=policies,{SUFFIX}"',
            # Without it slapd answers a locked account's bind with a plain invalidCredentials
            # and an empty policy control: citygate could not tell "locked" from a wrong password.
            "ppolicy_use_lockout",
            # Like a real directory: password hashes are for binding only.
            "access to attrs=userPassword",
            "  by self write",
            "  by anonymous auth",
            "  by * none",
            "access to *",
            f'  by dn.exact="{SERVICE_DN}" read',
            "  by self read",
            "  by users read",
            "  by * none",
        ]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 10.0) -> Slapd:
        if self.process is not None:
            raise SlapdError("slapd is already running")
        if not self.config.exists():
            self._write_config()
        for _attempt in range(5):
            if not self.port:
                self.port = free_port()
                self.tls_port = free_port() if self.tls else 0
            if self._launch(timeout):
                break
            if self._loaded:  # the port is part of the test's configuration: do not move it
                raise SlapdError(f"slapd could not listen again on port {self.port}:\n{self.log_tail()}")
            self.port = 0
        else:
            raise SlapdError(f"slapd did not start:\n{self.log_tail()}")
        if self.load_demo and not self._loaded:
            self.add(DEMO_LDIF.read_text(encoding="utf-8"))
            self.add(POLICIES_LDIF)
            self.add(ad_flavoured_ldif(DEMO_LDIF.read_text(encoding="utf-8")))
        self._loaded = True
        return self

    def _launch(self, timeout: float) -> bool:
        urls = self.url + "/"
        if self.tls:
            # 127.0.0.2 is loopback too, but not in the certificate: a name check must refuse it.
            urls += f" ldaps://127.0.0.1:{self.tls_port}/ ldaps://127.0.0.2:{self.tls_port}/"
        log = self.log_path.open("ab")
        # -d stats: stay in the foreground (so the pid is ours) and log every operation.
        self.process = subprocess.Popen(
            [SLAPD, "-f", str(self.config), "-h", urls, "-d", "stats"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.005)
        self.stop()
        raise SlapdError(f"slapd did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a paused slapd cannot act on SIGTERM
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server still accepts TCP connections (the kernel does) but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content (as the administrator, with OpenLDAP's own tools) --

    def _tool(self, tool: str, ldif: str, *args: str) -> None:
        if not self.running:
            raise SlapdError(f"{tool}: slapd is not running")
        result = subprocess.run(
            [tool, "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD, *args],
            input=ldif.encode("utf-8"),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise SlapdError(f"{tool} failed: {result.stderr.decode(errors='replace')}\n{ldif}")

    def add(self, ldif: str) -> None:
        """Add entries (LDIF content) while slapd runs, so the memberof overlay sees them."""
        self._tool("ldapadd", ldif)

    def modify(self, dn: str, changes: Iterable[tuple[str, str, Iterable[str]]]) -> None:
        """Apply ("add" | "replace" | "delete", attribute, values) changes to one entry."""
        parts = [f"dn: {dn}", "changetype: modify"]
        for operation, attribute, values in changes:
            parts.append(f"{operation}: {attribute}")
            parts += [f"{attribute}: {value}" for value in values]
            parts.append("-")
        self._tool("ldapmodify", "\n".join(parts) + "\n")

    def replace(self, dn: str, attribute: str, *values: str) -> None:
        self.modify(dn, [("replace", attribute, values)])

    def delete(self, dn: str) -> None:
        self._tool("ldapmodify", f"dn: {dn}\nchangetype: delete\n")

    def remove_member(self, group_dn: str, member_dn: str) -> None:
        self.modify(group_dn, [("delete", "member", [member_dn])])

    def add_member(self, group_dn: str, member_dn: str) -> None:
        self.modify(group_dn, [("add", "member", [member_dn])])

    def lock(self, dn: str) -> None:
        """Lock an account the OpenLDAP way (ppolicy refuses its binds from now on)."""
        self.replace(dn, "pwdAccountLockedTime", "000001010000Z")

    def add_person(self, uid: str, password: str, *extra: str) -> str:
        """Add a person under LOCKOUT_POLICY_DN (extra: more LDIF lines); their DN."""
        dn = person_dn(uid)
        lines = [
            f"dn: {dn}",
            "objectClass: inetOrgPerson",
            f"uid: {uid}",
            f"cn: {uid}",
            f"sn: {uid}",
            "departmentNumber: Parks",
            f"userPassword: {password}",
            f"pwdPolicySubentry: {LOCKOUT_POLICY_DN}",
            *extra,
        ]
        self.add("\n".join(lines) + "\n")
        return dn

    def locked_out(self, dn: str) -> bool:
        """Whether ppolicy has locked the account (pwdAccountLockedTime set), read as the administrator."""
        result = subprocess.run(
            [
                "ldapsearch",
                "-x",
                "-LLL",
                "-H",
                self.url,
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-b",
                dn,
                "-s",
                "base",
                "(objectClass=*)",
                "pwdAccountLockedTime",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return "pwdAccountLockedTime:" in result.stdout

    def unlock(self, dn: str) -> None:
        self.modify(dn, [("delete", "pwdAccountLockedTime", [])])

    # -- what the server did --

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_text().splitlines()[-lines:])

    def binds(self, dn: str | None = None) -> int:
        """How many simple binds slapd received (for one DN, matched case-insensitively)."""
        found = re.findall(r' BIND dn="([^"]*)" method=128', self.log_text())
        if dn is None:
            return len(found)
        return sum(1 for bound in found if bound.lower() == dn.lower())

    def searches(self) -> int:
        """How many search operations slapd received."""
        return len(re.findall(r" SRCH base=", self.log_text()))


def person_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE_BASE}"


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS_BASE}"


def password_file(folder: Path, password: str = SERVICE_PASSWORD) -> Path:
    path = folder / "ldap-service-password"
    path.write_text(password + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return path


# --- pointing citygate at it -----------------------------------------------------------------


def directory_options(
    server: Slapd, folder: Path, preset: str = "openldap", **overrides: object
) -> dict[str, object]:
    """A citygate `directory:` section (without `backend`) for this slapd.

    preset "openldap" reads ou=people / ou=groups (directory/demo.ldif); "active-directory"
    reads the AD-flavoured copy under ou=ad, its groups by memberOf. The service password goes in
    a file in `folder`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    options: dict[str, object] = {
        "preset": preset,
        "servers": [server.url],
        "base_dn": SUFFIX,
        "bind_dn": SERVICE_DN,
        "bind_password_file": str(password_file(folder)),
        "connect_timeout": 1,
        "receive_timeout": 1,
    }
    if preset == "openldap":
        options |= {"user_base": PEOPLE_BASE, "group_base": GROUPS_BASE}
    else:
        # slapd has no LDAP_MATCHING_RULE_IN_CHAIN (the preset's `in-chain`), but the memberof
        # overlay gives the AD-flavoured copy memberOf; nesting is tested on a real AD (samba_ad.py).
        options |= {"user_base": AD_USERS_BASE, "group_base": AD_GROUPS_BASE, "groups": "memberof"}
    options.update(overrides)
    return options
