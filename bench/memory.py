"""Does citygate's memory stay flat under sustained load, and do idle relayed tunnels close?

Starts nginx and `citygate run --workers 1` on the demo config (as bench/throughput.py does),
with the fast path on (`citygate_fast_path`, addons/fast_path.py) where it matters, and
measures the proxy's resident memory (RSS) and file descriptors:

1. at least --requests requests (200,000 by default) of mixed traffic, the scenarios of
   bench/throughput.py at once, 8 connections each: (a) plain HTTP, (b) ordinary HTTPS through
   reused tunnels (wrk over socat) and (c) through a new tunnel per request (curl), both relayed
   by the fast path, (d) denied social requests (block pages), (e) granted requests inside an
   intercepted Facebook tunnel. RSS is sampled after every slice and its growth after the
   warm-up compared with the target (20 MB); the requests of each kind are printed, and the
   proxy's /metrics must show that the fast path relayed every tunnel of (b) and (c)
   (`citygate_fast_path_connections_total{outcome="relayed"}`), or the run fails;
2. 4 MiB downloads inside the intercepted tunnel (streamed: `stream_large_bodies`), through
   citygate and through bare mitmdump (same options): RSS after each round of 100;
3. one WebSocket connection through the proxy carrying --ws-messages messages of 4 KiB, once
   through citygate (MemoryGuard drops each message after the addons saw it) and once through
   bare mitmdump (which keeps every message until the connection closes), for contrast;
4. 2,000 idle relayed tunnels: a proxy with the fast path and `tcp_timeout` 15 s, and a sink in
   this process (accepts, reads, never answers or closes). 2,000 clients from 127.0.1.1 to
   127.0.1.10 (200 each, under the 256 per address of `citygate_max_client_connections`) send
   CONNECT www.example.org:<sink port>, then a real ClientHello, so each tunnel is relayed to
   the sink. Prints the sink's accepted connections, the proxy's RSS and descriptors before and
   with the 2,000 open, then how long until every client saw the close and the descriptors came
   back; the target is within tcp_timeout + 15 s. This process and the proxy need about 4,000
   descriptors each: the soft limit is raised to the hard one (the proxy inherits it).

The exit status is non-zero when part 1 or part 4 misses its target; a part that fails (an
unexpected answer, tunnels not relayed) stops the run.

Reproduce (`make bench-memory`; nginx, wrk, socat and curl as for `make bench`):

    .venv/bin/python bench/memory.py                       # about 6 minutes on 2 cores
    .venv/bin/python bench/memory.py --requests 20000      # a quick look
    .venv/bin/python bench/memory.py --parts 4             # the idle tunnels alone, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from scaleout import metric_sum
from servers import (
    BIG_BODY,
    LOCALHOST,
    MitmProxy,
    Nginx,
    Relay,
    Server,
    free_port,
    require,
    rss_bytes,
    wait_for_port,
)
from throughput import GRANTED, SCENARIOS, Run, Scenario, curl_new_tunnels, expected_status, wrk

TARGET_GROWTH_MB = 20.0
MB = 2**20
FAST_PATH = ("--set", "citygate_fast_path=true")
FAST_PATH_METRIC = "citygate_fast_path_connections_total"
#: The mixed load's traffic: every scenario but the whole-site grant (f) and the bulk bodies (g).
MIXED = "abcde"
#: Connections (curl: transfers in flight) of each kind of traffic in the mixed load.
LOAD_CONNECTIONS = 8
#: Part 4: idle tunnels, spread over source addresses so that none exceeds the proxy's limit per
#: client address (citygate_max_client_connections, 256). All of 127.0.0.0/8 is loopback on Linux.
IDLE_TUNNELS = 2_000
SOURCE_ADDRESSES = tuple(f"127.0.1.{n}" for n in range(1, 11))
#: Tunnels being opened at once: the proxy's listen backlog is asyncio's default of 100.
OPENING_AT_ONCE = 64
#: How long past tcp_timeout a tunnel may stay open: the sweeper looks once a second, and a
#: loaded 2-core machine may be slow to close 2,000 connections at once.
CLOSE_MARGIN_SECONDS = 15.0
#: Longer than the metrics' refresh (config/citygate.yaml: metrics.refresh_seconds, 5 s).
GAUGE_WAIT_SECONDS = 12.0
#: Descriptors the proxy may still hold after the tunnels closed, beyond its count before them.
FD_SLACK = 10


def rss_mb(proxy: Server) -> float:
    return rss_bytes(proxy.pids) / MB


def scenario(key: str) -> Scenario:
    return next(s for s in SCENARIOS if s.key == key)


def run_load(key: str, proxy: MitmProxy, nginx: Nginx, relays: dict[str, Relay], seconds: float) -> Run:
    """One scenario's load for `seconds`, LOAD_CONNECTIONS at once: (b) and (e) wrk over their socat
    relay (tunnels reused), (c) curl with a new tunnel per request, (a) and (d) wrk at the proxy."""
    served = scenario(key)
    expected = expected_status(served, proxy)
    if key in relays:
        return wrk(relays[key].port, served, served.path, seconds, expected, True, LOAD_CONNECTIONS)
    if served.new_tunnels:
        return curl_new_tunnels(proxy.port, served, served.url(nginx), seconds, expected, LOAD_CONNECTIONS)
    return wrk(proxy.port, served, served.url(nginx), seconds, expected, False, LOAD_CONNECTIONS)


def mixed_load(proxy: MitmProxy, nginx: Nginx, relays: dict[str, Relay], seconds: float) -> Counter[str]:
    """(a) to (e) at once for `seconds`: the requests served, by scenario."""
    with ThreadPoolExecutor(len(MIXED)) as pool:
        load = partial(run_load, proxy=proxy, nginx=nginx, relays=relays, seconds=seconds)
        runs = dict(zip(MIXED, pool.map(load, MIXED), strict=True))
    unexpected = {key: run.unexpected for key, run in runs.items() if run.unexpected}
    if unexpected:
        raise RuntimeError(f"unexpected answers during the mixed load, by scenario: {unexpected}")
    return Counter({key: run.requests for key, run in runs.items()})


def wait_for_metrics(proxy: MitmProxy) -> None:
    """The proxy serves /metrics a moment after its proxy port."""
    wait_for_port(proxy.metrics_port, proxy.process, 30, f"{proxy.name}'s metrics")


def fast_path_outcomes(proxy: MitmProxy) -> tuple[int, int]:
    """Connections the proxy's fast path relayed and handed to mitmproxy so far (its /metrics)."""
    relayed = metric_sum(proxy.metrics_port, FAST_PATH_METRIC, {"outcome": "relayed"})
    handed_off = metric_sum(proxy.metrics_port, FAST_PATH_METRIC, {"outcome": "handed_off"})
    return int(relayed), int(handed_off)


