"""Operating the gateway: /metrics (one worker and summed across two), /readyz through
a Postgres stop and start, the drain on SIGTERM, JSON logs, health DEGRADED. The
multi-process checks run ``gateway serve`` itself, as an operator would."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.settings import BUNDLED_DEMO_SOURCES, Settings
from tests.conftest import sources_of
from tests.helpers import RunningGateway, gateway_serve

TECH = {"id": "tech", "name": "Tech", "kind": "feed", "url": "{demo}/feeds/tech.rss"}
NAMED = "query FrontPage { articles(first: 3) { nodes { id } sources { source { id } status } } }"


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    return sum(v for got, v in samples(text, name) if all(got.get(k) == want for k, want in labels.items()))


async def test_metrics_count_requests_operations_sources_and_breakers(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH)))) as gw:
        for _ in range(3):
            await gw.data(NAMED)
        await gw.query("{ nope }")
        text = (await gw.client.get("/metrics")).text
        # The third FrontPage is a response-cache hit, unless the NOTIFY of the first
        # fetch's write arrived after the second answer was stored (and dropped it).
        hits = gw.app.state.response_cache.hits
    assert value(text, "gateway_http_requests_total", route="/graphql", method="POST", status="200") == 4
    assert value(text, "gateway_graphql_operations_total", operation_name="FrontPage", outcome="ok") == 3
    assert value(text, "gateway_graphql_operations_total", operation_name="anonymous", outcome="error") == 1
    # executed operations only: hits are counted as operations, not timed
    assert hits <= 1
    assert value(text, "gateway_graphql_duration_seconds_count") == 4 - hits
    assert value(text, "gateway_source_results_total", source="tech", status="FRESH") == 1
    assert value(text, "gateway_source_results_total", source="tech", status="CACHED") == 2
    assert value(text, "gateway_upstream_requests_total", source="tech", outcome="ok") == 1
    assert value(text, "gateway_breaker_state", source="tech", state="CLOSED") == 1
    # the third answer comes from the response cache, in front of the feed cache
    assert value(text, "gateway_cache_operations_total", layer="memory", result="hit") >= 1
    assert samples(text, "gateway_db_pool_connections") and samples(text, "gateway_event_loop_lag_seconds")
    assert samples(text, "gateway_rate_limited_total") is not None


async def test_requests_that_share_an_execution_are_each_counted_and_logged(
    demo: DemoServer, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """A burst of identical requests runs one execution (the response cache's front
    hands it to the rest): every request is still an operation served, counted, timed
    (each waited for it) and logged with its own request id."""
    caplog.set_level("INFO", logger="gateway.request")
    demo.control.set_fault("*", latency_ms=1000)  # the first stays in flight while the others arrive
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH)))) as gw:
        flights = gw.app.state.response_cache.flights
        first = asyncio.ensure_future(gw.post(NAMED))
        async with asyncio.timeout(10):
            while not len(flights):
                await asyncio.sleep(0.005)
        others = await asyncio.gather(*(gw.post(NAMED) for _ in range(4)))
        assert (await first).status_code == 200 and all(r.status_code == 200 for r in others)
        assert flights.joined == 4 and gw.services.source_service.stats["tech"].upstream_calls == 1
        text = (await gw.client.get("/metrics")).text
    assert value(text, "gateway_graphql_operations_total", operation_name="FrontPage", outcome="ok") == 5
    assert value(text, "gateway_graphql_duration_seconds_count") == 5
    assert value(text, "gateway_source_results_total", source="tech", status="FRESH") == 5
    lines = [r for r in caplog.records if r.getMessage() == "graphql.operation"]
    assert len(lines) == 5 and len({r.request_id for r in lines}) == 5
    assert {(r.operation_name, r.outcome, r.cache_hit) for r in lines} == {("FrontPage", "ok", False)}
    assert all(r.sources == {"tech": "FRESH"} for r in lines)
    assert all(r.duration_ms > 0 for r in lines)


async def test_a_hit_on_an_answer_with_errors_logs_its_error_codes(
    demo: DemoServer, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """A hit repeats the answer's errors in its log line, as the miss logged them."""
    caplog.set_level("INFO", logger="gateway.request")
    query = '{ sources { id } articles(after: "nope") { nodes { id } } }'
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH)))) as gw:
        cache = gw.app.state.response_cache
        first = (await gw.post(query)).json()
        assert first["data"]["sources"] and first["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        hits = cache.hits
        await gw.post(query)
        assert cache.hits == hits + 1  # kept briefly (PARTIAL_TTL_S), not for the whole TTL
    miss, hit = [r for r in caplog.records if r.getMessage() == "graphql.operation"]
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert miss.errors == hit.errors == ["BAD_USER_INPUT"]
    assert miss.outcome == hit.outcome == "partial"


async def test_operation_names_have_bounded_cardinality(gateway: RunningGateway) -> None:
    from gateway.ops.metrics import MAX_OPERATION_NAMES

    for i in range(MAX_OPERATION_NAMES + 5):
        await gw_query(gateway, f"query Op{i} {{ sources {{ id }} }}")
    text = (await gateway.client.get("/metrics")).text
    names = {labels["operation_name"] for labels, _ in samples(text, "gateway_graphql_operations_total")}
    assert len(names) == MAX_OPERATION_NAMES + 1 and "other" in names


async def gw_query(gw: RunningGateway, query: str) -> None:
    assert (await gw.post(query)).status_code == 200


async def test_readiness_follows_the_database(
    demo: DemoServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from gateway.store.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path / "own-pg")
    url = await pg.start()
    try:
        async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH), database_url=url))) as gw:
            ready = await gw.client.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
            await pg.stop()
            down = await gw.client.get("/readyz")
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable" and down.json()["reasons"][0].startswith("database")
            assert (await gw.client.get("/livez")).status_code == 200  # alive all the same
            await pg.start()
            for _ in range(20):  # it checks the database on every call: the first may pass
                if (await gw.client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await gw.client.get("/readyz")).status_code == 200
    finally:
        await pg.stop()


