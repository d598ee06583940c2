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
import functools
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from citygate.directory.shared import SHARED_DIR_ENV, SharedFile
from citygate.proxy.identity.sign_in_page import REMEMBERED_SECONDS

FILE_NAME = "signed-in-clients.sqlite"
_SCHEMA = "CREATE TABLE IF NOT EXISTS signed_in (address TEXT PRIMARY KEY, until REAL NOT NULL)"


class SignedInClients:
    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock  # wall time: the workers are separate processes
        self._until: dict[str, float] = {}
        self._file = (
            None
            if path is None
            else SharedFile(
                path,
                _SCHEMA,
                "shared sign-in memory",
                "this worker remembers sign-ins on its own, so a browser may be sent to the sign-in page once per worker",
            )
        )

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
        if self._file is not None:
            await asyncio.to_thread(self._file.run, functools.partial(_store, address, until))

    async def recently(self, address: str | None) -> bool:
        """Whether `address` signed in within its remembered period, on this worker or another."""
        if not address:
            return False
        now = self._clock()
        if self._until.get(address, 0.0) > now:
            return True
        if self._file is None:
            return False
        until = await asyncio.to_thread(self._file.run, functools.partial(_load, address))
        if until is not None and until > now:
            self._until[address] = until
            return True
        return False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _store(address: str, until: float, connection: sqlite3.Connection) -> None:
    connection.execute(
        "INSERT INTO signed_in VALUES (?, ?) ON CONFLICT (address) DO UPDATE SET until = max(until, excluded.until)",
        (address, until),
    )


def _load(address: str, connection: sqlite3.Connection) -> float | None:
    row = connection.execute("SELECT until FROM signed_in WHERE address = ?", (address,)).fetchone()
    return None if row is None else float(row[0])
