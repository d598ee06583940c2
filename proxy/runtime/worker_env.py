"""Which worker this process is, from the environment the supervisor starts it with (workers.py).

A module of its own so that the addons and the metrics listener can ask without importing the
supervisor.
"""

from __future__ import annotations

import os

WORKER_ENV = "CITYGATE_WORKER"  # this worker's index, 0..N-1
WORKERS_ENV = "CITYGATE_WORKERS"  # N


def worker_index() -> int | None:
    """This worker's index (0..N-1) under `citygate run --workers N`; None in a single process."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isdigit() else None
