"""Real processes for the benchmarks: nginx, Squid, HAProxy, bare mitmdump and `citygate run`.

Everything listens on 127.0.0.1 and lives in one temporary folder; nothing resolves a name
(the proxies load bench/upstream_redirect.py, Squid reads its own hosts file). Each server is
a context manager that starts the process, waits for its port, and stops it (and only it) on
exit. Proxy processes can report their CPU time and memory, summed over their workers.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from cpulimit import CpuLimit

# nginx, squid and haproxy live in /usr/sbin, which is not on every user's PATH.
os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
BIN = Path(sys.executable).parent  # the venv: citygate and mitmdump of the same installation
LOCALHOST = "127.0.0.1"
#: What nginx answers for every path: 2 KiB, as in the baseline measurements.
PAGE = (b"citygate-bench-upstream\n" + b"x" * 2048)[:2048]
PAGE_MARKER = "citygate-bench-upstream"
#: What nginx answers for any path ending in /big: larger than STREAM_LARGE_BODIES, so streamed.
BIG_BODY = 4 * 2**20
#: What nginx answers for any path ending in /mib: 1 MiB starting with the page's marker line
#: (ASCII, so that the answer checks can read it as text), for the throughput of large bodies.
MIB_BODY = (PAGE_MARKER.encode() + b"\n" + b"x" * 2**20)[: 2**20]
#: Names the upstream certificate covers (the proxies' upstream verification is off anyway).
UPSTREAM_NAMES = ("www.example.org", "example.org", "www.facebook.com", "facebook.com", "localhost")
#: Every name a benchmark client uses; Squid resolves them through its own hosts file.
BENCH_HOSTS = ("www.example.org", "www.facebook.com")
#: Bare mitmdump decrypts only what citygate decrypts in these benchmarks (the Facebook tunnel of
#: scenario e); every other tunnel passes through, as citygate passes ordinary HTTPS through.
MITMDUMP_ALLOW_HOSTS = r"(^|\.)facebook\.com(:\d+)?$"
#: Bodies larger than this are streamed, not buffered (citygate run's default, given to both).
STREAM_LARGE_BODIES = "1m"


def citygate_has_workers() -> bool:
    """Whether this citygate has `run --workers` (before it, every run is one process)."""
    result = subprocess.run(
        [str(BIN / "citygate"), "run", "--help"], capture_output=True, text=True, check=False
    )
    return "--workers" in result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {LOCALHOST}:{port} within {timeout:g} s")


def self_signed(folder: Path, names: Sequence[str]) -> tuple[Path, Path]:
    """A self-signed EC certificate for `names` and 127.0.0.1: (cert, key) PEM paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "citygate bench upstream")])
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    sans.append(x509.IPAddress(ipaddress.ip_address(LOCALHOST)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "upstream-cert.pem", folder / "upstream-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


# --- /proc ------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (citygate's workers), from /proc."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    queue.extend(int(child) for child in children.read().split())
    return pids


def cpu_times(pids: Sequence[int]) -> tuple[float, float]:
    """User and system CPU time of the processes, in seconds."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
    return user / _TICKS, system / _TICKS


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of the processes, in seconds."""
    return sum(cpu_times(pids))


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, every process and the kernel)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICKS


def own_seconds(servers: Sequence[Server]) -> float:
    """CPU time of this process, the children it has waited for (wrk, curl, socat and socat's
    own children) and the servers still running (with their workers)."""
    times = os.times()
    running = [pid for server in servers if server.process is not None for pid in server.pids]
    return times.user + times.system + times.children_user + times.children_system + cpu_seconds(running)


def rss_bytes(pids: Sequence[int], field: str = "VmRSS") -> int:
    """Resident memory of the processes, summed (VmRSS now, or VmHWM: the peak so far)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) * 1024
    return total


# --- servers ----------------------------------------------------------------------------------


class Server:
    """A child process we started, stopped on exit with SIGTERM (then SIGKILL), by its pid only."""

    name = "server"
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    # Set to hold the server's process tree to a number of cores (bench/cpulimit.py).
    cpu_limit: CpuLimit | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def spawn(self, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        if self.cpu_limit is not None:
            self.cpu_limit.create()
            command = self.cpu_limit.wrap(command)
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                list(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else {**os.environ, **env},
            )
        self.log = log

    def stop(self, timeout: float = 10.0) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.cpu_limit is not None:
            self.cpu_limit.remove()
        return process.returncode

    @property
    def pids(self) -> list[int]:
        assert self.process is not None
        return process_tree(self.process.pid)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Nginx(Server):
    """The upstream: every path answers the same 2 KiB page over HTTP and HTTPS (keep-alive)."""

    name = "nginx"

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "nginx"
        self.port = free_port()
        self.tls_port = free_port()

    def start(self) -> None:
        folder = self.folder
        (folder / "html").mkdir(parents=True)
        (folder / "html" / "page.html").write_bytes(PAGE)
        (folder / "html" / "big.bin").write_bytes(os.urandom(BIG_BODY))
        (folder / "html" / "mib.bin").write_bytes(MIB_BODY)
        cert, key = self_signed(folder, UPSTREAM_NAMES)
        self.cert = cert
        # nginx's worker drops to an unprivileged user when started as root: let it read the page.
        for path in (folder.parent, folder, folder / "html"):
            path.chmod(0o755)
        for path in (folder / "html").iterdir():
            path.chmod(0o644)
        config = folder / "nginx.conf"
        config.write_text(
            f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    default_type text/html;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    ssl_session_cache shared:SSL:10m;
    server {{
        listen {LOCALHOST}:{self.port};
        listen {LOCALHOST}:{self.tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {folder}/html;
        location ~ /big$ {{ try_files /big.bin =404; }}
        location ~ /mib$ {{ try_files /mib.bin =404; }}
        location / {{ try_files /page.html =404; }}
    }}
}}
"""
        )
        self.spawn(["nginx", "-p", str(folder), "-c", str(config), "-g", "daemon off;"], folder / "out.log")
        wait_for_port(self.port, self.process, 10, "nginx")
        wait_for_port(self.tls_port, self.process, 10, "nginx")

    def stop(self, timeout: float = 10.0) -> int | None:
        # SIGQUIT: nginx's graceful stop; its master waits for the worker.
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
        return super().stop(timeout)


