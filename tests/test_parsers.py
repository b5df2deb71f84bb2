"""Unit tests for the pure upstream parsers and normalisation helpers."""

from __future__ import annotations

import pickle
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from gateway.errors import BadPayload
from gateway.sources.base import HNItem, Parsed
from gateway.sources.feed import parse_feed
from gateway.sources.hackernews import parse_item, parse_topstories, story_to_article
from gateway.sources.newsapi import parse_newsapi
from gateway.sources.normalize import (
    _ONLY_TAGS,
    _PLAIN_HTTP_URL,
    _collapse_whitespace,
    _split_http_url,
    _urlsplit_http,
    article_id,
    canonical_url,
    clean_text,
    http_url,
    parse_date,
    sanitize_html,
)

UTC = timezone.utc


# --------------------------------------------------------------------------- URLs and ids


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://Example.COM/a/b", "https://example.com/a/b"),
        ("HTTPS://example.com/a", "https://example.com/a"),
        ("https://example.com/a/", "https://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com/a#section-2", "https://example.com/a"),
        ("https://example.com/a?utm_source=rss&utm_medium=feed", "https://example.com/a"),
        ("https://example.com/a?b=2&fbclid=x&a=1&gclid=y", "https://example.com/a?a=1&b=2"),
        ("https://example.com/a?ref=hn&mc_cid=1&mc_eid=2&ref_src=tw", "https://example.com/a"),
        ("https://example.com/a?UTM_Campaign=x&id=7", "https://example.com/a?id=7"),
        ("https://example.com", "https://example.com/"),
        ("  https://example.com/a  ", "https://example.com/a"),
    ],
)
def test_canonical_url_equivalences(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b) == b


def test_canonical_url_keeps_what_matters() -> None:
    assert canonical_url("https://example.com/") == "https://example.com/"
    assert canonical_url("https://example.com:8443/a") == "https://example.com:8443/a"
    assert canonical_url("https://example.com/A") != canonical_url("https://example.com/a")
    # Values are not re-encoded: the server sees exactly what the publisher linked.
    assert canonical_url("https://e.com/s?q=a%20b&x=%2F") == "https://e.com/s?q=a%20b&x=%2F"
    assert canonical_url("http://[::1]:8080/x") == "http://[::1]:8080/x"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com/a",
        "//example.com/a",
        "/relative/path",
        "ftp://example.com/a",
        "javascript:alert(1)",
        "mailto:a@example.com",
        "http://",
        "https://exa mple.com/a",
        "https://example.com:99999/a",
        "https://example.com/" + "a" * 3000,
    ],
)
def test_canonical_url_rejects_non_http_urls(url: str) -> None:
    assert canonical_url(url) is None
    assert http_url(url) is None


def test_article_id_is_stable_short_and_scheme_blind() -> None:
    a = article_id(url="https://example.com/story?utm_source=x", source_id="s1", upstream_id=None)
    b = article_id(url="http://EXAMPLE.com/story/#top", source_id="s2", upstream_id="9")
    assert a == b
    assert a.startswith("a_") and len(a) == 22 and a[2:].isalnum()
    assert a != article_id(url="https://example.com/other", source_id="s1", upstream_id=None)


def test_article_id_without_url_uses_source_and_upstream_id() -> None:
    a = article_id(url=None, source_id="hn", upstream_id="123")
    assert a == article_id(url="not a url", source_id="hn", upstream_id="123")
    assert a != article_id(url=None, source_id="other", upstream_id="123")
    assert a != article_id(url=None, source_id="hn", upstream_id="1234")
    with pytest.raises(ValueError):
        article_id(url=None, source_id="hn", upstream_id=None)


