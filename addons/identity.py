"""Who is asking: the identity a request presents to the proxy, verified before it is believed.

Four ways:

1. `Proxy-Authorization: Negotiate <token>` (Kerberos single sign-on), checked with the proxy's
   keytab (proxy/identity/negotiate.py), when `identity.sign_in` offers it.
2. `Proxy-Authorization: Basic` (a directory password), checked by the directory, unless
   `identity.sign_in` leaves Basic out.
3. `Proxy-Authorization: Bearer <JWT>` (a token from the city's single sign-on), checked
   against the configured issuers' keys (see proxy/identity/tokens.py for the checks, jwks.py for keys).
4. The client's source address, for devices that cannot sign in (off unless configured).

Negotiate is connection-bound, as browsers use it: they send a token once on a connection,
after a 407, and then nothing. A Negotiate identity is therefore held for its client connection
(never another one) and stands for that connection's later requests that present no
credentials. A request that presents credentials is resolved from them alone.

Credentials, when presented, always win over the source address, even when they fail: the
person at a shared or mapped device who signs in is accountable for what they do (their own
grants apply), and a wrong password or a forged token must be refused with a 407, never quietly
downgraded to whatever the address stands for.

A rejected credential gives an unauthenticated Identity whose `problem` says why in plain words
(never the password or the token); the core turns it into `credentials_invalid` and the
decision log prints the problem. A password the directory refused because of the account's
state (disabled, locked, expired, must be changed) carries that state instead, and the core
denies with a reason naming it: a 403 page, not another 407.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import NamedTuple

from mitmproxy import connection, http

from citygate.addons.credentials import REALM, UnsupportedCredentials, basic_credentials
from citygate.addons.jwks import JwksKeys, KeysUnavailable
from citygate.directory.gateway import DirectoryGateway, Verification
from citygate.directory.model import BindOutcome
from citygate.proxy.decision import Identity
from citygate.proxy.identity.config import IdentitySettings, IssuerSettings
from citygate.proxy.identity.negotiate import NEGOTIATE, NegotiateAcceptor
from citygate.proxy.identity.tokens import (
    SYMMETRIC_ALGORITHMS,
    TokenRejected,
    UnverifiedToken,
    check_algorithm,
    choose_keys,
    read_token,
    shown,
    verify_token,
)

log = logging.getLogger("citygate")

BASIC, BEARER, SOURCE_IP = "basic", "bearer", "source_ip"


class TokenVerifier:
    """Checks bearer tokens against the configured issuers; the async shell around proxy/identity/tokens.py."""

    def __init__(
        self,
        settings: IdentitySettings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.jwks: dict[str, JwksKeys] = {
            issuer.issuer: JwksKeys(
                issuer.jwks_url,
                refresh_interval=issuer.jwks_refresh,
                max_age=issuer.jwks_max_age,
                timeout=issuer.jwks_timeout,
                ca_file=issuer.ca_file,
                clock=monotonic,
            )
            for issuer in settings.issuers
            if issuer.jwks_url
        }

    def prefetch(self) -> None:
        """Start fetching every issuer's JWKS in the background (see JwksKeys.prefetch)."""
        for keys in self.jwks.values():
            keys.prefetch()

    async def employee(self, token: str) -> str:
        """The login name a valid token names; TokenRejected or KeysUnavailable otherwise."""
        unverified = read_token(token, self.settings.max_token_bytes)
        issuer = self._issuer(unverified)
        check_algorithm(unverified, issuer)
        keys = issuer.keys
        jwks = self.jwks.get(issuer.issuer)
        if jwks is not None and unverified.alg not in SYMMETRIC_ALGORITHMS:
            keys = keys + await jwks.keys(unverified.kid)
        candidates = choose_keys(keys, unverified)
        return verify_token(token, unverified, issuer, candidates, self._clock())

    def _issuer(self, unverified: UnverifiedToken) -> IssuerSettings:
        issuer = self.settings.issuer(unverified.issuer)
        if issuer is not None:
            return issuer
        # A token claiming an issuer we do not trust, but signed with a key one of ours
        # published (e.g. an Entra ID v1.0 token: same keys, iss https://sts.windows.net/...):
        # check it under that issuer, so the log says "wrong issuer" and what was expected.
        # Only cached keys are consulted: an untrusted issuer never causes a fetch.
        if unverified.kid is not None:
            for candidate in self.settings.issuers:
                known = [
                    *candidate.keys,
                    *(self.jwks[candidate.issuer].cached if candidate.issuer in self.jwks else ()),
                ]
                if any(key.kid == unverified.kid for key in known):
                    return candidate
        if unverified.issuer is None:
            raise TokenRejected("token names no issuer (iss)")
        raise TokenRejected(f"issuer not configured: {shown(unverified.issuer)!r}")


