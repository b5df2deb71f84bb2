"""Queries of the maintenance leader and of ``gateway cache purge``: garbage collection
of ``fetch_cache``/``articles``, the reads shared for refresh-ahead (``cache_reads``),
and the leader's advisory lock.

Times come in as arguments (``$now``) from the injected clock, never ``now()``: the
rows' ``fetched_at`` are written from that clock too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from gateway.store.stats import _count

#: Arbitrary constant naming the maintenance leader's advisory lock ("gw-main").
LEADER_LOCK_ID = 0x67772D6D61696E

TRY_LEAD = "SELECT pg_try_advisory_lock($1)"


async def try_lead(conn: asyncpg.Connection) -> bool:
    """Take the leader's session lock on ``conn`` (a dedicated connection: it is held
    for as long as that connection lives). True when we hold it."""
    return bool(await conn.fetchval(TRY_LEAD, LEADER_LOCK_ID))


# Cache rows older than their source's max_stale_s: feeds, searches (q=...) and HN
# items (item:...) alike. Rows of sources no longer configured use $4.
DELETE_STALE_CACHE = """
    DELETE FROM fetch_cache c
    USING (SELECT c2.source_id, c2.request_key
           FROM fetch_cache c2
           LEFT JOIN unnest($1::text[], $2::float8[]) AS s(source_id, max_stale_s) ON s.source_id = c2.source_id
           WHERE c2.fetched_at < $3::timestamptz - make_interval(secs => coalesce(s.max_stale_s, $4))) AS old
    WHERE c.source_id = old.source_id AND c.request_key = old.request_key"""

# Articles no cache row refers to any more, not updated within their source's max_stale_s.
DELETE_ORPHAN_ARTICLES = """
    DELETE FROM articles a
    USING (SELECT a2.id
           FROM articles a2
           LEFT JOIN unnest($1::text[], $2::float8[]) AS s(source_id, max_stale_s) ON s.source_id = a2.source_id
           WHERE a2.updated_at < $3::timestamptz - make_interval(secs => coalesce(s.max_stale_s, $4))
             AND NOT EXISTS (
                 SELECT 1 FROM fetch_cache c
                 WHERE c.source_id = a2.source_id
                   AND c.payload -> 'articles' @> jsonb_build_array(jsonb_build_object('id', a2.id)))) AS old
    WHERE a.id = old.id"""


async def delete_stale(
    conn: asyncpg.Connection, max_stale: dict[str, float], now: datetime, default_max_stale_s: float
) -> tuple[int, int]:
    """Delete cache rows, then unreferenced articles, older than max_stale_s (per
    source); returns how many of each."""
    ids, ages = list(max_stale), list(max_stale.values())
    async with conn.transaction():
        cache = _count(await conn.execute(DELETE_STALE_CACHE, ids, ages, now, default_max_stale_s))
        articles = _count(await conn.execute(DELETE_ORPHAN_ARTICLES, ids, ages, now, default_max_stale_s))
    return cache, articles


PURGE = "DELETE FROM fetch_cache WHERE $1::text IS NULL OR source_id = $1"


async def purge(conn: asyncpg.Connection, source_id: str | None) -> int:
    """``gateway cache purge [--source ID]``: forget cached answers (articles stay,
    for article(id:); maintenance removes them once nothing refers to them)."""
    return _count(await conn.execute(PURGE, source_id))


PUT_READS = """
    INSERT INTO cache_reads AS r (source_id, request_key, search, last_read_at, subscribed)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[])
    ORDER BY 1, 2
    ON CONFLICT (source_id, request_key) DO UPDATE
        SET search = EXCLUDED.search, last_read_at = EXCLUDED.last_read_at,
            subscribed = EXCLUDED.subscribed OR (r.subscribed AND r.last_read_at = EXCLUDED.last_read_at)
        WHERE r.last_read_at <= EXCLUDED.last_read_at"""


async def put_reads(
    conn: asyncpg.Connection, reads: Sequence[tuple[str, str, str | None, datetime, bool]]
) -> None:
    """Record when keys were last read by this process, and whether because of live
    subscribers (one statement for all; a key twice in ``reads`` is kept once)."""
    if reads:
        unique = {(r[0], r[1]): r for r in reads}  # ON CONFLICT may touch a row once
        cols = list(zip(*unique.values(), strict=True))
        await conn.execute(PUT_READS, *(list(c) for c in cols))


# Keys read since $4 whose cached copy is due: older than its source's ttl_s minus
# the lead time (per source), at $3. Keys with no row are not refreshed ahead (the
# next read fetches them), unless live subscribers follow them.
DUE_READS = """
    SELECT r.source_id, r.request_key, r.search
    FROM cache_reads r
    JOIN unnest($1::text[], $2::float8[]) AS s(source_id, due_age_s) ON s.source_id = r.source_id
    LEFT JOIN fetch_cache c ON c.source_id = r.source_id AND c.request_key = r.request_key
    WHERE r.last_read_at >= $4
      AND (c.fetched_at <= $3::timestamptz - make_interval(secs => s.due_age_s)
           OR (c.fetched_at IS NULL AND r.subscribed))
    ORDER BY c.fetched_at NULLS FIRST
    LIMIT $5"""


async def due_reads(
    conn: asyncpg.Connection, due_age_s: dict[str, float], now: datetime, read_since: datetime, limit: int
) -> list[tuple[str, str, str | None]]:
    rows = await conn.fetch(DUE_READS, list(due_age_s), list(due_age_s.values()), now, read_since, limit)
    return [(r["source_id"], r["request_key"], r["search"]) for r in rows]


TRIM_READS = "DELETE FROM cache_reads WHERE last_read_at < $1"


async def trim_reads(conn: asyncpg.Connection, before: datetime) -> int:
    return _count(await conn.execute(TRIM_READS, before))
