"""Private MIT Kerberos KDCs for tests: two realms in a temp dir, on free 127.0.0.1 ports.

Real `krb5kdc`, `kdb5_util`, `kadmin.local` and `kinit` (Debian's `krb5-kdc`, `krb5-admin-server`
and `krb5-user`; `tools/system-deps` installs them). Both realms start in well under a second.

- TEST.LAN is the proxy's realm: `proxy.test.lan` belongs to it (krb5.conf [domain_realm]), so
  a client asks for `HTTP/proxy.test.lan@TEST.LAN`, whose key `service_keytab` exports.
- `requests.test.lan` is the request portal's host, `HTTP/requests.test.lan@TEST.LAN` its principal.
- OTHER.LAN trusts TEST.LAN one way (`krbtgt/TEST.LAN@OTHER.LAN` in both databases): a user of
  OTHER.LAN gets a real ticket for the proxy, which the proxy must refuse for its realm.

One krb5.conf names both realms; it is put in the process's `KRB5_CONFIG` by the session fixture
(tests/conftest.py), because the GSSAPI library in the proxy (in this process) reads it from there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from slapd import free_port

REALM = "TEST.LAN"
OTHER_REALM = "OTHER.LAN"
PROXY_HOST = "proxy.test.lan"
SERVICE = f"HTTP/{PROXY_HOST}@{REALM}"
# The request portal's own name: a browser asks for a ticket for the host it opened.
PORTAL_HOST = "requests.test.lan"
PORTAL_SERVICE = f"HTTP/{PORTAL_HOST}@{REALM}"
_MASTER = "test-kdc-master-secret"  # a throw-away test database
_TRUST = "test-cross-realm-secret"

KDC_BINARY = "/usr/sbin/krb5kdc"


def kdc_available() -> bool:
    return Path(KDC_BINARY).exists() and shutil.which("kinit") is not None


class Realm:
    """One realm's database and its KDC process."""

    def __init__(self, root: Path, name: str, port: int, krb5_conf: Path) -> None:
        self.name = name
        self.port = port
        self.dir = root / name.lower()
        self.dir.mkdir(parents=True)
        self.kdc_conf = self.dir / "kdc.conf"
        self.kdc_conf.write_text(
            f"[kdcdefaults]\n kdc_listen = 127.0.0.1:{port}\n kdc_tcp_listen = 127.0.0.1:{port}\n"
            f"[realms]\n {name} = {{\n  database_name = {self.dir}/principal\n"
            f"  key_stash_file = {self.dir}/stash\n  acl_file = {self.dir}/kadm5.acl\n"
            "  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal rc4-hmac:normal\n"
            "  max_life = 10h\n }\n"
        )
        (self.dir / "kadm5.acl").write_text("")
        self.env = {**os.environ, "KRB5_CONFIG": str(krb5_conf), "KRB5_KDC_PROFILE": str(self.kdc_conf)}
        self.process: subprocess.Popen[bytes] | None = None

    def create(self) -> None:
        self._run(["kdb5_util", "create", "-s", "-r", self.name, "-P", _MASTER])

    def kadmin(self, query: str) -> str:
        return self._run(["kadmin.local", "-r", self.name, "-q", query])

    def start(self) -> None:
        self.process = subprocess.Popen(
            [KDC_BINARY, "-n", "-r", self.name],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"krb5kdc for {self.name} did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)

    def _run(self, argv: list[str]) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0 or "error" in done.stderr.lower():
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout


class Kdc:
    """TEST.LAN and OTHER.LAN, with helpers to add users, get tickets and export keytabs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.krb5_conf = root / "krb5.conf"
        self.realm = Realm(root, REALM, free_port(), self.krb5_conf)
        self.other = Realm(root, OTHER_REALM, free_port(), self.krb5_conf)
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f" default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
            " rdns = false\n dns_canonicalize_hostname = false\n udp_preference_limit = 1\n"
            " permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 rc4-hmac\n"
            " allow_weak_crypto = false\n"
            # Short, so that a token outlives its ticket within a test (the default is 300 s).
            " clockskew = 2\n"
            "[realms]\n"
            f" {REALM} = {{\n  kdc = 127.0.0.1:{self.realm.port}\n }}\n"
            f" {OTHER_REALM} = {{\n  kdc = 127.0.0.1:{self.other.port}\n }}\n"
            "[domain_realm]\n"
            f" .test.lan = {REALM}\n test.lan = {REALM}\n .other.lan = {OTHER_REALM}\n"
            "[capaths]\n"
            f" {OTHER_REALM} = {{\n  {REALM} = .\n }}\n"
        )
        self.env = {**os.environ, "KRB5_CONFIG": str(self.krb5_conf)}

    def start(self) -> None:
        for realm in (self.realm, self.other):
            realm.create()
        # One-way trust: OTHER.LAN's users may get tickets for TEST.LAN's services.
        trust = f"krbtgt/{REALM}@{OTHER_REALM}"
        for realm in (self.realm, self.other):
            realm.kadmin(f"addprinc -pw {_TRUST} {trust}")
        self.realm.kadmin(f"addprinc -randkey {SERVICE}")
        self.realm.kadmin(f"addprinc -randkey {PORTAL_SERVICE}")
        for realm in (self.realm, self.other):
            realm.start()

    def stop(self) -> None:
        for realm in (self.realm, self.other):
            realm.stop()

    def add_user(self, name: str, password: str, *, other_realm: bool = False, options: str = "") -> str:
        """Add a user principal (to OTHER.LAN with `other_realm`); its full name."""
        realm = self.other if other_realm else self.realm
        principal = f"{name}@{realm.name}"
        realm.kadmin(f"addprinc {options} -pw {password} {principal}")
        return principal

    def kinit(
        self, principal: str, password: str, ccache: Path, *, lifetime: str | None = None
    ) -> dict[str, str]:
        """Get a ticket into `ccache`; the environment a client (curl) needs to use it."""
        if "@" not in principal:
            principal = f"{principal}@{REALM}"
        env = {**self.env, "KRB5CCNAME": f"FILE:{ccache}"}
        argv = ["kinit", *(["-l", lifetime] if lifetime else []), principal]
        done = subprocess.run(
            argv, input=password + "\n", env=env, capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"kinit {principal} failed: {done.stderr.strip()}")
        return env

    def service_keytab(
        self, principal: str, path: Path, *, enctypes: str | None = None, keep_kvno: bool = True
    ) -> Path:
        """Export `principal`'s keys to `path` (appended if it exists). `keep_kvno` exports the
        current keys (-norandkey) instead of making new ones, which would invalidate earlier keytabs."""
        realm = self.other if principal.endswith("@" + OTHER_REALM) else self.realm
        flags = "-norandkey " if keep_kvno else ""
        if enctypes:
            flags += f"-e {enctypes} "
        realm.kadmin(f"ktadd -k {path} {flags}{principal}")
        path.chmod(0o600)
        return path

    def add_service(self, principal: str, *, enctypes: str | None = None) -> None:
        """Add a service principal with random keys (of `enctypes`, e.g. rc4-hmac:normal)."""
        realm = self.other if principal.endswith("@" + OTHER_REALM) else self.realm
        flags = f"-e {enctypes} " if enctypes else ""
        realm.kadmin(f"addprinc -randkey {flags}{principal}")
