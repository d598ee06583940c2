"""citygate's CA key and signing request (proxy/pki/request.py), read back with `cryptography`."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from citygate.proxy.pki.certfiles import KeyLocked, PkiError, load_key
from citygate.proxy.pki.request import key_pem, new_key, parse_subject, signing_request


def test_the_request_asks_for_a_ca_that_signs_site_certificates_only():
    key = new_key("ec")
    csr = signing_request(key, parse_subject("CN=citygate proxy CA,O=City of Example"))

    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "citygate proxy CA"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "City of Example"
    constraints = csr.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature and not usage.value.key_encipherment
    purposes = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(purposes) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_keys_are_ec_p256_or_rsa_3072():
    ec_key, rsa_key = new_key("ec"), new_key("rsa")

    assert isinstance(ec_key, ec.EllipticCurvePrivateKey) and ec_key.curve.name == "secp256r1"
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and rsa_key.key_size == 3072
    with pytest.raises(PkiError, match="unknown key type 'dsa'; choose one of: ec, rsa"):
        new_key("dsa")


def test_an_encrypted_key_opens_with_its_passphrase_only():
    key = new_key("ec")
    data = key_pem(key, b"correct horse")

    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    assert load_key(data, "the file", b"correct horse").public_key() == key.public_key()
    with pytest.raises(
        KeyLocked, match="the key in the file is encrypted: give the file holding its passphrase"
    ):
        load_key(data, "the file", None)
    with pytest.raises(PkiError, match="the passphrase given does not decrypt the key in the file"):
        load_key(data, "the file", b"wrong")


def test_a_key_not_encrypted_is_plain_pkcs8():
    data = key_pem(new_key("ec"), None)

    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_key(data, "f", b"a passphrase it does not need")  # ignored, as mitmproxy does


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("O=City of Example", "has no CN (common name)"),
        ("CN=x,FOO=bar", "is not a distinguished name"),
        ("citygate", "is not a distinguished name"),
    ],
)
def test_a_subject_that_cannot_be_used_is_named_with_an_example(subject, problem):
    with pytest.raises(PkiError) as raised:
        parse_subject(subject)

    assert problem in str(raised.value)
    assert repr(subject) in str(raised.value)
    assert '"CN=citygate proxy CA,O=City of Example"' in str(raised.value)


def test_a_comma_inside_a_value_is_escaped():
    subject = parse_subject(r"CN=citygate proxy CA,O=City of Example\, Ohio")

    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "City of Example, Ohio"
