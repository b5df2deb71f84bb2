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

import codecs
import html
import io
import logging
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat
from xml.sax.saxutils import escape as _xml_escape

import feedparser

# defusedxml's guards, not plain xml.etree: the body comes from an upstream we do not
# control, and the fast path refuses DTDs outright as defusedxml does (so no "billion
# laughs" entity expansion and no external entities); see _parse_xml. Such documents
# go to feedparser, but only once _refuse_entity_bombs has checked what their DTD
# declares.
from defusedxml.common import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

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

# feedparser internals the fast path reuses so it behaves the same by construction:
# its date parser, URL "fixer", cp1252 repair table, namespace table, handler names and
# DOCTYPE rewriting.
# If a feedparser release moves them, the fast path switches itself off (every feed
# then takes the feedparser path) instead of breaking imports.
try:
    from feedparser.api import StrictFeedParser as _FPStrictParser
    from feedparser.datetimes import _parse_date as _fp_parse_date
    from feedparser.datetimes.rfc822 import day_names as _FP_DAY_NAMES
    from feedparser.datetimes.rfc822 import months as _FP_MONTHS
    from feedparser.datetimes.rfc822 import timezone_names as _FP_ZONES
    from feedparser.html import _cp1252 as _FP_CP1252
    from feedparser.mixin import _FeedParserMixin
    from feedparser.sanitizer import replace_doctype as _fp_replace_doctype
    from feedparser.urls import _urljoin as _fp_urljoin
    from feedparser.util import FeedParserDict as _FPDict

    _FP_NAMESPACES: dict[str, str] = dict(_FeedParserMixin.namespaces)
    _FP_KEYMAP: dict[str, Any] = dict(_FPDict.keymap)
    #: Element names (as feedparser spells them: ``prefix_local``) with a handler.
    _FP_HANDLERS: frozenset[str] = frozenset(
        name.removeprefix("_start_").removeprefix("_end_")
        for name in dir(_FPStrictParser)
        if name.startswith(("_start_", "_end_"))
    )
    _FAST_PATH_AVAILABLE = True
except (ImportError, AttributeError):  # pragma: no cover - depends on the feedparser release
    _FAST_PATH_AVAILABLE = False

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
    if _FAST_PATH_AVAILABLE:  # i.e. feedparser's internals are where we expect them
        # The entities feedparser's lenient parser would substitute, as it finds them.
        values.update(_fp_replace_doctype(body)[2])
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


# --------------------------------------------------------------------------- fast path
#
# How feedparser builds an entry, in the parts that matter here (its strict, SAX-based
# parser is the one it uses for a well-formed document, so that is what is mirrored):
#
# * An element is known by its namespace's *standard* prefix (feedparser's table, by
#   lower-cased URI; RSS 0.9x/1.0 and Atom map to none) and its lower-cased local name,
#   e.g. ``dc_creator``, ``pubdate``. Handlers exist for some of those names; any other
#   element stores its text (or attributes) under its own name.
# * The text of an element is stripped, links in "URI" elements are passed through
#   ``_urljoin("", ...)``, and then two repairs run: text that is really UTF-8 read as
#   Latin-1 is re-decoded, and C1 control characters are mapped as cp1252.
# * A link element's text also gets "&amp;" and "&name;" undone; attribute values
#   (Atom link hrefs, enclosure and media URLs) get none of this.
#
# The fast path handles the elements real feeds put in their items; it gives up
# (``_Unsupported``) on anything feedparser treats specially that is not mirrored here,
# on repeated elements whose precedence rules are subtle (two titles, two summaries, two
# authors), and on documents whose namespace declarations could make feedparser name
# an element differently than computed here.

_XHTML_NS = "http://www.w3.org/1999/xhtml"
_XLINK_NS = "http://www.w3.org/1999/xlink"
# Names as _parse_xml leaves them: "uri}local".
_XML_NS_TAG = "http://www.w3.org/XML/1998/namespace}"
_RDF_ABOUT = "http://www.w3.org/1999/02/22-rdf-syntax-ns#}about"
_ATOM10_NS = "http://www.w3.org/2005/atom"  # lower-cased, as feedparser compares it
_RSS10_NS = "http://purl.org/rss/1.0/"
_RSS090_NS = "http://my.netscape.com/rdf/simple/0.9/"

_RSS_VERSIONS = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}
_ATOM_VERSIONS = {"0.1": "atom01", "0.2": "atom02", "0.3": "atom03"}

