"""Bundled, deterministic data for the offline demo upstream, and its wire formats.

Everything here is a pure function of an *anchor* time: the same anchor gives
byte-identical NewsAPI JSON, RSS 2.0 / Atom / RSS 1.0 (RDF) feeds and Hacker News
items. Timestamps are offsets back from the anchor so a demo started now shows
fresh-looking news, while tests that pass a fixed anchor get fixed bytes.
Randomness comes only from ``random.Random`` instances seeded with constant
strings (string seeds hash with SHA-512, so they do not vary with
``PYTHONHASHSEED``). URLs and ids never depend on the anchor, so restarting the
demo an hour later yields the same articles, a little older.

What the data deliberately contains, so the gateway's hard cases can be shown:

* :data:`SHARED_ARTICLE_URL` appears both in the ``bbc-news`` NewsAPI source and in
  the ``world`` feed (exact same URL: cross-source dedupe).
* :data:`SHARED_TECH_URL` appears in ``the-verge`` and in one Hacker News story, and
  in the ``tech`` feed with ``utm_*`` tracking parameters appended (dedupe after URL
  canonicalisation).
* Feed summaries carry hostile HTML in a few items: a ``<script>`` tag
  (:data:`XSS_SCRIPT_MARKER`), an ``onclick=`` attribute and an ``onerror=``
  attribute, for sanitisation tests.
* RSS dates use RFC 822 with varied zones (``GMT``, ``UT``, ``+0200``, ``-0500``,
  ``EST``, ``PST``, no weekday); Atom uses RFC 3339 (``Z``, offsets, fractions).
* Hacker News stories have comment trees with ``deleted`` and ``dead`` comments and
  some "Ask HN" stories without a URL but with ``text``.

The ``malformed_*`` helpers derive a *still well-formed* document in which some
rows are bad (missing title or URL, unparseable date, wrong JSON types), which is
what the ``malformed`` fault of :mod:`gateway.demo.server` serves.
"""

from __future__ import annotations

import email.utils
import html
import random
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

# --- catalogue ---------------------------------------------------------------

#: NewsAPI source id -> (display name, topics its articles are drawn from).
NEWSAPI_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bbc-news": ("BBC News", ("world", "science", "business")),
    "reuters": ("Reuters", ("world", "business")),
    "the-verge": ("The Verge", ("tech", "science")),
}
NEWSAPI_ARTICLES_PER_SOURCE = 60
#: ``top-headlines`` serves the newest this-many articles of each source;
#: ``everything`` serves all of them.
NEWSAPI_TOP_HEADLINES_PER_SOURCE = 30


@dataclass(frozen=True, slots=True)
class FeedInfo:
    """Channel-level metadata of one demo feed."""

    name: str
    title: str
    link: str
    description: str
    topic: str
    default_items: int


FEEDS: dict[str, FeedInfo] = {
    "tech": FeedInfo("tech", "Demo Tech Wire", "https://tech.demo.example/", "Technology news from the demo wire.", "tech", 40),
    "science": FeedInfo(
        "science", "Demo Science Daily", "https://science.demo.example/", "Discoveries and research, daily.", "science", 40
    ),
    "world": FeedInfo(
        "world", "Demo World Report", "https://world.demo.example/", "What happened around the world.", "world", 40
    ),
    # A firehose for parsing benchmarks; ask for more with ``?items=N``.
    "big": FeedInfo("big", "Demo Firehose", "https://firehose.demo.example/", "Everything, all the time.", "mixed", 500),
}
#: Upper bound for ``?items=N`` (about 20 MB of RSS): big enough for benchmarks,
#: small enough that a typo cannot exhaust memory.
MAX_FEED_ITEMS = 50_000

HN_TOP_STORIES = 100
HN_FIRST_ID = 41_000_000

SHARED_ARTICLE_URL = "https://world.demo.example/world/climate-summit-agrees-coastal-fund"
SHARED_ARTICLE_TITLE = "Climate summit agrees fund to protect coastal cities"
SHARED_TECH_URL = "https://tech.demo.example/tech/open-source-json-parser-hits-1-0"
SHARED_TECH_TITLE = "Open-source JSON parser that beats the standard library hits 1.0"
#: Query string the ``tech`` feed appends to :data:`SHARED_TECH_URL`.
SHARED_TECH_TRACKING = "?utm_source=rss&utm_medium=feed&utm_campaign=demo"

XSS_SCRIPT_MARKER = "<script>"
XSS_ONCLICK_MARKER = "onclick="
XSS_ONERROR_MARKER = "onerror="


