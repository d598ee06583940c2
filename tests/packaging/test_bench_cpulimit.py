"""bench/cpulimit.py holds a process tree to its share of the CPU (the worker-scaling benchmark rests on it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from cpulimit import CpuLimit, CpuLimitUnavailable, cgroup_name

BUSY = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_busy_process_in_the_cgroup_gets_no_more_than_its_share():
    limit = CpuLimit(cgroup_name("test"), 0.25)
    try:
        limit.create()
    except CpuLimitUnavailable as exc:
        pytest.skip(f"no CPU cgroup on this machine: {exc}")
    try:
        process = subprocess.Popen(limit.wrap([sys.executable, "-c", BUSY]))
        started = time.monotonic()
        time.sleep(1.2)
        used, elapsed = cpu_seconds(process.pid), time.monotonic() - started
        process.wait(10)
    finally:
        limit.remove()

    assert used / elapsed < 0.4, f"{used:.2f} s of CPU in {elapsed:.2f} s"  # a quarter core, with slack
    assert used / elapsed > 0.1  # it ran
    assert not limit.folder.exists()
