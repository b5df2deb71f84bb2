"""Processes of the benchmark: process groups, the embedded Postgres (restartable), the demo upstream and the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from tests.bench.resilience.config import (
    CONTROL_TIMEOUT_S,
    DEADLINE_MS,
    DEMO_STOP_GRACE_S,
    FAILURE_THRESHOLD,
    GATEWAY_STOP_GRACE_S,
    HALF_OPEN_MAX_CALLS,
    ORPHAN_WAIT_S,
    PG_CTL_TIMEOUT_S,
    READY_QUERY,
    RECOVERY_S,
    REPO_ROOT,
    SOURCE_IDS,
    SOURCE_TIMEOUT_MS,
    SOURCES,
    STARTUP_TIMEOUT_S,
    TTL_S,
)

# =============================================================================
# Processes: start them in their own process group, always stop the whole group
# =============================================================================


class StartError(Exception):
    """A process did not come up; the message carries the tail of its log."""


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PR_SET_PDEATHSIG = 1
try:
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl if platform.system() == "Linux" else None
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM us when the benchmark dies (even by SIGKILL)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _describe(pids: Iterable[int]) -> list[str]:
    import psutil

    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:100]}")
    return out


def stop_group(pgid: int, leader: subprocess.Popen[bytes] | None, grace_s: float) -> list[str]:
    """Stop process group ``pgid`` (its leader's pid) and everything in it.

    SIGINT goes to the leader alone, as an operator's ``kill -INT`` would, and it has
    ``grace_s`` to exit. Whatever of its group outlives it by ORPHAN_WAIT_S is noted
    (returned, as "pid cmdline") and the whole group gets SIGTERM, then SIGKILL."""

    def reap() -> bool:  # True once the leader is gone
        if leader is not None:
            return leader.poll() is not None
        return pgid not in _group_members(pgid)

    def wait(seconds: float, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done():
            time.sleep(0.05)

    outlived: list[str] = []
    if _group_members(pgid) or not reap():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pgid, signal.SIGINT)
        wait(grace_s, reap)
        if reap():
            wait(ORPHAN_WAIT_S, lambda: not _group_members(pgid))
            outlived = _describe(_group_members(pgid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        reap()
        if not _group_members(pgid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        wait(3.0, lambda: not _group_members(pgid))
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=1)
    left = _group_members(pgid)
    if left:
        print(f"  warning: processes {left} of group {pgid} survived SIGKILL", file=sys.stderr)
    return outlived


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in text.splitlines()[-lines:])


@dataclass
class Registry:
    """What must be stopped on the way out, whatever happens."""

    groups: dict[int, tuple[str, subprocess.Popen[bytes] | None, float]] = field(default_factory=dict)
    postgres: Postgres | None = None
    temp_root: Path | None = None

    def add(self, name: str, pgid: int, leader: subprocess.Popen[bytes] | None, grace_s: float) -> None:
        self.groups[pgid] = (name, leader, grace_s)

    def stop(self, pgid: int) -> list[str]:
        """Stop a group we started; returns the processes that outlived its leader."""
        entry = self.groups.pop(pgid, None)
        if entry is None:
            return []
        _name, leader, grace_s = entry
        return stop_group(pgid, leader, grace_s)

    def cleanup(self) -> None:
        for pgid in list(self.groups):
            self.stop(pgid)
        if self.postgres is not None:
            self.postgres.close()
            self.postgres = None
        if self.temp_root is not None:
            shutil.rmtree(self.temp_root, ignore_errors=True)
            self.temp_root = None


def _gateway_command() -> list[str]:
    exe = Path(sys.executable).with_name("gateway")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway"]


def _spawn(reg: Registry, name: str, cmd: list[str], log_path: Path, *, env: dict[str, str], cwd: Path,
           grace_s: float) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:  # truncate: readiness is read from this log
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=cwd,
            start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, no locks
        )
    reg.add(name, proc.pid, proc, grace_s)
    return proc

if TYPE_CHECKING:
    from tests.bench.resilience.measure import RunResult
    from tests.bench.resilience.scenarios import Context



# =============================================================================
# Postgres: one embedded server, restartable on the same socket
# =============================================================================


class Postgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.embedded: Any = None
        self.admin_url = ""
        self.socket_dir = ""
        # pgserver runs postgres as this system user when we are root.
        self.system_user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None

    @property
    def pgdata(self) -> Path:
        return self.embedded.pgdata  # type: ignore[no-any-return]

    def start(self) -> None:
        from gateway.store.embedded import EmbeddedPostgres

        self.embedded = EmbeddedPostgres(self.data_dir)
        self.admin_url = self.embedded.start_sync()
        _, _, query = self.admin_url.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if "host" not in params:
            raise RuntimeError(f"expected a unix-socket URL from pgserver, got {self.admin_url}")
        self.socket_dir = params["host"]

    def url_for(self, database: str) -> str:
        head, sep, query = self.admin_url.partition("?")
        return f"{head.rsplit('/', 1)[0]}/{database}{sep}{query}"

    async def create_database(self, name: str) -> str:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url_for(name)

    async def drop_database(self, name: str) -> None:
        import asyncpg

        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self.admin_url, timeout=5)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver import pg_ctl  # type: ignore[attr-defined]  # pgserver re-exports its commands

        pg_ctl(args, pgdata=self.pgdata, user=self.system_user, timeout=PG_CTL_TIMEOUT_S)

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def stop_server(self) -> None:
        """Fast shutdown (terminates sessions), waiting until it is down."""
        self._pg_ctl(["-w", "-t", "20", "stop", "-m", "fast"])

    def start_server(self) -> None:
        """Start again with the arguments pgserver uses, on the same socket directory, so
        every URL handed out keeps working."""
        self._pg_ctl(["-w", "-t", "20", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                      "-l", str(self.pgdata / "log"), "start"])

    def close(self) -> None:
        if self.embedded is None:
            return
        # pgserver remembers the postmaster it started; after a restart that one is gone
        # and its cleanup would leave the new one running. Stop it ourselves first.
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop_server()
        # pgserver logs an error when its own stop finds the server already stopped.
        pg_log = logging.getLogger("pgserver")
        level = pg_log.level
        pg_log.setLevel(logging.CRITICAL)
        try:
            with contextlib.suppress(Exception):
                self.embedded.stop_sync()
        finally:
            pg_log.setLevel(level)
        self._kill_leftovers()
        self.embedded = None

    def _kill_leftovers(self) -> None:
        import psutil

        marker = str(self.pgdata)
        for proc in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                if proc.info["name"] == "postgres" and marker in " ".join(proc.info["cmdline"] or ()):
                    proc.kill()
            except psutil.Error:
                continue


# =============================================================================
# Demo upstream and gateway
# =============================================================================


class Demo:
    def __init__(self, reg: Registry, root: Path, logs: Path, session: aiohttp.ClientSession) -> None:
        self.reg = reg
        self.root = root
        self.logs = logs
        self.session = session
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = _free_port()
        log = self.logs / "demo-upstream.log"
        self.proc = _spawn(self.reg, "demo-upstream", [*_gateway_command(), "demo-upstream", "--port", str(self.port)],
                           log, env=_clean_env(), cwd=self.root, grace_s=DEMO_STOP_GRACE_S)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"demo upstream exited with status {self.proc.returncode}:\n{_tail(log)}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self.stats()
                return
            await asyncio.sleep(0.1)
        raise StartError(f"demo upstream not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(log)}")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(method, self.url + path, data=data,
                                        timeout=aiohttp.ClientTimeout(total=CONTROL_TIMEOUT_S)) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"demo {method} {path}: HTTP {resp.status}: {payload[:200]!r}")
            return orjson.loads(payload)

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/_demo/stats")  # type: ignore[no-any-return]

    async def reset(self) -> None:
        await self._call("POST", "/_demo/reset")

    async def set_faults(self, entries: dict[str, Any]) -> None:
        await self._call("PUT", "/_demo/faults", entries)


def _clean_env(**extra: str) -> dict[str, str]:
    """Our environment without any GATEWAY_* an operator may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


#: ``BENCH_GATEWAY_ENV="GATEWAY_X=1,GATEWAY_Y=2"``: settings for the gateway under test
#: (to see what a feature costs), applied over the benchmark's own.
EXTRA_GATEWAY_ENV = "BENCH_GATEWAY_ENV"


def _extra_gateway_env() -> dict[str, str]:
    pairs = (p.split("=", 1) for p in os.environ.get(EXTRA_GATEWAY_ENV, "").split(",") if "=" in p)
    return {k.strip(): v.strip() for k, v in pairs}


def sources_toml(demo_url: str) -> str:
    out = []
    for s in SOURCES:
        out.append(
            f'[[sources]]\nid = "{s.id}"\nname = "{s.name}"\nkind = "{s.kind}"\nurl = "{demo_url}{s.path}"\n'
            f"timeout_ms = {SOURCE_TIMEOUT_MS}\nttl_s = {TTL_S}\ncritical = false\n\n"
            f"[sources.breaker]\nfailure_threshold = {FAILURE_THRESHOLD}\nrecovery_s = {RECOVERY_S}\n"
            f"half_open_max_calls = {HALF_OPEN_MAX_CALLS}\n"
        )
    return "\n".join(out)


@dataclass
class Gateway:
    port: int
    workers: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float = 0.0  # from spawn to ready
    stop_s: float = 0.0  # from the first signal to no process left
    outlived: list[str] = field(default_factory=list)  # processes left behind by the gateway

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql_url(self) -> str:
        return self.url + "/graphql"


@contextlib.asynccontextmanager
async def running_gateway(ctx: Context, workers: int, database_url: str, label: str) -> AsyncIterator[Gateway]:
    port = _free_port()
    log_path = ctx.logs / f"gateway-{label}.log"
    env = _clean_env(
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_SOURCES=str(ctx.sources_file),
        GATEWAY_REQUEST_DEADLINE_MS=str(DEADLINE_MS),
        GATEWAY_DATA_DIR=str(ctx.root / "gateway-data"),
        **_extra_gateway_env(),
    )
    cmd = [*_gateway_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--log-level", "info"]
    proc = _spawn(ctx.reg, f"gateway-{label}", cmd, log_path, env=env, cwd=ctx.root, grace_s=GATEWAY_STOP_GRACE_S)
    gw = Gateway(port, workers, proc, log_path)
    started = time.monotonic()
    try:
        await _wait_gateway_ready(ctx, gw)
        gw.ready_s = time.monotonic() - started
        yield gw
    finally:
        stopping = time.monotonic()
        gw.outlived = ctx.reg.stop(proc.pid)
        gw.stop_s = time.monotonic() - stopping


@contextlib.asynccontextmanager
async def running_ideal_proxy(ctx: Context, workers: int, label: str) -> AsyncIterator[Gateway]:
    """The ideal one-fetch proxy (tests/bench/resilience/ideal.py) under the same uvicorn
    settings as ``gateway serve``, fresh (nothing fetched yet)."""
    port = _free_port()
    log_path = ctx.logs / f"ideal-{label}.log"
    env = _clean_env(BENCH_IDEAL_UPSTREAMS=",".join(f"{s.id}={ctx.demo.url}{s.path}" for s in SOURCES))
    cmd = [sys.executable, "-m", "uvicorn", "tests.bench.resilience.ideal:app", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--no-proxy-headers", "--no-access-log",
           "--log-level", "info"]
    proc = _spawn(ctx.reg, f"ideal-{label}", cmd, log_path, env=env, cwd=REPO_ROOT, grace_s=GATEWAY_STOP_GRACE_S)
    proxy = Gateway(port, workers, proc, log_path)
    started = time.monotonic()
    try:
        deadline = started + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise StartError(f"ideal proxy exited with status {proc.returncode}:\n{_tail(log_path)}")
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            if text.count("Application startup complete") >= workers:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with ctx.fresh.get(proxy.url + "/livez", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            break
            if time.monotonic() > deadline:
                raise StartError(f"ideal proxy not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(log_path)}")
            await asyncio.sleep(0.1)
        proxy.ready_s = time.monotonic() - started
        yield proxy
    finally:
        stopping = time.monotonic()
        proxy.outlived = ctx.reg.stop(proc.pid)
        proxy.stop_s = time.monotonic() - stopping


def gateway_line(res: RunResult, gw: Gateway) -> None:
    res.line(f"gateway: {gw.workers} worker(s), ready in {gw.ready_s:.1f} s, stopped in {gw.stop_s:.1f} s")
    if gw.outlived:
        res.line(f"  after SIGINT the gateway exited but left {len(gw.outlived)} process(es) running "
                 f"{ORPHAN_WAIT_S:.0f} s later (then SIGTERMed):")
        for line in gw.outlived:
            res.line(f"    {line}")


async def _wait_gateway_ready(ctx: Context, gw: Gateway) -> None:
    """Every worker has logged "Application startup complete", /livez answers 200 and a
    GraphQL query lists our sources."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise StartError(f"gateway exited with status {gw.proc.returncode}:\n{_tail(gw.log_path)}")
        try:
            text = gw.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        if "Application startup failed" in text or "gateway failed to start" in text:
            raise StartError(f"gateway startup failed:\n{_tail(gw.log_path)}")
        if text.count("Application startup complete") >= gw.workers:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with ctx.fresh.get(gw.url + "/livez", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    live = resp.status == 200
                if live:
                    doc = await graphql(ctx.fresh, gw, READY_QUERY, timeout_s=5)
                    ids = [s["id"] for s in doc["data"]["sources"]]
                    if ids != list(SOURCE_IDS):
                        raise StartError(f"gateway serves sources {ids}, expected {list(SOURCE_IDS)}")
                    return
        await asyncio.sleep(0.1)
    raise StartError(f"gateway not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(gw.log_path)}")


async def graphql(session: aiohttp.ClientSession, gw: Gateway, query: str, *, timeout_s: float) -> dict[str, Any]:
    async with session.post(gw.graphql_url, data=orjson.dumps({"query": query}),
                            headers={"Content-Type": "application/json"},
                            timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}: {raw[:300]!r}")
        return orjson.loads(raw)  # type: ignore[no-any-return]
