"""Samplers, CPU accounting, and the results: targets, percentiles and tables."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.bench.resilience.config import (
    SOURCE_IDS,
    SOURCES,
    STATS_SAMPLE_S,
)
from tests.bench.resilience.loadgen import (
    LoadGen,
)
from tests.bench.resilience.procs import (
    Demo,
    Gateway,
    _group_members,
    graphql,
)

# =============================================================================
# Samplers (orchestrator side)
# =============================================================================


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


async def sample_stats(demo: Demo, t0: float, count: int) -> list[tuple[float, dict[str, int] | None]]:
    """The demo's counters at t0 + 1 s, + 2 s, ... (``count`` samples; None when a read failed)."""
    out: list[tuple[float, dict[str, int] | None]] = []
    for k in range(1, count + 1):
        await sleep_until(t0 + k * STATS_SAMPLE_S)
        t = time.monotonic()
        try:
            out.append((t - t0, (await demo.stats())["requests"]))
        except Exception:  # noqa: BLE001 - a missed sample is recorded as None
            out.append((t - t0, None))
    return out


@dataclass(frozen=True, slots=True)
class Poll:
    sent: float  # seconds from t0
    received: float
    doc: dict[str, Any] | None  # None: the poll itself failed (HTTP error, timeout)
    error: str | None = None


async def poll_graphql(ctx: Context, gw: Gateway, query: str, t0: float, until: float, interval: float,
                       timeout_s: float) -> list[Poll]:
    """Poll on fresh connections (so with several workers every one of them answers some)."""
    out: list[Poll] = []
    next_at = time.monotonic()
    for _ in range(int((until - next_at) / interval) + 2):
        if time.monotonic() >= until:
            break
        await sleep_until(next_at)
        sent = time.monotonic()
        try:
            doc: dict[str, Any] | None = await graphql(ctx.fresh, gw, query, timeout_s=timeout_s)
            error = None
        except Exception as exc:  # noqa: BLE001 - a failed poll is data
            doc, error = None, f"{type(exc).__name__}: {exc}"[:200]
        out.append(Poll(sent - t0, time.monotonic() - t0, doc, error))
        next_at = max(sent + interval, time.monotonic())
    return out

if TYPE_CHECKING:
    from tests.bench.resilience.scenarios import Context



# =============================================================================
# CPU accounting: who used the two cores while the load ran
# =============================================================================


@dataclass
class CpuSnapshot:
    t: float
    busy_s: float  # machine-wide, all CPUs
    steal_s: float  # taken by the hypervisor from this VM
    procs: dict[int, tuple[str, float]]  # pid -> (label, CPU seconds so far)


def _cpu_snapshot(labels: dict[int, str]) -> CpuSnapshot:
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    procs = {}
    for pid, label in labels.items():
        with contextlib.suppress(psutil.Error):
            c = psutil.Process(pid).cpu_times()
            procs[pid] = (label, c.user + c.system)
    return CpuSnapshot(time.monotonic(), busy, getattr(t, "steal", 0.0), procs)


def _our_processes(ctx: Context, gw: Gateway, lg: LoadGen | None) -> dict[int, str]:
    """pid -> role, for everything of ours that burns CPU during a run."""
    import psutil

    out = {os.getpid(): "bench"}
    for pid in _group_members(gw.proc.pid):
        out[pid] = "gateway"
    if ctx.demo.proc is not None:
        for pid in _group_members(ctx.demo.proc.pid):
            out[pid] = "demo"
    if lg is not None and lg.proc is not None:
        out[lg.proc.pid] = "loadgen"
    marker = str(ctx.pg.pgdata)
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "postgres" and (marker in " ".join(proc.info["cmdline"] or ()) or
                                                    _is_child_of_postmaster(proc, marker)):
                out[proc.pid] = "postgres"
    return out


def _is_child_of_postmaster(proc: Any, marker: str) -> bool:
    parent = proc.parent()
    return parent is not None and marker in " ".join(parent.cmdline() or ())


class CpuMeter:
    """Machine-wide busy CPU against what our processes used, over one load phase."""

    def __init__(self, ctx: Context, gw: Gateway, lg: LoadGen | None) -> None:
        self.ctx, self.gw, self.lg = ctx, gw, lg
        self.start: CpuSnapshot | None = None
        self.end: CpuSnapshot | None = None

    def begin(self) -> None:
        self.start = _cpu_snapshot(_our_processes(self.ctx, self.gw, self.lg))

    async def end_at(self, t: float) -> None:
        await sleep_until(t)
        # Processes born during the run (postgres backends after a restart) count in full.
        self.end = _cpu_snapshot(_our_processes(self.ctx, self.gw, self.lg))

    def report(self, res: RunResult) -> None:
        a, b = self.start, self.end
        if a is None or b is None or b.t <= a.t:
            return
        wall = b.t - a.t
        by_role: Counter[str] = Counter()
        for pid, (label, cpu) in b.procs.items():
            before = a.procs.get(pid)
            by_role[label] += cpu - (before[1] if before else 0.0)
        busy = b.busy_s - a.busy_s
        others = max(0.0, busy - sum(by_role.values()))
        cores = os.cpu_count() or 1
        res.line(f"CPU while loaded ({cores} cores, in cores busy): machine {busy / wall:.2f}; "
                 + ", ".join(f"{k} {v / wall:.2f}" for k, v in by_role.most_common())
                 + f"; other processes {others / wall:.2f}; hypervisor steal {(b.steal_s - a.steal_s) / wall:.2f}")


# =============================================================================
# Results and analysis
# =============================================================================

