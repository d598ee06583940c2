"""Through the proxy: employees signed in with Kerberos (Negotiate), against a real MIT KDC.

citygate runs on the demo config with `identity.kerberos` naming a keytab exported from the
session's KDC (tests/kdc.py). Clients are real: `curl --proxy-negotiate -U :` after `kinit`, and
for crafted cases (a replayed token, garbage, a CONNECT retried after a 407, a kept-alive
connection) a raw connection carrying tokens made by the GSSAPI library, as a browser would.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import gssapi
import pytest
from demo_config import demo_config
from harness import ProxyConnection, curl
from kdc import OTHER_REALM, PROXY_HOST, SERVICE
from test_metrics import scrape, values

from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

IN_SCOPE = "http://www.facebook.com/CityOfExampleParks"
SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
PASSWORDS = {"jlee": "jlee-krb", "mnguyen": "mnguyen-krb", "bjones": "bjones-krb"}


@pytest.fixture(scope="module")
def keytab(kdc, tmp_path_factory) -> Path:
    return kdc.service_keytab(SERVICE, tmp_path_factory.mktemp("keytab") / "proxy.keytab")


@pytest.fixture
def tickets(kdc, tmp_path):
    """tickets(user) -> the environment of a client holding `user`'s ticket (a fresh ccache)."""

    def get(user: str, *, realm: str | None = None, password: str | None = None, lifetime: str | None = None):
        principal = f"{user}@{realm}" if realm else user
        ccache = tmp_path / f"{user}-{realm or 'test'}-{time.monotonic_ns()}.ccache"
        return kdc.kinit(principal, password or PASSWORDS[user], ccache, lifetime=lifetime)

    return get


def write_config(tmp_path: Path, identity: dict) -> Path:
    return demo_config(tmp_path, identity=identity, metrics={"listen": "127.0.0.1:0"})


@pytest.fixture
def start(proxy_runner_factory, redirect_addon, tmp_path, keytab):
    def start(sign_in: list[str], *, metrics: Metrics | None = None):
        identity = {"sign_in": sign_in, "kerberos": {"keytab": str(keytab), "principal": SERVICE}}
        config = write_config(tmp_path, identity)
        addons = [CityGate(), DecisionLog(), *([metrics] if metrics else []), redirect_addon]
        return proxy_runner_factory(addons, {"citygate_config": str(config)})

    return start


@pytest.fixture
def proxy(start):
    return start(["negotiate", "basic"])


def negotiate_curl(proxy, url: str, env: dict[str, str], *more: str):
    """curl --proxy-negotiate to the proxy by its Kerberos host name (curl asks for HTTP@proxy.test.lan)."""
    port = proxy.port
    args = (
        "--proxy-negotiate",
        "-U",
        ":",
        "-x",
        f"http://{PROXY_HOST}:{port}",
        "--resolve",
        f"{PROXY_HOST}:{port}:127.0.0.1",
    )
    return curl(proxy, url, extra_args=(*args, *more), env=env)


def spnego_token(env: dict[str, str]) -> str:
    """A Negotiate token for the proxy from the ticket cache in `env`, as a browser makes it."""
    credentials = gssapi.Credentials(usage="initiate", store={"ccache": env["KRB5CCNAME"]})
    target = gssapi.Name(f"HTTP@{PROXY_HOST}", gssapi.NameType.hostbased_service)
    context = gssapi.SecurityContext(name=target, creds=credentials, usage="initiate", mech=SPNEGO)
    return base64.b64encode(context.step()).decode()


def get(url: str, authorization: str | None = None) -> bytes:
    host = url.split("/")[2]
    head = f"GET {url} HTTP/1.1\r\nHost: {host}\r\n"
    if authorization is not None:
        head += f"Proxy-Authorization: {authorization}\r\n"
    return (head + "\r\n").encode()


def assert_no_token_in_logs(proxy, *tokens: str) -> None:
    logs = "\n".join(proxy.log_lines())
    for token in tokens:
        for start in range(0, len(token) - 24, 24):
            assert token[start : start + 24] not in logs, "a token (or a part of one) reached the log"


# --- signed in ------------------------------------------------------------------------------------


def test_a_ticket_of_a_granted_employee_is_allowed_over_http(proxy, plain_upstream, tickets):
    result = negotiate_curl(proxy, IN_SCOPE + "/events", tickets("jlee"))

    assert result.status == 200, (result.body, result.stderr)
    [seen] = plain_upstream.requests
    assert not seen.has_header("Proxy-Authorization")  # the token never reaches the site
    line = proxy.wait_for_log("allow reason=granted")
    assert "user=jlee identity=negotiate department=Parks grant=parks-2026-001" in line


def test_a_ticket_of_a_granted_employee_is_allowed_over_https(proxy, tls_upstream, tickets):
    result = negotiate_curl(proxy, "https://www.facebook.com/CityOfExampleParks", tickets("jlee"))

    assert result.status == 200, result.stderr
    assert "Proxy-Authorization" not in result.json()["headers"]
    assert "user=jlee identity=negotiate" in proxy.wait_for_log("stage=connect")


