"""The SIEM copy through a real proxy: denials reach a real rsyslogd over TLS (tests/rsyslog.py),
wait in the spool while it is stopped, and the SIEM metrics on /metrics follow, scraped over HTTP.
"""

from __future__ import annotations

import re

import yaml
from harness import curl
from rsyslog import write_collector_pki
from test_metrics import config_copy, scrape, values, wait_for

from citygate.addons.audit import AuditLog
from citygate.addons.gate import CityGate
from citygate.addons.metrics import Metrics

MNGUYEN = "mnguyen:mnguyen-pass"  # Parks; no grant: denied


def deny(runner) -> bytes:
    """A denial through the proxy; its reference, as the block page shows it."""
    result = curl(runner, "http://www.facebook.com/", proxy_user=MNGUYEN)
    assert result.status == 403
    reference = re.search(r"<dt>Reference</dt><dd>([0-9a-f]{32})</dd>", result.body)
    assert reference is not None, result.body
    return reference.group(1).encode()


def siem(url: str) -> dict[str, float]:
    samples = scrape(url)
    return {name: values(samples, f"citygate_siem_{name}").get((), 0.0) for name in SIEM_SAMPLES}


SIEM_SAMPLES = (
    "records_queued",
    "records_sent_total",
    "records_spooled_total",
    "records_dropped_total",
    "spool_bytes",
    "connected",
)


def test_denials_reach_the_siem_over_tls_and_the_siem_metrics_follow_the_collector(
    proxy_runner_factory, redirect_addon, rsyslog_factory, tmp_path
):
    pki = write_collector_pki(tmp_path / "pki")
    collector = rsyslog_factory(pki=pki)
    config = config_copy(tmp_path, flags=[])
    document = yaml.safe_load(config.read_text())
    document["audit"]["syslog"] = {"address": f"tls://localhost:{collector.port}", "ca_file": str(pki.ca)}
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    metrics = Metrics()
    runner = proxy_runner_factory(
        [CityGate(), AuditLog(), metrics, redirect_addon],
        {
            "citygate_config": str(config),
            "citygate_audit_directory": str(tmp_path / "log"),
            "citygate_metrics_listen": "127.0.0.1:0",
        },
    )
    url = metrics.server.url

    first = deny(runner)
    wait_for(lambda: any(first in line for line in collector.messages()))
    connected = wait_for(lambda: (s := siem(url))["connected"] and s["records_sent_total"] >= 3 and s)
    assert connected["spool_bytes"] == connected["records_dropped_total"] == 0

    collector.stop()  # the SIEM goes away: the next denial waits on disk
    wait_for(lambda: not siem(url)["connected"])
    second = deny(runner)
    away = wait_for(lambda: (s := siem(url))["spool_bytes"] and s)
    assert away["records_spooled_total"] >= 1 and not any(second in line for line in collector.messages())

    collector.start()  # and is back: the spool is sent, and empties
    back = wait_for(lambda: (s := siem(url))["connected"] and not s["spool_bytes"] and s, timeout=20)
    [line] = [line for line in collector.messages() if second in line]
    assert b'[citygate@32473 seq="' in line
    assert back["records_sent_total"] > connected["records_sent_total"]
    assert back["records_dropped_total"] == 0
    runner.stop()
