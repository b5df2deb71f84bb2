"""Per-client rate limits on query cost: Shopify's leaky bucket.

Each client has a bucket of ``burst`` points that refills at ``per_s`` points per
second. A request is charged its *estimated* cost before it runs; when it is done it
is refunded down to its *actual* cost. A request whose cost exceeds what is
available is refused (429) with the time until it would fit.

Internally a bucket holds *debt* (points spent and not yet restored), which drains
at ``per_s``; available = ``burst - debt``. Debt may exceed ``burst`` (see below).

Sharing across workers and replicas (:class:`SharedBuckets`): no database round
trip per request. Each process charges its local buckets and remembers the net
points it charged per client since the last sync. Every ``sync_ms`` (<= 100 ms) one
statement adds those deltas into the shared table (draining the shared debt by the
database's clock) and returns the shared debt, which replaces the local one.

Each sync also returns the debt of every client any process charged in the last
10 s, so a process knows a client's debt before it serves that client.

Overshoot bound: between two syncs each of N processes admits against the debt it
last saw, so a client can briefly get up to ``N x available`` instead of
``available`` (at most ``N x burst`` in one sync interval, plus ``per_s x sync_ms``
per process). The overshoot is not forgiven: the excess stays as debt above
``burst`` in the shared row, and the client waits it off. Over any window W the
points admitted are at most ``N x burst + per_s x W``; over long windows the rate
converges to ``per_s``.

If the shared store is unreachable, buckets stay local (each process limits on
its own: fail-open, the default) or, with fail-open off, requests are refused with
503 ``RATE_LIMIT_UNAVAILABLE``. Never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from gateway.resilience.clock import Clock

log = logging.getLogger("gateway.edge")

#: Clients not seen for this long are dropped from memory (their bucket is full by then
#: for any sane setting; the shared row keeps the truth across processes).
IDLE_FORGET_S = 600.0
#: Buckets kept in memory at most; past it the least recently seen tenth is dropped
#: (a flood from many addresses must not grow memory without bound).
MAX_BUCKETS = 100_000


@dataclass(slots=True)
class Bucket:
    burst: float
    per_s: float
    debt: float = 0.0
    at: float = 0.0  # clock.monotonic() of the last drain
    pending: float = 0.0  # net points charged here since the last sync
    last_seen: float = 0.0

    def drain(self, now: float) -> None:
        if now > self.at:
            self.debt = max(0.0, self.debt - (now - self.at) * self.per_s)
            self.at = now

    def available(self) -> float:
        return self.burst - self.debt

    def restore_s(self) -> float:
        """Seconds until the bucket is full again."""
        return self.debt / self.per_s if self.per_s > 0 else math.inf


@dataclass(frozen=True, slots=True)
class ThrottleStatus:
    maximum_available: float
    currently_available: float
    restore_rate: float

    def as_json(self) -> dict[str, float]:
        return {
            "maximumAvailable": _num(self.maximum_available),
            "currentlyAvailable": _num(max(0.0, self.currently_available)),
            "restoreRate": _num(self.restore_rate),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: ThrottleStatus
    retry_after_s: float = 0.0
    reset_s: float = 0.0  # until the bucket is full


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 3)


class RateLimiter:
    """Buckets in this process. :class:`SharedBuckets` keeps them in step with others."""

    def __init__(self, *, burst: int, per_s: float, clock: Clock) -> None:
        self.burst = burst
        self.per_s = per_s
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}
        self.refuse_all = False  # set by SharedBuckets when failing closed
        #: Debts other processes reported for clients this one has not served yet:
        #: (debt, clock.monotonic() when learnt). A new bucket starts from it.
        self.peer_debts: dict[str, tuple[float, float]] = {}

    def bucket(
        self, client_id: str, burst: int | None = None, per_s: float | None = None, *, now: float | None = None
    ) -> Bucket:
        b = self.buckets.get(client_id)
        now = self.clock.monotonic() if now is None else now
        if b is None:
            b = self.buckets[client_id] = Bucket(float(burst or self.burst), float(per_s or self.per_s), at=now)
            known = self.peer_debts.pop(client_id, None)
            if known is not None:
                b.debt, b.at = known
            if len(self.buckets) > MAX_BUCKETS:
                self._forget_idle(now)
        b.drain(now)
        b.last_seen = now
        return b

    def charge(
        self, client_id: str, cost: float, *, burst: int | None = None, per_s: float | None = None,
        now: float | None = None, actual: float | None = None,
    ) -> Decision:
        """``now``: the request's arrival on the app's clock (default: the clock now).
        ``actual``: the cost already known (a cached answer's), charged at once in
        place of ``cost``, which alone decides admission (as for the request that ran)."""
        b = self.bucket(client_id, burst, per_s, now=now)
        if cost <= b.available() + 1e-9:  # float drift of the refill must not refuse an exact fit
            charged = cost if actual is None else actual
            b.debt += charged
            b.pending += charged
            return Decision(True, self._status(b), reset_s=b.restore_s())
        short = cost - b.available()
        return Decision(False, self._status(b), retry_after_s=short / b.per_s, reset_s=b.restore_s())

    def settle(self, client_id: str, charged: float, actual: float) -> ThrottleStatus:
        """Refund (or, for an undercount, charge) the difference after execution."""
        b = self.bucket(client_id)
        delta = actual - charged
        b.debt = max(0.0, b.debt + delta)
        b.pending += delta
        return self._status(b)

    def status(self, client_id: str) -> ThrottleStatus:
        return self._status(self.bucket(client_id))

    @staticmethod
    def _status(b: Bucket) -> ThrottleStatus:
        return ThrottleStatus(b.burst, b.available(), b.per_s)

    def _forget_idle(self, now: float) -> None:
        for cid in [c for c, b in self.buckets.items() if now - b.last_seen > IDLE_FORGET_S and not b.pending]:
            del self.buckets[cid]
        if len(self.buckets) > MAX_BUCKETS * 0.9:
            by_age = sorted(self.buckets.items(), key=lambda item: item[1].last_seen)
            for cid, _ in by_age[: len(by_age) // 10]:
                del self.buckets[cid]


class SharedBuckets:
    """Reconciles a :class:`RateLimiter` with the shared table every ``interval_s``."""

    def __init__(self, limiter: RateLimiter, store: LimitStore, *, interval_s: float, fail_open: bool,
                 clock: Clock) -> None:
        self.limiter = limiter
        self.store = store
        self.interval_s = interval_s
        self.fail_open = fail_open
        self.clock = clock
        self.healthy = True
        self.syncs = 0
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        # One round at a time: a round that started earlier must not finish later and
        # replace what a newer one learnt (peer debts) with older figures.
        self._round = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rate-limit-sync")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await self.sync_once()  # hand over what this process charged last
        except Exception as exc:  # noqa: BLE001 - shutting down; the next sync elsewhere re-learns
            log.debug("last rate-limit sync at shutdown failed: %s", type(exc).__name__)

    async def _run(self) -> None:
        # When a sync is due is decided on the app's clock (tests step it); the loop
        # only wakes up often enough to notice.
        last = self.clock.monotonic()
        while True:
            await asyncio.sleep(self.interval_s / 4)
            if self.clock.monotonic() - last < self.interval_s:
                continue
            last = self.clock.monotonic()
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any store failure: fall back to local buckets
                self._mark_down(exc)

    async def sync_once(self) -> int:
        """Push pending deltas of recently seen clients and adopt the shared debt.
        Returns how many clients were reconciled."""
        async with self._round:
            return await self._sync()

    async def _sync(self) -> int:
        now = self.clock.monotonic()
        active = [(cid, b) for cid, b in self.limiter.buckets.items() if b.pending or now - b.last_seen < 10.0]
        sent = [(cid, b, b.pending) for cid, b in active]
        for _, b, _ in sent:
            b.pending = 0.0  # what arrives during the round trip stays pending for the next sync
        try:
            shared = await self.store.reconcile([(cid, delta, b.per_s) for cid, b, delta in sent])
        except BaseException:
            for _, b, delta in sent:
                b.pending += delta
            raise
        now = self.clock.monotonic()
        for cid, b, _ in sent:
            debt = shared.pop(cid, None)
            if debt is not None:
                b.drain(now)
                b.debt = max(0.0, debt + b.pending)
        peers: dict[str, tuple[float, float]] = {}
        for cid, debt in shared.items():  # clients other processes are serving
            b = self.limiter.buckets.get(cid)
            if b is not None:  # became ours during the round trip
                b.drain(now)
                b.debt = max(b.debt, debt + b.pending)
            else:
                peers[cid] = (debt, now)
        self.limiter.peer_debts = peers
        self.syncs += 1
        self._mark_up()
        return len(sent)

    def _mark_down(self, exc: BaseException) -> None:
        self._failures += 1
        if self.healthy:
            log.warning("rate-limit store unreachable (%s); %s", type(exc).__name__,
                        "limiting locally per process" if self.fail_open else "refusing requests")
        self.healthy = False
        self.limiter.refuse_all = not self.fail_open

    def _mark_up(self) -> None:
        if not self.healthy:
            log.info("rate-limit store reachable again; buckets shared")
        self.healthy = True
        self.limiter.refuse_all = False


class LimitStore:  # pragma: no cover - the protocol; gateway.store.limits implements it
    async def reconcile(self, deltas: list[tuple[str, float, float]]) -> dict[str, float]:
        raise NotImplementedError
