"""The circuit breaker's state machine, stepped with a fake clock."""

from __future__ import annotations

import pytest

from gateway.errors import CircuitOpen
from gateway.resilience.breaker import BreakerState, CircuitBreaker
from gateway.settings import BreakerSettings
from tests.clock import FakeClock


def make(**kw: float) -> tuple[CircuitBreaker, FakeClock, list[tuple[str, str]]]:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    settings = BreakerSettings(**{"failure_threshold": 3, "recovery_s": 30.0, **kw})  # type: ignore[arg-type]
    breaker = CircuitBreaker("src", settings, clock=clock,
                             on_state_change=lambda _n, old, new: changes.append((old.value, new.value)))
    return breaker, clock, changes


def fail(b: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        b.failure(b.acquire())


def test_opens_after_consecutive_failures_and_rejects() -> None:
    b, _, changes = make()
    fail(b, 2)
    b.success(b.acquire())  # a success resets the streak
    fail(b, 2)
    assert b.state is BreakerState.CLOSED
    fail(b)
    assert b.state is BreakerState.OPEN
    assert changes == [("CLOSED", "OPEN")]
    with pytest.raises(CircuitOpen, match="next probe in 30.0 s"):
        b.acquire()
    snap = b.snapshot()
    assert snap.opened_at is not None and snap.failures == 5


def test_opens_on_failure_rate_over_minimum_calls() -> None:
    b, clock, _ = make(failure_threshold=100, failure_rate=0.5, minimum_calls=10, window_s=60)
    for i in range(9):  # 4 failures out of 9, interleaved: below the minimum number of calls
        (b.failure if i % 2 else b.success)(b.acquire())
    assert b.state is BreakerState.CLOSED
    b.failure(b.acquire())  # 5 of 10
    assert b.state is BreakerState.OPEN


def test_failure_rate_window_forgets_old_calls() -> None:
    b, clock, _ = make(failure_threshold=100, failure_rate=0.5, minimum_calls=4, window_s=10)
    fail(b, 1)
    b.success(b.acquire())
    b.success(b.acquire())
    clock.advance(11)  # the old calls fall out of the window
    b.success(b.acquire())
    b.failure(b.acquire())
    b.success(b.acquire())
    assert b.state is BreakerState.CLOSED


def test_half_open_after_recovery_lets_limited_probes_then_closes() -> None:
    b, clock, changes = make(half_open_max_calls=2)
    fail(b, 3)
    clock.advance(29.9)
    with pytest.raises(CircuitOpen):
        b.acquire()
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    p1, p2 = b.acquire(), b.acquire()
    with pytest.raises(CircuitOpen, match="half-open"):
        b.acquire()  # only two probes
    b.success(p1)
    assert b.state is BreakerState.HALF_OPEN
    b.success(p2)
    assert b.state is BreakerState.CLOSED
    assert changes == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]
    assert b.snapshot().opened_at is None


def test_probe_failure_reopens_and_restarts_recovery() -> None:
    b, clock, _ = make()
    fail(b, 3)
    clock.advance(30)
    b.failure(b.acquire())
    assert b.state is BreakerState.OPEN
    clock.advance(29)
    assert b.state is BreakerState.OPEN
    clock.advance(1)
    assert b.state is BreakerState.HALF_OPEN


def test_ignored_outcomes_count_for_nothing_and_free_the_probe() -> None:
    b, clock, _ = make()
    for _ in range(10):
        b.ignore(b.acquire())  # our own deadline, a full bulkhead, a cancelled client
    assert b.state is BreakerState.CLOSED and b.snapshot().failures == 0
    fail(b, 3)
    clock.advance(30)
    probe = b.acquire()
    b.ignore(probe)  # the probe was cancelled: another may go
    b.success(b.acquire())
    assert b.state is BreakerState.CLOSED


def test_stale_permits_do_not_change_a_new_state() -> None:
    b, clock, _ = make()
    slow = b.acquire()  # issued while closed
    fail(b, 3)
    clock.advance(30)
    probe = b.acquire()
    b.success(slow)  # finished late: must not count as the probe's success
    assert b.state is BreakerState.HALF_OPEN
    b.failure(probe)
    assert b.state is BreakerState.OPEN
