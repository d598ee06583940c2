"""What does citygate cost over bare mitmproxy, and how does it compare with Squid?

One run starts a local nginx (HTTP and HTTPS, a 2 KiB page on every path), bare `mitmdump`,
`citygate run` on the demo config (one worker, and N workers when there are several cores) and
Squid with a deny list built from the same catalog, all on 127.0.0.1. Then it loads every proxy
with the same traffic, interleaved (scenario by scenario, the proxies' order rotating with each
repetition), and prints medians over the repetitions:

  (a) non-social plain HTTP                  wrk, 32 keep-alive connections, absolute-form URL
  (b) non-social HTTPS, reused tunnels       wrk over socat CONNECT relays: 32 tunnels, reused
  (c) non-social HTTPS, new tunnel each      curl --parallel (32): CONNECT + TLS per request
  (d) denied social request (block page)     wrk as mnguyen (no grant) to http://www.facebook.com/
  (e) granted social, intercepted tunnel     wrk over socat as jlee to www.facebook.com/CityOfExampleParks
  (f) granted social, whole-site grant       wrk over socat as kwilliams to www.facebook.com/
  (g) non-social HTTPS, 1 MiB body           wrk over socat CONNECT relays, as (b), a 1 MiB answer

Bare mitmdump runs with the same options as citygate (connection_strategy=lazy,
stream_large_bodies, no flow output) and decrypts only the Facebook tunnel, as citygate does;
both load bench/upstream_redirect.py, which sends every upstream connection to the local nginx
without resolving a name. Bare mitmdump has no policy, so in (d) it forwards the request: the
target is that citygate's block page is at least as fast as bare mitmdump's forward. Squid has
no per-user grants, so it has no (e) or (f).

(f) is what citygate's default costs: a tunnel granted for a whole site is decrypted, so that
each request inside is decided on its own host and path. "citygate pass-through" runs the same
configuration with `pass_through_when_granted: true` on Facebook's catalog entry, which relays
such a tunnel undecrypted (the behaviour before the default changed); it takes part in (f) only.

(g) is reported per MiB too (MiB/s and CPU us per MiB), the unit of bulk transfers. "citygate
uvloop" (or "citygate asyncio" when uvloop is what `citygate run` chooses) is the same citygate on
the other event loop (`--event-loop`): both loops side by side in every scenario.

Before measuring, every proxy's answers are checked (status codes, the block page, which
certificate each tunnel shows), and every load run counts unexpected answers.

Reproduce (`make bench` installs nginx, wrk, squid, socat and curl when missing):

    make bench                                            # 5 s x 3 repetitions, about 12 minutes
    .venv/bin/python bench/throughput.py --duration 5 --repeat 3
    .venv/bin/python bench/throughput.py --quick          # smoke run: 1 s x 1
    .venv/bin/python bench/throughput.py --only b,c --proxies citygate,"citygate x2"
    .venv/bin/python bench/throughput.py --only g --proxies citygate,mitmdump,squid
    make bench-capped                                     # each proxy held to 0.4 core per worker
    .venv/bin/python bench/throughput.py --proxy-cpu 0.4 --workers 2

With --proxy-cpu (root; bench/cpulimit.py) every proxy runs in a CPU cgroup allowing that many
cores per worker, so the load generators on the same machine never take the proxy's CPU: the
ratios compare the proxies' own costs, and 2 workers show what a second core gives.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cpulimit import CpuLimit, cgroup_name
from servers import (
    LOCALHOST,
    MIB_BODY,
    PAGE,
    PAGE_MARKER,
    REPO,
    MitmProxy,
    Nginx,
    Relay,
    Server,
    Squid,
    busy_seconds,
    citygate_has_workers,
    copy_config,
    cpu_times,
    own_seconds,
    require,
    rss_bytes,
)

from citygate.proxy.runtime.event_loop import EVENT_LOOPS, chosen_event_loop

CONFIG = REPO / "config" / "citygate.yaml"
CONNECTIONS = 32
GRANTED = "jlee:jlee-pass"  # Facebook, limited to /CityOfExampleParks
WHOLE_SITE = "kwilliams:kwilliams-pass"  # Facebook, the whole site
UNDECRYPTED_VARIANT = "citygate pass-through"
# The loop `citygate run` chooses here (its default, or $CITYGATE_EVENT_LOOP), and the other one,
# run as a variant so that both loops are measured side by side.
CITYGATE_LOOP = chosen_event_loop()
OTHER_LOOP = next(loop for loop in EVENT_LOOPS if loop != CITYGATE_LOOP)
LOOP_VARIANT = f"citygate {OTHER_LOOP}"
MIB = 2**20
UNGRANTED = "mnguyen:mnguyen-pass"  # Parks, no grant
BLOCK_PAGE_MARKER = "Administrative Order 8-19"
MITMPROXY_CA_CN = "mitmproxy"
UPSTREAM_CN = "citygate bench upstream"
WRK_SCRIPT = Path(__file__).with_name("wrk_proxy.lua")

# Targets of issue 8 (citygate / bare mitmdump on the same traffic, same worker count).
TARGETS = {"a": 0.95, "b": 0.95, "c": 0.95, "d": 1.0}
SCALING_TARGET = 1.6  # citygate with 2 workers / 1 worker, on (b) and (c)
# citygate's CPU per request / Squid's, at most (the fast path's targets; (g) per MiB, the same ratio).
SQUID_TARGETS = {"b": 1.25, "c": 2.0, "g": 1.25}


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    tls: bool
    host: str
    path: str
    auth: str | None
    new_tunnels: bool = False
    body: int = len(PAGE)  # bytes of each answer's body

    @property
    def bulk(self) -> bool:
        """Reported per MiB too: bodies of a MiB or more."""
        return self.body >= MIB

    def url(self, nginx: Nginx) -> str:
        port = nginx.tls_port if self.tls else nginx.port
        return f"{'https' if self.tls else 'http'}://{self.host}:{port}{self.path}"


SCENARIOS = (
    Scenario("a", "non-social plain HTTP", False, "www.example.org", "/", None),
    Scenario("b", "non-social HTTPS, reused tunnels", True, "www.example.org", "/", None),
    Scenario("c", "non-social HTTPS, new tunnel per request", True, "www.example.org", "/", None, True),
    Scenario("d", "denied social request (block page)", False, "www.facebook.com", "/", UNGRANTED),
    Scenario(
        "e", "granted social, intercepted tunnel", True, "www.facebook.com", "/CityOfExampleParks", GRANTED
    ),
    Scenario("f", "granted social, whole-site grant", True, "www.facebook.com", "/", WHOLE_SITE),
    Scenario(
        "g",
        "non-social HTTPS, 1 MiB body, reused tunnels",
        True,
        "www.example.org",
        "/mib",
        None,
        body=len(MIB_BODY),
    ),
)


@dataclass
class Run:
    """One load run of one scenario against one proxy."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    unexpected: int  # answers with another status than the expected one, and transport errors
    cpu_seconds: float = 0.0
    # Of cpu_seconds, the part spent in the kernel: system calls, and loopback networking the
    # kernel charges to the sender. What is left is the proxy's own code (user time).
    system_seconds: float = 0.0
    peak_rss: int = 0
    # CPU the rest of the machine used meanwhile (other users' processes; also the kernel's
    # loopback networking, which /proc charges to nobody), % of one core.
    foreign_percent: float = 0.0
    machine_percent: float = 0.0  # the whole machine's busy CPU, % of one core (cores x 100 = full)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.cpu_seconds / self.requests if self.requests else 0.0

    @property
    def system_percent_of_cpu(self) -> float:
        return 100 * self.system_seconds / self.cpu_seconds if self.cpu_seconds else 0.0


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs)

    def spread(self, attribute: str) -> tuple[float, float]:
        values = [getattr(run, attribute) for run in self.runs]
        return min(values), max(values)


