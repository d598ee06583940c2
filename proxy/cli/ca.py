"""`citygate ca`: a subordinate CA from the city's own PKI for the proxy, and its check.

`request` makes the key and the signing request, `install` checks what the city's CA signed and
writes the files mitmproxy loads from its confdir, `check` says whether that CA can be used and
when it expires; `citygate check --confdir` says the same (`check_problems`). What is checked
lives in proxy/pki; this module reads the arguments, writes the files and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import pwd
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from citygate.proxy.cli.commands import Commands, command, command_with_actions
from citygate.proxy.pki.certfiles import (
    CaKey,
    PkiError,
    describe_key,
    is_self_signed,
    key_matches,
    load_key,
    name,
    pem,
    read_bytes,
    read_certificates,
    read_passphrase,
)
from citygate.proxy.pki.chain import build_chain, chain_findings
from citygate.proxy.pki.confdir import (
    CA_FILE,
    DHPARAM_FILE,
    PASSPHRASE_OPTION,
    REQUEST_CSR,
    REQUEST_KEY,
    SELF_MADE_FILES,
    SELF_SIGNED,
    TRUSTED_FILES,
    ca_file,
    check_confdir,
)
from citygate.proxy.pki.findings import Findings
from citygate.proxy.pki.permissions import private_file_findings
from citygate.proxy.pki.request import (
    KEY_TYPES,
    SUBJECT_EXAMPLE,
    key_pem,
    new_key,
    parse_subject,
    signing_request,
)

DEFAULT_CONFDIR = "~/.mitmproxy"  # as `citygate run --confdir`

EPILOG = f"""examples:
  citygate ca request --confdir /var/lib/citygate/ca --subject "{SUBJECT_EXAMPLE}"
  citygate ca request --confdir /var/lib/citygate/ca --subject "..." --key-type rsa \\
                      --passphrase-file /etc/citygate/ca-passphrase
  citygate ca install --confdir /var/lib/citygate/ca --cert citygate-ca.cer --chain citygate-ca.p7b \\
                      --root city-root.cer --owner citygate
  citygate ca check --confdir /var/lib/citygate/ca --passphrase-file /etc/citygate/ca-passphrase

The city's CA signs the request as a subordinate CA (AD CS: the SubCA template; OpenSSL or
step-ca: a CA with pathlen 0); README "A CA the city can trust" has every step.
exit status: 0 when done (check: the CA can be used), 1 otherwise.
"""
EPILOG_REQUEST = f"""examples:
  citygate ca request --confdir /var/lib/citygate/ca --subject "{SUBJECT_EXAMPLE}"
  citygate ca request --subject "CN=citygate proxy CA,OU=IT,O=City of Example,C=US" --key-type rsa
  citygate ca request --subject "..." --passphrase-file /etc/citygate/ca-passphrase   # key encrypted
  citygate ca request --subject "..." --passphrase-file -                              # asks for it

