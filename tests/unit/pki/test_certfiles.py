"""Reading the files a CA comes in (proxy/pki/certfiles.py): PEM, DER, PKCS#7 as AD CS writes it,
keys that browsers would refuse, and passphrase files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from city_pki import CityPKI
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from citygate.proxy.pki.certfiles import PkiError, load_key, read_certificates, read_passphrase


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return CityPKI(tmp_path_factory.mktemp("city"), issuing=True)


def test_pem_der_and_pkcs7_give_the_same_certificates(city, tmp_path):
    chain = [city.signer, city.root]
    der_pkcs7 = pkcs7.serialize_certificates(chain, serialization.Encoding.DER)
    files = {
        "chain.pem": city.chain_pem.read_bytes(),
        "root.der": city.root.public_bytes(serialization.Encoding.DER),
        "chain.p7b": der_pkcs7,
        "chain-pem.p7b": pkcs7.serialize_certificates(chain, serialization.Encoding.PEM),
        # certutil -encode and certreq write a PKCS#7 chain under a CERTIFICATE header, CRLFs included.
        "adcs.p7b": b"-----BEGIN CERTIFICATE-----\r\n"
        + base64.encodebytes(der_pkcs7).replace(b"\n", b"\r\n")
        + b"-----END CERTIFICATE-----\r\n",
    }
    for file, data in files.items():
        (tmp_path / file).write_bytes(data)

    read = {file: read_certificates(tmp_path / file) for file in files}

    assert read["root.der"] == [city.root]
    for file in ("chain.pem", "chain.p7b", "chain-pem.p7b", "adcs.p7b"):
        assert sorted(c.subject.rfc4514_string() for c in read[file]) == sorted(
            c.subject.rfc4514_string() for c in chain
        ), file


def test_keys_around_the_certificates_are_skipped(city, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "both.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + city.root_pem.read_bytes()
    )

    assert read_certificates(path) == [city.root]
    assert load_key(path.read_bytes(), "both.pem", None).public_key() == key.public_key()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist; give the path of the file"),
        (b"", "cannot be read as certificates"),
        (b"not a certificate", "cannot be read as certificates"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "holds no certificate"),
        (b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n", "not valid base64"),
    ],
)
def test_a_file_without_certificates_is_named(tmp_path, content, problem):
    path = tmp_path / "sub.cer"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(PkiError, match=problem) as raised:
        read_certificates(path, "the certificate file")

    assert str(raised.value).startswith(f"the certificate file {path}")


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (rsa.generate_private_key(65537, 1024), "is RSA 1024: browsers refuse keys under 2048 bits"),
        (
            ec.generate_private_key(ec.SECP521R1()),
            "is on the curve secp521r1: browsers accept P-256 and P-384",
        ),
        (ed25519.Ed25519PrivateKey.generate(), "must be RSA or ECDSA (P-256, P-384)"),
    ],
    ids=["rsa1024", "p521", "ed25519"],
)
def test_a_key_browsers_would_refuse_is_refused(key, problem):
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    with pytest.raises(PkiError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_key(data, "k.pem", None)


def test_a_passphrase_file_loses_its_line_end_only(tmp_path):
    path = tmp_path / "passphrase"
    for written, read in (
        (b"s3cret\n", b"s3cret"),
        (b"s3cret\r\n", b"s3cret"),
        (b" spaced s3cret ", b" spaced s3cret "),
    ):
        path.write_bytes(written)
        assert read_passphrase(path) == read


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\n", "is empty; write the passphrase in it"),
        (b"one\ntwo\n", "holds more than one line"),
        (b"\xff\xfe\n", "is not UTF-8 text"),
    ],
)
def test_a_passphrase_file_that_cannot_be_used_is_named(tmp_path: Path, content, problem):
    path = tmp_path / "passphrase"
    path.write_bytes(content)

    with pytest.raises(PkiError, match=problem):
        read_passphrase(path)
