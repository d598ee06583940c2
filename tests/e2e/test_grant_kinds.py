"""Group, department and city-wide grants through a real citygate, with real curl, on the demo city.

The demo has one of each: parks-2026-002 for the group parks-social-team (jlee, mnguyen) on
LinkedIn; comms-2026-002 for the department Communications on Threads; city-2026-001, a
city-wide allowance for the City's own YouTube pages (/CityOfExample, ...), approved by the City
Manager. Metrics come from the proxy's own /metrics.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from demo_config import REPO, demo_config
from harness import curl
from test_grant_hours import clock_at
from test_metrics import scrape, values, wait_for

from citygate.addons.audit import AuditLog
from citygate.addons.decision_log import DecisionLog
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics
from citygate.proxy.audit.files import expand, open_log

CITY_PAGE = "https://www.youtube.com/CityOfExample/videos"
CITYGATE = str(Path(sys.executable).parent / "citygate")


def denials_and_uses(log_dir: Path) -> list[dict]:
    """The access log's decisions about requests (not tunnels)."""
    records = []
    for path in expand([log_dir]):
        with open_log(path) as handle:
            records += [json.loads(line) for line in handle]
    return [r for r in records if r.get("event.action") == "http-request"]


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon, tmp_path):
    config = demo_config(tmp_path, metrics={"listen": "127.0.0.1:0", "refresh_seconds": 0.2})
    metrics = Metrics()
    runner = proxy_runner_factory(
        [CityGate(), AuditLog(), DecisionLog(), metrics, redirect_addon],
        {"citygate_config": str(config), "citygate_audit_directory": str(tmp_path / "log")},
    )
    runner.metrics_url = metrics.server.url  # type: ignore[attr-defined]
    return runner


def grant_uses(proxy) -> dict[tuple[str, ...], float]:
    return values(scrape(proxy.metrics_url), "citygate_grant_uses_total", "site", "kind", "purpose")


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_city_page_loads_without_sign_in_and_the_rest_of_the_site_does_not(proxy, tls_upstream, scheme):
    page = curl(proxy, CITY_PAGE.replace("https", scheme))
    other = curl(proxy, f"{scheme}://www.youtube.com/somethingelse")

    assert page.status == 200, page.body
    if scheme == "https":
        # The tunnel opens (some of its pages are everyone's); the other page inside is refused.
        assert (other.connect_status, other.status) == (200, 403)
        assert "<dd>credentials_required</dd>" in other.body
    else:
        assert other.status == 407
    allowed = [line for line in proxy.log_lines() if "allow reason=granted site=youtube" in line]
    assert allowed and all("grant=city-2026-001" in line and "user=-" in line for line in allowed)
    wait_for(lambda: grant_uses(proxy).get(("youtube", "city", "business")))


def test_an_embed_of_another_video_is_still_refused_for_everyone(proxy, tls_upstream):
    embed = curl(proxy, "https://www.youtube.com/embed/x", proxy_user="mnguyen:mnguyen-pass")
    council = curl(proxy, "https://www.youtube.com/embed/council-2026-11-18")

    assert embed.status == 403 and "<dd>no_grant</dd>" in embed.body
    assert council.status == 200


@pytest.mark.parametrize(("user", "status"), [("jlee", 200), ("mnguyen", 200), ("dbrown", 403)])
def test_members_of_the_granted_group_pass_and_others_do_not(proxy, tls_upstream, user, status):
    result = curl(proxy, "https://www.linkedin.com/company/city-of-example", proxy_user=f"{user}:{user}-pass")

    assert (result.connect_status if status == 200 else result.status) == status
    if status == 200:
        wait_for(lambda: grant_uses(proxy).get(("linkedin", "group", "business")))


def test_the_department_grant_covers_its_department_but_not_its_approver(proxy, tls_upstream):
    member = curl(proxy, "https://www.threads.net/@cityofexample", proxy_user="kwilliams:kwilliams-pass")
    approver = curl(proxy, "https://www.threads.net/@cityofexample", proxy_user="rpatel:rpatel-pass")
    other = curl(proxy, "https://www.threads.net/@cityofexample", proxy_user="jlee:jlee-pass")

    assert member.connect_status == 200 and member.status in (200, 502)  # allowed: passed or decrypted
    assert approver.status == 403 and "<dd>self_approval</dd>" in approver.body
    assert other.status == 403 and "<dd>no_grant</dd>" in other.body


@pytest.fixture
def el_paso(proxy_runner_factory, redirect_addon, tmp_path):
    """The demo city with the El Paso-style lunch window (config/examples/) among its grants, its
    clock at `times` in turn (test_grant_hours.clock_at)."""

    def start(*times: str):
        config = demo_config(tmp_path, metrics={"listen": "127.0.0.1:0", "refresh_seconds": 0.2})
        shutil.copy(REPO / "config" / "examples" / "el-paso-personal-use.yaml", config.parent / "grants")
        gate, metrics = CityGate(), Metrics()
        gate.clock = clock_at(*times)  # type: ignore[assignment]
        runner = proxy_runner_factory(
            [gate, AuditLog(), DecisionLog(), metrics, redirect_addon],
            {"citygate_config": str(config), "citygate_audit_directory": str(tmp_path / "log")},
        )
        runner.metrics_url = metrics.server.url  # type: ignore[attr-defined]
        return runner, config

    return start


def test_a_lunch_window_passes_at_1230_is_refused_at_14_and_counts_as_personal_use(
    el_paso, tls_upstream, tmp_path
):
    # 2026-06-01 is a Monday. mnguyen has no grant of their own for Facebook.
    proxy, config = el_paso("2026-06-01T12:30", "2026-06-01T12:30", "2026-06-01T12:30", "2026-06-01T14:00")

    lunch = curl(proxy, "https://www.facebook.com/", proxy_user="mnguyen:mnguyen-pass")
    afternoon = curl(proxy, "https://www.facebook.com/", proxy_user="mnguyen:mnguyen-pass")

    assert lunch.status == 200, lunch.body
    assert afternoon.status == 403 and "<dd>outside_hours</dd>" in afternoon.body
    assert "access resumes Tue 2026-06-02 12:00" in afternoon.body
    wait_for(lambda: grant_uses(proxy).get(("facebook", "city", "personal")))
    assert not grant_uses(proxy).get(("facebook", "city", "business"))
    # The access log says who used it, and that it was personal use; so does the report.
    records = [r for r in denials_and_uses(tmp_path / "log") if r["rule.id"] == "city-2026-lunch"]
    allowed = [r for r in records if r["event.type"] == "allowed"]
    assert allowed and {
        (r["user.name"], r["citygate.purpose_kind"], r["rule.category"]) for r in allowed
    } == {("mnguyen", "personal", "city")}
    report = subprocess.run(
        [
            CITYGATE,
            "report",
            str(tmp_path / "log"),
            "--config",
            str(config),
            "--since",
            "2026-01-01",
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    [row] = [r for r in csv.DictReader(io.StringIO(report.stdout)) if r["employee"] == "mnguyen"]
    assert int(row["personal_requests"]) >= 1 and int(row["personal_requests"]) == int(row["requests"])