def test_same_url_from_all_three_kinds_gets_the_same_id() -> None:
    url = "https://example.com/big-story"
    newsapi = parse_newsapi(
        orjson.dumps({"status": "ok", "articles": [{"title": "T", "url": url + "?utm_source=newsapi"}]}),
        "newsapi",
    )
    feed = parse_feed(
        _rss(f"<item><title>T</title><link>{url}/#comments</link></item>"),
        "feed",
    )
    item = parse_item(orjson.dumps({"id": 1, "type": "story", "title": "T", "url": url.upper()[:8] + url[8:]}))
    assert item is not None
    hn = story_to_article(item, "hn")
    assert hn is not None
    assert newsapi.articles[0].id == feed.articles[0].id == hn.id


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 10 Jun 2003 04:00:00 GMT", datetime(2003, 6, 10, 4, tzinfo=UTC)),
        ("Tue, 10 Jun 2003 04:00:00 UT", datetime(2003, 6, 10, 4, tzinfo=UTC)),
        ("Tue, 10 Jun 2003 04:00:00 Z", datetime(2003, 6, 10, 4, tzinfo=UTC)),
        ("Tue, 10 Jun 2003 04:00:00 EST", datetime(2003, 6, 10, 9, tzinfo=UTC)),
        ("Tue, 10 Jun 2003 04:00:00 EDT", datetime(2003, 6, 10, 8, tzinfo=UTC)),
        ("Tue, 10 Jun 2003 04:00:00 PST", datetime(2003, 6, 10, 12, tzinfo=UTC)),
        ("Tue, 10 Jun 2003 04:00:00 +0200", datetime(2003, 6, 10, 2, tzinfo=UTC)),
        ("10 Jun 2003 04:00 -0000", datetime(2003, 6, 10, 4, tzinfo=UTC)),
        ("Tue, 10 Jun 03 04:00:00 GMT", datetime(2003, 6, 10, 4, tzinfo=UTC)),
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02t03:04:05z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.123456Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T03:04:05.1Z", datetime(2024, 1, 2, 3, 4, 5, 100000, tzinfo=UTC)),
        ("2024-01-02T03:04:05+05:30", datetime(2024, 1, 1, 21, 34, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05-0800", datetime(2024, 1, 2, 11, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        (1_700_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1_700_000_000.5, datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),
        (datetime(2024, 1, 2, 3, tzinfo=timezone(timedelta(hours=1))), datetime(2024, 1, 2, 2, tzinfo=UTC)),
    ],
)
def test_parse_date_formats_become_aware_utc(value: object, expected: datetime) -> None:
    parsed = parse_date(value)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "not a date",
        "Tue, 31 Feb 2003 04:00:00 GMT",
        "2024-13-45T00:00:00Z",
        "1899-12-31T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "Mon, 01 Jan 1900 00:00:00 GMT",
        -1,
        10**20,
        float("nan"),
        float("inf"),
        True,
        [2024, 1, 2],
        {"date": "2024-01-02"},
        "2024-01-02" * 50,
    ],
)
def test_parse_date_rejects_garbage_without_raising(value: object) -> None:
    assert parse_date(value) is None


# --------------------------------------------------------------------------- HTML and text


def test_sanitize_html_removes_scripts_styles_and_their_contents() -> None:
    out = sanitize_html("<p>Hi<script>alert('x')</script><style>p{color:red}</style> there</p>")
    assert out == "<p>Hi there</p>"


def test_sanitize_html_removes_event_attributes_and_javascript_urls() -> None:
    out = sanitize_html(
        '<p onclick="steal()">a <img src=x onerror="steal()"> '
        '<a href="javascript:steal()" onmouseover="steal()">js</a> '
        '<a href="JaVaScRiPt:steal()">js2</a> <b style="x" onload="y">b</b></p>'
    )
    assert out is not None
    for bad in ("onclick", "onerror", "onmouseover", "onload", "javascript", "steal", "<img", "style"):
        assert bad not in out.lower()
    assert "<b>b</b>" in out


