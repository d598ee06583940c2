"""Do citygate hosts add up behind a load balancer, with decisions, logs and metrics right?

Starts nginx, two `citygate run --workers 1` instances on the demo config (each with its own
copy of the config, so its own access log, and its own metrics port: they share nothing but
the config files and the directory, as two hosts would) and HAProxy in TCP mode in front of
them (round robin). Then, through HAProxy only:

1. sends every kind of request several times on new connections and checks each answer:
   ordinary HTTP and HTTPS (passed through, the site's own certificate), a social site without
   credentials (407), an employee without a grant (403 block page), a granted employee inside
   the intercepted tunnel (200) and outside the grant's paths (403);
2. checks that both instances took connections (HAProxy's counters), that the denials add up
   across the two access logs (`citygate logs`) and the two /metrics endpoints, and that each
   access log's hash chain verifies (`citygate audit verify`);
3. measures ordinary traffic through HAProxy against one instance alone (the same load), the
   figures BENCHMARKS.md's sizing rule rests on.

Reproduce (`make bench-scaleout`; needs haproxy, nginx, wrk, curl, socat):

    .venv/bin/python bench/scaleout.py
    .venv/bin/python bench/scaleout.py --rounds 20 --duration 5
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from servers import BIN, LOCALHOST, HAProxy, MitmProxy, Nginx, Server, require
from throughput import (
    BLOCK_PAGE_MARKER,
    GRANTED,
    MITMPROXY_CA_CN,
    PAGE_MARKER,
    SCENARIOS,
    UNGRANTED,
    UPSTREAM_CN,
    curl_new_tunnels,
    curl_once,
    tunnel_issuer,
    wrk,
)


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.count = 0

    def expect(self, what: str, got: object, wanted: object) -> None:
        self.count += 1
        if got != wanted:
            self.failures.append(f"{what}: got {got!r}, expected {wanted!r}")


def decisions_through(balancer: Server, nginx: Nginx, rounds: int, checks: Checks) -> int:
    """Every kind of request, `rounds` times each, through the balancer; returns the denials sent."""
    http_port, tls_port = nginx.port, nginx.tls_port
    denied = 0
    for _ in range(rounds):
        status, body = curl_once(balancer, f"http://www.example.org:{http_port}/")
        checks.expect("ordinary HTTP", (status, PAGE_MARKER in body), (200, True))
        checks.expect(
            "ordinary HTTPS certificate", tunnel_issuer(balancer, "www.example.org", tls_port), UPSTREAM_CN
        )
        checks.expect(
            "social without credentials", curl_once(balancer, f"http://www.facebook.com:{http_port}/")[0], 407
        )
        status, body = curl_once(balancer, f"http://www.facebook.com:{http_port}/", UNGRANTED)
        checks.expect("no grant: block page", (status, BLOCK_PAGE_MARKER in body), (403, True))
        denied += 1
        granted = f"https://www.facebook.com:{tls_port}/CityOfExampleParks"
        status, body = curl_once(balancer, granted, GRANTED)
        checks.expect("granted, inside the tunnel", (status, PAGE_MARKER in body), (200, True))
        checks.expect(
            "granted tunnel is intercepted",
            tunnel_issuer(balancer, "www.facebook.com", tls_port, GRANTED),
            MITMPROXY_CA_CN,
        )
        status, _ = curl_once(balancer, f"https://www.facebook.com:{tls_port}/messages", GRANTED)
        checks.expect("granted, outside the grant's paths", status, 403)
        denied += 1
    return denied


def metric_sum(port: int, name: str, labels: dict[str, str]) -> float:
    """The sum of a metric's samples that have `labels` (all of them, for a metric without labels)."""
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def logged_denials(proxy: MitmProxy) -> Counter[str]:
    """The access log's denied records by reason (a 407 is a denial there too)."""
    result = subprocess.run(
        [
            str(BIN / "citygate"),
            "logs",
            "--config",
            str(proxy.config),
            "--decision",
            "denied",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"citygate logs failed: {result.stderr}")
    return Counter(json.loads(line)["event.reason"] for line in result.stdout.splitlines() if line.strip())


def audit_folder(proxy: MitmProxy) -> Path:
    # The demo config's audit.directory, relative to the config file (each proxy has a copy).
    return proxy.config.parent.parent / "var" / "log"


def verify_chain(proxy: MitmProxy) -> tuple[int, str]:
    result = subprocess.run(
        [str(BIN / "citygate"), "audit", "verify", str(audit_folder(proxy))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).strip().splitlines()[-1:][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="times each kind of request is sent")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    args = parser.parse_args()
    require("haproxy", "nginx", "wrk", "curl", "socat", "stdbuf")
    print(f"Reproduce: {Path(sys.executable).name} bench/scaleout.py {' '.join(sys.argv[1:])}".rstrip())
    folder = Path(tempfile.mkdtemp(prefix="citygate-scaleout-"))
    try:
        with ExitStack() as stack:
            nginx = stack.enter_context(Nginx(folder))
            proxies = [
                stack.enter_context(MitmProxy(folder, "citygate", name=f"citygate-{n}")) for n in (1, 2)
            ]
            metrics = [proxy.metrics_port for proxy in proxies]
            balancer = stack.enter_context(HAProxy(folder, [proxy.port for proxy in proxies]))
            print(
                f"HAProxy on {balancer.port} -> citygate on {proxies[0].port} and {proxies[1].port}; "
                f"nginx on {nginx.port}/{nginx.tls_port}"
            )

            checks = Checks()
            denied = decisions_through(balancer, nginx, args.rounds, checks)
            sessions = balancer.sessions()
            print(f"\n1. {checks.count} answers checked through HAProxy: {len(checks.failures)} wrong")
            for failure in checks.failures[:10]:
                print(f"   {failure}")
            print(f"   connections per instance (HAProxy stot): {sessions}")
            checks.expect("both instances served", all(count > 0 for count in sessions.values()), True)

            time.sleep(1.0)  # the access logs flush every 200 ms (audit.flush_interval_ms)
            reasons = [logged_denials(proxy) for proxy in proxies]
            logged = [sum(r[key] for key in ("no_grant", "path_out_of_scope")) for r in reasons]
            counted = [metric_sum(port, "citygate_decisions_total", {"decision": "deny"}) for port in metrics]
            chains = [verify_chain(proxy) for proxy in proxies]
            print(
                f"\n2. denials sent {denied} (no grant, outside the grant's paths): access logs {logged} "
                f"(sum {sum(logged)}), metrics {counted} (sum {sum(counted):g})"
            )
            for proxy, found in zip(proxies, reasons, strict=True):
                print(f"   {proxy.name} access log, denied records by reason: {dict(sorted(found.items()))}")
            for proxy, (status, last) in zip(proxies, chains, strict=True):
                print(f"   {proxy.name}: citygate audit verify -> {status}: {last}")
            checks.expect("denials in the access logs", sum(logged), denied)
            checks.expect("denials in the metrics", sum(counted), denied)
            checks.expect("every access log verifies", [status for status, _ in chains], [0, 0])

            print(
                f"\n3. ordinary traffic, {args.duration:g} s each: one instance alone vs two behind HAProxy"
            )
            a, c = (next(s for s in SCENARIOS if s.key == key) for key in "ac")
            for scenario, load in (
                (a, lambda port: wrk(port, a, a.url(nginx), args.duration, 200, False)),
                (c, lambda port: curl_new_tunnels(port, c, c.url(nginx), args.duration, 200)),
            ):
                one = load(proxies[0].port)
                both = load(balancer.port)
                print(
                    f"   ({scenario.key}) {scenario.title}: one instance {one.rate:,.0f} req/s, "
                    f"two behind HAProxy {both.rate:,.0f} req/s ({both.rate / one.rate:.2f}x), "
                    f"unexpected {one.unexpected + both.unexpected}"
                )
        verdict = "right" if not checks.failures else "WRONG"
        print(f"\ndecisions, logs and metrics through HAProxy: {verdict}")
        for failure in checks.failures:
            print(f"  {failure}")
        return 0 if not checks.failures else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