_TEXT_PLAIN = "text/plain"
_TEXT_HTML = "text/html"
_XHTML = "application/xhtml+xml"
_CONTENT_TYPE_ALIASES = {"text": _TEXT_PLAIN, "plain": _TEXT_PLAIN, "html": _TEXT_HTML, "xhtml": _XHTML}
_TEXT_TYPES = frozenset({_TEXT_PLAIN, _TEXT_HTML, _XHTML})
_HTML_TYPES = frozenset({_TEXT_HTML, _XHTML})

# Names whose feedparser handler pushes a "content" context: element children of those
# are read as inline markup, and some of their end tags still fire handlers, which can
# leave feedparser's state unbalanced for the rest of the document.
_CONTENT_HANDLERS = frozenset(
    {
        "title", "subtitle", "tagline", "rights", "copyright", "description", "abstract",
        "info", "feedburner_browserfriendly", "summary", "content", "body", "xhtml_body",
        "content_encoded", "fullitem", "dc_title", "dc_description", "dc_rights",
        "itunes_subtitle", "itunes_summary", "media_title", "media_description",
    }
)  # fmt: skip
# Elements with a handler that only touches keys _parse_entry never reads (tags,
# credits, ratings, the source feed). Allowed inside items when they have no children.
_HARMLESS_HANDLERS = frozenset(
    {"category", "keywords", "dc_subject", "media_category", "media_credit", "media_rating", "source"}
)
# Element names that open or close feedparser's feed/entry state: they may only appear
# where the fast path expects them.
_STRUCTURAL = frozenset({"rss", "feed", "channel", "item", "entry"})
# Entry keys written by the handlers mirrored here or read by _parse_entry: an element
# without a handler whose name maps onto one of these would overwrite it.
_PROTECTED_KEYS = frozenset(
    {
        "title", "title_detail", "link", "links", "id", "guidislink", "summary",
        "summary_detail", "content", "author", "author_detail", "authors", "published",
        "published_parsed", "updated", "updated_parsed", "media_content", "media_thumbnail",
        "tags", "media_credit", "media_rating", "source", "href", "credit", "rating",
    }
)  # fmt: skip
# Children of an Atom <author> (or RSS author/dc:creator) and what feedparser records.
_AUTHOR_PARTS = {"name": "name", "email": "email", "uri": "href", "url": "href", "homepage": "href"}

# feedparser's own test for an encoding declaration (on the body after any BOM).
_FP_XML_PI_ENCODING = re.compile(rb'^<\?.*encoding=[\'"](.*?)[\'"].*\?>')
# Expat's reading of the same declaration.
_XML_DECL_ENCODING = re.compile(rb"""encoding\s*=\s*["']([^"']*)["']""")
_LINK_ENTITY = re.compile("&([A-Za-z0-9_]+);")


if _FAST_PATH_AVAILABLE:
    #: Lower-cased namespace URI -> feedparser's standard prefix ("" for RSS and Atom).
    _STD_PREFIXES: dict[str, str] = {uri.lower(): prefix for uri, prefix in _FP_NAMESPACES.items()}
    _STD_NAMES: frozenset[str] = frozenset(prefix.lower() for prefix in _FP_NAMESPACES.values() if prefix)

    # The characters the cp1252 repair maps: translating text without any is a no-op.
    _FP_CP1252_KEYS = re.compile(f"[{''.join(re.escape(chr(key)) for key in _FP_CP1252)}]")

    # Dates: see _feed_date. The names are those feedparser's RFC 822 handler knows (it
    # lower-cases the date first), in their usual capitalisation.
    def _alternatives(names: Iterable[str]) -> str:
        return "|".join(sorted(names, key=lambda name: (-len(name), name)))

    _DAY_NAMES = _alternatives(name.title() for name in _FP_DAY_NAMES)
    _MONTH_NAMES = _alternatives(name.title() for name in _FP_MONTHS)
    # Zone names it looks up as they are ("gmt..." names are rewritten first).
    _ZONE_NAMES = _alternatives(
        name.upper() for name in _FP_ZONES if name.isalpha() and (name == "gmt" or not name.startswith("gmt"))
    )
    _W3DTF_DATE = re.compile(
        r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d(?:\.\d+)?)(?:[Zz]|([+-])(\d\d):(\d\d))", re.ASCII
    )
    _RFC822_DATE = re.compile(
        rf"(?:(?:{_DAY_NAMES}), )?(\d\d?) ({_MONTH_NAMES}) (\d{{4}}) (\d\d):(\d\d):(\d\d) ([+-]\d{{4}}|{_ZONE_NAMES})",
        re.ASCII,
    )


class _Unsupported(Exception):
    """The fast path cannot promise feedparser's result for this document."""