def test_sanitize_html_keeps_allowed_tags_and_hardens_links() -> None:
    html = (
        '<p>A <b>b</b> <i>i</i> <em>em</em> <strong>s</strong><br><code>c</code></p>'
        "<ul><li>one</li></ul><ol><li>two</li></ol><blockquote>q</blockquote>"
        '<a href="https://example.com/x" target="_blank" class="c">link</a>'
    )
    out = sanitize_html(html)
    assert out is not None
    for tag in ("<p>", "<b>", "<i>", "<em>", "<strong>", "<br>", "<code>", "<ul>", "<ol>", "<li>", "<blockquote>"):
        assert tag in out
    assert '<a href="https://example.com/x" rel="noopener noreferrer nofollow">link</a>' in out


def test_sanitize_html_drops_relative_links_and_unknown_tags_keep_text() -> None:
    out = sanitize_html('<div><span>kept</span> <a href="/rel">rel</a></div>')
    assert out == 'kept <a rel="noopener noreferrer nofollow">rel</a>'


def test_sanitize_html_collapses_whitespace_but_not_in_pre() -> None:
    out = sanitize_html("<p>a\n\n   b\t c</p>\n\n<pre><code>x = 1\n    y = 2</code></pre>  ")
    assert out == "<p>a b c</p> <pre><code>x = 1\n    y = 2</code></pre>"


@pytest.mark.parametrize("value", [None, "", "   ", "<p> </p>", "<script>x()</script>", "<br><br>", 42])
def test_sanitize_html_returns_none_for_empty(value: object) -> None:
    assert sanitize_html(value) is None  # type: ignore[arg-type]


def test_sanitize_html_truncates_long_input_to_escaped_plain_text() -> None:
    out = sanitize_html("<p>" + "word & <b>bold</b> " * 300 + "</p>", max_length=100)
    assert out is not None
    assert len(out) <= 100 and out.endswith("…")
    assert "<" not in out  # plain text: no half-open tags
    assert "&amp;" in out and not out[:-1].rstrip().endswith("&")  # no split entity


def test_sanitize_html_truncation_keeps_literal_angle_brackets_escaped() -> None:
    out = sanitize_html("&lt;script&gt;alert(1)&lt;/script&gt; " * 100, max_length=80)
    assert out is not None and "<script" not in out and "&lt;script&gt;" in out


def test_clean_text() -> None:
    assert clean_text("  Hello\n\t<b>World</b> &amp; friends ", max_length=100) == "Hello World & friends"
    assert clean_text("AT&T buys x < y", max_length=100) == "AT&T buys x < y"
    assert clean_text("<script>evil()</script>Title", max_length=100) == "Title"
    assert clean_text("one two three four five", max_length=14) == "one two three…"
    assert len(clean_text("x" * 50, max_length=10) or "") == 10
    for empty in (None, "", "   ", "<b></b>", 12, ["t"]):
        assert clean_text(empty, max_length=10) is None


def test_whitespace_collapsing_matches_the_regex_for_every_character() -> None:
    # _collapse_whitespace (str.split) stands in for re.sub(r"\s+", " ", s).strip().
    text = "".join(f"a{chr(c)}{chr(c)}b " for c in range(0x110000))
    assert _collapse_whitespace(text) == re.sub(r"\s+", " ", text).strip()


@pytest.mark.parametrize(
    "html",
    ["", " ", "<p></p>", "<p> </p>\n<br>", "<p>x</p>", "<", "a", "<p", "<p>>", "> ", "<a><", "\u00a0<b>\u2003</b>"],
)
def test_only_tags_check_matches_removing_tags(html: str) -> None:
    assert (_ONLY_TAGS.fullmatch(html) is not None) == (not re.sub(r"<[^>]*>", "", html).strip())


_PLAIN_URLS = [
    f"{scheme}://{host}{rest}"
    for scheme in ("http", "https", "HTTP", "hTtPs")
    for host in ("e.example", "E.Example", "a-b.c", "x", "1.2.3.4", "..", "-")
    for rest in (
        "", "/", "/a/b/", "?", "?a=1&b=2", "#f", "/p?q#f", "/p#f?q", "?q#f?g", "/%2F?x=%20", "/\u00e9",
        "//x", "#", "/a:b@c", "/[x]", "?utm_source=x&B=2&a=1",
    )
]  # fmt: skip


