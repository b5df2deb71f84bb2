"""The operator page /status: every source with its refresh state, freshness and
breaker, and a latency sparkline whose points are the fetch statistics' per-minute
percentiles (every process's: some rows here are written as another replica would);
hostile names escaped; off in production unless enabled; a database that is down
costs a note, not the page. Rendered in headless Chromium, where installed, under its
own CSP."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import asyncpg
import pytest

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.ops.status import SPARK_H, SPARK_PAD, SPARK_W, WINDOW_MINUTES
from gateway.settings import EdgeSettings, Settings
from tests.clock import FakeClock
from tests.conftest import sources_of
from tests.helpers import RunningGateway, chromium, headless_dom

TECH = {"id": "tech", "name": "Tech Wire", "kind": "feed", "url": "{demo}/feeds/tech.rss"}
NEWS = {"id": "news", "name": "News API", "kind": "newsapi", "url": "{demo}/newsapi/v2/everything"}
QUERY = "{ articles(first: 5) { sources { status } } }"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


class _Page(HTMLParser):
    """Each <svg class="spark"> (its attributes, and its paths' d by class) per row."""

    def __init__(self) -> None:
        super().__init__()
        self.sparks: list[dict[str, object]] = []
        self.rows: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and (a.get("id") or "").startswith("source-"):
            self.rows.append(str(a["id"])[len("source-"):])
        elif tag == "svg":
            self.sparks.append({"attrs": a, "paths": {}})
        elif tag == "path":
            self.sparks[-1]["paths"][a["class"]] = a["d"]  # type: ignore[index]


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def percentile(values: list[float], q: float) -> float:
    """Postgres's percentile_cont: linear interpolation between the closest ranks."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def decode(d: str, top_ms: float) -> dict[int, float]:
    """A sparkline path back to {minute: ms}."""
    out = {}
    for x, y in re.findall(r"[ML]([\d.]+),([\d.]+)", d):
        minute = round((float(x) - SPARK_PAD) * (WINDOW_MINUTES - 1) / (SPARK_W - 2 * SPARK_PAD))
        out[minute] = (SPARK_H - SPARK_PAD - float(y)) / (SPARK_H - 2 * SPARK_PAD) * top_ms
    return out


async def insert_rows(url: str, rows: list[tuple[str, datetime, float, str]]) -> None:
    """Statistics as another replica's writer leaves them."""
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "fetch_stats",
            records=[(s, "latest", at, ms, outcome, 200, 10, 1) for s, at, ms, outcome in rows],
            columns=("source_id", "request_key", "started_at", "duration_ms", "outcome", "http_status", "bytes", "items"),
        )
    finally:
        await conn.close()


