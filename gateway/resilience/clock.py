"""Injectable time: monotonic for durations and decisions, wall for timestamps shown
to clients. Everything that decides by time takes a :class:`Clock`; this module and
the CLI are the only places that read the system's clocks. Tests step a fake one
(``tests/clock.py``)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)
