"""What does signing in with Kerberos (Negotiate) cost the proxy, against Basic, side by side?

One run starts a private MIT KDC (tests/kdc.py: TEST.LAN, the proxy's principal
HTTP/proxy.test.lan and jlee), a local nginx (bench/servers.py), and `citygate run --workers 1`
on a copy of the demo configuration (its static directory; jlee holds a Facebook grant limited to
/CityOfExampleParks) with `identity: {sign_in: [negotiate, basic], kerberos: {keytab, principal}}`.
The proxy gets the KDC's krb5.conf (KRB5_CONFIG) and a private replay cache (KRB5RCACHEDIR).

Clients are threads of this process, each holding its own connection to the proxy and sending
plain HTTP GETs for http://www.facebook.com:PORT/CityOfExampleParks/..., so that every request
is a social request decided by citygate (bench/upstream_redirect.py sends it to nginx):

  negotiate, reused     one token (SPNEGO, from jlee's ticket cache) on the connection's first
                        request, then no header: citygate holds the identity on the connection
  basic, reused         `Proxy-Authorization: Basic` on every request, as browsers send it
  negotiate, new conn   a new connection and a new token for every request: every request pays
                        a token check (the worst case)
  basic, new conn       a new connection for every request, Basic on each: what a new connection
                        costs without Kerberos, so that the two new-connection rows compare

The variants run interleaved, forwards then backwards (A B C D D C B A), for several rounds, and
the table gives medians over the runs of: requests/s, the proxy's CPU per request (user + system
of its process tree, from /proc), client-side latency percentiles (from sending a request to
reading its whole answer; a new connection's connect included), and the mean decision time from
citygate's own `citygate_decision_duration_seconds` histogram (its _sum / _count over the run:
exact, where interpolated percentiles would not be, since its lowest bucket is 0.5 ms). Ratios are
Negotiate / Basic on the same kind of connection.

Before measuring, the answers are checked: a connection with no credentials gets a 407 offering
Negotiate, a token gets a 200 and the decision log names jlee signed in by negotiate, the same
connection with no header gets a 200, and a new connection with no header a 407 again.

Reproduce (nginx from `make bench-deps`; the KDC's packages from `tools/system-deps`):

    make bench-signin                                    # 3 rounds of 4 s, about 2 minutes
    .venv/bin/python bench/sign_in.py --rounds 3 --duration 4 --connections 8
    .venv/bin/python bench/sign_in.py --quick            # smoke run: 1 round of 1 s
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gssapi
import yaml
from servers import LOCALHOST, REPO, MitmProxy, Nginx, copy_config, cpu_times, require

sys.path.insert(0, str(REPO / "tests"))

from kdc import PROXY_HOST, SERVICE, Kdc, kdc_available

USER = "jlee"  # Facebook, limited to /CityOfExampleParks (config/grants)
# Demo and throw-away passwords: the demo directory's, and the private KDC's.
BASIC_PASSWORD = "jlee-pass"  # noqa: S105
KERBEROS_PASSWORD = "jlee-krb"  # noqa: S105
HOST = "www.facebook.com"
PATH = "/CityOfExampleParks/events"
SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
DECISION = "citygate_decision_duration_seconds"
NEGOTIATE_CHECK = "citygate_negotiate_seconds"


@dataclass(frozen=True)
class Variant:
    name: str
    negotiate: bool
    new_connections: bool


VARIANTS = (
    Variant("negotiate, reused", True, False),
    Variant("basic, reused", False, False),
    Variant("negotiate, new conn", True, True),
    Variant("basic, new conn", False, True),
)


@dataclass
class Run:
    requests: int
    seconds: float
    cpu_seconds: float
    latencies: list[float]
    decisions: float  # decisions counted by citygate's histogram during the run
    decision_seconds: float
    token_checks: float  # Negotiate tokens citygate checked during the run
    token_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu_seconds / self.requests

    def latency_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]

    @property
    def decision_us(self) -> float:
        return 1e6 * self.decision_seconds / self.decisions if self.decisions else 0.0

    @property
    def token_us(self) -> float:
        return 1e6 * self.token_seconds / self.token_checks if self.token_checks else 0.0


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)

    def median(self, value: Callable[[Run], float]) -> float:
        return statistics.median(value(run) for run in self.runs)


# --- the proxy --------------------------------------------------------------------------------


class KerberizedCitygate(MitmProxy):
    """`citygate run` with the private KDC's krb5.conf and a replay cache of its own."""

    def __init__(self, folder: Path, config: Path, kerberos_env: Mapping[str, str]) -> None:
        super().__init__(folder, "citygate", config=config, workers=1)
        self.kerberos_env = dict(kerberos_env)

    def spawn(self, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        super().spawn(command, log, {**(env or {}), **self.kerberos_env})


def negotiate_config(folder: Path, keytab: Path) -> Path:
    """A copy of the demo configuration (its static directory) that signs in with Negotiate, then Basic."""
    config = copy_config(REPO / "config" / "citygate.yaml", folder)
    document = yaml.safe_load(config.read_text())
    document["identity"] = {
        "sign_in": ["negotiate", "basic"],
        "kerberos": {"keytab": str(keytab), "principal": SERVICE},
    }
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    return config


def scrape(port: int) -> dict[str, float]:
    """Counts and sums of the two histograms from the proxy's /metrics."""
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    wanted = {f"{name}_{part}" for name in (DECISION, NEGOTIATE_CHECK) for part in ("count", "sum")}
    values = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            values[name] = float(value)
    return values


# --- the clients ------------------------------------------------------------------------------


def spnego_token(ccache: Path) -> str:
    """A fresh Negotiate token for the proxy from `ccache`, as a browser makes one."""
    credentials = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    target = gssapi.Name(f"HTTP@{PROXY_HOST}", gssapi.NameType.hostbased_service)
    context = gssapi.SecurityContext(name=target, creds=credentials, usage="initiate", mech=SPNEGO)
    return base64.b64encode(context.step()).decode()


class Connection:
    """One kept-alive client connection to the proxy: GETs in absolute form, answers read whole."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOCALHOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def get(self, url: str, authorization: str | None) -> tuple[int, bytes]:
        head = f"GET {url} HTTP/1.1\r\nHost: {HOST}\r\n"
        if authorization:
            head += f"Proxy-Authorization: {authorization}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        header, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        if "content-length" not in fields:
            raise RuntimeError(f"an answer without Content-Length: {lines[0]}")
        length = int(fields["content-length"])
        while len(self.buffer) < length:
            self._receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), header + b"\r\n\r\n" + body

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the proxy closed the connection")
        self.buffer += data


def client(
    variant: Variant,
    port: int,
    url: str,
    ccache: Path,
    deadline: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    basic = "Basic " + base64.b64encode(f"{USER}:{BASIC_PASSWORD}".encode()).decode()
    connection: Connection | None = None
    try:
        while time.monotonic() < deadline:
            fresh = connection is None
            if connection is None:
                connection = Connection(port)
            started = time.perf_counter()
            if not variant.negotiate:
                authorization: str | None = basic
            elif fresh:
                # Made in the timed part: a browser makes its token when it sends the request.
                authorization = "Negotiate " + spnego_token(ccache)
            else:
                authorization = None
            status, answer = connection.get(url, authorization)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(f"{variant.name}: {status} {answer[:300]!r}")
                return
            if variant.new_connections:
                connection.close()
                connection = None
    except (OSError, gssapi.exceptions.GSSError) as exc:
        errors.append(f"{variant.name}: {exc!r}")
    finally:
        if connection is not None:
            connection.close()


def measure(
    variant: Variant, proxy: MitmProxy, url: str, ccache: Path, connections: int, duration: float
) -> Run:
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors: list[str] = []
    before_metrics = scrape(proxy.metrics_port)
    user, system = cpu_times(proxy.pids)
    started = time.monotonic()
    deadline = started + duration
    threads = [
        threading.Thread(target=client, args=(variant, proxy.port, url, ccache, deadline, mine, errors))
        for mine in latencies
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    user_after, system_after = cpu_times(proxy.pids)
    after_metrics = scrape(proxy.metrics_port)
    if errors:
        raise RuntimeError(f"unexpected answers ({len(errors)}), e.g. {errors[0]}")

    def delta(name: str) -> float:
        return after_metrics[name] - before_metrics[name]

    everything = [latency for mine in latencies for latency in mine]
    return Run(
        requests=len(everything),
        seconds=elapsed,
        cpu_seconds=user_after + system_after - user - system,
        latencies=everything,
        decisions=delta(f"{DECISION}_count"),
        decision_seconds=delta(f"{DECISION}_sum"),
        token_checks=delta(f"{NEGOTIATE_CHECK}_count"),
        token_seconds=delta(f"{NEGOTIATE_CHECK}_sum"),
    )


# --- checks before measuring ------------------------------------------------------------------


def check_answers(proxy: MitmProxy, url: str, ccache: Path) -> None:
    """The proxy asks for Negotiate, accepts jlee's token, and holds it on that connection only."""
    first = Connection(proxy.port)
    try:
        status, answer = first.get(url, None)
        if status != 407 or b"Proxy-Authenticate: Negotiate\r\n" not in answer:
            raise RuntimeError(f"no credentials: expected a 407 offering Negotiate, got {answer[:400]!r}")
        status, answer = first.get(url, "Negotiate " + spnego_token(ccache))
        if status != 200:
            raise RuntimeError(f"a token: expected 200, got {answer[:400]!r}")
        if first.get(url, None)[0] != 200:
            raise RuntimeError("the connection signed in by its token was not held")
    finally:
        first.close()
    second = Connection(proxy.port)
    try:
        if second.get(url, None)[0] != 407:
            raise RuntimeError("a new connection without credentials was not asked to sign in")
    finally:
        second.close()
    deadline = time.monotonic() + 10
    while f"user={USER} identity=negotiate" not in proxy.log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the decision log shows no negotiate sign-in:\n{proxy.log_tail()}")
        time.sleep(0.1)


# --- the run ----------------------------------------------------------------------------------


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}" if theirs else "-"


