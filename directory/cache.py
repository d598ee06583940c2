"""Bounded TTL caches for directory answers, and a cache of verified passwords that holds no password.

A browser sends hundreds of requests a minute and each one names its user; the directory must
not see each of them. Answers are kept for `ttl` seconds (a "no such person" for
`negative_ttl`); when the directory cannot answer, an answer younger than `grace` is still
used. Successful password checks are remembered for `credentials_ttl` as an HMAC-SHA256 of the
password, keyed by a random per-process key and salted per entry, and compared in constant time:
a memory dump does not reveal passwords. Refused passwords are remembered the same way, with the
directory's answer, for `failed_credentials_ttl`: a browser retrying a stale password costs the
directory one bind, not one per request, so it cannot lock the account.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

from citygate.directory.model import BindOutcome
from citygate.directory.problems import ConfigError, Problems

CACHE_KEYS = ("ttl", "negative_ttl", "grace", "max_entries", "credentials_ttl", "failed_credentials_ttl")
_DAY = 86_400


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How long directory answers are trusted, in seconds, and how many are kept."""

    ttl: float = 60.0
    negative_ttl: float = 30.0
    grace: float = 300.0
    max_entries: int = 50_000
    credentials_ttl: float = 300.0
    # How long a refused (user, password) is answered from memory instead of binding again.
    failed_credentials_ttl: float = 300.0


def cache_settings(section: object, config_path: str | Path) -> CacheSettings:
    """The `directory: {cache: {...}}` section as CacheSettings; ConfigError naming each mistake."""
    path = Path(config_path)
    problems = Problems()
    if section is None:
        return CacheSettings()
    if not isinstance(section, Mapping):
        problems.error(
            path,
            getattr(section, "line", None),
            "directory.cache must be a mapping of settings",
            "e.g. cache: {ttl: 60, negative_ttl: 30, grace: 300, max_entries: 50000, credentials_ttl: 300, "
            "failed_credentials_ttl: 300}",
        )
        raise ConfigError(problems)
    line_of = getattr(section, "line_of", None)

    def line(key: str) -> int | None:
        return line_of(key) if callable(line_of) else None

    for key in sorted(set(section) - set(CACHE_KEYS)):
        problems.error(
            path,
            line(key),
            f'directory.cache: unknown setting "{key}"',
            f"known settings: {', '.join(CACHE_KEYS)}",
        )
    defaults = CacheSettings()
    values: dict[str, float] = {}
    for key in CACHE_KEYS:
        default = getattr(defaults, key)
        value = section.get(key, default)
        whole = key == "max_entries"
        low, high = (1, 10_000_000) if whole else (0, _DAY)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (whole and not isinstance(value, int))
            or not low <= value <= high
        ):
            kind = "a whole number" if whole else "a number of seconds"
            problems.error(
                path,
                line(key),
                f"directory.cache.{key} must be {kind} from {low} to {high}, not {value!r}",
                f"e.g. {key}: {default}",
            )
            continue
        values[key] = value
    if problems.errors:
        raise ConfigError(problems)
    return CacheSettings(**values)  # type: ignore[arg-type]


class TtlCache[K: Hashable, V]:
    """A bounded LRU map of key -> (value, time stored); thread-safe; ages come from `clock`."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> tuple[V, float] | None:
        """The value and its age in seconds, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        value, stored = entry
        return value, self._clock() - stored

    def put(self, key: K, value: V, at: float | None = None) -> None:
        """Store `value` as learnt at `at` (default: now); the least recently used entry goes first."""
        stored = self._clock() if at is None else at
        with self._lock:
            self._entries[key] = (value, stored)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


@dataclass(frozen=True, slots=True)
class _Verified:
    salt: bytes
    digest: bytes

    def __repr__(self) -> str:
        return "_Verified(***)"


class _PasswordDigest:
    """HMAC-SHA256 of (salt, user, password) under a random key of this object's own."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)  # per process: nothing stored survives a restart

    def __call__(self, salt: bytes, user: str, password: str) -> bytes:
        user_bytes = user.encode("utf-8", "surrogatepass")
        message = len(user_bytes).to_bytes(4, "big") + user_bytes + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, salt + message, hashlib.sha256).digest()


class CredentialCache:
    """Passwords the directory accepted recently, as salted keyed hashes, one per user."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._digest = _PasswordDigest()
        self._entries: TtlCache[str, _Verified] = TtlCache(max_entries, clock)

    def remember(self, user: str, password: str, at: float | None = None) -> None:
        salt = secrets.token_bytes(16)
        self._entries.put(user, _Verified(salt, self._digest(salt, user, password)), at)

    def verified(self, user: str, password: str, max_age: float) -> bool:
        """Whether this password was accepted for this user less than `max_age` seconds ago."""
        entry = self._entries.get(user)
        if entry is None or not password:
            return False
        stored, age = entry
        if age >= max_age:
            return False
        return hmac.compare_digest(stored.digest, self._digest(stored.salt, user, password))

    def flight_key(self, user: str, password: str) -> bytes:
        """A key that identifies (user, password) among checks in progress, without the password."""
        return self._digest(b"in-flight", user, password)

    def forget(self, user: str) -> None:
        self._entries.discard(user)

    def __len__(self) -> int:
        return len(self._entries)


#: Refused passwords remembered per user: enough for a browser cycling through a few stale ones.
FAILURES_PER_USER = 8


@dataclass(frozen=True, slots=True)
class _Refused:
    salt: bytes
    digest: bytes
    outcome: BindOutcome

    def __repr__(self) -> str:
        return f"_Refused(***, {self.outcome})"


class FailedCredentials:
    """Passwords the directory refused recently, per user, as salted keyed hashes with its answer."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._digest = _PasswordDigest()
        self._entries: TtlCache[str, tuple[_Refused, ...]] = TtlCache(max_entries, clock)

    def remember(self, user: str, password: str, outcome: BindOutcome, at: float | None = None) -> None:
        salt = secrets.token_bytes(16)
        refused = _Refused(salt, self._digest(salt, user, password), outcome)
        # The entry's age is its newest refusal's: each refusal is kept until the user's last
        # one is max_age old, which errs on the side of asking the directory less.
        kept = self._entries.get(user)
        earlier = kept[0][-(FAILURES_PER_USER - 1) :] if kept is not None else ()
        self._entries.put(user, (*earlier, refused), at)

    def refused(self, user: str, password: str, max_age: float) -> BindOutcome | None:
        """The directory's answer when it refused this password less than `max_age` s ago."""
        entry = self._entries.get(user)
        if entry is None or entry[1] >= max_age:
            return None
        found = None
        for refused in entry[0]:  # every entry compared, so timing does not tell which matched
            if hmac.compare_digest(refused.digest, self._digest(refused.salt, user, password)):
                found = refused.outcome
        return found

    def forget(self, user: str) -> None:
        self._entries.discard(user)