def default_anchor(now: datetime | None = None) -> datetime:
    """``now`` (default: the current time) in UTC, rounded down to the hour.

    Rounding keeps the data byte-stable for an hour, so restarting a demo
    mid-hour does not change ETags."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.replace(minute=0, second=0, microsecond=0)


def normalize_anchor(anchor: datetime | None) -> datetime:
    """The anchor as an aware UTC datetime without microseconds (naive means UTC)."""
    if anchor is None:
        return default_anchor()
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=UTC)
    return anchor.astimezone(UTC).replace(microsecond=0)


# --- word banks --------------------------------------------------------------
# Small hand-written banks combined at random: enough variety to look like news
# in a demo, with no external data files to ship.

_SUBJECTS: dict[str, tuple[str, ...]] = {
    "world": (
        "Ministers", "Coastal cities", "Election officials", "Aid agencies", "Negotiators",
        "Farmers", "Regional leaders", "Port workers", "Rescue teams", "City councils",
    ),
    "tech": (
        "Open-source maintainers", "Chipmakers", "A browser team", "Startups", "Regulators",
        "Smartphone makers", "Database engineers", "Game studios", "Cloud providers", "Researchers",
    ),
    "science": (
        "Astronomers", "Marine biologists", "Physicists", "A Mars rover", "Geologists",
        "Climate researchers", "Neuroscientists", "Botanists", "A deep-space probe", "Chemists",
    ),
    "business": (
        "Retailers", "Airlines", "Shipping firms", "Energy companies", "Insurers",
        "Carmakers", "Central bankers", "Investors", "Small businesses", "Food producers",
    ),
}
_VERBS: dict[str, tuple[str, ...]] = {
    "world": ("agree on", "push back against", "prepare for", "warn over", "vote on", "brace for", "debate"),
    "tech": ("ship", "unveil", "delay", "rethink", "open-source", "benchmark", "patch"),
    "science": ("detect", "map", "measure", "discover", "simulate", "recover", "photograph"),
    "business": ("cut forecasts over", "report", "invest in", "bet on", "pull back from", "rally behind"),
}
_OBJECTS: dict[str, tuple[str, ...]] = {
    "world": (
        "a water-sharing deal", "new flood defences", "a border rail link", "heatwave measures",
        "fishing quotas", "a landmark climate pact", "a grain export corridor", "night-train routes",
    ),
    "tech": (
        "a faster JSON parser", "on-device AI features", "a RISC-V laptop", "a GraphQL gateway",
        "a memory-safe TLS stack", "a quantum-resistant VPN", "e-ink tablets", "right-to-repair kits",
    ),
    "science": (
        "water ice near the lunar south pole", "a new deep-sea octopus", "the fastest-spinning star",
        "ancient river channels", "microplastics in glacier ice", "a gravitational-wave echo",
        "a comet's ion tail", "fungal networks under old forests",
    ),
    "business": (
        "strong holiday sales", "higher fuel costs", "record quarterly profits", "battery storage",
        "new tariffs", "a rate-cut hint", "electric vans", "four-day weeks",
    ),
}
_TAILS = (
    "", "", "", "after talks run late", "as deadline nears", "amid protests", "in surprise move",
    "for the first time in a decade", "despite cost worries", "ahead of schedule",
)
_SENTENCES = (
    "Officials said more details would follow later in the week.",
    "The announcement follows months of negotiation behind closed doors.",
    "Critics argue the plan does not go far enough.",
    "Supporters say the change is long overdue.",
    "Early figures suggest the effect could be larger than expected.",
    "Independent experts urged caution until the data is reviewed.",
    "The move is expected to affect millions of people.",
    "A spokesperson declined to comment on the timeline.",
    "Similar efforts elsewhere have had mixed results.",
    "Several groups have already said they will challenge the decision.",
    "The full report runs to more than 300 pages.",
    "Markets reacted calmly to the news.",
    "It is the third such announcement this year.",
    "Local residents described the mood as cautiously optimistic.",
    "The team published its methods and data alongside the findings.",
    "Work is due to begin early next year.",
)
_AUTHORS = (
    "Amara Okafor", "Jonas Lindqvist", "Priya Raman", "Mateo García", "Hannah Whitfield",
    "Kenji Sato", "Olivia Brennan", "Yusuf Demir", "Chloé Martin", "Tomasz Nowak",
    "Leila Haddad", "Sam O'Connor",
)
_HN_USERS = (
    "quietfox", "rustacean42", "lambda_lena", "kernelpanic", "bytewright", "sre_otter",
    "gopher_gal", "nullpointer", "tabsnotspaces", "ferrous", "monad_mike", "yak_shaver",
    "cachemiss", "olddev", "pgfan", "asyncawait",
)
_HN_DOMAINS = (
    "blog.demo.example", "engineering.demo.example", "lwn.demo.example", "arxiv.demo.example",
    "github.demo.example", "zine.demo.example", "notes.demo.example",
)
_HN_LINK_TITLES = (
    "Why {x} is slower than you think", "A deep dive into {x}", "{x} considered harmful",
    "How we cut our {x} bill by 80%", "The unreasonable effectiveness of {x}", "Lessons from a decade of {x}",
    "{x}: a retrospective", "Reverse-engineering {x}", "What I learned rewriting {x}",
)
_HN_SHOW_TITLES = (
    "Show HN: I built {x} in a weekend", "Show HN: An open-source alternative to {x}",
    "Show HN: A tiny {x} in 500 lines",
)
_HN_ASK_TITLES = (
    "Ask HN: How do you handle {x} at work?", "Ask HN: Is {x} still worth learning?",
    "Ask HN: What are you using for {x}?", "Ask HN: Who is hiring for {x}?",
)
_HN_THINGS = (
    "SQLite", "TCP slow start", "garbage collectors", "GraphQL federation", "CRDTs", "HTTP/3",
    "Postgres vacuum", "B-trees", "static site generators", "circuit breakers", "Bloom filters",
    "the Linux scheduler", "WebAssembly", "structured logging", "feature flags", "RSS readers",
)
_HN_COMMENTS = (
    "I've run this in production for two years and it's been solid.",
    "The benchmark methodology seems off: they don't warm the cache first.",
    "This matches my experience. The hard part is always the migration.",
    "Counterpoint: the simple version worked fine for us at much larger scale.",
    "Does anyone know how this compares to the approach in the original paper?",
    "We tried this and rolled it back after a week. Happy to share details.",
    "The author's previous post on the same topic is worth reading too.",
    "Great write-up. The diagrams alone are worth it.",
    "I'm not sure the conclusion follows from the data presented.",
    "It's amazing how often the answer is 'just use Postgres'.",
    "Can confirm, we hit exactly this bug last month.",
    "The real problem is that nobody budgets time for maintenance.",
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].rstrip("-")


def _headline(rng: random.Random, topic: str) -> str:
    tail = rng.choice(_TAILS)
    title = f"{rng.choice(_SUBJECTS[topic])} {rng.choice(_VERBS[topic])} {rng.choice(_OBJECTS[topic])}"
    return f"{title} {tail}" if tail else title


def _sentences(rng: random.Random, count: int) -> list[str]:
    return rng.sample(_SENTENCES, count)


# --- NewsAPI -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewsApiArticle:
    """One article of a NewsAPI source, in the v2 wire shape (see :meth:`to_json`)."""

    source_id: str
    source_name: str
    author: str | None
    title: str
    description: str | None
    url: str
    url_to_image: str | None
    published_at: datetime
    content: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": {"id": self.source_id, "name": self.source_name},
            "author": self.author,
            "title": self.title,
            "description": self.description,
            "url": self.url,
            "urlToImage": self.url_to_image,
            "publishedAt": format_iso_z(self.published_at),
            "content": self.content,
        }

    def matches(self, needle: str) -> bool:
        """NewsAPI's ``q``, simplified: a case-insensitive substring of title or description."""
        return needle in self.title.lower() or (self.description is not None and needle in self.description.lower())