def takes_part(scenario: Scenario, proxy: Server) -> bool:
    if isinstance(proxy, Squid):
        return scenario.key not in ("e", "f")  # no per-user grants without citygate
    if proxy.name == UNDECRYPTED_VARIANT:
        return scenario.key == "f"  # the default's cost, and nothing else
    return True


def expected_status(scenario: Scenario, proxy: Server) -> int:
    if scenario.key == "d" and proxy.name != "mitmdump":
        return 403  # citygate's block page, Squid's deny list; bare mitmdump forwards
    return 200


# --- load generators --------------------------------------------------------------------------


def wrk(
    port: int,
    scenario: Scenario,
    target: str,
    duration: float,
    expected: int,
    tls: bool,
    connections: int = CONNECTIONS,
) -> Run:
    """wrk against the proxy (absolute-form URL) or against a socat relay (origin form, TLS)."""
    env = {
        **os.environ,
        "BENCH_TARGET": target,
        "BENCH_HOST": scenario.host,
        # Plain HTTP sends the credentials with every request; through a tunnel the relay sent
        # them with the CONNECT, as a browser does.
        "BENCH_AUTH": base64.b64encode(scenario.auth.encode()).decode() if scenario.auth and not tls else "",
    }
    url = f"{'https' if tls else 'http'}://{LOCALHOST}:{port}/"
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "-s", str(WRK_SCRIPT), url]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=duration + 60, check=False
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk printed no summary:\n{result.stdout}\n{result.stderr}")
    summary = json.loads(lines[-1])
    errors = sum(summary[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    # wrk counts answers outside 2xx/3xx as "status errors": that is what a 403 must get.
    unexpected = (
        summary["status_errors"] if expected < 400 else summary["requests"] - summary["status_errors"]
    )
    return Run(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        unexpected=unexpected + errors,
    )


def curl_new_tunnels(
    port: int, scenario: Scenario, target: str, duration: float, expected: int, parallel: int = CONNECTIONS
) -> Run:
    """curl --parallel: every request opens its own CONNECT tunnel and TLS session, `parallel` at once.

    `Connection: close` makes nginx end the TLS session after one answer, so the tunnel closes
    and curl's next transfer opens a new one (num_connects=1 on every line proves it). curl
    keeps its TLS session cache, as a browser does.
    """
    command = ["stdbuf", "-oL", "curl", "-sk", "-Z", "--parallel-max", str(parallel)]
    command += ["--proxy", f"http://{LOCALHOST}:{port}", "-H", "Connection: close", "-o", "/dev/null"]
    if scenario.auth:
        command += ["--proxy-user", scenario.auth]
    command += ["-w", "%{http_code} %{time_total} %{num_connects}\\n", f"{target}?[1-100000000]"]
    lines: list[str] = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    started = time.monotonic()
    reader.start()
    time.sleep(duration)
    count = len(lines)  # completed within the window; stdbuf makes curl write each line at once
    elapsed = time.monotonic() - started
    # Not SIGINT: a shell's background job ignores it, and so would curl started from one.
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reader.join(10)
    done = [line.split() for line in lines[:count]]
    times = sorted(float(fields[1]) for fields in done if len(fields) == 3)
    unexpected = sum(
        1 for fields in done if len(fields) != 3 or int(fields[0]) != expected or fields[2] != "1"
    )
    return Run(
        requests=len(done),
        seconds=elapsed,
        p50_ms=1000 * percentile(times, 50),
        p99_ms=1000 * percentile(times, 99),
        unexpected=unexpected,
    )


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * q / 100))]


