"""The feed fast path's reading layer: XML with defusedxml's guards, the encoding
check, feedparser's text repairs and date shapes, and the names both share. The
entry building is :mod:`gateway.sources.feed_fast`.

feedparser's tables live in :mod:`gateway.sources.feed_tables`; its public modules
give the RFC 822 names and ``FeedParserDict.keymap``. Where feedparser would use one of
its private helpers (its date-handler chain for unusual date formats, its URL fix-up
for ``scheme:///`` URIs) the fast path gives up instead, so the result is still
feedparser's own.
"""

from __future__ import annotations

import codecs
import io
import re
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urljoin
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat
from xml.sax.saxutils import escape as _xml_escape

# defusedxml's guards, not plain xml.etree: the body comes from an upstream we do not
# control, and the fast path refuses DTDs outright as defusedxml does (so no "billion
# laughs" entity expansion and no external entities); see _parse_xml.
import feedparser
from defusedxml.common import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from feedparser.datetimes.rfc822 import day_names as _FP_DAY_NAMES
from feedparser.datetimes.rfc822 import months as _FP_MONTHS
from feedparser.datetimes.rfc822 import timezone_names as _FP_ZONES
from feedparser.util import FeedParserDict

from gateway.sources.feed_tables import CP1252_REPAIR, NAMESPACES

_KEYMAP: dict[str, Any] = dict(FeedParserDict.keymap)

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
# (``Unsupported``) on anything feedparser treats specially that is not mirrored here,
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


if True:  # one block, as the tables it builds belong together
    #: Lower-cased namespace URI -> feedparser's standard prefix ("" for RSS and Atom).
    _STD_PREFIXES: dict[str, str] = {uri.lower(): prefix for uri, prefix in NAMESPACES.items()}
    _STD_NAMES: frozenset[str] = frozenset(prefix.lower() for prefix in NAMESPACES.values() if prefix)

    # The characters the cp1252 repair maps: translating text without any is a no-op.
    _CP1252_KEYS = re.compile(f"[{''.join(re.escape(chr(key)) for key in CP1252_REPAIR)}]")

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


class Unsupported(Exception):
    """The fast path cannot promise feedparser's result for this document."""



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
        raise Unsupported("not UTF-8")
    match = _FP_XML_PI_ENCODING.match(data)
    if match and match.group(1).lower() != b"utf-8":
        raise Unsupported("declared encoding is not UTF-8")
    if data.startswith(b"<?xml"):
        declared = _XML_DECL_ENCODING.search(data[: data.find(b"?>")])
        if declared and declared.group(1).lower() != b"utf-8":
            raise Unsupported("declared encoding is not UTF-8")
    elif data.lstrip()[:1] != b"<":
        raise Unsupported("does not start with markup")


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
        if _CP1252_KEYS.search(text):  # str.translate is slow on non-ASCII text
            text = text.translate(CP1252_REPAIR)
    return text


#: feedparser's URI fix-up (``feedparser.urls._urifixer``, private): "scheme:///x" -> "scheme://x".
_URI_FIXER = re.compile("^([A-Za-z][A-Za-z0-9+-.]*://)(/*)(.*?)")


def _resolve(uri: str) -> str:
    """feedparser's ``_urljoin("", uri)``, repeated here as it is private: with no base
    URL, ``urljoin`` returns the fixed-up URI as it is (or "" where it raises), so only
    the "scheme:///x" -> "scheme://x" fix-up changes anything; skipping it otherwise
    saves a regex substitution per link."""
    if ":///" not in uri:
        return uri
    uri = _URI_FIXER.sub(r"\1\3", uri)
    try:
        return urljoin("", uri)
    except ValueError:
        return ""


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
            return _feedparser_date(value)
        if hours or minutes:  # else stamp - timedelta(0) is stamp
            if sign == "-":
                hours, minutes = -hours, -minutes
            stamp -= timedelta(0, 0, 0, 0, minutes, hours)
        return stamp.utctimetuple()
    except (ValueError, OverflowError):
        return _feedparser_date(value)


def _feedparser_date(value: str) -> time.struct_time | None:
    """feedparser's own reading of any other date, through its public API: the date
    as the ``pubDate`` of a one-item feed (feedparser keeps its date-handler chain
    private). About a millisecond; real feeds rarely get here, and a document's
    dates are read once each (see _Document.date)."""
    doc = f"<rss version='2.0'><channel><item><pubDate>{_xml_escape(value)}</pubDate></item></channel></rss>"
    entries = feedparser.parse(io.BytesIO(doc.encode()), sanitize_html=False, resolve_relative_uris=False).entries
    return entries[0].get("published_parsed") if entries else None


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
