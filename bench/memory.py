"""Does citygate's memory stay flat under sustained load?

Starts nginx and one `citygate run --workers 1` on the demo config (as bench/throughput.py
does), then measures the proxy's resident memory (RSS) while it serves:

1. at least --requests requests (200,000 by default) of the traffic that creates flows and
   decisions: ordinary plain HTTP, denied social requests (block pages) and granted requests
   inside an intercepted Facebook tunnel, three wrk clients at once; RSS is sampled after every
   slice and the growth after the warm-up is compared with the target (20 MB);
2. 4 MiB downloads inside the intercepted tunnel (streamed: `stream_large_bodies`), through
   citygate and through bare mitmdump (same options): RSS after each round of 100;
3. one WebSocket connection through the proxy carrying --ws-messages messages of 1 KiB, once
   through citygate (MemoryGuard drops each message after the addons saw it) and once through
   bare mitmdump (which keeps every message until the connection closes), for contrast.

Reproduce (`make bench-memory`; nginx and wrk as for `make bench`):

    .venv/bin/python bench/memory.py                       # about 15 minutes on 2 cores
    .venv/bin/python bench/memory.py --requests 20000      # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from servers import BIG_BODY, LOCALHOST, MitmProxy, Nginx, Relay, Server, free_port, require, rss_bytes
from throughput import GRANTED, SCENARIOS, Run, wrk

TARGET_GROWTH_MB = 20.0
MB = 2**20


def rss_mb(proxy: Server) -> float:
    return rss_bytes(proxy.pids) / MB


def mixed_load(proxy: Server, nginx: Nginx, relay: Relay, seconds: float) -> int:
    """(a), (d) and (e) at once for `seconds`, 8 connections each; the requests served."""
    a, d, e = (next(s for s in SCENARIOS if s.key == key) for key in "ade")
    jobs: list[tuple[int, object, str, int, bool]] = [
        (proxy.port, a, a.url(nginx), 200, False),
        (proxy.port, d, d.url(nginx), 403, False),
        (relay.port, e, e.path, 200, True),
    ]
    runs: list[Run] = []

    def one(port: int, scenario: object, target: str, expected: int, tls: bool) -> None:
        runs.append(wrk(port, scenario, target, seconds, expected, tls, connections=8))  # type: ignore[arg-type]

    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    unexpected = sum(run.unexpected for run in runs)
    if unexpected:
        raise RuntimeError(f"{unexpected} unexpected answers during the mixed load")
    return sum(run.requests for run in runs)


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
    args = parser.parse_args()
    require("nginx", "wrk", "socat", "curl")
    print(f"Reproduce: {Path(sys.executable).name} bench/memory.py {' '.join(sys.argv[1:])}".rstrip())
    folder = Path(tempfile.mkdtemp(prefix="citygate-memory-"))
    try:
        with ExitStack() as stack:
            nginx = stack.enter_context(Nginx(folder))
            proxy = stack.enter_context(MitmProxy(folder, "citygate"))
            e = next(s for s in SCENARIOS if s.key == "e")
            relay = stack.enter_context(Relay(proxy.port, e.host, nginx.tls_port, e.auth))

            print("\n1. mixed load: plain HTTP, block pages, granted requests in an intercepted tunnel")
            served = mixed_load(proxy, nginx, relay, min(args.slice, 5.0))  # warm-up
            baseline = rss_mb(proxy)
            print(f"   warm-up: {served:,} requests, RSS {baseline:.1f} MB")
            total, samples, started = 0, [baseline], time.monotonic()
            while total < args.requests:
                total += mixed_load(proxy, nginx, relay, args.slice)
                samples.append(rss_mb(proxy))
                print(f"   {total:9,} requests  RSS {samples[-1]:6.1f} MB", flush=True)
            growth = samples[-1] - baseline
            rate = total / (time.monotonic() - started)
            verdict = "met" if growth <= TARGET_GROWTH_MB else "MISSED"
            print(
                f"   RSS after warm-up {baseline:.1f} MB, end {samples[-1]:.1f} MB, peak {max(samples):.1f} MB, "
                f"median {statistics.median(samples):.1f} MB over {total:,} requests ({rate:,.0f} req/s)"
            )
            print(f"   target: growth <= {TARGET_GROWTH_MB:g} MB: {verdict} ({growth:+.1f} MB)")

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

        size_kb = args.ws_size / 1024
        print(f"\n3. one WebSocket connection, {args.ws_messages:,} messages of {size_kb:g} KiB")
        for kind in ("citygate", "mitmdump"):
            before, peak = measure_websocket(folder, kind, args.ws_messages, args.ws_size)
            print(
                f"   {kind:9} RSS {before:.1f} MB -> {peak:.1f} MB with the connection open ({peak - before:+.1f} MB)"
            )
        return 0 if growth <= TARGET_GROWTH_MB else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
