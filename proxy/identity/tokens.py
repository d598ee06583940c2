"""Checking the city's single sign-on tokens (JWT): pure functions, no I/O.

A token is checked in three steps, so that the only step that may wait on the network (finding
the issuer's signing keys) stays in the proxy shell:

1. `read_token` looks at the token without trusting it: size, shape, header, claimed issuer.
2. The shell picks the issuer (`IdentitySettings.issuer`) and gets its keys (PEM files from the
   config, or the JWKS the shell fetched off the event loop); `choose_keys` keeps the keys that
   may verify this token.
3. `verify_token` checks the signature (pyjwt), the issuer, the audience, the required claims
   and the times against `now`, and maps a claim to the employee's login name.

Every refusal raises `TokenRejected` with a plain reason that is safe to log: it never holds the
token, and any value taken from the token is shortened and stripped of control characters.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

if TYPE_CHECKING:
    from citygate.proxy.identity.config import IssuerSettings

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SUPPORTED_ALGORITHMS = SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
#: What an issuer accepts unless its config says otherwise: public-key algorithms only.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
#: RSA keys shorter than this are refused (NIST SP 800-131A); pyjwt's own floor is the same.
MIN_RSA_BITS = 2048
#: HMAC secrets shorter than the hash are refused (RFC 7518 section 3.2).
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

_EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_SHOWN_LIMIT = 60
# Longest login name a claim may carry; directory uids are far shorter.
_MAX_USER_NAME = 256


class TokenRejected(Exception):
    """The token does not prove who is asking. `reason` is plain words, safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key that may verify tokens: a public key (PEM file or JWKS) or an HMAC secret.

    `kid` None matches a token naming any key id (a PEM file configured without one). `alg`
    is the JWK's own "alg" when it names one: then the key verifies that algorithm only.
    """

    key: PublicKey | bytes = field(repr=False)
    kid: str | None = None
    alg: str | None = None

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a token signed with `alg`.

        Key type and algorithm family must agree: an HMAC secret never verifies an RS256 token,
        and, more importantly, a public key is never used as an HMAC secret (the "HS256 signed
        with the public key" forgery).
        """
        if self.alg is not None and self.alg != alg:
            return False
        key = self.key
        if alg in SYMMETRIC_ALGORITHMS:
            return isinstance(key, bytes)
        if alg.startswith(("RS", "PS")):
            return isinstance(key, rsa.RSAPublicKey)
        if alg in _EC_CURVES:
            return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _EC_CURVES[alg])
        if alg == "EdDSA":
            return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
        return False


def describe_key(key: PublicKey | bytes) -> str:
    """A key's type in words, for config messages ("RSA key", "EC P-256 key", ...)."""
    if isinstance(key, bytes):
        return "HMAC secret"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA key ({key.key_size} bits)"
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)} key"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519 key"
    return "Ed448 key"


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """What a token says about itself before anything is verified: used only to pick keys."""

    alg: str
    kid: str | None
    issuer: str | None  # the "iss" claim; None when absent or not a string


