"""Sources file and environment parsing: every problem names file, source and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import BUNDLED_DEMO_SOURCES, Settings, load_sources

GOOD = """
[[sources]]
id = "bbc"
name = "BBC News"
kind = "newsapi"
url = "https://newsapi.org/v2/top-headlines?sources=bbc-news"
api_key_env = "NEWSAPI_KEY"
timeout_ms = 2000
ttl_s = 120
critical = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text)
    return path


def test_issue_example_parses_and_reads_the_key_from_env(tmp_path: Path) -> None:
    (source,) = load_sources(write(tmp_path, GOOD), env={"NEWSAPI_KEY": "sekrit"})
    assert (source.id, source.kind, source.timeout_ms, source.ttl_s, source.critical) == (
        "bbc", "newsapi", 2000, 120, False)
    assert source.api_key == "sekrit"
    assert "sekrit" not in repr(source)


def test_bundled_demo_sources_are_valid() -> None:
    sources = load_sources(BUNDLED_DEMO_SOURCES, env={})
    assert {s.kind for s in sources} == {"newsapi", "feed", "hackernews"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("ttl_s = 120", 'ttl_s = "soon"'), "source 'bbc': key 'ttl_s' must be a int"),
        (GOOD.replace("ttl_s = 120", "ttl_s = -1"), "source 'bbc': key 'ttl_s' must be > 0"),
        (GOOD.replace('kind = "newsapi"', 'kind = "gopher"'), "source 'bbc': key 'kind' must be one of"),
        (GOOD.replace('url = "https', 'url = "ftp'), "source 'bbc': key 'url' must be an http(s) URL"),
        (GOOD.replace('name = "BBC News"\n', ""), "source 'bbc': missing required key 'name'"),
        (GOOD + "ttl = 5\n", "source 'bbc': unknown key(s) ['ttl']"),
        (GOOD + GOOD, "source 'bbc': key 'id': duplicate id 'bbc'"),
        (GOOD + "[sources.breaker]\nrecovery_s = 0\n", "source 'bbc': [breaker]: key 'recovery_s' must be > 0"),
        (GOOD.replace("critical = false", "critical = 1"), "key 'critical' must be a bool"),
        ("[[sources]\nid=", "invalid TOML"),
        ("", "needs at least one [[sources]] table"),
    ],
)
def test_invalid_files_name_file_source_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_sources(path, env={})
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_sources(tmp_path / "nope.toml", env={})


def test_env_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_REQUEST_DEADLINE_MS must be an integer"):
        Settings.from_env({"GATEWAY_REQUEST_DEADLINE_MS": "fast"})


def test_serve_with_broken_sources_file_exits_cleanly(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("timeout_ms = 2000", "timeout_ms = 0"))
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--sources", str(path), "--port", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"gateway: error: sources file {path}: source 'bbc': key 'timeout_ms' must be > 0" in proc.stderr


def test_check_sources_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check-sources", str(write(tmp_path, GOOD))],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 source(s): bbc" in proc.stdout


def test_the_env_example_lists_every_variable_with_its_default() -> None:
    import re

    from gateway.settings import ENV_VARS

    example = Path(__file__).resolve().parent.parent / "deploy" / "gateway.env.example"
    listed = dict(re.findall(r"^#? ?(GATEWAY_[A-Z0-9_]+)=(.*)$", example.read_text(), re.M))
    known = {var.name: var for var in ENV_VARS}
    assert set(listed) == {*known, "GATEWAY_SOURCES"}
    for name, value in listed.items():
        var = known.get(name)
        if var is not None and var.default is not None:  # None: the line shows an example instead
            default = str(var.default).lower() if isinstance(var.default, bool) else str(var.default)
            assert value == default, f"{name}: the example says {value}, the default is {var.default}"
            assert Settings.from_env({name: value}) == Settings.from_env({})  # and it parses as the default
