"""The gateway's caches: TTLs, bounds, grace, single-flight, and the password cache.

The backend here is the real static directory (demo.ldif) made to behave like a network one:
declared blocking (so the gateway caches it and runs it in worker threads), counting its
calls, and switchable to "unavailable". Time is a fake clock, so TTLs need no sleeping.
"""

import asyncio
import threading
from pathlib import Path

import pytest

from citygate.directory.breaker import GuardSettings
from citygate.directory.cache import CacheSettings, CredentialCache, TtlCache
from citygate.directory.gateway import DirectoryGateway, Verification
from citygate.directory.model import BindOutcome, DirectoryUnavailable
from citygate.directory.static import StaticDirectory

DEMO = Path(__file__).resolve().parents[3] / "directory" / "demo.ldif"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class NetworkLikeDirectory:
    """StaticDirectory answers, but blocking, counted, and able to be down or slow."""

    blocking = True

    def __init__(self) -> None:
        self.inner = StaticDirectory.from_ldif(DEMO)
        self.calls: list[tuple[str, str]] = []
        self.down = False
        self.gate: threading.Event | None = None  # when set, calls wait for it
        self.threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def _enter(self, name: str, arg: str) -> None:
        with self._lock:
            self.calls.append((name, arg))
            self.threads.add(threading.current_thread())
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.down:
            raise DirectoryUnavailable("test directory is down")

    def lookup(self, uid):
        self._enter("lookup", uid)
        return self.inner.lookup(uid)

    def authenticate(self, uid, password):
        self._enter("authenticate", uid)
        return self.inner.authenticate(uid, password)

    def group_members(self, group):
        self._enter("group_members", group)
        return self.inner.group_members(group)

    def group_attribute(self, group, attribute):
        self._enter("group_attribute", group)
        return self.inner.group_attribute(group, attribute)

    def count(self, name: str) -> int:
        return sum(1 for call, _ in self.calls if call == name)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def backend():
    return NetworkLikeDirectory()


def gateway_for(backend, clock, **cache):
    settings = CacheSettings(**({"ttl": 60, "negative_ttl": 10, "grace": 300, "credentials_ttl": 30} | cache))
    return DirectoryGateway(backend, settings, clock=clock)


def run(coroutine):
    return asyncio.run(coroutine)


# --- TtlCache / CredentialCache ---------------------------------------------------------------


def test_ttl_cache_is_bounded_and_least_recently_used_goes_first(clock):
    cache = TtlCache(3, clock)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") == ("A", 0)  # a is now the most recently used
    cache.put("d", "D")
    assert len(cache) == 3
    assert "b" not in cache
    assert {"a", "c", "d"} == {key for key in "abcd" if key in cache}


def test_ttl_cache_reports_age(clock):
    cache = TtlCache(10, clock)
    cache.put("a", 1, at=clock() - 5)
    clock.advance(2)
    assert cache.get("a") == (1, 7)


def test_credential_cache_holds_no_password_and_compares_exactly(clock):
    cache = CredentialCache(10, clock)
    cache.remember("jlee", "jlee-pass")
    stored = cache._entries.get("jlee")[0]
    assert b"jlee-pass" not in stored.salt + stored.digest
    assert "jlee-pass" not in repr(stored)
    assert cache.verified("jlee", "jlee-pass", 30)
    for wrong in ("jlee-pas", "jlee-pass ", "JLEE-PASS", ""):
        assert not cache.verified("jlee", wrong, 30)
    assert not cache.verified("mnguyen", "jlee-pass", 30)
    clock.advance(30)
    assert not cache.verified("jlee", "jlee-pass", 30)


def test_credential_entries_are_salted_per_entry(clock):
    cache = CredentialCache(10, clock)
    cache.remember("a", "same")
    cache.remember("b", "same")
    first, second = cache._entries.get("a")[0], cache._entries.get("b")[0]
    assert first.salt != second.salt
    assert first.digest != second.digest


def test_credential_cache_is_keyed_per_process():
    one, two = CredentialCache(10, Clock()), CredentialCache(10, Clock())
    assert one.flight_key("jlee", "pw") != two.flight_key("jlee", "pw")


# --- people -----------------------------------------------------------------------------------


