"""Queries on ``fetch_cache``: the durable copy of every upstream answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


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


async def get_many(conn: asyncpg.Connection, source_id: str, keys: Sequence[str]) -> dict[str, CacheRow]:
    rows = await conn.fetch(
        "SELECT source_id, request_key, payload, fetched_at, etag, last_modified"
        " FROM fetch_cache WHERE source_id = $1 AND request_key = ANY($2::text[])",
        source_id,
        list(keys),
    )
    return {r["request_key"]: row_of(r) for r in rows}


async def get(conn: asyncpg.Connection, source_id: str, key: str) -> CacheRow | None:
    return (await get_many(conn, source_id, [key])).get(key)


async def put_many(conn: asyncpg.Connection, rows: Sequence[CacheRow]) -> None:
    """Upsert rows; an older ``fetched_at`` never overwrites a newer one (replicas race)."""
    if not rows:
        return
    await conn.execute(
        """INSERT INTO fetch_cache AS c (source_id, request_key, payload, fetched_at, etag, last_modified)
           SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::text[], $6::text[])
           ON CONFLICT (source_id, request_key) DO UPDATE SET
               payload = EXCLUDED.payload, fetched_at = EXCLUDED.fetched_at,
               etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified
           WHERE c.fetched_at <= EXCLUDED.fetched_at""",
        [r.source_id for r in rows],
        [r.request_key for r in rows],
        [r.payload for r in rows],
        [r.fetched_at for r in rows],
        [r.etag for r in rows],
        [r.last_modified for r in rows],
    )