class IdentityResolver:
    def __init__(
        self,
        directory: DirectoryGateway,
        settings: IdentitySettings | None = None,
    ) -> None:
        self.directory = directory
        self.settings = settings if settings is not None else IdentitySettings()
        self.tokens = TokenVerifier(self.settings) if self.settings.bearer_enabled else None
        kerberos = self.settings.kerberos
        self.negotiate = (
            NegotiateAcceptor(kerberos) if kerberos is not None and self.settings.negotiate_enabled else None
        )
        # The Negotiate identity each client connection signed in with (module docstring).
        self._held: weakref.WeakKeyDictionary[connection.Client, Identity] = weakref.WeakKeyDictionary()
        #: The Proxy-Authenticate values a 407 offers, in the order clients should prefer them.
        #: Negotiate goes bare: Chromium refuses a `Negotiate realm="..."` challenge.
        self.challenges: tuple[str, ...] = (
            *("Negotiate" if scheme == NEGOTIATE else f'Basic realm="{REALM}"' for scheme in self._offered()),
            *((f'Bearer realm="{REALM}"',) if self.tokens is not None else ()),
        )

    def _offered(self) -> list[str]:
        """The schemes of `identity.sign_in` that can be answered (Negotiate needs its acceptor)."""
        return [
            scheme for scheme in self.settings.sign_in if scheme != NEGOTIATE or self.negotiate is not None
        ]

    def prefetch_keys(self) -> None:
        """Fetch the issuers' signing keys in the background now, not at the first token."""
        if self.tokens is not None:
            self.tokens.prefetch()

    async def resolve(self, flow: http.HTTPFlow) -> Identity | None:
        """The identity the request presents; None when it presents none.

        Credentials that are present but unusable or wrong give an unauthenticated identity,
        so the decision says `credentials_invalid` rather than `credentials_required`.
        """
        peer = flow.client_conn.peername
        presented = Presented(
            tuple(flow.request.headers.get_all("Proxy-Authorization")), peer[0] if peer else None
        )
        return await self.resolve_on(flow.client_conn, presented)

    def held(self, client: connection.Client) -> Identity | None:
        """The Negotiate identity `client`'s connection signed in with, if any."""
        return self._held.get(client)

    async def resolve_on(self, client: connection.Client, presented: Presented) -> Identity | None:
        """`resolve` for what a request on `client`'s connection presented: the connection's held
        Negotiate identity when it presents no credentials; a successful Negotiate sign-in is held."""
        if not presented.authorization:
            held = self._held.get(client)
            if held is not None:
                return held
        identity = await self.resolve_presented(presented)
        if presented.authorization:
            if identity is not None and identity.method == NEGOTIATE and identity.authenticated:
                self._held[client] = identity
            else:
                # Credentials that fail end what the connection had: it signs in again.
                self._held.pop(client, None)
        return identity

    async def resolve_presented(self, presented: Presented) -> Identity | None:
        """`resolve` for credentials kept from an earlier request (a CONNECT's, for its tunnel)."""
        values = presented.authorization
        if not values:
            return self._by_source(presented.client_ip)
        if len(values) > 1:
            return self._unusable(presented.client_ip, BASIC, "more than one Proxy-Authorization header")
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() == "bearer":
            return await self._by_token(token.strip())
        if scheme.lower() == NEGOTIATE:
            return await self._by_negotiate(token)
        if not self.settings.basic_enabled and scheme.lower() == BASIC:
            return self._unusable(
                presented.client_ip, BASIC, "Basic sign-in is turned off (identity.sign_in)"
            )
        try:
            credentials = basic_credentials(values[0])
        except UnsupportedCredentials as exc:
            return self._unusable(presented.client_ip, BASIC, str(exc))
        verification = await self.directory.authenticate(credentials.user, credentials.password)
        return password_identity(credentials.user, verification)

    async def _by_token(self, token: str) -> Identity:
        if self.tokens is None:
            return Identity(
                "", BEARER, False, problem="Bearer tokens are not accepted: no issuer is configured"
            )
        try:
            employee = await self.tokens.employee(token)
        except TokenRejected as exc:
            return Identity("", BEARER, False, problem=exc.reason)
        except KeysUnavailable as exc:
            # Not the token's fault: refuse (fail closed) as "could not verify", like a directory outage.
            return Identity("", BEARER, None, problem=str(exc))
        except Exception as exc:
            # Never a pass and never a crash. The exception's class only: its text might quote the token.
            log.error("citygate: error checking a bearer token: %s", type(exc).__name__)
            return Identity(
                "", BEARER, False, problem=f"the token could not be checked ({type(exc).__name__})"
            )
        return Identity(employee, BEARER)

    async def _by_negotiate(self, token: str) -> Identity:
        if self.negotiate is None:
            return Identity(
                "", NEGOTIATE, False, problem="Negotiate sign-in is not turned on (identity.sign_in)"
            )
        return await self.negotiate.identity(token)

    def _by_source(self, client_ip: str | None) -> Identity | None:
        rule = self.settings.source_for(client_ip)
        if rule is None:
            return None
        if rule.role is not None:
            return Identity(rule.role, SOURCE_IP, shared_role=True)
        assert rule.employee is not None
        return Identity(rule.employee, SOURCE_IP)

    @staticmethod
    def _unusable(client_ip: str | None, method: str, problem: str) -> Identity:
        log.info("citygate: unusable proxy credentials from %s: %s", client_ip or "-", problem)
        return Identity("", method, authenticated=False, problem=problem)


