"""The proxy's asynchronous door to a directory backend.

mitmproxy runs every connection on one event loop: a directory call made there would stall
all traffic, ordinary traffic included. The gateway runs blocking backends in its own bounded
pool of worker threads and turns "the directory could not answer" into absent answers, which
the decision core treats as `directory_unavailable` for social-media requests only.

For blocking backends (LDAP) answers are cached (see cache.py): a fresh cached answer is
returned without awaiting anything; concurrent misses for the same key share one directory
call; when the directory cannot answer, a cached answer younger than `grace` is still used.
Non-blocking backends (the static LDIF directory) answer from memory and are not cached.

A network directory is also guarded (breaker.py), when the gateway is given GuardSettings:
every call is bounded by `call_timeout` as the proxy awaits it, whatever ldap3's sockets do;
failed calls open a circuit breaker, and while it is open calls fail at once without
contacting the server (cached answers within their grace still serve). A checker thread asks
the directory every `check_interval` while it answers, and probes it with exponential backoff
while it does not; `available()` (for /readyz) is the breaker's state, so readiness follows the
directory within one check without a directory call per request.

Password checks of a network directory are also kept from locking accounts: a refused
(user, password) is answered from memory for `failed_credentials_ttl` without a bind, and
binds per account are limited to `bind_rate` a minute (bind_rate.py); both in this process's
memory only (each worker of `citygate run --workers N` has its own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from citygate.directory.bind_rate import BindRate
from citygate.directory.breaker import Breaker, GuardSettings, State
from citygate.directory.cache import (
    CacheSettings,
    CredentialCache,
    FailedCredentials,
    TtlCache,
    cache_settings,
)
from citygate.directory.model import BindOutcome, Directory, DirectoryUnavailable, Person

if TYPE_CHECKING:
    from citygate.directory.settings import DirectorySettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Worker threads for directory calls; a hung server holds one per call for at most its timeout.
DEFAULT_WORKERS = 8

REMEMBERED_FAILURE, RATE_LIMITED = "remembered_failure", "rate_limited"


class Verification(NamedTuple):
    """The answer to a password: the outcome, and for RATE_LIMITED the seconds until a bind is
    allowed again. `remembered` marks a refusal answered from memory, without a bind."""

    outcome: BindOutcome
    retry_after: float = 0.0
    remembered: bool = False


class DirectoryGateway:
    def __init__(
        self,
        backend: Directory,
        cache: CacheSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        workers: int = DEFAULT_WORKERS,
        guard: GuardSettings | None = None,
    ) -> None:
        self.backend = backend
        self.cache = cache or CacheSettings()
        self._clock = clock
        size = self.cache.max_entries
        self._people: TtlCache[str, Person | None] = TtlCache(size, clock)
        self._groups: TtlCache[str, list[Person]] = TtlCache(size, clock)
        self._group_attributes: TtlCache[str, tuple[str]] = TtlCache(size, clock)
        # id(a cached members list) -> (that list, its members' departments): a group grant's
        # department is read on every request of its members, the list changes once per TTL.
        self._departments: dict[int, tuple[list[Person], frozenset[str]]] = {}
        self._departments_size = size
        self._credentials = CredentialCache(size, clock)
        self._failures = FailedCredentials(size, clock)
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}
        self._executor = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="citygate-directory")
            if backend.blocking
            else None
        )
        #: Backend calls made, by method name (lookup, authenticate, group_members).
        self.calls: Counter[str] = Counter()
        #: Told of every backend call as (operation, result, seconds): result is "ok",
        #: "unavailable" (DirectoryUnavailable) or "error". The metrics addon sets it; it runs
        #: on the event loop, so it must only count.
        self.observer: Callable[[str, str, float], None] | None = None
        # Only a directory that does network I/O is guarded: one read from memory always answers.
        self.guard = guard if self._executor is not None else None
        self.breaker = (
            Breaker(self.guard.failures, self.guard.backoff, self.guard.check_interval)
            if self.guard is not None
            else None
        )
        #: Told of the breaker's events as (event, state): "opened", "closed", "probe_ok",
        #: "probe_failed", "rejected" (a call failed fast). It runs on the event loop or on the
        #: checker thread, so it must only count, thread-safely.
        self.breaker_observer: Callable[[str, State], None] | None = None
        self._bind_rate = BindRate(self.guard.bind_rate, clock, size) if self.guard is not None else None
        #: Told of every bind's outcome (a BindOutcome value; "unavailable" for no answer), and
        #: of every password refused without a bind ("remembered_failure", "rate_limited").
        #: Both run on the event loop, so they must only count.
        self.bind_observer: Callable[[str], None] | None = None
        self.refusal_observer: Callable[[str], None] | None = None
        self._checker: threading.Thread | None = None
        self._checker_lock = threading.Lock()
        self._closed = threading.Event()
        self._wake = threading.Event()

    @classmethod
    def cached(
        cls,
        backend: Directory,
        settings: DirectorySettings,
        config_path: str | Path = "config",
        **options: Any,
    ) -> DirectoryGateway:
        """A gateway with the cache settings of the config's `directory: {cache: ...}` section.

        (Static backends are never cached; their gateway only carries the settings.)
        """
        return cls(backend, cache_settings(settings.options.get("cache"), config_path), **options)

    def close(self) -> None:
        """Stop the checker and the worker threads and release the backend's connections."""
        self._closed.set()
        self._wake.set()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    # --- running backend calls -------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        operation = getattr(function, "__name__", "call")
        breaker = self.breaker
        if breaker is not None and not breaker.allows_calls():
            self._tell("rejected", breaker.state)
            if self.observer is not None:
                # Counted as a call that failed "unavailable", so the share of failing calls
                # (the CitygateDirectoryDown alert) stays right while the breaker is open.
                self.observer(operation, "unavailable", 0.0)
            raise DirectoryUnavailable(
                f"the directory did not answer recently (circuit {breaker.state}); not asked again "
                f"for {breaker.seconds_to_probe():.1f} s"
            )
        self.calls[operation] += 1
        # Timed from here, so the figure includes waiting for a free worker thread: that is
        # what a request waiting on the directory experiences.
        started, result = time.perf_counter(), "error"
        try:
            if self._executor is None:
                answer = function(*args)
            else:
                loop = asyncio.get_running_loop()
                running = loop.run_in_executor(self._executor, function, *args)
                # The proxy's wait is bounded here, not by the sockets: a hung server (or a queue
                # for worker threads) costs a request at most call_timeout. The thread itself
                # finishes within ldap3's timeouts, and its late answer is dropped.
                timeout = self.guard.call_timeout if self.guard is not None else None
                answer = await asyncio.wait_for(running, timeout)
            result = "ok"
            if breaker is not None:
                breaker.call_succeeded()
            return answer
        except TimeoutError:
            if self.guard is None:  # only a guarded call has a timeout: this one is the backend's
                raise
            result = "unavailable"
            self._call_failed()
            raise DirectoryUnavailable(
                f"the directory did not answer within call_timeout ({self.guard.call_timeout:g} s)"
            ) from None
        except DirectoryUnavailable:
            result = "unavailable"
            self._call_failed()
            raise
        finally:
            if self.observer is not None:
                self.observer(operation, result, time.perf_counter() - started)

    def available(self) -> bool:
        """Whether decisions can rest on the directory (for /readyz): False from a failed check
        (or `failures` failed calls) until a probe finds it answering again. Reads the breaker's
        state only: no I/O, no directory call."""
        return self.breaker is None or self.breaker.state is State.CLOSED

    # --- the breaker and its checker thread -------------------------------------------------

    def start(self) -> None:
        """Check the directory in the background from now on (idempotent; the proxy calls it
        when it starts serving this gateway, so readiness follows the directory at once)."""
        if self.guard is None:
            return
        with self._checker_lock:
            if self._checker is None and not self._closed.is_set():
                self._checker = threading.Thread(
                    target=self._check_forever, name="citygate-directory-check", daemon=True
                )
                self._checker.start()

    def _call_failed(self) -> None:
        breaker = self.breaker
        if breaker is not None and breaker.call_failed():
            log.warning(
                "directory: not answering; calls fail at once until a probe finds it back "
                "(first probe in %.1f s)",
                breaker.seconds_to_probe(),
            )
            self._tell("opened", breaker.state)
            self.start()  # an open breaker needs its prober, whoever made this gateway
            self._wake.set()

    def _tell(self, event: str, state: State) -> None:
        observer = self.breaker_observer
        if observer is None:
            return
        try:
            observer(event, state)
        except Exception:  # counting must never break a directory call or the checker
            log.exception("citygate: could not count a directory breaker event")

    def _check_forever(self) -> None:
        assert self.guard is not None
        while not self._closed.is_set():
            try:
                delay = self._check_once()
            except Exception:
                log.exception("directory: the health check failed unexpectedly")
                delay = self.guard.check_interval
            self._wake.wait(delay)
            self._wake.clear()

    def _check_once(self) -> float:
        """Check or probe the directory if one is due; seconds until the next one."""
        breaker, guard = self.breaker, self.guard
        assert breaker is not None and guard is not None
        wait = breaker.seconds_to_probe()
        if wait > 0 or not breaker.begin_probe():
            return wait or guard.check_interval
        answered = self._probe()
        if self._closed.is_set():
            return 0.0  # replaced or stopped meanwhile: its verdict must not reach the metrics
        if answered:
            self._tell("probe_ok", breaker.state)
            if breaker.probe_succeeded():
                log.warning("directory: answers again; calls go to it again")
                self._tell("closed", breaker.state)
        else:
            self._tell("probe_failed", breaker.state)
            if breaker.probe_failed():
                log.warning(
                    "directory: a health check failed; calls fail at once until a probe finds it back"
                )
                self._tell("opened", breaker.state)
        return guard.check_interval if breaker.state is State.CLOSED else breaker.seconds_to_probe()

    def _probe(self) -> bool:
        """Whether the directory itself (never a cache) answers a check within call_timeout."""
        assert self.guard is not None and self._executor is not None
        try:
            running = self._executor.submit(self.backend.check)
        except RuntimeError:  # the gateway was closed meanwhile
            return False
        try:
            running.result(timeout=self.guard.call_timeout)
        except concurrent.futures.TimeoutError:
            running.cancel()  # still queued behind busy threads: never run it
            log.debug("directory: health check timed out after %g s", self.guard.call_timeout)
            return False
        except DirectoryUnavailable as exc:
            log.debug("directory: health check failed: %s", exc)
            return False
        except Exception:
            log.exception("directory: health check failed")  # fail closed: not answering
            return False
        return True

    async def _shared(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        """Await the call in flight for `key`, or start one: concurrent misses share it."""
        loop = asyncio.get_running_loop()
        flight = self._flights.get(key)
        if flight is None or flight.get_loop() is not loop:
            flight = asyncio.ensure_future(start())
            self._flights[key] = flight

            def landed(done: asyncio.Future[Any], key: Hashable = key) -> None:
                if self._flights.get(key) is done:
                    del self._flights[key]
                if not done.cancelled():
                    done.exception()  # retrieved here, so an unawaited failure is not reported twice

            flight.add_done_callback(landed)
        # A waiter that is cancelled (its client went away) must not cancel the others' call.
        return await asyncio.shield(flight)

    # --- people ------------------------------------------------------------------------------

    async def people(self, uids: Iterable[str]) -> dict[str, Person | None]:
        """Each uid's Person (None: no such account); uids the directory could not answer are absent."""
        uids = list(dict.fromkeys(uids))
        answers: dict[str, Person | None] = {}
        if self._executor is None:
            for uid in uids:
                try:
                    answers[uid] = await self._call(self.backend.lookup, uid)
                except DirectoryUnavailable as exc:
                    log.warning("directory unavailable looking up %s: %s", uid, exc)
            return answers
        misses = []
        for uid in uids:
            cached = self._people.get(uid.casefold())
            if cached is not None:
                person, age = cached
                if age < (self.cache.ttl if person is not None else self.cache.negative_ttl):
                    answers[uid] = person
                    continue
            misses.append(uid)
        if misses:
            fetched = await asyncio.gather(*(self._person(uid) for uid in misses))
            for uid, (known, person) in zip(misses, fetched, strict=True):
                if known:
                    answers[uid] = person
        return answers

    async def _person(self, uid: str) -> tuple[bool, Person | None]:
        key = uid.casefold()

        async def fetch() -> Person | None:
            started = self._clock()
            person = await self._call(self.backend.lookup, uid)
            self._people.put(key, person, started)
            return person

        try:
            return True, await self._shared(("person", key), fetch)
        except DirectoryUnavailable as exc:
            cached = self._people.get(key)
            if cached is not None and cached[1] < self.cache.grace:
                log.warning(
                    "directory unavailable looking up %s; using the answer from %.0f s ago: %s",
                    uid,
                    cached[1],
                    exc,
                )
                return True, cached[0]
            log.warning("directory unavailable looking up %s: %s", uid, exc)
            return False, None

    # --- passwords ---------------------------------------------------------------------------

    async def authenticate(self, uid: str, password: str) -> Verification:
        """What the directory says to this password (UNAVAILABLE: it could not say).

        For a network directory, a password accepted within `credentials_ttl` is accepted and a
        password refused within `failed_credentials_ttl` is refused again, both without a bind;
        past `bind_rate` binds a minute for the account, RATE_LIMITED without a bind.
        """
        if self._executor is None:
            try:
                return Verification(await self._call(self.backend.authenticate, uid, password))
            except DirectoryUnavailable as exc:
                log.warning("directory unavailable verifying a password for %s: %s", uid, exc)
                return Verification(BindOutcome.UNAVAILABLE)
        key = uid.casefold()
        if self._credentials.verified(key, password, self.cache.credentials_ttl):
            return Verification(BindOutcome.OK)
        refused = self._failures.refused(key, password, self.cache.failed_credentials_ttl)
        if refused is not None:
            self._count(self.refusal_observer, REMEMBERED_FAILURE)
            return Verification(refused, remembered=True)

        async def check() -> Verification:
            wait = self._bind_rate.take(key) if self._bind_rate is not None else 0.0
            if wait > 0:
                self._count(self.refusal_observer, RATE_LIMITED)
                return Verification(BindOutcome.RATE_LIMITED, retry_after=wait)
            started = self._clock()
            try:
                outcome = await self._call(self.backend.authenticate, uid, password)
            except DirectoryUnavailable:
                # Not counted against the account: an outage (or an open breaker) must give
                # `directory_unavailable`, not "too many attempts", once it is over.
                if self._bind_rate is not None:
                    self._bind_rate.give_back(key)
                raise
            self._count(self.bind_observer, outcome.value)
            if outcome is BindOutcome.OK:
                self._credentials.remember(key, password, started)
            else:
                self._failures.remember(key, password, outcome, started)
            return Verification(outcome)

        try:
            return await self._shared(("password", key, self._credentials.flight_key(key, password)), check)
        except DirectoryUnavailable as exc:
            self._count(self.bind_observer, BindOutcome.UNAVAILABLE.value)
            if self._credentials.verified(key, password, max(self.cache.grace, self.cache.credentials_ttl)):
                log.warning(
                    "directory unavailable verifying a password for %s; accepted recently: %s", uid, exc
                )
                return Verification(BindOutcome.OK)
            log.warning("directory unavailable verifying a password for %s: %s", uid, exc)
            return Verification(BindOutcome.UNAVAILABLE)

    @staticmethod
    def _count(observer: Callable[[str], None] | None, label: str) -> None:
        if observer is None:
            return
        try:
            observer(label)
        except Exception:  # counting must never break a password check
            log.exception("citygate: could not count a password check")

    # --- groups ------------------------------------------------------------------------------

    async def members(self, groups: Iterable[str]) -> list[Person]:
        """Everyone in any of the groups; groups the directory could not list are left out."""
        found: dict[str, Person] = {}
        names = list(dict.fromkeys(groups))
        listed: Sequence[list[Person] | None]
        if self._executor is None:
            answered: list[list[Person]] = []
            for group in names:
                try:
                    answered.append(await self._call(self.backend.group_members, group))
                except DirectoryUnavailable as exc:
                    log.warning("directory unavailable listing group %s: %s", group, exc)
            listed = answered
        else:
            # Every block page lists its approvers: when every group is cached and fresh, answer
            # without scheduling a task per group.
            listed = [self._fresh_group(group.strip().lower()) for group in names]
            if any(people is None for people in listed):
                listed = await asyncio.gather(*(self._group(group) for group in names))
        for people in listed:
            for person in people or ():
                found.setdefault(person.uid, person)
        return list(found.values())

    async def group_departments(
        self, groups: Iterable[str], attribute: str | None = None
    ) -> dict[str, frozenset[str]]:
        """Each group's department, for approving a group grant: the departments of its members
        ("" for a member with none), or, with `attribute`, that attribute of the group's entry
        (empty when it has none). Groups the directory could not answer for are left out."""
        answers: dict[str, frozenset[str]] = {}
        for group in dict.fromkeys(groups):
            if attribute is not None:
                found = await self._group_attribute(group, attribute)
                if found is not None:
                    answers[group] = frozenset(found[0:1]) if found[0] else frozenset()
                continue
            if self._executor is None:
                try:
                    people: list[Person] | None = await self._call(self.backend.group_members, group)
                except DirectoryUnavailable as exc:
                    log.warning("directory unavailable listing group %s: %s", group, exc)
                    continue
            else:
                people = self._fresh_group(group.strip().lower()) or await self._group(group)
            if people is not None:
                answers[group] = self._departments_of(people)
        return answers

    def _departments_of(self, people: list[Person]) -> frozenset[str]:
        """The members' departments, computed once per directory answer (the cached list)."""
        remembered = self._departments.get(id(people))
        if remembered is not None and remembered[0] is people:
            return remembered[1]
        departments = frozenset(person.department or "" for person in people)
        if len(self._departments) >= self._departments_size:
            self._departments.clear()
        self._departments[id(people)] = (people, departments)
        return departments

    async def _group_attribute(self, group: str, attribute: str) -> tuple[str] | None:
        """(the attribute's value, or "") through the cache; None when the directory could not say."""
        key = f"{group.strip().lower()}\0{attribute.lower()}"
        cached = self._group_attributes.get(key)
        if cached is not None and cached[1] < self.cache.ttl:
            return cached[0]
        try:
            started = self._clock()
            value = await self._call(self.backend.group_attribute, group, attribute)
        except DirectoryUnavailable as exc:
            if cached is not None and cached[1] < self.cache.grace:
                return cached[0]
            log.warning("directory unavailable reading %s of group %s: %s", attribute, group, exc)
            return None
        answer = (value or "",)
        self._group_attributes.put(key, answer, started)
        return answer

    def _fresh_group(self, key: str) -> list[Person] | None:
        cached = self._groups.get(key)
        return cached[0] if cached is not None and cached[1] < self.cache.ttl else None

    async def _group(self, group: str) -> list[Person] | None:
        key = group.strip().lower()
        fresh = self._fresh_group(key)
        if fresh is not None:
            return fresh

        async def fetch() -> list[Person]:
            started = self._clock()
            people = await self._call(self.backend.group_members, group)
            self._groups.put(key, people, started)
            return people

        try:
            return await self._shared(("group", key), fetch)
        except DirectoryUnavailable as exc:
            cached = self._groups.get(key)
            if cached is not None and cached[1] < self.cache.grace:
                return cached[0]
            log.warning("directory unavailable listing group %s: %s", group, exc)
            return None
