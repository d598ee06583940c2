"""Report mode through a real proxy: decided, logged and counted as in enforce mode, let through.

The demo configuration is copied and given `departments: {Parks: {mode: report}}` (or a global
`mode: report`); curl talks to the proxy; local servers stand in for the sites. The access log
is read back to check the would-be denials are recorded as such.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from harness import MITMPROXY_CA_CN, curl, tunnel_peer_certificate

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate
from citygate.proxy.audit.files import expand, open_log

ROOT = Path(__file__).resolve().parents[2]
MNGUYEN = "mnguyen:mnguyen-pass"  # Parks; no grant
DBROWN = "dbrown:dbrown-pass"  # Police; nextdoor only


def report_config(tmp_path: Path, extra: str) -> Path:
    """The demo configuration in tmp_path, with report-mode settings added at the top level."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    (tmp_path / "directory").mkdir()
    shutil.copy(ROOT / "directory" / "demo.ldif", tmp_path / "directory" / "demo.ldif")
    config = tmp_path / "config" / "citygate.yaml"
    config.write_text(config.read_text().rstrip("\n") + "\n\n" + extra)
    return config


def decisions(folder: Path) -> list[dict]:
    records = []
    for path in expand([folder]):
        with open_log(path) as handle:
            records.extend(json.loads(line) for line in handle)
    return [r for r in records if r.get("event.action") in ("http-request", "http-connect")]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def start(proxy_runner_factory, redirect_addon, log_dir):
    def start_proxy(config: Path):
        return proxy_runner_factory(
            [CityGate(), AuditLog(), redirect_addon],
            {"citygate_config": str(config), "citygate_audit_directory": str(log_dir)},
        )

    return start_proxy


def test_a_department_in_report_mode_gets_through_and_is_logged_as_would_deny(
    start, tmp_path, log_dir, plain_upstream
):
    runner = start(report_config(tmp_path, "departments:\n  Parks: {mode: report}\n"))

    parks = curl(runner, "http://www.facebook.com/", proxy_user=MNGUYEN)
    police = curl(runner, "http://www.facebook.com/", proxy_user=DBROWN)
    runner.stop()

    assert parks.status == 200, parks.body  # from the local upstream, not a block page
    assert police.status == 403  # Police is still enforced
    assert "no_grant" in police.body
    [reported] = [r for r in decisions(log_dir) if r["user.name"] == "mnguyen"]
    assert reported["citygate.would_deny"] is True
    assert reported["event.reason"] == "no_grant"
    assert reported["event.type"] == "allowed"
    assert reported["citygate.mode"] == "report"
    assert reported["http.response.status_code"] == 200
    [enforced] = [r for r in decisions(log_dir) if r["user.name"] == "dbrown"]
    assert enforced["citygate.would_deny"] is False
    assert enforced["event.type"] == "denied"
    assert enforced["citygate.mode"] == "enforce"


def test_global_report_mode_lets_an_unauthenticated_request_through(start, tmp_path, log_dir, plain_upstream):
    runner = start(report_config(tmp_path, "mode: report\n"))

    anonymous = curl(runner, "http://www.facebook.com/")
    runner.stop()

    assert anonymous.status == 200, anonymous.body  # no 407
    [record] = decisions(log_dir)
    assert record["citygate.would_deny"] is True
    assert record["event.reason"] == "credentials_required"
    assert record["user.name"] is None


def test_https_in_report_mode_is_decrypted_and_its_requests_are_reported(
    start, tmp_path, log_dir, tls_upstream
):
    # Report mode does what enforce mode would do, short of refusing: a denied tunnel is
    # decrypted (to show the block page in enforce mode), so each request inside is reported.
    runner = start(report_config(tmp_path, "departments:\n  parks: {mode: report}\n"))

    peer = tunnel_peer_certificate(runner, "www.facebook.com", proxy_user=MNGUYEN)
    served = curl(runner, "https://www.facebook.com/groups", proxy_user=MNGUYEN)
    runner.stop()

    assert peer["connect_status"] == 200
    assert peer["issuer_cn"] == MITMPROXY_CA_CN
    assert served.status == 200  # let through: report mode
    connects = [r for r in decisions(log_dir) if r["event.action"] == "http-connect"]
    requests = [r for r in decisions(log_dir) if r["event.action"] == "http-request"]
    assert {r["citygate.tunnel"] for r in connects} == {"decrypted"}
    assert all(
        r["citygate.would_deny"] is True and r["event.reason"] == "no_grant" for r in connects + requests
    )
    assert [r["url.path"] for r in requests] == ["/groups"]