async def all_rows(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT source_id, started_at, duration_ms FROM fetch_stats")
    finally:
        await conn.close()


async def test_the_page_shows_each_source_and_draws_the_statistics(
    demo: DemoServer, make_settings: Callable[..., Settings], database_url: str
) -> None:
    clock = FakeClock(NOW)
    demo.control.set_fault("newsapi.everything", fault="500")
    app = create_app(make_settings(sources_of(demo.url, TECH, NEWS)), clock=clock)
    async with RunningGateway(app) as gw:
        await gw.data(QUERY)  # tech: FRESH; news: FAILED (500, retried)
        assert gw.services.stats is not None
        await gw.services.stats.flush()
        minute = timedelta(minutes=1)
        await insert_rows(database_url, [
            ("tech", NOW - 30 * minute + timedelta(seconds=1), 10.0, "OK"),
            ("tech", NOW - 30 * minute + timedelta(seconds=2), 20.0, "OK"),
            ("tech", NOW - 30 * minute + timedelta(seconds=3), 90.0, "OK"),
            ("tech", NOW - 29 * minute + timedelta(seconds=5), 40.0, "UPSTREAM_TIMEOUT"),
            ("tech", NOW - 10 * minute + timedelta(seconds=5), 25.0, "OK"),
            ("tech", NOW - 2 * WINDOW_MINUTES * minute, 5000.0, "OK"),  # before the window
            ("news", NOW - 5 * minute, 300.0, "UPSTREAM_HTTP_ERROR"),
            ("news", NOW - 5 * minute, 100.0, "OK"),
        ])
        clock.advance(1)
        resp = await gw.client.get("/status")
        rows = await all_rows(database_url)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "'unsafe-inline'" not in csp
    assert resp.headers["cache-control"] == "no-store"
    html = resp.text
    page = parse(html)
    assert page.rows == ["tech", "news"] and len(page.sparks) == 2
    assert "Tech Wire" in html and "News API" in html
    assert html.count(">CLOSED<") == 2  # both breakers, as this process sees them
    assert "UPSTREAM_HTTP_ERROR 500" in html and "failing" in html  # news's last refresh
    assert "fresh" in html  # tech: its copy is a second old, ttl 120 s

    # The points: per-minute p50 and p95 of every row in the window, as Postgres has them.
    since = NOW + timedelta(seconds=1) - timedelta(minutes=WINDOW_MINUTES)
    by_minute: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["started_at"] > since:
            by_minute[r["source_id"]][int((r["started_at"] - since).total_seconds() // 60)].append(r["duration_ms"])
    assert {30, 31, 50} <= set(by_minute["tech"])  # the inserted rows are in
    for spark, source in zip(page.sparks, page.rows, strict=True):
        top = float(spark["attrs"]["data-max-ms"])  # type: ignore[index]
        want = by_minute[source]
        assert top == pytest.approx(max(percentile(v, 0.95) for v in want.values()) or 1.0, abs=0.01)
        for cls, q in (("p50", 0.5), ("p95", 0.95)):
            drawn = decode(spark["paths"][cls], top)  # type: ignore[index]
            assert set(drawn) == set(want)
            for m, values in want.items():
                assert drawn[m] == pytest.approx(percentile(values, q), abs=top * 0.01 + 0.01)
    assert 'class="fail"' in html  # the timed-out call's minute is marked


async def test_names_from_the_sources_file_are_escaped(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    hostile = {**TECH, "name": '<script>alert("x")</script><img src=x onerror=alert(1)> & co'}
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, hostile)))) as gw:
        await gw.data(QUERY)
        html = (await gw.client.get("/status")).text
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; co" in html


@pytest.mark.parametrize(
    ("edge", "expected"),
    [
        (EdgeSettings(env="production"), 404),
        (EdgeSettings(env="production", status_page=True), 200),
        (EdgeSettings(env="development", status_page=False), 404),
    ],
)
async def test_production_turns_it_off_unless_enabled(
    demo: DemoServer, make_settings: Callable[..., Settings], edge: EdgeSettings, expected: int
) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH), edge=edge))) as gw:
        resp = await gw.client.get("/status")
        unknown = await gw.client.get("/no-such-page")
    assert resp.status_code == expected
    if expected == 404:
        assert (resp.text, resp.headers["content-type"]) == (unknown.text, unknown.headers["content-type"])


def test_the_setting_reads_from_the_environment() -> None:
    assert EdgeSettings.from_env({}).status_page_on
    assert not EdgeSettings.from_env({"GATEWAY_ENV": "production"}).status_page_on
    assert EdgeSettings.from_env({"GATEWAY_ENV": "production", "GATEWAY_STATUS_PAGE": "true"}).status_page_on
    assert not EdgeSettings.from_env({"GATEWAY_STATUS_PAGE": "off"}).status_page_on


async def test_a_database_that_is_down_costs_a_note_not_the_page(
    demo: DemoServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from gateway.store.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path / "own-pg")
    url = await pg.start()
    try:
        async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH), database_url=url))) as gw:
            await gw.data(QUERY)
            assert 'class="note"' not in (await gw.client.get("/status")).text
            await pg.stop()
            resp = await gw.client.get("/status")
            assert resp.status_code == 200
            assert 'class="note"' in resp.text and "database did not answer" in resp.text
            assert parse(resp.text).rows == ["tech"]
            assert ">CLOSED<" in resp.text and "unknown (no database)" in resp.text
            assert ">ok<" in resp.text  # this process's last refresh succeeded
    finally:
        await pg.stop()


async def test_the_page_renders_in_a_browser_under_its_csp(gateway: RunningGateway) -> None:
    chromium()  # skips where there is none
    await gateway.data(QUERY)
    assert gateway.services.stats is not None
    await gateway.services.stats.flush()
    dom, violations = await headless_dom(f"{gateway.url}/status", budget_ms=3000)
    assert violations == []
    assert "<svg" in dom and 'class="p95"' in dom and "Gateway status" in dom