def _build_newsapi_source(source_id: str, anchor: datetime) -> list[NewsApiArticle]:
    name, topics = NEWSAPI_SOURCES[source_id]
    rng = random.Random(f"newsapi:{source_id}")
    articles: list[NewsApiArticle] = []
    minutes = rng.randint(2, 20)
    for n in range(NEWSAPI_ARTICLES_PER_SOURCE):
        topic = topics[n % len(topics)] if n % 3 else rng.choice(topics)
        title = _headline(rng, topic)
        url = f"https://{source_id}.demo.example/{topic}/{_slug(title)}-{n + 1}"
        if source_id == "bbc-news" and n == 3:
            title, url = SHARED_ARTICLE_TITLE, SHARED_ARTICLE_URL
        elif source_id == "the-verge" and n == 2:
            title, url = SHARED_TECH_TITLE, SHARED_TECH_URL
        first, second = _sentences(rng, 2)
        # Real NewsAPI rows have nulls here and there; the gateway must cope.
        description: str | None = f"{first} {second}"
        if n % 17 == 5:
            description = None
        elif n % 23 == 7:
            description = f"{first} <b>Update:</b> {second} <script>alert('newsapi-{n}')</script>"
        author = None if n % 7 == 4 else rng.choice(_AUTHORS)
        image = None if n % 9 == 8 else f"https://img.demo.example/{source_id}/{n + 1}.jpg"
        content = None if n % 13 == 12 else f"{first} {rng.choice(_SENTENCES)}… [+{rng.randint(900, 6400)} chars]"
        articles.append(
            NewsApiArticle(
                source_id=source_id,
                source_name=name,
                author=author,
                title=title,
                description=description,
                url=url,
                url_to_image=image,
                published_at=anchor - timedelta(minutes=minutes, seconds=rng.randint(0, 59)),
                content=content,
            )
        )
        minutes += rng.randint(8, 55)
    return articles  # newest first by construction


# --- feeds -------------------------------------------------------------------

