"""Command line: ``python -m tests.bench.resilience``."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import aiohttp
import orjson

import tests.bench.resilience as resilience
from tests.bench.resilience.config import (
    FULL,
    QUICK,
)
from tests.bench.resilience.loadgen import (
    _loadgen_main,
)
from tests.bench.resilience.measure import (
    FAIL,
    PASS,
    SKIP,
    RunResult,
)
from tests.bench.resilience.procs import (
    Demo,
    Postgres,
    Registry,
    StartError,
    sources_toml,
)
from tests.bench.resilience.scenarios import (
    SCENARIOS,
    Context,
)

# =============================================================================
# Main
# =============================================================================


def _print_run(res: RunResult) -> None:
    print(f"\n== {res.scenario}, workers={res.workers} ({res.elapsed_s:.0f} s) ==")
    for line in res.lines:
        print(f"  {line}")
    if res.error:
        print(f"  ERROR: {res.error}")
    for t in res.targets:
        print(f"  [{t.result}] {t.name:<48} {t.value}")
    sys.stdout.flush()


def _print_summary(results: list[RunResult]) -> int:
    print("\n== summary ==")
    print(f"  {'scenario':<10} {'workers':>7}  {'target':<50} {'value':<31} result")
    counts: Counter[str] = Counter()
    for res in results:
        if res.error:
            print(f"  {res.scenario:<10} {res.workers:>7}  {'(run failed)':<50} {'-':<31} FAIL")
            counts[FAIL] += 1
        for t in res.targets:
            print(f"  {res.scenario:<10} {res.workers:>7}  {t.name:<50} {t.value:<31} {t.result}")
            counts[t.result] += 1
    verdict = "FAIL" if counts[FAIL] else "PASS"
    print(f"  {counts[PASS]} pass, {counts[FAIL]} fail, {counts[SKIP]} skip: {verdict}")
    return 1 if counts[FAIL] else 0


def _csv(value: str, allowed: Iterable[str] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
    return items


def _workers(value: str) -> list[int]:
    try:
        out = [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,3, got {value!r}") from None
    if not out or any(w < 1 or w > 16 for w in out):
        raise argparse.ArgumentTypeError("worker counts must be between 1 and 16")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tests.bench.resilience", description=(resilience.__doc__ or "").split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (about 2 minutes in all)")
    p.add_argument("--workers", type=_workers, default=[1, 3], help="gateway worker counts (default 1,3)")
    p.add_argument("--scenario", type=lambda v: _csv(v, SCENARIOS), default=list(SCENARIOS),
                   help=f"which scenarios (default: {','.join(SCENARIOS)})")
    p.add_argument("--log-dir", type=Path, help="keep the processes' logs here (default: a temp dir, deleted)")
    p.add_argument("--dump", type=Path, help="write each run's raw data (per-request records, counter samples, "
                   "health polls) as JSON files into this directory")
    return p


async def _amain(args: argparse.Namespace, reg: Registry) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, main_task.cancel)

    started = time.monotonic()
    durations = QUICK if args.quick else FULL
    root = Path(tempfile.mkdtemp(prefix="bench-resilience-"))
    reg.temp_root = root
    logs = args.log_dir.resolve() if args.log_dir else root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"resilience: {'quick' if args.quick else 'full'} run; workers {args.workers}; "
          f"scenarios {', '.join(args.scenario)}")
    print(f"  python {platform.python_version()}, {os.cpu_count()} CPU(s), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; logs in {logs}")
    sys.stdout.flush()

    pg = Postgres(root / "pg")
    reg.postgres = pg
    await asyncio.to_thread(pg.start)
    results: list[RunResult] = []
    async with aiohttp.ClientSession() as control, aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True)
    ) as fresh:
        demo = Demo(reg, root, logs, control)
        await demo.start()
        sources_file = root / "sources.toml"
        sources_file.write_text(sources_toml(demo.url))
        ctx = Context(reg, args, durations, root, logs, pg, demo, control, fresh, sources_file)
        for workers in args.workers:
            for name in args.scenario:
                res = RunResult(name, workers)
                t = time.monotonic()
                try:
                    await SCENARIOS[name](ctx, res)
                except (StartError, RuntimeError, ValueError, OSError, aiohttp.ClientError, TimeoutError) as exc:
                    res.error = f"{type(exc).__name__}: {exc}"
                res.elapsed_s = time.monotonic() - t
                _print_run(res)
                results.append(res)
                if args.dump and res.raw:
                    args.dump.mkdir(parents=True, exist_ok=True)
                    (args.dump / f"{name}-w{workers}.json").write_bytes(orjson.dumps(
                        {"scenario": name, "workers": workers, "lines": res.lines,
                         "targets": [t.__dict__ for t in res.targets], **res.raw}))
                res.raw = {}
    code = _print_summary(results)
    print(f"  total {time.monotonic() - started:.0f} s; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--loadgen"] and len(argv) == 2:
        return _loadgen_main(argv[1])
    args = _parser().parse_args(argv)
    reg = Registry()
    code = 1
    try:
        code = asyncio.run(_amain(args, reg))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        code = 130
    except asyncio.CancelledError:
        print("\nterminated: stopping everything", file=sys.stderr)
        code = 143
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            reg.cleanup()
        finally:
            signal.signal(signal.SIGINT, previous)
    return code


if __name__ == "__main__":
    sys.exit(main())