def fast_path_since(proxy: MitmProxy, before: tuple[int, int]) -> tuple[int, int]:
    """Connections relayed and handed to mitmproxy since fast_path_outcomes read `before`."""
    relayed, handed_off = fast_path_outcomes(proxy)
    return relayed - before[0], handed_off - before[1]


def settled_outcomes(proxy: MitmProxy) -> tuple[int, int]:
    """fast_path_outcomes once they have not changed for a second. The socat relays' readiness
    probes (a connection opened and closed at once) still reach the proxy as CONNECTs, a moment
    later, and are handed to mitmproxy: counted before a check starts, not during it."""
    outcomes = fast_path_outcomes(proxy)
    while True:
        time.sleep(1.0)
        previous, outcomes = outcomes, fast_path_outcomes(proxy)
        if outcomes == previous:
            return outcomes


def check_fast_path(proxy: MitmProxy, nginx: Nginx, relays: dict[str, Relay], seconds: float) -> None:
    """Run (b) and (c) alone: fail unless the fast path relayed every one of their tunnels and handed
    none to mitmproxy. wrk opens LOAD_CONNECTIONS tunnels of (b) through socat; each request of (c)
    opens its own (a few more may be relayed: curl's transfers cut short are not requests)."""
    for key in "bc":
        before = settled_outcomes(proxy)
        run = run_load(key, proxy, nginx, relays, seconds)
        relayed, handed_off = fast_path_since(proxy, before)
        tunnels = LOAD_CONNECTIONS if key == "b" else run.requests
        # wrk first connects to its address and closes (wrk.resolve): through socat, one more
        # CONNECT with nothing after it, which goes to mitmproxy.
        probes = 1 if key == "b" else 0
        print(
            f"   ({key}) alone for {seconds:g} s: {run.requests:,} requests, {tunnels:,} tunnels; the fast path "
            f"relayed {relayed:,} and handed {handed_off:,} connections to mitmproxy"
            + (" (wrk's probe)" if probes else "")
        )
        if run.unexpected or not run.requests or relayed < tunnels or handed_off > probes:
            raise RuntimeError(
                f"({key}): the fast path did not relay every tunnel ({run.unexpected:,} unexpected answers): "
                "is citygate_fast_path on?"
            )