def test_people_are_cached_for_the_ttl(backend, clock):
    gateway = gateway_for(backend, clock)
    first = run(gateway.people(["jlee", "ahernandez"]))
    assert first["jlee"].department == "Parks"
    assert backend.count("lookup") == 2
    clock.advance(59)
    assert run(gateway.people(["jlee", "ahernandez", "JLee"])) == {**first, "JLee": first["jlee"]}
    assert backend.count("lookup") == 2
    clock.advance(1)
    run(gateway.people(["jlee"]))
    assert backend.count("lookup") == 3


def test_no_such_person_is_cached_for_the_negative_ttl(backend, clock):
    gateway = gateway_for(backend, clock)
    assert run(gateway.people(["nobody"])) == {"nobody": None}
    clock.advance(9)
    assert run(gateway.people(["nobody"])) == {"nobody": None}
    assert backend.count("lookup") == 1
    clock.advance(1)
    run(gateway.people(["nobody"]))
    assert backend.count("lookup") == 2


def test_a_fresh_answer_never_awaits(backend, clock):
    gateway = gateway_for(backend, clock)
    run(gateway.people(["jlee"]))
    coroutine = gateway.people(["jlee"])
    # One step runs it to the end: it never suspended on a thread or a future.
    with pytest.raises(StopIteration) as done:
        coroutine.send(None)
    assert done.value.value["jlee"].uid == "jlee"


def test_people_cache_is_bounded(backend, clock):
    gateway = gateway_for(backend, clock, max_entries=2)
    run(gateway.people(["jlee", "mnguyen", "tsmith"]))
    assert len(gateway._people) == 2


def test_directory_down_without_a_cached_answer_leaves_the_uid_out(backend, clock):
    gateway = gateway_for(backend, clock)
    backend.down = True
    assert run(gateway.people(["jlee", "ahernandez"])) == {}


def test_grace_uses_a_recent_answer_while_the_directory_is_down(backend, clock):
    gateway = gateway_for(backend, clock, grace=300)
    known = run(gateway.people(["jlee", "nobody"]))
    backend.down = True
    clock.advance(299)
    assert run(gateway.people(["jlee", "nobody"])) == known
    assert backend.count("lookup") == 4  # it did ask: the answers were stale
    clock.advance(1)
    assert run(gateway.people(["jlee", "nobody"])) == {}


def test_stale_answers_are_not_used_while_the_directory_answers(backend, clock):
    gateway = gateway_for(backend, clock)
    run(gateway.people(["jlee"]))
    backend.inner._accounts.pop("jlee")  # the account was deleted
    clock.advance(61)
    assert run(gateway.people(["jlee"])) == {"jlee": None}


def test_zero_grace_means_no_stale_answers(backend, clock):
    gateway = gateway_for(backend, clock, grace=0)
    run(gateway.people(["jlee"]))
    backend.down = True
    clock.advance(61)
    assert run(gateway.people(["jlee"])) == {}


def test_concurrent_misses_share_one_directory_call(backend, clock):
    gateway = gateway_for(backend, clock)
    backend.gate = threading.Event()

    async def many():
        tasks = [asyncio.ensure_future(gateway.people(["jlee", "ahernandez"])) for _ in range(20)]
        await asyncio.sleep(0.05)  # every task is now waiting on the calls in flight
        backend.gate.set()
        return await asyncio.gather(*tasks)

    results = run(many())
    assert all(result == results[0] for result in results)
    assert sorted(backend.calls) == [("lookup", "ahernandez"), ("lookup", "jlee")]


def test_a_cancelled_waiter_does_not_cancel_the_shared_call(backend, clock):
    gateway = gateway_for(backend, clock)
    backend.gate = threading.Event()

    async def scenario():
        first = asyncio.ensure_future(gateway.people(["jlee"]))
        second = asyncio.ensure_future(gateway.people(["jlee"]))
        await asyncio.sleep(0.02)
        first.cancel()
        backend.gate.set()
        return await second

    assert run(scenario())["jlee"].uid == "jlee"
    assert backend.count("lookup") == 1


def test_directory_calls_run_off_the_event_loop_thread(backend, clock):
    gateway = gateway_for(backend, clock)

    async def everything():
        await gateway.people(["jlee", "nobody"])
        await gateway.authenticate("jlee", "jlee-pass")
        await gateway.members(["directors"])
        return threading.current_thread()

    loop_thread = run(everything())
    assert len(backend.calls) == 4
    assert backend.threads and loop_thread not in backend.threads
    assert all(thread.name.startswith("citygate-directory") for thread in backend.threads)