def shown(value: object, limit: int = _SHOWN_LIMIT) -> str:
    """A value from a token, fit for a log line: printable ASCII only, shortened."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_token(token: str, max_bytes: int) -> UnverifiedToken:
    """The token's header and claimed issuer; TokenRejected when it is not a usable JWS."""
    size = len(token.encode("utf-8", "surrogateescape"))
    if size > max_bytes:
        raise TokenRejected(f"oversize token ({size} bytes; the limit is {max_bytes})")
    if not token:
        raise TokenRejected("empty bearer token")
    parts = token.split(".")
    if len(parts) == 5:
        raise TokenRejected("encrypted tokens (JWE) are not accepted; send a signed token (JWS)")
    if len(parts) != 3:
        raise TokenRejected("malformed token (not three dot-separated parts)")
    if not all(_BASE64URL.fullmatch(part) for part in parts):
        raise TokenRejected("malformed token (not base64url)")
    header = _json_object(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise TokenRejected("malformed token header (no alg)")
    if alg.strip().lower() == "none":
        raise TokenRejected("alg none is never accepted (an unsigned token proves nothing)")
    if "crit" in header:
        # RFC 7515 4.1.11: a token with critical extensions we do not implement must be refused.
        raise TokenRejected("token header has critical extensions (crit) citygate does not support")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenRejected("malformed token header (kid is not a string)")
    if not parts[2]:
        raise TokenRejected("malformed token (no signature)")
    payload = _json_object(parts[1], "payload")
    issuer = payload.get("iss")
    return UnverifiedToken(alg, kid, issuer if isinstance(issuer, str) else None)


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(decoded)
    except (binascii.Error, ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 and bad JSON; RecursionError deeply nested JSON.
        raise TokenRejected(f"malformed token {what} (not base64url-encoded JSON)") from exc
    if not isinstance(value, dict):
        raise TokenRejected(f"malformed token {what} (not a JSON object)")
    return value


def check_algorithm(token: UnverifiedToken, issuer: IssuerSettings) -> None:
    """Refuse an algorithm the issuer's config does not list.

    The list comes from the config, never from the token (RFC 8725 section 2.1).
    """
    if token.alg in issuer.algorithms:
        return
    if token.alg in SYMMETRIC_ALGORITHMS:
        raise TokenRejected(
            f"algorithm {token.alg} is not allowed for {shown(issuer.issuer)} "
            "(a shared-secret algorithm; public keys are never used as secrets)"
        )
    raise TokenRejected(f"algorithm {shown(token.alg, 20)} is not allowed for {shown(issuer.issuer)}")


def knows_kid(keys: Iterable[VerificationKey], kid: str | None) -> bool:
    """Whether `keys` hold a key for this key id (or a key that matches any id)."""
    return any(key.kid is None or key.kid == kid for key in keys)


def choose_keys(keys: Sequence[VerificationKey], token: UnverifiedToken) -> tuple[VerificationKey, ...]:
    """The keys that may verify this token: its key id, and a type that fits its algorithm."""
    named = [key for key in keys if key.kid is None or key.kid == token.kid]
    if not named:
        if token.kid is None:
            raise TokenRejected("token names no key (kid) and the issuer's keys all have one")
        raise TokenRejected(f"unknown kid {shown(token.kid, 40)!r}")
    fitting = tuple(key for key in named if key.fits(token.alg))
    if not fitting:
        raise TokenRejected(
            f"no key of the issuer fits algorithm {token.alg} (key id {shown(token.kid, 40)!r})"
        )
    return fitting


def verify_token(
    token: str,
    unverified: UnverifiedToken,
    issuer: IssuerSettings,
    keys: Sequence[VerificationKey],
    now: float,
) -> str:
    """The employee's login name in a token that checks out; TokenRejected otherwise.

    `now` is seconds since the epoch. pyjwt checks the signature, the issuer, the audience and
    the presence of required claims; the times are checked here against `now`, so that the
    decision is a function of its inputs (and leeway boundaries can be tested exactly).
    """
    options: dict[str, Any] = {
        "verify_signature": True,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": True,
        "verify_iss": True,
        # exp is always required: a token that never expires would stay usable after it leaks.
        "require": list(dict.fromkeys(["exp", *issuer.required_claims])),
        "enforce_minimum_key_length": True,
    }
    for candidate in keys:
        try:
            claims = jwt.decode(
                token,
                candidate.key,
                algorithms=[unverified.alg],
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.InvalidSignatureError:
            continue  # another key with the same id (or none) may still verify it
        except jwt.PyJWTError as exc:
            raise TokenRejected(_plain_jwt_error(exc, unverified, issuer)) from exc
        check_times(claims, now, issuer.leeway)
        return employee_from_claims(claims, issuer)
    raise TokenRejected("bad signature")


def _plain_jwt_error(exc: jwt.PyJWTError, unverified: UnverifiedToken, issuer: IssuerSettings) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        if exc.claim == "aud":
            return "wrong audience (the token names none)"
        return f"missing required claim {shown(exc.claim, 40)}"
    if isinstance(exc, jwt.InvalidIssuerError):
        claimed = shown(unverified.issuer) if unverified.issuer else "none"
        return f"wrong issuer {claimed!r} (expected {shown(issuer.issuer)!r})"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidKeyError):
        return "the issuer's key is not acceptable for this token (too short, or the wrong type)"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"algorithm {shown(unverified.alg, 20)} is not allowed"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token (pyjwt could not decode it)"
    # The class name only: pyjwt's messages are plain, but never risk echoing token content.
    return f"invalid token ({type(exc).__name__})"


def check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    """exp, nbf and iat against `now`, each with `leeway` seconds of clock skew forgiven.

    The boundaries are pyjwt's: a token is expired once `now >= exp + leeway`, and not yet
    valid while `now < nbf - leeway` (or `now < iat - leeway`).
    """
    exp = _time_claim(claims, "exp")
    if exp is None:
        raise TokenRejected("missing required claim exp")
    if now >= exp + leeway:
        raise TokenRejected(f"token expired at {_when(exp)} (leeway {leeway:g} s)")
    nbf = _time_claim(claims, "nbf")
    if nbf is not None and now < nbf - leeway:
        raise TokenRejected(f"token not yet valid: valid from {_when(nbf)} (leeway {leeway:g} s)")
    iat = _time_claim(claims, "iat")
    if iat is not None and now < iat - leeway:
        raise TokenRejected(
            f"token not yet valid: issued in the future, at {_when(iat)} (leeway {leeway:g} s)"
        )


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python; NaN and infinity (which json.loads accepts) compare false to
    # everything, so an "exp": NaN would never expire.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected(f"malformed {name} claim (not a number of seconds)")
    return float(value)


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g}"


def employee_from_claims(claims: dict[str, Any], issuer: IssuerSettings) -> str:
    """The login name the token's claims name, lower-cased, with the domain suffix stripped.

    The first of the issuer's `claims` that is present is used. With `strip_domains`, the value
    must end in one of them: "jlee@city.example" becomes "jlee", while "jlee@other.example" is
    refused rather than read as the city's jlee.
    """
    for name in issuer.claims:
        if claims.get(name) is not None:
            value = claims[name]
            break
    else:
        raise TokenRejected(f"token has no {' or '.join(issuer.claims)} claim naming the employee")
    if not isinstance(value, str) or not value.strip():
        raise TokenRejected(f"claim {name} is not a user name")
    value = value.strip()
    if len(value) > _MAX_USER_NAME or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise TokenRejected(f"claim {name} is not a user name")
    if issuer.strip_domains:
        local, at, domain = value.rpartition("@")
        if not at or not local or domain.casefold() not in issuer.strip_domains:
            expected = " or ".join(f"@{d}" for d in issuer.strip_domains)
            raise TokenRejected(f"claim {name} is not an account of {expected}")
        value = local
    return value.casefold()


def parse_jwks(document: bytes) -> tuple[tuple[VerificationKey, ...], list[str]]:
    """The signing keys in a JWKS document, and why any entry was left out.

    Raises ValueError when the document is not a JWKS at all. Entries that cannot be used are
    skipped, not fatal: an identity provider may publish encryption keys or new key types next
    to the signing keys citygate needs.
    """
    data = json.loads(document)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('not a JWKS (a JSON object with a "keys" list)')
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for number, entry in enumerate(data["keys"], start=1):
        if not isinstance(entry, dict):
            skipped.append(f"entry {number}: not an object")
            continue
        kid = entry.get("kid")
        label = f"key {shown(kid, 40)!r}" if isinstance(kid, str) else f"entry {number}"
        if entry.get("kty") == "oct":
            # A secret published in a JWKS is no secret: never use it.
            skipped.append(f"{label}: symmetric (oct) keys are never taken from a JWKS")
            continue
        if entry.get("use") not in (None, "sig"):
            skipped.append(f"{label}: not a signing key (use {shown(entry.get('use'), 10)})")
            continue
        alg = entry.get("alg")
        if alg is not None and alg not in ASYMMETRIC_ALGORITHMS:
            skipped.append(f"{label}: algorithm {shown(alg, 20)} is not supported")
            continue
        try:
            key = jwt.PyJWK(entry).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            skipped.append(f"{label}: unusable ({type(exc).__name__})")
            continue
        if hasattr(key, "public_key"):
            key = key.public_key()  # a JWKS should never hold private parts; use the public half
        if not isinstance(key, PublicKey):
            skipped.append(f"{label}: unsupported key type")
            continue
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            skipped.append(f"{label}: RSA key of {key.key_size} bits is too short")
            continue
        keys.append(VerificationKey(key, kid if isinstance(kid, str) else None, alg))
    return tuple(keys), skipped
