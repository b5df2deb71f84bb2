"""Parse NewsAPI v2 (``/v2/top-headlines``, ``/v2/everything``) responses.

Shape: ``{"status": "ok", "totalResults": N, "articles": [{"source": {"id", "name"},
"author", "title", "description", "url", "urlToImage", "publishedAt", "content"}]}``;
on failure ``{"status": "error", "code": ..., "message": ...}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import BadPayload
from gateway.sources.base import NormalizedArticle, Parsed
from gateway.sources.normalize import (
    AUTHOR_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    BadRow,
    article_id,
    clean_text,
    collect_rows,
    http_url,
    parse_date,
    sanitize_html,
)

#: What NewsAPI puts in every field of an article that was taken down.
REMOVED_PLACEHOLDER = "[Removed]"

_STRING_FIELDS = ("author", "title", "description", "url", "urlToImage", "publishedAt", "content")
_STR_OR_NONE = (str, type(None))
_DICT_OR_NONE = (dict, type(None))




def parse_newsapi(body: bytes, source_id: str) -> Parsed:
    """Normalise a NewsAPI response body.

    Raises :class:`BadPayload` when the body as a whole is unusable (not JSON, not an
    object, ``status: "error"``, no ``articles`` list). Bad rows are dropped and counted;
    a repeated article (same id) keeps its first occurrence and is not counted.
    """
    data = _load_json_object(body)
    if data.get("status") == "error":
        code = clean_text(data.get("code"), max_length=100) or "unknown"
        message = clean_text(data.get("message"), max_length=300) or "no message"
        raise BadPayload(f"NewsAPI returned an error: {code}: {message}")
    rows = data.get("articles")
    if not isinstance(rows, list):
        raise BadPayload("NewsAPI response has no 'articles' list")

    return collect_rows(rows, _parse_row, source_id)


def _load_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if body.lstrip()[:1] == b"<":
            raise BadPayload("expected JSON from NewsAPI, got HTML/XML") from None
        raise BadPayload(f"NewsAPI response is not valid JSON (truncated?): {exc}") from None
    if not isinstance(data, dict):
        raise BadPayload(f"expected a JSON object from NewsAPI, got {type(data).__name__}")
    return data


def _parse_row(row: object, source_id: str) -> NormalizedArticle:
    if not isinstance(row, dict):
        raise BadRow
    for key in _STRING_FIELDS:
        if not isinstance(row.get(key), _STR_OR_NONE):
            raise BadRow
    if not isinstance(row.get("source"), _DICT_OR_NONE):
        raise BadRow

    title = clean_text(row.get("title"), max_length=TITLE_MAX_LENGTH)
    if title is None or title == REMOVED_PLACEHOLDER:
        raise BadRow
    url = http_url(row.get("url"))
    if url is None:
        raise BadRow
    raw_date = row.get("publishedAt")
    published_at = parse_date(raw_date)
    if published_at is None and raw_date and raw_date.strip():  # present but unparseable
        raise BadRow

    return NormalizedArticle(
        id=article_id(url=url, source_id=source_id, upstream_id=None),
        source_id=source_id,
        title=title,
        url=url,
        summary=sanitize_html(row.get("description")),
        author=clean_text(row.get("author"), max_length=AUTHOR_MAX_LENGTH),
        image_url=http_url(row.get("urlToImage")),
        published_at=published_at,
    )
