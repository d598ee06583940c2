"""The `metrics:` section of the configuration: whether and where /metrics is served.

Parsing only, without prometheus_client, so that loading a configuration stays cheap for every
command; the metrics themselves are defined in metrics.py.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from citygate.directory.problems import Problems
from citygate.proxy.yamlfile import Node

DEFAULT_LISTEN = "127.0.0.1:9090"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9090
    # How often gauges read from other parts (grants, the access log's health and error
    # counts, configuration loads) are brought up to date, in a thread off the event loop.
    refresh_seconds: float = 5.0
    # citygate_grants_expiring counts grants that end within this many days.
    expiring_days: int = 14
    max_departments: int = 100

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_KEYS = ("enabled", "listen", "refresh_seconds", "expiring_days", "max_departments")
_LISTEN = re.compile(r"^(?:\[([^\]]+)\]|([^:\[\]]*)):(\d{1,5})$")


def parse_listen(text: str) -> tuple[str, int] | None:
    """("127.0.0.1", 9090) for "127.0.0.1:9090", "[::1]:9090" or ":9090" (every interface)."""
    match = _LISTEN.match(text.strip())
    if match is None:
        return None
    host = match.group(1) if match.group(1) is not None else match.group(2)
    port = int(match.group(3))
    if port > 65535:
        return None
    if host and not _is_host(host):
        return None
    return host or "0.0.0.0", port  # noqa: S104 - ":9090" asks for every interface


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host) is not None


def parse_metrics_section(
    config_path: Path, node: Node | None, line: int, problems: Problems
) -> MetricsSettings:
    """The metrics settings in `node` (defaults, listener on 127.0.0.1:9090, without a section)."""
    if node is None:
        return MetricsSettings()
    values: dict[str, object] = {}
    for key in sorted(set(node) - set(_KEYS)):
        problems.error(
            config_path,
            node.line_of(key),
            f'unknown setting "metrics.{key}"',
            f"known metrics settings: {', '.join(_KEYS)}",
        )
    if "enabled" in node:
        if not isinstance(node["enabled"], bool):
            problems.error(
                config_path,
                node.line_of("enabled"),
                f"metrics.enabled {node['enabled']!r} is not true or false",
                "write enabled: true or enabled: false",
            )
        else:
            values["enabled"] = node["enabled"]
    if "listen" in node:
        address = parse_listen(str(node["listen"])) if isinstance(node["listen"], str) else None
        if address is None:
            problems.error(
                config_path,
                node.line_of("listen"),
                f"metrics.listen {node['listen']!r} is not HOST:PORT",
                'e.g. listen: "127.0.0.1:9090" (an IPv6 address in brackets: "[::1]:9090")',
            )
        else:
            values["host"], values["port"] = address
    for key, low, high, example, whole in (
        ("refresh_seconds", 0.1, 3600, "refresh_seconds: 5", False),
        ("expiring_days", 1, 366, "expiring_days: 14", True),
        ("max_departments", 1, 10_000, "max_departments: 100", True),
    ):
        if key not in node:
            continue
        value = node[key]
        kinds = int if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            kind = "a whole number" if whole else "a number"
            problems.error(
                config_path,
                node.line_of(key),
                f"metrics.{key} {value!r} is not {kind} from {low:g} to {high:g}",
                f"e.g. {example}",
            )
        else:
            values[key] = value
    return MetricsSettings(**values)  # type: ignore[arg-type]
