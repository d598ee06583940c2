"""Signing a browser in by navigation, so that only a page the employee opens asks for sign-in.

A browser opens a CONNECT for every social host a page touches: the page the employee opened,
and every frame, script and pixel an ordinary page embeds. The CONNECT says nothing about
which it is, and a 407 to an embed's CONNECT makes the browser ask for a password on a page that
has nothing to do with social media. So a browser's social CONNECT that presents no credentials,
from an address that has not signed in recently, is not answered 407: its tunnel opens without
an identity, and each request inside it is answered from its `Sec-Fetch-Dest`
(addons/embeds.py): an embed is refused quietly (`credentials_required`), and a top-level
navigation is redirected to the proxy's sign-in page, a plain-HTTP URL the proxy answers
itself. There the 407 is asked (Negotiate, then Basic where offered), and once the browser has
signed in, it is sent back to the page it wanted. From then on the address is remembered: its
browser's CONNECTs get the 407 again, which a browser that signed in answers without a dialog
(Negotiate with its ticket, Basic with the password it keeps for the proxy).

The memory only chooses between a 407 and an unidentified tunnel; it never stands for an
identity. Clients that are not browsers (curl, agents, SDKs) keep the 407 at the CONNECT.

Pure: the gate (addons/gate.py) asks these questions, addons/signed_in.py keeps the memory.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import NamedTuple

from citygate.proxy.hosts import normalize_host

#: Where the proxy answers sign-ins itself, unless `identity.sign_in_host` names another host. A
#: reserved name (RFC 6761 .invalid) can never be a real site, and a browser resolves nothing
#: itself when it sends a request through its proxy.
DEFAULT_SIGN_IN_HOST = "sign-in.citygate.invalid"
SIGN_IN_PATH = "/sign-in"
#: How long an address that signed in keeps getting the 407 at a browser CONNECT. Kerberos: a
#: working day, about the lifetime of a Windows logon's ticket (AD's default is 10 hours).
#: Basic: long enough to come back from the sign-in page; a browser that keeps the password
#: sends it with every CONNECT anyway, which refreshes this.
REMEMBERED_SECONDS = {"negotiate": 8 * 3600.0, "basic": 300.0}


def is_browser(user_agents: Sequence[str]) -> bool:
    """Whether a CONNECT comes from a web browser: Chromium, Edge, Firefox and Safari all send
    a `User-Agent` starting with `Mozilla/` on their CONNECTs; curl, agents and SDKs do not."""
    return len(user_agents) == 1 and user_agents[0].lstrip().startswith("Mozilla/")


def sign_in_location(sign_in_host: str, target: str) -> str:
    """The sign-in page's URL that sends the browser back to `target` once signed in."""
    return f"http://{sign_in_host}{SIGN_IN_PATH}?{urllib.parse.urlencode({'to': target})}"


class Target(NamedTuple):
    """Where the sign-in page sends the browser back to: a social page, never anything else."""

    url: str
    host: str
    path: str


class TargetProblem(ValueError):
    """The sign-in page's `to` is not a page it may send a browser back to."""


def read_target(values: Sequence[str]) -> Target:
    """The page to return to, from the sign-in URL's `to` values; TargetProblem when it is unusable.

    Only an http or https URL with a host is taken, as one value without control characters or
    spaces (it goes into a Location header); whether the host is social is the caller's check.
    """
    if len(values) != 1:
        raise TargetProblem("the sign-in link must name one page to return to (to=)")
    url = values[0]
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise TargetProblem("the page to return to contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetProblem(f"the page to return to is not a URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise TargetProblem("the page to return to must be an http or https URL with a host and no user name")
    host = normalize_host(parts.hostname if port is None else f"{parts.hostname}:{port}")
    if host is None:
        raise TargetProblem("the page to return to does not name a valid host")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(url, host.name, path)