def relayed_during(proxy: MitmProxy, before: tuple[int, int], served: Counter[str], loads: int) -> str:
    """Fail unless the fast path relayed at least the tunnels of (b) and (c) since `before` (what
    fast_path_outcomes read then); what it did, in words. Each request of (c) opened a tunnel, and
    each load's wrk LOAD_CONNECTIONS tunnels of (b)."""
    relayed, handed_off = fast_path_since(proxy, before)
    expected = served["c"] + loads * LOAD_CONNECTIONS
    if relayed < expected:
        raise RuntimeError(
            f"the fast path relayed {relayed:,} tunnels, not the {expected:,} or more of (b) and (c) "
            f"({handed_off:,} connections handed to mitmproxy)"
        )
    return (
        f"{relayed:,} tunnels relayed (of (b) and (c): >= {expected:,}), "
        f"{handed_off:,} connections handed to mitmproxy ((a), (d), (e))"
    )


def large_downloads(proxy: Server, nginx: Nginx, count: int) -> None:
    """4 MiB answers inside the intercepted Facebook tunnel, 4 at a time."""
    url = f"https://www.facebook.com:{nginx.tls_port}/CityOfExampleParks/big"
    command = ["curl", "-sk", "-Z", "--parallel-max", "4", "--proxy", f"http://{LOCALHOST}:{proxy.port}"]
    command += ["--proxy-user", GRANTED, "-o", "/dev/null", "-w", "%{http_code} %{size_download}\\n"]
    command += [f"{url}?[1-{count}]"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    answers = result.stdout.split("\n")
    good = sum(1 for line in answers if line == f"200 {BIG_BODY}")
    if good != count:
        raise RuntimeError(f"only {good} of {count} large downloads arrived whole: {answers[:3]}")


# --- WebSocket --------------------------------------------------------------------------------


class EchoServer:
    """A WebSocket server on 127.0.0.1 that answers every message with a 2-byte ack."""

    def __init__(self) -> None:
        self.port = free_port()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._client, LOCALHOST, self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

        ws = WSConnection(ConnectionType.SERVER)
        while data := await reader.read(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    writer.write(ws.send(AcceptConnection()))
                elif isinstance(event, BytesMessage | TextMessage) and event.message_finished:
                    writer.write(ws.send(BytesMessage(data=b"ok")))
                elif isinstance(event, CloseConnection):
                    writer.write(ws.send(event.response()))
                    await writer.drain()
                    writer.close()
                    return
            await writer.drain()
        writer.close()


def websocket_stream(
    proxy_port: int, server_port: int, messages: int, size: int, sample: Callable[[], None]
) -> None:
    """Open ws://www.example.org:PORT/ through the proxy and send `messages` messages."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, CloseConnection

    key = base64.b64encode(os.urandom(16)).decode()
    host = f"www.example.org:{server_port}"
    upgrade = (
        f"GET http://{host}/chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((LOCALHOST, proxy_port), timeout=30) as sock:
        sock.sendall(upgrade.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        head, _, rest = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"no WebSocket through the proxy: {head[:200]!r}")
        ws = Connection(ConnectionType.CLIENT)
        ws.receive_data(rest)
        payload = os.urandom(size)
        acks = 0
        for n in range(messages):
            sock.sendall(ws.send(BytesMessage(data=payload)))
            # Lock-step: one ack per message, so the proxy never buffers a backlog.
            while acks <= n:
                ws.receive_data(sock.recv(65536))
                acks += sum(1 for event in ws.events() if isinstance(event, BytesMessage))
            if n % (messages // 4 or 1) == 0:
                sample()
        sample()  # with the connection still open: what the flow holds now
        sock.sendall(ws.send(CloseConnection(code=1000)))


def measure_websocket(folder: Path, kind: str, messages: int, size: int) -> tuple[float, float]:
    """RSS before the stream and the peak while its connection is open, in MB."""
    with EchoServer() as echo, MitmProxy(folder, kind, name=f"{kind}-ws") as proxy:
        time.sleep(0.5)
        before = rss_mb(proxy)
        samples: list[float] = []
        websocket_stream(proxy.port, echo.port, messages, size, lambda: samples.append(rss_mb(proxy)))
        return before, max(samples)


# --- idle relayed tunnels ---------------------------------------------------------------------


class Sink(asyncio.Protocol):
    """An upstream that accepts, reads and discards, and never answers or closes."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.counts["accepted"] += 1

    def data_received(self, data: bytes) -> None:
        pass  # read, so that the proxy is never held up by a full buffer; never answered

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts["closed"] += 1


def client_hello(server_name: str) -> bytes:
    """The first flight of a real TLS handshake (Python's ssl) naming `server_name`."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # waiting for the ServerHello, which never comes
        tls.do_handshake()
    return outgoing.read()


async def idle_tunnel(
    proxy_port: int,
    authority: str,
    source: str,
    hello: bytes,
    opening: asyncio.Semaphore,
    counts: Counter[str],
) -> tuple[float, float]:
    """One tunnel: CONNECT, the 200, a ClientHello, then nothing until the proxy closes it.
    When the ClientHello was sent and when the close (EOF or reset) arrived, on time.monotonic()."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with opening:
            reader, writer = await asyncio.open_connection(LOCALHOST, proxy_port, local_addr=(source, 0))
            writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise RuntimeError(f"CONNECT {authority} from {source}: {head[:100]!r}")
            writer.write(hello)
            await writer.drain()
        sent = time.monotonic()
        counts["opened"] += 1
        try:
            while await reader.read(65536):
                pass  # the sink never answers: nothing should come but the close
        except ConnectionError:  # a reset: closed too
            pass
        return sent, time.monotonic()
    finally:
        if writer is not None:
            writer.close()  # also when cancelled: a tunnel the proxy left open past the deadline


async def client_connections(proxy: MitmProxy, expected: int) -> int:
    """The proxy's citygate_client_connections gauge once it reads `expected`, or what it reads after
    GAUGE_WAIT_SECONDS: the gauge is brought up to date every few seconds, not as connections come
    and go."""
    deadline = time.monotonic() + GAUGE_WAIT_SECONDS
    while True:
        value = int(metric_sum(proxy.metrics_port, "citygate_client_connections", {}))
        if value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


def open_fds(proxy: Server) -> int:
    """File descriptors open in the proxy's processes."""
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in proxy.pids)


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft limit on open files to its hard limit (the proxy started after
    inherits it, as the systemd unit gives it LimitNOFILE); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"{needed:,} file descriptors needed, the hard limit is {hard:,}: raise it (ulimit -Hn)"
        )
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def idle_tunnels(proxy: MitmProxy, tunnels: int, tcp_timeout: float) -> bool:
    """Open `tunnels` relayed tunnels to a sink that never answers and wait for the proxy's idle
    timeout to close them all; print what happened. Whether every one closed in time, and the
    proxy's descriptors came back."""
    counts: Counter[str] = Counter()
    sink = await asyncio.get_running_loop().create_server(
        lambda: Sink(counts), LOCALHOST, 0, backlog=OPENING_AT_ONCE * 4
    )
    sink_port = sink.sockets[0].getsockname()[1]
    authority = f"www.example.org:{sink_port}"  # ordinary: relayed, to 127.0.0.1 (upstream_redirect.py)
    hello = client_hello("www.example.org")  # the sink never answers, so one serves every tunnel
    outcomes_before = fast_path_outcomes(proxy)
    fds_before, rss_before = open_fds(proxy), rss_mb(proxy)

    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    started = time.monotonic()
    tasks = [
        asyncio.create_task(
            idle_tunnel(
                proxy.port, authority, SOURCE_ADDRESSES[n % len(SOURCE_ADDRESSES)], hello, opening, counts
            )
        )
        for n in range(tunnels)
    ]
    # Every tunnel is open once each client has sent its ClientHello and the sink has them all.
    while counts["opened"] < tunnels or counts["accepted"] < tunnels:
        failed = [task for task in tasks if task.done() and task.exception() is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} tunnels failed: {failed[0].exception()!r}")
        if time.monotonic() - started > tcp_timeout:
            raise RuntimeError(
                f"only {counts['accepted']:,} of {tunnels:,} tunnels reached the sink in {tcp_timeout:g} s"
            )
        await asyncio.sleep(0.05)
    all_open = time.monotonic()
    relayed, _ = fast_path_since(proxy, outcomes_before)
    fds_open, rss_open = open_fds(proxy), rss_mb(proxy)
    early = sum(1 for task in tasks if task.done())
    clients_open = await client_connections(proxy, tunnels - early)
    print(
        f"   opened in {all_open - started:.1f} s from {len(SOURCE_ADDRESSES)} addresses; the sink accepted "
        f"{counts['accepted']:,}, the fast path relayed {relayed:,}, citygate_client_connections {clients_open:,}"
        + (f"; {early:,} already closed" if early else "")
    )
    print(
        f"   proxy RSS {rss_before:.1f} MB -> {rss_open:.1f} MB with {tunnels:,} open "
        f"({rss_open - rss_before:+.1f} MB, {(rss_open - rss_before) * MB / tunnels / 1024:.1f} KiB per tunnel)"
    )
    print(f"   proxy file descriptors {fds_before:,} -> {fds_open:,} with {tunnels:,} open")

    deadline = tcp_timeout + CLOSE_MARGIN_SECONDS
    done, pending = await asyncio.wait(tasks, timeout=all_open + deadline - time.monotonic())
    closed_at = time.monotonic()
    fds_after = open_fds(proxy)
    while fds_after > fds_before + FD_SLACK and time.monotonic() < all_open + deadline:
        await asyncio.sleep(0.1)
        fds_after = open_fds(proxy)
    fds_back = time.monotonic()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    sink.close()
    await sink.wait_closed()

    idle = sorted(closed - sent for sent, closed in (task.result() for task in done))
    if idle:
        print(
            f"   {len(done):,} of {tunnels:,} client sockets saw the close, {closed_at - all_open:.1f} s after "
            f"the last was opened: each {idle[0]:.1f} to {idle[-1]:.1f} s after its ClientHello "
            f"(median {statistics.median(idle):.1f} s); the sink saw {counts['closed']:,} upstream connections closed"
        )
    clients_after = await client_connections(proxy, 0)
    print(
        f"   proxy file descriptors {fds_after:,} {fds_back - all_open:.1f} s after the last was opened "
        f"(start {fds_before:,}); citygate_client_connections {clients_after:,}; RSS {rss_mb(proxy):.1f} MB"
    )
    # Closed sooner than tcp_timeout after its last byte: something else than the idle timeout.
    premature = sum(1 for seconds in idle if seconds < tcp_timeout)
    met = not pending and not premature and fds_after <= fds_before + FD_SLACK
    problems = [f"{len(pending):,} tunnels still open"] if pending else []
    problems += [f"{premature:,} closed before tcp_timeout"] if premature else []
    print(
        f"   target: every idle tunnel closed by the idle timeout and the descriptors back within "
        f"tcp_timeout + {CLOSE_MARGIN_SECONDS:g} s ({deadline:g} s): {'met' if met else 'MISSED'}"
        + (f" ({'; '.join(problems)})" if problems else "")
    )
    return met


