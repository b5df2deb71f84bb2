"""The GraphQL over HTTP spec's own server audit (``auditServer`` from the
``graphql-http`` npm package, pinned in tests/audit/package-lock.json) against a
real gateway: 0 warnings, 0 errors.

The package is installed with ``npm ci`` on first use; the test skips, saying why,
only where node or npm is missing."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import RunningGateway

AUDIT_DIR = Path(__file__).parent / "audit"


@pytest.fixture(scope="session")
def audit_package() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"GraphQL over HTTP audit needs node and npm on PATH (node: {node}, npm: {npm})")
    if not (AUDIT_DIR / "node_modules" / "graphql-http" / "package.json").exists():
        import subprocess

        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=AUDIT_DIR, capture_output=True, text=True, timeout=300, check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {AUDIT_DIR} failed: {done.stderr.strip()[-2000:]}")
    return AUDIT_DIR


async def test_graphql_over_http_audit_passes_without_warnings(
    audit_package: Path, gateway: RunningGateway
) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node", str(audit_package / "audit.mjs"), f"{gateway.url}/graphql",
        cwd=audit_package, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode()
    results = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert len(results) > 50, out.decode()
    failed = [r for r in results if r["status"] != "ok"]
    assert failed == [], "\n".join(f"{r['status']}: {r['name']}: {r['reason']}" for r in failed)
