"""Bearer token checks with keys generated here: what is accepted, and every way a token is refused.

The verifier is the proxy's own (`TokenVerifier`), with the issuer's keys configured as PEM
keys (no network) and the clock fixed, so leeway boundaries are exact.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sso import AUDIENCE, DOMAIN, ISSUER, Signer, b64, claims, hmac_token, unsigned_token

from citygate.addons.identity import TokenVerifier
from citygate.proxy.identity.config import IdentitySettings, IssuerSettings
from citygate.proxy.identity.tokens import TokenRejected, VerificationKey, parse_jwks, shown

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
LEEWAY = 60


@pytest.fixture(scope="module")
def rsa_key() -> Signer:
    return Signer("rsa", kid="rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> Signer:
    return Signer("ec", kid="ec-1")


@pytest.fixture(scope="module")
def ed_key() -> Signer:
    return Signer("ed25519", kid="ed-1")


@pytest.fixture(scope="module")
def stranger() -> Signer:
    """Someone else's key, published under the city's kid: its signatures must not verify."""
    return Signer("rsa", kid="rsa-1")


def issuer_settings(*signers: Signer, **overrides) -> IssuerSettings:
    values = {
        "issuer": ISSUER,
        "audiences": (AUDIENCE,),
        "keys": tuple(VerificationKey(s.public, s.kid) for s in signers),
        "strip_domains": (DOMAIN,),
        "leeway": LEEWAY,
    }
    values.update(overrides)
    return IssuerSettings(**values)


def check(token: str, *issuers: IssuerSettings, max_token_bytes: int = 16384, now: float = NOW) -> str:
    verifier = TokenVerifier(IdentitySettings(issuers, max_token_bytes=max_token_bytes), clock=lambda: now)
    return asyncio.run(verifier.employee(token))


def rejected(token: str, *issuers: IssuerSettings, **kwargs) -> str:
    with pytest.raises(TokenRejected) as caught:
        check(token, *issuers, **kwargs)
    reason = caught.value.reason
    # The reason is logged: it must never carry the token or any part of it that proves anything.
    for part in token.split("."):
        if len(part) > 16:
            assert part not in reason
    return reason


# --- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa_key", "ec_key", "ed_key"])
def test_a_valid_token_names_the_employee(request, kind):
    signer = request.getfixturevalue(kind)
    issuer = issuer_settings(signer)
    assert check(signer.token(claims(NOW)), issuer) == "jlee"


def test_the_right_key_among_several_is_used(rsa_key, ec_key, ed_key):
    issuer = issuer_settings(rsa_key, ec_key, ed_key)
    for signer in (rsa_key, ec_key, ed_key):
        assert check(signer.token(claims(NOW)), issuer) == "jlee"


def test_a_pem_key_without_kid_verifies_tokens_naming_any_kid(rsa_key):
    issuer = issuer_settings(keys=(VerificationKey(rsa_key.public),))
    assert check(rsa_key.token(claims(NOW), kid="whatever"), issuer) == "jlee"
    assert check(rsa_key.token(claims(NOW), kid=None), issuer) == "jlee"


def test_one_of_several_audiences(rsa_key):
    issuer = issuer_settings(rsa_key, audiences=("api://citygate", "6e74172b"))
    assert check(rsa_key.token(claims(NOW, aud=["other", "6e74172b"])), issuer) == "jlee"


# --- leeway boundaries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exp", "accepted"),
    [
        (NOW + 1, True),
        (NOW - LEEWAY + 1, True),  # expired a minute ago, less a second: forgiven as clock skew
        (NOW - LEEWAY, False),  # exactly the leeway: expired
        (NOW - LEEWAY - 1, False),
    ],
)
def test_expiry_with_leeway(rsa_key, exp, accepted):
    token = rsa_key.token(claims(NOW - 3600, exp=exp))
    if accepted:
        assert check(token, issuer_settings(rsa_key)) == "jlee"
    else:
        assert rejected(token, issuer_settings(rsa_key)).startswith("token expired at ")


@pytest.mark.parametrize(
    ("claim", "value", "accepted"),
    [
        ("nbf", NOW + LEEWAY, True),  # a clock a minute fast is forgiven
        ("nbf", NOW + LEEWAY + 1, False),
        ("iat", NOW + LEEWAY, True),
        ("iat", NOW + LEEWAY + 1, False),
    ],
)
def test_not_before_and_issued_at_with_leeway(rsa_key, claim, value, accepted):
    token = rsa_key.token(claims(NOW, **{claim: value, "exp": NOW + 3600}))
    if accepted:
        assert check(token, issuer_settings(rsa_key)) == "jlee"
    else:
        assert rejected(token, issuer_settings(rsa_key)).startswith("token not yet valid")


def test_leeway_is_configurable(rsa_key):
    token = rsa_key.token(claims(NOW - 3600, exp=NOW - 5))
    assert check(token, issuer_settings(rsa_key, leeway=10)) == "jlee"
    assert rejected(token, issuer_settings(rsa_key, leeway=0)).startswith("token expired")


# --- every rejection -----------------------------------------------------------------------


def test_alg_none_is_refused(rsa_key):
    for alg in ("none", "None", "NONE"):
        reason = rejected(unsigned_token(claims(NOW), alg), issuer_settings(rsa_key))
        assert reason == "alg none is never accepted (an unsigned token proves nothing)"


def test_hs256_signed_with_the_public_key_is_refused(rsa_key):
    """The algorithm-confusion forgery: an attacker MACs a token with the (public) PEM key."""
    forged = hmac_token(claims(NOW), rsa_key.public_pem(), kid=rsa_key.kid)
    reason = rejected(forged, issuer_settings(rsa_key))
    assert reason.startswith("algorithm HS256 is not allowed for https://sso.example.gov/realms/city")
    assert "public keys are never used as secrets" in reason


def test_hs256_with_the_public_key_is_refused_even_where_hs256_is_configured(rsa_key):
    """An issuer explicitly on HS256 checks its own secret, never a public key."""
    secret = b"s" * 32
    issuer = issuer_settings(algorithms=("HS256",), keys=(VerificationKey(secret),))
    assert check(hmac_token(claims(NOW), secret), issuer) == "jlee"
    forged = hmac_token(claims(NOW), rsa_key.public_pem(), kid=rsa_key.kid)
    assert rejected(forged, issuer) == "bad signature"


def test_an_algorithm_the_issuer_does_not_list_is_refused(rsa_key, ec_key):
    issuer = issuer_settings(rsa_key, ec_key, algorithms=("RS256",))
    assert rejected(ec_key.token(claims(NOW)), issuer) == "algorithm ES256 is not allowed for " + ISSUER


def test_a_key_of_the_wrong_type_for_the_algorithm_is_not_used(rsa_key, ec_key):
    # The token says ES256 and names the RSA key's kid.
    token = ec_key.token(claims(NOW), kid=rsa_key.kid)
    reason = rejected(token, issuer_settings(rsa_key))
    assert reason == "no key of the issuer fits algorithm ES256 (key id 'rsa-1')"


def test_expired(rsa_key):
    reason = rejected(rsa_key.token(claims(NOW - 7200)), issuer_settings(rsa_key))
    assert reason == "token expired at 2026-09-21T12:23:20Z (leeway 60 s)"


def test_not_yet_valid(rsa_key):
    reason = rejected(rsa_key.token(claims(NOW + 3600)), issuer_settings(rsa_key))
    assert reason.startswith("token not yet valid: valid from 2026-09-21T15:13:20Z")


def test_wrong_audience(rsa_key):
    assert (
        rejected(rsa_key.token(claims(NOW, aud="another-app")), issuer_settings(rsa_key)) == "wrong audience"
    )
    assert (
        rejected(rsa_key.token(claims(NOW, aud=None)), issuer_settings(rsa_key))
        == "wrong audience (the token names none)"
    )


def test_wrong_issuer(rsa_key):
    """Signed with the city's key but claiming another issuer (e.g. an Entra v1.0 token)."""
    token = rsa_key.token(claims(NOW, iss="https://sts.windows.net/9188040d/"))
    reason = rejected(token, issuer_settings(rsa_key))
    assert reason == f"wrong issuer 'https://sts.windows.net/9188040d/' (expected '{ISSUER}')"