def part_mixed_load(folder: Path, args: argparse.Namespace) -> bool:
    """Part 1; whether RSS grew by at most the target."""
    print(
        "\n1. mixed load, fast path on: plain HTTP, ordinary HTTPS relayed (reused and new tunnels), "
        "block pages, granted requests in an intercepted tunnel"
    )
    with ExitStack() as stack:
        nginx = stack.enter_context(Nginx(folder))
        proxy = stack.enter_context(MitmProxy(folder, "citygate", extra=FAST_PATH))
        wait_for_metrics(proxy)
        relays = {
            key: stack.enter_context(
                Relay(proxy.port, scenario(key).host, nginx.tls_port, scenario(key).auth)
            )
            for key in "be"
        }
        check_fast_path(proxy, nginx, relays, 2.0)
        before = fast_path_outcomes(proxy)
        served = mixed_load(proxy, nginx, relays, min(args.slice, 5.0))  # warm-up
        baseline = rss_mb(proxy)
        print(f"   warm-up: {served.total():,} requests, RSS {baseline:.1f} MB")
        load: Counter[str] = Counter()
        samples, slices, started = [baseline], 0, time.monotonic()
        while load.total() < args.requests:
            load += mixed_load(proxy, nginx, relays, args.slice)
            slices += 1
            samples.append(rss_mb(proxy))
            print(f"   {load.total():9,} requests  RSS {samples[-1]:6.1f} MB", flush=True)
        total = load.total()
        growth = samples[-1] - baseline
        rate = total / (time.monotonic() - started)
        print(
            f"   RSS after warm-up {baseline:.1f} MB, end {samples[-1]:.1f} MB, peak {max(samples):.1f} MB, "
            f"median {statistics.median(samples):.1f} MB over {total:,} requests ({rate:,.0f} req/s)"
        )
        for key in MIXED:
            print(f"   ({key}) {scenario(key).title:42} {load[key]:9,} requests")
        print(f"   fast path: {relayed_during(proxy, before, served + load, loads=1 + slices)}")
    met = growth <= TARGET_GROWTH_MB
    print(f"   target: growth <= {TARGET_GROWTH_MB:g} MB: {'met' if met else 'MISSED'} ({growth:+.1f} MB)")
    return met


