"""A new key and signing request (CSR) for citygate's subordinate CA (`citygate ca request`).

The request asks for what the proxy needs and no more: a CA that may sign site certificates but
no other CA (pathlen 0), with keyCertSign and cRLSign only, for TLS server certificates only
(extended key usage serverAuth, so that a leaked key cannot sign code or mail certificates that
chain to the city's root). The city's CA decides what the certificate finally says: AD CS takes
it from the SubCA template, OpenSSL and step-ca from the signing command (README).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from citygate.proxy.pki.certfiles import CaKey, PkiError

#: EC P-256 by default: mitmproxy signs a certificate for every site it decrypts with this key,
#: and an ECDSA signature costs a fraction of an RSA one. RSA 3072 for PKIs that issue RSA only.
KEY_TYPES = ("ec", "rsa")
RSA_BITS = 3072

SUBJECT_EXAMPLE = "CN=citygate proxy CA,O=City of Example"


def new_key(kind: str) -> CaKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise PkiError(f"unknown key type {kind!r}; choose one of: {', '.join(KEY_TYPES)}")


def parse_subject(text: str) -> x509.Name:
    """The subject a city names, as an RFC 4514 string ("CN=...,O=..."); it must have a CN."""
    try:
        subject = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise PkiError(
            f"the subject {text!r} is not a distinguished name{detail}; write it as "
            f'"{SUBJECT_EXAMPLE}" (attributes CN, O, OU, L, ST, C, separated by commas; '
            "a comma inside a value as \\,)"
        ) from None
    if not subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise PkiError(
            f"the subject {text!r} has no CN (common name); browsers show it as the issuer of the "
            f'certificates citygate makes: add one, e.g. "{SUBJECT_EXAMPLE}"'
        )
    return subject


def signing_request(key: CaKey, subject: x509.Name) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def key_pem(key: CaKey, passphrase: bytes | None) -> bytes:
    """The key as PKCS#8 PEM, encrypted with `passphrase` when one is given (cryptography's best
    available scheme, which mitmproxy's loader reads with its cert_passphrase option)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