#: Timezone labels for RSS ``pubDate``: (label, offset from UTC in hours).
#: ``None`` label means a numeric offset; the ``"noweekday"`` style drops the weekday.
_RSS_DATE_STYLES: tuple[tuple[str, str | None, int], ...] = (
    ("gmt", "GMT", 0),
    ("numeric-utc", None, 0),
    ("plus0200", None, 2),
    ("minus0500", None, -5),
    ("est", "EST", -5),
    ("pst", "PST", -8),
    ("ut", "UT", 0),
    ("noweekday", None, 1),
)
_ATOM_DATE_STYLES = ("z", "plus0200", "minus0500", "fraction")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One feed entry, independent of the feed format it is rendered in.

    ``title``/``link`` may be ``None`` (element omitted) and ``date_text`` may
    replace the formatted date: that is how malformed rows are expressed."""

    index: int
    title: str | None
    link: str | None
    guid: str
    guid_is_permalink: bool
    summary_html: str
    content_html: str | None
    author: str | None
    categories: tuple[str, ...]
    published: datetime
    updated: datetime
    rss_date_style: int
    atom_date_style: int
    image_url: str | None = None
    date_text: str | None = None  # overrides every format's date when set


def feed_items(name: str, count: int, anchor: datetime) -> list[FeedItem]:
    """The first ``count`` items of feed ``name``, newest first.

    Item *i* is the same whatever ``count`` is (one RNG stream per feed), so a
    big ``?items=N`` feed starts with exactly the items of the normal one."""
    info = FEEDS[name]
    rng = random.Random(f"feed:{name}")
    topics = tuple(_SUBJECTS) if info.topic == "mixed" else (info.topic,)
    items: list[FeedItem] = []
    minutes = rng.randint(1, 25)
    for i in range(count):
        topic = topics[i % len(topics)]
        title = _headline(rng, topic)
        link = f"{info.link}{topic}/{_slug(title)}-{i + 1}"
        if name == "world" and i == 5:
            title, link = SHARED_ARTICLE_TITLE, SHARED_ARTICLE_URL
        elif name == "tech" and i == 1:
            title, link = SHARED_TECH_TITLE, SHARED_TECH_URL + SHARED_TECH_TRACKING
        s1, s2, s3 = _sentences(rng, 3)
        summary = (
            f"<p>{html.escape(s1)} <em>{html.escape(s2)}</em></p>"
            f"<p>{html.escape(s3)} <a href=\"{html.escape(link)}\">Read more</a></p>"
        )
        # A few hostile snippets per feed, at fixed positions, for sanitiser tests.
        if i % 13 == 2:
            summary += f"<script>alert(\"xss-{name}-{i}\")</script>"
        elif i % 13 == 6:
            summary += f"<p><a href=\"{html.escape(link)}\" onclick=\"steal(document.cookie)\">Share</a></p>"
        elif i % 13 == 9:
            summary += "<img src=\"https://img.demo.example/pixel.png\" onerror=\"alert(1)\" alt=\"\">"
        content = None
        if i % 3 == 0:
            extra = " ".join(html.escape(s) for s in _sentences(rng, 4))
            content = f"{summary}<h2>Background</h2><p>{extra}</p><ul><li>{html.escape(topic)}</li><li>item {i + 1}</li></ul>"
        published = anchor - timedelta(minutes=minutes, seconds=rng.randint(0, 59))
        updated = published + timedelta(minutes=rng.randint(1, 30)) if i % 5 == 4 else published
        updated = min(updated, anchor)
        items.append(
            FeedItem(
                index=i,
                title=title,
                link=link,
                guid=link if i % 2 == 0 else f"tag:demo.example,2024:feeds/{name}/{i + 1}",
                guid_is_permalink=i % 2 == 0,
                summary_html=summary,
                content_html=content,
                author=None if i % 6 == 5 else rng.choice(_AUTHORS),
                categories=(topic.capitalize(),) if i % 4 else (topic.capitalize(), "Featured"),
                published=published,
                updated=updated,
                rss_date_style=rng.randrange(len(_RSS_DATE_STYLES)),
                atom_date_style=rng.randrange(len(_ATOM_DATE_STYLES)),
                image_url=f"https://img.demo.example/feeds/{name}/{i + 1}.jpg" if i % 4 == 1 else None,
            )
        )
        minutes += rng.randint(5, 70)
    return items


def format_rfc822(dt: datetime, style: int) -> str:
    """``dt`` as an RFC 822 date in one of the :data:`_RSS_DATE_STYLES`."""
    key, label, hours = _RSS_DATE_STYLES[style % len(_RSS_DATE_STYLES)]
    local = dt.astimezone(timezone(timedelta(hours=hours)))
    zone = label or f"{'+' if hours >= 0 else '-'}{abs(hours):02d}00"
    if key == "noweekday":
        # RFC 822 makes the weekday optional and allows a one-digit day.
        return f"{local.day} {_MONTHS[local.month - 1]} {local.year} {local:%H:%M:%S} {zone}"
    # Names spelled out rather than strftime("%a"), which follows the C locale.
    return f"{_WEEKDAYS[local.weekday()]}, {local.day:02d} {_MONTHS[local.month - 1]} {local.year} {local:%H:%M:%S} {zone}"


def format_rfc3339(dt: datetime, style: int) -> str:
    """``dt`` as an RFC 3339 timestamp in one of the :data:`_ATOM_DATE_STYLES`."""
    key = _ATOM_DATE_STYLES[style % len(_ATOM_DATE_STYLES)]
    if key == "plus0200":
        return dt.astimezone(timezone(timedelta(hours=2))).isoformat()
    if key == "minus0500":
        return dt.astimezone(timezone(timedelta(hours=-5))).isoformat()
    if key == "fraction":
        # Demo times are whole seconds; the fraction is there to exercise parsers.
        return f"{dt.astimezone(UTC):%Y-%m-%dT%H:%M:%S}.000Z"
    return format_iso_z(dt)


def format_iso_z(dt: datetime) -> str:
    """``2025-01-06T10:00:00Z``: the form NewsAPI and most JSON APIs use."""
    return f"{dt.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"


def http_date(dt: datetime) -> str:
    """An RFC 9110 HTTP-date (``Last-Modified``)."""
    return email.utils.format_datetime(dt.astimezone(UTC), usegmt=True)


def _cdata(text: str) -> str:
    # "]]>" cannot appear inside CDATA; split it across two sections.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def feed_last_modified(items: list[FeedItem], anchor: datetime) -> datetime:
    """When the feed last changed: its newest ``updated`` (the anchor for an empty feed)."""
    return max((it.updated for it in items), default=anchor)


def render_rss(info: FeedInfo, items: list[FeedItem], anchor: datetime) -> bytes:
    """RSS 2.0 with ``content:encoded`` and ``dc:creator``."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom">\n'
        "<channel>\n"
        f"<title>{xml_escape(info.title)}</title>\n"
        f"<link>{xml_escape(info.link)}</link>\n"
        f"<description>{xml_escape(info.description)}</description>\n"
        "<language>en-gb</language>\n"
        f"<lastBuildDate>{format_rfc822(feed_last_modified(items, anchor), 0)}</lastBuildDate>\n"
        "<ttl>15</ttl>\n"
    ]
    for it in items:
        parts = ["<item>\n"]
        if it.title is not None:
            parts.append(f"<title>{xml_escape(it.title)}</title>\n")
        if it.link is not None:
            parts.append(f"<link>{xml_escape(it.link)}</link>\n")
        # Half the descriptions are CDATA, half entity-escaped: both occur in the wild.
        desc = _cdata(it.summary_html) if it.index % 2 == 0 else xml_escape(it.summary_html)
        parts.append(f"<description>{desc}</description>\n")
        if it.content_html is not None:
            parts.append(f"<content:encoded>{_cdata(it.content_html)}</content:encoded>\n")
        if it.author is not None:
            parts.append(f"<dc:creator>{xml_escape(it.author)}</dc:creator>\n")
        parts.extend(f"<category>{xml_escape(c)}</category>\n" for c in it.categories)
        permalink = "true" if it.guid_is_permalink else "false"
        parts.append(f'<guid isPermaLink="{permalink}">{xml_escape(it.guid)}</guid>\n')
        date = it.date_text if it.date_text is not None else format_rfc822(it.published, it.rss_date_style)
        parts.append(f"<pubDate>{xml_escape(date)}</pubDate>\n")
        if it.image_url is not None:
            parts.append(f'<enclosure url={quoteattr(it.image_url)} type="image/jpeg" length="{20480 + it.index}"/>\n')
        parts.append("</item>\n")
        out.append("".join(parts))
    out.append("</channel>\n</rss>\n")
    return "".join(out).encode("utf-8")


