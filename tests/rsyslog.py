"""A private rsyslogd for tests: a real syslog collector on a free 127.0.0.1 port.

Real rsyslog (Debian's `rsyslog` and `rsyslog-gnutls`; `tools/system-deps` installs them), run in
the foreground from its own configuration (`rsyslogd -n -f <conf> -i <pidfile>`), never the
system's: its own work directory, an `imtcp` input on 127.0.0.1 that takes octet-counted frames
(RFC 6587; rsyslog tells them from newline framing by themselves), plain TCP or TLS through the
GnuTLS netstream driver (RFC 5425). What it receives on that input goes to `received.log`, one
line per message: PRI, host name, APP-NAME, the structured data and the MSG, as a SIEM's syslog
file keeps them (`citygate audit verify` reads such a file: each line ends with the record).
`Wiretap` sits between a sender and a collector and keeps every byte the sender sent.

TLS: a throw-away CA (`write_collector_pki`) signs the collector's certificate (localhost and
127.0.0.1) and a client certificate for the proxy. `auth_mode="anon"` accepts any client;
`"x509/name"` asks for a client certificate from that CA naming `permitted_peer`.

Typical use::

    collector = Rsyslog(tmp_path / "rsyslog", pki=write_collector_pki(tmp_path / "pki")).start()
    ...  # audit.syslog.address: tls://localhost:{collector.port}
    collector.stop(); collector.start()  # the same port again
    collector.messages()
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RSYSLOGD = "/usr/sbin/rsyslogd"
CLIENT_NAME = "citygate-proxy.test"  # the name in the proxy's client certificate


class RsyslogError(RuntimeError):
    pass


def missing_tools() -> list[str]:
    """What the collector needs and this machine lacks (Debian package names)."""
    missing = [] if Path(RSYSLOGD).exists() else ["rsyslog"]
    if not list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")):
        missing.append("rsyslog-gnutls")
    return missing


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- a throw-away PKI --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_collector_pki(folder: Path, ca_name: str = "citygate test SIEM CA") -> Pki:
    """A CA, a collector certificate for localhost and 127.0.0.1, and a client certificate for
    CLIENT_NAME, all PEM, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (
        _builder(issuer, issuer, ca_key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, usage: x509.ObjectIdentifier, *san: x509.GeneralName) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, issuer, key, now)
            .add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    server = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    )
    client = leaf(CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, x509.DNSName(CLIENT_NAME))
    pki = Pki(*(folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for (cert, key), cert_path, key_path in (
        (server, pki.server_cert, pki.server_key),
        (client, pki.client_cert, pki.client_key),
    ):
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        key_path.chmod(0o600)
    return pki


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


# --- the collector ------------------------------------------------------------------------------


class Rsyslog:
    """One private rsyslogd; `start()` again after `stop()` listens on the same port."""

    def __init__(
        self,
        folder: Path,
        *,
        pki: Pki | None = None,
        auth_mode: str = "anon",
        permitted_peer: str = CLIENT_NAME,
    ) -> None:
        self.folder = folder
        self.pki = pki  # None: plain TCP
        self.auth_mode = auth_mode
        self.permitted_peer = permitted_peer
        self.port = 0
        self._listened = False  # once it has, the port is part of the test's configuration
        self.process: subprocess.Popen[bytes] | None = None
        self.received = folder / "received.log"
        self.log_path = folder / "rsyslogd.log"
        self.config = folder / "rsyslog.conf"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "work").mkdir(exist_ok=True)

    def _write_config(self) -> None:
        lines = [
            # Records are about 1 KiB; rsyslog's default limit is 8 KiB.
            f'global(workDirectory="{self.folder / "work"}" maxMessageSize="64k"',
        ]
        if self.pki is not None:
            lines += [
                f'       DefaultNetstreamDriverCAFile="{self.pki.ca}"',
                f'       DefaultNetstreamDriverCertFile="{self.pki.server_cert}"',
                f'       DefaultNetstreamDriverKeyFile="{self.pki.server_key}"',
            ]
        lines[-1] += ")"
        if self.pki is None:
            lines.append('module(load="imtcp")')
        else:
            peer = f' PermittedPeer=["{self.permitted_peer}"]' if self.auth_mode == "x509/name" else ""
            lines.append(
                f'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                f'StreamDriver.AuthMode="{self.auth_mode}"{peer})'
            )
        lines += [
            'template(name="siem" type="string" string="%PRI% %HOSTNAME% %APP-NAME% %STRUCTURED-DATA% %msg%\\n")',
            'ruleset(name="siem") {',
            f'  action(type="omfile" file="{self.received}" template="siem")',
            "}",
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="siem")',
        ]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 10.0) -> Rsyslog:
        if self.process is not None:
            raise RsyslogError("rsyslogd is already running")
        for _attempt in range(5):
            if not self.port:
                self.port = free_port()
            self._write_config()
            if self._launch(timeout):
                self._listened = True
                return self
            if self._listened:  # senders were given this port: do not move it
                raise RsyslogError(f"rsyslogd could not listen again on port {self.port}:\n{self.log_tail()}")
            self.port = 0
        raise RsyslogError(f"rsyslogd did not start:\n{self.log_tail()}")

    def _launch(self, timeout: float) -> bool:
        pidfile = self.folder / "rsyslogd.pid"
        pidfile.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(pidfile)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            if self._listening():
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def _listening(self) -> bool:
        """Whether the port is taken, seen in the kernel's table: a test connection would be a
        session rsyslog logs (and, with TLS, a failed handshake)."""
        wanted = f"0100007F:{self.port:04X}"
        with open("/proc/net/tcp", encoding="ascii") as table:
            return any(
                fields[1] == wanted and fields[3] == "0A"  # LISTEN
                for fields in (line.split() for line in table)
                if len(fields) > 3
            )

    def stop(self) -> None:
        """SIGTERM, as `systemctl stop rsyslog` does: rsyslog reads what it was sent, then closes."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def messages(self) -> list[bytes]:
        """What the collector received, one line per message (PRI HOSTNAME APP-NAME SD MSG)."""
        return self.received.read_bytes().splitlines() if self.received.exists() else []

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Wiretap:
    """A TCP relay on 127.0.0.1 in front of `upstream_port` that keeps what senders sent through it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sent = bytearray()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="wiretap", daemon=True).start()

    @property
    def sent(self) -> bytes:
        """Every byte senders sent, all connections one after another."""
        with self._lock:
            return bytes(self._sent)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, keep: bool) -> None:
        try:
            while data := source.recv(65536):
                if keep:
                    with self._lock:
                        self._sent += data
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