def _fast_parse(body: bytes, source_id: str) -> Parsed | None:
    """Parse a well-formed feed without feedparser; None if feedparser must decide.

    Returns exactly what :func:`_parse_with_feedparser` would return for the same body,
    or None (never an exception) for malformed XML, DTDs, encodings other than UTF-8
    and any construct whose feedparser semantics are not reproduced here.
    """
    if not _FAST_PATH_AVAILABLE:
        return None
    try:
        entries = _fast_entries(body)
    except Exception as exc:  # noqa: BLE001 - ParseError, DTDForbidden, _Unsupported or a surprise: feedparser decides
        logger.debug("feed fast path declined: %s: %s", type(exc).__name__, exc)
        return None
    return collect_rows(entries, _parse_entry, source_id)


def _fast_entries(body: bytes) -> list[dict[str, Any]]:
    """The entry dicts feedparser would produce (for the keys _parse_entry reads)."""
    _check_encoding(body)
    root, declarations = _parse_xml(body)
    return _Document(declarations).entries(root)


def _parse_xml(body: bytes) -> tuple[Element, list[tuple[str | None, str | None]]]:
    """The document's element tree, and its namespace declarations in document order.

    Parsed as ``defusedxml.ElementTree.DefusedXMLParser(forbid_dtd=True)`` parses:
    expat, with defusedxml's guards installed the way it installs them and raising its
    exceptions. Only the tree building differs: DefusedXMLParser extends the pure-Python
    XMLParser, which runs Python code for every start and end tag; here expat calls
    ElementTree's C TreeBuilder directly, which halves the parse. The one visible
    difference is that names keep expat's "uri}local" form (ElementTree's "{uri}local"
    without the leading brace): see _split_tag.
    """
    builder = TreeBuilder()
    declarations: list[tuple[str | None, str | None]] = []
    parser = expat.ParserCreate(namespace_separator="}")
    # The guards: a DOCTYPE is refused as soon as it starts, so nothing declared in a
    # DTD is ever used; the entity handlers are defusedxml's second line of defence.
    parser.StartDoctypeDeclHandler = _forbid_dtd
    parser.EntityDeclHandler = _forbid_entity
    parser.UnparsedEntityDeclHandler = _forbid_unparsed_entity
    parser.ExternalEntityRefHandler = _forbid_external_entity
    # Connected as XMLParser connects its target: the same tree, names aside.
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.CommentHandler = builder.comment
    parser.ProcessingInstructionHandler = builder.pi
    # Namespace declarations decide feedparser's version and element names; ElementTree
    # does not keep them, so record them as expat reports them (in document order).
    parser.StartNamespaceDeclHandler = lambda prefix, uri: declarations.append((prefix, uri))
    parser.Parse(body, True)
    return builder.close(), declarations


def _forbid_dtd(name: str, sysid: str | None, pubid: str | None, has_internal_subset: bool) -> None:
    raise DTDForbidden(name, sysid, pubid)


def _forbid_entity(
    name: str,
    is_parameter: bool,
    value: str | None,
    base: str | None,
    sysid: str | None,
    pubid: str | None,
    notation_name: str | None,
) -> None:
    raise EntitiesForbidden(name, value, base, sysid, pubid, notation_name)


def _forbid_unparsed_entity(
    name: str, base: str | None, sysid: str | None, pubid: str | None, notation_name: str | None
) -> None:
    raise EntitiesForbidden(name, None, base, sysid, pubid, notation_name)


def _forbid_external_entity(context: str, base: str | None, sysid: str | None, pubid: str | None) -> None:
    raise ExternalReferenceForbidden(context, base, sysid, pubid)


def _check_encoding(body: bytes) -> None:
    """Only UTF-8 documents: feedparser transcodes anything else first, and where its
    guess and expat's could differ the two paths would read different text."""
    data = body[3:] if body.startswith(codecs.BOM_UTF8) else body
    if b"\x00" in data[:4]:  # UTF-16/32 without a BOM (a BOM fails the checks below)
        raise _Unsupported("not UTF-8")
    match = _FP_XML_PI_ENCODING.match(data)
    if match and match.group(1).lower() != b"utf-8":
        raise _Unsupported("declared encoding is not UTF-8")
    if data.startswith(b"<?xml"):
        declared = _XML_DECL_ENCODING.search(data[: data.find(b"?>")])
        if declared and declared.group(1).lower() != b"utf-8":
            raise _Unsupported("declared encoding is not UTF-8")
    elif data.lstrip()[:1] != b"<":
        raise _Unsupported("does not start with markup")


