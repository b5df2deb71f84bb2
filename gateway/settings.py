"""Settings from the environment and the sources file.

Every default lives here as a named constant (httpx's ``_config.py`` style), so an
operator can read one file to know what the gateway does when told nothing.
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import strawberry

from gateway.errors import ConfigError

# --- process-wide defaults -------------------------------------------------
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_WORKERS = 1
DEFAULT_DATA_DIR = ".gateway"
DEFAULT_REQUEST_DEADLINE_MS = 3000
DEFAULT_MAX_OUTBOUND = 200  # global bulkhead: upstream calls in flight per process
DEFAULT_DB_POOL_MIN = 4  # covers a cold burst over a few sources without connecting mid-request
DEFAULT_DB_POOL_MAX = 10
DEFAULT_DB_CONNECT_TIMEOUT_S = 5.0
DEFAULT_DB_COMMAND_TIMEOUT_S = 5.0
DEFAULT_MEMORY_CACHE_ENTRIES = 1024
#: A refresh's cache row is written this long after its answer (0: at once), unless
#: another process waits for it: the answers go out before Postgres gets the work.
DEFAULT_WRITE_BEHIND_DELAY_MS = 20
#: Payloads larger than this are parsed in a worker process, off the event loop.
DEFAULT_OFFLOOP_PARSE_BYTES = 256 * 1024
#: Largest upstream body we accept; bigger ones are a BAD_PAYLOAD, not an OOM.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_FIRST = 100  # the largest page a client may ask for
MAX_STATS_WINDOW_MINUTES = 7 * 24 * 60  # the longest window SourceHealth.fetchStats looks back over
#: Fetch statistics older than this many hours are trimmed by the maintenance leader.
DEFAULT_STATS_RETENTION_H = 168
#: Fetch records waiting for the statistics writer; more are dropped (and counted).
#: 0: no fetch statistics at all (no writer; fetchStats and /status show no calls).
DEFAULT_STATS_QUEUE_MAX = 10_000
#: Whether this process takes part in maintenance (one leader does it, across replicas).
DEFAULT_MAINTENANCE = True
#: Seconds between maintenance rounds (refresh-ahead scans; reads shared with the leader).
DEFAULT_MAINTENANCE_INTERVAL_S = 0.5
#: Seconds between garbage collections of old cache rows, articles and statistics.
DEFAULT_GC_INTERVAL_S = 60.0
#: Keys read within this many seconds are refreshed ahead of their TTL.
DEFAULT_REFRESH_AHEAD_WINDOW_S = 300
#: Live updates (Subscription.articleAdded): events queued per subscriber before it
#: is cut off as a slow consumer (SLOW_CONSUMER).
DEFAULT_SUBSCRIPTION_QUEUE_MAX = 1000
#: Most events a resumed subscription replays from the table (Last-Event-ID / after:).
DEFAULT_SUBSCRIPTION_REPLAY_MAX = 1000
#: Seconds between heartbeats on idle streams (SSE comments; WebSocket pings).
DEFAULT_SUBSCRIPTION_HEARTBEAT_S = 15.0
#: Open subscriptions one client may hold, per process.
DEFAULT_SUBSCRIPTIONS_PER_CLIENT = 20
#: Rate-limit points one subscription costs when it starts.
DEFAULT_SUBSCRIPTION_COST = 10
DEFAULT_RESPONSE_CACHE_TTL_MS = 1000  # longest life of an answer in the response cache; 0: off
DEFAULT_RESPONSE_CACHE_MB = 64  # memory the response cache may use
DEFAULT_PERSISTED_ONLY = False  # refuse documents that are not persisted (trusted or APQ)
DEFAULT_PERSISTED_MAX = 10_000  # persisted documents kept in Postgres (APQ registrations beyond are refused)
#: After SIGTERM, keep serving (with /readyz at 503) this long before shutting down.
DEFAULT_SHUTDOWN_DELAY_S = 0.0
#: "auto": JSON lines when stderr is not a terminal, readable console lines when it is.
DEFAULT_LOG_FORMAT = "auto"
LOG_FORMATS = ("auto", "json", "console")
DEFAULT_LOG_LEVEL = "info"
#: One ``graphql.operation`` line per operation, at info (like an access log).
DEFAULT_OPERATION_LOG = True
#: Prometheus metrics: recorded, and served on /metrics. False: neither (404).
DEFAULT_METRICS = True
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

# --- edge: limits, identity, production posture (gateway/edge/) -------------
DEFAULT_ENV = "development"  # or "production": no GraphiQL, /status, introspection or field suggestions
ENVIRONMENTS = ("development", "production")
#: Largest request body accepted (HTTP 413 above it).
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
#: Estimated objects one request may return. The README's queries cost 6 to 211; 30
#: stories with 10 comments of 5 replies each cost 1,831. The nested articles -> source
#: -> articles attack (first: 100 at each level) costs ~1,000,000. The bound also limits how
#: long one admitted answer holds the event loop while executed and encoded: bench_edge
#: prints it for the largest query this default admits (60-120 ms on a busy 2-core box).
DEFAULT_MAX_QUERY_COST = 5_000
#: Distinct upstream fetches one request may cause (source x search, HN comment levels).
DEFAULT_MAX_UPSTREAM_FETCHES = 8
DEFAULT_RATE_LIMIT_ENABLED = True
#: Points in a client's bucket, and points restored per second. Generous: `make run`,
#: the README's queries and bench_resilience's ~5,000 req/s of a 17-point query from one
#: address never meet them; a flood of expensive queries (20 a second at the maximum
#: cost) does. Size them for your clients in production.
DEFAULT_RATE_LIMIT_BURST = 1_000_000
DEFAULT_RATE_LIMIT_PER_S = 100_000
#: How often local buckets are reconciled with the shared table (0: local only).
DEFAULT_RATE_LIMIT_SYNC_MS = 100
#: With the shared store down, keep limiting with local buckets (true) or refuse (503).
DEFAULT_RATE_LIMIT_FAIL_OPEN = True
DEFAULT_REQUIRE_API_KEY = False
DEFAULT_CORS_MAX_AGE_S = 600

# --- per-source defaults ---------------------------------------------------
DEFAULT_SOURCE_TIMEOUT_MS = 2000
DEFAULT_SOURCE_TTL_S = 120
DEFAULT_SOURCE_MAX_STALE_S = 86_400
DEFAULT_SOURCE_MAX_CONCURRENCY = 10
DEFAULT_SOURCE_PAGE_SIZE = 100  # items asked of an upstream per fetch
DEFAULT_HN_PAGE_SIZE = 30  # HN stories per fetch (each is one item call)

DEFAULT_BREAKER_FAILURE_THRESHOLD = 5  # consecutive failures that open it
DEFAULT_BREAKER_FAILURE_RATE = 0.5  # or this failure rate ...
DEFAULT_BREAKER_MINIMUM_CALLS = 10  # ... over at least this many calls
DEFAULT_BREAKER_WINDOW_S = 60.0  # window the rate is measured over
DEFAULT_BREAKER_RECOVERY_S = 30.0  # open -> half-open after this long
DEFAULT_BREAKER_HALF_OPEN_MAX_CALLS = 1  # probes allowed while half-open

@strawberry.enum(description="The kind of upstream a source is.")
class SourceKind(enum.Enum):
    """The one list of source kinds (the schema's enum too); each has one adapter."""

    NEWSAPI = strawberry.enum_value("newsapi", description="A NewsAPI v2 compatible JSON API.")
    FEED = strawberry.enum_value("feed", description="An RSS 2.0, RSS 1.0 or Atom 1.0 feed.")
    HACKERNEWS = strawberry.enum_value("hackernews", description="The Hacker News v0 API.")


SOURCE_KINDS: tuple[str, ...] = tuple(kind.value for kind in SourceKind)
ENV_PREFIX = "GATEWAY_"
BUNDLED_DEMO_SOURCES = Path(__file__).parent / "demo" / "sources.toml"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Circuit-breaker tuning for one source (``[sources.breaker]`` in the sources file)."""

    failure_threshold: int = DEFAULT_BREAKER_FAILURE_THRESHOLD
    failure_rate: float = DEFAULT_BREAKER_FAILURE_RATE
    minimum_calls: int = DEFAULT_BREAKER_MINIMUM_CALLS
    window_s: float = DEFAULT_BREAKER_WINDOW_S
    recovery_s: float = DEFAULT_BREAKER_RECOVERY_S
    half_open_max_calls: int = DEFAULT_BREAKER_HALF_OPEN_MAX_CALLS


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One upstream, as configured in the sources file."""

    id: str
    name: str
    kind: str
    url: str
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_ms: int = DEFAULT_SOURCE_TIMEOUT_MS
    ttl_s: int = DEFAULT_SOURCE_TTL_S
    critical: bool = False
    max_stale_s: int = DEFAULT_SOURCE_MAX_STALE_S
    max_concurrency: int = DEFAULT_SOURCE_MAX_CONCURRENCY
    page_size: int = DEFAULT_SOURCE_PAGE_SIZE
    breaker: BreakerSettings = field(default_factory=BreakerSettings)

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the app needs to start. Build with :meth:`from_env` or directly in tests."""

    sources: tuple[SourceConfig, ...] = ()
    sources_file: Path | None = None
    database_url: str | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    request_deadline_ms: int = DEFAULT_REQUEST_DEADLINE_MS
    max_outbound: int = DEFAULT_MAX_OUTBOUND
    db_pool_min: int = DEFAULT_DB_POOL_MIN
    db_pool_max: int = DEFAULT_DB_POOL_MAX
    db_connect_timeout_s: float = DEFAULT_DB_CONNECT_TIMEOUT_S
    db_command_timeout_s: float = DEFAULT_DB_COMMAND_TIMEOUT_S
    memory_cache_entries: int = DEFAULT_MEMORY_CACHE_ENTRIES
    write_behind_delay_ms: int = DEFAULT_WRITE_BEHIND_DELAY_MS
    offloop_parse_bytes: int = DEFAULT_OFFLOOP_PARSE_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    stats_retention_h: int = DEFAULT_STATS_RETENTION_H
    stats_queue_max: int = DEFAULT_STATS_QUEUE_MAX
    maintenance: bool = DEFAULT_MAINTENANCE
    maintenance_interval_s: float = DEFAULT_MAINTENANCE_INTERVAL_S
    gc_interval_s: float = DEFAULT_GC_INTERVAL_S
    refresh_ahead_window_s: int = DEFAULT_REFRESH_AHEAD_WINDOW_S
    shutdown_delay_s: float = DEFAULT_SHUTDOWN_DELAY_S
    subscription_queue_max: int = DEFAULT_SUBSCRIPTION_QUEUE_MAX
    subscription_replay_max: int = DEFAULT_SUBSCRIPTION_REPLAY_MAX
    subscription_heartbeat_s: float = DEFAULT_SUBSCRIPTION_HEARTBEAT_S
    subscriptions_per_client: int = DEFAULT_SUBSCRIPTIONS_PER_CLIENT
    subscription_cost: int = DEFAULT_SUBSCRIPTION_COST
    response_cache_ttl_ms: int = DEFAULT_RESPONSE_CACHE_TTL_MS
    response_cache_mb: int = DEFAULT_RESPONSE_CACHE_MB
    persisted_only: bool = DEFAULT_PERSISTED_ONLY
    persisted_max: int = DEFAULT_PERSISTED_MAX
    log_format: str = DEFAULT_LOG_FORMAT
    log_level: str = DEFAULT_LOG_LEVEL
    operation_log: bool = DEFAULT_OPERATION_LOG
    metrics: bool = DEFAULT_METRICS
    edge: EdgeSettings = field(default_factory=lambda: EdgeSettings())
    _by_id: dict[str, SourceConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, SourceConfig] = {}
        for s in self.sources:
            by_id.setdefault(s.id, s)  # the first wins, as a scan in file order would
        object.__setattr__(self, "_by_id", by_id)

    def source(self, source_id: str) -> SourceConfig | None:
        return self._by_id.get(source_id)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, sources_file: str | Path | None = None
    ) -> Settings:
        """Read ``GATEWAY_*`` variables (:data:`ENV_VARS`); the sources file comes from
        the argument, ``GATEWAY_SOURCES``, or the bundled demo sources, in that order."""
        env = os.environ if env is None else env
        path = Path(sources_file or env.get("GATEWAY_SOURCES") or BUNDLED_DEMO_SOURCES)
        values = {var.field: var.read(env) for var in ENV_VARS}
        return cls(
            sources=load_sources(path, env=env), sources_file=path, edge=EdgeSettings.from_env(env), **values
        )


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One ``GATEWAY_*`` variable: the Settings field it sets, its default and type."""

    name: str
    field: str
    default: object
    kind: type = int
    minimum: float = 1
    choices: tuple[str, ...] = ()

    def read(self, env: Mapping[str, str]) -> object:
        raw = env.get(self.name)
        if raw is None or raw == "":
            return Path(self.default) if self.kind is Path and self.default is not None else self.default
        if self.kind is bool:
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"environment variable {self.name} must be true or false, got {raw!r}")
        if self.choices and raw not in self.choices:
            raise ConfigError(f"environment variable {self.name} must be one of {', '.join(self.choices)}, got {raw!r}")
        if self.kind in (str, Path):
            return self.kind(raw)
        try:
            value = self.kind(raw)
        except ValueError:
            expected = "an integer" if self.kind is int else "a number"
            raise ConfigError(f"environment variable {self.name} must be {expected}, got {raw!r}") from None
        if value < self.minimum:
            raise ConfigError(f"environment variable {self.name} must be >= {self.minimum:g}, got {value}")
        return value