def part_large_downloads(folder: Path, args: argparse.Namespace) -> bool:
    """Part 2 (no target)."""
    rounds, per_round = args.download_rounds, 100
    print(
        f"\n2. {rounds} x {per_round} downloads of {BIG_BODY // MB} MiB (4 at a time) in the intercepted tunnel"
    )
    for kind in ("citygate", "mitmdump"):
        with Nginx(folder / f"{kind}-big") as nginx, MitmProxy(folder, kind, name=f"{kind}-big") as proxy:
            sizes = [rss_mb(proxy)]
            for _ in range(rounds):
                large_downloads(proxy, nginx, per_round)
                sizes.append(rss_mb(proxy))
            trail = " ".join(f"{size:.0f}" for size in sizes)
            print(f"   {kind:9} RSS after each round (MB): {trail}  ({sizes[-1] - sizes[0]:+.1f} MB)")
    return True


def part_websocket(folder: Path, args: argparse.Namespace) -> bool:
    """Part 3 (no target)."""
    print(f"\n3. one WebSocket connection, {args.ws_messages:,} messages of {args.ws_size / 1024:g} KiB")
    for kind in ("citygate", "mitmdump"):
        before, peak = measure_websocket(folder, kind, args.ws_messages, args.ws_size)
        print(
            f"   {kind:9} RSS {before:.1f} MB -> {peak:.1f} MB with the connection open ({peak - before:+.1f} MB)"
        )
    return True


