"""Parse Hacker News API responses (``/v0/topstories.json``, ``/v0/item/<id>.json``).

Items are HTML-bearing (``text``) and loosely typed; fields of the wrong type are treated
as absent rather than failing the item, because one item is all a response holds.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import BadPayload
from gateway.sources.base import HNItem, NormalizedArticle
from gateway.sources.normalize import (
    AUTHOR_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    article_id,
    clean_text,
    http_url,
    parse_date,
    sanitize_html,
)

DISCUSSION_URL_BASE = "https://news.ycombinator.com/item?id="
#: Comments are shown whole, so they get a far larger budget than article summaries.
ITEM_TEXT_MAX_LENGTH = 20_000


def parse_topstories(body: bytes) -> list[int]:
    """The story ids, in rank order; entries that are not positive ints are skipped."""
    data = _load_json(body)
    if not isinstance(data, list):
        raise BadPayload(f"expected a JSON list of ids from Hacker News, got {type(data).__name__}")
    return [i for i in data if _is_id(i)]


def parse_item(body: bytes) -> HNItem | None:
    """One item; None for JSON ``null``, which HN returns for an id it does not know."""
    data = _load_json(body)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise BadPayload(f"expected a JSON object from Hacker News, got {type(data).__name__}")
    item_id, item_type = data.get("id"), data.get("type")
    if not _is_id(item_id) or not isinstance(item_type, str) or not item_type:
        raise BadPayload("Hacker News item has no valid 'id' and 'type'")
    kids = data.get("kids")
    return HNItem(
        id=item_id,
        type=item_type,
        by=clean_text(data.get("by"), max_length=AUTHOR_MAX_LENGTH),
        time=parse_date(data.get("time")),
        text=sanitize_html(data.get("text"), max_length=ITEM_TEXT_MAX_LENGTH),
        title=clean_text(data.get("title"), max_length=TITLE_MAX_LENGTH),
        url=http_url(data.get("url")),
        score=_int_or_none(data.get("score")),
        descendants=_int_or_none(data.get("descendants")),
        kids=tuple(k for k in kids if _is_id(k)) if isinstance(kids, list) else (),
        deleted=data.get("deleted") is True,
        dead=data.get("dead") is True,
    )


def story_to_article(
    item: HNItem, source_id: str, *, item_url_base: str = DISCUSSION_URL_BASE
) -> NormalizedArticle | None:
    """The article for a live story; None for other item types, deleted/dead or untitled.

    A story without a link (Ask HN, Show HN text posts) points at its discussion page,
    and its id comes from that URL like any other, so it is stable and matches the same
    discussion linked from another source.
    """
    if item.type != "story" or item.deleted or item.dead or not item.title:
        return None
    url = item.url or f"{item_url_base}{item.id}"
    return NormalizedArticle(
        id=article_id(url=url, source_id=source_id, upstream_id=str(item.id)),
        source_id=source_id,
        title=item.title,
        url=url,
        summary=sanitize_html(item.text),
        author=item.by,
        published_at=item.time,
        score=item.score,
        comment_count=item.descendants,
        comment_ids=item.kids,
    )


def _load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if body.lstrip()[:1] == b"<":
            raise BadPayload("expected JSON from Hacker News, got HTML/XML") from None
        raise BadPayload(f"Hacker News response is not valid JSON (truncated?): {exc}") from None


def _is_id(value: object) -> bool:
    return type(value) is int and value > 0  # type(): bool is an int subclass


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None