@contextmanager
def sampling_rss(pids: Callable[[], list[int]]) -> Iterator[list[int]]:
    """Sample the summed RSS of a process tree every 100 ms; yields a list whose max is the peak."""
    samples = [rss_bytes(pids())]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            samples.append(rss_bytes(pids()))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def measure(
    scenario: Scenario, proxy: Server, nginx: Nginx, duration: float, servers: Sequence[Server]
) -> Run:
    expected = expected_status(scenario, proxy)
    target = scenario.url(nginx)
    with ExitStack() as stack:
        if scenario.tls and not scenario.new_tunnels:
            relay = stack.enter_context(
                Relay(proxy.port, scenario.host, nginx.tls_port, scenario.auth)  # type: ignore[arg-type]
            )

            def load() -> Run:
                return wrk(relay.port, scenario, scenario.path, duration, expected, tls=True)
        elif scenario.tls:

            def load() -> Run:
                return curl_new_tunnels(proxy.port, scenario, target, duration, expected)
        else:

            def load() -> Run:
                return wrk(proxy.port, scenario, target, duration, expected, tls=False)

        user_before, system_before = cpu_times(proxy.pids)
        busy_before, own_before, started = busy_seconds(), own_seconds(servers), time.monotonic()
        with sampling_rss(lambda: proxy.pids) as samples:
            run = load()
        user, system = cpu_times(proxy.pids)
        run.cpu_seconds = user + system - user_before - system_before
        run.system_seconds = system - system_before
        run.peak_rss = max(samples)
    # After the relay has been stopped and waited for, so that its CPU counts as our own.
    busy, elapsed = busy_seconds() - busy_before, time.monotonic() - started
    run.foreign_percent = max(0.0, 100 * (busy - (own_seconds(servers) - own_before)) / elapsed)
    run.machine_percent = 100 * busy / elapsed
    return run


