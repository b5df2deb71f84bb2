"""The feed fast path: a well-formed UTF-8 RSS or Atom document read (by
:mod:`gateway.sources.feed_xml`) into the very entry dicts feedparser would build, for
the keys ``gateway.sources.feed._parse_entry`` reads. Anything it cannot reproduce
exactly raises :class:`Unsupported` (or an XML error), and feedparser parses the
document instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape as _xml_escape

from gateway.sources.feed_tables import HANDLED_ELEMENTS
from gateway.sources.feed_xml import (
    _ATOM10_NS,
    _ATOM_VERSIONS,
    _AUTHOR_PARTS,
    _CONTENT_HANDLERS,
    _HARMLESS_HANDLERS,
    _HTML_TYPES,
    _KEYMAP,
    _LINK_ENTITY,
    _PROTECTED_KEYS,
    _RDF_ABOUT,
    _RSS090_NS,
    _RSS10_NS,
    _RSS_VERSIONS,
    _STD_NAMES,
    _STD_PREFIXES,
    _STRUCTURAL,
    _TEXT_HTML,
    _TEXT_PLAIN,
    _TEXT_TYPES,
    _XHTML,
    _XHTML_NS,
    _XLINK_NS,
    _XML_NS_TAG,
    Unsupported,
    _check_encoding,
    _enforce_href,
    _feed_date,
    _map_content_type,
    _parse_xml,
    _pop_text,
    _resolve,
    _split_tag,
)

__all__ = ["Unsupported", "fast_entries"]


def fast_entries(body: bytes) -> list[dict[str, Any]]:
    """The entry dicts feedparser would produce (for the keys _parse_entry reads)."""
    _check_encoding(body)
    root, declarations = _parse_xml(body)
    return _Document(declarations).entries(root)



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
                raise Unsupported("xlink namespace declared")
            std = self._std_prefix(uri)
            if std is None:
                if prefix:
                    self._unknown_prefixes.setdefault(uri, set()).add(prefix.lower())
            elif prefix:
                self._namespacemap[prefix] = std
                if prefix != std and prefix in _STD_NAMES:
                    # e.g. xmlns:content bound to Dublin Core: feedparser would then call
                    # <content:encoded> "dc_encoded". Too clever by half; let it decide.
                    raise Unsupported(f"prefix {prefix!r} bound to another known namespace")
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
                    raise Unsupported(f"attribute {name!r}")
                else:
                    key = local.lower()
                    if key in out or any(other.lower() == key for other in el.attrib if "}" not in other):
                        raise Unsupported(f"attribute {name!r} collides with another")
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
                raise Unsupported("expected one <channel>")
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
                raise Unsupported("RDF document with an Atom version")
            entry_name = "item"
        else:
            raise Unsupported(f"root element {root.tag!r}")
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
            raise Unsupported("no version, no entries")  # feedparser says "not a feed"
        return entries

    def _check_outside(self, el: Element) -> None:
        """An element outside the entries: it must not open another feed or entry, and
        must not unbalance feedparser's state (see _CONTENT_HANDLERS)."""
        names = self.names(el.tag)
        _check_base(el)
        if _STRUCTURAL.intersection(names):
            raise Unsupported(f"unexpected <{el.tag}>")
        if _CONTENT_HANDLERS.intersection(names):
            for descendant in el.iter():
                if descendant is not el:
                    _check_base(descendant)
                    if HANDLED_ELEMENTS.intersection(self.names(descendant.tag)):
                        raise Unsupported(f"<{descendant.tag}> inside <{el.tag}>")
            return
        for child in el:
            self._check_outside(child)

    # ----------------------------------------------------------------- entries

    def _entry(self, item: Element) -> dict[str, Any]:
        _check_base(item)
        attrs = self.attrs(item, strict=False)
        if "lastmod" in attrs or "href" in attrs:
            raise Unsupported("CDF entry attributes")  # they set the date and the link
        if any("}" in name and name.lower().endswith("}about") and name != _RDF_ABOUT for name in item.attrib):
            # feedparser also keys it by its document prefix, which could be "rdf:".
            raise Unsupported("foreign 'about' attribute")
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
            if name in HANDLED_ELEMENTS:
                return _unsupported(f"<{tag}> ({name}) is not emulated")
            key = _KEYMAP.get(name, name)
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
            raise Unsupported("base64/escaped mode or out-of-line content")
        content_type = _map_content_type(attrs.get("type", default_type))
        if content_type not in _TEXT_TYPES:
            raise Unsupported(f"content type {content_type!r}")  # feedparser may base64-decode
        if typed and content_type == _TEXT_PLAIN and not self._atom:
            raise Unsupported("plain text outside Atom (feedparser guesses)")
        if content_type == _XHTML:
            return content_type, _pop_text(self._xhtml(el))
        if len(el):
            # Markup that should have been escaped: feedparser switches to inline XHTML
            # mid-element (and ignores <div>s); not mirrored.
            raise Unsupported(f"children in <{el.tag}>")
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
        if namespace != _XHTML_NS or local in ("svg", "math") or HANDLED_ELEMENTS.intersection(self.names(el.tag)):
            raise Unsupported(f"<{el.tag}> in inline XHTML")
        _check_base(el)
        if any("}" in name and not name.startswith(_XML_NS_TAG) for name in el.attrib):
            # feedparser would also emit the attribute under its document prefix.
            raise Unsupported(f"namespaced attribute in inline XHTML <{el.tag}>")
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
            raise Unsupported("xml:base")


def _once(seen: set[str], key: str) -> None:
    """Repeats of these fields follow precedence rules in feedparser (depth, "second
    description is content") that are not worth mirroring: let it handle them."""
    if key in seen:
        raise Unsupported(f"repeated {key}")
    seen.add(key)


def _leaf_text(el: Element) -> str:
    if len(el):
        raise Unsupported(f"children in <{el.tag}>")
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
            raise Unsupported(f"<{el.tag}> outside Atom")
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
            raise Unsupported(f"<{el.tag}> outside Atom")
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
            raise Unsupported(f"<{child.tag}> in an author")
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
        raise Unsupported(reason)

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
