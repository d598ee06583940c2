"""Through the proxy: Kerberos (Negotiate) sign-in against a real Active Directory (Samba AD DC).

citygate runs on the demo config with the `active-directory` directory preset pointed at the
session's Samba DC (tests/samba_ad.py) and no `identity.sign_in` key: the preset's default,
Negotiate then Basic. `identity.kerberos` is the keytab the DC exported for
HTTP/proxy.city.test. Clients are real: `kinit` against the DC's KDC, then
`curl --proxy-negotiate -U :` to the proxy by that name.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from harness import CurlResult, ProxyConnection, ProxyRunner, citygate_explain, curl
from samba_ad import ActiveDirectory

from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate

REPO = Path(__file__).resolve().parents[2]
PROXY_HOST = "proxy.city.test"
IN_SCOPE = "http://www.facebook.com/CityOfExampleParks"
SOCIAL = "http://www.facebook.com/"

Tickets = Callable[[str], dict[str, str]]


@pytest.fixture(autouse=True)
def _kerberos_environment_of_the_domain(
    samba_ad: ActiveDirectory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    # The proxy runs in this process and its GSSAPI library reads KRB5_CONFIG from this
    # environment; the `kdc` fixture points it at the MIT KDC's file for the whole session when
    # any test asked for it. The acceptor itself needs only the keytab (a test below proves it
    # with other files); the domain's own file is what a proxy in this domain would have.
    monkeypatch.setenv("KRB5_CONFIG", str(samba_ad.krb5_conf))
    # A replay cache of the test's own, not the machine's /var/tmp one.
    monkeypatch.setenv("KRB5RCACHEDIR", str(tmp_path))
    yield


def write_config(folder: Path, samba_ad: ActiveDirectory, kerberos: dict[str, str] | None = None) -> Path:
    shutil.copytree(REPO / "config", folder / "config")
    config = folder / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["audit"]["directory"] = str(folder / "log")
    # Short caches: a state changed in AD shows within a fraction of a second.
    document["directory"] = {
        "backend": "ldap",
        **samba_ad.directory_options(),
        "cache": {"ttl": 0.2, "negative_ttl": 0.2, "grace": 0},
    }
    # No sign_in: the active-directory preset's default, [negotiate, basic].
    document["identity"] = {
        "kerberos": kerberos or {"keytab": str(samba_ad.keytab), "principal": samba_ad.service_principal}
    }
    config.write_text(yaml.safe_dump(document))
    return config


@pytest.fixture
def start(
    proxy_runner_factory, redirect_addon, samba_ad, tmp_path
) -> Callable[..., tuple[ProxyRunner, Path]]:
    def start(kerberos: dict[str, str] | None = None) -> tuple[ProxyRunner, Path]:
        config = write_config(tmp_path, samba_ad, kerberos)
        proxy = proxy_runner_factory(
            [CityGate(), DecisionLog(), redirect_addon], {"citygate_config": str(config)}
        )
        return proxy, config

    return start


@pytest.fixture
def proxy(start) -> ProxyRunner:
    return start()[0]


@pytest.fixture
def tickets(samba_ad: ActiveDirectory, tmp_path: Path) -> Tickets:
    """tickets(uid) -> a client environment holding uid's ticket from the DC (a fresh ccache)."""

    def get(uid: str) -> dict[str, str]:
        ccache = tmp_path / f"{uid}-{time.monotonic_ns()}.ccache"
        result = samba_ad.kinit(uid, ccache)
        assert result.returncode == 0, result.stderr
        return samba_ad.kerberos_env(ccache)

    return get


def negotiate_curl(proxy: ProxyRunner, url: str, env: dict[str, str], host: str = PROXY_HOST) -> CurlResult:
    """curl --proxy-negotiate to the proxy by `host` (curl asks the KDC for a ticket to HTTP/host)."""
    args = ("--proxy-negotiate", "-U", ":", "-x", f"http://{host}:{proxy.port}")
    return curl(proxy, url, extra_args=(*args, "--resolve", f"{host}:{proxy.port}:127.0.0.1"), env=env)


# --- signed in with a ticket from the domain -----------------------------------------------------


def test_a_granted_employee_with_a_domain_ticket_is_allowed(proxy, plain_upstream, tickets):
    result = negotiate_curl(proxy, IN_SCOPE + "/events", tickets("jlee"))

    assert result.status == 200, (result.body, result.stderr)
    [seen] = plain_upstream.requests
    assert not seen.has_header("Proxy-Authorization")
    line = proxy.wait_for_log("allow reason=granted")
    assert "user=jlee identity=negotiate department=Parks" in line