def test_issuer_not_configured(stranger, rsa_key):
    token = stranger.token(claims(NOW, iss="https://evil.example/"), kid="evil-1")
    assert rejected(token, issuer_settings(rsa_key)) == "issuer not configured: 'https://evil.example/'"
    no_iss = stranger.token(claims(NOW, iss=None), kid="evil-1")
    assert rejected(no_iss, issuer_settings(rsa_key)) == "token names no issuer (iss)"


def test_unknown_kid(rsa_key):
    assert rejected(rsa_key.token(claims(NOW), kid="retired-2025"), issuer_settings(rsa_key)) == (
        "unknown kid 'retired-2025'"
    )
    assert rejected(rsa_key.token(claims(NOW), kid=None), issuer_settings(rsa_key)).startswith(
        "token names no key (kid)"
    )


def test_bad_signature(rsa_key, stranger):
    issuer = issuer_settings(rsa_key)
    assert rejected(stranger.token(claims(NOW)), issuer) == "bad signature"
    # A real token with its payload swapped: jlee's signature over mnguyen's claims.
    header, _, signature = rsa_key.token(claims(NOW)).split(".")
    payload = b64(claims(NOW, preferred_username=f"mnguyen@{DOMAIN}"))
    assert rejected(f"{header}.{payload}.{signature}", issuer) == "bad signature"
    # And with its signature cut short.
    token = rsa_key.token(claims(NOW))
    assert rejected(token[:-10], issuer) == "bad signature"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "empty bearer token"),
        ("abc", "malformed token (not three dot-separated parts)"),
        ("a.b.c.d", "malformed token (not three dot-separated parts)"),
        ("a.b.c.d.e", "encrypted tokens (JWE) are not accepted; send a signed token (JWS)"),
        ("eyJ!.eyJ.c2ln", "malformed token (not base64url)"),
        ("eyJhbGc+.e30.c2ln", "malformed token (not base64url)"),
        (f"{b64('not json')}.{b64({})}.c2ln", "malformed token header (not base64url-encoded JSON)"),
        (f"{b64(b'\xff\xfe')}.{b64({})}.c2ln", "malformed token header (not base64url-encoded JSON)"),
        ("A.e30.c2ln", "malformed token header (not base64url-encoded JSON)"),  # impossible base64 length
        (f"{b64('[1]')}.{b64({})}.c2ln", "malformed token header (not a JSON object)"),
        (f"{b64({'typ': 'JWT'})}.{b64({})}.c2ln", "malformed token header (no alg)"),
        (f"{b64({'alg': 'RS256'})}.{b64('{')}.c2ln", "malformed token payload (not base64url-encoded JSON)"),
        (
            f"{b64({'alg': 'RS256'})}.{b64('[' * 5000)}.c2ln",
            "malformed token payload (not base64url-encoded JSON)",
        ),
        (f"{b64({'alg': 'RS256'})}.{b64('3')}.c2ln", "malformed token payload (not a JSON object)"),
        (f"{b64({'alg': 'RS256', 'kid': 7})}.{b64({})}.c2ln", "malformed token header (kid is not a string)"),
        (f"{b64({'alg': 'RS256'})}.{b64({})}.", "malformed token (no signature)"),
        (f"{b64({'alg': 'RS256', 'crit': ['b64']})}.{b64({})}.c2ln", "token header has critical extensions"),
    ],
)
def test_malformed_tokens(rsa_key, token, reason):
    assert rejected(token, issuer_settings(rsa_key)).startswith(reason)


