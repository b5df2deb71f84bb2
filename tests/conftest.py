"""Shared fixtures: one real PostgreSQL per test session (embedded via pgserver, or
``GATEWAY_TEST_DATABASE_URL``), a fresh database per test, and the demo upstream on
a real socket."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.settings import Settings, SourceConfig, parse_sources
from gateway.store.db import Database
from tests.helpers import RunningGateway


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("GATEWAY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from gateway.store.embedded import EmbeddedPostgres

    # Not under pytest's tmp_path: pytest prunes old session dirs, and a second
    # pytest run on the machine would delete this server's data under its feet.
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-test-pg-"))
    embedded = EmbeddedPostgres(data_dir)
    try:
        yield embedded.start_sync()
    finally:
        embedded.stop_sync()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test."""
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(pg_admin_url, name)
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _with_database(url: str, name: str) -> str:
    # postgresql://user:pw@host:port/dbname?query  ->  replace dbname
    head, sep, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{query}"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The gateway's own pool on the test database, migrated, statements warm."""
    from gateway.store import HOT_STATEMENTS
    from gateway.store.migrate import migrate
    from tests.clock import FakeClock

    database = await Database.connect(
        database_url, min_size=1, max_size=2, connect_timeout_s=5, command_timeout_s=5, clock=FakeClock(),
        setup=migrate, warm=HOT_STATEMENTS,
    )
    yield database
    await database.close()


@pytest.fixture(scope="session")
def demo_server() -> Iterator[DemoServer]:
    with DemoServer() as server:
        yield server


@pytest.fixture
def demo(demo_server: DemoServer) -> Iterator[DemoServer]:
    """The demo upstream with counters and faults reset for this test."""
    demo_server.control.reset()
    yield demo_server
    demo_server.control.reset()


def demo_sources(demo_url: str, **overrides: Any) -> tuple[SourceConfig, ...]:
    """The bundled demo sources file, pointed at ``demo_url``; ``overrides`` maps a
    source id to extra keys (or None to drop it)."""
    import tomllib

    from gateway.settings import BUNDLED_DEMO_SOURCES

    data = tomllib.loads(Path(BUNDLED_DEMO_SOURCES).read_text())
    out = []
    for raw in data["sources"]:
        raw["url"] = raw["url"].replace("http://127.0.0.1:9100", demo_url)
        if raw["id"] in overrides:
            if overrides[raw["id"]] is None:
                continue
            raw.update(overrides[raw["id"]])
        out.append(raw)
    return parse_sources({"sources": out}, origin="demo", env={})


def sources_of(demo_url: str, *tables: dict[str, Any]) -> tuple[SourceConfig, ...]:
    rows = [{**t, "url": t["url"].replace("{demo}", demo_url)} for t in tables]
    return parse_sources({"sources": rows}, origin="test", env={})


@pytest.fixture
def make_settings(demo: DemoServer, database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(sources: tuple[SourceConfig, ...] | None = None, **kwargs: Any) -> Settings:
        # Maintenance rounds (leading, or sharing reads) would add their statements to
        # what tests count: one round at startup, then an hour's pause. The tests of
        # gateway/ops/maintenance.py turn it on and drive the rounds.
        kwargs.setdefault("maintenance", False)
        kwargs.setdefault("maintenance_interval_s", 3600.0)
        return Settings(
            sources=sources if sources is not None else demo_sources(demo.url),
            database_url=kwargs.pop("database_url", database_url),
            data_dir=tmp_path / "data",
            **kwargs,
        )

    return make


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[RunningGateway]:
    async with RunningGateway(create_app(make_settings())) as gw:
        yield gw
