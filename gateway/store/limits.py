"""SQL for the shared rate-limit buckets (table ``rate_limit_buckets``, migration 0052)."""

from __future__ import annotations

import asyncpg

from gateway.store.db import Database

#: Adds each process's net charge since its last sync to the shared debt, first
#: draining that debt by the time passed on the database's clock; returns the result.
#: Rows are taken in client order so two processes' batches never deadlock.
#: A new row stores the raw delta (it can be a refund below zero); every reader and
#: the next update clamp at zero, so a negative value never grants extra points.
RECONCILE = """
INSERT INTO rate_limit_buckets AS b (client_id, debt, per_s, updated_at)
SELECT c, d, r, clock_timestamp()
FROM unnest($1::text[], $2::float8[], $3::float8[]) AS t(c, d, r)
ORDER BY c
ON CONFLICT (client_id) DO UPDATE SET
    debt = GREATEST(0, b.debt - EXTRACT(EPOCH FROM (clock_timestamp() - b.updated_at)) * EXCLUDED.per_s)
           + EXCLUDED.debt,
    per_s = EXCLUDED.per_s,
    updated_at = clock_timestamp()
RETURNING client_id, GREATEST(debt, 0) AS debt
"""

#: The same, plus every other client some process charged in the last few seconds
#: (drained to now), so a process knows a client's debt before its first request.
RECONCILE_AND_PEERS = f"""
WITH up AS ({RECONCILE.strip()})
SELECT client_id, debt FROM up
UNION ALL
SELECT client_id,
       GREATEST(0, debt - EXTRACT(EPOCH FROM (clock_timestamp() - updated_at)) * per_s) AS debt
FROM rate_limit_buckets
WHERE updated_at > clock_timestamp() - make_interval(secs => $4)
  AND client_id <> ALL($1::text[])
LIMIT $5
"""
#: How far back peers' clients are learnt, and at most how many per sync.
PEER_WINDOW_S = 10.0
PEER_LIMIT = 10_000

#: Rows idle this long are full buckets: forget them.
FORGET = "DELETE FROM rate_limit_buckets WHERE updated_at < clock_timestamp() - interval '1 hour'"
FORGET_EVERY = 3000  # syncs (about 5 minutes at 100 ms)


class PostgresLimitStore:
    """The shared table, through the gateway's pool."""

    def __init__(self, db: Database, *, timeout_s: float = 0.5) -> None:
        self.db = db
        self.timeout_s = timeout_s
        self._calls = 0

    async def reconcile(self, deltas: list[tuple[str, float, float]]) -> dict[str, float]:
        ids = [d[0] for d in deltas]
        amounts = [d[1] for d in deltas]
        rates = [d[2] for d in deltas]
        self._calls += 1
        forget = self._calls % FORGET_EVERY == 0

        async def run(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows = await conn.fetch(RECONCILE_AND_PEERS, ids, amounts, rates, PEER_WINDOW_S, PEER_LIMIT)
            if forget:
                await conn.execute(FORGET)
            return rows

        rows = await self.db.run(run, timeout_s=self.timeout_s)
        return {r["client_id"]: r["debt"] for r in rows}
