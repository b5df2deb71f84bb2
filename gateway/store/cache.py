"""Queries on ``fetch_cache``: the durable copy of every upstream answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.store.articles import upsert_sql
from gateway.store.leases import ASYNC_COMMIT, CHANNEL
from gateway.store.live import ARTICLES_CHANNEL, SEQUENCE_LOCK_ID


@dataclass(frozen=True, slots=True)
class CacheRow:
    source_id: str
    request_key: str
    payload: Any
    fetched_at: datetime
    etag: str | None
    last_modified: str | None


def row_of(r: asyncpg.Record) -> CacheRow:
    return CacheRow(r["source_id"], r["request_key"], r["payload"], r["fetched_at"], r["etag"], r["last_modified"])


GET_MANY = (
    "SELECT source_id, request_key, payload, fetched_at, etag, last_modified"
    " FROM fetch_cache WHERE source_id = $1 AND request_key = ANY($2::text[])"
)


async def get_many(conn: asyncpg.Connection, source_id: str, keys: Sequence[str]) -> dict[str, CacheRow]:
    rows = await conn.fetch(GET_MANY, source_id, list(keys))
    return {r["request_key"]: row_of(r) for r in rows}


async def get(conn: asyncpg.Connection, source_id: str, key: str) -> CacheRow | None:
    return (await get_many(conn, source_id, [key])).get(key)


#: An older ``fetched_at`` never overwrites a newer one (replicas race).
_UPSERT = """INSERT INTO fetch_cache AS c (source_id, request_key, payload, fetched_at, etag, last_modified)
           {rows}
           ON CONFLICT (source_id, request_key) DO UPDATE SET
               payload = EXCLUDED.payload, fetched_at = EXCLUDED.fetched_at,
               etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified
           WHERE c.fetched_at <= EXCLUDED.fetched_at"""

PUT_MANY = _UPSERT.format(
    rows="SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::text[], $6::text[])"
)


async def put_many(conn: asyncpg.Connection, rows: Sequence[CacheRow]) -> None:
    """Upsert rows; an older ``fetched_at`` never overwrites a newer one (replicas race)."""
    if not rows:
        return
    await conn.fetch(
        PUT_MANY,
        [r.source_id for r in rows],
        [r.request_key for r in rows],
        [r.payload for r in rows],
        [r.fetched_at for r in rows],
        [r.etag for r in rows],
        [r.last_modified for r in rows],
    )


PUT_REFRESHED = f"""
    WITH cached AS (
        {_UPSERT.format(rows="VALUES ($1::text, $2::text, $3::jsonb, $4::timestamptz, $5::text, $6::text)")}
    ), {ASYNC_COMMIT}
    SELECT pg_notify('{CHANNEL}', $1 || '|' || $2) FROM async_commit"""

# ``current``: the row these articles came with is still the key's row. ``seq_lock``
# is taken before the articles draw their sequence numbers (it is in the argument of
# the function their rows come from) and held to commit, so numbers commit in the
# order they are drawn (see migrations/0304_article_sequence.sql). ``known`` is the
# highest number in this statement's snapshot: rows returned above it are new (or
# committed by a writer this one waited for; a spare notification, and readers go by
# the table, not by the payload).
PUT_ARTICLES = f"""
    WITH current AS (
        SELECT 1 FROM fetch_cache WHERE source_id = $1 AND request_key = $2 AND fetched_at = $4
    ), seq_lock AS (
        SELECT pg_advisory_xact_lock({SEQUENCE_LOCK_ID}) AS locked WHERE EXISTS (SELECT 1 FROM current)
    ), upserted AS (
        {upsert_sql("CASE WHEN EXISTS (SELECT 1 FROM seq_lock) THEN $3::jsonb END")}
    ), known AS (
        SELECT coalesce(max(seq), 0) AS seq FROM articles
    ), added AS (
        SELECT max(u.seq) AS seq FROM upserted u, known k WHERE u.seq > k.seq
    ), {ASYNC_COMMIT}
    SELECT (SELECT pg_notify('{CHANNEL}', $1 || '|*') WHERE EXISTS (SELECT 1 FROM upserted)),
           (SELECT pg_notify('{ARTICLES_CHANNEL}', a.seq || '|' || $1) FROM added a WHERE a.seq IS NOT NULL)
    FROM async_commit"""


async def put_refreshed(conn: asyncpg.Connection, row: CacheRow) -> None:
    """The cache row of a finished refresh, with the NOTIFY that wakes the processes
    waiting for it (delivered on commit), in one statement whose commit does not wait
    for the WAL flush (``leases.ASYNC_COMMIT``). The row's articles follow in a
    statement of their own (:func:`put_articles`): other processes wait for this row,
    not for the articles table, and the articles' upsert (a hundred rows, under the
    sequence lock every writer of new articles takes) made a cold burst over three
    feeds wait 5-9 ms for the three rows instead of about one.

    The lease is released afterwards, in a statement of its own: released in this
    one, a bid blocked on the lease row would take the lease at commit yet read the
    cache as it was before (its snapshot predates the commit), and call upstream
    again."""
    await conn.fetch(PUT_REFRESHED, row.source_id, row.request_key, row.payload, row.fetched_at, row.etag,
                     row.last_modified)


async def put_articles(conn: asyncpg.Connection, row: CacheRow) -> None:
    """The articles of ``row.payload["articles"]`` (distinct ids,
    :meth:`NormalizedArticle.to_json` objects), once its row is written, unless a
    newer row from another process replaced it meanwhile (after a 304 too: the
    earlier write may never have landed). New articles are announced on
    :data:`~gateway.store.live.ARTICLES_CHANNEL`, for live subscribers; and any
    change as ``source_id|*`` on the cache channel: the response caches drop the
    answers they built from this source's articles (``article(id:)``), not those
    built from its cache rows, which did not change."""
    articles = row.payload.get("articles") or []
    if articles:
        await conn.fetch(PUT_ARTICLES, row.source_id, row.request_key, articles, row.fetched_at)


NEWEST = "SELECT source_id, max(fetched_at) AS newest, count(*) AS keys FROM fetch_cache GROUP BY source_id"


async def newest_by_source(conn: asyncpg.Connection) -> dict[str, tuple[datetime, int]]:
    """Per source: when its most recent cached answer was fetched, and how many keys
    (searches, items) it has cached. Every process's, as the table is shared."""
    return {r["source_id"]: (r["newest"], r["keys"]) for r in await conn.fetch(NEWEST)}