def test_static_backend_is_answered_directly_and_not_cached(clock):
    static = StaticDirectory.from_ldif(DEMO)
    gateway = DirectoryGateway(static, clock=clock)
    assert run(gateway.people(["jlee"]))["jlee"].uid == "jlee"
    assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    assert run(gateway.authenticate("bjones", "bjones-pass")) == Verification(BindOutcome.DISABLED)
    assert len(gateway._people) == 0 and len(gateway._credentials) == 0


# --- passwords --------------------------------------------------------------------------------


OK = Verification(BindOutcome.OK)
WRONG = Verification(BindOutcome.WRONG_PASSWORD)
REMEMBERED = Verification(BindOutcome.WRONG_PASSWORD, remembered=True)
UNAVAILABLE = Verification(BindOutcome.UNAVAILABLE)


def test_a_verified_password_is_not_checked_again_within_the_ttl(backend, clock):
    gateway = gateway_for(backend, clock, credentials_ttl=30)
    assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    clock.advance(29)
    assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    assert run(gateway.authenticate("JLEE", "jlee-pass")) == OK
    assert backend.count("authenticate") == 1
    clock.advance(1)
    assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    assert backend.count("authenticate") == 2


def test_failures_are_never_cached_as_successes(backend, clock):
    gateway = gateway_for(backend, clock, failed_credentials_ttl=0)
    assert run(gateway.authenticate("jlee", "wrong")) == WRONG
    assert run(gateway.authenticate("jlee", "wrong")) == WRONG
    assert backend.count("authenticate") == 2
    run(gateway.authenticate("jlee", "jlee-pass"))
    # A cached success for jlee does not vouch for any other password, or for anyone else.
    assert run(gateway.authenticate("jlee", "wrong")) == WRONG
    assert run(gateway.authenticate("jlee", "")) == WRONG
    assert run(gateway.authenticate("mnguyen", "jlee-pass")) == WRONG
    assert backend.count("authenticate") == 6


def test_a_refused_password_is_not_sent_again_within_failed_credentials_ttl(backend, clock):
    gateway = gateway_for(backend, clock, failed_credentials_ttl=300)
    refusals: list[str] = []
    gateway.refusal_observer = refusals.append
    assert run(gateway.authenticate("jlee", "wrong")) == WRONG
    for _ in range(19):
        assert run(gateway.authenticate("JLee", "wrong")) == REMEMBERED
    assert backend.count("authenticate") == 1
    assert refusals == ["remembered_failure"] * 19
    # Another wrong password, the right one, another user: each asks the directory.
    assert run(gateway.authenticate("jlee", "wrong2")) == WRONG
    assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    assert run(gateway.authenticate("mnguyen", "wrong")) == WRONG
    assert backend.count("authenticate") == 4
    # The account's state is remembered with the refusal, and forgotten after the ttl.
    assert run(gateway.authenticate("bjones", "bjones-pass")) == Verification(BindOutcome.DISABLED)
    assert run(gateway.authenticate("bjones", "bjones-pass")) == Verification(
        BindOutcome.DISABLED, remembered=True
    )
    clock.advance(300)
    assert run(gateway.authenticate("jlee", "wrong")) == WRONG
    assert backend.count("authenticate") == 6


def test_nothing_about_a_refused_password_is_kept_in_clear(backend, clock):
    gateway = gateway_for(backend, clock)
    run(gateway.authenticate("jlee", "s3cret-wrong"))
    assert "s3cret-wrong" not in repr(gateway._failures._entries._entries)