def test_a_principal_in_another_case_is_the_same_employee(proxy, plain_upstream, samba_ad, tmp_path):
    # AD matches sAMAccountName without case, and a Windows logon keeps the name as typed
    # (JLee@CITY.TEST is the client's principal here): still jlee, with jlee's grant.
    ccache = tmp_path / "typed.ccache"
    signed_in = subprocess.run(
        ["kinit", f"JLee@{samba_ad.realm}"],
        input=samba_ad.password("jlee") + "\n",
        env=samba_ad.kerberos_env(ccache),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert signed_in.returncode == 0, signed_in.stderr

    result = negotiate_curl(proxy, IN_SCOPE, samba_ad.kerberos_env(ccache))

    assert result.status == 200, result.stderr
    assert "user=jlee identity=negotiate" in proxy.wait_for_log("allow reason=granted")


def test_an_ungranted_employee_gets_the_block_page_naming_her_director(proxy, plain_upstream, tickets):
    result = negotiate_curl(proxy, SOCIAL, tickets("mnguyen"))

    assert result.status == 403
    assert "You do not have a grant for this site" in result.body
    assert "Ana Hernandez" in result.body  # the Parks director, read from AD
    assert not plain_upstream.contacted
    assert "user=mnguyen identity=negotiate" in proxy.wait_for_log("deny reason=no_grant")


def test_a_ticket_from_before_the_account_was_disabled_is_refused_by_its_live_status(
    start, samba_ad, tickets
):
    proxy, config = start()
    # A browser that used the proxy before holds its service ticket, good for hours.
    env = tickets("jlee")
    held = subprocess.run(
        ["kvno", samba_ad.service_principal], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert held.returncode == 0, held.stderr
    without = tickets("jlee")  # only a ticket-granting ticket
    samba_ad.disable("jlee")
    try:
        result = negotiate_curl(proxy, IN_SCOPE, env)
        reason = citygate_explain(config, "jlee", SOCIAL)["reason"]
        # The DC itself refuses a disabled account new service tickets: curl sends no token.
        unticketed = negotiate_curl(proxy, IN_SCOPE, without)
    finally:
        samba_ad.enable("jlee")

    assert unticketed.status == 407
    assert result.status == 403, result.stderr
    assert "<dd>employee_disabled</dd>" in result.body
    assert "user=jlee identity=negotiate" in proxy.wait_for_log("deny reason=employee_disabled")
    assert reason == "employee_disabled"


# --- Basic next to Negotiate --------------------------------------------------------------------


def test_basic_with_the_ad_password_is_the_fallback(proxy, plain_upstream, samba_ad):
    result = curl(proxy, IN_SCOPE, proxy_user=f"jlee:{samba_ad.password('jlee')}")

    assert result.status == 200, result.body
    assert "user=jlee identity=basic" in proxy.wait_for_log("allow reason=granted")


def test_the_407_offers_negotiate_bare_then_basic(proxy):
    head = f"GET {IN_SCOPE} HTTP/1.1\r\nHost: www.facebook.com\r\n\r\n".encode()
    with ProxyConnection(proxy) as connection:
        response = connection.request(head)

    assert response.status == 407
    lines = response.raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    challenges = [
        line.partition(":")[2].strip() for line in lines if line.lower().startswith("proxy-authenticate:")
    ]
    assert challenges == ["Negotiate", 'Basic realm="citygate"']


# --- the acceptor needs only its keytab ---------------------------------------------------------


@pytest.mark.parametrize("krb5_config", ["mit-realm", "missing"])
def test_domain_tickets_are_accepted_whatever_krb5_config_names(
    start, tickets, tmp_path, monkeypatch, krb5_config
):
    # A proxy whose krb5.conf knows another realm (or has none at all) still accepts the
    # domain's tickets: the keytab holds the key, and the realm comes from the principal.
    other = tmp_path / "other-krb5.conf"
    if krb5_config == "mit-realm":
        other.write_text(
            "[libdefaults]\n\tdefault_realm = TEST.LAN\n"
            "[realms]\n\tTEST.LAN = {\n\t\tkdc = 127.0.0.1:9\n\t}\n"
            "[domain_realm]\n\t.city.test = TEST.LAN\n"
        )
    env = tickets("jlee")  # the client's environment names the domain's file itself
    monkeypatch.setenv("KRB5_CONFIG", str(other))
    proxy, _ = start()

    assert negotiate_curl(proxy, IN_SCOPE, env).status == 200
    assert "user=jlee identity=negotiate" in proxy.wait_for_log("allow reason=granted")


# --- a keytab that no longer holds the key the ticket is sealed with ----------------------------


def test_a_keytab_exported_before_a_password_change_gets_407_saying_so(start, samba_ad, tickets, tmp_path):
    # The proxy's account got a new password (its key version went up) after the keytab
    # was exported: the DC seals tickets with a key the keytab does not hold.
    host = "stale.city.test"
    spn = f"HTTP/{host}"
    account = samba_ad.add_service("svc-stale-proxy", spn, encryption_types=24)
    keytab = samba_ad.export_keytab(spn, tmp_path / "stale.keytab")
    samba_ad.change_service_password(account)
    proxy, _ = start({"keytab": str(keytab), "principal": f"{spn}@{samba_ad.realm}"})

    result = negotiate_curl(proxy, IN_SCOPE, tickets("jlee"), host=host)

    assert result.status == 407
    line = proxy.wait_for_log("auth_required reason=credentials_invalid")
    assert "identity=negotiate" in line
    assert (
        'detail="the keytab has no key for this ticket (wrong key version: export the keytab again)' in line
    )
