"""`citygate run --workers N`: N mitmproxy processes sharing one listening port.

mitmproxy runs every connection on one event loop, so one process uses one core. To use every
core, a supervisor process starts N workers, each an ordinary single-process `citygate run`.

How the workers share the port: the supervisor binds one socket per worker, all with
SO_REUSEPORT on the same address, and each worker inherits its own. The kernel then
spreads new connections evenly over the sockets. Binding in the supervisor rather than in each
worker means that a port of 0 is resolved once, a port that is taken is reported once before
anything starts, and a worker that dies leaves its socket open in the supervisor: connections
the kernel already queued on it wait for the replacement instead of being reset. mitmproxy
12.2 has no option for SO_REUSEPORT or for an inherited socket, so each worker replaces
`AsyncioServerInstance.listen` (where mitmproxy calls `asyncio.start_server(host, port)` for
every mode that listens on TCP: regular, upstream and the others) with a version that serves
the inherited socket. Elsewhere than Linux, SO_REUSEPORT does not balance, and all workers
accept from one shared socket instead.

Workers are fresh interpreters (`python -m citygate.proxy.cli.worker`) that inherit their sockets
(pass_fds), not forks: the supervisor may run threads (the shared metrics listener), and a fork
of a threaded process can inherit a lock another thread held. The CA is created once by the
supervisor before the workers start, so they do not race to write it. Each worker has its
index in CITYGATE_WORKER (0..N-1) and the count in CITYGATE_WORKERS, for addons that need a
file of their own (the access log writes one folder per worker).

Lifecycle: SIGHUP is passed on to every worker (each reloads its configuration). SIGTERM or
SIGINT stops every worker (SIGTERM, then SIGKILL after a grace period)
and the supervisor exits 0. Workers die with the supervisor even if it is killed (Linux
PR_SET_PDEATHSIG). A worker that exits before every worker is serving fails the start-up: the
others are stopped and the supervisor exits with its status. A worker that dies later is
reported and replaced; more than RESTART_LIMIT deaths within RESTART_WINDOW seconds stop the
service with status 1, so that a crash loop is handed to systemd or Kubernetes instead of
being hidden.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from citygate.directory.shared import SHARED_DIR_ENV
from citygate.proxy.pki.certfiles import PkiError
from citygate.proxy.runtime.worker_env import WORKER_ENV, WORKERS_ENV, worker_index

if TYPE_CHECKING:
    import asyncio

    from mitmproxy.proxy.mode_servers import AsyncioServerInstance
    from mitmproxy.proxy.mode_specs import ProxyMode
    from mitmproxy_rs.udp import UdpServer
    from mitmproxy_rs.wireguard import WireGuardServer

    # What mitmproxy's AsyncioServerInstance.listen returns.
    _Servers = list[asyncio.Server | UdpServer | WireGuardServer]

# Between the supervisor and a worker it starts: the inherited listening sockets, the pipe on
# which the worker says it is serving, the supervisor's pid and the port.
_FDS_ENV = "CITYGATE_WORKER_LISTEN_FDS"
_READY_ENV = "CITYGATE_WORKER_READY_FD"
_PARENT_ENV = "CITYGATE_WORKER_PARENT"
_PORT_ENV = "CITYGATE_WORKER_PORT"
# The worker's entry point lives with the other commands: this module does not import them.
WORKER_MODULE = "citygate.proxy.cli.worker"
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
STOP_GRACE = 10.0
# asyncio.start_server's default, which mitmproxy uses: the workers queue as much as it would.
BACKLOG = 100
_PR_SET_PDEATHSIG = 1
# The run's private folder (the workers' shared directory answers) is `shared-<pid>-<random>`
# in this user's run folder: the supervisor's pid lets the next start remove the folder of a
# supervisor killed with SIGKILL. `citygate-shared-<pid>-` is where earlier versions put it,
# straight in the temp dir.
RUN_FOLDER = "citygate-run"
SHARED_PREFIX = "shared-"
_OLD_SHARED_PREFIX = "citygate-shared-"


def default_workers() -> int:
    """One worker per core this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def positive_count(text: str) -> int:
    """argparse type for --workers."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers") from None
    if value < 1:
        raise argparse.ArgumentTypeError("--workers must be at least 1")
    return value


# --- sockets ---------------------------------------------------------------------------------


def bind_listeners(
    host: str, port: int, count: int, *, reuse_port: bool
) -> tuple[list[list[socket.socket]], int]:
    """Listening sockets for `count` workers: one set each with SO_REUSEPORT, else one shared set.

    An empty host means every interface, IPv4 and IPv6, as mitmproxy does. Returns the sets and
    the port (the one chosen by the kernel when `port` is 0).
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addresses = list(dict.fromkeys((family, address[:2]) for family, _, _, _, address in infos))
    if reuse_port and port:
        # SO_REUSEPORT would let us share the port with another process of the same user (a
        # second citygate started by mistake) and split the traffic with it: first make sure the
        # port is free, with a plain bind that fails with EADDRINUSE if anything listens there.
        for family, (address, _) in addresses:
            with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind((address, port))
    sets: list[list[socket.socket]] = []
    try:
        for _ in range(count if reuse_port else 1):
            listeners: list[socket.socket] = []
            sets.append(listeners)
            for family, (address, _) in addresses:
                # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on accepted sockets whose
                # proto says TCP; with proto 0, Nagle and delayed ACKs stall each answer ~40 ms.
                sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address, port))
                # Listening now: connections that arrive while a worker starts wait in the queue.
                sock.listen(BACKLOG)
                port = sock.getsockname()[1]
    except BaseException:
        for sock in (sock for listeners in sets for sock in listeners):
            sock.close()
        raise
    if not reuse_port:
        sets = sets * count
    return sets, port


