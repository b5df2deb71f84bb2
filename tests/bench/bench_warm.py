"""The warm path, measured side by side with a bare Starlette app serving the same bytes.

Everything runs on 127.0.0.1 as separate processes:

* one demo upstream (``gateway demo-upstream``), sources from the bundled demo file with
  ``ttl_s = 3600`` (the cache stays warm for the whole run);
* ``gateway serve --workers 1`` (embedded Postgres in a temp dir), started twice: with the
  response cache on (the default) and with ``GATEWAY_RESPONSE_CACHE_TTL_MS=0``;
* a bare Starlette app under the same uvicorn settings, 1 worker, that answers each
  request (looked up by its body, or its query string for GET) with the bytes the gateway
  answered it before the run: the floor any server on this stack can reach;
* one load generator process per measurement (this module with ``--loadgen``): aiohttp,
  50 clients in closed loop over pre-opened keep-alive connections, the same driver
  and request list for the gateway and the bare app, back to back.

Traffic (gateway and bare app in interleaved rounds, the median round of each):

``identical``     one query, identical variables (POST).              target >= 80%
``vars20``        the same query with 20 variable sets (POST).        target >= 60%
``vars20-nocache`` the same, response cache off.                      target >= 20%
``apq-get20``     APQ over GET (hash only), 20 variable sets.         target >= 80%

Then memory: the gateway's RSS after 100,000 distinct documents (``--rss-queries``), at
most 150 MB above its RSS at the start of that run.

Usage: ``.venv/bin/python -m tests.bench.bench_warm [--quick] [--duration S]``.
Exit status 0 when every target passes, 1 otherwise. Numbers from a shared 2-core
machine are noisy; the ratio (same run, same driver) is what is judged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

CONCURRENCY = 50
DEFAULT_DURATION_S = 4.0
ROUNDS = 3
RSS_QUERIES = 100_000
RSS_LIMIT_MB = 150.0

QUERY = """query FrontPage($first: Int!) {
  articles(first: $first) {
    edges { cursor node { id title url author publishedAt score source { id name } } }
    pageInfo { hasNextPage endCursor }
    sources { source { id } status ageSeconds error { code } }
  }
}"""
TARGETS = {"identical": 0.80, "vars20": 0.60, "vars20-nocache": 0.20, "apq-get20": 0.80}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the load generator (a separate process) -------------------------------------


def _loadgen_main(spec_path: str) -> int:
    import uvloop

    return uvloop.run(_loadgen(json.loads(Path(spec_path).read_text())))


async def _loadgen(spec: dict[str, Any]) -> int:
    import aiohttp

    requests = [(r["method"], r["url"], base64.b64decode(r["body"])) for r in spec["requests"]]
    concurrency, duration = spec["concurrency"], spec["duration_s"]
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(
        connector=connector, headers={"Content-Type": "application/json", "Accept": "application/json"}
    ) as session:

        async def ping() -> None:
            async with session.get(spec["livez"]) as resp:
                await resp.read()

        await asyncio.gather(*(ping() for _ in range(concurrency)))
        gc.collect()
        gc.freeze()
        t_end = time.monotonic() + duration
        counter = 0

        async def client(offset: int) -> None:
            nonlocal errors, counter
            i = offset
            while time.monotonic() < t_end:
                method, url, body = requests[i % len(requests)]
                i += 1
                start = time.monotonic()
                try:
                    async with session.request(method, url, data=body or None) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                    await asyncio.sleep(0.01)
                latencies.append(time.monotonic() - start)

        t0 = time.monotonic()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        elapsed = time.monotonic() - t0
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else 0.0
    print(json.dumps({"count": len(latencies), "elapsed": elapsed, "p99_ms": p99 * 1000, "errors": errors}))
    return 0


# -- the bare Starlette app (a separate process) ------------------------------------


def _get_key(query_string: bytes) -> bytes:
    """The parameters of a GET, however the client quoted them (aiohttp requotes)."""
    from urllib.parse import parse_qsl

    return orjson.dumps(sorted(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)))


def _bare_main(port: int, answers_path: str) -> int:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    raw = json.loads(Path(answers_path).read_text())
    answers = {base64.b64decode(k): base64.b64decode(v) for k, v in raw.items()}

    async def graphql(request: Request) -> Response:
        key = _get_key(request.scope["query_string"]) if request.method == "GET" else await request.body()
        return Response(answers[key], media_type="application/json")

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/graphql", graphql, methods=["GET", "POST"]), Route("/livez", livez)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    return 0


# -- orchestration ----------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def _spawn(name: str, cmd: list[str], workdir: Path, env: dict[str, str]) -> Proc:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, cwd=Path.cwd(), start_new_session=True)
    return Proc(name, popen, log)


def _wait_http(url: str, proc: Proc, timeout_s: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready at {url}")


def _gateway_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("gateway")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway"]


def _worker_pid(proc: Proc) -> int:
    """uvicorn with one worker serves in the process itself; the embedded Postgres is
    a child of it. The gateway is the one listening process we started."""
    return proc.popen.pid


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def gateway(workdir: Path, sources: Path, label: str, **env_extra: str) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    # The limiter stays on (every request is charged) but one load generator's 50
    # clients must not run out of points: the run measures serving, not refusing.
    env.update(GATEWAY_SOURCES=str(sources), GATEWAY_DATA_DIR=str(workdir / f"data-{label}"),
               GATEWAY_RATE_LIMIT_BURST=str(10**9), GATEWAY_RATE_LIMIT_PER_S=str(10**8), **env_extra)
    proc = _spawn(f"gateway-{label}", [*_gateway_cmd(), "serve", "--port", str(port), "--log-level", "warning"],
                  workdir, env)
    try:
        _wait_http(f"http://127.0.0.1:{port}/livez", proc)
        gateway.proc = proc  # type: ignore[attr-defined]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@dataclass
class Req:
    method: str
    path_qs: str  # "/graphql" or "/graphql?..." for GET
    body: bytes

    def spec(self, base: str) -> dict[str, str]:
        return {"method": self.method, "url": base + self.path_qs, "body": base64.b64encode(self.body).decode()}

    def key(self) -> bytes:
        return _get_key(self.path_qs.partition("?")[2].encode()) if self.method == "GET" else self.body


def post(variables: dict[str, Any]) -> Req:
    return Req("POST", "/graphql", orjson.dumps({"query": QUERY, "variables": variables}))


def apq_get(variables: dict[str, Any]) -> Req:
    digest = hashlib.sha256(QUERY.encode()).hexdigest()
    ext = orjson.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}}).decode()
    qs = urlencode({"extensions": ext, "variables": orjson.dumps(variables).decode()})
    return Req("GET", "/graphql?" + qs, b"")


def load(workdir: Path, base: str, reqs: Sequence[Req], duration: float) -> dict[str, Any]:
    spec = {"requests": [r.spec(base) for r in reqs], "concurrency": CONCURRENCY, "duration_s": duration,
            "livez": base + "/livez"}
    path = workdir / "load.json"
    path.write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_warm", "--loadgen", str(path)],
                         capture_output=True, check=True, timeout=duration + 120)
    res = json.loads(out.stdout.decode().strip().splitlines()[-1])
    res["rps"] = res["count"] / res["elapsed"]
    return res


def capture(base: str, reqs: Sequence[Req]) -> dict[bytes, bytes]:
    import httpx

    answers = {}
    with httpx.Client(base_url=base, timeout=30, headers={"Accept": "application/json"}) as client:
        for r in reqs:
            resp = client.request(r.method, r.path_qs, content=r.body or None,
                                  headers={"Content-Type": "application/json"})
            if resp.status_code != 200 or b'"errors"' in resp.content:
                raise RuntimeError(f"gateway answered {resp.status_code}: {resp.text[:300]}")
            answers[r.key()] = resp.content
    return answers


def register_apq(base: str, variables: dict[str, Any]) -> None:
    import httpx

    digest = hashlib.sha256(QUERY.encode()).hexdigest()
    body = {"query": QUERY, "variables": variables,
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    resp = httpx.post(base + "/graphql", json=body, timeout=30)
    resp.raise_for_status()


@contextlib.contextmanager
def bare(workdir: Path, answers: dict[bytes, bytes]) -> Iterator[str]:
    port = _free_port()
    path = workdir / f"answers-{port}.json"
    path.write_text(json.dumps({base64.b64encode(k).decode(): base64.b64encode(v).decode()
                                for k, v in answers.items()}))
    proc = _spawn(f"bare-{port}", [sys.executable, "-m", "tests.bench.bench_warm", "--bare", str(port), str(path)],
                  workdir, dict(os.environ))
    try:
        _wait_http(f"http://127.0.0.1:{port}/livez", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def side_by_side(workdir: Path, name: str, base: str, reqs: Sequence[Req], duration: float,
                 rows: list[tuple[str, dict, dict]], rounds: int) -> None:
    """Gateway and bare app measured in interleaved rounds (ABBA...), both kept running,
    each side's median round reported: a machine busy with something else for a few
    seconds then skews both sides alike, not one."""
    answers = capture(base, reqs)  # warms every cache on the way
    with bare(workdir, answers) as bare_base:
        for target in (base, bare_base):  # warm-up: Python has caches to fill too
            load(workdir, target, reqs, min(2.0, duration / 4))
        runs: dict[str, list[dict[str, Any]]] = {"gw": [], "bare": []}
        for i in range(rounds):
            order = [("gw", base), ("bare", bare_base)]
            for side, target in order if i % 2 == 0 else order[::-1]:
                runs[side].append(load(workdir, target, reqs, duration))
    gw, ref = (_median_run(runs[side]) for side in ("gw", "bare"))
    rows.append((name, gw, ref))
    print(f"  {name:15s} gateway {gw['rps']:8.0f} req/s p99 {gw['p99_ms']:6.1f} ms  |  bare {ref['rps']:8.0f} req/s "
          f"p99 {ref['p99_ms']:6.1f} ms  |  {gw['rps'] / ref['rps']:5.0%}  (errors {gw['errors']}/{ref['errors']}; "
          f"median of {rounds} rounds: gateway {_rates(runs['gw'])}; bare {_rates(runs['bare'])})", flush=True)


def _rates(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['rps']:.0f}" for r in runs)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["rps"])
    median = dict(ordered[len(ordered) // 2])
    median["errors"] = sum(r["errors"] for r in runs)
    return median


def rss_run(workdir: Path, base: str, proc: Proc, count: int) -> tuple[float, float]:
    """RSS before and after ``count`` distinct documents (distinct operation names)."""
    import httpx

    pid = _worker_pid(proc)
    httpx.post(base + "/graphql", json={"query": "query Warm { sources { id name } }"}, timeout=30)
    start = _rss_mb(pid)
    spec_reqs = [
        Req("POST", "/graphql", orjson.dumps({"query": f"query Q{i} {{ articles(first: {1 + i % 20}) "
                                                       f"{{ nodes {{ id title }} sources {{ status }} }} }}"}))
        for i in range(count)
    ]
    # one pass over the list: every request a document never seen before
    spec = {"requests": [r.spec(base) for r in spec_reqs], "concurrency": CONCURRENCY, "duration_s": 0,
            "livez": base + "/livez", "once": True}
    path = workdir / "rss.json"
    path.write_text(json.dumps(spec))
    subprocess.run([sys.executable, "-m", "tests.bench.bench_warm", "--loadgen-once", str(path)],
                   check=True, timeout=1800)
    return start, _rss_mb(pid)


def _once_main(spec_path: str) -> int:
    import uvloop

    return uvloop.run(_once(json.loads(Path(spec_path).read_text())))


async def _once(spec: dict[str, Any]) -> int:
    import aiohttp

    requests = [(r["url"], base64.b64decode(r["body"])) for r in spec["requests"]]
    it = iter(requests)
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=spec["concurrency"]),
                                     headers={"Content-Type": "application/json"}) as session:

        async def client() -> None:
            nonlocal errors
            for url, body in it:
                async with session.post(url, data=body) as resp:
                    await resp.read()
                    errors += resp.status != 200

        await asyncio.gather(*(client() for _ in range(spec["concurrency"])))
    print(json.dumps({"errors": errors}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_warm")
    p.add_argument("--quick", action="store_true", help="short runs, 10,000 distinct queries for memory")
    p.add_argument("--duration", type=float, default=None, help="seconds per round")
    p.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds per side (default {ROUNDS})")
    p.add_argument("--rss-queries", type=int, default=None, help="0 skips the memory run")
    p.add_argument("--only", default="", help="comma-separated traffic names to measure (default: all)")
    p.add_argument("--loadgen")
    p.add_argument("--loadgen-once")
    p.add_argument("--bare", nargs=2)
    args = p.parse_args(argv)
    if args.loadgen:
        return _loadgen_main(args.loadgen)
    if args.loadgen_once:
        return _once_main(args.loadgen_once)
    if args.bare:
        return _bare_main(int(args.bare[0]), args.bare[1])

    duration = args.duration or (2.0 if args.quick else DEFAULT_DURATION_S)
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    rss_queries = args.rss_queries if args.rss_queries is not None else (10_000 if args.quick else RSS_QUERIES)
    only = set(filter(None, args.only.split(",")))

    def wanted(name: str) -> bool:
        return not only or name in only

    rows: list[tuple[str, dict, dict]] = []
    vars20 = [{"first": 5 + i} for i in range(20)]
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        workdir = Path(tmp)
        demo_port = _free_port()
        demo = _spawn("demo", [*_gateway_cmd(), "demo-upstream", "--port", str(demo_port)], workdir, dict(os.environ))
        try:
            _wait_http(f"http://127.0.0.1:{demo_port}/_demo/stats", demo)
            from gateway.settings import BUNDLED_DEMO_SOURCES

            data = tomllib.loads(Path(BUNDLED_DEMO_SOURCES).read_text())
            lines = []
            for raw in data["sources"]:
                raw["url"] = raw["url"].replace("127.0.0.1:9100", f"127.0.0.1:{demo_port}")
                raw["ttl_s"] = 3600
                raw.pop("api_key_env", None)
                lines.append("[[sources]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in raw.items()))
            sources = workdir / "sources.toml"
            sources.write_text("\n".join(lines))
            print(f"bench_warm: 1 worker, {CONCURRENCY} in flight, {rounds} interleaved round(s) of {duration:.0f} s per side",
                  flush=True)
            rss: tuple[float, float] | None = None
            with gateway(workdir, sources, "cached") as base:
                proc = gateway.proc  # type: ignore[attr-defined]
                if wanted("identical"):
                    side_by_side(workdir, "identical", base, [post({"first": 10})], duration, rows, rounds)
                if wanted("vars20"):
                    side_by_side(workdir, "vars20", base, [post(v) for v in vars20], duration, rows, rounds)
                if wanted("apq-get20"):
                    try:
                        register_apq(base, vars20[0])
                        side_by_side(workdir, "apq-get20", base, [apq_get(v) for v in vars20], duration, rows, rounds)
                    except RuntimeError as exc:
                        print(f"  apq-get20       not measured: {exc}", flush=True)
                        rows.append(("apq-get20", {"rps": 0.0, "p99_ms": 0.0, "errors": 1},
                                     {"rps": 1.0, "p99_ms": 0.0, "errors": 0}))
                if rss_queries:
                    rss = rss_run(workdir, base, proc, rss_queries)
            if wanted("vars20-nocache"):
                with gateway(workdir, sources, "nocache", GATEWAY_RESPONSE_CACHE_TTL_MS="0") as base:
                    side_by_side(workdir, "vars20-nocache", base, [post(v) for v in vars20], duration, rows, rounds)
        finally:
            demo.stop()
    ok = True
    print("\nsummary (gateway / bare Starlette, same run):")
    for name, gw, ref in rows:
        ratio = gw["rps"] / ref["rps"]
        target = TARGETS[name]
        verdict = "PASS" if ratio >= target and gw["errors"] == 0 and ref["errors"] == 0 else "FAIL"
        ok &= verdict == "PASS"
        print(f"  {name:15s} {ratio:5.0%} (target >= {target:.0%})  p99 {gw['p99_ms']:.1f} ms vs "
              f"{ref['p99_ms']:.1f} ms  {verdict}")
    if rss is not None:
        rss_start, rss_end = rss
        grown = rss_end - rss_start
        verdict = "PASS" if grown <= RSS_LIMIT_MB else "FAIL"
        ok &= verdict == "PASS"
        print(f"  RSS after {rss_queries:,} distinct queries: {rss_start:.0f} -> {rss_end:.0f} MB "
              f"(+{grown:.0f}, target <= +{RSS_LIMIT_MB:.0f})  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