def test_binds_per_account_are_rate_limited(backend, clock):
    gateway = DirectoryGateway(
        backend, CacheSettings(failed_credentials_ttl=300), clock=clock, guard=GuardSettings(bind_rate=3)
    )
    binds: list[str] = []
    gateway.bind_observer = binds.append
    try:
        # A browser cycling through stale passwords: three binds, then none for a minute.
        assert [run(gateway.authenticate("jlee", f"stale-{i}")).outcome for i in range(3)] == [
            BindOutcome.WRONG_PASSWORD
        ] * 3
        limited = run(gateway.authenticate("jlee", "stale-3"))
        assert limited.outcome is BindOutcome.RATE_LIMITED
        assert 59 <= limited.retry_after <= 60
        # Even the right password waits: it would cost a bind too.
        assert run(gateway.authenticate("jlee", "jlee-pass")).outcome is BindOutcome.RATE_LIMITED
        # Someone else is not affected, and a remembered failure costs no bind at all.
        assert run(gateway.authenticate("mnguyen", "mnguyen-pass")) == OK
        assert run(gateway.authenticate("jlee", "stale-0")) == REMEMBERED
        assert backend.count("authenticate") == 4
        assert binds == ["wrong_password"] * 3 + ["ok"]
        clock.advance(60)
        assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    finally:
        gateway.close()


def test_checks_the_directory_could_not_answer_do_not_count_against_the_rate(backend, clock):
    gateway = DirectoryGateway(
        backend, CacheSettings(), clock=clock, guard=GuardSettings(bind_rate=2, failures=1000)
    )
    try:
        backend.down = True
        for _ in range(5):
            assert run(gateway.authenticate("jlee", "jlee-pass")) == UNAVAILABLE
        backend.down = False
        assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    finally:
        gateway.close()


def test_password_check_with_the_directory_down(backend, clock):
    gateway = gateway_for(backend, clock, credentials_ttl=30, grace=300)
    backend.down = True
    assert run(gateway.authenticate("jlee", "jlee-pass")) == UNAVAILABLE
    backend.down = False
    assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    backend.down = True
    clock.advance(100)  # past credentials_ttl, within grace
    assert run(gateway.authenticate("jlee", "jlee-pass")) == OK
    assert run(gateway.authenticate("jlee", "wrong")) == UNAVAILABLE
    clock.advance(200)
    assert run(gateway.authenticate("jlee", "jlee-pass")) == UNAVAILABLE


def test_concurrent_checks_of_the_same_password_share_one_call(backend, clock):
    gateway = gateway_for(backend, clock)
    backend.gate = threading.Event()

    async def many():
        tasks = [asyncio.ensure_future(gateway.authenticate("jlee", "jlee-pass")) for _ in range(10)]
        tasks.append(asyncio.ensure_future(gateway.authenticate("jlee", "wrong")))
        await asyncio.sleep(0.05)
        backend.gate.set()
        return await asyncio.gather(*tasks)

    assert run(many()) == [OK] * 10 + [WRONG]
    assert backend.count("authenticate") == 2


# --- groups -----------------------------------------------------------------------------------


def test_group_members_are_cached_and_fall_back_within_grace(backend, clock):
    gateway = gateway_for(backend, clock)
    directors = run(gateway.members(["directors", "city-managers"]))
    assert {p.uid for p in directors} == {"ahernandez", "rpatel", "lgarcia", "pkim", "tsmith"}
    run(gateway.members(["directors"]))
    assert backend.count("group_members") == 2
    backend.down = True
    clock.advance(100)
    assert {p.uid for p in run(gateway.members(["directors"]))} == {"ahernandez", "rpatel", "lgarcia", "pkim"}
    clock.advance(300)
    assert run(gateway.members(["directors"])) == []


def test_a_group_s_departments_are_asked_once_per_ttl_by_members_or_attribute(backend, clock):
    gateway = gateway_for(backend, clock)

    by_members = [run(gateway.group_departments(["parks-social-team"])) for _ in range(3)]
    by_attribute = [run(gateway.group_departments(["parks-social-team"], "cn")) for _ in range(3)]

    assert by_members == [{"parks-social-team": frozenset({"Parks"})}] * 3
    assert by_attribute == [{"parks-social-team": frozenset({"parks-social-team"})}] * 3
    assert (backend.count("group_members"), backend.count("group_attribute")) == (1, 1)
    clock.advance(60)
    run(gateway.group_departments(["parks-social-team"], "cn"))
    assert backend.count("group_attribute") == 2
    assert run(gateway.group_departments(["nobody-here"], "cn")) == {"nobody-here": frozenset()}


def test_a_group_the_directory_cannot_answer_for_is_left_out(backend, clock):
    gateway = gateway_for(backend, clock, grace=0)
    backend.down = True
    assert run(gateway.group_departments(["parks-social-team"])) == {}
    assert run(gateway.group_departments(["parks-social-team"], "cn")) == {}