#: Every setting from the environment (besides GATEWAY_SOURCES), with its default.
#: deploy/gateway.env.example lists them all; a test keeps the two in step.
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("GATEWAY_DATABASE_URL", "database_url", None, str),
    EnvVar("GATEWAY_DATA_DIR", "data_dir", DEFAULT_DATA_DIR, Path),
    EnvVar("GATEWAY_REQUEST_DEADLINE_MS", "request_deadline_ms", DEFAULT_REQUEST_DEADLINE_MS),
    EnvVar("GATEWAY_MAX_OUTBOUND", "max_outbound", DEFAULT_MAX_OUTBOUND),
    EnvVar("GATEWAY_DB_POOL_MIN", "db_pool_min", DEFAULT_DB_POOL_MIN, minimum=0),
    EnvVar("GATEWAY_DB_POOL_MAX", "db_pool_max", DEFAULT_DB_POOL_MAX),
    EnvVar("GATEWAY_DB_CONNECT_TIMEOUT_S", "db_connect_timeout_s", DEFAULT_DB_CONNECT_TIMEOUT_S, float, 0.1),
    EnvVar("GATEWAY_DB_COMMAND_TIMEOUT_S", "db_command_timeout_s", DEFAULT_DB_COMMAND_TIMEOUT_S, float, 0.1),
    EnvVar("GATEWAY_MEMORY_CACHE_ENTRIES", "memory_cache_entries", DEFAULT_MEMORY_CACHE_ENTRIES),
    EnvVar("GATEWAY_WRITE_BEHIND_DELAY_MS", "write_behind_delay_ms", DEFAULT_WRITE_BEHIND_DELAY_MS, minimum=0),
    EnvVar("GATEWAY_OFFLOOP_PARSE_BYTES", "offloop_parse_bytes", DEFAULT_OFFLOOP_PARSE_BYTES, minimum=0),
    EnvVar("GATEWAY_MAX_UPSTREAM_BODY_BYTES", "max_body_bytes", DEFAULT_MAX_BODY_BYTES),
    EnvVar("GATEWAY_STATS_RETENTION_H", "stats_retention_h", DEFAULT_STATS_RETENTION_H),
    EnvVar("GATEWAY_STATS_QUEUE_MAX", "stats_queue_max", DEFAULT_STATS_QUEUE_MAX, minimum=0),
    EnvVar("GATEWAY_MAINTENANCE", "maintenance", DEFAULT_MAINTENANCE, bool),
    EnvVar("GATEWAY_MAINTENANCE_INTERVAL_S", "maintenance_interval_s", DEFAULT_MAINTENANCE_INTERVAL_S, float, 0.01),
    EnvVar("GATEWAY_GC_INTERVAL_S", "gc_interval_s", DEFAULT_GC_INTERVAL_S, float, 0.01),
    EnvVar("GATEWAY_REFRESH_AHEAD_WINDOW_S", "refresh_ahead_window_s", DEFAULT_REFRESH_AHEAD_WINDOW_S),
    EnvVar("GATEWAY_SHUTDOWN_DELAY_S", "shutdown_delay_s", DEFAULT_SHUTDOWN_DELAY_S, float, 0),
    EnvVar("GATEWAY_SUBSCRIPTION_QUEUE_MAX", "subscription_queue_max", DEFAULT_SUBSCRIPTION_QUEUE_MAX),
    EnvVar("GATEWAY_SUBSCRIPTION_REPLAY_MAX", "subscription_replay_max", DEFAULT_SUBSCRIPTION_REPLAY_MAX),
    EnvVar("GATEWAY_SUBSCRIPTION_HEARTBEAT_S", "subscription_heartbeat_s", DEFAULT_SUBSCRIPTION_HEARTBEAT_S, float, 0.1),
    EnvVar("GATEWAY_SUBSCRIPTIONS_PER_CLIENT", "subscriptions_per_client", DEFAULT_SUBSCRIPTIONS_PER_CLIENT),
    EnvVar("GATEWAY_SUBSCRIPTION_COST", "subscription_cost", DEFAULT_SUBSCRIPTION_COST, minimum=0),
    EnvVar("GATEWAY_LOG_FORMAT", "log_format", DEFAULT_LOG_FORMAT, str, choices=LOG_FORMATS),
    EnvVar("GATEWAY_LOG_LEVEL", "log_level", DEFAULT_LOG_LEVEL, str, choices=LOG_LEVELS),
    EnvVar("GATEWAY_OPERATION_LOG", "operation_log", DEFAULT_OPERATION_LOG, bool),
    EnvVar("GATEWAY_METRICS", "metrics", DEFAULT_METRICS, bool),
    EnvVar("GATEWAY_RESPONSE_CACHE_TTL_MS", "response_cache_ttl_ms", DEFAULT_RESPONSE_CACHE_TTL_MS, minimum=0),
    EnvVar("GATEWAY_RESPONSE_CACHE_MB", "response_cache_mb", DEFAULT_RESPONSE_CACHE_MB),
    EnvVar("GATEWAY_PERSISTED_ONLY", "persisted_only", DEFAULT_PERSISTED_ONLY, bool),
    EnvVar("GATEWAY_PERSISTED_MAX", "persisted_max", DEFAULT_PERSISTED_MAX),
)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """One API client from the clients file. Only the SHA-256 of its key is kept."""

    id: str
    key_sha256: str = field(repr=False)
    burst: int | None = None
    per_s: float | None = None


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """What the edge enforces: body and cost limits, rate limits, identity, CORS, posture."""

    env: str = DEFAULT_ENV
    introspection: bool | None = None  # None: on in development, off in production
    graphiql: bool | None = None  # None: on in development, off in production
    status_page: bool | None = None  # /status; None: on in development, off in production
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_query_cost: int = DEFAULT_MAX_QUERY_COST
    max_upstream_fetches: int = DEFAULT_MAX_UPSTREAM_FETCHES
    rate_limit_enabled: bool = DEFAULT_RATE_LIMIT_ENABLED
    rate_limit_burst: int = DEFAULT_RATE_LIMIT_BURST
    rate_limit_per_s: float = DEFAULT_RATE_LIMIT_PER_S
    rate_limit_sync_ms: int = DEFAULT_RATE_LIMIT_SYNC_MS
    rate_limit_fail_open: bool = DEFAULT_RATE_LIMIT_FAIL_OPEN
    clients_file: Path | None = None
    clients: tuple[ClientConfig, ...] = ()
    require_api_key: bool = DEFAULT_REQUIRE_API_KEY
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For / Forwarded we believe
    cors_origins: tuple[str, ...] = ()
    cors_allow_credentials: bool = False
    cors_max_age_s: int = DEFAULT_CORS_MAX_AGE_S

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def introspection_on(self) -> bool:
        return (not self.production) if self.introspection is None else self.introspection

    @property
    def graphiql_on(self) -> bool:
        return (not self.production) if self.graphiql is None else self.graphiql

    @property
    def status_page_on(self) -> bool:
        return (not self.production) if self.status_page is None else self.status_page

    @property
    def suggestions_on(self) -> bool:
        return not self.production

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EdgeSettings:
        from gateway.edge.clients import load_clients, parse_cidrs

        mode = (env.get("GATEWAY_ENV") or DEFAULT_ENV).strip().lower()
        if mode not in ENVIRONMENTS:
            raise ConfigError(f"environment variable GATEWAY_ENV must be one of {', '.join(ENVIRONMENTS)}, got {mode!r}")
        clients_file = Path(env["GATEWAY_CLIENTS_FILE"]) if env.get("GATEWAY_CLIENTS_FILE") else None
        origins = tuple(o.strip() for o in (env.get("GATEWAY_CORS_ORIGINS") or "").split(",") if o.strip())
        credentials = _env_bool(env, "GATEWAY_CORS_ALLOW_CREDENTIALS", False)
        if credentials and "*" in origins:
            raise ConfigError("GATEWAY_CORS_ORIGINS may not contain '*' with GATEWAY_CORS_ALLOW_CREDENTIALS=true")
        proxies = tuple(p.strip() for p in (env.get("GATEWAY_TRUSTED_PROXIES") or "").split(",") if p.strip())
        parse_cidrs(proxies)  # a typo is a startup error, not a silently open door
        out = cls(
            env=mode,
            introspection=_env_opt_bool(env, "GATEWAY_INTROSPECTION"),
            graphiql=_env_opt_bool(env, "GATEWAY_GRAPHIQL"),
            status_page=_env_opt_bool(env, "GATEWAY_STATUS_PAGE"),
            max_request_bytes=_env_int(env, "GATEWAY_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
            max_query_cost=_env_int(env, "GATEWAY_MAX_QUERY_COST", DEFAULT_MAX_QUERY_COST),
            max_upstream_fetches=_env_int(env, "GATEWAY_MAX_UPSTREAM_FETCHES", DEFAULT_MAX_UPSTREAM_FETCHES),
            rate_limit_enabled=_env_bool(env, "GATEWAY_RATE_LIMIT", DEFAULT_RATE_LIMIT_ENABLED),
            rate_limit_burst=_env_int(env, "GATEWAY_RATE_LIMIT_BURST", DEFAULT_RATE_LIMIT_BURST),
            rate_limit_per_s=float(_env_int(env, "GATEWAY_RATE_LIMIT_PER_S", DEFAULT_RATE_LIMIT_PER_S)),
            rate_limit_sync_ms=_env_int(env, "GATEWAY_RATE_LIMIT_SYNC_MS", DEFAULT_RATE_LIMIT_SYNC_MS, minimum=0),
            rate_limit_fail_open=_env_bool(env, "GATEWAY_RATE_LIMIT_FAIL_OPEN", DEFAULT_RATE_LIMIT_FAIL_OPEN),
            clients_file=clients_file,
            clients=load_clients(clients_file) if clients_file else (),
            require_api_key=_env_bool(env, "GATEWAY_REQUIRE_API_KEY", DEFAULT_REQUIRE_API_KEY),
            trusted_proxies=proxies,
            cors_origins=origins,
            cors_allow_credentials=credentials,
            cors_max_age_s=_env_int(env, "GATEWAY_CORS_MAX_AGE_S", DEFAULT_CORS_MAX_AGE_S, minimum=0),
        )
        if out.rate_limit_sync_ms > 100:
            raise ConfigError(f"GATEWAY_RATE_LIMIT_SYNC_MS must be <= 100 (0 disables sharing), got {out.rate_limit_sync_ms}")
        return out


#: The edge's variables (read by EdgeSettings.from_env) and their defaults: None where
#: unset means "decided otherwise" (by GATEWAY_ENV, or nothing configured). The env
#: example lists them with ENV_VARS; a test keeps all three in step.
EDGE_ENV_DEFAULTS: dict[str, object] = {
    "GATEWAY_ENV": DEFAULT_ENV,
    "GATEWAY_INTROSPECTION": None,
    "GATEWAY_GRAPHIQL": None,
    "GATEWAY_STATUS_PAGE": None,
    "GATEWAY_MAX_REQUEST_BYTES": DEFAULT_MAX_REQUEST_BYTES,
    "GATEWAY_MAX_QUERY_COST": DEFAULT_MAX_QUERY_COST,
    "GATEWAY_MAX_UPSTREAM_FETCHES": DEFAULT_MAX_UPSTREAM_FETCHES,
    "GATEWAY_RATE_LIMIT": DEFAULT_RATE_LIMIT_ENABLED,
    "GATEWAY_RATE_LIMIT_BURST": DEFAULT_RATE_LIMIT_BURST,
    "GATEWAY_RATE_LIMIT_PER_S": DEFAULT_RATE_LIMIT_PER_S,
    "GATEWAY_RATE_LIMIT_SYNC_MS": DEFAULT_RATE_LIMIT_SYNC_MS,
    "GATEWAY_RATE_LIMIT_FAIL_OPEN": DEFAULT_RATE_LIMIT_FAIL_OPEN,
    "GATEWAY_CLIENTS_FILE": None,
    "GATEWAY_REQUIRE_API_KEY": DEFAULT_REQUIRE_API_KEY,
    "GATEWAY_TRUSTED_PROXIES": None,
    "GATEWAY_CORS_ORIGINS": None,
    "GATEWAY_CORS_ALLOW_CREDENTIALS": False,
    "GATEWAY_CORS_MAX_AGE_S": DEFAULT_CORS_MAX_AGE_S,
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env_opt_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"environment variable {name} must be true or false, got {env.get(name)!r}")


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _env_opt_bool(env, name)
    return default if value is None else value


def _env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


# --- sources file -----------------------------------------------------------

_SOURCE_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "name": str,
    "kind": str,
    "url": str,
    "api_key_env": str,
    "timeout_ms": int,
    "ttl_s": int,
    "critical": bool,
    "max_stale_s": int,
    "max_concurrency": int,
    "page_size": int,
    "breaker": dict,
}
_REQUIRED_KEYS = ("id", "name", "kind", "url")
_BREAKER_KEYS: dict[str, type | tuple[type, ...]] = {
    "failure_threshold": int,
    "failure_rate": (int, float),
    "minimum_calls": int,
    "window_s": (int, float),
    "recovery_s": (int, float),
    "half_open_max_calls": int,
}


