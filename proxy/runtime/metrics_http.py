"""The metrics listener, and how the workers of `citygate run --workers N` share one.

One process (`--workers 1`, and the tests): the proxy serves its own private registry from a
listener thread (`MetricsServer`); the event loop never handles a scrape.

Several workers: prometheus_client's multiprocess mode. Before it forks the workers, the
supervisor makes a fresh folder for this run and names it in PROMETHEUS_MULTIPROC_DIR; every
worker's metrics then keep their values in memory-mapped files there. The supervisor alone
listens, for the whole service, and its registry merges every worker's files on each scrape
(MultiProcessCollector): counters and histograms are summed, gauges combined as each one's
`multiprocess_mode` says. A worker that dies leaves its files, so totals never go backwards; its
live gauges are dropped (`mark_process_dead`), and its replacement writes files of its own. The
folder is removed when the service stops.

Extending the listener: `MetricsServer.routes` maps a path to a function returning (status,
content type, body), called in the listener's thread; /healthz and /readyz are served that way
(proxy/runtime/health.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

from citygate.proxy.metrics.config import MetricsSettings, parse_listen
from citygate.proxy.runtime.health import forget_state, healthz, read_states, readyz
from citygate.proxy.runtime.worker_env import worker_index

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLDER_PREFIX = "citygate-metrics-"  # then the supervisor's pid: see remove_stale_folders
LISTEN_OPTION = "citygate_metrics_listen"

# (HTTP status, content type, body) of an extra path on the listener, given its query string.
Route = Callable[[Mapping[str, list[str]]], tuple[int, str, bytes]]
_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    503: "503 Service Unavailable",
}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every 15 s would flood the proxy log


class MetricsServer:
    """GET /metrics (and any added route) from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.host, self.requested_port = host, port
        self.routes: dict[str, Route] = {}
        self._metrics = make_wsgi_app(registry)
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the kernel chose when asked for port 0)."""
        return self._server.server_port if self._server is not None else self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        """Bind and serve; OSError if the address cannot be had."""
        family = socket.getaddrinfo(self.host, self.requested_port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family

        self._server = make_server(
            self.host, self.requested_port, self._app, Server, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="citygate-metrics",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (blocks up to the poll interval: call it off the event loop)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _app(self, environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        route = self.routes.get(path)
        if route is not None:
            status, content_type, body = route(parse_qs(str(environ.get("QUERY_STRING") or "")))
        elif path == "/":
            status, content_type = 200, "text/plain; charset=utf-8"
            body = "".join(f"{p}\n" for p in ["citygate", "/metrics", *sorted(self.routes)]).encode()
        else:
            status, content_type, body = 404, "text/plain; charset=utf-8", b"not found; see /\n"
        start_response(
            _STATUS.get(status, f"{status} Status"),
            [("Content-Type", content_type), ("Content-Length", str(len(body)))],
        )
        return [body]


def listen_override(settings: Sequence[str]) -> str | None:
    """The value of `--set citygate_metrics_listen=HOST:PORT` among `citygate run --set` values."""
    found = None
    for setting in settings:
        name, _, value = setting.partition("=")
        if name.strip() == LISTEN_OPTION:
            found = value.strip()
    return found


def with_listen(settings: MetricsSettings, override: str | None) -> MetricsSettings:
    """`settings` listening where `override` says (ValueError if it is not HOST:PORT)."""
    if not override:
        return settings
    address = parse_listen(override)
    if address is None:
        raise ValueError(f"{LISTEN_OPTION} {override!r} is not HOST:PORT, e.g. 127.0.0.1:9090")
    return replace(settings, host=address[0], port=address[1])


def multiprocess_folder() -> str | None:
    """The shared metrics folder when this process is one of several workers, else None."""
    folder = os.environ.get(MULTIPROC_ENV)
    return folder if folder and worker_index() is not None else None


def use_multiprocess_values() -> None:
    """Make metrics created from now on keep their values in the shared folder.

    prometheus_client picks its value class when it is first imported, from the environment; the
    worker makes the choice again, explicitly, so that it never depends on what imported
    prometheus_client first, or when.
    """
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue()


@contextlib.contextmanager
def shared_metrics(
    settings: MetricsSettings | None, sets: Sequence[str], workers: int
) -> Iterator[Callable[[int], None]]:
    """For the supervisor of `citygate run --workers N`: a per-run folder and the one listener.

    Yields the function to call with the pid of each worker that exits. A listener that cannot
    bind is reported and the service runs without it: refusing to proxy over metrics would cost
    the city more than the missing graphs.
    """
    settings = settings or MetricsSettings()
    try:
        settings = with_listen(settings, listen_override(sets))
    except ValueError as exc:
        _say(f"{exc}; serving no metrics")
        settings = MetricsSettings(enabled=False)
    if not settings.enabled:
        yield lambda pid: None
        return
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    remove_stale_folders()
    folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = folder
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    server: MetricsServer | None = MetricsServer(registry, settings.host, settings.port)
    # Workers publish their readiness every refresh; three missed refreshes make one not ready.
    max_age = 3 * settings.refresh_seconds + 5
    server.routes["/healthz"] = healthz  # type: ignore[union-attr]
    server.routes["/readyz"] = lambda query: readyz(read_states(folder, max_age), query, workers)  # type: ignore[union-attr]
    try:
        server.start()  # type: ignore[union-attr]
        _say(f"metrics of all {workers} workers on {server.url}")  # type: ignore[union-attr]
    except OSError as exc:
        _say(f"cannot serve metrics on {settings.listen}: {exc}; the proxy runs without /metrics")
        server = None
    try:

        def on_worker_exit(pid: int) -> None:
            mark_process_dead(pid, folder)
            forget_state(folder, pid)

        yield on_worker_exit
    finally:
        if server is not None:
            server.stop()
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_folders(parent: Path | None = None, prefix: str = FOLDER_PREFIX) -> list[Path]:
    """Remove the folders of supervisors that no longer run (killed with SIGKILL, which leaves no
    chance to clean up): those in `parent` named `prefix`, then their supervisor's pid, then `-`."""
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = folder.name.removeprefix(prefix).split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _say(message: str) -> None:
    print(f"citygate: {message}", file=sys.stderr, flush=True)
