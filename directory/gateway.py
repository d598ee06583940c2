"""The proxy's asynchronous door to a directory backend.

mitmproxy runs every connection on one event loop: a directory call made there would stall
all traffic, ordinary traffic included. The gateway runs blocking backends in its own bounded
pool of worker threads and turns "the directory could not answer" into absent answers, which
the decision core treats as `directory_unavailable` for social-media requests only.

For blocking backends (LDAP) answers are cached (see cache.py): a fresh cached answer is
returned without awaiting anything; concurrent misses for the same key share one directory
call; when the directory cannot answer, a cached answer younger than `grace` is still used.
Non-blocking backends (the static LDIF directory) answer from memory and are not cached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from citygate.directory.cache import CacheSettings, CredentialCache, TtlCache, cache_settings
from citygate.directory.model import Directory, DirectoryUnavailable, Person

if TYPE_CHECKING:
    from citygate.directory.settings import DirectorySettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Worker threads for directory calls; a hung server holds one per call for at most its timeout.
DEFAULT_WORKERS = 8


class DirectoryGateway:
    def __init__(
        self,
        backend: Directory,
        cache: CacheSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.backend = backend
        # When the directory last went from answering to not answering (monotonic), or None.
        self.unavailable_since: float | None = None
        self.cache = cache or CacheSettings()
        self._clock = clock
        size = self.cache.max_entries
        self._people: TtlCache[str, Person | None] = TtlCache(size, clock)
        self._groups: TtlCache[str, list[Person]] = TtlCache(size, clock)
        self._credentials = CredentialCache(size, clock)
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
        """Stop the worker threads and release the backend's connections."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    # --- running backend calls -------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        operation = getattr(function, "__name__", "call")
        self.calls[operation] += 1
        # Timed from here, so the figure includes waiting for a free worker thread: that is
        # what a request waiting on the directory experiences.
        started, result = time.perf_counter(), "error"
        try:
            if self._executor is None:
                answer = function(*args)
            else:
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(self._executor, function, *args)
            result = "ok"
            self.unavailable_since = None
            return answer
        except DirectoryUnavailable:
            result = "unavailable"
            if self.unavailable_since is None:
                self.unavailable_since = time.monotonic()
            raise
        finally:
            if self.observer is not None:
                self.observer(operation, result, time.perf_counter() - started)

    def available(self) -> bool:
        """Whether decisions can rest on the directory: it answers, or it stopped answering less
        than `cache.grace` seconds ago (cached answers still serve). For /readyz."""
        since = self.unavailable_since
        return since is None or time.monotonic() - since < self.cache.grace

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

    async def authenticate(self, uid: str, password: str) -> bool | None:
        """Whether the password is right; None when the directory could not say."""
        if self._executor is None:
            try:
                return await self._call(self.backend.authenticate, uid, password)
            except DirectoryUnavailable as exc:
                log.warning("directory unavailable verifying a password for %s: %s", uid, exc)
                return None
        key = uid.casefold()
        if self._credentials.verified(key, password, self.cache.credentials_ttl):
            return True

        async def check() -> bool:
            started = self._clock()
            accepted = await self._call(self.backend.authenticate, uid, password)
            if accepted is True:  # only successes are remembered
                self._credentials.remember(key, password, started)
            return accepted is True

        try:
            return await self._shared(("password", key, self._credentials.flight_key(key, password)), check)
        except DirectoryUnavailable as exc:
            if self._credentials.verified(key, password, max(self.cache.grace, self.cache.credentials_ttl)):
                log.warning(
                    "directory unavailable verifying a password for %s; accepted recently: %s", uid, exc
                )
                return True
            log.warning("directory unavailable verifying a password for %s: %s", uid, exc)
            return None

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
