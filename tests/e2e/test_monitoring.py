"""The Grafana dashboard and the alert rules, checked against a real citygate and a real Prometheus.

promtool (Debian's `prometheus` package; tools/system-deps installs it) checks the rules and runs
their unit tests. Then a real proxy handles a morning of traffic, a real Prometheus scrapes its
/metrics and evaluates the rules, and every query of the dashboard is run against it: each
metric a panel or a rule names must be one citygate exports, and each query must be valid PromQL
that finds data.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from test_metrics import MORNING, config_copy, send

from citygate.addons.audit import AuditLog
from citygate.addons.decision_log import DecisionLog
from citygate.addons.flags import Flags
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
DASHBOARD = CONFIG / "grafana-dashboard.json"
RULES = CONFIG / "prometheus-alerts.yml"
RULE_TESTS = CONFIG / "prometheus-alerts.test.yml"
METRIC = re.compile(r"\bcitygate_[a-z0-9_]+\b")
# Grafana's variables, as a dashboard would expand them for a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$department": ".*"}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is missing; run tools/system-deps (make test does) or apt-get install prometheus",
            pytrace=False,
        )
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target and template variable of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "datasource":
            continue  # names a data source type, not a PromQL query
        query = variable["query"]
        queries.append((f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query))
    return queries


def rule_queries() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules_and_their_unit_tests():
    promtool = tool("promtool")

    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=CONFIG, capture_output=True, text=True, timeout=120
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in checked.stdout
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_dashboard_has_the_panels_it_promises():
    titles = " | ".join(title.lower() for title, _ in dashboard_queries())
    for topic in (
        "decisions",
        "top sites",
        "denials by reason",
        "flags by department",
        "grants expiring",
        "directory errors",
        "directory latency",
        "proxy decision latency",
    ):
        assert topic in titles, topic
    alerts = {name for name, _ in rule_queries()}
    assert {
        "CitygateDirectoryDown",
        "CitygateAuditLogFailing",
        "CitygateFlagSpike",
        "CitygateConfigReloadFailed",
    } <= alerts


# --- against a real proxy and a real Prometheus ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as response:
        return response.read()


def exported_names(text: str) -> set[str]:
    """Sample names on a /metrics page (a histogram's _bucket, _sum and _count included)."""
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture
def proxy(proxy_runner_factory, redirect_addon, tmp_path):
    metrics = Metrics()
    runner = proxy_runner_factory(
        [CityGate(), Flags(), AuditLog(), DecisionLog(), metrics, redirect_addon],
        {
            "citygate_config": str(config_copy(tmp_path, metrics={"expiring_days": 60})),
            "citygate_audit_directory": str(tmp_path / "log"),
            "citygate_metrics_listen": "127.0.0.1:0",
        },
    )
    return runner, metrics.server


@pytest.fixture
def prometheus(tmp_path, proxy):
    _, server = proxy
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "citygate", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}
                ],
            }
        )
    )
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            get(f"{base}/-/ready")
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError(f"prometheus did not start: {process.stderr.read().decode()}") from None
            time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(10)


def query(base: str, promql: str) -> list[dict]:
    # Grafana's label_values(METRIC, LABEL) lists the label's values among METRIC's series.
    promql = re.sub(r"^label_values\((.+), *(\w+)\)$", r"count by (\2) (\1)", promql)
    try:
        answer = json.loads(get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{promql}: {exc.read().decode()}") from None
    assert answer["status"] == "success", (promql, answer)
    return answer["data"]["result"]


def test_every_metric_the_dashboard_and_rules_query_is_exported_and_finds_data(proxy, prometheus):
    runner, server = proxy
    send(runner, MORNING)
    # Two scrapes, so that rates and increases have two points (Prometheus starts scraping new
    # targets after its discovery's 5-second throttle).
    wait = time.monotonic() + 30
    while not query(prometheus, 'count_over_time(up{job="citygate"}[1m]) >= 2'):
        assert time.monotonic() < wait, "prometheus did not scrape citygate twice"
        time.sleep(0.2)

    page = get(server.url).decode()
    exported = exported_names(page)
    checked = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=page, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr  # Prometheus' naming lint

    queries = dashboard_queries() + rule_queries()
    series_in_tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    named = {name for _, promql in queries for name in METRIC.findall(promql)}
    named |= {
        METRIC.match(series["series"]).group(0) for test in series_in_tests for series in test["input_series"]
    }
    assert named - exported == set(), f"queried but not exported: {sorted(named - exported)}"
    # And the other way round: the dashboard shows every family citygate exports.
    families = {re.sub(r"_(bucket|sum|count|created|total)$", "", name) for name in exported}
    shown = {
        re.sub(r"_(bucket|sum|count|total)$", "", name)
        for _, promql in dashboard_queries()
        for name in METRIC.findall(promql)
    }
    assert families - shown == set(), f"exported but on no panel: {sorted(families - shown)}"

    empty = []
    for title, promql in dashboard_queries():
        for variable, value in GRAFANA_VARIABLES.items():
            promql = promql.replace(variable, value)
        if not query(prometheus, promql):
            empty.append(title)
    # Failures and errors did not happen in this run, so their panels (and only those) are empty.
    assert set(empty) <= {"Directory errors"}, empty

    # The "Denied" tile and the "Denials by reason" panel count the same requests: 407s (sign in
    # first) are neither, and this morning had some. Compared on the counters themselves (every
    # request of the morning came before the first scrape, so their increase is 0).
    def counted(title: str) -> float:
        [promql] = [q for t, q in dashboard_queries() if t == title]
        selector = re.search(r"citygate_decisions_total\{[^}]*\}", promql).group(0)
        return float(query(prometheus, f"sum({selector.replace('$department', '.*')})")[0]["value"][1])

    assert query(prometheus, 'sum(citygate_decisions_total{decision="auth_required"}) > 0'), (
        "no 407 this morning"
    )
    assert counted("Denied") == counted("Denials by reason") > 0

    rules = json.loads(get(f"{prometheus}/api/v1/rules"))["data"]["groups"][0]["rules"]
    assert {rule["name"]: rule["health"] for rule in rules} == {name: "ok" for name, _ in rule_queries()}
    assert not [rule["name"] for rule in rules if rule["state"] == "firing"]  # a healthy morning
