"""Parse RSS 0.9x/1.0/2.0 and Atom feeds: a fast ElementTree path, feedparser otherwise.

feedparser is the reference: it copes with every broken feed in the wild, but it costs
20-35 ms for a 40-item feed (run on the event loop) and seconds for a 5 MB one. Most
feeds are well-formed UTF-8 RSS 2.0, RSS 1.0 or Atom 1.0, so :func:`_fast_parse` reads
those into an ElementTree tree (expat with defusedxml's guards: see :func:`_parse_xml`)
and builds the very entry dicts feedparser would build, for the keys
:func:`_parse_entry` reads; both paths then share ``_parse_entry``.
Anything the fast path cannot reproduce exactly (a DTD, an odd encoding, an element
feedparser treats specially that is not emulated here, ...) makes it give up, and
:func:`_parse_with_feedparser` parses the body as before. tests/test_feed_fastpath.py
checks that both paths agree on every feed the fast path accepts.

feedparser only ever sees bytes wrapped in a stream: given a plain ``bytes``/``str`` it
treats a value that looks like a URL or a file name as something to fetch or open, and an
upstream chooses our body. Its own HTML sanitising and relative-URI resolution are off:
we sanitise every summary with :func:`sanitize_html` anyway (which also drops relative
links, as without a base URL there is nothing to resolve them against), and skipping
both cuts the time feedparser takes on a large feed by roughly 30%.
"""

from __future__ import annotations

import html
import io
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any
from xml.parsers import expat

import feedparser
from feedparser.sanitizer import replace_doctype

from gateway.errors import BadPayload
from gateway.sources.base import NormalizedArticle, Parsed
from gateway.sources.feed_fast import fast_entries
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

logger = logging.getLogger(__name__)

# The first element name in the document, skipping the XML declaration, DOCTYPE and
# comments (which all start with "<?" or "<!").
_ROOT_ELEMENT = re.compile(r"<([^\s/>?!][^\s/>]*)")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def parse_feed(body: bytes, source_id: str) -> Parsed:
    """Normalise an RSS or Atom document.

    Raises :class:`BadPayload` when the body is not a feed (HTML, random bytes, empty) or
    is truncated XML: feedparser's lenient fallback recovers the entries before the cut,
    but a partial list presented as the whole feed would be a lie. Other XML errors
    (an undefined ``&nbsp;``, a stray ``&``) are common in real feeds and harmless once
    the lenient parser has read them, so those feeds are used.

    Entries without a title or an absolute http(s) link, or whose date is present but
    unparseable, are dropped and counted; a repeated article (same id) keeps its first
    occurrence and is not counted.

    Well-formed feeds take :func:`_fast_parse`; everything else (and anything it does
    not cover) :func:`_parse_with_feedparser`. The result is the same either way, except
    that a DTD declaring entities that could expand explosively is a BadPayload.
    """
    parsed = _fast_parse(body, source_id)
    if parsed is not None:
        return parsed
    _refuse_entity_bombs(body)
    return _parse_with_feedparser(body, source_id)


def _parse_with_feedparser(body: bytes, source_id: str) -> Parsed:
    """The reference implementation: feedparser, strict or lenient as the body needs."""
    result = feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False)
    entries: list[Any] = result.get("entries") or []
    bozo_exception = result.get("bozo_exception")
    if not result.get("version") and not entries:  # no "version" at all for an empty body
        detail = f" ({bozo_exception})" if bozo_exception else ""
        raise BadPayload(f"not an RSS or Atom feed{detail}")
    if result.get("bozo") and _is_truncated(body, result.get("encoding") or "utf-8"):
        raise BadPayload(f"truncated feed XML ({bozo_exception})")

    return collect_rows(entries, _parse_entry, source_id)


# --------------------------------------------------------------------------- entity bombs

#: How much text a document's own entity declarations may expand to, in total.
_MAX_ENTITY_EXPANSION = 1 << 20
# A reference to a general entity other than the five predefined ones.
_ENTITY_REFERENCE = re.compile(r"&(?!(?:amp|lt|gt|quot|apos);)[A-Za-z_:][\w.:-]*;")


class _EndOfProlog(Exception):
    """Stops the DTD scan at the root element, before any entity is expanded."""


def _refuse_entity_bombs(body: bytes) -> None:
    """Raise BadPayload if the document's DTD could make feedparser expand it hugely.

    The fast path refuses DTDs, but feedparser does not: it strips entity declarations
    only when each starts a line, so a one-line "billion laughs" reaches expat intact
    and is expanded until expat's own amplification limit (seconds of CPU), and a
    plain 100 KB entity referenced 5,000 times is expanded in full by either of its
    parsers. Feeds with harmless declarations (``<!ENTITY nbsp "&#160;">``) still go
    to feedparser; external entities are never fetched by it and are left alone.
    """
    if b"<!ENTITY" not in body:  # the common case: no declarations at all
        return
    values: dict[str, str] = {}
    problem = ""

    def on_entity(name: str, is_parameter: bool, value: str | None, *_: object) -> None:
        nonlocal problem
        if is_parameter:
            problem = f"a parameter entity (%{name};)"
        elif value is not None and _ENTITY_REFERENCE.search(value):
            problem = f"an entity (&{name};) that refers to other entities"
        if problem:
            raise _EndOfProlog
        if value is not None:
            values[name] = value

    def on_start(*_: object) -> None:
        raise _EndOfProlog

    scanner = expat.ParserCreate()
    scanner.EntityDeclHandler = on_entity
    scanner.StartElementHandler = on_start
    try:
        scanner.Parse(body, True)
    except (_EndOfProlog, expat.ExpatError):
        pass  # a malformed prolog ends the scan; feedparser's own view is added below
    if problem:
        raise BadPayload(f"feed DTD declares {problem}: entity expansion attack?")
    # The entities feedparser's lenient parser would substitute, as it finds them.
    values.update(replace_doctype(body)[2])
    expansion = sum(len(value) * body.count(f"&{name};".encode()) for name, value in values.items())
    if expansion > max(_MAX_ENTITY_EXPANSION, len(body)):
        raise BadPayload(f"feed DTD entities would expand to {expansion} characters: entity expansion attack?")


