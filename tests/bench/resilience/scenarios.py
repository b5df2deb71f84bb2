"""The scenarios: stampede, sustained, faults, pgrestart."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.resilience.config import (
    ARTICLES_QUERY,
    BREAKER_QUIET_S,
    DATA_STATUSES,
    DEADLINE_MS,
    FAILURE_THRESHOLD,
    FAULTS_CLIENTS,
    FAULTS_P99_MS,
    FAULTS_PLAN,
    HALF_OPEN_MAX_CALLS,
    HANGING_IN_FAULTS,
    HANGING_MARGIN_MS,
    HEALTH_BREAKER_POLL_S,
    HEALTH_BREAKER_QUERY,
    HEALTH_DB_POLL_S,
    HEALTH_DB_QUERY,
    HEALTHY_IN_FAULTS,
    LOADGEN_HEADSTART_S,
    PG_CLIENTS,
    PG_RECOVERY_MAX_S,
    RECOVERY_S,
    SERIAL_QUERIES,
    SETTLE_S,
    SOURCE_IDS,
    SOURCE_TIMEOUT_MS,
    SOURCES,
    STAMPEDE_CLIENTS,
    STAMPEDE_IDEAL_RATIO,
    STAMPEDE_IDEAL_RATIO_WORKERS,
    STAMPEDE_MAX_UPSTREAM,
    STAMPEDE_P50_MS,
    STAMPEDE_P99_MS,
    SUSTAINED_CLIENTS,
    SUSTAINED_MAX_PER_WINDOW,
    SUSTAINED_WINDOW_S,
    TTL_S,
    UPSTREAM_LATENCY_MS,
    Durations,
)
from tests.bench.resilience.loadgen import (
    LoadGen,
)
from tests.bench.resilience.measure import (
    CpuMeter,
    Poll,
    RunResult,
    fmt_ms,
    latencies_ms,
    pct,
    poll_graphql,
    request_summary,
    route_counts,
    sample_stats,
    sleep_until,
    status_lines,
    status_timeline,
    window_table,
)
from tests.bench.resilience.procs import (
    Demo,
    Postgres,
    Registry,
    gateway_line,
    graphql,
    running_gateway,
    running_ideal_proxy,
)

# =============================================================================
# Scenarios
# =============================================================================


@dataclass
class Context:
    reg: Registry
    args: argparse.Namespace
    durations: Durations
    root: Path
    logs: Path
    pg: Postgres
    demo: Demo
    control: aiohttp.ClientSession  # keep-alive, for the demo's control endpoints
    fresh: aiohttp.ClientSession  # a new connection per request, for gateway polls
    sources_file: Path


async def _fresh_database(ctx: Context, scenario: str, workers: int) -> tuple[str, str]:
    name = f"bench_{scenario}_w{workers}_{uuid.uuid4().hex[:8]}"
    return name, await ctx.pg.create_database(name)


async def _prepare_demo(ctx: Context) -> None:
    await ctx.demo.reset()
    await ctx.demo.set_faults({"*": {"latency_ms": UPSTREAM_LATENCY_MS}})


async def scenario_stampede(ctx: Context, res: RunResult) -> None:
    name, url = await _fresh_database(ctx, "stampede", res.workers)
    async with running_gateway(ctx, res.workers, url, f"stampede-w{res.workers}") as gw:
        await _prepare_demo(ctx)
        lg = LoadGen(ctx, gw, mode="burst", concurrency=STAMPEDE_CLIENTS, duration_s=0, label="stampede")
        try:
            await lg.start()
            before = (await ctx.demo.stats())["total"]
            meter = CpuMeter(ctx, gw, lg)
            meter.begin()  # before GO: its snapshot takes CPU that the burst must not share
            await lg.go()
            load = await lg.finish()
            await meter.end_at(time.monotonic())
        finally:
            lg.stop()
        await asyncio.sleep(SETTLE_S)
        stats = await ctx.demo.stats()
        # For scale: what one query costs the gateway when nothing else is going on.
        serial = []
        for _ in range(SERIAL_QUERIES):
            t = time.monotonic()
            await graphql(ctx.control, gw, ARTICLES_QUERY, timeout_s=5)
            serial.append((time.monotonic() - t) * 1000)
        serial.sort()
    await ctx.pg.drop_database(name)
    # The same burst, same load generator, against the ideal one-fetch proxy.
    await _prepare_demo(ctx)
    async with running_ideal_proxy(ctx, res.workers, f"stampede-w{res.workers}") as ideal:
        ideal_lg = LoadGen(ctx, ideal, mode="burst", concurrency=STAMPEDE_CLIENTS, duration_s=0,
                           label="stampede-ideal")
        try:
            await ideal_lg.start()
            await ideal_lg.go()
            ideal_load = await ideal_lg.finish()
        finally:
            ideal_lg.stop()
    records = load.records
    calls = int(stats["total"]) - int(before)
    per = {s.id: int(stats["requests"].get(s.route, 0)) for s in SOURCES}
    res.line(f"{STAMPEDE_CLIENTS} identical queries at once, cold cache, upstream latency {UPSTREAM_LATENCY_MS} ms"
             + (f" (warm-up: {load.warm_errors} connection(s) failed)" if load.warm_errors else ""))
    n5xx, transport = request_summary(res, records)
    meter.report(res)
    gateway_line(res, gw)
    res.raw = {"records": records, "stats": stats, "serial_ms": serial}
    res.line(f"upstream calls {calls} ({', '.join(f'{k} {v}' for k, v in per.items())}); "
             f"demo counters {stats['requests']}")
    status_lines(res, records)
    res.line(f"for scale: {SERIAL_QUERIES} queries one after another on the warm cache: "
             f"p50 {pct(serial, 50):.1f} ms, max {serial[-1]:.1f} ms")
    lat = latencies_ms(records)
    res.check(f"upstream calls <= {STAMPEDE_MAX_UPSTREAM}", str(calls), calls <= STAMPEDE_MAX_UPSTREAM)
    res.check(f"p50 <= {STAMPEDE_P50_MS:.0f} ms", fmt_ms(pct(lat, 50)), pct(lat, 50) <= STAMPEDE_P50_MS)
    res.check(f"p99 <= {STAMPEDE_P99_MS:.0f} ms", fmt_ms(pct(lat, 99)), pct(lat, 99) <= STAMPEDE_P99_MS)
    res.check("no 5xx / transport errors", f"{n5xx} / {transport}", n5xx == 0 and transport == 0)
    ideal_lat = latencies_ms(ideal_load.records)
    ratio50 = pct(lat, 50) / pct(ideal_lat, 50)
    res.line(f"ideal one-fetch proxy, same burst: p50 {fmt_ms(pct(ideal_lat, 50))}, p99 {fmt_ms(pct(ideal_lat, 99))} "
             f"(gateway/ideal: p50 {ratio50:.3f}x, p99 {pct(lat, 99) / pct(ideal_lat, 99):.3f}x)")
    limit = STAMPEDE_IDEAL_RATIO.get(res.workers, STAMPEDE_IDEAL_RATIO_WORKERS)
    res.check(f"p50 <= {limit:.2f}x the ideal proxy's", f"{ratio50:.3f}x", ratio50 <= limit)


async def scenario_sustained(ctx: Context, res: RunResult) -> None:
    duration = ctx.durations.sustained_s
    name, url = await _fresh_database(ctx, "sustained", res.workers)
    async with running_gateway(ctx, res.workers, url, f"sustained-w{res.workers}") as gw:
        await _prepare_demo(ctx)
        lg = LoadGen(ctx, gw, mode="closed", concurrency=SUSTAINED_CLIENTS, duration_s=duration, label="sustained")
        try:
            await lg.start()
            baseline = (await ctx.demo.stats())["requests"]
            meter = CpuMeter(ctx, gw, lg)
            meter.begin()
            t0 = await lg.go()
            metering = asyncio.ensure_future(meter.end_at(t0 + duration))
            sampler = asyncio.ensure_future(sample_stats(ctx.demo, t0, math.ceil(duration)))
            load = await lg.finish()
            samples = [(0.0, baseline), *await sampler]
            await metering
        finally:
            lg.stop()
    await ctx.pg.drop_database(name)
    res.raw = {"records": load.records, "samples": samples}
    gateway_line(res, gw)
    res.line(f"{SUSTAINED_CLIENTS} clients in closed loop for {duration:.0f} s; ttl {TTL_S} s, "
             f"upstream latency {UPSTREAM_LATENCY_MS} ms")
    records = load.records
    n5xx, transport = request_summary(res, records, duration)
    meter.report(res)
    status_lines(res, records)
    totals = window_table(res, samples, SUSTAINED_WINDOW_S)
    worst = max(totals) if totals else None
    res.check(f"upstream calls per {SUSTAINED_WINDOW_S} s window <= {SUSTAINED_MAX_PER_WINDOW}",
              f"max {worst}" if worst is not None else "n/a",
              None if worst is None else worst <= SUSTAINED_MAX_PER_WINDOW)
    res.check("no 5xx / transport errors", f"{n5xx} / {transport}", n5xx == 0 and transport == 0)


def _opened_at_mono(value: str | None, wall_minus_mono: float) -> float | None:
    if not value:
        return None
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # the gateway's clock is UTC
    return at.timestamp() - wall_minus_mono


async def scenario_faults(ctx: Context, res: RunResult) -> None:
    duration = ctx.durations.faults_s
    name, url = await _fresh_database(ctx, "faults", res.workers)
    async with running_gateway(ctx, res.workers, url, f"faults-w{res.workers}") as gw:
        await _prepare_demo(ctx)
        warm = await graphql(ctx.fresh, gw, ARTICLES_QUERY, timeout_s=10)
        t_warm = time.monotonic()
        warm_status = {s["source"]["id"]: s["status"] for s in warm["data"]["articles"]["sources"]}
        by_id = {s.id: s for s in SOURCES}
        await ctx.demo.set_faults({by_id[sid].fault_key: entry for sid, (entry, _) in FAULTS_PLAN.items()})
        go_at = t_warm + TTL_S + 0.5  # the warm copies are past their TTL: every request needs the upstreams
        await sleep_until(go_at - LOADGEN_HEADSTART_S)
        lg = LoadGen(ctx, gw, mode="closed", concurrency=FAULTS_CLIENTS, duration_s=duration, label="faults")
        try:
            await lg.start()
            await sleep_until(go_at)
            baseline = (await ctx.demo.stats())["requests"]
            wall_minus_mono = time.time() - time.monotonic()
            meter = CpuMeter(ctx, gw, lg)
            meter.begin()
            t0 = await lg.go()
            metering = asyncio.ensure_future(meter.end_at(t0 + duration))
            sampler = asyncio.ensure_future(sample_stats(ctx.demo, t0, math.ceil(duration)))
            poller = asyncio.ensure_future(
                poll_graphql(ctx, gw, HEALTH_BREAKER_QUERY, t0, t0 + duration, HEALTH_BREAKER_POLL_S, 5.0))
            load = await lg.finish()
            samples = [(0.0, baseline), *await sampler]
            polls = await poller
            await metering
        finally:
            lg.stop()
    await ctx.pg.drop_database(name)

    records = load.records
    res.raw = {"records": records, "samples": samples, "polls": [[p.sent, p.received, p.doc, p.error] for p in polls]}
    gateway_line(res, gw)
    res.line(f"warm query: {warm_status}; then {', '.join(f'{sid}: {label}' for sid, (_, label) in FAULTS_PLAN.items())}; "
             f"load starts {TTL_S + 0.5:.1f} s after the warm query")
    res.line(f"{FAULTS_CLIENTS} clients in closed loop for {duration:.0f} s; deadline {DEADLINE_MS} ms, "
             f"source timeout {SOURCE_TIMEOUT_MS} ms, breaker {FAILURE_THRESHOLD} failures / "
             f"{RECOVERY_S} s recovery / {HALF_OPEN_MAX_CALLS} probe")
    n5xx, transport = request_summary(res, records, duration)
    meter.report(res)
    status_lines(res, records)
    status_timeline(res, records, duration)
    window_table(res, samples, TTL_S)

    healthy_ok = sum(
        1 for r in records
        if r[2] == 200 and any(sid == HEALTHY_IN_FAULTS and st in DATA_STATUSES for sid, st, *_ in (r[5] or ()))
    )
    all_listed = sum(1 for r in records if r[2] == 200 and {s[0] for s in (r[5] or ())} >= set(SOURCE_IDS))
    lat = latencies_ms(records)
    res.check("no 5xx / transport errors", f"{n5xx} / {transport}", n5xx == 0 and transport == 0)
    res.check(f"'{HEALTHY_IN_FAULTS}' has data in every response", f"{healthy_ok}/{len(records)}",
              healthy_ok == len(records) and len(records) > 0)
    res.check("every source listed in every response", f"{all_listed}/{len(records)}",
              all_listed == len(records) and len(records) > 0)
    res.check(f"p99 <= {FAULTS_P99_MS:.0f} ms", fmt_ms(pct(lat, 99)), pct(lat, 99) <= FAULTS_P99_MS)
    # The hanging source is the only slow one: no request may wait on it (on its own
    # refresh or a peer's) past its timeout plus a margin.
    bound = SOURCE_TIMEOUT_MS + HANGING_MARGIN_MS
    res.check(f"p99 <= source timeout + {HANGING_MARGIN_MS:.0f} ms", fmt_ms(pct(lat, 99)), pct(lat, 99) <= bound)
    waits = sorted(ms for r in records for sid, _, _, ms, *_ in (r[5] or ()) if sid == HANGING_IN_FAULTS and ms is not None)
    over = sum(1 for ms in waits if ms > bound)
    res.line(f"'{HANGING_IN_FAULTS}' latencyMs: p50 {fmt_ms(pct(waits, 50))}, p99 {fmt_ms(pct(waits, 99))}, "
             f"max {fmt_ms(waits[-1] if waits else 0)}; over {bound:.0f} ms: {over}")
    res.check(f"'{HANGING_IN_FAULTS}' waits over {bound:.0f} ms", f"{over}/{len(waits)}", bool(waits) and over == 0)

    # Breakers. Each poll reaches one worker (a fresh connection each time), so "every
    # worker's breaker is open" is read as: a breaker was seen OPEN, and for the last
    # BREAKER_QUIET_S of polls (dozens of them) none saw it CLOSED.
    poll_failures = sum(1 for p in polls if p.doc is None)
    last_poll = max((p.received for p in polls if p.doc is not None), default=0.0)
    res.line(f"breaker polls: {len(polls)} ({poll_failures} failed), every {HEALTH_BREAKER_POLL_S * 1000:.0f} ms")
    allowed = HALF_OPEN_MAX_CALLS * res.workers
    seconds = math.ceil(duration)
    for sid, (_, label) in FAULTS_PLAN.items():
        spec = by_id[sid]
        seen: list[tuple[float, str, float | None]] = []  # (poll answered, state, openedAt), s from t0
        for p in polls:
            for s in (((p.doc or {}).get("data") or {}).get("health") or {}).get("sources", ()):
                if s["source"]["id"] == sid:
                    at = _opened_at_mono(s["breaker"]["openedAt"], wall_minus_mono)
                    seen.append((p.received, s["breaker"]["state"], None if at is None else at - t0))
        timeline = [set() for _ in range(seconds)]
        for t, state, _ in seen:
            if 0 <= t < seconds:
                timeline[int(t)].add(state[0])  # C, O, H
        per_second = [
            (route_counts(b, spec.route) or 0) - (route_counts(a, spec.route) or 0)
            if a is not None and b is not None else None
            for (_, a), (_, b) in itertools.pairwise(samples)
        ]
        res.line(f"breaker {sid} ({label}): polls saw {dict(Counter(st for _, st, _ in seen))}")
        res.line("  per second, states seen (C closed O open H half-open): "
                 + " ".join("".join(sorted(x)) or "." for x in timeline))
        res.line("  per second, upstream calls:                            "
                 + " ".join("?" if c is None else str(c) for c in per_second))
        opens = [at for _, _, at in seen if at is not None]
        window_target = f"'{sid}' calls per {RECOVERY_S} s window once open <= {allowed}"
        if not opens:
            res.line("  never seen open")
            res.check(f"breaker '{sid}' opens", "never", False)
            res.check(window_target, "n/a (never open)", None)
            continue
        first = min(opens)
        last_closed = max((t for t, st, _ in seen if st == "CLOSED" and t > first), default=first)
        all_open = last_closed if last_poll - last_closed >= BREAKER_QUIET_S else None
        res.line(f"  first opened at {first:.1f} s (openedAt); "
                 + (f"open in every worker from {all_open:.1f} s" if all_open is not None
                    else f"some worker's breaker still CLOSED at {last_closed:.1f} s"))
        res.check(f"breaker '{sid}' opens", f"at {first:.1f} s", True)
        if all_open is None:
            res.check(window_target, "n/a (not open in every worker)", None)
            continue
        windows = []
        for k, (t_k, a) in enumerate(samples):
            if k + RECOVERY_S >= len(samples) or t_k < all_open:
                continue
            b = samples[k + RECOVERY_S][1]
            if a is not None and b is not None:
                windows.append(route_counts(b, spec.route) - route_counts(a, spec.route))  # type: ignore[operator]
        if windows:
            res.line(f"  calls per {RECOVERY_S} s window once all open: max {max(windows)} over {len(windows)} "
                     f"window(s) (allowed {allowed})")
            res.check(window_target, f"max {max(windows)}", max(windows) <= allowed)
        else:
            res.check(window_target, "n/a (run too short)", None)


async def scenario_pgrestart(ctx: Context, res: RunResult) -> None:
    d = ctx.durations
    duration = d.pg_before_s + d.pg_down_s + d.pg_after_s
    name, url = await _fresh_database(ctx, "pgrestart", res.workers)
    marks: dict[str, float] = {}
    restart_error: list[str] = []

    async def outage(t0: float) -> None:
        await sleep_until(t0 + d.pg_before_s)
        marks["stop"] = time.monotonic()
        try:
            await asyncio.to_thread(ctx.pg.stop_server)
            marks["stopped"] = time.monotonic()
            await sleep_until(marks["stopped"] + d.pg_down_s)
        finally:
            # Always bring it back, even when cancelled: later runs need it.
            if not ctx.pg.running():
                marks["start"] = time.monotonic()
                try:
                    await asyncio.shield(asyncio.to_thread(ctx.pg.start_server))
                except Exception as exc:  # noqa: BLE001 - reported; the run cannot be judged without it
                    restart_error.append(f"{type(exc).__name__}: {exc}")
                marks["back"] = time.monotonic()

    async with running_gateway(ctx, res.workers, url, f"pgrestart-w{res.workers}") as gw:
        await _prepare_demo(ctx)
        lg = LoadGen(ctx, gw, mode="closed", concurrency=PG_CLIENTS, duration_s=duration, label="pgrestart")
        try:
            await lg.start()
            meter = CpuMeter(ctx, gw, lg)
            meter.begin()
            t0 = await lg.go()
            metering = asyncio.ensure_future(meter.end_at(t0 + duration))
            outage_task = asyncio.ensure_future(outage(t0))
            poller = asyncio.ensure_future(
                poll_graphql(ctx, gw, HEALTH_DB_QUERY, t0, t0 + duration, HEALTH_DB_POLL_S, 1.5))
            try:
                load = await lg.finish()
                polls = await poller
                await metering
            finally:
                await outage_task
        finally:
            lg.stop()
    await ctx.pg.drop_database(name)
    if restart_error:
        raise RuntimeError(f"Postgres did not restart: {restart_error[0]}")
    if not {"stopped", "back"} <= set(marks):
        raise RuntimeError(f"the Postgres outage did not happen as planned (marks: {sorted(marks)})")

    rel = {k: v - t0 for k, v in marks.items()}
    records = load.records
    res.raw = {"records": records, "marks": rel, "polls": [[p.sent, p.received, p.doc, p.error] for p in polls]}
    gateway_line(res, gw)
    res.line(f"{PG_CLIENTS} clients in closed loop for {duration:.0f} s; Postgres stopped at {rel['stop']:.1f} s "
             f"(down at {rel['stopped']:.1f} s), restarted at {rel['start']:.1f} s, back at {rel['back']:.1f} s")
    n5xx, transport = request_summary(res, records, duration)
    meter.report(res)
    for phase, lo, hi in (("before", 0.0, rel["stop"]), ("outage", rel["stop"], rel["back"]),
                          ("after", rel["back"], math.inf)):
        part = [r for r in records if lo <= r[0] < hi]
        lat = latencies_ms(part)
        res.line(f"  {phase:<7} {len(part):>6} requests, 5xx {sum(1 for r in part if r[2] >= 500)}, "
                 f"transport errors {sum(1 for r in part if r[2] == 0)}, "
                 f"p50 {fmt_ms(pct(lat, 50))}, p99 {fmt_ms(pct(lat, 99))}")
    status_lines(res, records)

    def db_ok(p: Poll) -> bool | None:
        if p.doc is None:
            return None
        return bool((((p.doc.get("data") or {}).get("health") or {}).get("database") or {}).get("ok"))

    during = [p for p in polls if rel["stopped"] <= p.sent and p.received <= rel["start"]]
    after = [p for p in polls if p.sent >= rel["back"]]
    res.line(f"health polls: {len(polls)} ({sum(1 for p in polls if p.doc is None)} failed); while Postgres was "
             f"down {sum(1 for p in during if db_ok(p) is False)}/{len(during)} said database not ok")
    first_ok = next((p for p in after if db_ok(p)), None)
    last_bad = max((i for i, p in enumerate(after) if not db_ok(p)), default=None)
    stable = after[last_bad + 1] if last_bad is not None and last_bad + 1 < len(after) else (
        first_ok if last_bad is None else None)
    first_s = first_ok.received - rel["back"] if first_ok else None
    stable_s = stable.received - rel["back"] if stable else None
    res.line("database ok again after Postgres was back: first ok "
             + (f"{first_s:.2f} s" if first_s is not None else "never")
             + ", ok from then on " + (f"{stable_s:.2f} s" if stable_s is not None else "never")
             + f" ({len(after)} polls after)")
    if during and not any(db_ok(p) is False for p in during):
        res.line("warning: no health poll saw the database down: was Postgres really stopped?")
    res.check("no 5xx / transport errors", f"{n5xx} / {transport}", n5xx == 0 and transport == 0)
    res.check(f"database ok (and stays ok) within {PG_RECOVERY_MAX_S:.0f} s",
              f"{stable_s:.2f} s" if stable_s is not None else "never",
              stable_s is not None and stable_s <= PG_RECOVERY_MAX_S)


SCENARIOS: dict[str, Callable[[Context, RunResult], Any]] = {
    "stampede": scenario_stampede,
    "sustained": scenario_sustained,
    "faults": scenario_faults,
    "pgrestart": scenario_pgrestart,
}