def test_an_ungranted_employee_gets_the_block_page(proxy, plain_upstream, tickets):
    result = negotiate_curl(proxy, "http://www.facebook.com/", tickets("mnguyen"))

    assert result.status == 403
    assert "You do not have a grant for this site" in result.body
    assert not plain_upstream.contacted
    assert "user=mnguyen identity=negotiate department=Parks" in proxy.wait_for_log("deny reason=no_grant")


def test_a_disabled_account_with_a_valid_ticket_is_refused_by_its_live_status(proxy, tickets):
    # The KDC still issues tickets; the directory says the account is disabled.
    result = negotiate_curl(proxy, IN_SCOPE, tickets("bjones"))

    assert result.status == 403
    assert "user=bjones identity=negotiate" in proxy.wait_for_log("deny reason=employee_disabled")


def test_the_407_offers_negotiate_bare_then_basic(proxy):
    with ProxyConnection(proxy) as connection:
        response = connection.request(get(IN_SCOPE))
    assert response.status == 407
    head = response.raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    challenges = [
        line.partition(":")[2].strip() for line in head if line.lower().startswith("proxy-authenticate:")
    ]
    assert challenges == ["Negotiate", 'Basic realm="citygate"']


# --- refused: 407 and the reason in the log, and the proxy keeps serving ---------------------------


def refused(proxy, authorization: str) -> str:
    """Send one request with `authorization`; assert the 407 and return its decision log line."""
    proxy.clear_logs()
    with ProxyConnection(proxy) as connection:
        response = connection.request(get(IN_SCOPE, authorization))
    assert response.status == 407
    line = proxy.wait_for_log("auth_required reason=credentials_invalid")
    assert "user=- identity=negotiate" in line
    return line


def test_a_replayed_token_is_refused(proxy, plain_upstream, tickets):
    token = spnego_token(tickets("jlee"))
    with ProxyConnection(proxy) as connection:
        assert connection.request(get(IN_SCOPE, f"Negotiate {token}")).status == 200

    line = refused(proxy, f"Negotiate {token}")

    assert 'detail="a replayed Negotiate token' in line
    assert_no_token_in_logs(proxy, token)


def test_a_ticket_of_another_realm_is_refused(proxy, plain_upstream, tickets):
    # jlee@OTHER.LAN has a real ticket for the proxy (OTHER.LAN is trusted), but is not the city's jlee.
    token = spnego_token(tickets("jlee", realm=OTHER_REALM, password="other-jlee-krb"))

    line = refused(proxy, f"Negotiate {token}")

    assert f"realm {OTHER_REALM}, which is not accepted" in line
    assert not plain_upstream.contacted


def test_curl_with_a_ticket_of_another_realm_gets_407(proxy, tickets):
    env = tickets("jlee", realm=OTHER_REALM, password="other-jlee-krb")
    result = negotiate_curl(proxy, IN_SCOPE, env)

    assert result.status == 407
    assert f"realm {OTHER_REALM}" in proxy.wait_for_log("auth_required reason=credentials_invalid")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Negotiate !!!not-base64!!!", "a malformed Negotiate token (not base64)"),
        ("Negotiate " + base64.b64encode(b"\x60\x03garbage-bytes").decode(), "a malformed Negotiate token"),
        ("Negotiate ", "a Negotiate header without a token"),
    ],
    ids=["not-base64", "garbage-bytes", "empty"],
)
def test_garbage_after_negotiate_is_refused(proxy, tickets, value, reason):
    line = refused(proxy, value)

    assert f'detail="{reason}' in line
    # Still serving.
    assert negotiate_curl(proxy, IN_SCOPE, tickets("jlee")).status == 200


def test_a_token_that_outlived_its_ticket_is_refused(proxy, tickets):
    env = tickets("jlee", lifetime="3s")
    token = spnego_token(env)
    # The ticket's 3 s, then the test krb5.conf's clock skew of 2 s, then some.
    time.sleep(5.5)

    line = refused(proxy, f"Negotiate {token}")

    # Both checks fail by now; which one krb5 reports first varies (seen both here).
    detail = line.partition("detail=")[2]
    assert "ticket has expired" in detail or "outside the allowed clock skew" in detail, detail
    # curl itself sends no token with an expired ticket: a plain 407, credentials required.
    assert negotiate_curl(proxy, IN_SCOPE, env).status == 407
    assert negotiate_curl(proxy, IN_SCOPE, tickets("jlee")).status == 200


# --- Basic next to Negotiate, and without it ------------------------------------------------------


def test_basic_still_works_next_to_negotiate(proxy):
    assert curl(proxy, IN_SCOPE, proxy_user="jlee:jlee-pass").status == 200
    assert "user=jlee identity=basic" in proxy.wait_for_log("allow reason=granted")