@pytest.mark.parametrize("url", _PLAIN_URLS)
def test_plain_url_shortcut_reads_urls_as_urlsplit_does(url: str) -> None:
    # _split_http_url skips urlsplit for a bare host name; it must get the same parts.
    assert _PLAIN_HTTP_URL.match(url)
    assert _split_http_url(url) == _urlsplit_http(url) is not None


# --------------------------------------------------------------------------- NewsAPI


def _newsapi_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "source": {"id": "reuters", "name": "Reuters"},
        "author": "Jane Doe",
        "title": "Markets rally",
        "description": "Stocks <b>rose</b> on Tuesday.<script>x()</script>",
        "url": "https://www.reuters.com/markets/rally?utm_source=newsapi",
        "urlToImage": "https://img.reuters.com/rally.jpg",
        "publishedAt": "2024-05-01T12:30:00Z",
        "content": "Stocks rose... [+1234 chars]",
    }
    row.update(overrides)
    return row


def test_newsapi_good_payload() -> None:
    body = orjson.dumps({"status": "ok", "totalResults": 2, "articles": [_newsapi_row(), _newsapi_row(
        title="Second", url="https://example.com/2", author=None, description=None, urlToImage=None,
        publishedAt="2024-05-01T14:30:00+02:00",
    )]})  # fmt: skip
    parsed = parse_newsapi(body, "newsapi-top")
    assert parsed.dropped == 0
    first, second = parsed.articles
    assert first.source_id == "newsapi-top"
    assert first.title == "Markets rally"
    assert first.url == "https://www.reuters.com/markets/rally?utm_source=newsapi"
    assert first.id == article_id(url="https://www.reuters.com/markets/rally", source_id="x", upstream_id=None)
    assert first.summary == "Stocks <b>rose</b> on Tuesday."
    assert first.author == "Jane Doe"
    assert first.image_url == "https://img.reuters.com/rally.jpg"
    assert first.published_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert (second.author, second.summary, second.image_url) == (None, None, None)
    assert second.published_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def test_newsapi_error_payload() -> None:
    body = orjson.dumps({"status": "error", "code": "apiKeyInvalid", "message": "Your API key is invalid."})
    with pytest.raises(BadPayload, match="apiKeyInvalid.*Your API key is invalid") as exc_info:
        parse_newsapi(body, "n")
    assert exc_info.value.code == "BAD_PAYLOAD"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<!DOCTYPE html><html><body>Rate limited</body></html>", "HTML"),
        (b'{"status":"ok","articles":[{"title":"a","url":"https://e.com/a"},{"tit', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b'"ok"', "JSON object"),
        (b'{"status":"ok","totalResults":0}', "articles"),
        (b'{"status":"ok","articles":{"a":1}}', "articles"),
    ],
)
def test_newsapi_bad_payloads(body: bytes, match: str) -> None:
    with pytest.raises(BadPayload, match=match):
        parse_newsapi(body, "n")


def test_newsapi_malformed_rows_are_dropped_and_counted() -> None:
    bad_rows: list[object] = [
        "not an object",
        None,
        _newsapi_row(title=None),
        _newsapi_row(title="   "),
        _newsapi_row(title="[Removed]", url="https://removed.com"),
        _newsapi_row(url=None),
        _newsapi_row(url="/relative/path"),
        _newsapi_row(url="javascript:alert(1)"),
        _newsapi_row(publishedAt="yesterday-ish"),
        _newsapi_row(title=123),
        _newsapi_row(author=["a", "b"]),
        _newsapi_row(source="reuters"),
    ]
    good = [_newsapi_row(), _newsapi_row(publishedAt=None, url="https://e.com/nodate")]
    parsed = parse_newsapi(orjson.dumps({"status": "ok", "articles": bad_rows + good}), "n")
    assert parsed.dropped == len(bad_rows)
    assert [a.url for a in parsed.articles] == [good[0]["url"], "https://e.com/nodate"]
    assert parsed.articles[1].published_at is None


