"""A circuit breaker for the directory: fail fast while it does not answer, probe it with backoff.

Without one, a stopped directory is asked again by every social-media request (thousands of
refused connections a minute), and a hung one costs every request a full timeout. The breaker's
states:

- closed: calls go to the directory. `failures` failed calls in a row, or one failed health
  check, open it.
- open: calls fail at once as "directory unavailable" without contacting the server (cached
  answers within their grace still serve). After `backoff` seconds one probe may go out.
- half_open: that probe is out; calls still fail at once. Its success closes the breaker; its
  failure opens it again for twice the backoff, up to `max_backoff`.

Probes and health checks are made by the gateway's checker thread only (gateway.py), so no
employee's request waits for a probe of a hung server. The breaker itself is pure bookkeeping
on an injected clock: no I/O, a lock held for microseconds, safe from the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """How the gateway guards a network directory (the `directory:` section's settings).

    call_timeout: the longest the proxy waits for one directory call, whatever the sockets do.
    check_interval: how often the directory is checked while it answers, and the longest
    backoff while it does not; readiness follows the directory within this (plus call_timeout
    for a hung directory).
    failures: failed calls in a row that open the breaker.
    backoff: the first wait after the breaker opens; it doubles up to check_interval.
    bind_rate: the most password checks (binds) one account may cost the directory per minute
    (see bind_rate.py).
    """

    call_timeout: float = 2.0
    check_interval: float = 5.0
    failures: int = 3
    backoff: float = 0.5
    bind_rate: int = 5


class Breaker:
    """The state machine above; every method is safe from any thread."""

    def __init__(
        self,
        failures: int,
        backoff: float,
        max_backoff: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = max(1, failures)
        self._first_backoff = min(backoff, max_backoff)
        self._max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._failed = 0  # consecutive failed calls while closed
        self._backoff = self._first_backoff
        self._probe_at = 0.0
        #: Times the breaker opened (from closed), for the metrics.
        self.opens = 0

    @property
    def state(self) -> State:
        return self._state

    def allows_calls(self) -> bool:
        """Whether a request's call may go to the directory (only while closed)."""
        return self._state is State.CLOSED

    def call_succeeded(self) -> None:
        with self._lock:
            if self._state is State.CLOSED:
                self._failed = 0

    def call_failed(self) -> bool:
        """Count a failed call; True when this failure opened the breaker.

        A call that was let through while closed but fails after the breaker opened changes
        nothing: only probes move an open breaker.
        """
        with self._lock:
            if self._state is not State.CLOSED:
                return False
            self._failed += 1
            if self._failed < self._threshold:
                return False
            self._open_now()
            return True

    def seconds_to_probe(self) -> float:
        """How long until a probe may go out (0: now); while closed, 0 (checks are the checker's)."""
        with self._lock:
            if self._state is State.CLOSED:
                return 0.0
            if self._state is State.HALF_OPEN:
                return self._backoff  # the probe out now decides; asked again after it lands
            return max(0.0, self._probe_at - self._clock())

    def begin_probe(self) -> bool:
        """Whether the caller may contact the directory as the health check or probe now.

        While closed: always (a health check). While open: once the backoff has passed, and the
        breaker is half-open until `probe_succeeded` or `probe_failed`.
        """
        with self._lock:
            if self._state is State.CLOSED:
                return True
            if self._state is State.HALF_OPEN or self._clock() < self._probe_at:
                return False
            self._state = State.HALF_OPEN
            return True

    def probe_succeeded(self) -> bool:
        """The directory answered a check or probe: closed again. True when it was not closed."""
        with self._lock:
            reopened = self._state is not State.CLOSED
            self._state = State.CLOSED
            self._failed = 0
            self._backoff = self._first_backoff
            return reopened

    def probe_failed(self) -> bool:
        """The directory did not answer a check or probe. True when this opened the breaker.

        A failed health check opens a closed breaker at once: the check asks the directory
        itself, never a cache, so readiness follows within one check. A failed probe doubles
        the backoff (up to max_backoff).
        """
        with self._lock:
            if self._state is State.CLOSED:
                self._open_now()
                return True
            self._backoff = min(self._backoff * 2, self._max_backoff)
            self._state = State.OPEN
            self._probe_at = self._clock() + self._backoff
            return False

    def _open_now(self) -> None:
        # With the lock held.
        self._state = State.OPEN
        self._failed = 0
        self._backoff = self._first_backoff
        self._probe_at = self._clock() + self._backoff
        self.opens += 1
