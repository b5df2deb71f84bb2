"""Refresh leases (``fetch_leases``) and the cache-written notification channel."""

from __future__ import annotations

import asyncpg

#: NOTIFY channel announcing "source_id|request_key" after a cache write commits.
CHANNEL = "gateway_cache"


TRY_ACQUIRE = """INSERT INTO fetch_leases AS l (source_id, request_key, holder, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))
           ON CONFLICT (source_id, request_key) DO UPDATE
               SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
               WHERE l.expires_at < now() OR l.holder = EXCLUDED.holder
           RETURNING holder"""

async def try_acquire(conn: asyncpg.Connection, source_id: str, key: str, holder: str, ttl_s: float) -> bool:
    """Take the lease unless somebody else holds an unexpired one. One round-trip."""
    return await conn.fetchrow(TRY_ACQUIRE, source_id, key, holder, ttl_s) is not None


RELEASE = "DELETE FROM fetch_leases WHERE source_id = $1 AND request_key = $2 AND holder = $3"


async def release(conn: asyncpg.Connection, source_id: str, key: str, holder: str) -> None:
    await conn.execute(RELEASE, source_id, key, holder)


async def notify(conn: asyncpg.Connection, source_id: str, key: str) -> None:
    """Delivered when the surrounding transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{source_id}|{key}")


PEER_STATE = """SELECT c.source_id, c.request_key, c.payload, c.fetched_at, c.etag, c.last_modified,
                  EXISTS (SELECT 1 FROM fetch_leases l
                          WHERE l.source_id = $1 AND l.request_key = $2 AND l.expires_at > now()) AS held
           FROM (SELECT 1) AS one
           LEFT JOIN fetch_cache c ON c.source_id = $1 AND c.request_key = $2"""


async def peer_state(
    conn: asyncpg.Connection, source_id: str, key: str
) -> tuple[asyncpg.Record | None, bool]:
    """The cache row (if any) and whether a live lease is held on it, in one round-trip."""
    row = await conn.fetchrow(PEER_STATE, source_id, key)
    assert row is not None
    return (row if row["source_id"] is not None else None), bool(row["held"])


READ_AND_TRY_ACQUIRE = f"""WITH lease AS ({TRY_ACQUIRE})
           SELECT c.source_id, c.request_key, c.payload, c.fetched_at, c.etag, c.last_modified,
                  EXISTS (SELECT 1 FROM lease) AS acquired
           FROM (SELECT 1) AS one
           LEFT JOIN fetch_cache c ON c.source_id = $1 AND c.request_key = $2"""


async def read_and_try_acquire(
    conn: asyncpg.Connection, source_id: str, key: str, holder: str, ttl_s: float
) -> tuple[asyncpg.Record | None, bool]:
    """The cache row (if any) and whether we took the lease, in one round-trip: on a
    cold key the caller would otherwise wait for two in a row before going upstream."""
    row = await conn.fetchrow(READ_AND_TRY_ACQUIRE, source_id, key, holder, ttl_s)
    assert row is not None
    return (row if row["source_id"] is not None else None), bool(row["acquired"])