def serve_inherited(listeners: Sequence[socket.socket], port: int, on_listening: Callable[[], None]) -> None:
    """Make this process's mitmproxy serve `listeners` instead of binding `port` itself."""
    from mitmproxy.proxy import mode_servers

    from citygate.proxy.runtime import front_door

    # The base class's, not RegularInstance's: each mode has its own instance class (upstream
    # mode's is UpstreamInstance), and all of them inherit `listen` from it.
    bind = mode_servers.AsyncioServerInstance.listen
    inherited_port = port

    async def listen(self: AsyncioServerInstance[ProxyMode], host: str, port: int) -> _Servers:
        # The inherited sockets are TCP: a UDP mode (dns, wireguard) binds its own port.
        if self.mode.transport_protocol != "tcp" or port != inherited_port:
            return await bind(self, host, port)
        # A duplicate for each server: mitmproxy closes its servers when it stops them, and the
        # inherited socket must stay open should it start them again (an option change).
        servers: _Servers = [
            await front_door.start_server(self, sock=sock.dup(), backlog=BACKLOG) for sock in listeners
        ]
        on_listening()
        return servers

    # Replacing a method of mitmproxy's class is what this is for: mypy rejects any assignment to
    # a method, whatever its type, and the class's mode type variable cannot be named here.
    mode_servers.AsyncioServerInstance.listen = listen  # type: ignore[method-assign, assignment]