def test_newsapi_duplicate_urls_collapse_to_first() -> None:
    rows = [_newsapi_row(title="First"), _newsapi_row(title="Again", url="https://www.reuters.com/markets/rally/")]
    parsed = parse_newsapi(orjson.dumps({"status": "ok", "articles": rows}), "n")
    assert [a.title for a in parsed.articles] == ["First"]
    assert parsed.dropped == 0


# --------------------------------------------------------------------------- feeds


def _rss(items: str, *, channel_extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">\n'
        f"<channel><title>Example</title><link>https://example.com/</link>"
        f"<description>News</description>{channel_extra}\n{items}\n</channel></rss>\n"
    ).encode()


RSS2_ITEMS = """
<item>
  <title>First &amp; <![CDATA[<b>best</b>]]></title>
  <link>https://example.com/first?utm_source=rss</link>
  <description><![CDATA[<p onclick="x()">Summary <a href="https://example.com/more">more</a></p><script>alert(1)</script>]]></description>
  <pubDate>Tue, 10 Jun 2003 04:00:00 EDT</pubDate>
  <dc:creator>Ann Author</dc:creator>
  <media:content url="https://img.example.com/first.jpg" medium="image" />
</item>
<item>
  <title>Guid only</title>
  <guid>https://example.com/guid-only</guid>
  <pubDate>Wed, 11 Jun 2003 10:00:00 PST</pubDate>
  <media:thumbnail url="https://img.example.com/thumb.jpg" />
</item>
<item>
  <title>Enclosure image</title>
  <link>https://example.com/enclosure</link>
  <enclosure url="https://example.com/audio.mp3" type="audio/mpeg" length="1" />
  <enclosure url="https://img.example.com/enc.png" type="image/png" length="1" />
  <content:encoded><![CDATA[<p>Full <em>content</em></p>]]></content:encoded>
</item>
"""


def test_rss2_feed() -> None:
    parsed = parse_feed(_rss(RSS2_ITEMS), "feed")
    assert parsed.dropped == 0
    first, guid_only, enclosure = parsed.articles
    assert first.title == "First & best"
    assert first.url == "https://example.com/first?utm_source=rss"
    assert first.id == article_id(url="https://example.com/first", source_id="x", upstream_id=None)
    assert first.summary == (
        '<p>Summary <a href="https://example.com/more" rel="noopener noreferrer nofollow">more</a></p>'
    )
    assert first.author == "Ann Author"
    assert first.image_url == "https://img.example.com/first.jpg"
    assert first.published_at == datetime(2003, 6, 10, 8, tzinfo=UTC)  # EDT is UTC-4
    assert guid_only.url == "https://example.com/guid-only"
    assert guid_only.published_at == datetime(2003, 6, 11, 18, tzinfo=UTC)  # PST is UTC-8
    assert guid_only.image_url == "https://img.example.com/thumb.jpg"
    assert enclosure.image_url == "https://img.example.com/enc.png"
    assert enclosure.summary == "<p>Full <em>content</em></p>"
    assert enclosure.published_at is None


RSS1_RDF_FEED = b"""<?xml version="1.0" encoding="utf-8"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://example.org/">
    <title>RDF news</title><link>https://example.org/</link><description>d</description>
  </channel>
  <item rdf:about="https://example.org/1">
    <title>One</title><link>https://example.org/1</link>
    <description>Desc &lt;b&gt;bold&lt;/b&gt;</description>
    <dc:date>2024-03-01T10:00:00+01:00</dc:date><dc:creator>Ann</dc:creator>
  </item>
  <item rdf:about="https://example.org/2"><title></title><link>https://example.org/2</link></item>
</rdf:RDF>"""


