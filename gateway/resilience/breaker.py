"""A circuit breaker per upstream source.

Why not a library: pybreaker, aiobreaker and purgatory (checked 2026-11) cannot
express all of what we need together: a failure *rate* over a minimum number of
calls in a time window next to a consecutive-failure threshold, a limited number
of half-open probes, outcomes that are ignored rather than counted (our own
deadline, a full bulkhead, a cancelled client), and an injected clock. The state
machine is small, so it lives here with its own test suite.

::

    CLOSED --(consecutive failures >= threshold, or
              failure rate >= rate over >= minimum_calls in window)--> OPEN
    OPEN   --(recovery_s elapsed, on the next call)--> HALF_OPEN
    HALF_OPEN: at most ``half_open_max_calls`` probes are let through;
               a probe failure --> OPEN (the recovery clock restarts),
               ``half_open_max_calls`` probe successes --> CLOSED.

A call takes a :class:`Permit` with :meth:`CircuitBreaker.acquire` and reports
exactly one of :meth:`success`, :meth:`failure` or :meth:`ignore`. Permits
issued before a state change are "stale": their outcomes update nothing.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import strawberry

from gateway.errors import CircuitOpen
from gateway.resilience.clock import Clock
from gateway.settings import BreakerSettings

log = logging.getLogger("gateway.breaker")


@strawberry.enum(description="State of a source's circuit breaker.")
class BreakerState(enum.Enum):
    CLOSED = strawberry.enum_value("CLOSED", description="Calls flow normally.")
    OPEN = strawberry.enum_value("OPEN", description="Calls are not made; cached copies are served.")
    HALF_OPEN = strawberry.enum_value("HALF_OPEN", description="A limited number of probe calls test recovery.")


@dataclass(frozen=True, slots=True)
class Permit:
    generation: int
    probe: bool


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    state: BreakerState
    failures: int  # failures counted in the current window (or probes, when half-open)
    opened_at: datetime | None
    consecutive_failures: int


StateListener = Callable[[str, BreakerState, BreakerState], None]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Clock,
        on_state_change: StateListener | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._listener = on_state_change
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()  # (monotonic time, failed)
        self._opened_mono: float | None = None
        self._opened_at: datetime | None = None
        self._probes_in_flight = 0
        self._probe_successes = 0

    # -- inspection ------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        self._maybe_half_open()
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        self._trim(self._clock.monotonic())
        return BreakerSnapshot(
            state=state,
            failures=sum(1 for _, failed in self._window if failed),
            opened_at=self._opened_at,
            consecutive_failures=self._consecutive,
        )

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless OPEN)."""
        if self._state is not BreakerState.OPEN or self._opened_mono is None:
            return 0.0
        return max(0.0, self._opened_mono + self.settings.recovery_s - self._clock.monotonic())

    # -- the call protocol --------------------------------------------------
    def acquire(self) -> Permit:
        """Let a call through or raise :class:`CircuitOpen`."""
        self._maybe_half_open()
        if self._state is BreakerState.CLOSED:
            return Permit(self._generation, probe=False)
        if self._state is BreakerState.HALF_OPEN:
            used = self._probes_in_flight + self._probe_successes
            if used < self.settings.half_open_max_calls:
                self._probes_in_flight += 1
                return Permit(self._generation, probe=True)
            raise CircuitOpen(f"{self.name}: circuit half-open, probe already in flight")
        raise CircuitOpen(f"{self.name}: circuit open, next probe in {self.retry_in():.1f} s")

    def success(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return
        if permit.probe:
            self._probes_in_flight -= 1
            self._probe_successes += 1
            if self._probe_successes >= self.settings.half_open_max_calls:
                self._transition(BreakerState.CLOSED)
            return
        self._consecutive = 0
        self._record(failed=False)

    def failure(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return
        if permit.probe:
            self._probes_in_flight -= 1
            self._transition(BreakerState.OPEN)
            return
        self._consecutive += 1
        self._record(failed=True)
        if self._should_open():
            self._transition(BreakerState.OPEN)

    def ignore(self, permit: Permit) -> None:
        """The call ended for a reason that says nothing about the upstream."""
        if permit.generation == self._generation and permit.probe:
            self._probes_in_flight -= 1

    # -- internals ----------------------------------------------------------
    def _record(self, *, failed: bool) -> None:
        now = self._clock.monotonic()
        self._window.append((now, failed))
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.settings.window_s
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()

    def _should_open(self) -> bool:
        s = self.settings
        if self._consecutive >= s.failure_threshold:
            return True
        calls = len(self._window)
        if calls >= s.minimum_calls:
            failures = sum(1 for _, failed in self._window if failed)
            return failures / calls >= s.failure_rate
        return False

    def _maybe_half_open(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._opened_mono is not None
            and self._clock.monotonic() - self._opened_mono >= self.settings.recovery_s
        ):
            self._transition(BreakerState.HALF_OPEN)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._probes_in_flight = 0
        self._probe_successes = 0
        if new is BreakerState.OPEN:
            self._opened_mono = self._clock.monotonic()
            self._opened_at = self._clock.now()
        elif new is BreakerState.CLOSED:
            self._opened_mono = None
            self._opened_at = None
            self._consecutive = 0
            self._window.clear()
        log.warning("circuit breaker %s: %s -> %s", self.name, old.value, new.value)
        if self._listener is not None:
            self._listener(self.name, old, new)
