"""Applying configuration changes without a restart: watched files and SIGHUP.

Directors change grant files every week. The watcher polls the modification times of every
file the policy was loaded from (the config, the catalog, each grant file, the grants folder
itself so that new files are seen, and a static directory's LDIF file) and asks the gate to
reload when one changes. SIGHUP asks for the same at once. Polling, not inotify: it works the
same on every filesystem, including the ConfigMap volumes of Kubernetes (which swap symlinks).

The gate reloads off the event loop and swaps the new policy in whole, or keeps the old one
when the new files do not load; open connections are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader

from citygate.addons.loaded import loaded_gate
from citygate.proxy.policy import fingerprint

log = logging.getLogger("citygate")


class ConfigWatcher:
    """Reloads the gate's policy when its files change (checked every `citygate_reload_interval_ms`)."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "citygate_reload_interval_ms",
            int,
            2000,
            "Milliseconds between checks of the configuration and grant files for changes; 0 "
            "turns watching off (SIGHUP still reloads).",
        )

    def running(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._watch())
        if threading.current_thread() is threading.main_thread():
            # Only the main thread may own signal handlers (tests run the proxy in a thread).
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._wake.set)

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        gate = loaded_gate()
        if gate is None:
            return  # nothing to reload without the gate
        seen = fingerprint(gate.config.watched_files())
        while True:
            interval = ctx.options.citygate_reload_interval_ms / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval if interval > 0 else None)
            signalled = self._wake.is_set()
            self._wake.clear()
            current = await asyncio.to_thread(fingerprint, gate.config.watched_files())
            if current == seen and not signalled:
                continue
            log.info("citygate: %s; reloading", "SIGHUP" if signalled else "configuration files changed")
            await gate.reload()
            # The new policy may read other files (a grant file added): watch what it loaded.
            seen = await asyncio.to_thread(fingerprint, gate.config.watched_files())