def catalog_entries(config: Path) -> tuple[list[str], list[str]]:
    """Every domain and network of the catalog the config points to: Squid's deny list."""
    from citygate.proxy.policy import load_policy

    catalog = load_policy(config).catalog
    domains = sorted(d for site in catalog.sites.values() for d in site.domains + site.asset_domains)
    networks = sorted({str(n) for site in catalog.sites.values() for n in site.networks})
    return domains, networks


class Squid(Server):
    """The reference: Squid with a dstdomain (and dst) deny list built from the citygate catalog."""

    name = "squid"

    def __init__(self, folder: Path, config: Path) -> None:
        self.folder = folder / "squid"
        self.config = config
        self.port = free_port()

    def start(self) -> None:
        folder = self.folder
        folder.mkdir(parents=True)
        folder.chmod(0o777)  # Squid drops to the "proxy" user when started as root
        domains, networks = catalog_entries(self.config)
        # Squid's own hosts file: it resolves the benchmark's names without DNS (no /etc/hosts edit).
        hosts = folder / "hosts"
        hosts.write_text("".join(f"{LOCALHOST} {name}\n" for name in BENCH_HOSTS))
        deny = folder / "social-domains.txt"
        deny.write_text("".join(f".{domain}\n" for domain in domains))
        deny_networks = folder / "social-networks.txt"
        deny_networks.write_text("".join(f"{network}\n" for network in networks))
        for path in (hosts, deny, deny_networks):
            path.chmod(0o644)
        config = folder / "squid.conf"
        config.write_text(
            f"""
http_port {LOCALHOST}:{self.port}
pid_filename {folder}/squid.pid
cache_log {folder}/cache.log
access_log none
cache_store_log none
cache deny all
cache_mem 8 MB
coredump_dir {folder}
netdb_filename none
hosts_file {hosts}
dns_nameservers 127.0.0.1
pinger_enable off
shutdown_lifetime 0 seconds
max_filedescriptors 65536
acl social dstdomain "{deny}"
acl social_networks dst "{deny_networks}"
http_access deny social
http_access deny social_networks
http_access allow localhost
http_access deny all
"""
        )
        self.spawn(["squid", "-N", "-f", str(config)], folder / "out.log")
        wait_for_port(self.port, self.process, 20, "squid")