def _pop_text(raw: str, *, resolve: bool = False) -> str:
    """An element's text as feedparser stores it (see the notes above)."""
    text = raw.strip()
    if resolve and text:
        text = _resolve(text)
    if not text.isascii():  # both repairs are no-ops on ASCII
        try:
            text = text.encode("iso-8859-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
        if _FP_CP1252_KEYS.search(text):  # str.translate is slow on non-ASCII text
            text = text.translate(_FP_CP1252)
    return text


def _resolve(uri: str) -> str:
    """feedparser's ``_urljoin("", uri)``. With no base URL, urljoin returns ``uri`` as
    is, so only its "scheme:///x" -> "scheme://x" fix-up can change anything; skipping
    the call otherwise saves a regex substitution per link."""
    return _fp_urljoin("", uri) if ":///" in uri else uri


def _feed_date(value: str) -> time.struct_time | None:
    """feedparser's ``_parse_date(value)`` (a UTC struct_time, or None), faster for the
    two shapes nearly every feed uses.

    feedparser tries its date handlers in turn, W3DTF first and RFC 822 second, and
    keeps the first answer. For these shapes, written strictly, it is known which
    handler answers, and this repeats its computation (the same operations on the same
    numbers); whatever else, or whatever that computation rejects (an impossible date,
    an overflow), goes to feedparser itself, so the result is always feedparser's:

    * ``2024-01-02T03:04:05Z``, ``...05.123+01:00``: the W3DTF handler reads it (and
      truncates the fraction, ``int(float(seconds))``).
    * ``Tue, 02 Jan 2024 03:04:05 GMT``, ``2 Jan 2024 03:04:05 -0500``: the W3DTF
      handler declines it (what it takes for the year, the text before the first "t"
      or else the first word, up to any "-", is here a day number, "mon,", "sa", "1 oc"
      or longer, never four digits), and the RFC 822 handler reads it, zone names
      included.
    """
    try:
        if match := _W3DTF_DATE.fullmatch(value):
            year, month, day, hour, minute, second, sign, tz_hours, tz_minutes = match.groups()
            stamp = datetime(int(year), int(month), int(day), int(hour), int(minute), int(float(second)))
            hours, minutes = (int(tz_hours), int(tz_minutes)) if sign else (0, 0)
        elif match := _RFC822_DATE.fullmatch(value):
            day, month, year, hour, minute, second, zone = match.groups()
            stamp = datetime(int(year), _FP_MONTHS[month.lower()], int(day), int(hour), int(minute), int(second))
            sign = zone[0]
            if sign in "+-":
                hours, minutes = int(zone[1:3]), int(zone[3:])
            else:  # a zone name: whole hours
                hours, minutes = _FP_ZONES[zone.lower()], 0
        else:
            return _fp_parse_date(value)
        if hours or minutes:  # else stamp - timedelta(0) is stamp
            if sign == "-":
                hours, minutes = -hours, -minutes
            stamp -= timedelta(0, 0, 0, 0, minutes, hours)
        return stamp.utctimetuple()
    except (ValueError, OverflowError):
        return _fp_parse_date(value)


def _map_content_type(content_type: str) -> str:
    content_type = content_type.lower()
    return _CONTENT_TYPE_ALIASES.get(content_type, content_type)


def _enforce_href(attrs: dict[str, str]) -> dict[str, str]:
    """feedparser's ``_enforce_href``: url, else uri, else href becomes ``href``."""
    href = attrs.get("url", attrs.get("uri", attrs.get("href")))
    if href:
        attrs.pop("url", None)
        attrs.pop("uri", None)
        attrs["href"] = href
    return attrs


def _split_tag(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an element or attribute name as _parse_xml leaves it:
    "uri}local", or a bare "local" ("}" cannot occur in an XML name)."""
    namespace, brace, local = tag.partition("}")
    return (namespace, local) if brace else ("", tag)


class _Document:
    """Per-document state: feedparser's view of the namespaces, and the version."""

    def __init__(self, declarations: list[tuple[str | None, str | None]]) -> None:
        self.version = ""
        self._atom = self._atom10 = False  # set once the root element is known
        # feedparser's "namespacemap": document prefix -> standard prefix.
        self._namespacemap: dict[str, str] = {}
        # Prefixes the document binds to namespaces feedparser does not know.
        self._unknown_prefixes: dict[str, set[str]] = {}
        for prefix, uri in declarations:
            if not uri:  # feedparser ignores un-declarations
                continue
            lower = uri.lower()
            if not self.version:
                if not prefix and lower == _RSS090_NS:
                    self.version = "rss090"
                elif lower == _RSS10_NS:
                    self.version = "rss10"
                elif lower == _ATOM10_NS:
                    self.version = "atom10"
            if prefix and uri == _XLINK_NS:
                # feedparser copies an xlink declaration onto the next element's attributes.
                raise _Unsupported("xlink namespace declared")
            std = self._std_prefix(uri)
            if std is None:
                if prefix:
                    self._unknown_prefixes.setdefault(uri, set()).add(prefix.lower())
            elif prefix:
                self._namespacemap[prefix] = std
                if prefix != std and prefix in _STD_NAMES:
                    # e.g. xmlns:content bound to Dublin Core: feedparser would then call
                    # <content:encoded> "dc_encoded". Too clever by half; let it decide.
                    raise _Unsupported(f"prefix {prefix!r} bound to another known namespace")
        self._names: dict[str, tuple[str, ...]] = {}
        self._handlers: dict[str, _Handler] = {}  # see _children
        self._dates: dict[str, time.struct_time | None] = {}  # see date

    def _std_prefix(self, namespace: str) -> str | None:
        """feedparser's standard prefix for a namespace URI ('' for RSS/Atom), or None."""
        lower = namespace.lower()
        if "backend.userland.com/rss" in lower:
            lower = "http://backend.userland.com/rss"
        return _STD_PREFIXES.get(lower)

    def names(self, tag: str) -> tuple[str, ...]:
        """The name(s) feedparser may give an element: one for a known namespace; for
        an unknown one, every name its (possibly re-declared) prefixes could produce."""
        names = self._names.get(tag)
        if names is None:
            names = self._names[tag] = self._compute_names(tag)
        return names

    def _compute_names(self, tag: str) -> tuple[str, ...]:
        namespace, local = _split_tag(tag)
        local = local.lower()
        std = self._std_prefix(namespace)
        if std is not None:
            if not std:
                return (local,)
            prefix = std.lower()
            prefix = self._namespacemap.get(prefix, prefix)
            return (f"{prefix}_{local}" if prefix else local,)
        # feedparser names an element of an unknown namespace after the first prefix it
        # saw bound to that URI (then mapped through namespacemap), or leaves it bare.
        names = {local}
        for prefix in self._unknown_prefixes.get(namespace, ()):
            for mapped in (prefix, self._namespacemap.get(prefix, prefix)):
                names.add(f"{mapped}_{local}" if mapped else local)
        return tuple(sorted(names))

    def date(self, value: str) -> time.struct_time | None:
        """feedparser's reading of a date. Remembered: an Atom entry's <published> and
        <updated> are often the same string. (struct_time is immutable, so sharing one
        between entries is safe.)"""
        dates = self._dates
        if value not in dates:
            dates[value] = _feed_date(value)
        return dates[value]

    def attrs(self, el: Element, *, strict: bool = True) -> dict[str, str]:
        """An element's attributes as feedparser's handlers see them: lower-cased names
        (``prefix:name`` for known namespaces), ``rel`` and ``type`` values lower-cased.

        feedparser drops the prefix of an attribute in an unknown namespace (or in the
        RSS/Atom ones), so ``foo:href`` would pose as ``href``: ``strict`` refuses such
        attributes, otherwise they are kept under their bare name, as feedparser does,
        unless that collides with another attribute.
        """
        out: dict[str, str] = {}
        for name, value in el.attrib.items():
            if "}" in name:
                namespace, local = _split_tag(name)
                std = self._std_prefix(namespace)
                if std:
                    key = f"{std}:{local}".lower()
                elif strict:
                    raise _Unsupported(f"attribute {name!r}")
                else:
                    key = local.lower()
                    if key in out or any(other.lower() == key for other in el.attrib if "}" not in other):
                        raise _Unsupported(f"attribute {name!r} collides with another")
            else:
                key = name.lower()
            if key in ("rel", "type"):
                value = value.lower()
            out[key] = value
        return out

    # ----------------------------------------------------------------- structure

    def entries(self, root: Element) -> list[dict[str, Any]]:
        """Check the document's shape and build one dict per entry, in order."""
        _check_base(root)
        root_names = self.names(root.tag)
        root_attrs = self.attrs(root, strict=False)  # only "version" is read
        outside: list[Element] = []
        container = root
        if root_names == ("rss",):
            if not self.version.startswith("rss"):  # feedparser's _start_rss
                version = root_attrs.get("version", "")
                self.version = _RSS_VERSIONS.get(version) or ("rss20" if version.startswith("2.") else "rss")
            channels = [child for child in root if self.names(child.tag) == ("channel",)]
            if len(channels) != 1:
                raise _Unsupported("expected one <channel>")
            (container,) = channels
            _check_base(container)
            outside = [child for child in root if child is not container]
            entry_name = "item"
        elif root_names == ("feed",):
            if not self.version:  # feedparser's _start_feed
                self.version = _ATOM_VERSIONS.get(root_attrs.get("version", "")) or "atom"
            entry_name = "entry"
        elif root_names == ("rdf_rdf",):
            # Nothing at the root sets the version, so a namespace declared further down
            # could set it half-way through; only an "atom" version would matter.
            if self.version.startswith("atom"):
                raise _Unsupported("RDF document with an Atom version")
            entry_name = "item"
        else:
            raise _Unsupported(f"root element {root.tag!r}")
        self._atom = self.version.startswith("atom")
        self._atom10 = self.version == "atom10"

        for el in outside:
            self._check_outside(el)
        entries: list[dict[str, Any]] = []
        for child in container:
            names = self.names(child.tag)
            if names == (entry_name,):
                entries.append(self._entry(child))
            elif names == ("channel",) and root_names == ("rdf_rdf",):
                _check_base(child)  # RSS 1.0: the channel is a sibling of the items
                for grandchild in child:
                    self._check_outside(grandchild)
            else:
                self._check_outside(child)
        if not entries and not self.version:
            raise _Unsupported("no version, no entries")  # feedparser says "not a feed"
        return entries

    def _check_outside(self, el: Element) -> None:
        """An element outside the entries: it must not open another feed or entry, and
        must not unbalance feedparser's state (see _CONTENT_HANDLERS)."""
        names = self.names(el.tag)
        _check_base(el)
        if _STRUCTURAL.intersection(names):
            raise _Unsupported(f"unexpected <{el.tag}>")
        if _CONTENT_HANDLERS.intersection(names):
            for descendant in el.iter():
                if descendant is not el:
                    _check_base(descendant)
                    if _FP_HANDLERS.intersection(self.names(descendant.tag)):
                        raise _Unsupported(f"<{descendant.tag}> inside <{el.tag}>")
            return
        for child in el:
            self._check_outside(child)

    # ----------------------------------------------------------------- entries

    def _entry(self, item: Element) -> dict[str, Any]:
        _check_base(item)
        attrs = self.attrs(item, strict=False)
        if "lastmod" in attrs or "href" in attrs:
            raise _Unsupported("CDF entry attributes")  # they set the date and the link
        if any("}" in name and name.lower().endswith("}about") and name != _RDF_ABOUT for name in item.attrib):
            # feedparser also keys it by its document prefix, which could be "rdf:".
            raise _Unsupported("foreign 'about' attribute")
        entry: dict[str, Any] = {}
        if about := attrs.get("rdf:about"):
            entry["id"] = about
        seen: set[str] = set()
        self._children(item, entry, seen)
        return entry

    def _children(self, parent: Element, entry: dict[str, Any], seen: set[str]) -> None:
        handlers = self._handlers
        for child in parent:
            _check_base(child)
            tag = child.tag
            handler = handlers.get(tag)
            if handler is None:
                handler = handlers[tag] = self._entry_handler(tag)
            handler(self, child, entry, seen)

    def _entry_handler(self, tag: str) -> _Handler:
        """What an element of this name inside an entry calls for (the same for every
        element of the name, so _children looks it up once per name and document)."""
        names = self.names(tag)
        if len(names) == 1:
            if handler := _ENTRY_HANDLERS.get(names[0]):
                return handler
            if names[0] in _HARMLESS_HANDLERS:
                return _on_leaf
        # An element feedparser just stores under its own name: fine unless it has a
        # handler, children, or a name that lands on a key we read.
        for name in names:
            if name in _FP_HANDLERS:
                return _unsupported(f"<{tag}> ({name}) is not emulated")
            key = _FP_KEYMAP.get(name, name)
            if isinstance(key, list):
                key = key[0]
            if key in _PROTECTED_KEYS:
                return _unsupported(f"<{tag}> would overwrite {key!r}")
        return _on_leaf

    def _construct(self, el: Element, default_type: str, *, typed: bool = True) -> tuple[str, str]:
        """(content type, text) of a text construct (title, description, content...).

        ``typed``: the type matters downstream (not for titles); feedparser guesses
        html-or-text for "text/plain" outside Atom, which is not mirrored here.
        """
        attrs = self.attrs(el)
        if "mode" in attrs or "src" in attrs:
            raise _Unsupported("base64/escaped mode or out-of-line content")
        content_type = _map_content_type(attrs.get("type", default_type))
        if content_type not in _TEXT_TYPES:
            raise _Unsupported(f"content type {content_type!r}")  # feedparser may base64-decode
        if typed and content_type == _TEXT_PLAIN and not self._atom:
            raise _Unsupported("plain text outside Atom (feedparser guesses)")
        if content_type == _XHTML:
            return content_type, _pop_text(self._xhtml(el))
        if len(el):
            # Markup that should have been escaped: feedparser switches to inline XHTML
            # mid-element (and ignores <div>s); not mirrored.
            raise _Unsupported(f"children in <{el.tag}>")
        return content_type, _pop_text(el.text or "")

    def _xhtml(self, el: Element) -> str:
        """Inline XHTML serialised as feedparser does, wrapper <div> removed in Atom 1.0."""
        pieces: list[str] = []
        if el.text:
            pieces.append(_xml_escape(el.text))
        for child in el:
            self._serialize(child, pieces)
        if self._atom10:
            # feedparser's rule, on its list of pieces (tags and text runs): drop blank
            # pieces at both ends, then unwrap a <div> that spans everything.
            while len(pieces) > 1 and not pieces[-1].strip():
                del pieces[-1]
            while len(pieces) > 1 and not pieces[0].strip():
                del pieces[0]
            if pieces and (pieces[0] == "<div>" or pieces[0].startswith("<div ")) and pieces[-1] == "</div>":
                depth = 0
                for piece in pieces[:-1]:
                    if piece.startswith("</"):
                        depth -= 1
                        if depth == 0:
                            break
                    elif piece.startswith("<") and not piece.endswith("/>"):
                        depth += 1
                else:
                    pieces = pieces[1:-1]
        return "".join(pieces)

    def _serialize(self, el: Element, pieces: list[str]) -> None:
        namespace, local = _split_tag(el.tag)
        local = local.lower()
        # Only XHTML elements without a feedparser handler: others (an Atom <title>
        # written without the XHTML namespace, <svg>, <math>...) fire handlers or get
        # extra attributes in feedparser.
        if namespace != _XHTML_NS or local in ("svg", "math") or _FP_HANDLERS.intersection(self.names(el.tag)):
            raise _Unsupported(f"<{el.tag}> in inline XHTML")
        _check_base(el)
        if any("}" in name and not name.startswith(_XML_NS_TAG) for name in el.attrib):
            # feedparser would also emit the attribute under its document prefix.
            raise _Unsupported(f"namespaced attribute in inline XHTML <{el.tag}>")
        attrs = "".join(f' {key}="{_xml_escape(value, {chr(34): "&quot;"})}"' for key, value in self.attrs(el).items())
        pieces.append(f"<{local}{attrs}>")
        if el.text:
            pieces.append(_xml_escape(el.text))
        for child in el:
            self._serialize(child, pieces)
        pieces.append(f"</{local}>")
        if el.tail:
            pieces.append(_xml_escape(el.tail))


def _check_base(el: Element) -> None:
    """xml:base (or a bare base=) makes feedparser resolve links against it."""
    for name in el.attrib:
        if name[-4:].lower() == "base" and (len(name) == 4 or name[-5] == "}"):
            raise _Unsupported("xml:base")


def _once(seen: set[str], key: str) -> None:
    """Repeats of these fields follow precedence rules in feedparser (depth, "second
    description is content") that are not worth mirroring: let it handle them."""
    if key in seen:
        raise _Unsupported(f"repeated {key}")
    seen.add(key)


def _leaf_text(el: Element) -> str:
    if len(el):
        raise _Unsupported(f"children in <{el.tag}>")
    return el.text or ""


# Handlers, one per feedparser element name, each mirroring the feedparser handler(s)
# of that name as far as the keys _parse_entry reads are concerned.
_Handler = Callable[[_Document, Element, dict[str, Any], set[str]], None]


def _on_title(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    _once(seen, "title")
    entry["title"] = doc._construct(el, _TEXT_PLAIN, typed=False)[1]


def _summary_handler(default_type: str, *, atom_only: bool) -> _Handler:
    def handle(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
        if atom_only and not doc._atom:
            raise _Unsupported(f"<{el.tag}> outside Atom")
        # With a single summary-like element feedparser stores it as the summary, even
        # after a content element (which only fills "summary" if it is still empty).
        _once(seen, "summary")
        content_type, value = doc._construct(el, default_type)
        entry["summary"] = value
        entry["summary_detail"] = {"type": content_type, "value": value}

    return handle


def _content_handler(default_type: str, *, atom_only: bool) -> _Handler:
    def handle(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
        if atom_only and not doc._atom:
            raise _Unsupported(f"<{el.tag}> outside Atom")
        _once(seen, "content")
        content_type, value = doc._construct(el, default_type)
        entry.setdefault("content", []).append({"type": content_type, "value": value})
        entry.setdefault("summary", value)  # all our types are copied to the summary

    return handle


def _on_author(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    # RSS: the element's text. Atom: "name (email)", "name" or "email" from its
    # children, else its own text. feedparser keeps the name and email unrepaired.
    _once(seen, "author")
    detail: dict[str, str] = {}
    own_text = [el.text or ""]
    for child in el:
        _check_base(child)
        names = doc.names(child.tag)
        part = _AUTHOR_PARTS.get(names[0]) if len(names) == 1 else None
        if part is None:
            raise _Unsupported(f"<{child.tag}> in an author")
        text = _leaf_text(child)
        detail[part] = _pop_text(text, resolve=True) if part == "href" else text.strip()
        own_text.append(child.tail or "")
    name, email = detail.get("name"), detail.get("email")
    if name and email:
        entry["author"] = f"{name} ({email})"
    elif name or email:
        entry["author"] = name or email
    else:
        entry["author"] = _pop_text("".join(own_text))


def _date_handler(key: str) -> _Handler:
    def handle(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
        _once(seen, key)
        value = _pop_text(_leaf_text(el))
        entry[key] = value
        entry[f"{key}_parsed"] = doc.date(value)

    return handle


def _on_guid(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    # RSS <guid> and Atom <id>: the id, and the link too when it is a permalink
    # (Atom ids count as permalinks) and no link came earlier.
    _once(seen, "id")
    is_link = doc.attrs(el).get("ispermalink", "true") == "true"
    value = _pop_text(_leaf_text(el), resolve=is_link)
    entry["id"] = value
    if is_link:
        entry.setdefault("link", value)


def _on_link(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    # RSS <link>text</link> and Atom <link rel= type= href=/>; a later one wins.
    attrs = doc.attrs(el)
    attrs.setdefault("rel", "alternate")
    attrs.setdefault("type", "application/atom+xml" if attrs["rel"] == "self" else "text/html")
    _enforce_href(attrs)
    if "href" in attrs:
        attrs["href"] = _resolve(attrs["href"])
    link = dict(attrs)
    entry.setdefault("links", []).append(link)
    text = _leaf_text(el)
    if "href" in attrs:
        if attrs["rel"] == "alternate" and _map_content_type(attrs["type"]) in _HTML_TYPES:
            entry["link"] = attrs["href"]
        return
    value = _pop_text(text, resolve=True)
    if "&" in value:  # else neither substitution can match (and re.sub with a template is slow)
        value = _LINK_ENTITY.sub(r"&\g<1>", value.replace("&amp;", "&"))
    entry["link"] = value
    if value:
        link["href"] = value


def _on_enclosure(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    _leaf_text(el)
    attrs = _enforce_href(doc.attrs(el))
    attrs["rel"] = "enclosure"
    entry.setdefault("links", []).append(attrs)


def _on_media_content(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    _leaf_text(el)
    entry.setdefault("media_content", []).append(doc.attrs(el))


def _on_media_thumbnail(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    attrs = doc.attrs(el)
    entry.setdefault("media_thumbnail", []).append(attrs)
    url = _pop_text(_leaf_text(el), resolve=True)
    if url.strip() and "url" not in attrs:  # <media:thumbnail>URL</media:thumbnail>
        attrs["url"] = url


def _on_media_group(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    doc._children(el, entry, seen)  # feedparser treats the group as transparent


def _on_leaf(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
    # Elements whose handler (if any) touches nothing _parse_entry reads, as long as
    # they have no children.
    _leaf_text(el)


def _unsupported(reason: str) -> _Handler:
    def handle(doc: _Document, el: Element, entry: dict[str, Any], seen: set[str]) -> None:
        raise _Unsupported(reason)

    return handle


_ENTRY_HANDLERS: dict[str, _Handler] = {
    "title": _on_title,
    "description": _summary_handler(_TEXT_HTML, atom_only=False),
    "summary": _summary_handler(_TEXT_PLAIN, atom_only=True),
    "content_encoded": _content_handler(_TEXT_HTML, atom_only=False),
    "content": _content_handler(_TEXT_PLAIN, atom_only=True),
    "author": _on_author,
    "dc_creator": _on_author,
    "dc_author": _on_author,
    "pubdate": _date_handler("published"),
    "published": _date_handler("published"),
    "updated": _date_handler("updated"),
    "dc_date": _date_handler("updated"),
    "guid": _on_guid,
    "id": _on_guid,
    "link": _on_link,
    "enclosure": _on_enclosure,
    "media_content": _on_media_content,
    "media_thumbnail": _on_media_thumbnail,
    "media_group": _on_media_group,
}
