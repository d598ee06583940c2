"""Negotiate (SPNEGO/Kerberos) sign-in: a `Proxy-Authorization: Negotiate <token>` checked with the proxy's keytab.

python-gssapi over MIT krb5 does the cryptography and the replay check; this module reads the
token, runs the one accept step in a worker thread (it reads the keytab and writes the replay
cache: file I/O, never on the event loop), and turns the outcome into an Identity. Kerberos
through SPNEGO takes one round trip: a context that asks for another round is refused.

The replay cache is MIT krb5's default file (`/var/tmp/krb5_<uid>.rcache2`), or one in
`$KRB5RCACHEDIR`: the proxy's user must be able to write there, or every token is refused.

Nothing here logs a token: refusals carry krb5's reason, which never quotes it.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import gssapi
import gssapi.exceptions

from citygate.proxy.decision import Identity
from citygate.proxy.identity.config import KerberosSettings
from citygate.proxy.identity.kerberos import (
    PrincipalRefused,
    principal_login,
    refusal_reason,
    replay_cache_problem,
)

log = logging.getLogger("citygate")

NEGOTIATE = "negotiate"
# A Kerberos AP-REQ in SPNEGO is a few kilobytes (more with a large PAC); anything much larger
# is not a token worth decoding.
MAX_TOKEN_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """One handshake: the identity it gives, and how it is counted (accepted, refused, error)."""

    identity: Identity
    result: str
    seconds: float


class NegotiateAcceptor:
    """Accepts Negotiate tokens for the configured service principal, from the configured keytab."""

    def __init__(self, settings: KerberosSettings) -> None:
        self.settings = settings
        # Told (result, seconds) of each handshake: the metrics addon counts them.
        self.observer: Callable[[str, float], None] | None = None
        self._credentials: gssapi.Credentials | None = None
        self._lock = threading.Lock()

    async def identity(self, encoded: str) -> Identity:
        """The identity the base64 token after `Negotiate ` proves, or an unauthenticated one saying why."""
        token = _decode(encoded)
        if isinstance(token, str):
            outcome = Outcome(Identity("", NEGOTIATE, False, problem=token), "refused", 0.0)
        else:
            outcome = await asyncio.to_thread(self.accept, token)
        if self.observer is not None:
            self.observer(outcome.result, outcome.seconds)
        if outcome.result != "accepted":
            log.info("citygate: Negotiate sign-in refused: %s", outcome.identity.problem)
        return outcome.identity

    def accept(self, token: bytes) -> Outcome:
        """One accept step (blocking: keytab and replay cache are files)."""
        started = time.perf_counter()
        identity, result = self._step(token)
        return Outcome(identity, result, time.perf_counter() - started)

    def _step(self, token: bytes) -> tuple[Identity, str]:
        try:
            credentials = self._acceptor_credentials()
        except gssapi.exceptions.GSSError as exc:
            problem = f"the proxy cannot use its keytab {self.settings.keytab} for {self.settings.principal}: {_minor(exc)} (run citygate check)"
            log.error("citygate: %s", problem)
            # Not the employee's fault: refused as "could not verify", never a 407 to retry.
            return Identity("", NEGOTIATE, None, problem=problem), "error"
        try:
            context = gssapi.SecurityContext(usage="accept", creds=credentials)
            context.step(token)
            if not context.complete:
                # MIT krb5 answers a token whose ticket has expired, or whose authenticator is
                # older than the clock skew allows, with an error token and "continue" (so that
                # a client may retry with a fresh one), not with an error: one round is all
                # Kerberos takes, so this token signs nobody in.
                return _refused(
                    "the Kerberos ticket has expired or the token is outside the allowed clock skew "
                    "(the handshake did not complete in one round)"
                )
            principal = str(context.initiator_name)
        except gssapi.exceptions.GSSError as exc:
            message = exc.gen_message()
            unwritable = replay_cache_problem(message)
            if unwritable is not None:
                log.error("citygate: %s", unwritable)
                return Identity("", NEGOTIATE, None, problem=unwritable), "error"
            return _refused(refusal_reason(message))
        try:
            return Identity(principal_login(principal, self.settings.realms), NEGOTIATE), "accepted"
        except PrincipalRefused as exc:
            return _refused(exc.reason)

    def _acceptor_credentials(self) -> gssapi.Credentials:
        # Acquired once: the keytab is named here, so the environment (KRB5_KTNAME) plays no part.
        with self._lock:
            if self._credentials is None:
                name = gssapi.Name(self.settings.principal, gssapi.NameType.kerberos_principal)
                self._credentials = gssapi.Credentials(
                    usage="accept", name=name, store={"keytab": str(self.settings.keytab)}
                )
            return self._credentials


def _refused(problem: str) -> tuple[Identity, str]:
    return Identity("", NEGOTIATE, False, problem=problem), "refused"


def _decode(encoded: str) -> bytes | str:
    """The token's bytes, or why it is not one (in words that never quote it)."""
    encoded = encoded.strip()
    if not encoded:
        return "a Negotiate header without a token"
    if len(encoded) > MAX_TOKEN_CHARS:
        return f"a Negotiate token of more than {MAX_TOKEN_CHARS} characters"
    try:
        return binascii.a2b_base64(encoded.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeError, ValueError):
        return "a malformed Negotiate token (not base64)"


def _minor(exc: gssapi.exceptions.GSSError) -> str:
    """krb5's own words for an acceptor-credentials problem (they name the keytab, never a token)."""
    message = exc.gen_message()
    return message.rpartition("Minor")[2].partition(":")[2].strip() or message
