"""Directory answers shared by the workers of one host, so that N workers ask the directory as one.

Each worker of `citygate run --workers N` keeps its own cache (gateway.py). Alone, that would
cost every employee up to N directory queries per cache TTL instead of one, since the kernel
spreads an employee's connections over the workers. So the workers also share a small SQLite
file in a folder the supervisor makes for the run: before asking the directory, a worker takes a
fresh answer another worker stored there, and it stores every answer it gets. The file sits
behind each worker's own cache and is only read in the gateway's threads, never on the event
loop. Answers keep the freshness rules of the cache settings (`ttl`, `negative_ttl`).

Passwords are never shared: each worker checks them itself and remembers only salted digests,
in its own memory (cache.py).

The file is a shortcut, never a source of truth: when it cannot be read or written, the worker
asks the directory as if it were alone, and says so once in the proxy log. `SharedFile` is that
handling of a shared SQLite file, also used for the addresses that signed in (addons/signed_in.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from citygate.directory.cache import CacheSettings
from citygate.directory.model import AccountState, BindOutcome, Directory, Person

if TYPE_CHECKING:
    from citygate.directory.settings import DirectorySettings

log = logging.getLogger(__name__)

#: Set by the supervisor of `citygate run --workers N` for its workers: the run's private folder.
SHARED_DIR_ENV = "CITYGATE_SHARED_DIR"
FILE_NAME = "directory-answers.sqlite"
# Answers older than this many TTLs are deleted now and then, so the file stays small.
_KEEP_TTLS = 10
_PRUNE_EVERY = 1_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    answer TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (scope, kind, key)
)
"""


class SharedFile:
    """One SQLite file the workers of a run share, opened on first use, in WAL mode.

    Used from worker threads only, one statement at a time (`run`). A file that cannot be opened,
    read or written makes `run` answer None, and says so once in the proxy log with `fallback`:
    what the worker does instead.
    """

    def __init__(
        self, path: Path, schema: str, what: str, fallback: str, *, pragmas: tuple[str, ...] = ()
    ) -> None:
        self.path = path
        self._schema = schema
        self._what = what
        self._fallback = fallback
        self._pragmas = pragmas
        self._lock = threading.Lock()  # one connection, used by threads in turn
        self._connection: sqlite3.Connection | None = None
        self._failed = False

    def run[T](self, work: Callable[[sqlite3.Connection], T]) -> T | None:
        """`work` on the open connection; None (and a warning, once) if the file is unusable."""
        with self._lock:
            try:
                return work(self._open())
            except (sqlite3.Error, OSError) as exc:
                if not self._failed:
                    self._failed = True
                    log.warning(
                        "citygate: the workers' %s (%s) cannot be used: %s; %s",
                        self._what,
                        self.path,
                        exc,
                        self._fallback,
                    )
                return None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(
                self.path, timeout=1.0, isolation_level=None, check_same_thread=False
            )
            # Several processes read while one writes.
            connection.execute("PRAGMA journal_mode=WAL")
            for pragma in self._pragmas:
                connection.execute(pragma)
            connection.execute(self._schema)
            self._connection = connection
        return self._connection


def shared_between_workers(
    backend: Directory, settings: DirectorySettings, cache: CacheSettings
) -> Directory:
    """`backend`, sharing its answers with the other workers of this run when there are any."""
    folder = os.environ.get(SHARED_DIR_ENV)
    if not folder or not backend.blocking:
        return backend  # a single process, or a directory read from memory: nothing to share
    return SharedAnswers(backend, Path(folder) / FILE_NAME, scope_of(settings), cache)


def scope_of(settings: DirectorySettings) -> str:
    """Which directory the answers come from: a configuration change must not reuse old answers."""
    described = json.dumps(
        [settings.backend, str(settings.base), settings.options], sort_keys=True, default=str
    )
    # Hashed: the section may hold the service account's password, which must not be stored.
    return hashlib.sha256(described.encode()).hexdigest()[:32]