# --- supervisor ------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]  # kept: an unreferenced Popen may be reaped behind our back
    started: float
    ready: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class _Supervisor:
    args: argparse.Namespace
    listeners: list[list[socket.socket]]
    port: int
    workers: dict[int, _Worker] = field(default_factory=dict)  # by pid
    deaths: deque[float] = field(default_factory=deque)
    stopping: bool = False
    # Told the pid of each worker that exits (the shared metrics drop its live gauges).
    on_worker_exit: Callable[[int], None] = lambda pid: None

    def __post_init__(self) -> None:
        self.count = len(self.listeners)
        self.ready_read, self.ready_write = os.pipe()
        self.wake_read, self.wake_write = os.pipe()
        for fd in (self.ready_read, self.wake_read, self.wake_write):
            os.set_blocking(fd, False)

    # --- workers -----------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        # A fresh interpreter rather than fork(): the supervisor may run threads (the shared
        # metrics listener), and a process forked from a threaded one can inherit a lock held
        # by another thread (stderr's, logging's) and hang on its first use.
        listeners = self.listeners[index]
        fds = [sock.fileno() for sock in listeners]
        env = {
            **os.environ,
            WORKER_ENV: str(index),
            WORKERS_ENV: str(self.count),
            _FDS_ENV: ",".join(map(str, fds)),
            _READY_ENV: str(self.ready_write),
            _PARENT_ENV: str(os.getpid()),
            _PORT_ENV: str(self.port),
        }
        arguments = {key: value for key, value in vars(self.args).items() if key != "handler"}
        arguments |= {"workers": 1, "listen_port": self.port}
        # The worker starts with SIGHUP blocked (a signal mask survives exec), so that a reload
        # sent while it is still importing cannot kill it: `become_worker` ignores the signal
        # before unblocking it, and the configuration watcher takes it over once the proxy runs.
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process = subprocess.Popen(  # noqa: S603 -- this interpreter, our own module and arguments
                [sys.executable, "-m", WORKER_MODULE, json.dumps(arguments)],
                pass_fds=(*fds, self.ready_write),
                env=env,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        self.workers[process.pid] = _Worker(index, process, time.monotonic())

    def stop_all(self) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.workers and time.monotonic() < deadline:
            self.reap(block_for=0.1)
        for worker in list(self.workers.values()):
            _say(f"worker {worker.index} (pid {worker.pid}) did not stop within {STOP_GRACE:g} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        while self.workers:
            self.reap(block_for=0.1)

    def reap(self, block_for: float = 0.0) -> list[tuple[_Worker, int]]:
        """Collect workers that exited: (worker, exit status; negative: killed by that signal)."""
        if block_for:
            with contextlib.suppress(InterruptedError):
                select.select([self.wake_read], [], [], block_for)
            self._drain(self.wake_read)
        gone = []
        for pid, worker in list(self.workers.items()):
            status = worker.process.poll()
            if status is not None:
                del self.workers[pid]
                self.on_worker_exit(pid)
                gone.append((worker, status))
        return gone

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        def stop(signum: int, frame: object) -> None:
            self.stopping = True

        def reload(signum: int, frame: object) -> None:
            # `systemctl reload` signals the supervisor; each worker reloads its own policy.
            for pid in list(self.workers):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)

        previous = {
            signum: signal.signal(signum, handler)
            for signum, handler in (
                (signal.SIGTERM, stop),
                (signal.SIGINT, stop),
                (signal.SIGHUP, reload),
                (signal.SIGCHLD, lambda signum, frame: None),  # only to wake the loop up
            )
        }
        previous_wakeup = signal.set_wakeup_fd(self.wake_write)
        try:
            return self._loop()
        finally:
            self.stop_all()
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for fd in (self.ready_read, self.ready_write, self.wake_read, self.wake_write):
                os.close(fd)

    def _loop(self) -> int:
        for index in range(self.count):
            self.spawn(index)
        announced = False
        while not self.stopping:
            with contextlib.suppress(InterruptedError):
                select.select([self.wake_read, self.ready_read], [], [], 1.0)
            self._drain(self.wake_read)
            for line in self._drain(self.ready_read).split():
                for worker in self.workers.values():
                    if worker.index == int(line):
                        worker.ready = True
            if (
                not announced
                and len(self.workers) == self.count
                and all(w.ready for w in self.workers.values())
            ):
                announced = True
                pids = ", ".join(str(w.pid) for w in sorted(self.workers.values(), key=lambda w: w.index))
                _say(f"{self.count} workers serving on port {self.port} (pids {pids})")
            for worker, status in self.reap():
                if self.stopping:
                    continue
                if not announced:
                    _say(f"worker {worker.index} exited with status {status} while starting; stopping")
                    return status if status > 0 else 1
                now = time.monotonic()
                self.deaths.append(now)
                while self.deaths and now - self.deaths[0] > RESTART_WINDOW:
                    self.deaths.popleft()
                if len(self.deaths) > RESTART_LIMIT:
                    _say(
                        f"worker {worker.index} exited with status {status}; {len(self.deaths)} workers died "
                        f"within {RESTART_WINDOW:g} s, stopping the service"
                    )
                    return 1
                _say(
                    f"worker {worker.index} (pid {worker.pid}) exited with status {status} after "
                    f"{now - worker.started:.0f} s; starting a new one"
                )
                self.spawn(worker.index)
        return 0

    @staticmethod
    def _drain(fd: int) -> bytes:
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 4096):
                data += chunk
        return data


def _say(message: str) -> None:
    print(f"citygate: {message}", file=sys.stderr, flush=True)


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM to this worker when the supervisor dies (Linux)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def run_folder() -> Path:
    """This user's folder for what a run keeps while it lasts: private (0700), made if missing.

    It is `citygate-run-<uid>` in the first of $XDG_RUNTIME_DIR and /run/citygate (systemd's
    RuntimeDirectory=citygate) that this user may write in, both emptied at every boot, else in
    the temp dir. A folder of that name that is not this user's private folder (another user of
    a shared /tmp made it first, or a link) is refused rather than used.
    """
    bases = [os.environ.get("XDG_RUNTIME_DIR"), "/run/citygate"]
    writable = (base for base in bases if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK))
    folder = Path(next(writable, tempfile.gettempdir())) / f"{RUN_FOLDER}-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    found = folder.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or stat.S_IMODE(found.st_mode) & 0o077:
        raise PermissionError(f"{folder} is not a folder only this user can use")
    return folder


def _shared_folder() -> str:
    """A new private folder for this run's shared files, after removing those of dead supervisors."""
    from citygate.proxy.runtime.metrics_http import remove_stale_folders

    parent = run_folder()
    remove_stale_folders(parent, SHARED_PREFIX)
    remove_stale_folders(Path(tempfile.gettempdir()), _OLD_SHARED_PREFIX)
    return tempfile.mkdtemp(prefix=f"{SHARED_PREFIX}{os.getpid()}-", dir=parent)