def _is_truncated(body: bytes, encoding: str) -> bool:
    """True if the document's root element is never closed.

    Only called for documents that failed strict XML parsing; a cut-off download is the
    one failure of those that loses entries silently.
    """
    try:
        text = body.decode(encoding, "replace")
    except LookupError:  # an encoding name Python does not know
        text = body.decode("utf-8", "replace")
    root = _ROOT_ELEMENT.search(_COMMENT.sub("", text[:4096]))
    if root is None:
        return True
    return re.search(rf"</{re.escape(root.group(1))}\s*>", text) is None


def _parse_entry(feed_entry: dict[str, Any], source_id: str) -> NormalizedArticle:
    # A plain dict: FeedParserDict lookups are slow (key aliasing in Python) and
    # .get("updated") falls back to "published" with a DeprecationWarning.
    entry = dict(feed_entry)
    title = clean_text(entry.get("title"), max_length=TITLE_MAX_LENGTH)
    if title is None:
        raise BadRow
    # feedparser already falls back from <link> to a permalink <guid>; an Atom <id> is
    # also worth trying, as some feeds put the article URL there.
    url = http_url(entry.get("link")) or http_url(entry.get("id"))
    if url is None:
        raise BadRow

    return NormalizedArticle(
        id=article_id(url=url, source_id=source_id, upstream_id=None),
        source_id=source_id,
        title=title,
        url=url,
        summary=_summary(entry),
        author=clean_text(entry.get("author"), max_length=AUTHOR_MAX_LENGTH),
        image_url=_image_url(entry),
        published_at=_published_at(entry),
    )


def _published_at(entry: dict[str, Any]) -> datetime | None:
    """The publication date, else the update date; raises BadRow if one is present but
    neither can be read."""
    present = False
    for key in ("published", "updated"):
        raw = entry.get(key)
        if not isinstance(raw, str) or not raw.strip():
            continue
        present = True
        dt = _from_struct_time(entry.get(f"{key}_parsed")) or parse_date(raw)
        if dt is not None:
            return dt
    if present:
        raise BadRow
    return None


def _from_struct_time(value: object) -> datetime | None:
    # feedparser has already converted the zone: its struct_time is UTC.
    if not isinstance(value, time.struct_time):
        return None
    try:
        # min(..., 59): a leap second (60) is valid in struct_time but not in datetime.
        dt = datetime(*value[:5], min(value[5], 59), tzinfo=timezone.utc)
    except ValueError:
        return None
    return parse_date(dt)  # applies the same plausible-year check as everything else


def _summary(entry: dict[str, Any]) -> str | None:
    """The summary (RSS description), else the first content block, sanitised."""
    detail = entry.get("summary_detail")
    if not detail or not detail.get("value"):
        contents = entry.get("content") or [None]
        detail = contents[0]
    if not isinstance(detail, dict) or not isinstance(detail.get("value"), str):
        return None
    value = detail["value"]
    if detail.get("type") == "text/plain":
        value = html.escape(value, quote=False)  # plain text: "<" is a character, not a tag
    return sanitize_html(value)


def _image_url(entry: dict[str, Any]) -> str | None:
    """First image among media:content, media:thumbnail and image enclosures."""
    for media in entry.get("media_content") or ():
        medium, kind = media.get("medium"), media.get("type") or ""
        if (medium == "image" or kind.startswith("image/")) and (url := http_url(media.get("url"))):
            return url
    for thumbnail in entry.get("media_thumbnail") or ():
        if url := http_url(thumbnail.get("url")):
            return url
    for link in entry.get("links") or ():
        if link.get("rel") == "enclosure" and (link.get("type") or "").startswith("image/"):
            if url := http_url(link.get("href")):
                return url
    return None


def _fast_parse(body: bytes, source_id: str) -> Parsed | None:
    """Parse a well-formed feed without feedparser; None if feedparser must decide.

    Returns exactly what :func:`_parse_with_feedparser` would return for the same body,
    or None (never an exception) for malformed XML, DTDs, encodings other than UTF-8
    and any construct whose feedparser semantics are not reproduced in
    :mod:`gateway.sources.feed_fast`.
    """
    try:
        entries = fast_entries(body)
    except Exception as exc:  # noqa: BLE001 - ParseError, DTDForbidden, Unsupported or a surprise: feedparser decides
        logger.debug("feed fast path declined: %s: %s", type(exc).__name__, exc)
        return None
    return collect_rows(entries, _parse_entry, source_id)
