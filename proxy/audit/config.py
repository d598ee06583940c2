"""The `audit:` section of the configuration: where the access log goes and how it is kept.

Parsing only: every setting is checked here, so `citygate check` reports a mistake with its
file, line and fix, and the writer (`writer.py`) receives settings it can trust.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from citygate.directory.problems import Problems
from citygate.proxy.yamlfile import Node

DEFAULT_DIRECTORY = Path("/var/log/citygate")

# RFC 5424 facility codes, by the names syslog.conf uses.
FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}


class Fsync(StrEnum):
    FLUSH = "flush"  # after every flush: a power cut loses at most one flush interval
    ROTATE = "rotate"  # only when a file is closed; the OS decides in between
    NEVER = "never"  # leave it to the OS entirely


DEFAULT_SPOOL_MAX_BYTES = 1 << 30  # 1 GiB: days of a city's records while a collector is away
SPOOL_FOLDER = "syslog-spool"  # the default spool, inside the (worker's) audit directory


@dataclass(frozen=True, slots=True)
class SyslogSettings:
    # "udp://host:port" or a unix datagram socket's path ("/dev/log"): best effort, one datagram
    # per record. "tcp://host:port" or "tls://host:port": every record delivered (proxy/audit/forwarder.py).
    address: str
    facility: str = "local0"
    app_name: str = "citygate"
    # tls:// only: the CA that signed the collector's certificate; this proxy's certificate and
    # key, for a collector that asks for one; the name the collector's certificate must carry
    # (None: the address's host).
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    # tcp:// and tls:// only: where records wait while the collector is away (None: SPOOL_FOLDER
    # inside the audit directory), and the most disk they may take there.
    spool_directory: Path | None = None
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES

    @property
    def facility_code(self) -> int:
        return FACILITIES[self.facility]

    @property
    def transport(self) -> str:
        """The address's kind: "udp", "unix", "tcp" or "tls"."""
        target = syslog_target(self.address)
        assert target is not None, "parsed settings hold a valid address"
        return target[0]


@dataclass(frozen=True, slots=True)
class AuditSettings:
    directory: Path = DEFAULT_DIRECTORY
    rotate_bytes: int = 100 * 1024 * 1024
    rotate_daily: bool = True
    compress: bool = True
    retention_days: int | None = None  # None: rotated files are kept until someone removes them
    flush_interval_ms: int = 200
    max_buffered_records: int = 1000
    fsync: Fsync = Fsync.FLUSH
    include_query: bool = False
    log_ordinary_connections: bool = False
    stdout: bool = False
    syslog: SyslogSettings | None = None
    fail_closed: bool = True
    anchor_interval_s: int = 60
    # The host named in every record and anchor (None: the machine's name). Set it where the
    # machine's name changes under the same log (a container, a pod): the chain keeps its name.
    host_name: str | None = None


_INTS: dict[str, tuple[int, int, str]] = {  # key: (minimum, maximum, example)
    "rotate_bytes": (1024, 1 << 40, "rotate_bytes: 104857600   # 100 MiB"),
    "flush_interval_ms": (1, 60_000, "flush_interval_ms: 200"),
    "max_buffered_records": (1, 1_000_000, "max_buffered_records: 1000"),
    "anchor_interval_s": (1, 86_400, "anchor_interval_s: 60"),
}
_BOOLS = (
    "rotate_daily",
    "compress",
    "include_query",
    "log_ordinary_connections",
    "stdout",
    "fail_closed",
)
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "server_name")
_SPOOL_KEYS = ("spool_directory", "spool_max_bytes")
_SYSLOG_KEYS = ("address", "facility", "app_name", *_TLS_KEYS, *_SPOOL_KEYS)
# A spool smaller than this would hold only a few records: a typo more likely than a choice.
_SPOOL_MIN_BYTES = 64 * 1024
_SERVER_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")  # a DNS name (or an IPv4 address)


