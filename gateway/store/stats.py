"""Queries on ``fetch_stats``: one row per upstream call, from every process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

#: Column order of a record handed to :func:`insert_many`.
COLUMNS = ("source_id", "request_key", "started_at", "duration_ms", "outcome", "http_status", "bytes", "items")

#: A record: (source_id, request_key, started_at, duration_ms, outcome, http_status, bytes, items).
Record = tuple[str, str, datetime, float, str, int | None, int, int]

#: Outcomes that are not failures: a 2xx answer and a 304.
OK_OUTCOMES = ("OK", "NOT_MODIFIED")


async def insert_many(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
    """Append a batch with COPY: one round-trip for any number of rows."""
    if records:
        await conn.copy_records_to_table("fetch_stats", records=records, columns=COLUMNS)


WINDOW = """SELECT count(*) AS calls,
                  count(*) FILTER (WHERE outcome <> ALL($3::text[])) AS failures,
                  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS pcts
           FROM fetch_stats
           WHERE source_id = $1 AND started_at > $2"""


@dataclass(frozen=True, slots=True)
class Window:
    calls: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


async def window(conn: asyncpg.Connection, source_id: str, since: datetime) -> Window:
    """Calls, failures and latency percentiles of one source since ``since``, across
    every process that wrote statistics (computed by Postgres, not per process)."""
    row = await conn.fetchrow(WINDOW, source_id, since, list(OK_OUTCOMES))
    p50, p95, p99 = row["pcts"] if row["pcts"] is not None else (None, None, None)
    return Window(row["calls"], row["failures"], p50, p95, p99)


TRIM = "DELETE FROM fetch_stats WHERE started_at < $1"


async def trim(conn: asyncpg.Connection, before: datetime) -> int:
    """Delete statistics older than ``before``; returns how many."""
    return _count(await conn.execute(TRIM, before))


def _count(status: str) -> int:
    """Rows touched, from a command tag such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


#: Per source and per minute since $1 (minute 0 is the oldest), plus one row per
#: source for the whole span (minute NULL): calls, failures, p50 and p95.
MINUTES = """SELECT source_id,
                    floor(extract(epoch FROM started_at - $1::timestamptz) / 60)::int AS minute,
                    count(*) AS calls,
                    count(*) FILTER (WHERE outcome <> ALL($3::text[])) AS failures,
                    percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_ms) AS pcts
             FROM fetch_stats
             WHERE started_at > $1 AND started_at <= $2
             GROUP BY GROUPING SETS ((source_id, minute), (source_id))
             ORDER BY source_id, minute NULLS FIRST"""


@dataclass(frozen=True, slots=True)
class Bucket:
    calls: int
    failures: int
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, slots=True)
class Minutes:
    """One source's calls over a span: ``total`` for all of it, ``by_minute`` keyed by
    the minute's index from the start of the span (minutes without calls are absent)."""

    total: Bucket
    by_minute: dict[int, Bucket]


async def per_minute(conn: asyncpg.Connection, since: datetime, until: datetime) -> dict[str, Minutes]:
    """Every source's calls between ``since`` and ``until``, per minute and in all,
    across every process that wrote statistics (one statement, computed by Postgres)."""
    out: dict[str, Minutes] = {}
    for row in await conn.fetch(MINUTES, since, until, list(OK_OUTCOMES)):
        p50, p95 = row["pcts"]
        bucket = Bucket(row["calls"], row["failures"], p50, p95)
        if row["minute"] is None:
            out[row["source_id"]] = Minutes(bucket, {})
        else:
            out[row["source_id"]].by_minute[row["minute"]] = bucket
    return out