def load_sources(path: Path, *, env: Mapping[str, str] | None = None) -> tuple[SourceConfig, ...]:
    """Parse and validate a sources file. Every problem is a :class:`ConfigError` naming
    the file, the source and the key at fault."""
    env = os.environ if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"sources file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"sources file {path}: cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sources file {path}: invalid TOML: {exc}") from None
    return parse_sources(data, origin=str(path), env=env)


def parse_sources(
    data: Mapping[str, Any], *, origin: str = "<sources>", env: Mapping[str, str] | None = None
) -> tuple[SourceConfig, ...]:
    env = os.environ if env is None else env
    where = f"sources file {origin}"
    unknown_top = set(data) - {"sources"}
    if unknown_top:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(unknown_top)}; expected [[sources]]")
    raw_sources = data.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ConfigError(f"{where}: needs at least one [[sources]] table")
    seen: set[str] = set()
    out: list[SourceConfig] = []
    for index, raw in enumerate(raw_sources):
        label = f"source #{index + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label = f"source {raw['id']!r}"
        out.append(_parse_source(raw, where=f"{where}: {label}", env=env))
        if out[-1].id in seen:
            raise ConfigError(f"{where}: {label}: key 'id': duplicate id {out[-1].id!r}")
        seen.add(out[-1].id)
    return tuple(out)