def parse_audit_section(config_path: Path, node: Node | None, line: int, problems: Problems) -> AuditSettings:
    """The audit settings in `node` (defaults when there is no `audit:` section)."""
    if node is None:
        return AuditSettings()
    for key in sorted(set(node) - set(KNOWN_KEYS)):
        problems.error(
            config_path,
            node.line_of(key),
            f'unknown setting "audit.{key}"',
            f"known audit settings: {', '.join(KNOWN_KEYS)}",
        )
    section = _Section(config_path, node, problems)
    values: dict[str, object] = {}
    # In the order of KNOWN_KEYS, whatever the file's: problems are reported in that order.
    for key, read in _READERS.items():
        if key in node:
            value = read(section, key)
            if value is not _INVALID:
                values[key] = value
    return AuditSettings(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Section:
    """The `audit:` section being read, and where its problems go."""

    config_path: Path
    node: Node
    problems: Problems

    def reject(self, key: str, message: str, fix: str) -> object:
        """Report the setting's problem at its line; the setting then keeps its default."""
        self.problems.error(self.config_path, self.node.line_of(key), message, fix)
        return _INVALID


_INVALID = object()  # a reader's answer for a setting it rejected


def _directory(section: _Section, key: str) -> object:
    value = section.node[key]
    if not isinstance(value, str) or not value.strip():
        return section.reject(
            key,
            "audit.directory must be a folder path",
            "e.g. directory: /var/log/citygate (relative paths are relative to this file)",
        )
    return section.config_path.parent / value.strip()


def _whole_number(section: _Section, key: str) -> object:
    low, high, example = _INTS[key]
    value = section.node[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return section.reject(
            key, f"audit.{key} {value!r} is not a whole number from {low} to {high}", f"e.g. {example}"
        )
    return value


def _true_or_false(section: _Section, key: str) -> object:
    value = section.node[key]
    if not isinstance(value, bool):
        return section.reject(
            key, f"audit.{key} {value!r} is not true or false", f"write {key}: true or {key}: false"
        )
    return value


# Two years: California Government Code §34090's minimum for most city records; Texas local
# governments follow the Local Schedule GR (13 TAC §7.125), which sets periods per record series.
RECORDS_LAW_MINIMUM_DAYS = 730


def _retention_days(section: _Section, key: str) -> object:
    value = section.node[key]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return section.reject(
            key,
            f"audit.retention_days {value!r} is not a positive number of days",
            "e.g. retention_days: 730, or leave it out to keep every file",
        )
    if value is not None and value < RECORDS_LAW_MINIMUM_DAYS:
        # The city's choice to make, not an error: but never a silent one.
        section.problems.warning(
            section.config_path,
            section.node.line_of(key),
            f"audit.retention_days {value} deletes access-log records younger than two years, the "
            "minimum most city records keep (California Government Code §34090; Texas: Local Schedule GR)",
            f"set retention_days: {RECORDS_LAW_MINIMUM_DAYS} or more, or keep {value} only with your records officer's approved schedule",
        )
    return value  # None: keep every file


def _fsync(section: _Section, key: str) -> object:
    value = section.node[key]
    try:
        return Fsync(str(value).lower() if not isinstance(value, bool) else "")
    except ValueError:
        return section.reject(
            key,
            f"audit.fsync {value!r} is not one of {', '.join(mode.value for mode in Fsync)}",
            "fsync: flush syncs after every flush (the default); rotate only when a file is closed; never leaves it to the OS",
        )


def _host_name(section: _Section, key: str) -> object:
    value = section.node[key]
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value.strip()):
        return section.reject(
            key,
            f"audit.host_name {value!r} is not a host name (letters, digits, '.', '-', '_'; up to 63)",
            "e.g. host_name: proxy1 (the name anchors and records give this host), or leave it out for the machine's name",
        )
    return value.strip()


def _syslog_setting(section: _Section, key: str) -> object:
    # Never _INVALID: a syslog: that cannot be used (its problems reported at their own lines)
    # leaves syslog off, as it is by default.
    return _syslog(section.config_path, section.node, section.problems)


# How each setting is read, in the order their problems are reported. A reader is called only
# for a setting the section has; it returns the setting's value, or _INVALID after reporting.
_READERS: dict[str, Callable[[_Section, str], object]] = {
    "directory": _directory,
    **dict.fromkeys(_INTS, _whole_number),
    **dict.fromkeys(_BOOLS, _true_or_false),
    "retention_days": _retention_days,
    "fsync": _fsync,
    "host_name": _host_name,
    "syslog": _syslog_setting,
}
KNOWN_KEYS = tuple(_READERS)


def _syslog(config_path: Path, node: Node, problems: Problems) -> SyslogSettings | None:
    section = node["syslog"]
    if section is None:
        return None
    if not isinstance(section, Node):
        problems.error(
            config_path,
            node.line_of("syslog"),
            "audit.syslog must be a mapping",
            "e.g. syslog: {address: tls://siem.city.example:6514, ca_file: siem-ca.pem}",
        )
        return None
    for key in sorted(set(section) - set(_SYSLOG_KEYS)):
        problems.error(
            config_path,
            section.line_of(key),
            f'unknown setting "audit.syslog.{key}"',
            f"known syslog settings: {', '.join(_SYSLOG_KEYS)}",
        )
    reader = _SyslogReader(config_path, section, problems)
    address = section.get("address")
    target = syslog_target(address) if isinstance(address, str) else None
    if not isinstance(address, str) or target is None:
        reader.error(
            "address",
            f"audit.syslog.address {address!r} is not a syslog address",
            "use tls://HOST:PORT (e.g. tls://siem.city.example:6514) or tcp://HOST:PORT, which deliver "
            "every record; or, best effort, udp://HOST:PORT (e.g. udp://127.0.0.1:514) or the path of "
            "a unix socket (e.g. /dev/log)",
        )
        return None
    transport = target[0]
    settings = SyslogSettings(
        address,
        reader.facility(),
        reader.app_name(),
        *reader.tls_settings(transport),
        *reader.spool_settings(transport),
    )
    return None if reader.failed else settings


class _SyslogReader:
    """The `audit.syslog:` mapping being read; a setting it rejects is reported and makes the
    whole sub-section unusable (`failed`), so syslog stays off rather than half on."""

    def __init__(self, config_path: Path, section: Node, problems: Problems) -> None:
        self.config_path = config_path
        self.section = section
        self.problems = problems
        self.failed = False

    def error(self, key: str, message: str, fix: str) -> None:
        self.problems.error(self.config_path, self.section.line_of(key), message, fix)
        self.failed = True

    def facility(self) -> str:
        facility = str(self.section.get("facility", "local0")).lower()
        if facility not in FACILITIES:
            self.error(
                "facility",
                f"audit.syslog.facility {self.section.get('facility')!r} is not a syslog facility",
                f"use one of {', '.join(FACILITIES)}",
            )
        return facility

    def app_name(self) -> str:
        app_name = str(self.section.get("app_name", "citygate"))
        # RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters, no spaces.
        if not 1 <= len(app_name) <= 48 or not all(33 <= ord(char) <= 126 for char in app_name):
            self.error(
                "app_name",
                f"audit.syslog.app_name {app_name!r} is not 1 to 48 printable characters without spaces",
                "e.g. app_name: citygate",
            )
        return app_name

    def tls_settings(self, transport: str) -> tuple[Path | None, Path | None, Path | None, str | None]:
        """ca_file, cert_file, key_file, server_name."""
        if transport != "tls":
            for key in _TLS_KEYS:
                if key in self.section:
                    self.error(
                        key,
                        f"audit.syslog.{key} applies to tls:// addresses only",
                        f"use address: tls://HOST:PORT, or remove {key}",
                    )
            return None, None, None, None
        if "ca_file" not in self.section:
            self.error(
                "address",
                "audit.syslog.ca_file is missing: a tls:// collector's certificate is checked against it",
                "e.g. ca_file: /etc/citygate/siem-ca.pem (the CA that signed the collector's "
                "certificate; /etc/ssl/certs/ca-certificates.crt for a public one)",
            )
        ca_file = self._pem("ca_file", "the CA that signed the collector's certificate")
        if ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(ca_file))
            except (ssl.SSLError, OSError, ValueError) as exc:
                self.error(
                    "ca_file",
                    f"{ca_file} is not a usable PEM CA file ({exc})",
                    "export the CA certificate as PEM",
                )
        return (ca_file, *self._client_certificate(), self._server_name())

    def _client_certificate(self) -> tuple[Path | None, Path | None]:
        if ("cert_file" in self.section) != ("key_file" in self.section):
            given, other = (
                ("cert_file", "key_file") if "cert_file" in self.section else ("key_file", "cert_file")
            )
            self.error(
                given,
                f"audit.syslog.{given} is given without {other}",
                "give both, the certificate citygate shows the collector and its private key, or neither",
            )
            return None, None
        cert_file = self._pem("cert_file", "this proxy's client certificate")
        key_file = self._pem("key_file", "the private key of cert_file")
        if cert_file is not None and key_file is not None:
            try:
                ssl.create_default_context().load_cert_chain(cert_file, key_file)
            except (ssl.SSLError, OSError) as exc:
                self.error(
                    "cert_file",
                    f"{cert_file} and {key_file} are not a usable certificate and key ({exc})",
                    "give the PEM certificate and the PEM private key that belongs to it (readable by citygate's user)",
                )
        return cert_file, key_file

    def _pem(self, key: str, what: str) -> Path | None:
        value = self.section.get(key)
        if value is None:
            return None
        path = self.config_path.parent / str(value).strip()
        if not isinstance(value, str) or not value.strip() or not path.is_file():
            self.error(
                key,
                f"audit.syslog.{key} {value!r} is not a file",
                f"give the PEM file of {what} (relative paths are relative to this file)",
            )
            return None
        return path

    def _server_name(self) -> str | None:
        value = self.section.get("server_name")
        if value is None:
            return None
        if not isinstance(value, str) or not _SERVER_NAME.fullmatch(value):
            self.error(
                "server_name",
                f"audit.syslog.server_name {value!r} is not a host name",
                "e.g. server_name: siem.city.example (the name in the collector's certificate), or "
                "leave it out for the address's host",
            )
            return None
        return value

    def spool_settings(self, transport: str) -> tuple[Path | None, int]:
        """spool_directory, spool_max_bytes."""
        directory: Path | None = None
        limit = DEFAULT_SPOOL_MAX_BYTES
        if transport not in ("tcp", "tls"):
            for key in _SPOOL_KEYS:
                if key in self.section:
                    self.error(
                        key,
                        f"audit.syslog.{key} applies to tcp:// and tls:// addresses only "
                        "(udp:// and unix sockets are best effort, with no spool)",
                        f"use address: tls://HOST:PORT or tcp://HOST:PORT, or remove {key}",
                    )
            return directory, limit
        given = self.section.get("spool_directory")
        if given is not None:
            if isinstance(given, str) and given.strip():
                directory = self.config_path.parent / given.strip()
            else:
                self.error(
                    "spool_directory",
                    f"audit.syslog.spool_directory {given!r} is not a folder path",
                    f"e.g. spool_directory: /var/spool/citygate, or leave it out for {SPOOL_FOLDER} "
                    "inside the audit directory",
                )
        value = self.section.get("spool_max_bytes", limit)
        if isinstance(value, bool) or not isinstance(value, int) or not _SPOOL_MIN_BYTES <= value <= 1 << 40:
            self.error(
                "spool_max_bytes",
                f"audit.syslog.spool_max_bytes {value!r} is not a whole number from {_SPOOL_MIN_BYTES} to {1 << 40}",
                f"e.g. spool_max_bytes: {DEFAULT_SPOOL_MAX_BYTES}   # 1 GiB",
            )
        else:
            limit = value
        return directory, limit


def syslog_target(address: str) -> tuple[str, str | tuple[str, int]] | None:
    """("udp" | "tcp" | "tls", (host, port)) or ("unix", path) for a syslog address; None when it
    is none of them."""
    scheme, sep, rest = address.partition("://")
    if sep and scheme in ("udp", "tcp", "tls"):
        host, sep, port = rest.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return (scheme, (host, int(port)))
    if address.startswith("unix://"):
        address = address.removeprefix("unix://")
    if address.startswith("/"):
        return ("unix", address)
    return None
