"""LDAP-style salted password hashes, as OpenLDAP (and its pw-sha2 module) store them.

A stored value is `{SCHEME}` followed by base64(digest(password + salt) + salt). Only the
salted SHA family is accepted: cleartext, unsalted and crypt(3) values are refused outright,
so a directory that still holds them fails closed instead of weakening the proxy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

# Scheme tag (upper-cased) -> hashlib algorithm name. Anything else is refused.
_SCHEMES: dict[str, str] = {
    "{SSHA}": "sha1",
    "{SSHA256}": "sha256",
    "{SSHA512}": "sha512",
}

_DEFAULT_SALT_BYTES = 16


def _split_scheme(stored: str) -> tuple[str, str] | None:
    """The upper-cased `{SCHEME}` tag and the rest, or None when there is no tag."""
    if not stored.startswith("{"):
        return None
    end = stored.find("}")
    if end < 0:
        return None
    return stored[: end + 1].upper(), stored[end + 1 :]


def verify_password(stored: str, password: str) -> bool:
    """Whether `password` matches the salted hash `stored`.

    Never raises: anything it cannot verify (empty password, unknown or unsalted scheme,
    corrupt base64) is simply not a match, because a login check must fail closed.
    """
    if not isinstance(stored, str) or not isinstance(password, str) or not password:
        return False
    parts = _split_scheme(stored)
    if parts is None or parts[0] not in _SCHEMES:
        return False
    scheme, encoded = parts
    try:
        raw = base64.b64decode(encoded, validate=True)
        secret = password.encode("utf-8")
    except (binascii.Error, ValueError):  # bad base64, non-ASCII text, lone surrogates
        return False
    algorithm = _SCHEMES[scheme]
    size = hashlib.new(algorithm).digest_size
    # Like OpenLDAP: a value that is not longer than the digest has no salt; refuse it.
    if len(raw) <= size:
        return False
    expected, salt = raw[:size], raw[size:]
    actual = hashlib.new(algorithm, secret + salt).digest()
    return hmac.compare_digest(actual, expected)


def hash_password(password: str, scheme: str = "{SSHA512}", salt: bytes | None = None) -> str:
    """A `{SCHEME}base64(digest + salt)` value that OpenLDAP and `verify_password` accept.

    The salt is 16 random bytes unless given (tests pass a fixed one for known vectors).
    Raises ValueError for an empty password, an empty salt or an unsupported scheme, since
    such a value could never be verified.
    """
    tag = scheme.upper()
    if tag not in _SCHEMES:
        raise ValueError(f"unsupported scheme {scheme!r}; use one of {', '.join(_SCHEMES)}")
    if not password:
        raise ValueError("refusing to hash an empty password")
    if salt is None:
        salt = secrets.token_bytes(_DEFAULT_SALT_BYTES)
    if not salt:
        raise ValueError("salt must not be empty")
    digest = hashlib.new(_SCHEMES[tag], password.encode("utf-8") + salt).digest()
    return tag + base64.b64encode(digest + salt).decode("ascii")
