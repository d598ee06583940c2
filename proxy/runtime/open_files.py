"""How many files (sockets) the proxy may hold open: as many as the system lets it.

Every client connection is a file descriptor, and a tunnel relayed to a site is two. Linux
starts a process with a soft limit of 1,024 (systemd's default too), which a proxy outgrows at
about 500 open tunnels: new connections then fail with "Too many open files". Squid
(max_filedescriptors) and nginx (worker_rlimit_nofile) raise it themselves; so does `citygate
run`, to the hard limit the administrator allows (systemd's LimitNOFILE, ulimit -Hn), before
any worker starts, so that the workers inherit it.
"""

from __future__ import annotations

import resource


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the limit now in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is not a value the soft limit may take on Linux: nr_open is.
    wanted = hard if hard != resource.RLIM_INFINITY else _system_maximum()
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft
        return wanted
    return soft


def _system_maximum() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as nr_open:
            return int(nr_open.read())
    except (OSError, ValueError):
        return 1_048_576  # Linux's default nr_open
