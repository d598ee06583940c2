"""Signing keys from a real JWKS server on 127.0.0.1: caching, rotation, rate limits, threads.

The verifier is citygate's own (`TokenVerifier`, `JwksKeys`); only the monotonic clock that
paces refreshes is a test clock, so "a minute later" takes no time. The JWKS server counts
every fetch it serves.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import pytest
from sso import AUDIENCE, DOMAIN, ISSUER, JwksServer, Signer, claims, jwks_server

from citygate.addons.identity import TokenVerifier
from citygate.addons.jwks import KeysUnavailable
from citygate.proxy.identity.config import IdentitySettings, IssuerSettings
from citygate.proxy.identity.tokens import TokenRejected

REFRESH = 60.0
MAX_AGE = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key_a() -> Signer:
    return Signer("rsa", kid="city-2026-a")


@pytest.fixture(scope="module")
def key_b() -> Signer:
    return Signer("ec", kid="city-2026-b")


@pytest.fixture
def server(key_a):
    with jwks_server(key_a) as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


def verifier_for(url: str, clock: Clock, **overrides) -> TokenVerifier:
    values = {
        "issuer": ISSUER,
        "audiences": (AUDIENCE,),
        "jwks_url": url,
        "strip_domains": (DOMAIN,),
        "jwks_refresh": REFRESH,
        "jwks_max_age": MAX_AGE,
        "jwks_timeout": 2.0,
    }
    values.update(overrides)
    return TokenVerifier(IdentitySettings((IssuerSettings(**values),)), monotonic=clock)


async def outcome(verifier: TokenVerifier, token: str) -> str:
    """The employee, or the reason the token was refused."""
    try:
        return await verifier.employee(token)
    except TokenRejected as exc:
        return f"rejected: {exc.reason}"
    except KeysUnavailable as exc:
        return f"unavailable: {exc}"


def test_keys_are_fetched_once_then_served_from_the_cache(server, clock, key_a):
    verifier = verifier_for(server.url, clock)

    async def scenario() -> list[str]:
        return [await outcome(verifier, key_a.token(claims())) for _ in range(5)]

    assert asyncio.run(scenario()) == ["jlee"] * 5
    assert server.count() == 1


def test_key_rotation_without_restart(server, clock, key_a, key_b):
    verifier = verifier_for(server.url, clock)
    old, new = key_a.token(claims()), key_b.token(claims())

    async def scenario() -> None:
        assert await outcome(verifier, old) == "jlee"
        assert server.count() == 1

        server.publish(key_b)  # the provider rotates: a is retired, b signs from now on
        clock.now += 10
        # Within the refresh interval an unknown kid does not fetch again...
        assert await outcome(verifier, new) == "rejected: unknown kid 'city-2026-b'"
        assert server.count() == 1
        # ...and once the interval has passed, the first token naming it does.
        clock.now += REFRESH
        assert await outcome(verifier, new) == "jlee"
        assert server.count() == 2

        # The retired key is gone with that fetch; its tokens are refused without refetching.
        assert await outcome(verifier, old) == "rejected: unknown kid 'city-2026-a'"
        for n in range(20):
            assert (await outcome(verifier, key_b.token(claims(), kid=f"random-{n}"))).startswith(
                "rejected: unknown kid"
            )
        assert server.count() == 2
        assert await outcome(verifier, new) == "jlee"

        clock.now += REFRESH
        assert await outcome(verifier, old) == "rejected: unknown kid 'city-2026-a'"
        assert server.count() == 3  # one more look, a minute later: still retired

    asyncio.run(scenario())


def test_concurrent_requests_share_one_fetch(server, clock, key_a):
    server.delay = 0.3
    verifier = verifier_for(server.url, clock)

    async def scenario() -> list[str]:
        return await asyncio.gather(*(outcome(verifier, key_a.token(claims())) for _ in range(20)))

    assert asyncio.run(scenario()) == ["jlee"] * 20
    assert server.count() == 1


def test_old_keys_refresh_in_the_background_while_the_cache_answers(server, clock, key_a):
    verifier = verifier_for(server.url, clock)
    token = key_a.token(claims())

    async def scenario() -> float:
        assert await outcome(verifier, token) == "jlee"
        server.delay = 0.5
        clock.now += MAX_AGE
        started = time.monotonic()
        assert await outcome(verifier, token) == "jlee"
        waited = time.monotonic() - started
        assert server.count() <= 2
        await asyncio.sleep(0.7)  # let the background fetch land
        return waited

    waited = asyncio.run(scenario())
    assert waited < 0.3, "a cached key must answer without waiting for the refresh"
    assert server.count() == 2


def test_fetches_run_off_the_event_loop_thread(server, clock, key_a, caplog):
    """The fetch runs in a worker thread: the loop keeps serving while the JWKS server is slow."""
    server.delay = 0.5
    verifier = verifier_for(server.url, clock)
    caplog.set_level(logging.INFO, logger="citygate.jwks")

    async def scenario() -> tuple[int, int, str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        result = await outcome(verifier, key_a.token(claims()))
        task.cancel()
        return threading.get_ident(), ticks, result

    loop_thread, ticks, result = asyncio.run(scenario())
    assert result == "jlee"
    fetched = [r for r in caplog.records if "fetched 1 signing key(s)" in r.getMessage()]
    assert len(fetched) == 1
    assert fetched[0].thread != loop_thread
    assert ticks >= 20, "the event loop was blocked during the fetch"


def test_an_unreachable_jwks_refuses_tokens_and_retries_at_the_interval(clock, key_a):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe closes
    verifier = verifier_for(f"http://127.0.0.1:{port}/certs", clock)

    async def scenario() -> list[str]:
        first = await outcome(verifier, key_a.token(claims()))
        clock.now += 1
        second = await outcome(verifier, key_a.token(claims()))
        return [first, second]

    first, second = asyncio.run(scenario())
    assert first.startswith(
        f"unavailable: the signing keys at http://127.0.0.1:{port}/certs could not be fetched ("
    )
    assert "refused" in first.lower()
    assert second == first  # the same answer, without a new attempt inside the interval


def test_an_outage_after_a_fetch_keeps_the_cached_keys(server, clock, key_a, caplog):
    verifier = verifier_for(server.url, clock)
    token = key_a.token(claims())
    caplog.set_level(logging.WARNING, logger="citygate.jwks")

    async def scenario() -> list[str]:
        results = [await outcome(verifier, token)]
        server.serve_raw(b"oops", status=500)
        clock.now += MAX_AGE
        results.append(await outcome(verifier, token))
        await asyncio.sleep(0.3)
        results.append(await outcome(verifier, token))
        return results

    assert asyncio.run(scenario()) == ["jlee"] * 3
    assert any("HTTP 500; keeping the 1 key(s) fetched earlier" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("body", "status", "location", "reason"),
    [
        (b"<html>not json</html>", 200, None, "Expecting value"),
        (b'{"keys": "none"}', 200, None, 'not a JWKS (a JSON object with a "keys" list)'),
        (b"", 404, None, "HTTP 404"),
        (b"", 302, "http://127.0.0.1:1/elsewhere", "HTTP 302"),  # redirects are not followed
        (b" " * (1024 * 1024 + 1), 200, None, "larger than 1048576 bytes"),
    ],
)
def test_a_broken_jwks_is_reported_plainly(server: JwksServer, clock, key_a, body, status, location, reason):
    server.serve_raw(body, status, location)
    verifier = verifier_for(server.url, clock)
    result = asyncio.run(outcome(verifier, key_a.token(claims())))
    assert result.startswith("unavailable:") and reason in result, result


def test_an_untrusted_issuer_never_causes_a_fetch(server, clock, key_a):
    verifier = verifier_for(server.url, clock)
    token = key_a.token(claims(iss="https://evil.example/"), kid="evil")
    assert asyncio.run(outcome(verifier, token)) == "rejected: issuer not configured: 'https://evil.example/'"
    assert server.count() == 0
