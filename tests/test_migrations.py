"""Migrations: idempotent, and safe when several workers start at once."""

from __future__ import annotations

import asyncio

import asyncpg

from gateway.store.migrate import load_migrations, migrate


async def test_migrations_apply_once_and_are_idempotent(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await migrate(conn)
        assert applied == [m.version for m in load_migrations()]
        assert await migrate(conn) == []
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == applied
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"fetch_cache", "articles", "schema_migrations"} <= tables
    finally:
        await conn.close()


async def test_concurrent_migrations_on_a_fresh_database(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        everything = [m.version for m in load_migrations()]
        # exactly one of them applied everything; the others found nothing to do
        assert sorted(results, key=len) == [[]] * 5 + [everything]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(everything)
    finally:
        for c in conns:
            await c.close()