def password_identity(user: str, verification: Verification) -> Identity:
    """The identity a password check gives: verified, refused (saying why), or unverifiable."""
    outcome = verification.outcome
    if outcome is BindOutcome.OK:
        return Identity(user, BASIC)
    if outcome is BindOutcome.UNAVAILABLE:
        return Identity(user, BASIC, authenticated=None)
    remembered = " (remembered: not sent to the directory again)" if verification.remembered else ""
    if outcome is BindOutcome.RATE_LIMITED:
        # A 407, not a 403 page: a browser shown a 403 keeps sending the same credentials and
        # never asks again, while a 407 asks, so the employee can type the right password once
        # the minute is over. The 407 costs the directory nothing meanwhile (no bind is made).
        wait = math.ceil(verification.retry_after)
        problem = f"too many sign-in attempts for this account; try again in {wait} s"
        return Identity(user, BASIC, authenticated=False, problem=problem)
    state = outcome.state
    if state is None:
        return Identity(
            user, BASIC, authenticated=False, problem=f"the password was not accepted{remembered}"
        )
    problem = f"the directory refused the sign-in: {state.described}{remembered}"
    return Identity(user, BASIC, authenticated=False, problem=problem, state=state)


class Presented(NamedTuple):
    """What a request offered to identify itself: its Proxy-Authorization values and source address.

    Kept with a tunnel, so the credentials of a CONNECT count for the decisions made inside it
    (the TLS SNI, intercepted requests), and only there: they are never looked at for another
    connection.
    """

    authorization: tuple[str, ...]
    client_ip: str | None

    def __repr__(self) -> str:  # never let a credential reach a log line through repr()
        return f"Presented(authorization=<{len(self.authorization)} value(s)>, client_ip={self.client_ip!r})"
