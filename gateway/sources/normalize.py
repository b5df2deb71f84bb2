"""Pure helpers shared by the source adapters: URL identity, ids, dates, HTML and text.

Everything here is synchronous and side-effect free so the parsers that use it can run
in a worker process. Upstream data is untrusted: these functions return ``None`` for
anything unusable instead of raising.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import NamedTuple, TypeVar
from urllib.parse import urlsplit

import nh3

from gateway.sources.base import NormalizedArticle, Parsed, utc

R = TypeVar("R")

TITLE_MAX_LENGTH = 300
AUTHOR_MAX_LENGTH = 200
SUMMARY_MAX_LENGTH = 2000
#: Longer "URLs" are junk (or abuse); real article URLs are far shorter.
URL_MAX_LENGTH = 2048

# Dates outside this range are placeholders or garbage (0, 9999-12-31, ...).
_MIN_YEAR = 1970
_MAX_YEAR = 2100

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Query parameters that identify the campaign or click, not the article.
_TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid",
        "igshid", "mc_cid", "mc_eid", "ref", "ref_src", "ref_url", "_ga", "_gl",
        "_hsenc", "_hsmi", "mkt_tok", "oly_anon_id", "oly_enc_id", "vero_id", "spm",
    }
)  # fmt: skip
_TRACKING_PREFIXES = ("utm_",)

_ALLOWED_TAGS = {
    "a", "p", "br", "b", "i", "em", "strong", "ul", "ol", "li", "blockquote", "code", "pre",
}  # fmt: skip
# Tags dropped together with their content. Anything else outside the allow-list loses
# its tags but keeps its text.
_DROP_CONTENT_TAGS = {
    "script", "style", "noscript", "template", "iframe", "object", "svg", "math",
}  # fmt: skip

# Built once: the configuration is immutable and building a cleaner per call is wasteful.
_HTML_CLEANER = nh3.Cleaner(
    tags=_ALLOWED_TAGS,
    clean_content_tags=_DROP_CONTENT_TAGS,
    attributes={"a": {"href"}},
    link_rel="noopener noreferrer nofollow",
    url_schemes={"http", "https", "mailto"},
    # A relative href would resolve against the client's page, not the publisher's.
    url_relative="deny",
)
_TEXT_CLEANER = nh3.Cleaner(tags=set(), clean_content_tags=_DROP_CONTENT_TAGS)

_WHITESPACE = re.compile(r"\s+")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
# "http(s)://" and a plain host name (ASCII letters, digits, dots and hyphens only: no
# userinfo, port, IP literal or IDN), then the end or "/", "?" or "#". On such a URL
# (already free of spaces and controls) urlsplit lower-cases the scheme, takes the
# host as the netloc, cuts the fragment at the first "#" and then the query at the
# first "?"; its port is None and its hostname the lower-cased host. ASCII flag: a
# Unicode IGNORECASE would let "ſ" match "s".
_PLAIN_HTTP_URL = re.compile(r"(?P<scheme>https?)://(?P<host>[a-z0-9.-]+)(?=[/?#]|\Z)", re.ASCII | re.IGNORECASE)
# nh3 output is normalised (lower-case tags, balanced), so a plain regex finds <pre>.
_PRE_BLOCK = re.compile(r"(<pre>.*?</pre>)", re.DOTALL)
# Matches (in full) exactly the strings for which ``re.sub(r"<[^>]*>", "", s).strip()``
# is empty: nothing but tags and whitespace. Scanning from the left, a "<" can only
# start a tag (up to the first ">", as in re.sub) and anything else must be whitespace,
# so both tokenise the string the same way. Possessive: no backtracking.
_ONLY_TAGS = re.compile(r"(?:<[^>]*>|\s)*+")


def _collapse_whitespace(text: str) -> str:
    """``_WHITESPACE.sub(" ", text).strip()``, without a regex call per space.

    Exact: ``str.split()`` cuts at runs of the characters ``str.isspace()`` accepts,
    which are exactly those ``\\s`` matches in a str pattern (both use
    ``Py_UNICODE_ISSPACE``), and drops the empty ends, as ``strip()`` would.
    """
    return " ".join(text.split())


def http_url(value: object) -> str | None:
    """Return ``value`` stripped if it is an absolute http(s) URL with a host, else None."""
    url = _stripped_url(value)
    if url is None or not (_PLAIN_HTTP_URL.match(url) or _urlsplit_http(url)):
        return None
    return url


class _UrlParts(NamedTuple):
    """What canonical_url needs of an absolute http(s) URL (as urlsplit reads it)."""

    scheme: str  # lower-cased
    userinfo: str  # "" if none
    host: str  # lower-cased; an IPv6 literal without its brackets
    port: int | None
    path: str
    query: str


def _stripped_url(value: object) -> str | None:
    """``value`` stripped, if it is a string that could be a URL: not empty, not too
    long, no spaces or control characters inside."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or len(url) > URL_MAX_LENGTH or _SPACE_OR_CONTROL.search(url):
        return None
    return url