def report(cells: dict[str, Cell], connections: int) -> None:
    print(
        f"\n| variant ({connections} connections) | requests/s | proxy CPU us/req | client p50 ms | client p90 ms"
        " | client p99 ms | decision mean us | token checks/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for variant in VARIANTS:
        cell = cells[variant.name]
        checks = cell.median(lambda run: run.token_checks / run.requests)
        print(
            f"| {variant.name} | {cell.median(lambda run: run.rate):,.0f}"
            f" | {cell.median(lambda run: run.cpu_us):,.0f}"
            f" | {cell.median(lambda run: run.latency_ms(50)):.2f}"
            f" | {cell.median(lambda run: run.latency_ms(90)):.2f}"
            f" | {cell.median(lambda run: run.latency_ms(99)):.2f}"
            f" | {cell.median(lambda run: run.decision_us):,.0f}"
            f" | {checks:.3f} |"
        )
    print("\n| Negotiate / Basic | requests/s | proxy CPU us/req | client p50 | client p90 | decision mean |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in ("reused", "new conn"):
        mine, theirs = cells[f"negotiate, {kind}"], cells[f"basic, {kind}"]
        values: list[Callable[[Run], float]] = [
            lambda run: run.rate,
            lambda run: run.cpu_us,
            lambda run: run.latency_ms(50),
            lambda run: run.latency_ms(90),
            lambda run: run.decision_us,
        ]
        print(f"| {kind} | " + " | ".join(ratio(mine.median(v), theirs.median(v)) for v in values) + " |")
    checked = [run for run in cells["negotiate, new conn"].runs if run.token_checks]
    if checked:
        print(
            f"\nA token check in the proxy ({NEGOTIATE_CHECK} mean, timed in its thread):"
            f" {statistics.median(run.token_us for run in checked):,.0f} us"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of A B C D D C B A (default: %(default)s)"
    )
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run (default: %(default)s)")
    parser.add_argument(
        "--connections", type=int, default=8, help="client connections (default: %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    require("nginx")
    if not kdc_available():
        raise SystemExit(
            "missing: krb5kdc and kinit; tools/system-deps installs them (krb5-kdc, krb5-admin-server, krb5-user)"
        )
    print(f"Reproduce: .venv/bin/python bench/sign_in.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, load average {os.getloadavg()[0]:.2f} at the start"
    )
    folder = Path(tempfile.mkdtemp(prefix="citygate-signin-"))
    (folder / "kdc").mkdir()
    kdc = Kdc(folder / "kdc")
    try:
        kdc.start()
        kdc.add_user(USER, KERBEROS_PASSWORD)
        ccache = folder / f"{USER}.ccache"
        # This process is the client: its GSSAPI library reads the KDC's krb5.conf from here.
        os.environ["KRB5_CONFIG"] = str(kdc.krb5_conf)
        kdc.kinit(USER, KERBEROS_PASSWORD, ccache)
        keytab = kdc.service_keytab(SERVICE, folder / "proxy.keytab")
        rcache = folder / "rcache"
        rcache.mkdir()
        env = {"KRB5_CONFIG": str(kdc.krb5_conf), "KRB5RCACHEDIR": str(rcache)}
        config = negotiate_config(folder / "citygate-config", keytab)
        with Nginx(folder) as nginx, KerberizedCitygate(folder, config, env) as proxy:
            url = f"http://{HOST}:{nginx.port}{PATH}"
            check_answers(proxy, url, ccache)
            cells = {variant.name: Cell() for variant in VARIANTS}
            for variant in VARIANTS:  # warm-up: the first token check, the password cache
                measure(variant, proxy, url, ccache, args.connections, 0.3)
            order = [*VARIANTS, *reversed(VARIANTS)]
            for _ in range(args.rounds):
                for variant in order:
                    cells[variant.name].runs.append(
                        measure(variant, proxy, url, ccache, args.connections, args.duration)
                    )
            report(cells, args.connections)
            print(
                f"\nMedians of {2 * args.rounds} runs of {args.duration:g} s per variant; load average {os.getloadavg()[0]:.2f} at the end."
            )
        return 0
    finally:
        kdc.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
