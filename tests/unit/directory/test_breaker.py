"""The directory circuit breaker's state machine, on a fake clock (pure logic, no directory).

The behaviour against a real slapd (timeouts, backoff counted at the server, readiness) is in
tests/integration/test_directory_breaker.py and tests/e2e/test_directory_faults.py.
"""

from citygate.directory.breaker import Breaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: Clock, failures: int = 3) -> Breaker:
    return Breaker(failures, 0.5, 4.0, clock=clock)


def test_failed_calls_in_a_row_open_it_and_a_success_resets_the_count():
    clock = Clock()
    b = breaker(clock)
    assert not b.call_failed() and not b.call_failed()
    b.call_succeeded()
    assert not b.call_failed() and not b.call_failed()
    assert b.state is State.CLOSED and b.allows_calls()
    assert b.call_failed()  # the third in a row
    assert b.state is State.OPEN and not b.allows_calls()
    assert b.opens == 1


def test_one_failed_health_check_opens_it():
    clock = Clock()
    b = breaker(clock)
    assert b.begin_probe()  # while closed every check may go out
    assert b.probe_failed() is True
    assert b.state is State.OPEN


def test_while_open_one_probe_per_backoff_and_the_backoff_doubles_up_to_the_cap():
    clock = Clock()
    b = breaker(clock, failures=1)
    assert b.call_failed()
    waits = []
    for _ in range(6):
        wait = b.seconds_to_probe()
        waits.append(wait)
        clock.advance(wait - 0.01)
        assert not b.begin_probe()  # not yet
        clock.advance(0.01)
        assert b.begin_probe()
        assert b.state is State.HALF_OPEN
        assert not b.begin_probe()  # one probe at a time
        assert not b.allows_calls()
        assert b.probe_failed() is False  # already open: not a new opening
        assert b.state is State.OPEN
    assert [round(w, 3) for w in waits] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.opens == 1


def test_a_successful_probe_closes_it_and_resets_the_backoff():
    clock = Clock()
    b = breaker(clock, failures=1)
    b.call_failed()
    clock.advance(0.5)
    assert b.begin_probe()
    b.probe_failed()
    clock.advance(1.0)
    assert b.begin_probe()
    assert b.probe_succeeded() is True
    assert b.state is State.CLOSED and b.allows_calls()
    assert b.seconds_to_probe() == 0.0
    b.call_failed()  # opens again: the backoff starts from the first one
    assert round(b.seconds_to_probe(), 3) == 0.5
    assert b.opens == 2


def test_calls_landing_after_it_opened_change_nothing():
    clock = Clock()
    b = breaker(clock, failures=1)
    b.call_failed()
    b.call_succeeded()  # a call let through before it opened, answering late
    assert b.state is State.OPEN
    assert b.call_failed() is False
    assert b.opens == 1
    assert round(b.seconds_to_probe(), 3) == 0.5  # nor do late failures push the probe back


def test_a_first_backoff_longer_than_the_cap_is_capped():
    clock = Clock()
    b = Breaker(1, 10.0, 2.0, clock=clock)
    b.call_failed()
    assert b.seconds_to_probe() == 2.0
