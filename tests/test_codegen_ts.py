"""The TypeScript example, proven as documented: GraphQL Code Generator's client preset
generates typed documents and the sha256 persisted-documents manifest from
schema.graphql and examples/operations; the manifest goes in with ``gateway persisted
add``; the example client (examples/typescript-client/src), compiled with tsc, runs
against a live gateway in persisted-only mode.

Installed with ``npm ci`` from the example's package-lock.json into a copy of the
examples (the repository stays clean); skipped, saying why, only where node or npm is
missing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.helpers import RunningGateway

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "typescript-client"


async def _run(cwd: Path, *cmd: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed: {(out + err).decode()[-3000:]}"
    return out.decode()


async def test_typescript_client_runs_in_persisted_only_mode(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"the TypeScript example needs node and npm on PATH (node: {node}, npm: {npm})")
    # The layout codegen.ts expects: ../../schema.graphql and ../operations.
    shutil.copy(ROOT / "schema.graphql", tmp_path / "schema.graphql")
    shutil.copytree(ROOT / "examples" / "operations", tmp_path / "examples" / "operations")
    work = tmp_path / "examples" / "typescript-client"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("node_modules", "dist", "gql"))
    await _run(work, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
    await _run(work, npm, "run", "codegen")
    await _run(work, npm, "run", "build")

    manifest_path = work / "src" / "gql" / "persisted-documents.json"
    manifest = json.loads(manifest_path.read_text())
    operations = list((ROOT / "examples" / "operations").glob("*.graphql"))
    assert len(manifest) == len(operations)
    assert all(hashlib.sha256(text.encode()).hexdigest() == digest for digest, text in manifest.items())
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url}
    out = await _run(ROOT, sys.executable, "-m", "gateway", "persisted", "add", str(manifest_path), env=env)
    assert f"{len(manifest)} added" in out

    async with RunningGateway(create_app(make_settings(persisted_only=True))) as gw:
        printed = await _run(work, node, "dist/main.js", f"{gw.url}/graphql", timeout_s=60)
        result = json.loads(printed.strip().splitlines()[-1])
        assert len(result["titles"]) == 3 and all(result["titles"])
        [(source_id, status)] = result["sources"]
        assert source_id == "tech-wire" and status in ("FRESH", "CACHED")
        plain = await gw.post("{ sources { id } }")  # not a trusted document
        assert plain.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"