def test_rss1_rdf_feed() -> None:
    parsed = parse_feed(RSS1_RDF_FEED, "rdf")
    assert parsed.dropped == 1
    (one,) = parsed.articles
    assert (one.title, one.url, one.author) == ("One", "https://example.org/1", "Ann")
    assert one.summary == "Desc <b>bold</b>"
    assert one.published_at == datetime(2024, 3, 1, 9, tzinfo=UTC)


ATOM_FEED = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Atom news</title><id>urn:uuid:feed</id><updated>2024-01-03T00:00:00Z</updated>
  <entry>
    <title type="html">Hello &lt;em&gt;World&lt;/em&gt;</title>
    <link rel="alternate" href="https://example.net/hello"/>
    <id>tag:example.net,2024:1</id>
    <updated>2024-01-02T00:00:00Z</updated><published>2024-01-01T12:00:00-05:00</published>
    <author><name>Bob</name></author>
    <summary type="text">a &lt; b &lt;script&gt; is text here</summary>
  </entry>
  <entry>
    <title>Updated only, id is the URL</title>
    <id>https://example.net/by-id</id>
    <updated>2024-01-02T06:00:00.5+02:00</updated>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>x <b>y</b></p></div></content>
  </entry>
  <entry>
    <title>No link at all</title><id>tag:example.net,2024:3</id><updated>2024-01-02T00:00:00Z</updated>
  </entry>