def pass_through_config(folder: Path) -> Path:
    """The demo configuration with Facebook's granted tunnels relayed undecrypted."""
    config = copy_config(CONFIG, folder / "pass-through-config")
    sites = config.parent / "sites.yaml"
    entry = "    domains: [facebook.com, fb.com, messenger.com]\n"
    text = sites.read_text()
    if entry not in text:
        raise RuntimeError(f"{sites}: no {entry.strip()!r} line to add pass_through_when_granted to")
    sites.write_text(text.replace(entry, entry + "    pass_through_when_granted: true\n"))
    return config


# --- checks before measuring ------------------------------------------------------------------


def curl_once(proxy: Server, url: str, auth: str | None = None) -> tuple[int, str]:
    command = ["curl", "-sk", "--proxy", f"http://{LOCALHOST}:{proxy.port}", "-w", "\n%{http_code}", url]
    if auth:
        command += ["--proxy-user", auth]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    body, _, status = result.stdout.rpartition("\n")
    return int(status or 0), body


def tunnel_issuer(proxy: Server, host: str, port: int, auth: str | None = None) -> str | None:
    """The issuer CN of the certificate the client sees through a CONNECT tunnel."""
    lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
    if auth:
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(auth.encode()).decode()}")
    with socket.create_connection((LOCALHOST, proxy.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            head += chunk
        if b" 200" not in head.split(b"\r\n", 1)[0]:
            return None
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names = x509.load_der_x509_certificate(der or b"").issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value.decode() if isinstance(value, bytes) else value


def check_answers(proxy: Server, nginx: Nginx) -> list[str]:
    """What is wrong with the proxy's answers to one request of each scenario (empty: all right)."""
    problems = []
    citygate = isinstance(proxy, MitmProxy) and proxy.kind == "citygate"

    def expect(what: str, got: object, wanted: object) -> None:
        if got != wanted:
            problems.append(f"{proxy.name}: {what}: got {got!r}, expected {wanted!r}")

    for scenario in SCENARIOS:
        if not takes_part(scenario, proxy):
            continue
        status, body = curl_once(proxy, scenario.url(nginx), scenario.auth)
        expect(f"({scenario.key}) status", status, expected_status(scenario, proxy))
        if scenario.key == "d" and isinstance(proxy, Squid):
            continue  # Squid's own error page
        marker = BLOCK_PAGE_MARKER if citygate and scenario.key == "d" else PAGE_MARKER
        expect(f"({scenario.key}) body has {marker!r}", marker in body, True)
        if marker == PAGE_MARKER:
            expect(f"({scenario.key}) body size", len(body), scenario.body)
    expect("(b) certificate issuer", tunnel_issuer(proxy, "www.example.org", nginx.tls_port), UPSTREAM_CN)
    if takes_part(SCENARIOS[5], proxy):
        issuer = tunnel_issuer(proxy, "www.facebook.com", nginx.tls_port, WHOLE_SITE)
        wanted = UPSTREAM_CN if proxy.name == UNDECRYPTED_VARIANT else MITMPROXY_CA_CN
        expect("(f) certificate issuer", issuer, wanted)
    if takes_part(SCENARIOS[4], proxy):
        issuer = tunnel_issuer(proxy, "www.facebook.com", nginx.tls_port, GRANTED)
        expect("(e) certificate issuer (intercepted)", issuer, MITMPROXY_CA_CN)
    if citygate and takes_part(SCENARIOS[4], proxy):
        outside = f"https://www.facebook.com:{nginx.tls_port}/messages"
        expect("(e) outside the grant's paths", curl_once(proxy, outside, GRANTED)[0], 403)
        expect("(d) without credentials", curl_once(proxy, SCENARIOS[3].url(nginx))[0], 407)
    return problems


# --- report -----------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def median_of(results: dict[tuple[str, str], Cell], key: str, name: str, attribute: str) -> float | None:
    cell = results.get((key, name))
    return cell.median(attribute) if cell and cell.runs else None


def report_bulk(results: dict[tuple[str, str], Cell], names: Sequence[str]) -> None:
    """Scenarios with large bodies per MiB, the unit of bulk transfers: MiB/s and CPU us per MiB."""
    rows = []
    for scenario in (scenario for scenario in SCENARIOS if scenario.bulk):
        squid = median_of(results, scenario.key, "squid", "cpu_us_per_request")
        for name in names:
            rate = median_of(results, scenario.key, name, "rate")
            cost = median_of(results, scenario.key, name, "cpu_us_per_request")
            if rate is None or cost is None:
                continue
            mib = scenario.body / MIB
            rows.append(
                f"| ({scenario.key}) {scenario.title} | {name} | {rate * mib:,.0f} "
                f"| {median_of(results, scenario.key, name, 'cpu_percent'):.0f} | {cost / mib:,.0f} "
                f"| {fmt_ratio(ratio(cost, squid))} |"
            )
    if rows:
        print("\n### Large bodies: MiB/s and the proxy's CPU time per MiB (medians)\n")
        print("| scenario | proxy | MiB/s | CPU % | CPU us/MiB | CPU per MiB / squid's |")
        print("|---|---|---:|---:|---:|---:|", *rows, sep="\n")


def report_against_squid(results: dict[tuple[str, str], Cell]) -> None:
    """The ordinary HTTPS that the fast path relays: citygate's CPU per request against Squid's."""
    rows = []
    for scenario in SCENARIOS:
        target = SQUID_TARGETS.get(scenario.key)
        citygate = median_of(results, scenario.key, "citygate", "cpu_us_per_request")
        squid = median_of(results, scenario.key, "squid", "cpu_us_per_request")
        if target is None or citygate is None or squid is None:
            continue
        unit = "MiB" if scenario.bulk else "req"
        per_unit = scenario.body / MIB if scenario.bulk else 1
        cost_ratio = citygate / squid
        met = "yes" if cost_ratio <= target else "**no**"
        rows.append(
            f"| ({scenario.key}) {scenario.title} | {citygate / per_unit:,.0f} us/{unit} "
            f"| {squid / per_unit:,.0f} us/{unit} | {fmt_ratio(cost_ratio)} | <= {target:g} | {met} |"
        )
    if rows:
        print("\n### Ordinary HTTPS, relayed by the fast path: the proxy's CPU against Squid's (medians)\n")
        print("| scenario | citygate | squid | citygate / squid | target | met |")
        print("|---|---:|---:|---:|---:|---|", *rows, sep="\n")


def report_loops(results: dict[tuple[str, str], Cell], names: Sequence[str]) -> None:
    """citygate on its event loop and on the other one, scenario by scenario."""
    if "citygate" not in names or LOOP_VARIANT not in names:
        return
    print(f"\n### The event loop: citygate on {CITYGATE_LOOP} and on {OTHER_LOOP} (medians)\n")
    print(
        f"| scenario | req/s {CITYGATE_LOOP} | req/s {OTHER_LOOP} | CPU us/req {CITYGATE_LOOP} "
        f"| CPU us/req {OTHER_LOOP} | CPU per request: {OTHER_LOOP} / {CITYGATE_LOOP} |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for scenario in SCENARIOS:
        figures = [
            median_of(results, scenario.key, name, attribute)
            for attribute in ("rate", "cpu_us_per_request")
            for name in ("citygate", LOOP_VARIANT)
        ]
        if None in figures:
            continue
        rate, other_rate, cost, other_cost = figures
        print(
            f"| ({scenario.key}) {scenario.title} | {rate:,.0f} | {other_rate:,.0f} | {cost:,.0f} "
            f"| {other_cost:,.0f} | {fmt_ratio(ratio(other_cost, cost))} |"
        )


def report(
    results: dict[tuple[str, str], Cell], proxies: Sequence[Server], args: argparse.Namespace, command: str
) -> None:
    names = [proxy.name for proxy in proxies]
    print(f"\n### Throughput: {args.duration:g} s x {args.repeat}, medians (min-max of req/s)\n")
    cores = os.cpu_count() or 1
    print(
        f"| scenario | proxy | req/s | p50 ms | p99 ms | CPU % | CPU us/req | of which kernel % | peak RSS MB "
        f"| unexpected "
        f"| machine CPU % (of {cores * 100}) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scenario in SCENARIOS:
        for name in names:
            cell = results.get((scenario.key, name))
            if cell is None or not cell.runs:
                continue
            low, high = cell.spread("rate")
            spread = f" ({low:,.0f}-{high:,.0f})" if len(cell.runs) > 1 else ""
            print(
                f"| ({scenario.key}) {scenario.title} | {name} | {cell.median('rate'):,.0f}{spread} "
                f"| {cell.median('p50_ms'):.2f} | {cell.median('p99_ms'):.2f} "
                f"| {cell.median('cpu_percent'):.0f} | {cell.median('cpu_us_per_request'):,.0f} "
                f"| {cell.median('system_percent_of_cpu'):.0f} | {max(run.peak_rss for run in cell.runs) / 2**20:.0f} "
                f"| {sum(run.unexpected for run in cell.runs)} | {cell.median('machine_percent'):.0f} |"
            )

    def rate(key: str, name: str) -> float | None:
        cell = results.get((key, name))
        return cell.median("rate") if cell and cell.runs else None

    def cost(key: str, name: str) -> float | None:
        cell = results.get((key, name))
        return cell.median("cpu_us_per_request") if cell and cell.runs else None

    workers = next((name for name in names if name.startswith("citygate x")), None)
    print("\n### Ratios of req/s (medians), and of the proxy's CPU time per request\n")
    header = "| scenario | citygate / mitmdump | target | met | CPU per request: mitmdump / citygate | citygate / squid |"
    rule = "|---|---:|---:|---|---:|---:|"
    if workers:
        header += f" {workers} / citygate | target | met |"
        rule += "---:|---:|---|"
    print(header + "\n" + rule)
    for scenario in SCENARIOS:
        key = scenario.key
        vs_mitm = ratio(rate(key, "citygate"), rate(key, "mitmdump"))
        target = TARGETS.get(key)
        met = "-" if target is None or vs_mitm is None else ("yes" if vs_mitm >= target else "**no**")
        row = f"| ({key}) | {fmt_ratio(vs_mitm)} | {'-' if target is None else f'>= {target:g}'} | {met} "
        row += f"| {fmt_ratio(ratio(cost(key, 'mitmdump'), cost(key, 'citygate')))} "
        row += f"| {fmt_ratio(ratio(rate(key, 'citygate'), rate(key, 'squid')))} |"
        if workers:
            scaling = ratio(rate(key, workers), rate(key, "citygate"))
            wanted = key in ("b", "c")
            scaling_met = (
                "-" if not wanted or scaling is None else ("yes" if scaling >= SCALING_TARGET else "**no**")
            )
            row += f" {fmt_ratio(scaling)} | {f'>= {SCALING_TARGET:g}' if wanted else '-'} | {scaling_met} |"
        print(row)
    decrypted, passed = cost("f", "citygate"), cost("f", UNDECRYPTED_VARIANT)
    if decrypted is not None and passed is not None:
        print(
            f"\n(f) the default's cost: a granted whole-site tunnel decrypted, {rate('f', 'citygate'):,.0f} req/s "
            f"at {decrypted:,.0f} us CPU per request, against {rate('f', UNDECRYPTED_VARIANT):,.0f} req/s at "
            f"{passed:,.0f} us passed through ({UNDECRYPTED_VARIANT}): {fmt_ratio(ratio(decrypted, passed))}x "
            "the CPU per request."
        )
    if args.proxy_cpu:
        print(
            f"\nEach proxy was held to {args.proxy_cpu:g} core per worker (a CPU cgroup), the load "
            f"generators and nginx having the rest of the {os.cpu_count()} cores: a host of N cores scaled "
            f"down to N x {args.proxy_cpu:g}."
        )
    print(
        f"\n(d): bare mitmdump has no policy and forwards the request; the target is citygate's block "
        f"page at least as fast as that forward.\n{os.cpu_count()} cores; load generators, nginx and "
        f"the proxies share them. CPU % is the proxy's (all its processes), 100 = one core. CPU per "
        f"request is the proxy's own cost, the figure least disturbed by other load on the machine "
        f"(load average before and after the run: {args.load_before} and {os.getloadavg()[0]:.2f})."
    )
    report_bulk(results, names)
    report_against_squid(results)
    report_loops(results, names)
    print(f"\nReproduce: {command}")


def main() -> int:
    args = parse_arguments()
    require("nginx", "wrk", "squid", "socat", "curl", "stdbuf")
    argv = shlex.join(sys.argv[1:])  # quoted: proxy names have spaces ("citygate uvloop")
    command = f"{Path(sys.executable).relative_to(REPO) if sys.executable.startswith(str(REPO)) else sys.executable} bench/throughput.py {argv}".strip()

    scenarios = [s for s in SCENARIOS if not args.only or s.key in args.only.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="citygate-bench-"))
    try:
        nginx = Nginx(folder)
        proxies = contenders(folder, args, scenarios)
        with ExitStack() as stack:
            stack.enter_context(nginx)
            # The first proxy creates the mitmproxy CA in the shared confdir; then the others start.
            for proxy in proxies:
                stack.enter_context(proxy)
            print(f"nginx on {nginx.port} (HTTP) and {nginx.tls_port} (HTTPS); folder {folder}")
            for proxy in proxies:
                limit = f", held to {proxy.cpu_limit.cores:g} core(s)" if proxy.cpu_limit else ""
                citygate = isinstance(proxy, MitmProxy) and proxy.kind == "citygate"
                loop = f", {proxy.event_loop or CITYGATE_LOOP} event loop" if citygate else ""
                print(f"  {proxy.name} on {proxy.port}{limit}{loop}")
            problems = [problem for proxy in proxies for problem in check_answers(proxy, nginx)]
            if problems:
                print("the proxies do not answer as expected; not measuring:", *problems, sep="\n  ")
                return 1
            print("answers checked: every proxy decides and forwards as expected")
            results = measure_all(scenarios, proxies, nginx, args)
            dead = [
                proxy.name for proxy in proxies if proxy.process is None or proxy.process.poll() is not None
            ]
            if dead:
                print(f"exited during the run: {', '.join(dead)}")
                return 1
        report(results, proxies, args, command)
        if args.json:
            write_json(args.json, results)
        return 0
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --duration 1 --repeat 1")
    parser.add_argument("--only", default="", help="scenarios to run, e.g. b,c (default: all)")
    parser.add_argument("--proxies", default="", help='e.g. "citygate,citygate x2" (default: all)')
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4), help="for citygate xN")
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=35.0,
        help="run again when the rest of the machine used more than this %% of a core (default: %(default)s)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="times a noisy run is repeated (default: %(default)s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument(
        "--proxy-cpu",
        type=float,
        metavar="CORES",
        help="hold each proxy to CORES cores per worker (a CPU cgroup; needs root), leaving the rest "
        "of the machine to the load generators: shows worker scaling on a machine with few cores",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeat = 1.0, 1
    args.load_before = f"{os.getloadavg()[0]:.2f}"
    return args


# citygate with its fast path off (addons/fast_path.py): every connection through mitmproxy, as
# before the fast path became the default. Measured only when --proxies names it.
NO_FAST_PATH_VARIANT = "citygate-no-fast-path"


def contenders(folder: Path, args: argparse.Namespace, scenarios: Sequence[Scenario]) -> list[Server]:
    """The proxies to compare (not yet started), as --proxies and --proxy-cpu ask."""
    proxies: list[Server] = [MitmProxy(folder, "mitmdump"), MitmProxy(folder, "citygate")]
    proxies.append(MitmProxy(folder, "citygate", name=LOOP_VARIANT, event_loop=OTHER_LOOP))
    if args.workers > 1 and citygate_has_workers():
        proxies.append(MitmProxy(folder, "citygate", workers=args.workers))
    proxies.append(Squid(folder, CONFIG))
    if any(scenario.key == "f" for scenario in scenarios):
        proxies.append(
            MitmProxy(folder, "citygate", name=UNDECRYPTED_VARIANT, config=pass_through_config(folder))
        )
    if args.proxies and NO_FAST_PATH_VARIANT in args.proxies:
        no_fast_path = ["--set", "citygate_fast_path=false"]
        proxies.append(MitmProxy(folder, "citygate", name=NO_FAST_PATH_VARIANT, extra=no_fast_path))
    if args.proxies:
        wanted = {name.strip() for name in args.proxies.split(",")}
        proxies = [proxy for proxy in proxies if proxy.name in wanted]
    if args.proxy_cpu:
        for proxy in proxies:
            cores = args.proxy_cpu * getattr(proxy, "workers", 1)
            proxy.cpu_limit = CpuLimit(cgroup_name(proxy.name), cores)
    return proxies


def measure_all(
    scenarios: Sequence[Scenario], proxies: list[Server], nginx: Nginx, args: argparse.Namespace
) -> dict[tuple[str, str], Cell]:
    """Every scenario on every proxy taking part, --repeat times: scenario by scenario, the
    proxies' order rotating with each repetition."""
    results: dict[tuple[str, str], Cell] = {}
    for repetition in range(args.repeat):
        for scenario in scenarios:
            shift = repetition % len(proxies)
            for proxy in proxies[shift:] + proxies[:shift]:
                if not takes_part(scenario, proxy):
                    continue
                run = measure_until_quiet(scenario, proxy, nginx, proxies, args, repetition)
                results.setdefault((scenario.key, proxy.name), Cell()).runs.append(run)
    return results


def measure_until_quiet(
    scenario: Scenario,
    proxy: Server,
    nginx: Nginx,
    proxies: list[Server],
    args: argparse.Namespace,
    repetition: int,
) -> Run:
    """One run, made again (up to --retries times) while the rest of the machine was too busy."""
    for attempt in range(args.retries + 1):
        run = measure(scenario, proxy, nginx, args.duration, [nginx, *proxies])
        noisy = run.foreign_percent > args.max_foreign and attempt < args.retries
        print(
            f"  [{repetition + 1}/{args.repeat}] ({scenario.key}) {proxy.name:12} "
            f"{run.rate:9,.0f} req/s  p99 {run.p99_ms:7.2f} ms  CPU {run.cpu_percent:4.0f}%  "
            f"unexpected {run.unexpected}  others {run.foreign_percent:3.0f}%"
            + ("  (noisy: again)" if noisy else ""),
            flush=True,
        )
        time.sleep(0.3)
        if not noisy:
            break
    return run


def write_json(path: Path, results: dict[tuple[str, str], Cell]) -> None:
    path.write_text(
        json.dumps(
            {f"{key}|{name}": [asdict(run) for run in cell.runs] for (key, name), cell in results.items()},
            indent=1,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
