"""Queries of live updates (``Subscription.articleAdded``): articles by their
sequence number, and the channel that announces new ones.

On :data:`ARTICLES_CHANNEL` a payload ``SEQ|source_id`` says a refresh of that
source committed articles new to the table, the highest of them numbered SEQ
(written by ``cache.PUT_ARTICLES``). It is a wake-up call, well under NOTIFY's
8 kB: listeners read the rows themselves, by ``seq > last seen``.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from gateway.sources.base import NormalizedArticle
from gateway.store.articles import _COLUMNS, article_of

#: NOTIFY channel announcing "max_seq|source_id" after new articles commit.
ARTICLES_CHANNEL = "gateway_articles"
#: Arbitrary constant naming the transaction lock writers of new articles hold from
#: drawing their sequence numbers to commit ("gw-seq").
SEQUENCE_LOCK_ID = 0x67772D736571

SequencedArticle = tuple[int, NormalizedArticle]

LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM articles"


async def last_seq(conn: asyncpg.Connection) -> int:
    """The highest sequence number committed so far (0: no articles)."""
    return int(await conn.fetchval(LAST_SEQ))


AFTER = f"SELECT seq, {_COLUMNS} FROM articles WHERE seq > $1 ORDER BY seq LIMIT $2"


async def after(conn: asyncpg.Connection, seq: int, limit: int) -> list[SequencedArticle]:
    """Articles numbered above ``seq``, oldest first, at most ``limit``."""
    return [(r["seq"], article_of(r)) for r in await conn.fetch(AFTER, seq, limit)]


# Newest first, so that a cursor older than the window gets the newest `limit`.
REPLAY = f"""SELECT seq, {_COLUMNS} FROM articles
    WHERE seq > $1 AND ($2::text[] IS NULL OR source_id = ANY($2::text[]))
    ORDER BY seq DESC LIMIT $3"""


async def replay(
    conn: asyncpg.Connection, seq: int, sources: Sequence[str] | None, limit: int
) -> list[SequencedArticle]:
    """The newest ``limit`` articles numbered above ``seq`` (of ``sources``, or all),
    oldest first."""
    rows = await conn.fetch(REPLAY, seq, list(sources) if sources is not None else None, limit)
    return [(r["seq"], article_of(r)) for r in reversed(rows)]