</feed>"""


def test_atom_feed() -> None:
    parsed = parse_feed(ATOM_FEED, "atom")
    assert parsed.dropped == 1
    hello, by_id = parsed.articles
    assert hello.title == "Hello World"
    assert hello.url == "https://example.net/hello"
    assert hello.author == "Bob"
    assert hello.published_at == datetime(2024, 1, 1, 17, tzinfo=UTC)  # published wins over updated
    assert hello.summary == "a &lt; b &lt;script&gt; is text here"  # plain text stays text
    assert by_id.url == "https://example.net/by-id"
    assert by_id.published_at == datetime(2024, 1, 2, 4, 0, tzinfo=UTC)
    assert by_id.summary == "<p>x <b>y</b></p>"


MALFORMED_RSS_ITEMS = """
    <item><link>https://example.com/no-title</link></item>
    <item><title>   </title><link>https://example.com/blank-title</link></item>
    <item><title>No link</title></item>
    <item><title>Relative link</title><link>/relative</link></item>
    <item><title>JS link</title><link>javascript:alert(1)</link></item>
    <item><title>Non-URL guid</title><guid isPermaLink="false">abc-123</guid></item>
    <item><title>Bad date</title><link>https://example.com/bad-date</link><pubDate>someday soon</pubDate></item>
    <item><title>Absurd date</title><link>https://example.com/old</link><pubDate>Mon, 01 Jan 1900 00:00:00 GMT</pubDate></item>
    <item><title>Good</title><link>https://example.com/good</link><pubDate>Tue, 10 Jun 2003 04:00:00 +0200</pubDate></item>
    <item><title>Good again</title><link>https://example.com/good#dup</link></item>
    """


def test_feed_malformed_rows_are_dropped_and_counted() -> None:
    parsed = parse_feed(_rss(MALFORMED_RSS_ITEMS), "feed")
    assert parsed.dropped == 8
    assert [a.title for a in parsed.articles] == ["Good"]  # the duplicate collapses
    assert parsed.articles[0].published_at == datetime(2003, 6, 10, 2, tzinfo=UTC)


UNDEFINED_ENTITY_RSS = _rss("<item><title>a&nbsp;b</title><link>https://example.com/?a=1&b=2</link></item>")


def test_feed_with_harmless_xml_errors_is_used() -> None:
    # An undefined entity fails strict XML; feedparser's lenient parser reads it fine.
    parsed = parse_feed(UNDEFINED_ENTITY_RSS, "feed")
    assert [(a.title, a.url) for a in parsed.articles] == [("a b", "https://example.com/?a=1&b=2")]  # nbsp collapses


def test_empty_but_valid_feed_is_not_an_error() -> None:
    assert parse_feed(_rss(""), "feed") == Parsed()


TRUNCATION_CUTS = (60, 300, 700, 1200, -40, -12, -3)


@pytest.mark.parametrize("cut", TRUNCATION_CUTS)
def test_truncated_feed_is_bad_payload(cut: int) -> None:
    body = _rss(RSS2_ITEMS)
    with pytest.raises(BadPayload, match="truncated|not an RSS"):
        parse_feed(body[:cut], "feed")


TRUNCATED_ATOM = b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><title>x</title>'


def test_truncated_atom_is_bad_payload() -> None:
    with pytest.raises(BadPayload, match="truncated"):
        parse_feed(TRUNCATED_ATOM, "feed")


NON_FEED_BODIES = (
    b"<!DOCTYPE html><html><head><title>Login</title></head><body><p>Please sign in</p></body></html>",
    bytes(range(256)) * 8,
    b"",
    b'{"status": "ok"}',
    b"https://example.com/feed.xml",  # must never be fetched
)


@pytest.mark.parametrize("body", NON_FEED_BODIES)
def test_non_feed_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload, match="not an RSS or Atom feed"):
        parse_feed(body, "feed")


def test_body_naming_a_local_file_is_not_read(tmp_path: Path) -> None:
    # Given bare bytes, feedparser would open a file of that name (or fetch a URL).
    feed_file = tmp_path / "feed.xml"
    feed_file.write_bytes(_rss(RSS2_ITEMS))
    with pytest.raises(BadPayload, match="not an RSS or Atom feed"):
        parse_feed(str(feed_file).encode(), "feed")


def test_large_feed_parses_completely() -> None:
    # ~5 MB, ~12,000 items; the time it takes is measured in benchmarks, not asserted here.
    body = _rss("".join(_big_item(i) for i in range(12_000)))
    assert len(body) > 5_000_000
    parsed = parse_feed(body, "big")
    assert len(parsed.articles) == 12_000 and parsed.dropped == 0
    assert parsed.articles[-1].title == "Story number 11999 about things & stuff"


def _big_item(i: int) -> str:
    return (
        f"<item><title>Story number {i} about things &amp; stuff</title>"
        f"<link>https://example.com/news/{i}?utm_source=rss</link>"
        f'<guid isPermaLink="false">id-{i}</guid><pubDate>Tue, 10 Jun 2003 04:00:{i % 60:02d} GMT</pubDate>'
        f"<dc:creator>Author {i}</dc:creator><description>&lt;p&gt;Summary of story {i} with "
        f'&lt;a href="https://example.com/x"&gt;a link&lt;/a&gt; and more text to pad the description '
        f"out a bit further, as real descriptions are longer.&lt;/p&gt;</description>"
        f'<media:thumbnail url="https://img.example.com/{i}.jpg"/></item>\n'
    )


# --------------------------------------------------------------------------- Hacker News


def test_topstories() -> None:
    assert parse_topstories(b"[3, 2, 1]") == [3, 2, 1]
    assert parse_topstories(b'[3, "2", null, 1.5, true, -4, 0, 1]') == [3, 1]
    assert parse_topstories(b"[]") == []


@pytest.mark.parametrize("body", [b'{"ids": [1]}', b"null", b"<html></html>", b"[1, 2", b""])
def test_topstories_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_topstories(body)


def _hn(**fields: object) -> bytes:
    return orjson.dumps(fields)


def test_parse_item_story_and_comment() -> None:
    story = parse_item(_hn(
        id=8863, type="story", by="dhouston", time=1175714200, title="My YC app: Dropbox",
        url="http://www.getdropbox.com/u/2/screencast.html", score=111, descendants=71, kids=[9224, 8917],
    ))  # fmt: skip
    assert story == HNItem(
        id=8863, type="story", by="dhouston", time=datetime(2007, 4, 4, 19, 16, 40, tzinfo=UTC),
        title="My YC app: Dropbox", url="http://www.getdropbox.com/u/2/screencast.html",
        score=111, descendants=71, kids=(9224, 8917),
    )  # fmt: skip
    comment = parse_item(_hn(
        id=2921983, type="comment", by="norvig", parent=2921506, time=1314211127,
        text='Aw <i>shucks</i><script>x()</script><p><a href="https://x.com" onclick="y()">l</a>',
        kids=[2922097, "bad", 2922429],
    ))  # fmt: skip
    assert comment is not None
    assert comment.text == 'Aw <i>shucks</i><p><a href="https://x.com" rel="noopener noreferrer nofollow">l</a></p>'
    assert comment.kids == (2922097, 2922429)
    assert comment.title is None and comment.url is None


def test_parse_item_null_and_wrong_types() -> None:
    assert parse_item(b"null") is None
    item = parse_item(_hn(id=1, type="story", title="t", score="lots", kids="no", url="ftp://x", time="never"))
    assert item is not None
    assert (item.score, item.kids, item.url, item.time) == (None, (), None, None)


@pytest.mark.parametrize(
    "body",
    [b"[1]", b'{"type": "story"}', b'{"id": "1", "type": "story"}', b'{"id": 1}', b'{"id": 1, "type": ""}', b"<h"],
)
def test_parse_item_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_item(body)


def test_story_to_article() -> None:
    item = parse_item(_hn(
        id=8863, type="story", by="dhouston", time=1175714200, title="My YC app: Dropbox",
        url="http://www.getdropbox.com/u/2/screencast.html", score=111, descendants=71, kids=[9224, 8917],
    ))  # fmt: skip
    assert item is not None
    article = story_to_article(item, "hn")
    assert article is not None
    assert article.id == article_id(url=item.url, source_id="other", upstream_id=None)
    assert (article.title, article.url, article.author) == ("My YC app: Dropbox", item.url, "dhouston")
    assert (article.score, article.comment_count, article.comment_ids) == (111, 71, (9224, 8917))
    assert article.published_at == datetime(2007, 4, 4, 19, 16, 40, tzinfo=UTC)
    assert article.source_id == "hn"


def test_ask_hn_uses_the_discussion_url() -> None:
    item = parse_item(_hn(id=121003, type="story", title="Ask HN: The Arc Effect", text="<i>or</i> HN", time=1203647620))
    assert item is not None
    article = story_to_article(item, "hn")
    assert article is not None
    assert article.url == "https://news.ycombinator.com/item?id=121003"
    assert article.id == article_id(url=article.url, source_id="elsewhere", upstream_id=None)
    assert article.summary == "<i>or</i> HN"
    demo = story_to_article(item, "hn", item_url_base="http://127.0.0.1:9000/item?id=")
    assert demo is not None and demo.url == "http://127.0.0.1:9000/item?id=121003"


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "comment", "text": "hi"},
        {"type": "job", "title": "We're hiring"},
        {"type": "story", "title": "Gone", "deleted": True},
        {"type": "story", "title": "Flagged", "dead": True},
        {"type": "story"},
        {"type": "story", "title": "  "},
    ],
)
def test_story_to_article_skips_non_stories(fields: dict[str, object]) -> None:
    item = parse_item(_hn(id=5, **fields))
    assert item is not None
    assert story_to_article(item, "hn") is None


# --------------------------------------------------------------------------- worker processes


@pytest.mark.parametrize("fn", [parse_newsapi, parse_feed, parse_topstories, parse_item, story_to_article])
def test_parsers_are_picklable(fn: object) -> None:
    assert pickle.loads(pickle.dumps(fn)) is fn


def test_results_are_picklable() -> None:
    parsed = parse_feed(_rss(RSS2_ITEMS), "feed")
    assert pickle.loads(pickle.dumps(parsed)) == parsed


def test_control_characters_never_reach_postgres() -> None:
    from gateway.sources.normalize import clean_text, sanitize_html

    assert clean_text("Foo\x00Bar\x07", max_length=50) == "FooBar"
    assert sanitize_html("<p>a\x00b</p>") == "<p>ab</p>"
