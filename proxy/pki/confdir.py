"""The proxy's CA as mitmproxy keeps it in its confdir (`citygate run --confdir`), and its check.

mitmproxy (CertStore.from_store) loads `mitmproxy-ca.pem`: the CA's private key, the CA's
certificate, then the certificates above it, which it serves with every site certificate it
makes. It makes a CA of its own only when that file is missing. `mitmproxy-ca-cert.pem` is
the certificate devices are given to trust; for a subordinate that is the city's root (devices
that already trust the root need nothing new, and the subordinate can be replaced or revoked
without touching them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509

from citygate.proxy.pki.certfiles import (
    KeyLocked,
    PkiError,
    describe_key,
    is_encrypted,
    is_self_signed,
    key_matches,
    load_key,
    name,
    parse_certificates,
    pem,
    read_bytes,
)
from citygate.proxy.pki.chain import chain_findings, chain_links
from citygate.proxy.pki.expiry import first_to_expire
from citygate.proxy.pki.findings import Findings
from citygate.proxy.pki.permissions import folder_findings, private_file_findings

BASENAME = "mitmproxy"  # mitmproxy.options.CONF_BASENAME: the core does not import mitmproxy
CA_FILE = f"{BASENAME}-ca.pem"
#: What devices are given to trust (the .cer is the same PEM, for Android and Windows' dialogs).
TRUSTED_FILES = (f"{BASENAME}-ca-cert.pem", f"{BASENAME}-ca-cert.cer")
#: mitmproxy's own CA as PKCS#12, made with it at the first start; the first holds its key.
SELF_MADE_FILES = (f"{BASENAME}-ca.p12", f"{BASENAME}-ca-cert.p12")
DHPARAM_FILE = f"{BASENAME}-dhparam.pem"
#: The option of `citygate run` naming the file that holds the key's passphrase (addons/ca.py
#: hands it to mitmproxy's cert_passphrase, which is never on a command line).
PASSPHRASE_OPTION = "citygate_ca_passphrase_file"  # noqa: S105 (an option name, not a secret)
#: `citygate ca request` writes these; `citygate ca install` moves the key into CA_FILE.
REQUEST_KEY = "citygate-ca.key"
REQUEST_CSR = "citygate-ca.csr"


SELF_SIGNED = (
    "the CA is self-signed (mitmproxy makes such a CA at its first start): every device must be given "
    "it to trust; a subordinate of the city's root needs nothing new on devices (citygate ca request)"
)


def ca_file(key_pem: bytes, chain: Sequence[x509.Certificate]) -> bytes:
    """CA_FILE's contents: the key, then the chain from the CA up to and including the root."""
    return key_pem + b"".join(pem(certificate) for certificate in chain)


def check_confdir(confdir: Path, passphrase: bytes | None, now: datetime) -> Findings:
    """Everything `citygate check` and `citygate ca check` say about the CA in `confdir`."""
    found = Findings()
    path = confdir / CA_FILE
    try:
        present = path.exists()
    except OSError as exc:  # a folder this user may not enter
        found.errors.append(
            f"{path} cannot be looked at by this user ({exc.strerror}); check as the user citygate runs as"
        )
        return found
    if not present:
        found.summary = (
            f"{path}: none yet (citygate run makes a CA of its own there at its first start; "
            "citygate ca install puts a subordinate of the city's root there)"
        )
        return found
    found.extend(folder_findings(confdir))
    found.extend(private_file_findings(path, "the CA file"))
    if not (path.is_file() and os.access(path, os.R_OK)):
        return found  # not a file, or unreadable: nothing more can be said
    data = read_bytes(path, "the CA file")
    try:
        chain = parse_certificates(data)
    except ValueError as exc:
        found.errors.append(f"{path} cannot be read as certificates ({exc}); install the CA again")
        return found
    if not chain:
        found.errors.append(f"{path} holds no certificate; install the CA again (citygate ca install)")
        return found
    found.extend(_key_findings(path, data, chain[0], passphrase))
    broken = chain_links(chain)
    if broken:
        found.errors.append(f"{path}: {broken}")
        return found
    found.extend(chain_findings(chain, now))
    if not is_self_signed(chain[-1]):
        found.errors.append(
            f"{path} does not end with the root ({chain[-1].issuer.rfc4514_string()}): mitmproxy then sends "
            "no chain and browsers refuse every HTTPS block page; install it again with citygate ca install --root"
        )
    found.summary = _summary(path, chain, now)
    if len(chain) == 1:
        found.notes.append(SELF_SIGNED)
    found.extend(_trusted_file_findings(confdir, chain))
    return found


def _key_findings(path: Path, data: bytes, ca: x509.Certificate, passphrase: bytes | None) -> Findings:
    found = Findings()
    try:
        key = load_key(data, str(path), passphrase)
    except KeyLocked:
        found.notes.append(
            f"the key in {path} is encrypted; give its passphrase file to check that it is the key of the "
            "certificate (citygate ca check --passphrase-file)"
        )
        return found
    except PkiError as exc:
        found.errors.append(str(exc))
        return found
    if not key_matches(key, ca):
        found.errors.append(
            f"the key in {path} is not the key of its certificate ({name(ca)}): mitmproxy would make "
            "certificates no browser accepts; install the certificate issued for this key (citygate ca install)"
        )
    encrypted = "encrypted" if is_encrypted(data) else "not encrypted"
    found.notes.append(f"the key in {path}: {describe_key(key)}, {encrypted}, matches the certificate")
    return found


def _summary(path: Path, chain: Sequence[x509.Certificate], now: datetime) -> str:
    ca = chain[0]
    first = first_to_expire(chain)
    days = (first.not_valid_after_utc - now).days
    until = f"until {first.not_valid_after_utc:%Y-%m-%d} ({days} days)"
    if len(chain) == 1:
        return f"{path}: {name(ca)}, self-signed, valid {until}"
    above = " <- ".join(name(certificate) for certificate in chain[1:])
    return f"{path}: {name(ca)}, issued by {above}; the chain is valid {until}"


def _trusted_file_findings(confdir: Path, chain: Sequence[x509.Certificate]) -> Findings:
    """The certificate given to devices must be the chain's root, or they will not trust the proxy."""
    found = Findings()
    path = confdir / TRUSTED_FILES[0]
    if not path.exists():
        return found
    try:
        given = parse_certificates(path.read_bytes())
    except (OSError, ValueError):
        given = []
    if given[:1] != chain[-1:]:
        found.warnings.append(
            f"{path}, the certificate devices are given to trust, is not the root of the proxy's chain "
            f"({name(chain[-1])}); devices given it would refuse the proxy: install the CA again "
            "with citygate ca install"
        )
    return found