class HAProxy(Server):
    """TCP load balancer in front of several proxies (round robin), with a stats socket."""

    name = "haproxy"

    def __init__(self, folder: Path, backends: Sequence[int]) -> None:
        self.folder = folder / "haproxy"
        self.backends = list(backends)
        self.port = free_port()

    def start(self) -> None:
        folder = self.folder
        folder.mkdir(parents=True)
        servers = "\n".join(
            f"    server citygate{n} {LOCALHOST}:{port} check inter 1s"
            for n, port in enumerate(self.backends, 1)
        )
        config = folder / "haproxy.cfg"
        config.write_text(
            f"""
global
    maxconn 4000
    stats socket {folder}/stats.sock mode 600 level admin
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend proxies
    bind {LOCALHOST}:{self.port}
    default_backend citygate
backend citygate
    balance roundrobin
{servers}
"""
        )
        self.spawn(["haproxy", "-db", "-f", str(config)], folder / "out.log")
        wait_for_port(self.port, self.process, 10, "haproxy")

    def sessions(self) -> dict[str, int]:
        """Connections each backend server has taken so far (HAProxy's `stot`)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.folder / "stats.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        counts = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "citygate" and row.get("svname", "").startswith("citygate"):
                counts[row["svname"]] = int(row["stot"])
        return counts


class MitmProxy(Server):
    """Bare `mitmdump` or `citygate run`, with the same options and the bench redirect script."""

    def __init__(
        self,
        folder: Path,
        kind: str,
        *,
        config: Path = REPO / "config" / "citygate.yaml",
        workers: int = 1,
        name: str | None = None,
        confdir: Path | None = None,
        extra: Sequence[str] = (),
        event_loop: str | None = None,
        bin_folder: Path = BIN,
    ) -> None:
        assert kind in ("mitmdump", "citygate")
        self.kind = kind
        # Where `citygate` and `mitmdump` are: this venv's, or another checkout's (bench/interleaved.py).
        self.bin_folder = bin_folder
        self.workers = workers
        self.name = name or (kind if workers == 1 else f"{kind} x{workers}")
        self.folder = folder / self.name.replace(" ", "-")
        self.config = config
        # One CA for every proxy of a run: mitmproxy creates it on first start.
        self.confdir = confdir or folder / "mitmproxy-ca"
        self.port = free_port()
        self.metrics_port = free_port()
        self.extra = list(extra)
        # citygate's --event-loop; None: what `citygate run` chooses ($CITYGATE_EVENT_LOOP, else its default).
        self.event_loop = event_loop

    def command(self) -> list[str]:
        options = {
            "connection_strategy": "lazy",
            "stream_large_bodies": STREAM_LARGE_BODIES,
            "ssl_insecure": "true",  # the upstream's certificate is self-signed
            "scripts": str(BENCH / "upstream_redirect.py"),
        }
        if self.kind == "mitmdump":
            # flow_detail=0: mitmdump's dumper prints nothing, like `citygate run` (no dumper).
            options |= {"allow_hosts": MITMDUMP_ALLOW_HOSTS, "flow_detail": "0"}
            command = [
                str(self.bin_folder / "mitmdump"),
                "--listen-host",
                LOCALHOST,
                "--listen-port",
                str(self.port),
            ]
            command += ["--set", f"confdir={self.confdir}"]
        else:
            command = [str(self.bin_folder / "citygate"), "run", "--config", str(self.config)]
            command += ["--listen-host", LOCALHOST, "--listen-port", str(self.port)]
            command += ["--confdir", str(self.confdir)]
            if citygate_has_workers():
                command += ["--workers", str(self.workers)]
            if self.event_loop:
                command += ["--event-loop", self.event_loop]
            if importlib.util.find_spec("citygate.proxy.runtime.metrics_http") is not None:
                # Each instance serves its metrics on a port of its own, as on its own host.
                options["citygate_metrics_listen"] = f"{LOCALHOST}:{self.metrics_port}"
        for key, value in options.items():
            command += ["--set", f"{key}={value}"]
        return command + self.extra

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "citygate" and self.config.is_relative_to(REPO):
            self.config = copy_config(self.config, self.folder)
        self.spawn(self.command(), self.folder / "out.log")
        try:
            wait_for_port(self.port, self.process, 60, self.name)
            if self.workers > 1:
                # The supervisor listens at once; wait until every worker is serving.
                self._wait_for_log("workers serving on port", 60)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from None

    def _wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if time.monotonic() > deadline or (self.process is not None and self.process.poll() is not None):
                raise RuntimeError(f"{self.name}: no {text!r} in its log")
            time.sleep(0.1)


def copy_config(config: Path, folder: Path) -> Path:
    """A copy of a config from this repository (and the directory files it points to) in `folder`.

    Each proxy instance gets its own copy, so that what the config writes next to itself (the
    audit log) stays in the benchmark's folder and no two instances share it.
    """
    target = folder / "repo"
    for part in ("config", "directory"):
        shutil.copytree(REPO / part, target / part, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target / config.relative_to(REPO)


class Relay(Server):
    """socat: each connection accepted here becomes a CONNECT tunnel through a proxy.

    wrk cannot send CONNECT, so wrk talks TLS to this relay and socat opens the tunnel and
    copies bytes in C. With keep-alive clients socat forks once per client connection, so the
    tunnels are reused for every request (scenarios b and e).
    """

    name = "socat"

    def __init__(self, proxy_port: int, host: str, port: int, auth: str | None = None) -> None:
        self.proxy_port = proxy_port
        self.target = f"{host}:{port}"
        self.auth = auth
        self.port = free_port()

    def start(self) -> None:
        target = f"PROXY:{LOCALHOST}:{self.target},proxyport={self.proxy_port}"
        if self.auth:
            target += f",proxyauth={self.auth}"
        listen = f"TCP-LISTEN:{self.port},bind={LOCALHOST},fork,reuseaddr,backlog=1024"
        self.process = subprocess.Popen(
            ["socat", listen, target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.process, 10, "socat")


@contextlib.contextmanager
def all_running(servers: Sequence[Server]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        yield


def require(*commands: str) -> None:
    missing = [command for command in commands if shutil.which(command) is None]
    if missing:
        raise SystemExit(
            f"missing: {', '.join(missing)}; `make bench` installs them (tools/bench-deps), "
            f"or apt-get install {' '.join(missing)}"
        )