Writes {REQUEST_KEY} (the new key, mode 0600) and {REQUEST_CSR} (the request to send to the
city's CA) in the confdir, and prints how AD CS, OpenSSL or step-ca signs it.
"""
EPILOG_INSTALL = f"""examples:
  citygate ca install --confdir /var/lib/citygate/ca --cert citygate-ca.cer --chain citygate-ca.p7b \\
                      --root city-root.cer --owner citygate
  citygate ca install --cert citygate-ca.pem --chain issuing-ca.pem --root root.pem \\
                      --passphrase-file /etc/citygate/ca-passphrase --replace

Checks that the certificate is for the key ({REQUEST_KEY} in the confdir unless --key), is a CA
that may sign site certificates, is in its validity period and chains to --root; then writes
{CA_FILE} (the key, the certificate and its chain up to the root: mode 0600) and
{TRUSTED_FILES[0]} (the root, which devices trust) for mitmproxy. Restart citygate afterwards.
"""
EPILOG_CHECK = f"""examples:
  citygate ca check                                  # the CA in {DEFAULT_CONFDIR}
  citygate ca check --confdir /var/lib/citygate/ca --passphrase-file /etc/citygate/ca-passphrase

Errors (exit status 1): the key file open to every user, a key that is not the certificate's,
a certificate that is not a CA or not yet valid, an expired CA or chain. Warnings: expiry within
30 days, a key file open to a group.
"""


def register(commands: Commands) -> None:
    """Add `citygate ca`, and `--confdir` to `citygate check` (whose CA `check_problems` checks)."""
    actions = command_with_actions(commands, "ca", "a CA from the city's own PKI for the proxy", EPILOG)
    request = command(actions, "request", "make the key and signing request", EPILOG_REQUEST, _request)
    _confdir(request)
    request.add_argument(
        "--subject", required=True, help=f'the CA\'s name, e.g. "{SUBJECT_EXAMPLE}" (RFC 4514, needs a CN)'
    )
    request.add_argument(
        "--key-type", choices=KEY_TYPES, default="ec", help="ec: P-256 (default); rsa: RSA 3072"
    )
    _passphrase_file(request, "encrypt the key with the passphrase in this file ('-': ask, or read stdin)")
    _owner(request)
    request.add_argument(
        "--force", action="store_true", help=f"replace a {REQUEST_KEY} already there (its request is lost)"
    )
    install = command(
        actions, "install", "install the signed certificate and its chain", EPILOG_INSTALL, _install
    )
    _confdir(install)
    install.add_argument("--cert", required=True, type=Path, help="the certificate the city's CA issued")
    install.add_argument(
        "--chain",
        action="append",
        default=[],
        type=Path,
        help="certificates above it, the root included or not (PEM, DER or .p7b); may be repeated",
    )
    install.add_argument(
        "--root", required=True, type=Path, help="the city's root certificate, which devices trust"
    )
    install.add_argument("--key", type=Path, help=f"the CA's key (default: {REQUEST_KEY} in the confdir)")
    _passphrase_file(install, "the key's passphrase; the installed key is encrypted with it")
    _owner(install)
    install.add_argument("--replace", action="store_true", help="replace the CA already in the confdir")
    check = command(
        actions, "check", "check the proxy's CA: permissions, key, chain, expiry", EPILOG_CHECK, _check
    )
    _confdir(check)
    _passphrase_file(check, "the key's passphrase, to check that the key is the certificate's")
    commands.choices["check"].add_argument(
        "--confdir",
        default=DEFAULT_CONFDIR,
        help="also check the proxy's CA in this folder, as `citygate run --confdir` (default: %(default)s)",
    )


def _confdir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--confdir",
        default=DEFAULT_CONFDIR,
        help="the proxy's CA folder, as `citygate run --confdir` (default: %(default)s)",
    )


def _passphrase_file(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--passphrase-file", metavar="FILE", help=help)


def _owner(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--owner", metavar="USER", help="the user citygate runs as, who owns the key (needs root)"
    )


# --- citygate check ------------------------------------------------------------------------------


def check_problems(args: argparse.Namespace) -> list[str]:
    """`citygate check` on the CA in `--confdir`: notes and warnings printed, the problem returned."""
    try:
        confdir = _folder(args.confdir)
    except PkiError as exc:
        print(f"  warning: {exc}")
        return []
    found = check_confdir(confdir, None, datetime.now(UTC))
    _print(found, notes=False)
    return ["the proxy's CA cannot be used"] if found.errors else []


def _print(found: Findings, *, notes: bool) -> None:
    if found.summary:
        print(f"  CA {found.summary}")
    for note in found.notes if notes else ():
        print(f"  {note}")
    for warning in found.warnings:
        print(f"  warning: {warning}")
    for error in found.errors:
        print(f"citygate: {error}", file=sys.stderr)


# --- citygate ca check ---------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    try:
        confdir = _folder(args.confdir)
        passphrase = _passphrase(args.passphrase_file, confirm=False)
    except PkiError as exc:
        return _fail(str(exc))
    found = check_confdir(confdir, passphrase, datetime.now(UTC))
    _print(found, notes=True)
    if found.errors or not (confdir / CA_FILE).exists():
        return 1
    print(f"{confdir / CA_FILE}: the proxy's CA can be used")
    return 0


# --- citygate ca request -------------------------------------------------------------------------


def _request(args: argparse.Namespace) -> int:
    try:
        confdir = _folder(args.confdir)
        key_path, csr_path = confdir / REQUEST_KEY, confdir / REQUEST_CSR
        subject = parse_subject(args.subject)
        owner = _owner_ids(args.owner, required=False)
        if key_path.exists() and not args.force:
            raise PkiError(
                f"{key_path} already exists: a request made earlier is waiting for its certificate "
                "(citygate ca install); --force makes a new key and request, and the earlier one can "
                "then never be installed"
            )
        passphrase = _passphrase(args.passphrase_file, confirm=True)
    except PkiError as exc:
        return _fail(str(exc))
    key = new_key(args.key_type)
    csr = signing_request(key, subject)
    try:
        _make_folder(confdir, owner)
        _write(key_path, key_pem(key, passphrase), 0o600, owner)
        _write(csr_path, csr.public_bytes(serialization.Encoding.PEM), 0o644, owner)
    except OSError as exc:
        return _fail(_cannot_write(confdir, exc))
    encrypted = "encrypted with the passphrase given" if passphrase else "not encrypted"
    print(f"wrote {key_path}: the new CA key ({describe_key(key)}, {encrypted}, mode 0600)")
    print(
        f"wrote {csr_path}: the request for {subject.rfc4514_string()}, a CA that may sign site certificates only"
    )
    print(_next_steps(confdir, csr_path, args))
    return 0


def _next_steps(confdir: Path, csr: Path, args: argparse.Namespace) -> str:
    passphrase = (
        f" --passphrase-file {args.passphrase_file}" if args.passphrase_file not in (None, "-") else ""
    )
    owner = f" --owner {args.owner}" if args.owner else ""
    return f"""
next: have the city's CA sign {csr.name} as a subordinate CA, then install what it returns.
  AD CS (on a domain machine, as someone allowed to enroll for the SubCA template):
    certreq -submit -attrib "CertificateTemplate:SubCA" {csr.name} citygate-ca.cer citygate-ca.p7b
    (if a CA manager must approve it: certreq -retrieve REQUEST-ID citygate-ca.cer citygate-ca.p7b)
    the city's root (--root): export it from Trusted Root Certification Authorities as Base-64
    .cer (certutil -ca.cert city-root.cer gives it only when the root itself signs the request)
  OpenSSL root (subca.ext: basicConstraints=critical,CA:TRUE,pathlen:0
                keyUsage=critical,keyCertSign,cRLSign  extendedKeyUsage=serverAuth
                subjectKeyIdentifier=hash  authorityKeyIdentifier=keyid:always):
    openssl x509 -req -in {csr.name} -CA city-root.pem -CAkey city-root.key -CAcreateserial \\
      -days 730 -sha256 -extfile subca.ext -out citygate-ca.cer
  step-ca root:
    step certificate sign --profile intermediate-ca --not-after 17520h {csr.name} \\
      root_ca.crt root_ca_key > citygate-ca.cer
then:
  citygate ca install --confdir {confdir} --cert citygate-ca.cer --chain citygate-ca.p7b \\
    --root city-root.cer{passphrase}{owner}
  (--chain: the issuing CAs between the root and citygate's, if any; AD CS's .p7b holds them all)"""


# --- citygate ca install -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signed:
    """What `install` writes: the key as it will be stored, and the chain from the CA to the root."""

    key: CaKey
    key_pem: bytes
    chain: list[x509.Certificate]


def _install(args: argparse.Namespace) -> int:
    try:
        confdir = _folder(args.confdir)
        key_path = args.key or confdir / REQUEST_KEY
        owner = _owner_ids(args.owner, required=True)
        if (confdir / CA_FILE).exists() and not args.replace:
            raise PkiError(
                f"{confdir / CA_FILE} already holds the proxy's CA; --replace installs this one instead "
                "(devices that were given the old one to trust no longer need it)"
            )
        passphrase = _passphrase(args.passphrase_file, confirm=False)
        signed = _signed(args, key_path, passphrase)
    except PkiError as exc:
        return _fail(str(exc))
    found = chain_findings(signed.chain, datetime.now(UTC))
    if len(signed.chain) == 1:
        found.warnings.append(f"{name(signed.chain[0])} is not a subordinate: {SELF_SIGNED}")
    if found.errors:
        _print(found, notes=False)
        print(f"citygate: nothing was installed in {confdir}", file=sys.stderr)
        return 1
    try:
        _write_confdir(confdir, signed, owner)
        if key_path == confdir / REQUEST_KEY:
            key_path.unlink(missing_ok=True)  # the key now lives in the CA file only
    except OSError as exc:
        return _fail(_cannot_write(confdir, exc))
    ca, root = signed.chain[0], signed.chain[-1]
    print(f"installed {name(ca)} in {confdir / CA_FILE}, with its chain up to {name(root)}")
    installed = check_confdir(confdir, passphrase, datetime.now(UTC))
    _print(installed, notes=True)
    print(
        f"devices must trust {name(root)} ({confdir / TRUSTED_FILES[0]}); those that trust the city's "
        "root already need nothing new"
    )
    restart = "restart citygate so that it loads the new CA"
    if passphrase:
        restart += (
            f", with --set {PASSPHRASE_OPTION}=FILE (the passphrase file, readable by citygate's user only)"
        )
    print(f"next: {restart}")
    return 1 if installed.errors else 0


def _signed(args: argparse.Namespace, key_path: Path, passphrase: bytes | None) -> _Signed:
    key = load_key(read_bytes(key_path, "the key file"), str(key_path), passphrase)
    given = read_certificates(args.cert, "the certificate file")
    ca = next((certificate for certificate in given if key_matches(key, certificate)), None)
    if ca is None:
        raise PkiError(
            f"no certificate in {args.cert} is for the key {key_path} (it holds {', '.join(map(name, given))}); "
            "give the certificate issued for the request made with this key, or that key with --key"
        )
    pool = [certificate for certificate in given if certificate is not ca]
    for path in args.chain:
        pool += read_certificates(path, "the chain file")
    roots = [
        certificate
        for certificate in read_certificates(args.root, "the root file")
        if is_self_signed(certificate)
    ]
    if len(roots) != 1:
        raise PkiError(
            f"{args.root} must hold exactly one self-signed root certificate (it holds {len(roots)}); "
            "give the city's root, which devices trust"
        )
    chain = build_chain(ca, pool, roots[0])
    return _Signed(key, key_pem(key, passphrase), chain)


def _write_confdir(confdir: Path, signed: _Signed, owner: tuple[int, int] | None) -> None:
    from mitmproxy.certs import DEFAULT_DHPARAM

    _make_folder(confdir, owner)
    _write(confdir / CA_FILE, ca_file(signed.key_pem, signed.chain), 0o600, owner)
    for trusted in TRUSTED_FILES:
        _write(confdir / trusted, pem(signed.chain[-1]), 0o644, owner)
    for stale in SELF_MADE_FILES:
        # mitmproxy's own CA as PKCS#12 (its key in the first): it must not outlive its replacement.
        (confdir / stale).unlink(missing_ok=True)
    if not (confdir / DHPARAM_FILE).exists():
        # mitmproxy writes it at start when it is missing; written now, the folder may be read-only.
        _write(confdir / DHPARAM_FILE, DEFAULT_DHPARAM, 0o644, owner)


# --- files, owners, passphrases ------------------------------------------------------------------


def _folder(confdir: str) -> Path:
    try:
        return Path(confdir).expanduser()
    except RuntimeError:  # no home folder known for "~"
        raise PkiError(
            f"--confdir {confdir}: this user has no home folder for ~; give the full path"
        ) from None


def _owner_ids(user: str | None, *, required: bool) -> tuple[int, int] | None:
    """(uid, gid) of `--owner`; None to keep this user's. As root, install must be told who."""
    if user is None:
        if required and os.geteuid() == 0:
            raise PkiError(
                "running as root: name the user citygate runs as with --owner (e.g. --owner citygate), "
                "so that it can read the key and no one else can"
            )
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PkiError(f"--owner {user}: there is no such user on this machine") from None
    if os.geteuid() not in (0, entry.pw_uid):
        raise PkiError(f"--owner {user}: only root can give files to another user; run as root, or as {user}")
    return entry.pw_uid, entry.pw_gid


def _make_folder(folder: Path, owner: tuple[int, int] | None) -> None:
    if folder.is_dir():
        return
    folder.mkdir(mode=0o700, parents=True)
    if owner is not None:
        os.chown(folder, *owner)


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Replace `path` with `data` at once: a proxy starting meanwhile reads the old file or the
    new one, never half of one; and the key is never readable by others, even for a moment."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)  # whatever the umask
            if owner is not None:
                os.fchown(file.fileno(), *owner)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _passphrase(source: str | None, *, confirm: bool) -> bytes | None:
    """The passphrase from `--passphrase-file`: a file, or '-' (asked for on a terminal, else stdin's first line)."""
    if source is None:
        return None
    if source != "-":
        path = Path(source)
        for warning in private_file_findings(path, "the passphrase file").warnings:
            print(f"  warning: {warning}")
        return read_passphrase(path)
    if not sys.stdin.isatty():
        text = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        text = getpass.getpass("the CA key's passphrase: ")
        if confirm and getpass.getpass("the same passphrase again: ") != text:
            raise PkiError("the two passphrases differ; nothing was written")
    if not text:
        raise PkiError(
            "the passphrase is empty; give one, or leave out --passphrase-file for a key not encrypted"
        )
    return text.encode()


def _cannot_write(confdir: Path, exc: OSError) -> str:
    return (
        f"cannot write in {confdir} ({exc.strerror}: {exc.filename}); run as root with --owner, or as "
        "the user who owns the folder"
    )


def _fail(message: str) -> int:
    print(f"citygate: {message}", file=sys.stderr)
    return 1
