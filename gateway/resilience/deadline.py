"""A request deadline: one absolute point in (monotonic) time shared by all the work
a GraphQL request starts, so waiting in a queue counts against it too."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.resilience.clock import Clock


@dataclass(frozen=True, slots=True)
class Deadline:
    at: float  # a clock.monotonic() value
    clock: Clock

    @classmethod
    def after(cls, seconds: float, clock: Clock) -> Deadline:
        return cls(clock.monotonic() + seconds, clock)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - self.clock.monotonic())

    def within(self, seconds: float) -> Deadline:
        """The earlier of this deadline and ``seconds`` from now."""
        return Deadline(min(self.at, self.clock.monotonic() + seconds), self.clock)
