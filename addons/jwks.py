"""An identity provider's signing keys from its JWKS address: fetched off the event loop, cached.

mitmproxy serves every connection from one event loop, so the HTTP fetch runs in a worker
thread (`asyncio.to_thread`) and the loop only awaits it. The keys are cached:

- A token whose key id (kid) is cached is checked at once, with no await on the network; when
  the cache is older than `max_age`, a refresh starts in the background and the cached keys
  keep answering meanwhile.
- A token naming an unknown kid makes citygate fetch the JWKS again, because the provider may
  have rotated its keys, but at most once per `refresh_interval`: random kids cannot make
  citygate hammer the provider. A rotated-out key disappears with the next successful fetch.
- Concurrent requests that need a fetch share one.
- When a fetch fails, the keys fetched earlier stay in use; with none, tokens of this issuer
  cannot be checked and social-media requests that present them are refused.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.error import HTTPError, URLError

from citygate.proxy.identity.tokens import VerificationKey, knows_kid, parse_jwks

log = logging.getLogger("citygate.jwks")

#: A JWKS holds a handful of keys; anything much larger is not one.
MAX_JWKS_BYTES = 1024 * 1024


class KeysUnavailable(Exception):
    """No keys have been fetched from the JWKS address, so no token of the issuer can be checked."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # The configured https:// address is the one trusted; a redirect could lead to plain HTTP.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def download_jwks(url: str, timeout: float, ca_file: Path | None = None) -> tuple[VerificationKey, ...]:
    """Fetch and parse a JWKS (blocking: call it in a worker thread, never on the event loop)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    # No proxy from the environment: citygate is the city's proxy, and the keys must come
    # straight from the provider.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=context),
        _NoRedirects(),
    )
    if not url.startswith(("https://", "http://")):
        raise ValueError("the JWKS address must be http(s)")
    # The config only lets https:// (or http:// to this machine) through; checked again above.
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "citygate"})  # noqa: S310
    with opener.open(request, timeout=timeout) as response:
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"the document is larger than {MAX_JWKS_BYTES} bytes")
    keys, skipped = parse_jwks(body)
    for reason in skipped:
        log.info("citygate: JWKS %s: skipped %s", url, reason)
    # Logged from the worker thread: the record's thread shows where the fetch ran.
    log.info("citygate: fetched %d signing key(s) from %s", len(keys), url)
    return keys


def _plain(exc: BaseException) -> str:
    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, URLError):
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


class JwksKeys:
    """The keys published at one JWKS address."""

    def __init__(
        self,
        url: str,
        *,
        refresh_interval: float,
        max_age: float,
        timeout: float,
        ca_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_interval = refresh_interval
        self.max_age = max_age
        self.timeout = timeout
        self.ca_file = ca_file
        self._clock = clock
        self._keys: tuple[VerificationKey, ...] | None = None  # None: no fetch has succeeded yet
        self._fetched_at = 0.0  # when the cached keys were fetched
        self._attempted_at: float | None = None  # when the last fetch started
        self._last_error = ""
        self._flight: asyncio.Task[None] | None = None

    def prefetch(self) -> None:
        """Start fetching the keys in the background, if this runs on an event loop.

        Called when the config loads, so that the first token need not wait, and a wrong or
        unreachable JWKS address shows up in the log at start rather than at the first sign-in.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (e.g. `citygate check`): the first token fetches instead
        if self._keys is None:
            self._start_fetch()

    @property
    def cached(self) -> tuple[VerificationKey, ...]:
        """The keys in the cache, without fetching anything."""
        return self._keys or ()

    async def keys(self, kid: str | None) -> tuple[VerificationKey, ...]:
        """The keys to check a token naming `kid` with; KeysUnavailable when none were ever fetched.

        Awaits a fetch only when nothing is cached or `kid` is not (and the last fetch is at
        least `refresh_interval` old, or one is already under way).
        """
        now = self._clock()
        if self._keys is not None:
            if now - self._fetched_at >= self.max_age and self._may_fetch(now):
                self._start_fetch()  # in the background: the cached keys answer this request
            if knows_kid(self._keys, kid):
                return self._keys
        flight = self._current_flight()
        if flight is None and self._may_fetch(now):
            flight = self._start_fetch()
        if flight is not None:
            # Shielded: a client that goes away must not cancel the fetch others wait on.
            await asyncio.shield(flight)
        if self._keys is None:
            raise KeysUnavailable(
                f"the signing keys at {self.url} could not be fetched ({self._last_error or 'not yet tried'})"
            )
        return self._keys

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.refresh_interval

    def _current_flight(self) -> asyncio.Task[None] | None:
        flight = self._flight
        if flight is None or flight.done() or flight.get_loop() is not asyncio.get_running_loop():
            return None
        return flight

    def _start_fetch(self) -> asyncio.Task[None]:
        flight = self._current_flight()
        if flight is not None:
            return flight
        self._attempted_at = self._clock()
        # Kept in self._flight: the loop holds tasks only weakly.
        self._flight = asyncio.ensure_future(self._fetch(self._attempted_at))
        return self._flight

    async def _fetch(self, started: float) -> None:
        try:
            keys = await asyncio.to_thread(download_jwks, self.url, self.timeout, self.ca_file)
        except Exception as exc:  # any failure: keep what was cached, and say why
            self._last_error = _plain(exc)
            kept = f"; keeping the {len(self._keys)} key(s) fetched earlier" if self._keys else ""
            log.warning(
                "citygate: could not fetch signing keys from %s: %s%s", self.url, self._last_error, kept
            )
            return
        self._keys, self._fetched_at, self._last_error = keys, started, ""
