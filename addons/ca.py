"""The proxy's CA at run time: its key's passphrase given to mitmproxy from a file, and a warning
in the proxy log, at start and once a day, when the CA expires within 30 days.

mitmproxy's tlsconfig addon loads the CA from the confdir (CertStore.from_store) and decrypts an
encrypted key with its `cert_passphrase` option. That option on a command line would show the
passphrase to every user of the machine (ps), so `citygate_ca_passphrase_file` names a file
instead (with systemd, a credential: LoadCredentialEncrypted=, README "A CA the city can
trust"). The file is read and checked against the key here, before mitmproxy first loads the CA
at `running`, so that a missing or wrong passphrase stops the start with a message saying which
file to fix rather than mitmproxy's traceback.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from citygate.proxy.pki.certfiles import KeyLocked, PkiError, load_key, read_bytes, read_passphrase
from citygate.proxy.pki.confdir import CA_FILE, PASSPHRASE_OPTION
from citygate.proxy.pki.expiry import expiry_warning
from citygate.proxy.pki.permissions import private_file_findings

log = logging.getLogger("citygate.ca")

OPTION = PASSPHRASE_OPTION
#: How often a running proxy looks at its CA's expiry again (it is logged only when near).
CHECK_SECONDS = 24 * 3600.0
# Set last by `citygate run` (every --set is in place by then) and before mitmproxy first loads
# the CA (at `running`): when it is given a value, an encrypted key no passphrase opens is refused.
# (Merely registering an option also announces it, with its empty default: that is not the start.)
_START_OPTION = "citygate_config"


class CertificateAuthority:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            OPTION,
            str,
            "",
            "A file holding the passphrase of the CA key in the confdir (given to mitmproxy as "
            "cert_passphrase, so that it is never on a command line); readable by citygate's user only.",
        )

    def configure(self, updated: set[str]) -> None:
        if OPTION in updated and getattr(ctx.options, OPTION):
            passphrase = self._passphrase(Path(getattr(ctx.options, OPTION)).expanduser())
            ctx.options.update(cert_passphrase=passphrase.decode())
        if _START_OPTION in updated and getattr(ctx.options, _START_OPTION):
            self._check_ca_file()

    def running(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch_expiry())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _passphrase(self, path: Path) -> bytes:
        try:
            passphrase = read_passphrase(path)
        except PkiError as exc:
            raise exceptions.OptionsError(f"{OPTION}: {exc}") from None
        _log_exposure(path, "the passphrase file")
        ca_file = _ca_file()
        if not ca_file.exists():
            log.warning(
                "citygate: %s is given, but there is no CA in %s yet: mitmproxy makes one with a key "
                "that is not encrypted; install the city's with citygate ca install --passphrase-file",
                OPTION,
                ca_file.parent,
            )
            return passphrase
        try:
            load_key(read_bytes(ca_file, "the CA file"), str(ca_file), passphrase)
        except PkiError as exc:
            raise exceptions.OptionsError(f"{OPTION}: {exc}") from None
        return passphrase

    def _check_ca_file(self) -> None:
        """Warn of a CA key others may read; refuse to start with an encrypted one and no
        passphrase (mitmproxy would fail at `running`, with a traceback)."""
        ca_file = _ca_file()
        if not ca_file.exists():
            return
        _log_exposure(ca_file, "the CA file")
        if ctx.options.cert_passphrase:
            return
        try:
            load_key(read_bytes(ca_file, "the CA file"), str(ca_file), None)
        except KeyLocked:
            raise exceptions.OptionsError(
                f"the CA key in {ca_file} is encrypted: give the file holding its passphrase with "
                f"--set {OPTION}=FILE"
            ) from None
        except PkiError:
            return  # mitmproxy reports a CA it cannot load in its own words

    async def _watch_expiry(self) -> None:
        while True:
            log_expiry(served_chain(ctx.master.addons.get("tlsconfig")), datetime.now(UTC))
            await asyncio.sleep(CHECK_SECONDS)


def log_expiry(chain: list[x509.Certificate] | None, now: datetime) -> None:
    """A warning in the proxy log when the chain the proxy serves expires within expiry.WARN_DAYS."""
    if not chain:
        return
    warning = expiry_warning(chain, now)
    if warning is not None:
        # A warning even when expired: an error at start-up stops mitmproxy, and a proxy whose
        # block pages show a certificate error still blocks, and still passes ordinary traffic.
        log.warning("citygate: %s", warning[1])


def served_chain(tls: object) -> list[x509.Certificate] | None:
    """The CA's certificate and the chain mitmproxy serves with every site certificate it makes,
    as its tlsconfig addon `tls` holds them (None before it has loaded its CA)."""
    store = getattr(tls, "certstore", None)
    if store is None:
        return None
    return [certificate.to_cryptography() for certificate in store.default_chain_certs]


def _log_exposure(path: Path, what: str) -> None:
    """Warn, without stopping the proxy, when users other than citygate's may read `path`."""
    found = private_file_findings(path, what)
    for problem in found.errors + found.warnings:
        log.warning("citygate: %s", problem)


def _ca_file() -> Path:
    return Path(ctx.options.confdir).expanduser() / CA_FILE
