"""The `audit:` section of the configuration: where the access log goes and how it is kept.

Parsing only: every setting is checked here, so `citygate check` reports a mistake with its
file, line and fix, and the writer (`writer.py`) receives settings it can trust.
"""

from __future__ import annotations

import re
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


@dataclass(frozen=True, slots=True)
class SyslogSettings:
    address: str  # "udp://host:port", or the path of a unix datagram socket ("/dev/log")
    facility: str = "local0"
    app_name: str = "citygate"

    @property
    def facility_code(self) -> int:
        return FACILITIES[self.facility]


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
_SYSLOG_KEYS = ("address", "facility", "app_name")


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
            "e.g. syslog: {address: udp://127.0.0.1:514, facility: local0}",
        )
        return None
    for key in sorted(set(section) - set(_SYSLOG_KEYS)):
        problems.error(
            config_path,
            section.line_of(key),
            f'unknown setting "audit.syslog.{key}"',
            f"known syslog settings: {', '.join(_SYSLOG_KEYS)}",
        )
    address = section.get("address")
    if not isinstance(address, str) or syslog_target(address) is None:
        problems.error(
            config_path,
            section.line_of("address"),
            f"audit.syslog.address {address!r} is not a syslog address",
            "use udp://HOST:PORT (e.g. udp://127.0.0.1:514) or the path of a unix socket (e.g. /dev/log)",
        )
        return None
    facility = str(section.get("facility", "local0")).lower()
    if facility not in FACILITIES:
        problems.error(
            config_path,
            section.line_of("facility"),
            f"audit.syslog.facility {section.get('facility')!r} is not a syslog facility",
            f"use one of {', '.join(FACILITIES)}",
        )
        return None
    app_name = str(section.get("app_name", "citygate"))
    # RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters, no spaces.
    if not 1 <= len(app_name) <= 48 or not all(33 <= ord(char) <= 126 for char in app_name):
        problems.error(
            config_path,
            section.line_of("app_name"),
            f"audit.syslog.app_name {app_name!r} is not 1 to 48 printable characters without spaces",
            "e.g. app_name: citygate",
        )
        return None
    return SyslogSettings(address, facility, app_name)


def syslog_target(address: str) -> tuple[str, str | tuple[str, int]] | None:
    """("udp", (host, port)) or ("unix", path) for a syslog address; None when it is neither."""
    if address.startswith("udp://"):
        host, sep, port = address.removeprefix("udp://").rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return ("udp", (host, int(port)))
    if address.startswith("unix://"):
        address = address.removeprefix("unix://")
    if address.startswith("/"):
        return ("unix", address)
    return None