def _check_type(where: str, key: str, value: Any, expected: type | tuple[type, ...]) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    # bool is an int in Python; never accept it for a number (``ttl_s = true``).
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join(t.__name__ for t in types).replace("str", "string").replace("dict", "table")
        raise ConfigError(f"{where}: key {key!r} must be a {names}, got {value!r}")


def _parse_source(raw: Any, *, where: str, env: Mapping[str, str]) -> SourceConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    for key in _REQUIRED_KEYS:
        if key not in raw:
            raise ConfigError(f"{where}: missing required key {key!r}")
    unknown = set(raw) - set(_SOURCE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SOURCE_KEYS)}")
    for key, value in raw.items():
        _check_type(where, key, value, _SOURCE_KEYS[key])

    source_id = raw["id"]
    if not source_id or not all(c.isalnum() or c in "-_." for c in source_id):
        raise ConfigError(f"{where}: key 'id' must be non-empty letters, digits, '-', '_' or '.', got {source_id!r}")
    if raw["kind"] not in SOURCE_KINDS:
        raise ConfigError(f"{where}: key 'kind' must be one of {', '.join(SOURCE_KINDS)}, got {raw['kind']!r}")
    url = raw["url"]
    if not (url.startswith("http://") or url.startswith("https://")):
        raise ConfigError(f"{where}: key 'url' must be an http(s) URL, got {url!r}")
    for key in ("timeout_ms", "ttl_s", "max_concurrency", "page_size"):
        if key in raw and raw[key] <= 0:
            raise ConfigError(f"{where}: key {key!r} must be > 0, got {raw[key]}")
    if "max_stale_s" in raw and raw["max_stale_s"] < 0:
        raise ConfigError(f"{where}: key 'max_stale_s' must be >= 0, got {raw['max_stale_s']}")
    if "page_size" in raw and raw["page_size"] > 500:
        raise ConfigError(f"{where}: key 'page_size' must be <= 500, got {raw['page_size']}")

    api_key = None
    if "api_key_env" in raw:
        api_key = env.get(raw["api_key_env"]) or None

    values = {k: v for k, v in raw.items() if k not in ("breaker",)}
    if raw["kind"] == "hackernews" and "page_size" not in raw:
        values["page_size"] = DEFAULT_HN_PAGE_SIZE
    return SourceConfig(
        **values,
        api_key=api_key,
        breaker=_parse_breaker(raw.get("breaker", {}), where=f"{where}: [breaker]"),
    )


def _parse_breaker(raw: dict[str, Any], *, where: str) -> BreakerSettings:
    unknown = set(raw) - set(_BREAKER_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_BREAKER_KEYS)}")
    for key, value in raw.items():
        _check_type(where, key, value, _BREAKER_KEYS[key])
    for key in ("failure_threshold", "minimum_calls", "half_open_max_calls"):
        if key in raw and raw[key] < 1:
            raise ConfigError(f"{where}: key {key!r} must be >= 1, got {raw[key]}")
    for key in ("window_s", "recovery_s"):
        if key in raw and raw[key] <= 0:
            raise ConfigError(f"{where}: key {key!r} must be > 0, got {raw[key]}")
    if "failure_rate" in raw and not 0 < raw["failure_rate"] <= 1:
        raise ConfigError(f"{where}: key 'failure_rate' must be in (0, 1], got {raw['failure_rate']}")
    return BreakerSettings(**{k: (float(v) if k in ("failure_rate", "window_s", "recovery_s") else v) for k, v in raw.items()})
