"""A clock tests move by hand (the product reads time only through a Clock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


class FakeClock:
    """``clock.advance(30)`` moves both the monotonic and the wall clock."""

    def __init__(self, start: datetime | None = None) -> None:
        self._mono = 1000.0
        self._wall = start or datetime(2026, 1, 1, tzinfo=timezone.utc)

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._wall + timedelta(seconds=self._mono - 1000.0)

    def advance(self, seconds: float) -> None:
        self._mono += seconds
