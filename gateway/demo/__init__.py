"""The offline demo upstream: bundled deterministic news served over real HTTP.

:mod:`gateway.demo.data` holds the data and its wire formats;
:mod:`gateway.demo.server` serves them (NewsAPI v2, RSS 2.0 / Atom / RSS 1.0 feeds,
the Hacker News v0 API) with per-route latency and fault knobs and request
counters. ``sources.toml`` next to this file points the gateway at it on port 9100.
"""

from __future__ import annotations

from gateway.demo.server import DemoControl, DemoServer, FaultKnobs, create_demo_app, run

__all__ = ["DemoControl", "DemoServer", "FaultKnobs", "create_demo_app", "run"]
