"""Tokens that tie a form to the person it was shown to, so that another site cannot post it.

A form carries `issued.mac`, the MAC of who it was for and when, under the portal's secret; a
post is accepted only with a token for the same person, younger than `MAX_AGE_SECONDS`. A
cross-site post rides on the browser's credentials but cannot know the token.
"""

from __future__ import annotations

import hashlib
import hmac
import time

MAX_AGE_SECONDS = 8 * 3600


def token_for(secret: bytes, uid: str, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_mac(secret, uid, issued)}"


def token_is_valid(secret: bytes, uid: str, token: str, now: float | None = None) -> bool:
    issued_text, _, mac = token.partition(".")
    if not issued_text.isdigit() or not mac:
        return False
    issued = int(issued_text)
    age = (time.time() if now is None else now) - issued
    return 0 <= age <= MAX_AGE_SECONDS and hmac.compare_digest(mac, _mac(secret, uid, issued))


def _mac(secret: bytes, uid: str, issued: int) -> str:
    return hmac.new(secret, f"{uid.casefold()}\n{issued}".encode(), hashlib.sha256).hexdigest()