def test_oversize_token(rsa_key):
    token = rsa_key.token(claims(NOW, groups=["g" * 40] * 200))
    assert len(token) > 8192
    assert rejected(token, issuer_settings(rsa_key), max_token_bytes=8192) == (
        f"oversize token ({len(token)} bytes; the limit is 8192)"
    )


@pytest.mark.parametrize("exp", ["NaN", "Infinity", '"2030-01-01"', "true", "null"])
def test_an_expiry_that_is_not_a_number_is_refused(rsa_key, exp):
    raw = json.dumps(claims(NOW)).replace(f'"exp": {int(NOW) + 600}', f'"exp": {exp}')
    token = rsa_key.token(json.loads(raw))
    reason = rejected(token, issuer_settings(rsa_key))
    expected = (
        "missing required claim exp" if exp == "null" else "malformed exp claim (not a number of seconds)"
    )
    assert reason == expected


def test_required_claims(rsa_key):
    issuer = issuer_settings(rsa_key, required_claims=("tid",))
    assert rejected(rsa_key.token(claims(NOW)), issuer) == "missing required claim tid"
    assert check(rsa_key.token(claims(NOW, tid="9188040d")), issuer) == "jlee"
    # exp is required whatever the config says: a token that never expires is never accepted.
    assert (
        rejected(rsa_key.token(claims(NOW, exp=None)), issuer_settings(rsa_key))
        == "missing required claim exp"
    )


