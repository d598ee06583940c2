"""Hold a benchmarked proxy to a share of the machine's CPU, so that its load generators keep the rest.

On a machine with few cores the load generators (wrk, socat, curl, nginx's TLS) compete with the
proxy for the same cores, and a proxy with two workers cannot show what two cores give it: the
second core is busy generating its load. A CPU cgroup caps a proxy's whole process tree at a
fixed number of cores (the Linux CFS quota), whatever else runs: "citygate with 1 worker on
0.4 core" and "citygate with 2 workers on 0.8 core" are then a 1-core and a 2-core host scaled
down alike, with the load generators on the cores left over.

Needs root and a cgroup CPU controller: cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# A short period spreads the quota evenly: a proxy at its limit pauses for at most a few
# milliseconds per period instead of up to 100 ms with the default period.
PERIOD_US = 10_000


class CpuLimitUnavailable(RuntimeError):
    pass


class CpuLimit:
    """A CPU cgroup allowing `cores` CPUs (e.g. 0.4) to the process tree started in it."""

    def __init__(self, name: str, cores: float) -> None:
        if cores <= 0:
            raise ValueError("cores must be positive")
        self.cores = cores
        unified = (CGROUP_ROOT / "cgroup.controllers").exists()
        self.folder = CGROUP_ROOT / name if unified else CGROUP_ROOT / "cpu" / name
        self.unified = unified

    def create(self) -> None:
        quota = max(1_000, round(self.cores * PERIOD_US))
        try:
            if self.unified:
                with contextlib.suppress(OSError):  # already enabled, or enabled by the system
                    (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu")
                self.folder.mkdir(exist_ok=True)
                (self.folder / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                if not self.folder.parent.is_dir():
                    raise CpuLimitUnavailable(f"no cgroup v1 cpu controller at {self.folder.parent}")
                self.folder.mkdir(exist_ok=True)
                (self.folder / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.folder / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError as exc:
            raise CpuLimitUnavailable(
                f"cannot create the CPU cgroup {self.folder} ({exc.strerror}); "
                "--proxy-cpu needs root and a cgroup CPU controller"
            ) from None

    def wrap(self, command: Sequence[str]) -> list[str]:
        """`command`, started inside the cgroup (its children stay there)."""
        procs = self.folder / "cgroup.procs"
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *command]

    def remove(self, timeout: float = 5.0) -> None:
        # Only an empty cgroup can be removed: the last processes of the tree may still be exiting.
        deadline = time.monotonic() + timeout
        while self.folder.exists():
            try:
                self.folder.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)


def cgroup_name(label: str) -> str:
    return f"citygate-bench-{os.getpid()}-{label.replace(' ', '-')}"
