"""Persisted documents: APQ over POST and GET, trusted documents from manifests
(`gateway persisted add`), sharing across replicas, bounds, persisted-only mode."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import create_app
from gateway.errors import ConfigError
from gateway.persisted import APOLLO_MANIFEST_FORMAT, parse_manifest
from gateway.settings import Settings
from tests.conftest import sources_of
from tests.helpers import RunningGateway

ONE_SOURCE = ({"id": "bbc", "name": "BBC News", "kind": "newsapi",
               "url": "{demo}/newsapi/v2/top-headlines?sources=bbc-news"},)
QUERY = "query Top($first: Int!) { articles(first: $first) { nodes { title } } }"
HASH = hashlib.sha256(QUERY.encode()).hexdigest()


def apq(hash_: str = HASH, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": hash_}}


@pytest.fixture
def settings(demo, make_settings: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: ANN001
    return lambda **kw: make_settings(sources_of(demo.url, *ONE_SOURCE), **kw)


def _code(resp) -> str:  # noqa: ANN001
    return resp.json()["errors"][0]["extensions"]["code"]


async def test_apq_over_post(settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(settings())) as gw:
        miss = await gw.client.post("/graphql", json={"variables": {"first": 2}, "extensions": apq()})
        assert miss.status_code == 200 and _code(miss) == "PERSISTED_QUERY_NOT_FOUND"
        assert miss.json()["errors"][0]["message"] == "PersistedQueryNotFound"
        registered = await gw.client.post("/graphql", json={"query": QUERY, "variables": {"first": 2},
                                                            "extensions": apq()})
        assert len(registered.json()["data"]["articles"]["nodes"]) == 2
        hit = await gw.client.post("/graphql", json={"variables": {"first": 3}, "extensions": apq()})
        assert len(hit.json()["data"]["articles"]["nodes"]) == 3
        assert gw.app.state.persisted.registered == 1


async def test_apq_over_get_is_shared_by_replicas(settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(settings())) as a, RunningGateway(create_app(settings())) as b:
        params = {"variables": json.dumps({"first": 2}), "extensions": json.dumps(apq())}
        miss = await b.client.get("/graphql", params=params)
        assert _code(miss) == "PERSISTED_QUERY_NOT_FOUND"
        await a.client.get("/graphql", params={**params, "query": QUERY})  # registered through replica A
        hit = await b.client.get("/graphql", params=params)
        assert hit.status_code == 200 and len(hit.json()["data"]["articles"]["nodes"]) == 2
        assert b.app.state.persisted.lookups >= 1


async def test_apq_errors(settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(settings())) as gw:
        wrong = await gw.client.post("/graphql", json={"query": QUERY + " ", "extensions": apq()})
        assert wrong.status_code == 400 and _code(wrong) == "PERSISTED_QUERY_HASH_MISMATCH"
        for bad in (apq(version=2), apq(hash_="abc"), {"persistedQuery": "x"}):
            resp = await gw.client.post("/graphql", json={"query": QUERY, "extensions": bad})
            assert resp.status_code == 400 and _code(resp) == "BAD_REQUEST", bad
        bad_json = await gw.client.get("/graphql", params={"extensions": "{nope"})
        assert bad_json.status_code == 400 and _code(bad_json) == "BAD_REQUEST"
        bad_id = await gw.client.post("/graphql", json={"documentId": "md5:1"})
        assert _code(bad_id) == "BAD_REQUEST"


async def test_registrations_are_bounded(settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(settings(persisted_max=1))) as gw:
        for text in (QUERY, QUERY.replace("title", "url")):
            digest = hashlib.sha256(text.encode()).hexdigest()
            resp = await gw.client.post("/graphql", json={"query": text, "variables": {"first": 1},
                                                          "extensions": apq(digest)})
            assert "errors" not in resp.json()  # answered either way
        assert gw.app.state.persisted.registered == 1


def test_manifest_formats() -> None:
    codegen = {HASH: QUERY}
    apollo = {"format": APOLLO_MANIFEST_FORMAT, "version": 1,
              "operations": [{"id": HASH, "name": "Top", "type": "query", "body": QUERY}]}
    assert [d.id for d in parse_manifest(codegen, origin="c")] == [f"sha256:{HASH}"]
    assert [(d.id, d.name) for d in parse_manifest(apollo, origin="a")] == [(f"sha256:{HASH}", "Top")]
    with pytest.raises(ConfigError, match="does not match"):
        parse_manifest({HASH: QUERY + " "}, origin="x")
    with pytest.raises(ConfigError, match="sha1"):
        parse_manifest({"a" * 40: QUERY}, origin="x")
    with pytest.raises(ConfigError, match="not a GraphQL Code Generator"):
        parse_manifest([QUERY], origin="x")


def _cli(args: list[str], database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_DATA_DIR": str(tmp_path / "cli")}
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, env=env,
                          timeout=60)


async def test_trusted_documents_and_persisted_only_mode(
    settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "persisted-documents.json"
    manifest.write_bytes(orjson.dumps({HASH: QUERY}))
    done = _cli(["persisted", "add", str(manifest)], database_url, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 added" in done.stdout
    again = _cli(["persisted", "add", str(manifest)], database_url, tmp_path)
    assert "0 added, 1 already stored" in again.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("[1]")
    refused = _cli(["persisted", "add", str(broken)], database_url, tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr

    async with RunningGateway(create_app(settings(persisted_only=True))) as gw:
        ok = await gw.client.post("/graphql", json={"documentId": f"sha256:{HASH}", "variables": {"first": 2}})
        assert len(ok.json()["data"]["articles"]["nodes"]) == 2
        got = await gw.client.get("/graphql", params={"documentId": f"sha256:{HASH}",
                                                      "variables": json.dumps({"first": 1})})
        assert len(got.json()["data"]["articles"]["nodes"]) == 1
        by_apq = await gw.client.post("/graphql", json={"variables": {"first": 1}, "extensions": apq()})
        assert "errors" not in by_apq.json()  # a trusted document's hash works over APQ too
        plain = await gw.post("{ sources { id } }")
        assert plain.status_code == 400 and _code(plain) == "PERSISTED_QUERY_REQUIRED"
        plain_get = await gw.client.get("/graphql", params={"query": "{ sources { id } }"})
        assert _code(plain_get) == "PERSISTED_QUERY_REQUIRED"
        other = "{ sources { name } }"
        register = await gw.client.post("/graphql", json={
            "query": other, "extensions": apq(hashlib.sha256(other.encode()).hexdigest())})
        assert _code(register) == "PERSISTED_QUERY_REQUIRED"
        unknown = await gw.client.post("/graphql", json={"documentId": "sha256:" + "0" * 64})
        assert _code(unknown) == "PERSISTED_QUERY_NOT_FOUND"
        page = await gw.client.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200  # GraphiQL still loads
