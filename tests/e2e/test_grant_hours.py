"""A grant with `hours:` through a real citygate, on the demo config, with the proxy's clock set.

police-2026-002 gives dbrown YouTube on Mon-Fri 07:00-18:00 (city time). 2026-06-01 is a Monday.
The gate's clock is replaced (CityGate.clock), so the same requests are decided at 10:00, at 20:00,
and across the window's end on one connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, tzinfo
from pathlib import Path

import pytest
from harness import curl

from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "citygate.yaml"
DBROWN = "dbrown:dbrown-pass"
VIDEO = "https://www.youtube.com/watch?v=council"


def clock_at(*times: str) -> object:
    """A clock giving each time in turn (the last one from then on), in the zone asked for."""
    remaining: Iterator[str] = iter(times)
    last = times[-1]

    def now(zone: tzinfo) -> datetime:
        nonlocal last
        last = next(remaining, last)
        return datetime.fromisoformat(last).replace(tzinfo=zone)

    return now


@pytest.fixture
def proxy_at(proxy_runner_factory, redirect_addon):
    def start(*times: str):
        gate = CityGate()
        gate.clock = clock_at(*times)  # type: ignore[assignment]
        return proxy_runner_factory(
            [gate, DecisionLog(), redirect_addon], {"citygate_config": str(DEMO_CONFIG)}
        )

    return start


def test_inside_its_hours_the_grant_lets_the_request_through(proxy_at, tls_upstream):
    proxy = proxy_at("2026-06-01T10:00")

    result = curl(proxy, VIDEO, proxy_user=DBROWN)

    assert result.status == 200, result.body
    assert any(
        "allow reason=granted site=youtube" in line and "grant=police-2026-002" in line
        for line in proxy.log_lines()
    )


def test_outside_its_hours_the_block_page_says_when_access_resumes(proxy_at, tls_upstream):
    proxy = proxy_at("2026-06-01T20:00")

    result = curl(proxy, VIDEO, proxy_user=DBROWN)

    assert result.status == 403
    assert "<dd>outside_hours</dd>" in result.body
    assert "access resumes Tue 2026-06-02 07:00" in result.body
    assert "come back when access resumes" in result.body
    assert not tls_upstream.contacted


def test_a_tunnel_opened_inside_the_hours_does_not_outlive_them(proxy_at, tls_upstream):
    # The CONNECT, the TLS handshake and the first request at 17:59; the second request, on the
    # same connection, at 18:01: the tunnel was decrypted, so the second is decided on its own.
    proxy = proxy_at("2026-06-01T17:59", "2026-06-01T17:59", "2026-06-01T17:59", "2026-06-01T18:01")

    result = curl(proxy, VIDEO, proxy_user=DBROWN, extra_args=[VIDEO + "&again=1"])

    assert [out["http_code"] for out in result.write_outs] == [200, 403]
    assert result.write_outs[1]["num_connects"] == 0  # the same connection, the same tunnel
