"""IdentityResolver on real mitmproxy flows: which credential wins, and what each gives the core."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
from pathlib import Path

import pytest
from mitmproxy.test import tflow
from sso import AUDIENCE, DOMAIN, ISSUER, Signer, claims

from citygate.addons.identity import IdentityResolver
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.static import StaticDirectory
from citygate.proxy.decision import Identity
from citygate.proxy.identity.config import IdentitySettings, IssuerSettings, KerberosSettings, SourceRule
from citygate.proxy.identity.tokens import VerificationKey

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer("ec", kid="ec-1")


@pytest.fixture(scope="module")
def directory() -> DirectoryGateway:
    return DirectoryGateway(StaticDirectory.from_ldif(REPO / "directory" / "demo.ldif"))


def settings(signer: Signer | None = None, *sources: SourceRule) -> IdentitySettings:
    issuers = ()
    if signer is not None:
        issuers = (
            IssuerSettings(
                ISSUER,
                (AUDIENCE,),
                keys=(VerificationKey(signer.public, signer.kid),),
                strip_domains=(DOMAIN,),
            ),
        )
    return IdentitySettings(issuers, tuple(sources))


def resolve(resolver: IdentityResolver, *authorization: str, client: str = "10.40.2.17") -> Identity | None:
    flow = tflow.tflow()
    flow.client_conn.peername = (client, 50000)
    for value in authorization:
        flow.request.headers.add("Proxy-Authorization", value)
    return asyncio.run(resolver.resolve(flow))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


KIOSK = SourceRule(ipaddress.ip_network("10.40.2.16/28"), role="library-kiosk")
JLEE_PC = SourceRule(ipaddress.ip_network("10.40.2.17/32"), employee="jlee")


def test_basic_only_by_default(directory, signer):
    resolver = IdentityResolver(directory)
    assert resolver.challenges == ('Basic realm="citygate"',)
    assert resolve(resolver) is None
    assert resolve(resolver, basic("jlee", "jlee-pass")) == Identity("jlee", "basic")
    assert resolve(resolver, basic("jlee", "wrong")) == Identity(
        "jlee", "basic", False, problem="the password was not accepted"
    )
    assert resolve(resolver, "Bearer " + signer.token(claims())) == Identity(
        "", "bearer", False, problem="Bearer tokens are not accepted: no issuer is configured"
    )


def test_bearer_tokens_when_an_issuer_is_configured(directory, signer):
    resolver = IdentityResolver(directory, settings(signer))
    assert resolver.challenges == ('Basic realm="citygate"', 'Bearer realm="citygate"')
    assert resolve(resolver, "Bearer " + signer.token(claims())) == Identity("jlee", "bearer")
    assert resolve(resolver, "bearer  " + signer.token(claims())) == Identity("jlee", "bearer")
    expired = resolve(resolver, "Bearer " + signer.token(claims(exp=1)))
    assert (expired.authenticated, expired.method) == (False, "bearer")
    assert expired.problem.startswith("token expired at 1970-01-01T00:00:01Z")
    # Basic keeps working next to Bearer.
    assert resolve(resolver, basic("mnguyen", "mnguyen-pass")) == Identity("mnguyen", "basic")


def test_two_authorization_headers_are_refused(directory, signer):
    resolver = IdentityResolver(directory, settings(signer))
    token = "Bearer " + signer.token(claims())
    assert resolve(resolver, token, basic("mnguyen", "mnguyen-pass")) == Identity(
        "", "basic", False, problem="more than one Proxy-Authorization header"
    )


def test_source_addresses_when_no_credentials_are_presented(directory):
    resolver = IdentityResolver(directory, settings(None, JLEE_PC, KIOSK))
    assert resolver.challenges == ('Basic realm="citygate"',)
    assert resolve(resolver, client="10.40.2.17") == Identity("jlee", "source_ip")
    assert resolve(resolver, client="10.40.2.18") == Identity("library-kiosk", "source_ip", shared_role=True)
    assert resolve(resolver, client="10.40.3.1") is None


def test_credentials_win_over_the_source_address(directory, signer):
    """Whoever signs in at a mapped device is who they say; a failed sign-in is not downgraded."""
    resolver = IdentityResolver(directory, settings(signer, JLEE_PC, KIOSK))
    assert resolve(resolver, basic("mnguyen", "mnguyen-pass"), client="10.40.2.17") == Identity(
        "mnguyen", "basic"
    )
    refused = resolve(resolver, basic("mnguyen", "wrong"), client="10.40.2.18")
    assert (refused.user, refused.authenticated) == ("mnguyen", False)
    forged = resolve(resolver, "Bearer not.a.token", client="10.40.2.17")
    assert (forged.method, forged.authenticated) == ("bearer", False)
    assert forged.problem == "malformed token header (not base64url-encoded JSON)"


def test_an_unexpected_error_refuses_and_never_logs_the_token(directory, signer, caplog):
    """An error inside the checks is a refusal (never a crash, never a pass)."""
    resolver = IdentityResolver(directory, settings(signer))
    token = signer.token(claims())

    class Broken(Exception):
        pass

    async def broken(_token: str) -> str:
        raise Broken(token)

    resolver.tokens.employee = broken  # type: ignore[method-assign, union-attr]
    identity = resolve(resolver, "Bearer " + token)
    assert identity == Identity("", "bearer", False, problem="the token could not be checked (Broken)")
    assert token not in caplog.text
    assert "error checking a bearer token: Broken" in caplog.text


# --- Negotiate next to the others (the handshake itself: tests/e2e/test_negotiate.py) --------------

KERBEROS = KerberosSettings(
    Path("/nonexistent.keytab"), "HTTP/proxy.city.example@CITY.EXAMPLE", ("CITY.EXAMPLE",)
)


def with_sign_in(*schemes: str, signer: Signer | None = None) -> IdentitySettings:
    return dataclasses.replace(settings(signer), sign_in=schemes, kerberos=KERBEROS)


@pytest.mark.parametrize(
    ("schemes", "bearer", "challenges"),
    [
        (("negotiate", "basic"), False, ("Negotiate", 'Basic realm="citygate"')),
        (("negotiate",), False, ("Negotiate",)),
        (("basic",), False, ('Basic realm="citygate"',)),
        (("negotiate", "basic"), True, ("Negotiate", 'Basic realm="citygate"', 'Bearer realm="citygate"')),
    ],
)
def test_the_407_offers_negotiate_bare_and_first(directory, signer, schemes, bearer, challenges):
    resolver = IdentityResolver(directory, with_sign_in(*schemes, signer=signer if bearer else None))
    assert resolver.challenges == challenges


def test_basic_left_out_of_sign_in_is_refused_without_asking_the_directory(directory):
    identity = resolve(IdentityResolver(directory, with_sign_in("negotiate")), basic("jlee", "jlee-pass"))
    assert identity == Identity("", "basic", False, problem="Basic sign-in is turned off (identity.sign_in)")


def test_negotiate_when_it_is_not_offered_is_refused(directory):
    identity = resolve(IdentityResolver(directory, with_sign_in("basic")), "Negotiate YIIB")
    assert identity == Identity(
        "", "negotiate", False, problem="Negotiate sign-in is not turned on (identity.sign_in)"
    )


def test_a_held_identity_stands_only_for_its_own_connection_and_only_without_credentials(directory):
    resolver = IdentityResolver(directory, with_sign_in("negotiate", "basic"))
    signed_in, other = tflow.tflow(), tflow.tflow()
    jlee = Identity("jlee", "negotiate")
    resolver._held[signed_in.client_conn] = jlee  # what a successful handshake leaves

    assert asyncio.run(resolver.resolve(signed_in)) == jlee
    assert asyncio.run(resolver.resolve(other)) is None
    signed_in.request.headers["Proxy-Authorization"] = basic("mnguyen", "wrong")
    assert asyncio.run(resolver.resolve(signed_in)).authenticated is False
    del signed_in.request.headers["Proxy-Authorization"]
    assert asyncio.run(resolver.resolve(signed_in)) is None  # the failed sign-in ended the hold