async def test_health_is_degraded_while_a_source_s_last_refresh_failed(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    demo.control.set_fault("feeds.rss:tech", fault="500")
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH)))) as gw:
        await gw.data(NAMED)
        assert (await gw.data("{ health { status } }"))["health"]["status"] == "DEGRADED"


# --------------------------------------------------------------------------- gateway serve


@contextmanager
def serving(demo: DemoServer, database_url: str, tmp_path: Path, *, workers: int = 1, **env: str) -> Iterator[
    tuple[subprocess.Popen[bytes], str]
]:
    sources = tmp_path / "sources.toml"
    sources.write_text(Path(BUNDLED_DEMO_SOURCES).read_text().replace("http://127.0.0.1:9100", demo.url))
    with gateway_serve({"GATEWAY_DATABASE_URL": database_url, "GATEWAY_SOURCES": str(sources),
                        "GATEWAY_DATA_DIR": str(tmp_path / "data"), **env}, workers=workers) as served:
        yield served


@asynccontextmanager
async def client(base: str, proc: subprocess.Popen[bytes]) -> AsyncIterator[httpx.AsyncClient]:
    # A fresh connection per request: with several workers each may reach another one.
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        for _ in range(300):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            try:
                if (await c.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        yield c


async def test_one_scrape_sums_every_worker(demo: DemoServer, database_url: str, tmp_path: Path) -> None:
    with serving(demo, database_url, tmp_path, workers=2) as (proc, base):
        async with client(base, proc) as c:
            for _ in range(20):
                assert (await c.post("/graphql", json={"query": NAMED})).status_code == 200
            totals = []
            for _ in range(6):  # scrapes land on either worker; each must come to see all 20
                async with asyncio.timeout(10):
                    # A worker adds its response-cache hits to the counters within
                    # LOOP_LAG_INTERVAL_S (gateway.ops.metrics.Metrics.flush).
                    while True:
                        text = (await c.get("/metrics")).text
                        total = value(text, "gateway_graphql_operations_total", operation_name="FrontPage")
                        assert total <= 20
                        if total == 20:
                            break
                        await asyncio.sleep(0.05)
                totals.append(total)
    assert totals == [20.0] * 6


async def test_sigterm_drains_then_stops(demo: DemoServer, database_url: str, tmp_path: Path) -> None:
    with serving(demo, database_url, tmp_path, GATEWAY_SHUTDOWN_DELAY_S="8") as (proc, base):
        async with client(base, proc) as c:
            proc.send_signal(signal.SIGTERM)
            for _ in range(50):
                if (await c.get("/readyz")).status_code == 503:
                    break
                await asyncio.sleep(0.05)
            drained = await c.get("/readyz")
            assert drained.status_code == 503 and drained.json()["reasons"] == ["shutting down"]
            # still serving while the load balancer takes it out of rotation
            assert (await c.post("/graphql", json={"query": NAMED})).status_code == 200
            assert proc.poll() is None
        assert await asyncio.to_thread(proc.wait, 60) == 128 + signal.SIGTERM  # as after any SIGTERM


async def test_logs_are_json_lines_with_the_request_id(demo: DemoServer, database_url: str, tmp_path: Path) -> None:
    with serving(demo, database_url, tmp_path, GATEWAY_LOG_FORMAT="json") as (proc, base):
        async with client(base, proc) as c:
            resp = await c.post("/graphql", json={"query": NAMED}, headers={"X-Request-Id": "trace-me-42"})
            assert resp.status_code == 200
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    lines = [orjson.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines)
    ours = [line for line in lines if line["event"] == "graphql.operation" and line.get("request_id") == "trace-me-42"]
    assert len(ours) == 1
    assert ours[0]["operation_name"] == "FrontPage" and ours[0]["outcome"] == "ok"
    assert set(ours[0]["sources"]) >= {"bbc", "tech-wire"} and ours[0]["duration_ms"] >= 0
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's records too
    assert not any(line["logger"] == "uvicorn.access" for line in lines)  # access lines stay opt-in


async def test_traces_follow_the_graphql_conventions(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    demo.control.set_fault("feeds.rss:tech", fault="503")
    bbc = {"id": "bbc", "name": "BBC", "kind": "newsapi", "url": "{demo}/newsapi/v2/top-headlines?sources=bbc-news"}
    settings = make_settings(sources_of(demo.url, bbc, TECH))
    async with RunningGateway(create_app(settings, tracer_provider=provider)) as gw:
        await gw.data(NAMED)
        await gw.services.source_service.settle(timeout_s=5)
    spans = exporter.get_finished_spans()
    (operation,) = [s for s in spans if s.name == "query FrontPage"]
    assert operation.attributes["graphql.operation.type"] == "query"
    assert operation.attributes["graphql.operation.name"] == "FrontPage"
    fetches = {s.attributes["gateway.source.id"]: s for s in spans if s.name == "source fetch"}
    assert set(fetches) == {"bbc", "tech"}
    assert all(f.parent is not None and f.parent.span_id == operation.context.span_id for f in fetches.values())
    assert fetches["bbc"].attributes["gateway.source.status"] == "FRESH"
    assert fetches["tech"].attributes["gateway.source.error"] == "UPSTREAM_HTTP_ERROR"
    calls = [s for s in spans if s.name == "GET" and s.attributes["gateway.source.id"] == "tech"]
    assert calls and {c.attributes["http.response.status_code"] for c in calls} == {503}
    assert any(s.name == "postgresql" and s.attributes["db.system.name"] == "postgresql" for s in spans)
    assert all(s.context.trace_id == operation.context.trace_id for s in fetches.values())


async def test_operation_log_metrics_and_statistics_can_each_be_turned_off(
    demo: DemoServer, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="gateway.request")
    off = make_settings(sources_of(demo.url, TECH), operation_log=False, metrics=False, stats_queue_max=0)
    async with RunningGateway(create_app(off)) as gw:
        await gw.data(NAMED)
        assert demo.control.count("feeds.rss") == 1
        assert (await gw.client.get("/metrics")).status_code == 404
        assert gw.services.metrics is None and gw.services.stats is None
        stats = await gw.data("{ health { sources { fetchStats { calls } } } }")
        assert stats["health"]["sources"] == [{"fetchStats": {"calls": 0}}]  # the call was not recorded
    assert [r for r in caplog.records if r.getMessage() == "graphql.operation"] == []
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH)))) as gw:
        await gw.data(NAMED)
        assert (await gw.client.get("/metrics")).status_code == 200
    logged = [r for r in caplog.records if r.getMessage() == "graphql.operation"]
    assert len(logged) == 1 and logged[0].request_id


