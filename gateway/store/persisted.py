"""SQL for persisted documents (see :mod:`gateway.persisted`)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

GET = "SELECT body, trusted FROM persisted_documents WHERE id = $1"

#: An APQ registration, kept only while fewer than $3 documents are stored (bounded:
#: any client may register). Returns a row when stored.
REGISTER = """
    INSERT INTO persisted_documents (id, body, trusted)
    SELECT $1, $2, false
    WHERE (SELECT count(*) FROM persisted_documents) < $3
    ON CONFLICT (id) DO NOTHING
    RETURNING id"""

#: Trusted documents from a manifest: new ones inserted, registered ones promoted.
ADD_TRUSTED = """
    INSERT INTO persisted_documents (id, body, trusted, name)
    SELECT d.id, d.body, true, d.name FROM unnest($1::text[], $2::text[], $3::text[]) AS d(id, body, name)
    ON CONFLICT (id) DO UPDATE SET trusted = true, name = COALESCE(EXCLUDED.name, persisted_documents.name)
    RETURNING (xmax = 0) AS inserted"""

COUNT = "SELECT count(*) AS total, count(*) FILTER (WHERE trusted) AS trusted FROM persisted_documents"


async def get(conn: asyncpg.Connection, doc_id: str) -> tuple[str, bool] | None:
    row = await conn.fetchrow(GET, doc_id)
    return (row["body"], row["trusted"]) if row is not None else None


async def register(conn: asyncpg.Connection, doc_id: str, body: str, max_documents: int) -> bool:
    return await conn.fetchval(REGISTER, doc_id, body, max_documents) is not None


async def add_trusted(conn: asyncpg.Connection, docs: Sequence[tuple[str, str, str | None]]) -> tuple[int, int]:
    """Returns (inserted, already stored)."""
    rows = await conn.fetch(ADD_TRUSTED, [d[0] for d in docs], [d[1] for d in docs], [d[2] for d in docs])
    inserted = sum(1 for r in rows if r["inserted"])
    return inserted, len(rows) - inserted


async def count(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(COUNT)
    return row["total"], row["trusted"]
