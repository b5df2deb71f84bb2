"""The code's shape, checked: module size, the one-way source path, time only from
the clock, and no other library's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
MAX_MODULE_LINES = 600
#: What the pure adapters may import from the gateway itself.
SOURCES_MAY_IMPORT = ("gateway.errors", "gateway.settings", "gateway.sources")
#: Libraries that do I/O: adapters must not touch them.
IO_LIBRARIES = ("aiohttp", "asyncpg", "httpx", "socket", "asyncio", "urllib.request", "pgserver")
#: Where the system clocks may be read.
CLOCK_READERS = ("resilience/clock.py", "cli.py")


def modules(under: Path = GATEWAY) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "demo" not in p.relative_to(GATEWAY).parts)


def imported(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(GATEWAY)))
def test_no_module_is_over_the_limit(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_adapters_import_no_network_database_or_service_code() -> None:
    for path in modules(GATEWAY / "sources"):
        for name in imported(ast.parse(path.read_text())):
            if name.startswith("gateway"):
                assert name.startswith(SOURCES_MAY_IMPORT), f"{path.name} imports {name}"
            assert not name.startswith(IO_LIBRARIES), f"{path.name} imports {name}"


def test_time_comes_from_the_clock() -> None:
    for path in modules():
        rel = str(path.relative_to(GATEWAY))
        if rel in CLOCK_READERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "time":
                assert node.attr not in ("monotonic", "time", "perf_counter"), f"{rel} reads time.{node.attr}"


def test_no_private_names_of_other_libraries() -> None:
    for path in modules():
        tree = ast.parse(path.read_text())
        foreign: set[str] = set()  # names bound to other libraries' modules and objects
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and not node.module.startswith("gateway"):
                for alias in node.names:
                    assert not (alias.name.startswith("_") and not alias.name.startswith("__")), (
                        f"{path.name}: from {node.module} import {alias.name}"
                    )
                    foreign.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                foreign.update((a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith("gateway"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in foreign:
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                assert not private, f"{path.name}: {node.value.id}.{node.attr}"


def test_every_benchmark_module_imports() -> None:
    """`make bench` is not run by `make test`; its modules must at least still import
    what they use (a restructure once broke bench_feed_lag unnoticed)."""
    import importlib
    import pkgutil

    import tests.bench as bench

    names = [m.name for m in pkgutil.walk_packages(bench.__path__, prefix="tests.bench.")]
    assert "tests.bench.bench_feed_lag" in names
    for name in names:
        importlib.import_module(name)