def _ca_passphrase(confdir: Path, settings: Sequence[str]) -> bytes | None:
    """The CA key's passphrase from `--set citygate_ca_passphrase_file=FILE` (None: not given),
    checked against the key in `confdir` as each worker's addons/ca.py checks it."""
    from citygate.proxy.pki.certfiles import KeyLocked, load_key, read_bytes, read_passphrase
    from citygate.proxy.pki.confdir import CA_FILE, PASSPHRASE_OPTION

    given = [
        value for name, _, value in (s.partition("=") for s in settings) if name.strip() == PASSPHRASE_OPTION
    ]
    passphrase = (
        read_passphrase(Path(given[-1].strip()).expanduser()) if given and given[-1].strip() else None
    )
    ca_file = confdir / CA_FILE
    if ca_file.exists():
        try:
            load_key(read_bytes(ca_file, "the CA file"), str(ca_file), passphrase)
        except KeyLocked:
            raise PkiError(
                f"the CA key in {ca_file} is encrypted: give the file holding its passphrase with "
                f"--set {PASSPHRASE_OPTION}=FILE"
            ) from None
        except PkiError:
            if passphrase is not None:
                raise  # the passphrase does not open the key
            # Anything else about a CA mitmproxy made or was given is mitmproxy's to report.
    return passphrase


def _key_size(settings: Sequence[str]) -> int:
    from mitmproxy.options import KEY_SIZE

    for setting in settings:
        name, _, value = setting.partition("=")
        if name.strip() == "key_size" and value.strip().isdigit():
            return int(value)
    return KEY_SIZE


def supervise(args: argparse.Namespace) -> int:
    """Run `args.workers` single-process `citygate run`s on one port, and watch over them."""
    from mitmproxy import certs
    from mitmproxy.options import CONF_BASENAME

    from citygate.directory.problems import ConfigError
    from citygate.proxy.policy import load_policy
    from citygate.proxy.runtime.metrics_http import shared_metrics

    # Checked once here, so that a broken config is reported once rather than by every worker.
    try:
        policy = load_policy(Path(args.config))
    except ConfigError as exc:
        print(f"citygate: citygate config is invalid:\n{exc}", file=sys.stderr)
        return 2
    confdir = Path(args.confdir).expanduser()
    try:
        passphrase = _ca_passphrase(confdir, args.set)
    except PkiError as exc:
        print(f"citygate: {exc}", file=sys.stderr)
        return 2
    certs.CertStore.from_store(confdir, CONF_BASENAME, _key_size(args.set), passphrase)
    # A private folder (0700) for what the workers share: their directory answers.
    try:
        shared = _shared_folder()
    except OSError as exc:
        print(f"citygate: cannot make the run's private folder: {exc}", file=sys.stderr)
        return 2
    reuse_port = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
    try:
        listeners, port = bind_listeners(
            args.listen_host, args.listen_port, args.workers, reuse_port=reuse_port
        )
    except OSError as exc:
        shutil.rmtree(shared, ignore_errors=True)
        print(
            f"citygate: cannot listen on {args.listen_host or '*'}:{args.listen_port}: {exc}", file=sys.stderr
        )
        return 2
    os.environ[SHARED_DIR_ENV] = shared
    try:
        # One metrics listener for the whole service, merging every worker's metrics.
        with shared_metrics(policy.features.metrics, args.set, args.workers) as on_worker_exit:
            return _Supervisor(args, listeners, port, on_worker_exit=on_worker_exit).run()
    finally:
        for sock in {id(s): s for group in listeners for s in group}.values():
            sock.close()
        os.environ.pop(SHARED_DIR_ENV, None)
        shutil.rmtree(shared, ignore_errors=True)


def become_worker(argv: Sequence[str]) -> argparse.Namespace:
    """In a worker the supervisor started: serve the inherited sockets; the `citygate run` arguments."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    _die_with(int(os.environ.pop(_PARENT_ENV)))
    listeners = [socket.socket(fileno=int(fd)) for fd in os.environ.pop(_FDS_ENV).split(",")]
    ready = int(os.environ.pop(_READY_ENV))
    port = int(os.environ.pop(_PORT_ENV))
    index = worker_index()

    def listening() -> None:
        nonlocal ready
        if ready >= 0:  # once: mitmproxy starts its servers again after some option changes
            os.write(ready, f"{index}\n".encode())
            os.close(ready)
            ready = -1

    serve_inherited(listeners, port, listening)
    return argparse.Namespace(**json.loads(argv[0]))
