"""Who is using the portal: an employee signed in with their directory password (HTTP Basic).

A password crosses the network only over TLS, or never leaves the machine (a loopback client):
anything else is refused before a password is read. The password is checked as the proxy checks
one (directory/gateway.py): remembered for `credentials_ttl`, refused again without a bind, and
limited to `bind_rate` binds a minute per account, so the portal is no way to guess passwords.
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
    method: str  # basic
    address: str


class NotSignedIn(NamedTuple):
    why: str
    ask: bool  # whether to ask for credentials (401) rather than refuse (403)


def credentials(request: Request) -> tuple[str, str] | NotSignedIn:
    """The Basic credentials of `request`, if it may carry a password at all."""
    # The connection's own scheme (uvicorn runs without proxy headers): never a header's claim.
    if request.scope.get("scheme") != "https" and not _loopback(request):
        return NotSignedIn(
            "The request portal takes passwords only over HTTPS: open it with https://, "
            "or ask IT to serve it with TLS.",
            ask=False,
        )
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return NotSignedIn("Sign in with your City account (your directory login and password).", ask=True)
    try:
        uid, colon, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return NotSignedIn("The sign-in could not be read: try again.", ask=True)
    if not colon or not uid or not password:
        return NotSignedIn("Give both your login and your password.", ask=True)
    return uid.strip(), password


def address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _loopback(request: Request) -> bool:
    try:
        return ipaddress.ip_address(address_of(request)).is_loopback
    except ValueError:
        return False