class SharedAnswers:
    """A directory backend that first looks for a fresh answer another worker got."""

    blocking = True

    def __init__(
        self,
        backend: Directory,
        path: Path,
        scope: str,
        cache: CacheSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.path = path
        self.scope = scope
        self.cache = cache
        self._clock = clock  # wall time: the workers are separate processes
        # A lost answer only costs a directory query: no sync to disk.
        self._file = SharedFile(
            path,
            _SCHEMA,
            "shared directory answers",
            "this worker asks the directory on its own",
            pragmas=("PRAGMA synchronous=OFF",),
        )
        self._lock = threading.Lock()  # the call counts, kept by the gateway's threads
        self._writes = 0
        #: Calls that reached the directory itself, by method name.
        self.directory_calls: dict[str, int] = {}

    # --- the Directory protocol ----------------------------------------------------------------

    def lookup(self, uid: str) -> Person | None:
        key = uid.casefold()
        found = self._read("person", key, _person_or_none)
        if found is not None:
            answer, age = found
            if age < (self.cache.ttl if answer is not None else self.cache.negative_ttl):
                return answer
        self._count("lookup")
        person = self.backend.lookup(uid)
        self._write("person", key, None if person is None else _fields(person))
        return person

    def group_members(self, group: str) -> list[Person]:
        key = group.strip().lower()
        found = self._read("group", key, _people)
        if found is not None and found[1] < self.cache.ttl:
            return found[0]
        self._count("group_members")
        people = self.backend.group_members(group)
        self._write("group", key, [_fields(person) for person in people])
        return people

    def authenticate(self, uid: str, password: str) -> BindOutcome:
        self._count("authenticate")
        return self.backend.authenticate(uid, password)

    def group_attribute(self, group: str, attribute: str) -> str | None:
        # Read through: one small query per group and cache TTL, in each worker's own cache.
        self._count("group_attribute")
        return self.backend.group_attribute(group, attribute)

    def check(self) -> None:
        # Never answered from the file: an answer another worker stored says nothing about
        # whether the directory answers now.
        self.backend.check()

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()
        self._file.close()

    # --- the shared file -------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self.directory_calls[name] = self.directory_calls.get(name, 0) + 1

    def _read[T](self, kind: str, key: str, decode: Callable[[Any], T]) -> tuple[T, float] | None:
        """The answer `_write` stored, decoded, and its age in seconds; None when there is none.

        A stored answer that cannot be decoded (damaged, or written by another version) counts
        as none: the directory is asked again, and the new answer replaces it.
        """
        row = self._file.run(
            lambda connection: connection.execute(
                "SELECT answer, at FROM answers WHERE scope = ? AND kind = ? AND key = ?",
                (self.scope, kind, key),
            ).fetchone()
        )
        if row is None:
            return None
        try:
            answer = decode(json.loads(row[0]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "citygate: a shared %s answer for %r cannot be read (%s); asking the directory",
                kind,
                key,
                exc,
            )
            return None
        return answer, max(0.0, self._clock() - row[1])

    def _write(self, kind: str, key: str, answer: object) -> None:
        now = self._clock()

        def write(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                (self.scope, kind, key, json.dumps(answer), now),
            )
            self._writes += 1
            if self._writes % _PRUNE_EVERY == 0:
                oldest = now - _KEEP_TTLS * max(self.cache.ttl, self.cache.negative_ttl)
                connection.execute("DELETE FROM answers WHERE at < ?", (oldest,))

        self._file.run(write)


def _fields(person: Person) -> dict[str, object]:
    return {
        "uid": person.uid,
        "name": person.name,
        "department": person.department,
        "title": person.title,
        "groups": sorted(person.groups),
        "state": person.state.value,
        "mail": person.mail,
    }


def _person_or_none(fields: object) -> Person | None:
    return None if fields is None else _person(fields)


def _people(rows: list[object]) -> list[Person]:
    return [_person(fields) for fields in rows]


def _person(fields: object) -> Person:
    if not isinstance(fields, dict):
        raise TypeError(f"a person is a mapping of fields, not {type(fields).__name__}")
    return Person(
        fields["uid"],
        fields["name"],
        fields["department"],
        title=fields["title"],
        groups=frozenset(fields["groups"]),
        state=AccountState(fields["state"]),
        mail=fields["mail"],
    )
