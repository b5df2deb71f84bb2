"""Queries on ``articles``: every article the gateway has seen, normalised."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from gateway.sources.base import NormalizedArticle

_COLUMNS = (
    "id, source_id, title, url, summary, author, image_url, published_at, score, comment_count, comment_ids"
)


async def upsert(conn: asyncpg.Connection, articles: Sequence[NormalizedArticle]) -> None:
    """Insert or refresh articles in one round-trip. The first source to bring an
    article keeps it (the same URL from two sources is one article)."""
    unique = list({a.id: a for a in articles}.values())  # ON CONFLICT may touch a row once
    if not unique:
        return
    await conn.execute(
        f"""INSERT INTO articles ({_COLUMNS})
            SELECT {_COLUMNS} FROM jsonb_to_recordset($1::jsonb) AS x(
                id text, source_id text, title text, url text, summary text, author text,
                image_url text, published_at timestamptz, score integer, comment_count integer,
                comment_ids bigint[])
            ON CONFLICT (id) DO UPDATE SET
                title = EXCLUDED.title, url = EXCLUDED.url, summary = EXCLUDED.summary,
                author = EXCLUDED.author, image_url = EXCLUDED.image_url,
                published_at = EXCLUDED.published_at, score = EXCLUDED.score,
                comment_count = EXCLUDED.comment_count, comment_ids = EXCLUDED.comment_ids,
                updated_at = now()""",
        [a.to_json() for a in unique],
    )


async def get_many(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, NormalizedArticle]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM articles WHERE id = ANY($1::text[])", list(ids))
    return {
        r["id"]: NormalizedArticle(
            id=r["id"],
            source_id=r["source_id"],
            title=r["title"],
            url=r["url"],
            summary=r["summary"],
            author=r["author"],
            image_url=r["image_url"],
            published_at=r["published_at"],
            score=r["score"],
            comment_count=r["comment_count"],
            comment_ids=tuple(r["comment_ids"] or ()),
        )
        for r in rows
    }