def test_basic_is_refused_when_sign_in_leaves_it_out(start, tickets):
    proxy = start(["negotiate"])

    result = curl(proxy, IN_SCOPE, proxy_user="jlee:jlee-pass")

    assert result.status == 407
    assert result.headers["proxy-authenticate"] == "Negotiate"
    line = proxy.wait_for_log("auth_required reason=credentials_invalid")
    assert 'detail="Basic sign-in is turned off (identity.sign_in)"' in line
    assert negotiate_curl(proxy, IN_SCOPE, tickets("jlee")).status == 200


# --- the identity held on its connection -----------------------------------------------------------


def test_a_signed_in_connection_needs_no_token_again_and_no_other_connection_inherits_it(
    proxy, plain_upstream, tickets
):
    token = spnego_token(tickets("jlee"))
    with ProxyConnection(proxy) as connection:
        assert connection.request(get(IN_SCOPE, f"Negotiate {token}")).status == 200
        proxy.clear_logs()
        assert connection.request(get(IN_SCOPE + "/events")).status == 200
        assert "user=jlee identity=negotiate" in proxy.wait_for_log("allow reason=granted")
        # Credentials on the same connection are resolved from themselves, never from the hold.
        assert connection.request(get(IN_SCOPE, "Basic amxlZTp3cm9uZw==")).status == 407
        assert connection.request(get(IN_SCOPE)).status == 407  # the failed sign-in ended the hold

    with ProxyConnection(proxy) as other:
        assert other.request(get(IN_SCOPE)).status == 407


def test_a_connect_retried_with_a_token_after_its_407_opens_the_tunnel(proxy, tickets):
    # Chromium: CONNECT, 407, then the same CONNECT on the same connection with a token.
    connect = b"CONNECT www.facebook.com:443 HTTP/1.1\r\nHost: www.facebook.com:443\r\n"
    with ProxyConnection(proxy) as connection:
        first = connection.request(connect + b"\r\n")
        assert first.status == 407
        token = spnego_token(tickets("jlee"))
        second = connection.request(connect + f"Proxy-Authorization: Negotiate {token}\r\n\r\n".encode())
    assert second.status == 200
    assert "user=jlee identity=negotiate" in proxy.wait_for_log("allow reason=granted")


# --- metrics -------------------------------------------------------------------------------------


def test_handshakes_are_counted_by_result_and_timed(start, tickets):
    metrics = Metrics()
    proxy = start(["negotiate", "basic"], metrics=metrics)
    token = spnego_token(tickets("jlee"))
    with ProxyConnection(proxy) as connection:
        assert connection.request(get(IN_SCOPE, f"Negotiate {token}")).status == 200
    refused(proxy, f"Negotiate {token}")  # replayed
    refused(proxy, "Negotiate !!!")  # not base64: refused before any Kerberos work

    assert metrics.server is not None
    samples = scrape(metrics.server.url)
    counted = values(samples, "citygate_negotiate_handshakes_total", "result")
    assert (counted[("accepted",)], counted[("refused",)], counted.get(("error",), 0)) == (1, 2, 0)
    [(_, count)] = samples["citygate_negotiate_seconds_count"]
    assert count == 3


def test_a_keytab_without_the_proxys_key_refuses_without_a_407_loop(
    proxy_runner_factory, redirect_addon, tmp_path, kdc, tickets
):
    # The proxy's own fault, not the employee's: refused (fail closed) and logged, never a 407.
    kdc.add_service("HTTP/elsewhere.test.lan@TEST.LAN")
    wrong = kdc.service_keytab("HTTP/elsewhere.test.lan@TEST.LAN", tmp_path / "wrong.keytab")
    identity = {"sign_in": ["negotiate"], "kerberos": {"keytab": str(wrong), "principal": SERVICE}}
    proxy = proxy_runner_factory(
        [CityGate(), DecisionLog(), redirect_addon],
        {"citygate_config": str(write_config(tmp_path, identity))},
    )

    result = negotiate_curl(proxy, IN_SCOPE, tickets("jlee"))

    assert result.status == 403
    line = proxy.wait_for_log("deny reason=directory_unavailable")
    assert f"the proxy cannot use its keytab {wrong} for {SERVICE}" in line
    assert "run citygate check" in line


def test_a_connect_on_a_signed_in_connection_uses_its_identity(proxy, tickets):
    token = spnego_token(tickets("jlee"))
    connect = b"CONNECT www.facebook.com:443 HTTP/1.1\r\nHost: www.facebook.com:443\r\n\r\n"
    with ProxyConnection(proxy) as connection:
        assert connection.request(get(IN_SCOPE, f"Negotiate {token}")).status == 200
        proxy.clear_logs()
        assert connection.request(connect).status == 200
    assert "user=jlee identity=negotiate" in proxy.wait_for_log("stage=connect")