def render_atom(info: FeedInfo, items: list[FeedItem], anchor: datetime) -> bytes:
    """Atom 1.0 (RFC 4287) with HTML summaries and, for some entries, HTML content."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">\n'
        f"<title>{xml_escape(info.title)}</title>\n"
        f"<subtitle>{xml_escape(info.description)}</subtitle>\n"
        f"<id>tag:demo.example,2024:feeds/{info.name}</id>\n"
        f'<link rel="alternate" type="text/html" href={quoteattr(info.link)}/>\n'
        f"<updated>{format_iso_z(feed_last_modified(items, anchor))}</updated>\n"
        f"<author><name>{xml_escape(info.title)} desk</name></author>\n"
    ]
    for it in items:
        parts = ["<entry>\n"]
        if it.title is not None:
            parts.append(f"<title>{xml_escape(it.title)}</title>\n")
        if it.link is not None:
            parts.append(f'<link rel="alternate" type="text/html" href={quoteattr(it.link)}/>\n')
        parts.append(f"<id>{xml_escape(it.guid)}</id>\n")
        if it.date_text is not None:
            parts.append(f"<published>{xml_escape(it.date_text)}</published>\n<updated>{xml_escape(it.date_text)}</updated>\n")
        else:
            parts.append(
                f"<published>{format_rfc3339(it.published, it.atom_date_style)}</published>\n"
                f"<updated>{format_rfc3339(it.updated, it.atom_date_style)}</updated>\n"
            )
        if it.author is not None:
            parts.append(f"<author><name>{xml_escape(it.author)}</name></author>\n")
        parts.extend(f'<category term={quoteattr(c)}/>\n' for c in it.categories)
        parts.append(f'<summary type="html">{xml_escape(it.summary_html)}</summary>\n')
        if it.content_html is not None:
            parts.append(f'<content type="html">{xml_escape(it.content_html)}</content>\n')
        if it.image_url is not None:
            parts.append(f'<link rel="enclosure" type="image/jpeg" href={quoteattr(it.image_url)}/>\n')
        parts.append("</entry>\n")
        out.append("".join(parts))
    out.append("</feed>\n")
    return "".join(out).encode("utf-8")


def render_rdf(info: FeedInfo, items: list[FeedItem], anchor: datetime) -> bytes:
    """RSS 1.0 (RDF) with Dublin Core dates (ISO 8601) and creators."""

    def about(it: FeedItem) -> str:
        return it.link if it.link is not None else it.guid

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">\n'
        f"<channel rdf:about={quoteattr(info.link + 'feeds/' + info.name + '.rdf')}>\n"
        f"<title>{xml_escape(info.title)}</title>\n"
        f"<link>{xml_escape(info.link)}</link>\n"
        f"<description>{xml_escape(info.description)}</description>\n"
        f"<dc:date>{format_iso_z(feed_last_modified(items, anchor))}</dc:date>\n"
        "<items><rdf:Seq>\n"
    ]
    out.extend(f"<rdf:li rdf:resource={quoteattr(about(it))}/>\n" for it in items)
    out.append("</rdf:Seq></items>\n</channel>\n")
    for it in items:
        parts = [f"<item rdf:about={quoteattr(about(it))}>\n"]
        if it.title is not None:
            parts.append(f"<title>{xml_escape(it.title)}</title>\n")
        if it.link is not None:
            parts.append(f"<link>{xml_escape(it.link)}</link>\n")
        parts.append(f"<description>{xml_escape(it.summary_html)}</description>\n")
        if it.content_html is not None:
            parts.append(f"<content:encoded>{_cdata(it.content_html)}</content:encoded>\n")
        if it.author is not None:
            parts.append(f"<dc:creator>{xml_escape(it.author)}</dc:creator>\n")
        date = it.date_text if it.date_text is not None else format_rfc3339(it.published, it.atom_date_style)
        parts.append(f"<dc:date>{xml_escape(date)}</dc:date>\n")
        parts.append("</item>\n")
        out.append("".join(parts))
    out.append("</rdf:RDF>\n")
    return "".join(out).encode("utf-8")


FEED_RENDERERS = {"rss": render_rss, "atom": render_atom, "rdf": render_rdf}


# --- Hacker News -------------------------------------------------------------


@dataclass(slots=True)
class _Comment:
    id: int
    parent: int
    by: str
    time: int
    text: str
    deleted: bool
    dead: bool
    kids: list[_Comment] = field(default_factory=list)


def _hn_text(rng: random.Random, sentences: int) -> str:
    # HN's API serves HTML: paragraphs joined by <p>, quotes as &#x27; / &quot;.
    chosen = rng.sample(_HN_COMMENTS, sentences)
    text = "<p>".join(html.escape(s) for s in chosen)
    if rng.random() < 0.15:
        text += '<p>See <a href="https:&#x2F;&#x2F;notes.demo.example&#x2F;post" rel="nofollow">notes.demo.example&#x2F;post</a>'
    if rng.random() < 0.1:
        text = "<i>" + text + "</i>"
    return text


def _hn_thread(
    rng: random.Random, parent: int, depth: int, not_before: int, anchor_ts: int, next_id: list[int], *, at_least: int = 0
) -> list[_Comment]:
    # Fan-out shrinks with depth: up to 8 top-level comments, replies to depth 3 below them.
    fan_out = {0: 8, 1: 3, 2: 2, 3: 1}.get(depth, 0)
    comments: list[_Comment] = []
    for _ in range(rng.randint(min(at_least, fan_out), fan_out)):
        cid = next_id[0]
        next_id[0] += 1
        lo = min(not_before + 30, anchor_ts)  # replies come after their parent, never after the anchor
        t = rng.randint(lo, max(lo, anchor_ts))
        roll = rng.random()
        c = _Comment(
            id=cid, parent=parent, by=rng.choice(_HN_USERS), time=t, text=_hn_text(rng, rng.randint(1, 3)),
            deleted=roll < 0.05, dead=0.05 <= roll < 0.09,
        )
        c.kids = _hn_thread(rng, cid, depth + 1, t, anchor_ts, next_id)
        comments.append(c)
    return comments


def _visible_count(comments: list[_Comment]) -> int:
    # HN's "descendants" leaves out deleted and dead comments.
    return sum((0 if c.deleted or c.dead else 1) + _visible_count(c.kids) for c in comments)


def _comment_json(c: _Comment) -> dict[str, Any]:
    if c.deleted:
        # Deleted comments keep only their skeleton (no author, no text), as on HN.
        item: dict[str, Any] = {"deleted": True, "id": c.id, "parent": c.parent, "time": c.time, "type": "comment"}
    else:
        item = {"by": c.by, "id": c.id, "parent": c.parent, "text": c.text, "time": c.time, "type": "comment"}
        if c.dead:
            item["dead"] = True
    if c.kids:
        item["kids"] = [k.id for k in c.kids]
    return item


def build_hn(anchor: datetime) -> tuple[list[int], dict[int, dict[str, Any]]]:
    """Top-story ids (ranked) and every item by id, in the HN v0 API's shape.

    Like the real API, empty ``kids`` are omitted and keys are sorted."""
    rng = random.Random("hackernews")
    anchor_ts = int(anchor.timestamp())
    raw: list[dict[str, Any]] = []
    for k in range(HN_TOP_STORIES):
        age_s = rng.randint(10 * 60, 30 * 3600)
        thing = rng.choice(_HN_THINGS)
        roll = rng.random()
        story: dict[str, Any] = {"by": rng.choice(_HN_USERS), "time": anchor_ts - age_s, "type": "story"}
        if roll < 0.1:
            story["title"] = rng.choice(_HN_ASK_TITLES).format(x=thing)
            story["text"] = _hn_text(rng, 2)
            if k == 7:  # one hostile Ask HN body, for sanitiser tests on HN text
                story["text"] += '<script>alert("hn")</script><p onclick="steal()">click</p>'
        else:
            template = rng.choice(_HN_SHOW_TITLES if roll < 0.18 else _HN_LINK_TITLES)
            story["title"] = template.format(x=thing)
            story["url"] = f"https://{rng.choice(_HN_DOMAINS)}/{_slug(story['title'])}"
        if k == 11:
            story.pop("text", None)
            story["title"], story["url"] = SHARED_TECH_TITLE, SHARED_TECH_URL
        story["score"] = min(1500, int(rng.paretovariate(1.3) * 6))
        raw.append(story)

    items: dict[int, dict[str, Any]] = {}
    next_id = [HN_FIRST_ID]
    for story in sorted(raw, key=lambda s: s["time"]):  # ids grow with time, as on HN
        sid = next_id[0]
        next_id[0] += 1
        story["id"] = sid
        # Popular stories draw comments: a high score with an empty thread looks fake.
        at_least = 3 if story["score"] >= 100 else 0
        comments = _hn_thread(rng, sid, 0, story["time"], anchor_ts, next_id, at_least=at_least)
        story["descendants"] = _visible_count(comments)
        if comments:
            story["kids"] = [c.id for c in comments]
        items[sid] = dict(sorted(story.items()))
        stack = list(comments)
        while stack:
            c = stack.pop()
            items[c.id] = _comment_json(c)
            stack.extend(c.kids)
        next_id[0] += rng.randint(3, 40)  # other people's items interleave on the real site

    def rank(s: dict[str, Any]) -> float:
        age_h = (anchor_ts - s["time"]) / 3600
        return float((s["score"] - 1) / (age_h + 2) ** 1.8)

    top = [s["id"] for s in sorted(raw, key=lambda s: (-rank(s), s["id"]))]
    return top, dict(sorted(items.items()))


# --- the dataset ---------------------------------------------------------------


class DemoDataset:
    """All demo data for one anchor. Cheap to build (a few milliseconds); big feeds
    are generated on demand by :func:`feed_items`."""

    def __init__(self, anchor: datetime | None = None) -> None:
        self.anchor = normalize_anchor(anchor)
        self.newsapi: dict[str, list[NewsApiArticle]] = {
            sid: _build_newsapi_source(sid, self.anchor) for sid in NEWSAPI_SOURCES
        }
        self.hn_top, self.hn_items = build_hn(self.anchor)

    def newsapi_articles(self, sources: list[str], *, top_headlines: bool) -> list[NewsApiArticle]:
        """Articles of ``sources`` (all sources when empty), newest first."""
        limit = NEWSAPI_TOP_HEADLINES_PER_SOURCE if top_headlines else None
        chosen: list[NewsApiArticle] = []
        for sid in sources or list(NEWSAPI_SOURCES):
            chosen.extend(self.newsapi[sid][:limit])
        chosen.sort(key=lambda a: (a.published_at, a.url), reverse=True)
        return chosen

    def feed_items(self, name: str, count: int | None = None) -> list[FeedItem]:
        info = FEEDS[name]
        return feed_items(name, info.default_items if count is None else count, self.anchor)

    def render_feed(self, name: str, fmt: str, count: int | None = None, *, malformed: bool = False) -> tuple[bytes, datetime]:
        """The feed document and its last-modified time."""
        items = self.feed_items(name, count)
        if malformed:
            items = malformed_feed_items(items, self.anchor)
        return FEED_RENDERERS[fmt](FEEDS[name], items, self.anchor), feed_last_modified(items, self.anchor)


# --- malformed variants ----------------------------------------------------------
# Each helper breaks rows at odd positions (1, 3, 5, ...), one defect per row,
# each defect used once, so most of the document stays good and the bad rows
# are easy to find in tests: ``bad row k`` sits at index ``2k + 1``.

#: Defects of NewsAPI rows, in the order they are applied.
NEWSAPI_DEFECTS = (
    "missing-title", "missing-url", "bad-date", "title-number", "title-object",
    "null-row", "bad-url", "source-string", "date-number",
)
FEED_DEFECTS = ("missing-title", "missing-link", "bad-date", "empty-title", "javascript-link", "relative-link", "future-date")
HN_TOP_DEFECTS = ("string-id", "null-id", "negative-id", "float-id", "unknown-id")
HN_ITEM_DEFECTS = ("title-number", "time-string", "bad-kids", "url-object", "missing-type", "by-number")


def malformed_newsapi_rows(rows: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = [dict(r) for r in rows]
    for k, defect in enumerate(NEWSAPI_DEFECTS):
        i = 2 * k + 1
        if i >= len(out):
            break
        row = out[i]
        if defect == "missing-title":
            del row["title"]
        elif defect == "missing-url":
            del row["url"]
        elif defect == "bad-date":
            row["publishedAt"] = "yesterday around noon"
        elif defect == "title-number":
            row["title"] = 12345
        elif defect == "title-object":
            row["title"] = {"text": row["title"], "lang": "en"}
        elif defect == "null-row":
            out[i] = None
        elif defect == "bad-url":
            row["url"] = "not a url"
        elif defect == "source-string":
            row["source"] = row["source"]["name"]
        elif defect == "date-number":
            row["publishedAt"] = 1_700_000_000
    return out


def malformed_feed_items(items: list[FeedItem], anchor: datetime) -> list[FeedItem]:
    out = list(items)
    for k, defect in enumerate(FEED_DEFECTS):
        i = 2 * k + 1
        if i >= len(out):
            break
        it = out[i]
        if defect == "missing-title":
            out[i] = replace(it, title=None)
        elif defect == "missing-link":
            # Keep a non-permalink guid so nothing else could stand in for the URL.
            out[i] = replace(it, link=None, guid=f"tag:demo.example,2024:broken/{it.index}", guid_is_permalink=False)
        elif defect == "bad-date":
            out[i] = replace(it, date_text="sometime last week")
        elif defect == "empty-title":
            out[i] = replace(it, title="   ")
        elif defect == "javascript-link":
            out[i] = replace(it, link="javascript:alert(1)", guid_is_permalink=False, guid=f"tag:demo.example,2024:js/{it.index}")
        elif defect == "relative-link":
            out[i] = replace(it, link=f"/relative/path/{it.index}")
        elif defect == "future-date":
            future = anchor + timedelta(days=365 * 20)
            out[i] = replace(it, published=future, updated=future)
    return out


def malformed_hn_top(ids: list[int]) -> list[Any]:
    out: list[Any] = list(ids)
    for k, defect in enumerate(HN_TOP_DEFECTS):
        i = 2 * k + 1
        if i >= len(out):
            break
        if defect == "string-id":
            out[i] = str(out[i])
        elif defect == "null-id":
            out[i] = None
        elif defect == "negative-id":
            out[i] = -out[i]
        elif defect == "float-id":
            out[i] = out[i] + 0.5
        elif defect == "unknown-id":
            out[i] = 999_999_999
    return out


def malformed_hn_item(item: dict[str, Any]) -> dict[str, Any]:
    """One defect, chosen by the item id so it is stable per item."""
    out = dict(item)
    defect = HN_ITEM_DEFECTS[out["id"] % len(HN_ITEM_DEFECTS)]
    if defect == "title-number":
        out["title"] = 42
    elif defect == "time-string":
        out["time"] = "yesterday"
    elif defect == "bad-kids":
        out["kids"] = [*out.get("kids", []), "x", None]
    elif defect == "url-object":
        out["url"] = {"href": out.get("url", "https://demo.example/")}
    elif defect == "missing-type":
        out.pop("type", None)
    elif defect == "by-number":
        out["by"] = 7
    out["_defect"] = defect  # not in the HN API: lets tests and demos see what broke
    return out
