"""Retries: which failures may be retried, how long to wait, and a budget that keeps
retries from multiplying the load on an upstream that is already struggling."""

from __future__ import annotations

import random
from collections import deque

from gateway.errors import UpstreamError, UpstreamHTTPError
from gateway.resilience.clock import Clock

MAX_ATTEMPTS = 3  # one call plus at most two retries
RETRY_BASE_S = 0.1
RETRY_CAP_S = 1.0
RETRY_BUDGET_RATIO = 0.2  # retries may add at most 20% to a source's calls ...
RETRY_BUDGET_WINDOW_S = 60.0  # ... over this window
#: A retry whose wait would leave less than this of the budget is not worth making.
RETRY_MIN_LEFT_S = 0.05


class RetryBudget:
    """At most ``ratio`` retries per original call over a sliding window."""

    def __init__(self, clock: Clock, ratio: float = RETRY_BUDGET_RATIO, window_s: float = RETRY_BUDGET_WINDOW_S):
        self._clock = clock
        self._ratio = ratio
        self._window_s = window_s
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self) -> None:
        horizon = self._clock.monotonic() - self._window_s
        for q in (self._calls, self._retries):
            while q and q[0] < horizon:
                q.popleft()

    def record_call(self) -> None:
        self._trim()
        self._calls.append(self._clock.monotonic())

    def try_spend(self) -> bool:
        self._trim()
        if len(self._retries) + 1 <= self._ratio * len(self._calls):
            self._retries.append(self._clock.monotonic())
            return True
        return False


def retry_delay(exc: UpstreamError, attempt: int, remaining_s: float) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when we must not retry:
    not a retryable failure, out of attempts, or the wait would eat what is left."""
    if not exc.retryable or attempt >= MAX_ATTEMPTS:
        return None
    # Full jitter (AWS architecture blog): spreads retries of many clients apart.
    delay = random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt))
    if isinstance(exc, UpstreamHTTPError) and exc.retry_after_s is not None:
        delay = max(delay, exc.retry_after_s)
    if delay + RETRY_MIN_LEFT_S > remaining_s:
        return None
    return delay
