"""Queries on ``articles``: every article the gateway has seen, normalised."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from gateway.sources.base import NormalizedArticle

_COLUMNS = (
    "id, source_id, title, url, summary, author, image_url, published_at, score, comment_count, comment_ids"
)


def upsert_sql(rows: str) -> str:
    """``INSERT ... ON CONFLICT`` of the articles in ``rows``, an SQL expression for a
    jsonb array of :meth:`NormalizedArticle.to_json` objects with distinct ids (ON
    CONFLICT may touch a row once). The first source to bring an article keeps it
    (the same URL from two sources is one article). Rows are locked in id order, so
    two writes sharing articles cannot deadlock. A new row draws its ``seq`` (the
    column's identity default); an updated one keeps its own. Returns ``seq``."""
    return f"""INSERT INTO articles ({_COLUMNS})
            SELECT {_COLUMNS} FROM jsonb_to_recordset({rows}) AS x(
                id text, source_id text, title text, url text, summary text, author text,
                image_url text, published_at timestamptz, score integer, comment_count integer,
                comment_ids bigint[])
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                title = EXCLUDED.title, url = EXCLUDED.url, summary = EXCLUDED.summary,
                author = EXCLUDED.author, image_url = EXCLUDED.image_url,
                published_at = EXCLUDED.published_at, score = EXCLUDED.score,
                comment_count = EXCLUDED.comment_count, comment_ids = EXCLUDED.comment_ids,
                updated_at = now()
            RETURNING seq"""


GET_MANY = f"SELECT {_COLUMNS} FROM articles WHERE id = ANY($1::text[])"


def article_of(r: asyncpg.Record) -> NormalizedArticle:
    return NormalizedArticle(
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


async def get_many(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, NormalizedArticle]:
    rows = await conn.fetch(GET_MANY, list(ids))
    return {r["id"]: article_of(r) for r in rows}