PASS = "PASS"
FAIL = "FAIL"
SKIP = "SKIP"


@dataclass
class Target:
    name: str
    value: str
    result: str


@dataclass
class RunResult:
    scenario: str
    workers: int
    lines: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)  # records, samples, polls: for --dump

    def line(self, text: str = "") -> None:
        self.lines.append(text)

    def check(self, name: str, value: str, ok: bool | None) -> None:
        self.targets.append(Target(name, value, SKIP if ok is None else PASS if ok else FAIL))


def pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latencies_ms(records: Iterable[list[Any]]) -> list[float]:
    return sorted(r[1] * 1000 for r in records if r[2] != 0)


def fmt_ms(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0f} ms"


def request_summary(res: RunResult, records: list[list[Any]], duration_s: float | None = None) -> tuple[int, int]:
    """Print counts, error kinds and latency; return (5xx, transport errors)."""
    n = len(records)
    n5xx = sum(1 for r in records if r[2] >= 500)
    transport = Counter(r[3] for r in records if r[2] == 0)
    other = Counter(r[2] for r in records if r[2] != 0 and r[2] != 200 and r[2] < 500)
    gql = Counter(r[4] for r in records if r[4])
    lat = latencies_ms(records)
    rate = f", {n / duration_s:.0f} req/s" if duration_s else ""
    res.line(f"requests {n}{rate}; 5xx {n5xx}; transport errors {sum(transport.values())}"
             + (f" {dict(transport)}" if transport else "")
             + (f"; other HTTP {dict(other)}" if other else "")
             + (f"; GraphQL errors {dict(gql)}" if gql else ""))
    res.line(f"latency min {fmt_ms(lat[0] if lat else math.nan)}  p50 {fmt_ms(pct(lat, 50))}  p90 {fmt_ms(pct(lat, 90))}  p99 {fmt_ms(pct(lat, 99))}  "
             f"max {fmt_ms(lat[-1] if lat else math.nan)}")
    return n5xx, sum(transport.values())


def status_by_source(records: Iterable[list[Any]]) -> dict[str, Counter[str]]:
    """source id -> Counter of "STATUS" or "STATUS/ERROR_CODE"; "missing" when a
    response did not list the source at all."""
    out: dict[str, Counter[str]] = {sid: Counter() for sid in SOURCE_IDS}
    for r in records:
        seen = {}
        for sid, status, code, *_ in r[5] or ():
            seen[sid] = f"{status}/{code}" if code else str(status)
        for sid in SOURCE_IDS:
            out[sid][seen.get(sid, "missing")] += 1
    return out


def status_lines(res: RunResult, records: list[list[Any]]) -> None:
    res.line("per-source outcome (status/error code: share of responses)")
    for sid, counter in status_by_source(records).items():
        total = sum(counter.values()) or 1
        parts = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in counter.most_common(5))
        res.line(f"  {sid:<6} {parts}")


_LETTER = {"FRESH": "F", "CACHED": "C", "STALE": "S", "FAILED": "X", "TIMEOUT": "T", "SKIPPED": "K"}


def status_timeline(res: RunResult, records: list[list[Any]], duration_s: float) -> None:
    """Status shares per source over time (buckets by send time)."""
    bucket = 5.0 if duration_s >= 20 else 3.0
    n = max(1, math.ceil(duration_s / bucket))
    cells: dict[str, list[Counter[str]]] = {sid: [Counter() for _ in range(n)] for sid in SOURCE_IDS}
    for r in records:
        i = min(n - 1, max(0, int(r[0] // bucket)))
        seen = {sid: status for sid, status, *_ in (r[5] or ())}
        for sid in SOURCE_IDS:
            cells[sid][i][_LETTER.get(seen.get(sid, ""), "-")] += 1
    res.line(f"status over time (% per {bucket:.0f} s; F fresh C cached S stale X failed T timeout K skipped - missing)")
    res.line("  t(s)   " + "".join(f"{f'{i * bucket:.0f}-{(i + 1) * bucket:.0f}':<14}" for i in range(n)))
    for sid in SOURCE_IDS:
        row = []
        for c in cells[sid]:
            total = sum(c.values())
            row.append(" ".join(f"{k}{round(100 * v / total)}" for k, v in c.most_common(3)) if total else ".")
        res.line(f"  {sid:<6} " + "".join(f"{cell:<14}" for cell in row))


def route_counts(sample: dict[str, int] | None, key: str) -> int | None:
    return None if sample is None else int(sample.get(key, 0))


def window_table(res: RunResult, samples: list[tuple[float, dict[str, int] | None]], window_s: int) -> list[int]:
    """Upstream calls per source per ``window_s`` from the 1 s samples (sample 0 is the
    baseline at t0). Returns the per-window totals (complete or partial windows)."""
    res.line(f"upstream calls per {window_s} s window (demo counters, sampled every second)")
    res.line("  window     " + "".join(f"{s.id:>7}" for s in SOURCES) + "   total")
    last = len(samples) - 1
    totals: list[int] = []
    for start in range(0, last, window_s):
        end = min(start + window_s, last)
        a, b = samples[start][1], samples[end][1]
        if a is None or b is None:
            res.line(f"  {start:>3}-{end:<3} s  (a counter sample is missing)")
            continue
        per = [route_counts(b, s.route) - route_counts(a, s.route) for s in SOURCES]  # type: ignore[operator]
        totals.append(sum(per))
        partial = " (partial)" if end - start < window_s else ""
        res.line(f"  {start:>3}-{end:<3} s  " + "".join(f"{v:>7}" for v in per) + f"{sum(per):>8}{partial}")
    return totals