async def test_the_operation_line_names_the_codes_the_client_got(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="gateway.request")
    result = await gateway.query("{ sources { ...Missing } }")
    assert result["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    (line,) = [r for r in caplog.records if r.getMessage() == "graphql.operation"]
    assert line.errors == ["GRAPHQL_VALIDATION_FAILED"] and line.outcome == "error"  # was [None]


@contextmanager
def process_logging() -> Iterator[None]:
    """Leave the process's logging as it was: configure() replaces the root logger's
    handlers and structlog's defaults for the whole process."""
    import structlog

    from gateway.ops import logging as gateway_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).handlers[:] for n in gateway_logging.THIRD_PARTY})
    try:
        yield
    finally:
        gateway_logging.shutdown()
        root.handlers, root.level = saved[0], saved[1]
        for name, handlers in saved[2].items():
            logging.getLogger(name).handlers = handlers
        structlog.reset_defaults()


def test_log_lines_are_written_by_the_writer_thread_with_their_own_time() -> None:
    """Each line carries the time it was logged, not the (later) time its batch was
    written; shutdown writes what is pending; our records and foreign ones alike."""
    import io
    from datetime import datetime, timezone

    from gateway.ops import logging as gateway_logging
    from gateway.ops.operations import log_operation

    stream = io.StringIO()
    with process_logging():
        gateway_logging.configure("json", "info", stream=stream)
        logging.getLogger("gateway.test").info("plain %s", "line")
        log_operation(request_id="r1", client="c", name="Op", op_type="query", outcome="ok", duration_ms=1.0,
                      sources={"s": "CACHED"}, errors=None, cache_hit=True)
        logged_at = datetime.now(timezone.utc)
        gateway_logging.shutdown()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["plain line", "graphql.operation"]
    assert lines[1]["request_id"] == "r1" and lines[1]["sources"] == {"s": "CACHED"} and lines[1]["cache_hit"]
    assert all(datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")) <= logged_at for line in lines)


def test_the_direct_json_line_is_the_line_structlog_renders() -> None:
    """json_lines() skips structlog's processor chain for the per-request line: what it
    writes must stay what the chain writes (keys, their order, values, time format)."""
    import io
    import re

    from gateway.ops import logging as gateway_logging

    stream = io.StringIO()
    fields = {"request_id": "r1", "client": None, "operation_name": "Op", "operation_type": "query", "outcome": "ok",
              "duration_ms": 1.25, "sources": {"s": "CACHED"}, "errors": ["X"], "cache_hit": True}
    with process_logging():
        gateway_logging.configure("json", "info", stream=stream)
        write = gateway_logging.json_lines("gateway.request")
        assert write is not None and gateway_logging.json_lines("gateway.request") is write
        write("graphql.operation", dict(fields))
        gateway_logging.structured("gateway.request").info("graphql.operation", **fields)
        gateway_logging.shutdown()
        gateway_logging.configure("console", "info", stream=io.StringIO())
        assert gateway_logging.json_lines("gateway.request") is None  # console lines: structlog's path
    direct, chained = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert list(direct) == list(chained)
    assert {k: v for k, v in direct.items() if k != "timestamp"} == {k: v for k, v in chained.items() if k != "timestamp"}
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    assert stamp.match(direct["timestamp"]) and stamp.match(chained["timestamp"])
