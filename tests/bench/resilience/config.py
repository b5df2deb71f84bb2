"""What the resilience benchmark measures and its fixed parameters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# --- what is measured ------------------------------------------------------------

DEADLINE_MS = 3000
UPSTREAM_LATENCY_MS = 300
TTL_S = 10
SOURCE_TIMEOUT_MS = 1000  # a hang costs 1 s per call, so 5 failures open a breaker in ~5 s
FAILURE_THRESHOLD = 5
RECOVERY_S = 5
HALF_OPEN_MAX_CALLS = 1

STAMPEDE_CLIENTS = 100
STAMPEDE_MAX_UPSTREAM = 3
STAMPEDE_P50_MS = 330.0
STAMPEDE_P99_MS = 400.0
#: The cold burst's p50 against the ideal one-fetch proxy's in the same run (ideal.py).
STAMPEDE_IDEAL_RATIO = {1: 1.05}
STAMPEDE_IDEAL_RATIO_WORKERS = 1.08  # more than one worker
SUSTAINED_CLIENTS = 100
SUSTAINED_WINDOW_S = 10
# Two calls per source per TTL-long window: refresh-ahead (gateway/ops/maintenance.py)
# renews a hot key shortly before it expires, so one window can hold the call that
# filled the key and the one that renewed it (about 1.1 calls per TTL). Refreshes
# not shared across workers would still show: 3 per source per window with 3 workers.
SUSTAINED_MAX_PER_WINDOW = 6
FAULTS_CLIENTS = 200
FAULTS_P99_MS = DEADLINE_MS + 50.0
#: Requests whose only slow source hangs end within its timeout plus this (issue 8).
HANGING_MARGIN_MS = 100.0
PG_CLIENTS = 100
PG_RECOVERY_MAX_S = 2.0

HEALTH_DB_POLL_S = 0.1
HEALTH_BREAKER_POLL_S = 0.1
BREAKER_QUIET_S = 3.0  # no poll saw a CLOSED breaker for this long: all workers' are open
STATS_SAMPLE_S = 1.0


@dataclass(frozen=True, slots=True)
class Durations:
    sustained_s: float
    faults_s: float
    pg_before_s: float
    pg_down_s: float
    pg_after_s: float


FULL = Durations(sustained_s=30, faults_s=30, pg_before_s=5, pg_down_s=5, pg_after_s=10)
QUICK = Durations(sustained_s=12, faults_s=12, pg_before_s=3, pg_down_s=5, pg_after_s=6)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    id: str
    name: str
    kind: str
    path: str
    route: str  # the demo's route key: counts this source's calls (one source per route here)
    fault_key: str  # the demo's ``route:qualifier`` key, for installing faults on this source alone


SOURCES = (
    SourceSpec("bbc", "BBC News", "newsapi", "/newsapi/v2/top-headlines?sources=bbc-news",
               "newsapi.top-headlines", "newsapi.top-headlines:bbc-news"),
    SourceSpec("tech", "Demo Tech Wire", "feed", "/feeds/tech.rss", "feeds.rss", "feeds.rss:tech"),
    SourceSpec("world", "Demo World Report", "feed", "/feeds/world.atom", "feeds.atom", "feeds.atom:world"),
)
# Calls are counted per *route* (each source has a route of its own), not per
# ``route:qualifier``: a gateway that mangles a source's query string (say, drops
# ``sources=bbc-news``) still has its calls counted.
SOURCE_IDS = tuple(s.id for s in SOURCES)
HEALTHY_IN_FAULTS = "bbc"
HANGING_IN_FAULTS = "tech"
#: source id -> (fault entry, human label); keyed by the source's route key when installed.
FAULTS_PLAN = {
    "tech": ({"fault": "hang"}, "hang"),
    "world": ({"fault": "500", "latency_ms": UPSTREAM_LATENCY_MS}, "HTTP 500 after 300 ms"),
}
DATA_STATUSES = frozenset({"FRESH", "CACHED", "STALE"})

ARTICLES_QUERY = (
    "{ articles(first: 10) { nodes { title url } "
    "sources { source { id } status ageSeconds latencyMs error { code } } } }"
)
READY_QUERY = "{ sources { id } }"
HEALTH_DB_QUERY = "{ health { database { ok } } }"
HEALTH_BREAKER_QUERY = "{ health { sources { source { id } breaker { state openedAt } } } }"

# --- process handling ------------------------------------------------------------

STARTUP_TIMEOUT_S = 60.0
GATEWAY_STOP_GRACE_S = 12.0  # gateway serve uses timeout_graceful_shutdown=10
DEMO_STOP_GRACE_S = 5.0
LOADGEN_READY_TIMEOUT_S = 30.0
LOADGEN_HEADSTART_S = 4.0  # start the load generator this long before the load must begin
REQUEST_TIMEOUT_S = 10.0  # per request in the load generator: far above the 3 s deadline
CONTROL_TIMEOUT_S = 3.0
PG_CTL_TIMEOUT_S = 30
SETTLE_S = 1.0  # after a burst, before reading the counters
ORPHAN_WAIT_S = 2.0  # a stopped process's children get this long to follow it
SERIAL_QUERIES = 20

REPO_ROOT = Path(__file__).resolve().parents[3]
