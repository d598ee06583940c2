"""Who is using the portal: an employee signed in with Kerberos (Negotiate) or a directory password.

Negotiate is the same single sign-on the proxy takes (proxy/identity/negotiate.py), with the
portal's own service principal: a browser on a domain PC signs in without a prompt. A password
(HTTP Basic) is the fallback; it crosses the network only over TLS, or never leaves the machine
(a loopback client), and anything else is refused before a password is read. The password is
checked as the proxy checks one (directory/gateway.py): remembered for `credentials_ttl`,
refused again without a bind, and limited to `bind_rate` binds a minute per account, so the
portal is no way to guess passwords.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import NamedTuple

from starlette.requests import Request

REALM = "citygate requests"


class SignedIn(NamedTuple):
    uid: str
    method: str  # negotiate, basic
    address: str


class NotSignedIn(NamedTuple):
    why: str
    ask: bool  # whether to ask for credentials (401) rather than refuse (403)


class Password(NamedTuple):
    uid: str
    password: str


class NegotiateToken(NamedTuple):
    encoded: str  # the base64 after "Negotiate ", as sent


def challenges(request: Request, negotiate: bool) -> list[str]:
    """The WWW-Authenticate values a 401 offers this connection, the preferred first."""
    offered = ["Negotiate"] if negotiate else []
    if may_carry_password(request):
        offered.append(f'Basic realm="{REALM}", charset="UTF-8"')
    return offered


def credentials(request: Request, negotiate: bool) -> Password | NegotiateToken | NotSignedIn:
    """The credentials `request` carries, if it may carry them at all."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if negotiate and scheme.lower() == "negotiate":
        return NegotiateToken(encoded)
    if not may_carry_password(request):
        if negotiate:
            return NotSignedIn(
                "Sign in with your City account: open the portal from a City PC that is signed in "
                "to the domain, or over https:// to use your password.",
                ask=True,
            )
        return NotSignedIn(
            "The request portal takes passwords only over HTTPS: open it with https://, "
            "or ask IT to serve it with TLS.",
            ask=False,
        )
    if scheme.lower() != "basic" or not encoded:
        return NotSignedIn("Sign in with your City account (your directory login and password).", ask=True)
    try:
        uid, colon, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return NotSignedIn("The sign-in could not be read: try again.", ask=True)
    if not colon or not uid or not password:
        return NotSignedIn("Give both your login and your password.", ask=True)
    return Password(uid.strip(), password)


def may_carry_password(request: Request) -> bool:
    # The connection's own scheme (uvicorn runs without proxy headers): never a header's claim.
    return request.scope.get("scheme") == "https" or _loopback(request)


def address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _loopback(request: Request) -> bool:
    try:
        return ipaddress.ip_address(address_of(request)).is_loopback
    except ValueError:
        return False