# --- claim to employee -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "settings", "expected"),
    [
        ({"preferred_username": "JLee@City.Example"}, {}, "jlee"),
        (
            {"preferred_username": None, "upn": "jlee@city.example"},
            {"claims": ("preferred_username", "upn")},
            "jlee",
        ),
        ({"preferred_username": "jlee"}, {"strip_domains": ()}, "jlee"),  # Keycloak: a bare name
        ({}, {"claims": ("sub",), "strip_domains": ()}, "f3a1c2d4-jlee"),
        (
            {"upn": "jlee@parks.city.example"},
            {"claims": ("upn",), "strip_domains": ("city.example", "parks.city.example")},
            "jlee",
        ),
    ],
)
def test_claim_mapping(rsa_key, overrides, settings, expected):
    assert check(rsa_key.token(claims(NOW, **overrides)), issuer_settings(rsa_key, **settings)) == expected


@pytest.mark.parametrize(
    ("overrides", "settings", "reason"),
    [
        (
            {"preferred_username": "jlee@evil.example"},
            {},
            "claim preferred_username is not an account of @city.example",
        ),
        ({"preferred_username": "jlee"}, {}, "claim preferred_username is not an account of @city.example"),
        (
            {"preferred_username": "@city.example"},
            {},
            "claim preferred_username is not an account of @city.example",
        ),
        ({"preferred_username": None}, {}, "token has no preferred_username claim naming the employee"),
        (
            {"preferred_username": None},
            {"claims": ("preferred_username", "upn")},
            "token has no preferred_username or upn claim",
        ),
        ({"preferred_username": ["jlee"]}, {}, "claim preferred_username is not a user name"),
        ({"preferred_username": "j lee@city.example"}, {}, "claim preferred_username is not a user name"),
        ({"preferred_username": "jlee\n@city.example"}, {}, "claim preferred_username is not a user name"),
    ],
)
def test_claim_mapping_refusals(rsa_key, overrides, settings, reason):
    assert rejected(rsa_key.token(claims(NOW, **overrides)), issuer_settings(rsa_key, **settings)).startswith(
        reason
    )


# --- helpers that keep logs clean ----------------------------------------------------------------


def test_values_from_tokens_are_shown_printable_and_short():
    assert (
        shown("https://evil.example/\r\nallow reason=granted")
        == "https://evil.example/??allow reason=granted"
    )
    assert len(shown("x" * 500)) == 60


def test_jwks_documents_keep_only_signing_keys(rsa_key, ec_key, ed_key):
    document = {
        "keys": [
            rsa_key.jwk(),
            ec_key.jwk(),
            ed_key.jwk(),
            {**rsa_key.jwk(), "kid": "enc", "use": "enc"},
            {"kty": "oct", "kid": "shared", "k": b64(b"s" * 32)},
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            {**rsa_key.jwk(), "kid": "ps", "alg": "RSA-OAEP"},
            "not a key",
        ]
    }
    keys, skipped = parse_jwks(json.dumps(document).encode())
    assert [(k.kid, k.alg) for k in keys] == [("rsa-1", None), ("ec-1", None), ("ed-1", None)]
    assert len(skipped) == 5
    assert any("symmetric (oct) keys are never taken from a JWKS" in s for s in skipped)
    with pytest.raises(ValueError, match="not a JWKS"):
        parse_jwks(b'{"keys": {}}')
