"""The guarded gateway against a real slapd that stops or hangs: the breaker, its backoff, the
per-call timeout and the readiness they give, measured at the wire.

A TcpRelay (tests/tcp_relay.py) sits between citygate and the private slapd and notes every
connection citygate opens, so directory attempts are counted outside citygate. Timings are real
(no fake clock): check_interval 1 s, call_timeout 0.5 s, a first backoff of 0.25 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slapd import Slapd, directory_options
from tcp_relay import TcpRelay

from citygate.directory.backends import open_directory
from citygate.directory.breaker import GuardSettings, State
from citygate.directory.cache import CacheSettings
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.model import BindOutcome
from citygate.directory.settings import DirectorySettings

GUARD = GuardSettings(call_timeout=0.5, check_interval=1.0, failures=3, backoff=0.25)
# Scheduling slack on a shared 2-core machine, on top of each promised bound.
SLACK = 0.5


@pytest.fixture
def relay(fresh_slapd: Slapd) -> Iterator[TcpRelay]:
    relay = TcpRelay(fresh_slapd.port)
    yield relay
    relay.close()


@pytest.fixture
def gateway(fresh_slapd: Slapd, relay: TcpRelay, tmp_path: Path) -> Iterator[DirectoryGateway]:
    options = directory_options(fresh_slapd, tmp_path / "config", servers=[relay.url])
    directory = open_directory(DirectorySettings("ldap", options, tmp_path), str(tmp_path / "c.yaml"))
    gateway = DirectoryGateway(directory, CacheSettings(ttl=60, grace=0), guard=GUARD)
    gateway.start()
    yield gateway
    gateway.close()


def wait_until(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `condition()` held (polled every 10 ms), or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.01)
    return None


def hammer(gateway: DirectoryGateway, seconds: float) -> list[tuple[float, bool]]:
    """Look up a new uid (never cached) every 20 ms for `seconds`: (latency, answered) each."""

    async def run() -> list[tuple[float, bool]]:
        outcomes = []
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            started = time.monotonic()
            answers = await gateway.people([f"nobody{n}"])
            outcomes.append((time.monotonic() - started, bool(answers)))
            await asyncio.sleep(0.02)
        return outcomes

    return asyncio.run(run())


def test_readiness_follows_a_stopped_directory_within_one_check_interval(fresh_slapd, gateway):
    assert asyncio.run(gateway.people(["jlee"]))["jlee"] is not None
    assert gateway.available()

    fresh_slapd.stop()  # no request comes: only the health checks can notice
    down = wait_until(lambda: not gateway.available(), GUARD.check_interval + SLACK)
    assert down is not None, "readiness did not turn within one check interval"
    assert gateway.breaker is not None and gateway.breaker.state is not State.CLOSED

    fresh_slapd.start()
    back = wait_until(gateway.available, GUARD.check_interval + SLACK)
    assert back is not None, "readiness did not return within one check interval"
    assert asyncio.run(gateway.people(["mnguyen"]))["mnguyen"] is not None


def test_a_stopped_directory_is_probed_with_backoff_not_asked_by_every_call(fresh_slapd, relay, gateway):
    assert asyncio.run(gateway.people(["jlee"]))["jlee"] is not None
    stopped_at = time.monotonic()
    fresh_slapd.stop()

    outcomes = hammer(gateway, 5.0)
    assert len(outcomes) > 100
    assert not any(answered for _, answered in outcomes)  # fail closed: no answer, never a guess
    assert max(latency for latency, _ in outcomes) < GUARD.call_timeout + 0.1

    attempts = relay.arrivals(since=stopped_at)
    # Without the breaker every call would connect (hundreds); with it: the calls that opened
    # it (up to `failures`, each with one retry on a fresh connection), then one probe per
    # backoff interval: 0.25, 0.5, 1, 1, 1 s ... (the cap is check_interval).
    assert len(attempts) <= 2 * GUARD.failures + 10, attempts
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    probe_gaps = [gap for gap in gaps if gap > 0.1]  # the burst that opened it is milliseconds apart
    assert len(probe_gaps) >= 4, gaps
    # The schedule, with room for a loaded machine: the first probes come soon, the waits never
    # shrink, and they end capped at check_interval. (A probe can also fail inside ldap3 without
    # a connection, when ldap3 still counts the server as down: then one gap spans two waits.)
    assert probe_gaps[0] <= 0.5 + 0.15, gaps
    assert all(later >= earlier - 0.15 for earlier, later in itertools.pairwise(probe_gaps)), gaps
    assert all(gap <= GUARD.check_interval + 0.3 for gap in probe_gaps), gaps
    for gap in probe_gaps[-2:]:
        assert gap == pytest.approx(GUARD.check_interval, abs=0.3), gaps  # doubled, then capped

    fresh_slapd.start()
    assert wait_until(gateway.available, GUARD.check_interval + SLACK) is not None
    assert asyncio.run(gateway.people(["mnguyen"]))["mnguyen"] is not None


def test_a_hung_directory_costs_a_call_at_most_call_timeout_and_readiness_follows(
    fresh_slapd, relay, gateway
):
    assert asyncio.run(gateway.people(["jlee"]))["jlee"] is not None
    with fresh_slapd.paused():
        paused_at = time.monotonic()
        down = wait_until(lambda: not gateway.available(), GUARD.check_interval + GUARD.call_timeout + SLACK)
        assert down is not None, "readiness did not turn while the directory hung"
        outcomes = hammer(gateway, 3.0)
        attempts = relay.arrivals(since=paused_at)
    latencies = sorted(latency for latency, _ in outcomes)
    assert not any(answered for _, answered in outcomes)
    assert latencies[-1] < GUARD.call_timeout + 0.1, latencies[-5:]
    # Open: calls fail at once, and the hung server sees a probe per backoff interval at most.
    assert len(attempts) <= 10, attempts

    back = wait_until(gateway.available, GUARD.check_interval + GUARD.call_timeout + SLACK)
    assert back is not None, "readiness did not return after the directory resumed"
    assert asyncio.run(gateway.people(["mnguyen"]))["mnguyen"] is not None


def test_a_hung_directory_fails_a_call_at_call_timeout_while_the_breaker_is_closed(fresh_slapd, gateway):
    # The first call on a hung directory: nothing is open yet, so the timeout alone bounds it.
    assert asyncio.run(gateway.people(["jlee"]))["jlee"] is not None
    with fresh_slapd.paused():
        started = time.monotonic()
        assert asyncio.run(gateway.people(["mnguyen"])) == {}
        elapsed = time.monotonic() - started
    assert GUARD.call_timeout - 0.05 <= elapsed < GUARD.call_timeout + 0.1


def test_cached_answers_serve_within_grace_while_the_breaker_is_open(fresh_slapd, relay, tmp_path):
    options = directory_options(fresh_slapd, tmp_path / "config", servers=[relay.url])
    directory = open_directory(DirectorySettings("ldap", options, tmp_path), str(tmp_path / "c.yaml"))
    gateway = DirectoryGateway(directory, CacheSettings(ttl=0.2, grace=60, credentials_ttl=0.2), guard=GUARD)
    gateway.start()
    try:
        assert asyncio.run(gateway.people(["jlee"]))["jlee"] is not None
        assert asyncio.run(gateway.authenticate("jlee", "jlee-pass")).outcome is BindOutcome.OK
        fresh_slapd.stop()
        assert wait_until(lambda: not gateway.available(), GUARD.check_interval + SLACK) is not None
        before = len(relay.arrivals())
        time.sleep(0.3)  # past the TTL: the answers are stale, but within grace
        assert asyncio.run(gateway.people(["jlee"]))["jlee"].department == "Parks"
        assert asyncio.run(gateway.authenticate("jlee", "jlee-pass")).outcome is BindOutcome.OK
        assert asyncio.run(gateway.people(["mnguyen"])) == {}  # never seen: unavailable
        # Served from the cache without contacting the directory (probes aside).
        assert len(relay.arrivals()) - before <= 1
    finally:
        gateway.close()
