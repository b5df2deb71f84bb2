"""Refresh leases (``fetch_leases``) and the refresh notification channel.

On channel :data:`CHANNEL` a payload ``source_id|request_key`` says a refresh's cache
row committed (``cache.PUT_REFRESHED``); ``!CODE:STATUS|source_id|request_key`` says
the lease holder's refresh failed with that :class:`~gateway.errors.SourceErrorCode`
(STATUS: the upstream's HTTP status, or empty) and released the lease
(:data:`RELEASE_FAILED`), so processes waiting for it stop at once. Source ids cannot
start with "!" (see settings), so the two never collide. ``?source_id|request_key``
says a process found the key's lease held by another and waits for its refresh: the
holder then writes that refresh's row at once rather than after its write-behind
delay (:class:`~gateway.service.feedcache.FeedCache`). ``source_id|*`` says the
``articles`` table changed for that source (``cache.PUT_ARTICLES``): no key's waiters
wake, and the response caches drop what they built from those articles.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

#: NOTIFY channel announcing "source_id|request_key" after a cache write commits.
CHANNEL = "gateway_cache"

#: A CTE (to be referenced in FROM, or it is not evaluated) that lets its statement's
#: own transaction commit without waiting for the WAL flush: SET LOCAL
#: synchronous_commit = off, inside a single statement. What the refresh statements
#: write (leases, cache rows, articles fetched from upstreams) may lose its last
#: moments in a crash, never its consistency, and anything lost is fetched again; the
#: processes waiting on a lease bid or a NOTIFY get the answer a flush sooner.
ASYNC_COMMIT = "async_commit AS (SELECT set_config('synchronous_commit', 'off', true))"


#: Prefix of the payload saying a process waits for another's refresh of a key.
WAITING_PREFIX = "?"

TRY_ACQUIRE = f"""
    WITH taken AS (
        INSERT INTO fetch_leases AS l (source_id, request_key, holder, expires_at)
        VALUES ($1, $2, $3, now() + make_interval(secs => $4))
        ON CONFLICT (source_id, request_key) DO UPDATE
            SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
            WHERE l.expires_at < now() OR l.holder = EXCLUDED.holder
        RETURNING holder
    ), waiting AS (
        SELECT pg_notify('{CHANNEL}', '{WAITING_PREFIX}' || $1 || '|' || $2) WHERE NOT EXISTS (SELECT 1 FROM taken)
    )
    -- one row whether or not the lease was taken; naming "waiting" makes it run
    SELECT (SELECT holder FROM taken) AS holder, (SELECT count(*) FROM waiting) AS waiting"""


async def try_acquire(conn: asyncpg.Connection, source_id: str, key: str, holder: str, ttl_s: float) -> bool:
    """Take the lease unless somebody else holds an unexpired one (then say we wait
    for its refresh). One round-trip."""
    (row,) = await conn.fetch(TRY_ACQUIRE, source_id, key, holder, ttl_s)
    return row["holder"] is not None


RELEASE = "DELETE FROM fetch_leases WHERE source_id = $1 AND request_key = $2 AND holder = $3"


async def release(conn: asyncpg.Connection, source_id: str, key: str, holder: str) -> None:
    await conn.fetch(RELEASE, source_id, key, holder)


FAILURE_PREFIX = "!"

RELEASE_FAILED = f"""
    WITH released AS (
        DELETE FROM fetch_leases WHERE source_id = $1 AND request_key = $2 AND holder = $3 RETURNING 1
    ), {ASYNC_COMMIT}
    SELECT pg_notify('{CHANNEL}', '{FAILURE_PREFIX}' || $4 || '|' || $1 || '|' || $2)
    FROM async_commit WHERE EXISTS (SELECT 1 FROM released)"""


def failure_tag(code: str, http_status: int | None) -> str:
    return f"{code}:{http_status if http_status is not None else ''}"


def parse_failure_tag(tag: str) -> tuple[str, int | None]:
    code, _, status = tag.partition(":")
    return code, int(status) if status.isdigit() else None


async def release_failed(
    conn: asyncpg.Connection, source_id: str, key: str, holder: str, code: str, http_status: int | None
) -> None:
    """Release our lease after a failed refresh and tell every waiting process why, in
    one statement (the NOTIFY only if we still held the lease)."""
    await conn.fetch(RELEASE_FAILED, source_id, key, holder, failure_tag(code, http_status))


PEER_STATE = """SELECT c.source_id, c.request_key, c.payload, c.fetched_at, c.etag, c.last_modified,
                  EXISTS (SELECT 1 FROM fetch_leases l
                          WHERE l.source_id = $1 AND l.request_key = $2 AND l.expires_at > now()) AS held
           FROM (SELECT 1) AS one
           LEFT JOIN fetch_cache c ON c.source_id = $1 AND c.request_key = $2"""


async def peer_state(
    conn: asyncpg.Connection, source_id: str, key: str
) -> tuple[asyncpg.Record | None, bool]:
    """The cache row (if any) and whether a live lease is held on it, in one round-trip."""
    (row,) = await conn.fetch(PEER_STATE, source_id, key)
    return (row if row["source_id"] is not None else None), bool(row["held"])


READ_AND_TRY_ACQUIRE_MANY = f"""
    WITH wanted AS (
        SELECT * FROM unnest($1::text[], $2::text[]) AS w(source_id, request_key)
    ), lease AS (
        INSERT INTO fetch_leases AS l (source_id, request_key, holder, expires_at)
        SELECT source_id, request_key, $3, now() + make_interval(secs => $4) FROM wanted
        -- one lock order for every process bidding for overlapping sets: no deadlocks
        ORDER BY source_id, request_key
        ON CONFLICT (source_id, request_key) DO UPDATE
            SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
            WHERE l.expires_at < now() OR l.holder = EXCLUDED.holder
        RETURNING source_id, request_key)
    , waiting AS (  -- the keys held by another process: we may wait for its refresh
        SELECT pg_notify('{CHANNEL}', '{WAITING_PREFIX}' || w.source_id || '|' || w.request_key) FROM wanted w
        WHERE NOT EXISTS (SELECT 1 FROM lease WHERE lease.source_id = w.source_id
                                                 AND lease.request_key = w.request_key))
    , {ASYNC_COMMIT}
    SELECT w.source_id, w.request_key, c.payload, c.fetched_at, c.etag, c.last_modified,
           c.source_id IS NOT NULL AS cached,
           EXISTS (SELECT 1 FROM lease
                   WHERE lease.source_id = w.source_id AND lease.request_key = w.request_key) AS acquired,
           (SELECT count(*) FROM waiting) AS waiting  -- a CTE runs only if named
    FROM async_commit, wanted w
    LEFT JOIN fetch_cache c ON c.source_id = w.source_id AND c.request_key = w.request_key"""


async def read_and_try_acquire_many(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str]], holder: str, ttl_s: float
) -> dict[tuple[str, str], tuple[asyncpg.Record | None, bool]]:
    """For each distinct (source_id, request_key): its cache row (if any) and whether
    we took its refresh lease, all in one statement: on cold keys the caller would
    otherwise wait for two round-trips in a row before going upstream, and keys that
    go cold together (one query over several sources) share the one."""
    unique = list(dict.fromkeys(keys))
    rows = await conn.fetch(
        READ_AND_TRY_ACQUIRE_MANY, [s for s, _ in unique], [k for _, k in unique], holder, ttl_s
    )
    return {(r["source_id"], r["request_key"]): (r if r["cached"] else None, r["acquired"]) for r in rows}
