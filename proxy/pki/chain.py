"""The CA's chain up to the city's root, and whether browsers will accept what citygate signs with it.

mitmproxy serves the chain it loads from its confdir: the CA's certificate and every certificate
after it in mitmproxy-ca.pem. OpenSSL completes the chain only up to a certificate it holds, so
the root must be in the file too (without it Chromium gets the site certificate alone and shows
ERR_CERT_AUTHORITY_INVALID, tests/e2e/test_subordinate_ca.py). What is checked here is what a
browser checks of each CA in the path, read with `cryptography`: it is a CA, may sign
certificates, may be used for TLS servers, allows the CAs below it, is in its validity period.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from citygate.proxy.pki.certfiles import PkiError, is_self_signed, issued_by, name
from citygate.proxy.pki.expiry import expiry_warning
from citygate.proxy.pki.findings import Findings

# Where the chain of an AD CS or OpenSSL/step-ca subordinate is found, for an error's fix.
_WHERE_CHAINS_ARE = (
    "AD CS: the .p7b certreq wrote, or certutil -ca.chain; OpenSSL or step-ca: the intermediate and "
    "root certificate files"
)
_MAX_DEPTH = 8  # no real PKI is deeper; stops a loop of certificates that name each other
_TLS_SERVER = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}


def build_chain(
    ca: x509.Certificate, pool: Sequence[x509.Certificate], root: x509.Certificate
) -> list[x509.Certificate]:
    """[ca, the CA that issued it, ..., root]: each issuer found by its signature among `pool`
    and `root`. PkiError when a link is missing or the chain ends at another root."""
    if not is_self_signed(root):
        raise PkiError(
            f"the root given ({name(root)}) is not a root: it is issued by {root.issuer.rfc4514_string()}; "
            "give the self-signed root certificate that the city's devices trust (--root)"
        )
    candidates = [*pool, root]
    chain = [ca]
    while not is_self_signed(chain[-1]):
        current = chain[-1]
        issuer = next((c for c in candidates if c not in chain and issued_by(current, c)), None)
        if issuer is None:
            raise PkiError(
                f"the certificate that issued {name(current)} ({current.issuer.rfc4514_string()}) is not "
                f"among those given; add it with --chain ({_WHERE_CHAINS_ARE})"
            )
        chain.append(issuer)
        if len(chain) > _MAX_DEPTH:
            raise PkiError(f"the chain of {name(ca)} is longer than {_MAX_DEPTH} certificates; check --chain")
    if chain[-1] != root:
        raise PkiError(
            f"the chain of {name(ca)} ends at the root {name(chain[-1])}, not at the root given "
            f"({name(root)}); give the root that issued it with --root"
        )
    return chain


def chain_links(certificates: Sequence[x509.Certificate]) -> str | None:
    """Why certificates as stored (the CA first, then each one's issuer) do not form a chain."""
    for index, (certificate, issuer) in enumerate(pairwise(certificates), 1):
        if not issued_by(certificate, issuer):
            return (
                f"certificate {index + 1} ({name(issuer)}) did not issue certificate {index} "
                f"({name(certificate)}): the file must hold the CA's certificate, then its issuer, and so "
                "on up to the root; install it again with citygate ca install"
            )
    return None


def chain_findings(chain: Sequence[x509.Certificate], now: datetime) -> Findings:
    """What browsers would refuse in `chain` (the CA first, its root last), and what to know."""
    found = Findings()
    for depth, certificate in enumerate(chain):
        root = depth == len(chain) - 1 and is_self_signed(certificate)
        _ca_extensions(certificate, depth, root, found)
        if certificate.not_valid_before_utc > now:
            found.errors.append(
                f"{name(certificate)} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; "
                "check this machine's clock, or wait until then"
            )
        if not root and isinstance(certificate.signature_hash_algorithm, hashes.SHA1):
            found.errors.append(
                f"{name(certificate)} is signed with SHA-1, which browsers refuse; have it issued again with SHA-256"
            )
    expiry = expiry_warning(chain, now)
    if expiry is not None:
        (found.errors if expiry[0] else found.warnings).append(expiry[1])
    return found


def _ca_extensions(certificate: x509.Certificate, depth: int, root: bool, found: Findings) -> None:
    """`certificate` is `depth` CAs above the site certificates citygate makes (0: the proxy's CA)."""
    what = name(certificate)
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        if not root or constraints is not None:
            found.errors.append(
                f"{what} is not a CA certificate (basicConstraints CA:TRUE is missing), so browsers refuse "
                "what it signs; have it issued as a subordinate CA (AD CS: the SubCA template; OpenSSL: "
                "basicConstraints=critical,CA:TRUE,pathlen:0; step: --profile intermediate-ca)"
            )
    elif constraints.path_length is not None and constraints.path_length < depth:
        found.errors.append(
            f"{what} allows {constraints.path_length} CA(s) below it (pathlen), but {depth} are: browsers "
            "refuse the chain; the CA above citygate's must allow a subordinate CA"
        )
    elif depth == 0 and constraints.path_length is None:
        found.notes.append(f"{what} has no path length limit; pathlen:0 would keep it from signing other CAs")
    usage = _extension(certificate, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        found.errors.append(
            f"{what} may not sign certificates (keyUsage lacks keyCertSign); have it issued as a subordinate CA"
        )
    purposes = _extension(certificate, x509.ExtendedKeyUsage)
    if not root and purposes is not None and not _TLS_SERVER & set(purposes):
        found.errors.append(
            f"{what} is limited to other uses than TLS servers (extendedKeyUsage lacks serverAuth), so "
            "browsers refuse the site certificates citygate makes; have it issued with serverAuth"
        )
    constrained = _extension(certificate, x509.NameConstraints)
    if constrained is not None and constrained.permitted_subtrees:
        allowed = ", ".join(str(subtree.value) for subtree in constrained.permitted_subtrees)
        found.warnings.append(
            f"{what} has name constraints: citygate can show the HTTPS block page only for names under {allowed}"
        )


def _extension[T: x509.ExtensionType](certificate: x509.Certificate, kind: type[T]) -> T | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
