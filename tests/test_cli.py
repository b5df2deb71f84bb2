"""The command line as an operator meets it: help with defaults, --version, a taken
port reported before anything says ready, Ctrl-C without a traceback, migrate and
cache purge, the worker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg

from gateway import __version__
from gateway.demo.server import DemoServer

GATEWAY = [sys.executable, "-m", "gateway"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=timeout, env=env)


def env_with(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def test_version_and_every_option_shows_its_default() -> None:
    assert run("--version").stdout.strip() == f"gateway {__version__}"
    for command in (["serve"], ["worker"], ["demo-upstream"], ["cache", "purge"]):
        out = run(*command, "--help").stdout
        options = [line for line in out.splitlines() if line.strip().startswith("--") and "--help" not in line]
        assert options, out
        text = " ".join(out.split())
        assert text.count("(default:") >= len(options), out


def test_a_taken_port_is_one_line_and_a_non_zero_exit_before_ready(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run("serve", "--port", str(port), env=env_with(GATEWAY_DATABASE_URL=database_url))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"gateway: error: cannot listen on 127.0.0.1:{port}: Address already in use"], proc.stderr
    assert "gateway ready" not in proc.stdout + proc.stderr


async def _wait_for_line(stream: asyncio.StreamReader, text: str, seen: list[str]) -> None:
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError(f"exited before {text!r}: {''.join(seen)}")
        seen.append(line)
        if text in line:
            return


async def test_ctrl_c_stops_serve_and_its_parser_process_without_a_traceback(
    database_url: str, demo: DemoServer
) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C does: the parser
    worker process gets it too (the demo sources have feeds, so it is started)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *GATEWAY, "serve", "--port", str(port), "--no-maintenance",
        env=env_with(GATEWAY_DATABASE_URL=database_url),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    seen: list[str] = []
    assert proc.stderr is not None
    try:
        await asyncio.wait_for(_wait_for_line(proc.stderr, "gateway ready", seen), 60)
        os.killpg(proc.pid, signal.SIGINT)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = "".join(seen) + rest.decode()
    assert "Traceback" not in output, output
    assert "KeyboardInterrupt" not in output, output
    assert proc.returncode == 0, output


async def test_migrate_then_cache_purge_of_one_source(database_url: str) -> None:
    env = env_with(GATEWAY_DATABASE_URL=database_url)
    first = await asyncio.to_thread(run, "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied migration(s) 0001, 0002") and "0203" in first.stdout
    again = await asyncio.to_thread(run, "migrate", env=env)
    assert again.stdout.strip() == "migrations: up to date"

    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO fetch_cache (source_id, request_key, payload, fetched_at) VALUES ($1, $2, '{}', now())",
            [("a", "latest"), ("a", "q=x"), ("b", "latest")],
        )
        purged = await asyncio.to_thread(run, "cache", "purge", "--source", "a", env=env)
        assert purged.stdout.strip() == "purged 2 cached answer(s) of source a", purged.stderr
        assert [r["source_id"] for r in await conn.fetch("SELECT source_id FROM fetch_cache")] == ["b"]
        everything = await asyncio.to_thread(run, "cache", "purge", env=env)
        assert everything.stdout.strip() == "purged 1 cached answer(s)"
    finally:
        await conn.close()


async def test_the_worker_runs_maintenance_until_told_to_stop(database_url: str, demo: DemoServer) -> None:
    sources = Path(__file__).resolve().parent.parent / "gateway" / "demo" / "sources.toml"
    proc = await asyncio.create_subprocess_exec(
        *GATEWAY, "worker", "--sources", str(sources),
        env=env_with(GATEWAY_DATABASE_URL=database_url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    seen: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    try:
        await asyncio.wait_for(_wait_for_line(proc.stdout, "gateway worker ready", seen), 60)
        await asyncio.wait_for(_wait_for_line(proc.stderr, "this process is the leader", seen), 30)
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, "".join(seen) + rest.decode()
    assert "Traceback" not in rest.decode()
