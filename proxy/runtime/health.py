"""/healthz and /readyz for load balancers, Kubernetes probes and systemd watchdogs.

/healthz: the process is alive and its listener answers. /readyz: the proxy can make every
decision it may be asked for: its configuration is loaded, the directory answers (its circuit
breaker is closed: directory/breaker.py; it follows the directory within one check_interval),
and the access log can be written. `/readyz?exclude=directory` leaves a check out, as
Kubernetes' own API server does: a directory that every replica shares fails them all at once,
and routing on it would take ordinary browsing down with social media (README, Kubernetes).

Under `citygate run --workers N` each worker writes its own state into the shared metrics folder
every few seconds, and the supervisor's listener answers for all of them: ready only when every
live worker has reported recently and is ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

_PREFIX = "health-"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Readiness:
    config_loaded: bool
    directory_available: bool
    audit_log_writable: bool

    @property
    def ready(self) -> bool:
        return self.ready_without(frozenset())

    def ready_without(self, excluded: frozenset[str]) -> bool:
        """Ready, leaving out the checks named in `excluded` (names of CHECKS)."""
        return all(getattr(self, field) for check, field in CHECKS.items() if check not in excluded)


#: The checks /readyz makes, by the name `?exclude=` takes.
CHECKS = {"config": "config_loaded", "directory": "directory_available", "audit_log": "audit_log_writable"}


def healthz(query: Mapping[str, list[str]]) -> tuple[int, str, bytes]:
    return 200, JSON, b'{"status": "alive"}\n'


def readyz(
    states: list[Readiness], query: Mapping[str, list[str]], expected: int = 1
) -> tuple[int, str, bytes]:
    """200 when `expected` states (one per worker) are in and all ready; 503 with the reasons otherwise.

    `?exclude=directory` (repeated, or comma-separated) leaves checks out; an unknown name is a
    400 that lists the known ones, so a typo in a probe cannot pass silently.
    """
    excluded = frozenset(name.strip() for value in query.get("exclude", []) for name in value.split(","))
    unknown = sorted(excluded - CHECKS.keys())
    if unknown:
        message = f"unknown check {', '.join(unknown)}; ?exclude= takes: {', '.join(CHECKS)}"
        return 400, JSON, (json.dumps({"error": message}) + "\n").encode()
    ready = len(states) >= expected and all(state.ready_without(excluded) for state in states)
    body = {
        "ready": ready,
        "excluded": sorted(excluded),
        "workers": [asdict(state) | {"ready": state.ready_without(excluded)} for state in states],
    }
    return (200 if ready else 503), JSON, (json.dumps(body) + "\n").encode()


def write_state(folder: str, state: Readiness) -> None:
    """Publish this worker's state for the supervisor (atomically: write, then rename)."""
    path = Path(folder) / f"{_PREFIX}{os.getpid()}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state) | {"time": time.time()}))
    temporary.replace(path)


def forget_state(folder: str, pid: int) -> None:
    """A worker exited: its last state no longer speaks for the service."""
    with contextlib.suppress(FileNotFoundError):
        (Path(folder) / f"{_PREFIX}{pid}.json").unlink()


def read_states(folder: str, max_age: float) -> list[Readiness]:
    """Every worker's state; one not refreshed within `max_age` seconds counts as not ready."""
    states = []
    now = time.time()
    for path in sorted(Path(folder).glob(f"{_PREFIX}*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now; the next probe reads it
        fresh = now - float(data.get("time", 0)) <= max_age
        states.append(
            Readiness(
                config_loaded=bool(data.get("config_loaded")) and fresh,
                directory_available=bool(data.get("directory_available")),
                audit_log_writable=bool(data.get("audit_log_writable")),
            )
        )
    return states
