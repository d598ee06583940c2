"""A worker of `citygate run --workers N`, started by the supervisor (`proxy/runtime/workers.py`).

`python -m citygate.proxy.cli.worker ARGS-AS-JSON`: a single-process `citygate run` that serves
the listening sockets it inherited.
"""

from __future__ import annotations

import sys

from citygate.proxy.cli import run_command
from citygate.proxy.runtime.workers import become_worker

if __name__ == "__main__":
    sys.exit(run_command(become_worker(sys.argv[1:])))
