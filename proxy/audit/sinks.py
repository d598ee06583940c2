"""Copies of the access log for a SIEM: JSON lines on stdout (containers), and syslog (RFC 5424).

The file is the record of truth: a copy never makes the proxy refuse anything. Sinks are called
from the writer's thread only, so a full pipe or a slow socket never stalls the proxy's event
loop. The copies here are best effort: a datagram that cannot be sent is counted, never retried,
and the socket is non-blocking. Syslog over TCP or TLS, which delivers every record, is
`forwarder.SiemForwarder`.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Protocol

from citygate.proxy.audit.config import SyslogSettings, syslog_target

SEVERITY_NOTICE = 5  # a denial
SEVERITY_INFO = 6  # everything else


class Sink(Protocol):
    def send(self, line: bytes, severity: int) -> None: ...
    def close(self) -> None: ...


class StdoutSink:
    """One JSON line per record on file descriptor 1 (the proxy's own log goes to stderr)."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd

    def send(self, line: bytes, severity: int) -> None:
        view = memoryview(line)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        pass


def rfc5424(
    message: bytes,
    *,
    facility: int,
    severity: int,
    app_name: str,
    hostname: str,
    procid: int,
    msgid: str = "audit",
    structured: str = "-",
    at: datetime | None = None,
) -> bytes:
    """`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG` (RFC 5424); SD "-" is none.

    MSG is the record's JSON line, which is ASCII, so it needs no BOM (RFC 5424 section 6.4).
    """
    stamp = (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    host = "".join(char for char in hostname if 33 <= ord(char) <= 126)[:255] or "-"
    header = f"<{facility * 8 + severity}>1 {stamp} {host} {app_name} {procid} {msgid} {structured} "
    return header.encode() + message.rstrip(b"\n")  # UTF-8: a PARAM-VALUE may hold any name


class SyslogSink:
    """RFC 5424 datagrams to a UDP address or a unix datagram socket (e.g. /dev/log)."""

    def __init__(self, settings: SyslogSettings) -> None:
        target = syslog_target(settings.address)
        if target is None or target[0] not in ("udp", "unix"):
            raise ValueError(f"not a syslog datagram address: {settings.address}")
        _, address = target
        self.settings = settings
        self.hostname = socket.gethostname()
        self.procid = os.getpid()
        if isinstance(address, tuple):  # ("udp", (host, port)); else ("unix", path)
            host, port = address
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
            self.address: str | tuple[object, ...] = info[4]
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.address = address
        self.sock.setblocking(False)

    def send(self, line: bytes, severity: int) -> None:
        datagram = rfc5424(
            line,
            facility=self.settings.facility_code,
            severity=severity,
            app_name=self.settings.app_name,
            hostname=self.hostname,
            procid=self.procid,
        )
        self.sock.sendto(datagram, self.address)

    def close(self) -> None:
        self.sock.close()
