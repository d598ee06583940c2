import base64
import hashlib

import pytest

from citygate.directory.passwords import hash_password, verify_password

SCHEMES = ["{SSHA}", "{SSHA256}", "{SSHA512}"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("password", ["jlee-pass", "p@ss wörd ✓", "x"])
def test_round_trip(scheme, password):
    stored = hash_password(password, scheme)
    assert stored.startswith(scheme)
    assert verify_password(stored, password)
    assert not verify_password(stored, password + "!")
    assert not verify_password(stored, "wrong")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_tag_is_case_insensitive(scheme):
    stored = hash_password("secret", scheme)
    tag, rest = stored[: len(scheme)], stored[len(scheme) :]
    assert verify_password(tag.lower() + rest, "secret")
    assert verify_password(hash_password("secret", scheme.lower()), "secret")


def test_default_scheme_is_ssha512_with_random_16_byte_salt():
    first, second = hash_password("secret"), hash_password("secret")
    assert first.startswith("{SSHA512}")
    assert first != second  # fresh salt each time
    raw = base64.b64decode(first.removeprefix("{SSHA512}"))
    assert len(raw) == 64 + 16


def test_fixed_salt_is_deterministic():
    salt = b"0123456789abcdef"
    assert hash_password("secret", salt=salt) == hash_password("secret", salt=salt)


def _independent_ssha(password: str, salt: bytes) -> str:
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def test_known_ssha_vector():
    stored = _independent_ssha("jlee-pass", b"\x01\x02\x03\x04")
    assert verify_password(stored, "jlee-pass")
    assert not verify_password(stored, "jlee-pasS")
    assert hash_password("jlee-pass", "{SSHA}", salt=b"\x01\x02\x03\x04") == stored


def test_known_vector_rejects_a_one_character_change_in_the_stored_value():
    stored = _independent_ssha("jlee-pass", b"\x01\x02\x03\x04")
    body = stored.removeprefix("{SSHA}")
    changed = "{SSHA}" + ("B" if body[0] != "B" else "C") + body[1:]
    assert not verify_password(changed, "jlee-pass")


def test_openldap_slappasswd_value():
    # Produced by `slappasswd -o module-load=pw-sha2 -h '{SSHA512}' -s 'p@ss wörd'` (8-byte salt).
    stored = (
        "{SSHA512}M1qf/mf7ULqqzG+Md8u5f4UzvXrJqv3e0lmC14HNzUgiZ+Uz8bh9T0x5ZBtVojlCpWLYv4akQ8PG"
        "ISZS9yaPAPck+qfNzxi7"
    )
    assert verify_password(stored, "p@ss wörd")
    assert not verify_password(stored, "p@ss word")


def _unsalted(algorithm: str, tag: str, password: str) -> str:
    return tag + base64.b64encode(hashlib.new(algorithm, password.encode()).digest()).decode()


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        ("{CLEARTEXT}secret", "cleartext scheme"),
        ("secret", "no scheme: cleartext"),
        ("{cleartext}secret", "cleartext, lower-case tag"),
        (_unsalted("sha1", "{SHA}", "secret"), "unsalted SHA-1"),
        (_unsalted("md5", "{MD5}", "secret"), "unsalted MD5"),
        (_unsalted("md5", "{SMD5}", "secret"), "unknown scheme"),
        ("{CRYPT}$6$salt$abc", "crypt(3)"),
        ("{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA", "unsupported scheme"),
        (_unsalted("sha1", "{SSHA}", "secret"), "SSHA with no salt bytes"),
        (_unsalted("sha512", "{SSHA512}", "secret"), "SSHA512 with no salt bytes"),
        ("{SSHA}not base64!!", "malformed base64"),
        ("{SSHA512}" + "A" * 107, "bad base64 padding"),
        ("{SSHA256}wörd", "non-ASCII base64"),
        ("{SSHA}", "empty value"),
        ("", "empty stored value"),
        ("{SSHA", "unterminated tag"),
    ],
)
def test_rejected_stored_values(stored, why):
    assert verify_password(stored, "secret") is False, why


@pytest.mark.parametrize("scheme", SCHEMES)
def test_empty_password_is_rejected(scheme):
    # Even a value deliberately hashed from "" must not verify: an empty password is no login.
    digest = hashlib.new({"{SSHA}": "sha1", "{SSHA256}": "sha256", "{SSHA512}": "sha512"}[scheme])
    digest.update(b"salt")
    stored = scheme + base64.b64encode(digest.digest() + b"salt").decode()
    assert verify_password(stored, "") is False


def test_hash_of_salt_not_password_first_does_not_verify():
    # Order matters: OpenLDAP hashes password + salt, not salt + password.
    salt = b"saltsalt"
    digest = hashlib.sha256(salt + b"secret").digest()
    assert not verify_password("{SSHA256}" + base64.b64encode(digest + salt).decode(), "secret")


def test_unencodable_password_does_not_raise():
    assert verify_password(hash_password("secret"), "\ud800") is False


@pytest.mark.parametrize(
    ("password", "scheme", "salt"),
    [
        ("", "{SSHA512}", None),
        ("x", "{SHA}", None),
        ("x", "{CLEARTEXT}", None),
        ("x", "{SSHA}", b""),
    ],
)
def test_hash_password_refuses_values_that_could_never_verify(password, scheme, salt):
    with pytest.raises(ValueError):
        hash_password(password, scheme, salt)
