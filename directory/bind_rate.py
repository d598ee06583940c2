"""At most N password checks (binds) per account per minute, so the proxy cannot lock an account.

A browser holding several stale passwords for the proxy tries them one after another, and
Active Directory locks an account after a few wrong ones (ppolicy's pwdMaxFailure likewise).
The failure memory (cache.FailedCredentials) stops the same wrong password from being sent
twice; this stops different ones from being sent faster than `limit` a minute. Kept in memory
per process: with `citygate run --workers N` each worker counts its own binds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW = 60.0


class BindRate:
    """A sliding one-minute window of binds per account; thread-safe; bounded in accounts."""

    def __init__(self, limit: int, clock: Callable[[], float], max_accounts: int = 50_000) -> None:
        self.limit = limit
        self._clock = clock
        self._max = max_accounts
        self._binds: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, user: str) -> float:
        """Count a bind for `user` and return 0, or return the seconds until one is allowed
        (and count nothing) when `limit` binds were made in the last minute."""
        now = self._clock()
        with self._lock:
            binds = self._binds.get(user)
            if binds is None:
                binds = self._binds[user] = deque()
            self._binds.move_to_end(user)
            while binds and binds[0] <= now - WINDOW:
                binds.popleft()
            if len(binds) >= self.limit:
                return binds[0] + WINDOW - now
            binds.append(now)
            while len(self._binds) > self._max:
                self._binds.popitem(last=False)
            return 0.0

    def give_back(self, user: str) -> None:
        """Uncount `user`'s latest bind: it never got an answer (the directory was unavailable)."""
        with self._lock:
            binds = self._binds.get(user)
            if binds:
                binds.pop()
