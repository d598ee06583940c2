"""Fixtures shared by every test folder: a private OpenLDAP slapd (see tests/slapd.py).

- `slapd`: one per test session, with TLS, loaded with the demo city (and its AD-flavoured
  copy). Shared: never modify, stop or pause it.
- `fresh_slapd`: a private instance for one test, free to modify, stop, pause or restart.
- `slapd_factory`: `slapd_factory(tls=False)` starts more private instances (failover tests).
- `kdc`: MIT Kerberos KDCs for TEST.LAN and OTHER.LAN, one per session (see tests/kdc.py), with
  principals for the demo city's people; it points this process's KRB5_CONFIG at its krb5.conf.
- `samba_ad`: a real Active Directory (Samba AD DC, see tests/samba_ad.py), one per session,
  started only when a test asks for it. Shared: change account states only on accounts the
  test creates or restores.
- `rsyslog_factory`: `rsyslog_factory(pki=None, auth_mode="anon")` starts a private rsyslogd
  for one test (see tests/rsyslog.py): a syslog collector over plain TCP, or TLS with `pki`.

Every event loop the tests start (the in-process proxy's, and each `asyncio.run`) is the one
`citygate run` would choose: uvloop by default, the standard loop under
`CITYGATE_EVENT_LOOP=asyncio make test`; the `citygate run` processes the tests start read the
same variable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kdc import Kdc, kdc_available
from postgres import Postgres, PostgresError
from rsyslog import Pki, Rsyslog
from rsyslog import missing_tools as rsyslog_missing
from samba_ad import ActiveDirectory, SambaDC, SambaError, cache_root
from slapd import Slapd, missing_tools

from citygate.proxy.runtime.event_loop import chosen_event_loop


def pytest_configure(config: pytest.Config) -> None:
    if chosen_event_loop() == "uvloop":
        import uvloop

        # A policy, not a loop factory in each test: it reaches every asyncio.run of the suite.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _require_tools() -> None:
    missing = missing_tools()
    if missing:
        pytest.fail(
            f"OpenLDAP tools missing ({', '.join(missing)}); run tools/system-deps "
            "(make test does) or apt-get install slapd ldap-utils",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    _require_tools()
    with Slapd(tmp_path_factory.mktemp("slapd"), tls=True) as server:
        yield server


@pytest.fixture
def slapd_factory(tmp_path: Path) -> Iterator[Callable[..., Slapd]]:
    _require_tools()
    started: list[Slapd] = []

    def start(*, tls: bool = False) -> Slapd:
        server = Slapd(tmp_path / f"slapd-{len(started)}", tls=tls)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def fresh_slapd(slapd_factory: Callable[..., Slapd]) -> Slapd:
    return slapd_factory()


@pytest.fixture
def rsyslog_factory(tmp_path: Path) -> Iterator[Callable[..., Rsyslog]]:
    missing = rsyslog_missing()
    if missing:
        pytest.fail(
            f"rsyslog missing ({', '.join(missing)}); run tools/system-deps (make test does) or "
            f"apt-get install {' '.join(missing)}",
            pytrace=False,
        )
    started: list[Rsyslog] = []

    def start(*, pki: Pki | None = None, auth_mode: str = "anon") -> Rsyslog:
        collector = Rsyslog(tmp_path / f"rsyslog-{len(started)}", pki=pki, auth_mode=auth_mode)
        started.append(collector)
        return collector.start()

    yield start
    for collector in started:
        collector.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL server (see tests/postgres.py), one per session: `postgres.url`."""
    server = Postgres()
    try:
        server.start()
    except PostgresError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


# Kerberos principals for the demo city's people (directory/demo.ldif), with test passwords.
KERBEROS_USERS = {
    "jlee": "jlee-krb",
    "mnguyen": "mnguyen-krb",
    "bjones": "bjones-krb",
    "ahernandez": "ahernandez-krb",  # the Director of Parks, who approves in the request portal
    "nobody": "nobody-krb",
}


@pytest.fixture(scope="session")
def kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kdc]:
    if not kdc_available():
        pytest.fail(
            "MIT Kerberos tools missing; run tools/system-deps (make test does) or "
            "apt-get install krb5-kdc krb5-admin-server krb5-user",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("kdc")
    kdc = Kdc(root)
    kdc.start()
    for name, password in KERBEROS_USERS.items():
        kdc.add_user(name, password)
    # Somebody of the trusted realm whose name is also a granted employee's: refused for the realm.
    kdc.add_user("jlee", "other-jlee-krb", other_realm=True)
    # The proxy runs in this process: the GSSAPI library reads KRB5_CONFIG from its environment,
    # and keeps its replay cache in KRB5RCACHEDIR.
    saved = {name: os.environ.get(name) for name in ("KRB5_CONFIG", "KRB5RCACHEDIR")}
    os.environ["KRB5_CONFIG"] = str(kdc.krb5_conf)
    (root / "rcache").mkdir()
    os.environ["KRB5RCACHEDIR"] = str(root / "rcache")
    try:
        yield kdc
    finally:
        kdc.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def samba_ad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveDirectory]:
    server = SambaDC(tmp_path_factory.mktemp("samba-ad"), cache=cache_root())
    try:
        domain = server.start()
    except SambaError as exc:
        server.stop()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield domain
    finally:
        server.stop()