def part_idle_tunnels(folder: Path, args: argparse.Namespace) -> bool:
    """Part 4; whether every tunnel was closed by the idle timeout in time."""
    print(
        f"\n4. {args.idle_tunnels:,} idle relayed tunnels to a sink that never answers, fast path on, "
        f"tcp_timeout {args.tcp_timeout} s"
    )
    # Each tunnel holds a client socket and a sink socket here, and two descriptors in the proxy.
    limit = raise_fd_limit(2 * args.idle_tunnels + 256)
    options = (*FAST_PATH, "--set", f"tcp_timeout={args.tcp_timeout}")
    with MitmProxy(folder, "citygate", name="citygate-idle", extra=options) as proxy:
        wait_for_metrics(proxy)
        print(f"   open files limit {limit:,} (the proxy's too: it inherits it)")
        return asyncio.run(idle_tunnels(proxy, args.idle_tunnels, args.tcp_timeout))


PARTS: dict[str, Callable[[Path, argparse.Namespace], bool]] = {
    "1": part_mixed_load,
    "2": part_large_downloads,
    "3": part_websocket,
    "4": part_idle_tunnels,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=200_000, help="at least this many (default: %(default)s)"
    )
    parser.add_argument("--slice", type=float, default=20.0, help="seconds of load between samples")
    parser.add_argument(
        "--download-rounds",
        type=int,
        default=10,
        help="rounds of 100 downloads of 4 MiB (default: %(default)s)",
    )
    parser.add_argument(
        "--ws-messages", type=int, default=20_000, help="WebSocket messages (default: %(default)s)"
    )
    parser.add_argument("--ws-size", type=int, default=4096, help="bytes per WebSocket message")
    parser.add_argument(
        "--idle-tunnels", type=int, default=IDLE_TUNNELS, help="idle relayed tunnels (default: %(default)s)"
    )
    parser.add_argument(
        "--tcp-timeout",
        type=int,
        default=15,
        help="the proxy's tcp_timeout in part 4 (default: %(default)s s)",
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="parts to run (default: %(default)s)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"no part {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")
    require("nginx", "wrk", "socat", "curl", "stdbuf")
    print(f"Reproduce: {Path(sys.executable).name} bench/memory.py {' '.join(sys.argv[1:])}".rstrip())
    folder = Path(tempfile.mkdtemp(prefix="citygate-memory-"))
    try:
        # Every part runs, even after one missed its target; the status says whether all met theirs.
        met = [PARTS[part](folder, args) for part in parts]
        return 0 if all(met) else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
