"""Which client addresses signed in recently: the memory behind proxy/identity/sign_in_page.py.

Kept in memory, and, under `citygate run --workers N`, in a small SQLite file the workers share
(in the run's private folder, like the directory answers): the kernel spreads a browser's
connections over the workers, and a browser that signed in on one worker must get the 407 from
all of them, or its next CONNECT would be sent to the sign-in page again. The file is read and
written in a thread, never on the event loop, and only for browser CONNECTs that present no
credentials (a read) or for a sign-in not yet remembered (a write). It holds addresses and
times, nothing else. When it cannot be used, each worker remembers on its own and says so once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from citygate.directory.shared import SHARED_DIR_ENV
from citygate.proxy.identity.sign_in_page import REMEMBERED_SECONDS

log = logging.getLogger("citygate")

FILE_NAME = "signed-in-clients.sqlite"
_SCHEMA = "CREATE TABLE IF NOT EXISTS signed_in (address TEXT PRIMARY KEY, until REAL NOT NULL)"


class SignedInClients:
    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock  # wall time: the workers are separate processes
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._failed = False

    @classmethod
    def for_this_process(cls) -> SignedInClients:
        """Shared with the other workers of this run when there are any, else in memory only."""
        folder = os.environ.get(SHARED_DIR_ENV)
        return cls(Path(folder) / FILE_NAME if folder else None)

    async def remember(self, address: str | None, method: str) -> None:
        """Note that `address` signed in with `method` (negotiate, basic) just now."""
        seconds = REMEMBERED_SECONDS.get(method)
        if not address or seconds is None:
            return
        until = self._clock() + seconds
        # Refreshed at most every half period, so a browser's every request costs no write.
        if self._until.get(address, 0.0) >= until - seconds / 2:
            return
        self._until[address] = until
        if self.path is not None:
            await asyncio.to_thread(self._store, address, until)

    async def recently(self, address: str | None) -> bool:
        """Whether `address` signed in within its remembered period, on this worker or another."""
        if not address:
            return False
        now = self._clock()
        if self._until.get(address, 0.0) > now:
            return True
        if self.path is None:
            return False
        until = await asyncio.to_thread(self._load, address)
        if until is not None and until > now:
            self._until[address] = until
            return True
        return False

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _store(self, address: str, until: float) -> None:
        with self._lock:
            try:
                self._open().execute(
                    "INSERT INTO signed_in VALUES (?, ?) ON CONFLICT (address) "
                    "DO UPDATE SET until = max(until, excluded.until)",
                    (address, until),
                )
            except (sqlite3.Error, OSError) as exc:
                self._broken(exc)

    def _load(self, address: str) -> float | None:
        with self._lock:
            try:
                row = (
                    self._open()
                    .execute("SELECT until FROM signed_in WHERE address = ?", (address,))
                    .fetchone()
                )
            except (sqlite3.Error, OSError) as exc:
                self._broken(exc)
                return None
        return None if row is None else float(row[0])

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            assert self.path is not None
            connection = sqlite3.connect(
                self.path, timeout=1.0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)
            self._connection = connection
        return self._connection

    def _broken(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.warning(
                "citygate: the workers' shared sign-in memory (%s) cannot be used: %s; this worker "
                "remembers sign-ins on its own, so a browser may be sent to the sign-in page once per worker",
                self.path,
                exc,
            )
