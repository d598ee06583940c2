"""Reading the files a CA comes in: certificates, private keys and passphrase files.

Certificates are taken as PEM, DER or PKCS#7 (`.p7b`), and a PEM `CERTIFICATE` block may hold a
PKCS#7 bundle: AD CS writes chains that way (certreq's `.p7b`, `certutil -ca.chain`). Every
parse is `cryptography`'s; this module only finds the PEM blocks to hand it.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

#: The keys mitmproxy can sign with that browsers accept: mitmproxy gives every site
#: certificate it makes the CA's own public key, so the CA key is also each site's key.
CaKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
MIN_RSA_BITS = 2048
_CURVES = ("secp256r1", "secp384r1")  # P-521 is refused for TLS by Chromium

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_CERTIFICATE_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_PKCS7_LABELS = {b"PKCS7", b"PKCS #7 SIGNED DATA", b"CMS"}


class PkiError(Exception):
    """A file, key or certificate that cannot be used; the message says what is wrong and how to fix it."""


class KeyLocked(PkiError):
    """The key is encrypted and no passphrase was given."""


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} {path} does not exist; give the path of the file") from None
    except IsADirectoryError:
        raise PkiError(f"{what} {path} is a folder; give the path of the file") from None
    except PermissionError:
        raise PkiError(
            f"{what} {path} cannot be read by this user; run as its owner (or root), or fix its permissions"
        ) from None


def read_certificates(path: Path, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in `path`, in file order; PkiError if it holds none."""
    data = read_bytes(path, what)
    try:
        found = parse_certificates(data)
    except ValueError as exc:
        raise PkiError(
            f"{what} {path} cannot be read as certificates (PEM, DER or PKCS#7 .p7b): {exc or 'malformed'}"
        ) from None
    if not found:
        raise PkiError(
            f"{what} {path} holds no certificate; give a PEM, DER or PKCS#7 (.p7b) certificate file"
        )
    return found


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates in PEM (CERTIFICATE or PKCS7 blocks; other blocks, keys included, are
    skipped), DER or DER PKCS#7 data. ValueError if a block cannot be parsed."""
    blocks = _PEM_BLOCK.findall(data)
    if not blocks and b"-----BEGIN" not in data:
        return _from_der(data)
    found: list[x509.Certificate] = []
    for label, body in blocks:
        if label in _CERTIFICATE_LABELS or label in _PKCS7_LABELS:
            found += _from_der(_unarmor(body))
    return found


def _from_der(der: bytes) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(der)]
    except ValueError:
        return pkcs7.load_der_pkcs7_certificates(der)  # ValueError if it is not one either


def _unarmor(body: bytes) -> bytes:
    # A PEM body is base64 between header lines; RFC 1421 headers ("Proc-Type: ...") are skipped.
    text = b"".join(line.strip() for line in body.splitlines() if b":" not in line)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"a PEM block is not valid base64 ({exc})") from None


def load_key(data: bytes, where: str, passphrase: bytes | None) -> CaKey:
    """The private key in PEM `data` (the first key block; certificates around it are skipped).

    An encrypted key without a passphrase raises KeyLocked; a passphrase for a key that is not
    encrypted is not needed and is ignored (as mitmproxy does).
    """
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError as exc:
        if passphrase is not None:  # "Password was given but private key is not encrypted"
            return load_key(data, where, None)
        raise KeyLocked(
            f"the key in {where} is encrypted: give the file holding its passphrase (--passphrase-file)"
        ) from exc
    except ValueError as exc:
        if passphrase is not None and is_encrypted(data):
            raise PkiError(
                f"the passphrase given does not decrypt the key in {where}; give the file holding "
                "the passphrase the key was encrypted with"
            ) from None
        raise PkiError(f"{where} holds no private key that can be read (PEM): {exc}") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for some key types
        raise PkiError(f"the key in {where} cannot be used: {exc}") from None
    problem = key_problem(key)
    if problem:
        raise PkiError(f"the key in {where} {problem}")
    assert isinstance(key, CaKey)
    return key


def is_encrypted(data: bytes) -> bool:
    """Whether the PEM key in `data` is encrypted (PKCS#8, or OpenSSL's traditional form)."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data


def key_problem(key: object) -> str | None:
    """Why a key cannot be the proxy's CA key (None: it can)."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            return f"is RSA {key.key_size}: browsers refuse keys under {MIN_RSA_BITS} bits; make a new one"
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVES:
            return f"is on the curve {key.curve.name}: browsers accept P-256 and P-384 only; make a new one"
        return None
    return (
        f"is a {type(key).__name__}: citygate's CA key must be RSA or ECDSA (P-256, P-384), the kinds "
        "browsers accept for the site certificates citygate makes with it; make a new one"
    )


def describe_key(key: CaKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    return {"secp256r1": "EC P-256", "secp384r1": "EC P-384"}.get(key.curve.name, f"EC {key.curve.name}")


def key_matches(key: CaKey, certificate: x509.Certificate) -> bool:
    return key.public_key() == certificate.public_key()


def read_passphrase(path: Path) -> bytes:
    """The passphrase in `path`: its bytes without the line end a text editor adds.

    mitmproxy takes the passphrase as text (its cert_passphrase option, encoded UTF-8), so the
    file must be UTF-8.
    """
    data = read_bytes(path, "the passphrase file")
    passphrase = data.removesuffix(b"\n").removesuffix(b"\r")
    if not passphrase:
        raise PkiError(f"the passphrase file {path} is empty; write the passphrase in it (one line)")
    if b"\n" in passphrase:
        raise PkiError(f"the passphrase file {path} holds more than one line; keep only the passphrase")
    try:
        passphrase.decode("utf-8")
    except UnicodeDecodeError:
        raise PkiError(
            f"the passphrase file {path} is not UTF-8 text; mitmproxy takes the passphrase as text"
        ) from None
    return passphrase


def is_self_signed(certificate: x509.Certificate) -> bool:
    """A root: it names itself as its issuer, and its own key signed it."""
    return certificate.subject == certificate.issuer and issued_by(certificate, certificate)


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `certificate` (its name and its signature)."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def name(certificate: x509.Certificate) -> str:
    """The certificate's subject, as an admin would write it (RFC 4514)."""
    return certificate.subject.rfc4514_string() or "(no subject)"