def _split_http_url(url: str) -> _UrlParts | None:
    """The parts of a stripped absolute http(s) URL with a host, else None."""
    if plain := _PLAIN_HTTP_URL.match(url):
        # Nearly every article URL: skip urlsplit and its port and hostname properties,
        # which each parse the netloc again (see _PLAIN_HTTP_URL for why this is exact).
        path, _, query = url[plain.end() :].partition("#")[0].partition("?")
        return _UrlParts(plain["scheme"].lower(), "", plain["host"].lower(), None, path, query)
    return _urlsplit_http(url)


def _urlsplit_http(url: str) -> _UrlParts | None:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    userinfo, _, _ = parts.netloc.rpartition("@")
    return _UrlParts(scheme, userinfo, parts.hostname, port, parts.path, parts.query)


def canonical_url(url: str) -> str | None:
    """Normalise an article URL for identity; None unless it is an absolute http(s) URL.

    Lower-cases scheme and host, drops the default port, the fragment and tracking
    parameters, sorts the remaining query parameters and strips a trailing slash
    (except the root). The scheme is kept; :func:`article_id` ignores it.
    """
    stripped = _stripped_url(url)
    parts = _split_http_url(stripped) if stripped is not None else None
    if parts is None:
        return None
    host = parts.host  # already lower-cased by urlsplit
    if ":" in host:  # IPv6 literal: urlsplit removed the brackets
        host = f"[{host}]"
    netloc = f"{parts.userinfo}@{host}" if parts.userinfo else host
    if parts.port is not None and parts.port != _DEFAULT_PORTS[parts.scheme]:
        netloc = f"{netloc}:{parts.port}"
    path = parts.path.rstrip("/") or "/"
    # Work on the raw "k=v" pairs so values are never re-encoded (which could change
    # what the server sees); only the decision to drop one looks at its name.
    query = ""
    if parts.query:
        params = sorted(
            pair
            for pair in parts.query.split("&")
            if pair and not _is_tracking_param(pair.partition("=")[0])
        )
        query = f"?{'&'.join(params)}" if params else ""
    return f"{parts.scheme}://{netloc}{path}{query}"


def _is_tracking_param(name: str) -> bool:
    name = name.lower()
    return name in _TRACKING_PARAMS or name.startswith(_TRACKING_PREFIXES)


def article_id(*, url: str | None, source_id: str, upstream_id: str | None) -> str:
    """A stable, opaque, URL-safe id: ``"a_"`` + 20 hex digits of a SHA-256.

    Derived from the canonical URL without its scheme, so the same article reached over
    http or https, or from two sources, gets the same id. Without a usable URL it is
    derived from ``(source_id, upstream_id)`` instead.
    """
    canonical = canonical_url(url) if url is not None else None
    if canonical is not None:
        identity = "url:" + canonical.partition("://")[2]
    elif upstream_id:
        # NUL cannot occur in either part, so distinct pairs never collide.
        identity = f"upstream:{source_id}\0{upstream_id}"
    else:
        raise ValueError("article_id needs a valid url or an upstream_id")
    return "a_" + hashlib.sha256(identity.encode()).hexdigest()[:20]


