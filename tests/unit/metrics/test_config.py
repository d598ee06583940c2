"""The `metrics:` section, the label bound and the grant gauges' arithmetic."""

from datetime import timedelta

import pytest

from citygate.proxy.metrics.config import MetricsSettings, parse_listen
from citygate.proxy.metrics.definitions import OTHER, UNKNOWN, LabelGuard, MetricSet, grant_counts
from citygate.proxy.runtime.metrics_http import listen_override, with_listen


def test_without_a_metrics_section_metrics_are_served_on_localhost_9090(policy_files):
    settings = policy_files.load().features.metrics

    assert settings == MetricsSettings()
    assert (settings.enabled, settings.listen, settings.expiring_days) == (True, "127.0.0.1:9090", 14)


def test_every_metrics_setting_is_read(policy_files):
    section = (
        "metrics:\n  enabled: false\n  listen: '[::1]:9100'\n  refresh_seconds: 0.5\n"
        "  expiring_days: 30\n  max_departments: 12\n"
    )

    settings = policy_files.load(config=policy_files.mini_config + section).features.metrics

    assert settings == MetricsSettings(
        enabled=False, host="::1", port=9100, refresh_seconds=0.5, expiring_days=30, max_departments=12
    )
    assert settings.listen == "[::1]:9100"


@pytest.mark.parametrize(
    ("setting", "message", "fix"),
    [
        ("listen: localhost", "metrics.listen 'localhost' is not HOST:PORT", "127.0.0.1:9090"),
        ("listen: 127.0.0.1:99999", "is not HOST:PORT", "[::1]:9090"),
        ("enabled: yes please", "metrics.enabled 'yes please' is not true or false", "enabled: true"),
        (
            "refresh_seconds: 0",
            "metrics.refresh_seconds 0 is not a number from 0.1 to 3600",
            "refresh_seconds: 5",
        ),
        ("expiring_days: 2.5", "metrics.expiring_days 2.5 is not a whole number", "expiring_days: 14"),
        ("port: 9090", 'unknown setting "metrics.port"', "known metrics settings: enabled, listen"),
    ],
)
def test_metrics_mistakes_name_the_line_and_the_fix(policy_files, setting, message, fix):
    problems = policy_files.problems(config=policy_files.mini_config + f"metrics:\n  {setting}\n")

    [problem] = [p for p in problems if message in p.message]
    assert (problem.path, problem.line) == (policy_files.config, 13)
    assert fix in problem.fix


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9090", ("127.0.0.1", 9090)),
        ("[::1]:9100", ("::1", 9100)),
        (":9090", ("0.0.0.0", 9090)),
        ("metrics.city.example:0", ("metrics.city.example", 0)),
        ("9090", None),
        ("::1:9090", None),
        ("host name:80", None),
    ],
)
def test_listen_addresses(text, address):
    assert parse_listen(text) == address


def test_the_command_line_listen_option_wins_over_the_configuration():
    sets = ["block_global=false", "citygate_metrics_listen=127.0.0.1:9300"]

    assert listen_override(sets) == "127.0.0.1:9300"
    assert with_listen(MetricsSettings(), listen_override(sets)).listen == "127.0.0.1:9300"
    assert with_listen(MetricsSettings(), None) == MetricsSettings()
    with pytest.raises(ValueError, match="citygate_metrics_listen 'nine' is not HOST:PORT"):
        with_listen(MetricsSettings(), "nine")


def test_departments_beyond_the_bound_are_counted_as_other():
    guard = LabelGuard(2)

    assert [guard(d) for d in ("Parks", "Police", "Fire", "Parks", None, "")] == [
        "Parks",
        "Police",
        OTHER,
        "Parks",
        UNKNOWN,
        UNKNOWN,
    ]


def test_grant_gauges_count_each_site_by_the_grant_files_department(policy_files):
    grants = {
        "parks.yaml": "department: Parks\ngrants:\n"
        "  - {id: p1, employee: jlee, sites: [facebook, instagram], purpose: Post closures,"
        " approved_by: ahernandez, approved_on: 2026-01-12, expires: 2026-06-30}\n"
        "  - {id: p2, employee: mnguyen, sites: [facebook], purpose: Post events,"
        " approved_by: ahernandez, approved_on: 2026-01-12, expires: 2026-12-31}\n",
        "nodept.yaml": "grants:\n"
        "  - {id: n1, employee: kw, sites: [youtube], purpose: Videos,"
        " approved_by: rp, approved_on: 2026-06-01, start: 2026-07-01, expires: 2026-12-31}\n",
    }
    policy = policy_files.load(grants)
    p1 = next(g for g in policy.grants if g.id == "p1")

    # Exactly 14 days before p1 ends: it is expiring; a microsecond earlier it is not.
    at = p1.valid_until - timedelta(days=14)
    active, expiring = grant_counts(policy.grants, at, 14)
    assert active == {("facebook", "Parks"): 2, ("instagram", "Parks"): 1}  # n1 has not started
    assert expiring == {("facebook", "Parks"): 1, ("instagram", "Parks"): 1}
    assert grant_counts(policy.grants, at - timedelta(microseconds=1), 14)[1] == {}

    later = p1.valid_until + timedelta(days=1)  # p1 over, n1 started
    active, expiring = grant_counts(policy.grants, later, 14)
    assert active == {("facebook", "Parks"): 1, ("youtube", UNKNOWN): 1}
    assert expiring == {}


def test_metrics_live_on_a_private_registry():
    from prometheus_client import REGISTRY

    one, two = MetricSet(), MetricSet()
    one.decisions.labels("facebook", "Parks", "deny", "no_grant").inc()

    assert (
        one.registry.get_sample_value(
            "citygate_decisions_total",
            {"site": "facebook", "department": "Parks", "decision": "deny", "reason": "no_grant"},
        )
        == 1
    )
    assert (
        two.registry.get_sample_value(
            "citygate_decisions_total",
            {"site": "facebook", "department": "Parks", "decision": "deny", "reason": "no_grant"},
        )
        is None
    )
    assert REGISTRY.get_sample_value("citygate_build_info", {"version": "0.1.0"}) is None


def test_metrics_folders_of_supervisors_that_died_are_removed(tmp_path):
    import os
    import subprocess

    from citygate.proxy.runtime.metrics_http import FOLDER_PREFIX, remove_stale_folders

    dead = subprocess.Popen(["true"])  # once it has exited, its pid names no process
    dead.wait()
    stale = tmp_path / f"{FOLDER_PREFIX}{dead.pid}-abc123"
    mine = tmp_path / f"{FOLDER_PREFIX}{os.getpid()}-def456"
    other = tmp_path / "citygate-metrics-not-a-pid"
    for folder in (stale, mine, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"\0" * 16)

    assert remove_stale_folders(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()


def test_a_run_folder_that_is_not_private_is_refused(tmp_path, monkeypatch):
    import os

    import pytest

    from citygate.proxy.runtime.workers import run_folder

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = run_folder()
    assert (made, made.stat().st_mode & 0o777) == (tmp_path / f"citygate-run-{os.getuid()}", 0o700)
    made.chmod(0o755)  # as if someone else could list or plant files in it

    with pytest.raises(PermissionError, match="is not a folder only this user can use"):
        run_folder()
    made.rmdir()
    made.symlink_to(tmp_path)
    with pytest.raises(PermissionError, match="is not a folder only this user can use"):
        run_folder()
