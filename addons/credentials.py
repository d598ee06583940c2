"""Reading proxy credentials from a request, and removing them before it goes upstream."""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from mitmproxy.http import Headers

# Hop-by-hop headers meant for the proxy alone: the credentials must never reach a site, and
# mitmproxy forwards Proxy-Connection on plain HTTP unless it is removed.
PROXY_ONLY_HEADERS = ("Proxy-Authorization", "Proxy-Connection")
REALM = "citygate"


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log line through repr()
        return f"BasicCredentials(user={self.user!r}, password=***)"


class UnsupportedCredentials(ValueError):
    """The header is present but is not usable Basic credentials."""


def basic_credentials(value: str) -> BasicCredentials:
    """The Basic credentials in a Proxy-Authorization value.

    Raises UnsupportedCredentials for another scheme or a malformed value.
    """
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        raise UnsupportedCredentials(f"unsupported scheme {scheme[:20]!r}")
    try:
        decoded = binascii.a2b_base64(token.strip().encode("ascii"), strict_mode=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise UnsupportedCredentials("malformed Basic credentials") from exc
    # Passwords may contain ":"; user names may not (RFC 7617).
    user, separator, password = decoded.partition(":")
    if not separator or not user.strip():
        raise UnsupportedCredentials("Basic credentials without a user name")
    return BasicCredentials(user.strip().casefold(), password)


def strip_proxy_headers(headers: Headers) -> None:
    for name in PROXY_ONLY_HEADERS:
        headers.pop(name, None)
