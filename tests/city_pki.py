"""A city's own PKI for the tests: a root CA, optionally an issuing CA under it (AD CS's usual two
tiers), that signs citygate's subordinate CA request with `cryptography` as AD CS, OpenSSL or
step-ca would: CA:TRUE with pathlen 0, keyCertSign and cRLSign, SKI and AKI.

Every property a test may want wrong (not a CA, no keyCertSign, another usage, dates) is an
argument of `sign`, so a test shows what the city's CA got wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CaKey = ec.EllipticCurvePrivateKey


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "City of Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def key_usage(*, cert_sign: bool = True) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def ca_certificate(
    subject: x509.Name,
    public_key: object,
    issuer: x509.Certificate | None,
    issuer_key: CaKey,
    *,
    path_length: int | None = 0,
    ca: bool = True,
    cert_sign: bool = True,
    usages: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = 730,
) -> x509.Certificate:
    now = datetime.now(UTC)
    start = not_before or now - timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(key_usage(cert_sign=cert_sign), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if issuer is not None:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


class CityPKI:
    """A root CA (and with `issuing=True` an issuing CA under it), its files in `directory`."""

    def __init__(self, directory: Path, *, issuing: bool = False, root_days: int = 3650) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = ca_certificate(
            name("City of Example Root CA"),
            self.root_key.public_key(),
            None,
            self.root_key,
            path_length=None,
            usages=None,
            days=root_days,
        )
        self.root_pem = self._write("city-root.pem", [self.root])
        self.signer, self.signer_key = self.root, self.root_key
        self.chain_pem = self._write("chain.pem", [self.root])
        if issuing:
            key = ec.generate_private_key(ec.SECP256R1())
            self.signer = ca_certificate(
                name("City of Example Issuing CA 1"),
                key.public_key(),
                self.root,
                self.root_key,
                path_length=1,
                usages=None,
            )
            self.signer_key = key
            self.chain_pem = self._write("chain.pem", [self.signer, self.root])

    def sign(self, csr_path: Path, out: str = "citygate-ca.cer", **kwargs: object) -> Path:
        """The CA certificate the city's CA issues for the request in `csr_path` (PEM), written to `out`."""
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
        assert csr.is_signature_valid
        certificate = ca_certificate(csr.subject, csr.public_key(), self.signer, self.signer_key, **kwargs)  # type: ignore[arg-type]
        return self._write(out, [certificate])

    def _write(self, file: str, certificates: Sequence[x509.Certificate]) -> Path:
        path = self.directory / file
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
        return path
