"""Numbered ``.sql`` migrations, applied at startup.

All of them run in one transaction under a transaction-level advisory lock, so
several workers or replicas starting at once apply each file exactly once (the
others wait on the lock, then find nothing left to do). Applied versions are
recorded in ``schema_migrations``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger("gateway.store")

#: Arbitrary constant naming our advisory lock ("news-gw" in ASCII).
MIGRATION_LOCK_ID = 0x6E6577732D6777
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("gateway.store").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply what is missing; return the versions applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   name       text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in migrations:
            if mig.version in done:
                continue
            await conn.execute(mig.sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name)
            applied_now.append(mig.version)
            log.info("applied migration %04d_%s", mig.version, mig.name)
    return applied_now
