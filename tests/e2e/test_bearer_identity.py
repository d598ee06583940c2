"""Through the proxy: employees identified by SSO tokens (Bearer JWT), and by source address.

citygate runs on the demo config with an `identity:` section whose issuer publishes its keys
on a real JWKS server on 127.0.0.1; the keys are generated here. curl presents the tokens as
`Proxy-Authorization: Bearer ...`, exactly as a managed client would.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from demo_config import demo_config
from harness import curl, tunnel_peer_certificate
from sso import AUDIENCE, DOMAIN, ISSUER, Signer, b64, claims, hmac_token, jwks_server, unsigned_token

from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate

IN_SCOPE = "http://www.facebook.com/CityOfExampleParks"
MAX_TOKEN_BYTES = 4096
BOTH_CHALLENGES = 'Basic realm="citygate", Bearer realm="citygate"'


@pytest.fixture(scope="module")
def key_a() -> Signer:
    return Signer("rsa", kid="city-2026-a")


@pytest.fixture(scope="module")
def key_b() -> Signer:
    return Signer("ec", kid="city-2026-b")


@pytest.fixture(scope="module")
def stranger() -> Signer:
    """Not the city's key, though it claims the city's kid."""
    return Signer("rsa", kid="city-2026-a")


@pytest.fixture
def jwks(key_a):
    with jwks_server(key_a) as server:
        yield server


def write_config(tmp_path: Path, identity: dict) -> Path:
    return demo_config(tmp_path, identity=identity)


def issuer_entry(jwks_url: str) -> dict:
    return {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": jwks_url,
        "claim": "preferred_username",
        "strip_domain": DOMAIN,
        "jwks_refresh_seconds": 1,
    }


@pytest.fixture
def start(proxy_runner_factory, redirect_addon, tmp_path):
    def start(identity: dict):
        config = write_config(tmp_path, identity)
        return proxy_runner_factory(
            [CityGate(), DecisionLog(), redirect_addon], {"citygate_config": str(config)}
        )

    return start


@pytest.fixture
def proxy(start, jwks):
    return start({"issuers": [issuer_entry(jwks.url)], "max_token_bytes": MAX_TOKEN_BYTES})


def bearer(token: str) -> tuple[str, str]:
    return ("--proxy-header", f"Proxy-Authorization: Bearer {token}")


def token_for(signer: Signer, user: str = "jlee", **overrides) -> str:
    return signer.token(claims(preferred_username=f"{user}@{DOMAIN}", **overrides))


def assert_no_token_in_logs(proxy, *tokens: str) -> None:
    logs = "\n".join(proxy.log_lines())
    for token in tokens:
        for part in token.split("."):
            if len(part) > 16:
                assert part not in logs, "a token (or a part of one) reached the log"


# --- allowed and blocked ------------------------------------------------------------------------


def test_a_valid_token_for_a_granted_employee_is_allowed_over_http(proxy, plain_upstream, key_a):
    token = token_for(key_a)
    result = curl(proxy, IN_SCOPE + "/events", extra_args=bearer(token))

    assert result.status == 200, result.body
    [seen] = plain_upstream.requests
    assert seen.target == "/CityOfExampleParks/events"
    assert not seen.has_header("Proxy-Authorization")  # the token never reaches the site
    line = proxy.wait_for_log("allow reason=granted")
    assert "user=jlee identity=bearer department=Parks grant=parks-2026-001" in line
    assert_no_token_in_logs(proxy, token)


def test_a_valid_token_for_a_granted_employee_is_allowed_over_https(proxy, tls_upstream, key_a):
    token = token_for(key_a)
    result = curl(proxy, "https://www.facebook.com/CityOfExampleParks", extra_args=bearer(token))

    assert result.status == 200, result.stderr
    assert result.json()["path"] == "/CityOfExampleParks"
    assert "Proxy-Authorization" not in result.json()["headers"]
    assert "user=jlee identity=bearer" in proxy.wait_for_log("stage=connect")
    assert_no_token_in_logs(proxy, token)


def test_an_ec_signed_token_works_too(start, key_a, key_b):
    with jwks_server(key_a, key_b) as server:
        proxy = start({"issuers": [issuer_entry(server.url)]})
        assert curl(proxy, IN_SCOPE, extra_args=bearer(token_for(key_b))).status == 200


def test_an_ungranted_employee_gets_the_block_page(proxy, plain_upstream, key_a):
    token = token_for(key_a, "mnguyen")
    result = curl(proxy, "http://www.facebook.com/", extra_args=bearer(token))

    assert result.status == 403
    assert "You do not have a grant for this site" in result.body
    assert "Ana Hernandez" in result.body
    assert not plain_upstream.contacted
    line = proxy.wait_for_log("deny reason=no_grant")
    assert "user=mnguyen identity=bearer department=Parks" in line
    assert 'detail="no grant for Facebook"' in line


@pytest.mark.parametrize(
    ("user", "reason"), [("bjones", "employee_disabled"), ("nobody", "unknown_employee")]
)
def test_a_valid_token_for_a_disabled_or_unknown_account_is_refused(
    proxy, plain_upstream, key_a, user, reason
):
    result = curl(proxy, IN_SCOPE, extra_args=bearer(token_for(key_a, user)))

    assert result.status == 403
    assert not plain_upstream.contacted
    assert f"user={user} identity=bearer" in proxy.wait_for_log(f"deny reason={reason}")


def test_without_credentials_the_407_offers_basic_and_bearer(proxy, plain_upstream):
    result = curl(proxy, "http://www.facebook.com/")

    assert result.status == 407
    assert result.headers["proxy-authenticate"] == BOTH_CHALLENGES
    head = result.header_blocks[-1]
    assert 'Proxy-Authenticate: Basic realm="citygate"' in head
    assert 'Proxy-Authenticate: Bearer realm="citygate"' in head
    connect = tunnel_peer_certificate(proxy, "www.facebook.com")
    assert connect["connect_status"] == 407
    assert b'Proxy-Authenticate: Bearer realm="citygate"' in connect["connect_response"]
    assert not plain_upstream.contacted


def test_basic_still_works_next_to_bearer(proxy):
    assert curl(proxy, IN_SCOPE, proxy_user="jlee:jlee-pass").status == 200
    assert "user=jlee identity=basic" in proxy.wait_for_log("allow reason=granted")


def test_ordinary_traffic_never_needs_a_token(proxy, plain_upstream, jwks):
    proxy.wait_for_log("signing key(s) from")  # fetched once at start, in the background
    assert curl(proxy, "http://www.example.org/").status == 200
    assert curl(proxy, "http://www.example.org/", extra_args=bearer("not-a-token")).status == 200
    assert jwks.count() == 1  # ordinary traffic never makes citygate fetch keys


# --- every rejection: 407, and the reason in the log ----------------------------------------------


REJECTIONS = {
    "alg-none": (lambda a, s: unsigned_token(claims()), "alg none is never accepted"),
    "hs256-signed-with-the-public-key": (
        lambda a, s: hmac_token(claims(), a.public_pem(), kid=a.kid),
        "algorithm HS256 is not allowed",
    ),
    "expired": (lambda a, s: a.token(claims(time.time() - 7200)), "token expired at"),
    "not-yet-valid": (lambda a, s: a.token(claims(time.time() + 3600)), "token not yet valid"),
    "wrong-audience": (lambda a, s: a.token(claims(aud="another-app")), "wrong audience"),
    "wrong-issuer": (
        lambda a, s: a.token(claims(iss="https://sts.windows.net/9188040d/")),
        "wrong issuer 'https://sts.windows.net/9188040d/'",
    ),
    "unknown-kid": (lambda a, s: a.token(claims(), kid="city-2025-z"), "unknown kid 'city-2025-z'"),
    "bad-signature": (lambda a, s: s.token(claims()), "bad signature"),
    "malformed-base64": (lambda a, s: "eyJ!!.eyJ.c2ln", "malformed token (not base64url)"),
    "malformed-json": (lambda a, s: f"{b64('{not json')}.{b64({})}.c2ln", "malformed token header"),
    "oversize": (lambda a, s: a.token(claims(groups=["g" * 40] * 120)), "oversize token"),
    "issuer-not-configured": (
        lambda a, s: s.token(claims(iss="https://evil.example/"), kid="evil-1"),
        "issuer not configured: 'https://evil.example/'",
    ),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_each_rejection_answers_407_with_its_reason_in_the_log(proxy, plain_upstream, key_a, stranger, case):
    make, reason = REJECTIONS[case]
    token = make(key_a, stranger)
    if case == "oversize":
        assert len(token) > MAX_TOKEN_BYTES
    # A proxy that has been serving: the issuer's keys are cached (a token signed with one of
    # them but claiming another issuer is then reported as "wrong issuer").
    assert curl(proxy, IN_SCOPE, extra_args=bearer(token_for(key_a))).status == 200
    plain_upstream.reset()
    proxy.clear_logs()

    result = curl(proxy, IN_SCOPE, extra_args=bearer(token))

    assert result.status == 407
    assert result.headers["proxy-authenticate"] == BOTH_CHALLENGES
    assert not plain_upstream.contacted
    line = proxy.wait_for_log("auth_required reason=credentials_invalid")
    assert "user=- identity=bearer" in line
    assert f'detail="{reason}' in line or reason in line.partition("detail=")[2], line
    assert_no_token_in_logs(proxy, token)


def test_a_rejected_token_is_refused_on_connect_too(proxy, tls_upstream, key_a):
    token = key_a.token(claims(time.time() - 7200))
    result = curl(proxy, "https://www.facebook.com/CityOfExampleParks", extra_args=bearer(token))

    assert result.connect_status == 407
    assert not tls_upstream.contacted
    assert 'detail="token expired at' in proxy.wait_for_log("stage=connect")
    assert_no_token_in_logs(proxy, token)


# --- keys: rotation, and never on the event loop ------------------------------------------------


def test_key_rotation_works_without_restarting(proxy, jwks, key_a, key_b):
    old = token_for(key_a)
    assert curl(proxy, IN_SCOPE, extra_args=bearer(old)).status == 200
    assert jwks.count() == 1

    jwks.publish(key_b)  # the provider retires key a and signs with key b
    time.sleep(1.1)  # jwks_refresh_seconds: 1
    new = token_for(key_b)
    assert curl(proxy, IN_SCOPE, extra_args=bearer(new)).status == 200
    assert jwks.count() == 2
    assert curl(proxy, IN_SCOPE, extra_args=bearer(old)).status == 407
    assert "unknown kid 'city-2026-a'" in proxy.wait_for_log("reason=credentials_invalid")
    # Same proxy throughout: loaded once.
    assert len([line for line in proxy.log_lines() if "citygate: loaded" in line]) == 1


def test_no_jwks_fetch_runs_on_the_event_loop_thread(start, jwks, key_a, plain_upstream):
    """The fetch runs in a worker thread; while it waits, the proxy keeps serving others."""
    jwks.delay = 1.5  # a slow identity provider, from the start
    proxy = start({"issuers": [issuer_entry(jwks.url)]})
    loop_thread = proxy.call(threading.get_ident)
    results: dict[str, object] = {}

    def signed_in() -> None:
        started = time.monotonic()
        results["bearer"] = curl(proxy, IN_SCOPE, extra_args=bearer(token_for(key_a)))
        results["bearer_seconds"] = time.monotonic() - started

    worker = threading.Thread(target=signed_in)
    worker.start()
    time.sleep(0.2)  # the bearer request is now waiting on the slow JWKS server
    started = time.monotonic()
    ordinary = curl(proxy, "http://www.example.org/")
    ordinary_seconds = time.monotonic() - started
    worker.join(10)

    assert ordinary.status == 200
    assert ordinary_seconds < 0.5, "ordinary traffic waited for the key fetch"  # ...others did not
    assert results["bearer"].status == 200
    assert results["bearer_seconds"] >= 1.0  # it waited for the keys...
    fetches = [r for r in proxy.log_records if "signing key(s) from" in r.getMessage()]
    assert fetches, proxy.log_lines()
    assert all(record.thread != loop_thread for record in fetches)


# --- source addresses ------------------------------------------------------------------------------


def test_a_device_mapped_to_an_employee_needs_no_sign_in(start, plain_upstream):
    proxy = start({"source_addresses": [{"address": "127.0.0.1", "employee": "jlee"}]})

    assert curl(proxy, IN_SCOPE).status == 200
    assert "user=jlee identity=source_ip department=Parks" in proxy.wait_for_log("allow reason=granted")
    assert curl(proxy, "https://www.facebook.com/CityOfExampleParks").status == 200
    # Credentials win over the address: mnguyen signing in at jlee's device is mnguyen...
    assert curl(proxy, IN_SCOPE, proxy_user="mnguyen:mnguyen-pass").status == 403
    assert "user=mnguyen identity=basic" in proxy.wait_for_log("deny reason=no_grant")
    # ...and a wrong password is refused, not quietly taken as jlee.
    result = curl(proxy, IN_SCOPE, proxy_user="mnguyen:wrong")
    assert result.status == 407
    assert result.headers["proxy-authenticate"] == 'Basic realm="citygate"'  # no issuer: Basic only


def test_a_shared_role_is_refused_social_media_but_not_ordinary_traffic(start, plain_upstream):
    proxy = start({"source_addresses": [{"address": "127.0.0.0/8", "role": "library-kiosk"}]})

    result = curl(proxy, IN_SCOPE)
    assert result.status == 403
    assert "You do not have a grant for this site" in result.body
    line = proxy.wait_for_log("deny reason=no_grant")
    assert "user=library-kiosk identity=source_ip department=-" in line
    assert 'detail="library-kiosk is a shared device role, not an employee' in line
    assert curl(proxy, "http://www.example.org/").status == 200