def parse_date(value: object) -> datetime | None:
    """Parse an upstream timestamp to an aware UTC datetime; None if unusable. Never raises.

    Accepts RFC 822/2822 strings (named zones such as GMT, UT, Z, EST, PDT included),
    ISO 8601 / RFC 3339 strings (``Z``, offsets, fractions, date only), unix seconds as
    int or float, and datetimes. Naive values are taken to be UTC.
    """
    try:
        if isinstance(value, datetime):
            dt = utc(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                return None
            dt = datetime.fromtimestamp(value, tz=timezone.utc)
        elif isinstance(value, str) and 0 < len(text := value.strip()) <= 100:
            dt = utc(_parse_date_string(text))
        else:
            return None
    except (ValueError, TypeError, OverflowError, OSError, IndexError):
        return None
    return dt if _MIN_YEAR <= dt.year <= _MAX_YEAR else None


def _parse_date_string(text: str) -> datetime:
    try:
        # Upper-casing accepts a lower-case "t"/"z", which RFC 3339 allows.
        return datetime.fromisoformat(text.upper())
    except ValueError:
        return parsedate_to_datetime(text)


def sanitize_html(html_text: str | None, *, max_length: int = SUMMARY_MAX_LENGTH) -> str | None:
    """Allow-list sanitise untrusted HTML; None when nothing readable is left.

    Keeps basic formatting and ``a[href]`` (http, https, mailto; ``rel`` forced to
    ``noopener noreferrer nofollow``); removes script/style with their content, event
    attributes and ``javascript:`` URLs. Whitespace is collapsed outside ``<pre>``. If
    the result is longer than ``max_length`` it becomes escaped plain text truncated
    with "…" (cutting HTML safely mid-tag is not worth the risk), at most
    ``max_length`` characters.
    """
    if not isinstance(html_text, str) or not html_text.strip():
        return None
    cleaned = _HTML_CLEANER.clean(strip_controls(html_text))
    if "<pre>" in cleaned:
        cleaned = "".join(
            part if i % 2 else _WHITESPACE.sub(" ", part)
            for i, part in enumerate(_PRE_BLOCK.split(cleaned))
        ).strip()
    else:  # the usual case: no <pre> block, so the split above would be [cleaned]
        cleaned = _collapse_whitespace(cleaned)
    # Tags alone (an empty <p>, a stripped <img>) are not a summary. A regex suffices to
    # find text in nh3's normalised output.
    if _ONLY_TAGS.fullmatch(cleaned):
        return None
    if len(cleaned) <= max_length:
        return cleaned
    text = _collapse_whitespace(html.unescape(_TEXT_CLEANER.clean(cleaned)))
    escaped = html.escape(text, quote=False)
    if len(escaped) <= max_length:
        return escaped
    cut = escaped[: max_length - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:  # do not leave half an entity behind
        cut = cut[:amp]
    return _cut_at_word(cut, max_length) + "…"


_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def strip_controls(text: str) -> str:
    """Drop C0 control characters (NUL above all: Postgres refuses it in text and
    jsonb, which would silently stop a source's cache writes)."""
    return _CONTROLS.sub("", text) if _CONTROLS.search(text) else text


def clean_text(value: object, *, max_length: int) -> str | None:
    """Plain text for titles and names: tags stripped, entities decoded, whitespace
    collapsed, truncated with "…" to at most ``max_length`` characters.

    The result is text, not HTML: clients must escape it. None if not a non-empty str.
    """
    if not isinstance(value, str):
        return None
    value = strip_controls(value)
    if "<" in value or "&" in value:  # the common case needs no HTML parsing
        value = html.unescape(_TEXT_CLEANER.clean(value))
    text = _collapse_whitespace(value)
    if not text:
        return None
    if len(text) <= max_length:
        return text
    return _cut_at_word(text[: max_length - 1], max_length) + "…"


def _cut_at_word(cut: str, max_length: int) -> str:
    """Back off to the last space if one is near the end, so words are not split."""
    space = cut.rfind(" ")
    if space > max_length * 0.8:
        cut = cut[:space]
    return cut.rstrip()


class BadRow(Exception):
    """One upstream row is unusable; it is dropped and counted, the rest is kept."""


def collect_rows(rows: Iterable[R], parse_row: Callable[[R, str], NormalizedArticle], source_id: str) -> Parsed:
    """Parse every row, dropping (and counting) bad ones; a repeated article id is kept
    once and not counted as bad (feeds repeat items; a batch upsert must not)."""
    parsed = Parsed()
    seen: set[str] = set()
    for row in rows:
        try:
            article = parse_row(row, source_id)
        except BadRow:
            parsed.dropped += 1
            continue
        if article.id not in seen:
            seen.add(article.id)
            parsed.articles.append(article)
    return parsed
