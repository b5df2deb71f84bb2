"""``/status``: the operator view, one server-rendered HTML page.

Per source: its last refresh (ok, failing, and the last error), the freshness of its
cached data (age of the newest cached answer against its TTL and ``max_stale_s``), its
breaker, and the last hour's calls with a per-minute p50/p95 latency sparkline, an
inline SVG drawn from the fetch statistics (every process's, computed by Postgres).

No external assets and no script: the page's only stylesheet is inline and allowed by
its hash in a CSP of its own (``default-src 'none'``); it reloads itself with a meta
refresh. Everything from the sources file or an upstream is HTML-escaped. A database
that does not answer costs the freshness and latency columns, never the page: it is
rendered from what this process knows, with a note saying so.

Off in production mode unless ``GATEWAY_STATUS_PAGE=true``; when off, the route does
not exist (404 like any unknown path).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import TYPE_CHECKING

import asyncpg
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway import __version__
from gateway.errors import DatabaseUnavailable
from gateway.resilience.breaker import BreakerState
from gateway.settings import SourceConfig
from gateway.store import cache as cache_queries
from gateway.store import stats as stats_queries

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.ops")

PATH = "/status"
WINDOW_MINUTES = 60
#: How long the page waits for its two statements before rendering without them.
QUERY_TIMEOUT_S = 1.0
REFRESH_S = 10  # the page reloads itself this often (a meta refresh, no script)
# The sparkline's box, in SVG user units.
SPARK_W, SPARK_H, SPARK_PAD = 240, 40, 3

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#fff}
h1{font-size:1.3rem;margin:0 0 .3rem}
.meta{color:#57606a;margin:0 0 1rem}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .75rem;margin:0 0 1rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.45rem .6rem;border-bottom:1px solid #d0d7de}
th{font-weight:600;background:#f6f8fa}
small,.muted{color:#57606a}
.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}
.state{font-weight:600}
svg.spark{display:block;background:#f6f8fa}
svg.spark .p95{fill:none;stroke:#cf222e;stroke-width:1.2}
svg.spark .p50{fill:none;stroke:#0969da;stroke-width:1.5}
svg.spark .dot95{fill:#cf222e}
svg.spark .dot50{fill:#0969da}
svg.spark .fail{fill:#cf222e}
svg.spark .empty{fill:#8c959f;font-size:10px}
"""

CSP = "; ".join(
    [
        "default-src 'none'",
        "style-src 'sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode() + "'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "content-security-policy": CSP,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the page shows, gathered once per visit."""

    now: datetime
    uptime_s: float
    minutes: dict[str, stats_queries.Minutes] | None  # None: the database did not answer
    newest: dict[str, tuple[datetime, int]] | None
    notes: tuple[str, ...]


async def gather(services: Services) -> Snapshot:
    now = services.clock.now()
    since = now - timedelta(minutes=WINDOW_MINUTES)

    async def read(
        conn: asyncpg.Connection,
    ) -> tuple[dict[str, stats_queries.Minutes], dict[str, tuple[datetime, int]]]:
        return await stats_queries.per_minute(conn, since, now), await cache_queries.newest_by_source(conn)

    notes: list[str] = []
    minutes = newest = None
    try:
        minutes, newest = await services.db.run(read, timeout_s=QUERY_TIMEOUT_S)
    except (DatabaseUnavailable, asyncpg.PostgresError) as exc:
        reason = exc.message if isinstance(exc, DatabaseUnavailable) else type(exc).__name__
        log.warning("/status: the database did not answer: %s", reason)
        notes.append(
            f"The database did not answer ({reason}): freshness and latency are unknown. "
            "Refresh and breaker states below are this process's own."
        )
    return Snapshot(now, services.uptime_s(), minutes, newest, tuple(notes))


async def endpoint(request: Request) -> HTMLResponse:
    services: Services = request.state.services
    return HTMLResponse(render(services, await gather(services)), headers=HEADERS)


# -- rendering -----------------------------------------------------------------------
def render(services: Services, snap: Snapshot) -> str:
    rows = "".join(_row(services, config, snap) for config in services.settings.sources)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in snap.notes)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Gateway status</title><style>{CSS}</style></head><body>"
        "<h1>Gateway status</h1>"
        f'<p class="meta">version {escape(__version__)} · up {_duration(snap.uptime_s)} · '
        f"{escape(snap.now.strftime('%Y-%m-%d %H:%M:%S %Z'))} · reloads every {REFRESH_S} s · "
        "refresh and breaker: this process; freshness and latency: every process</p>"
        f"{notes}"
        "<table><thead><tr><th>Source</th><th>Last refresh</th><th>Freshness</th><th>Breaker</th>"
        f"<th>Last {WINDOW_MINUTES} min</th><th>Latency per minute (p50, p95)</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></body></html>\n"
    )


def _row(services: Services, config: SourceConfig, snap: Snapshot) -> str:
    sid = config.id
    source = (
        f'<td id="source-{escape(sid)}"><strong>{escape(config.name)}</strong><br>'
        f"<small>{escape(sid)} · {escape(config.kind)}</small></td>"
    )
    minutes = snap.minutes.get(sid) if snap.minutes is not None else None
    return (
        f"<tr>{source}<td>{_refresh(services, sid, snap.now)}</td><td>{_freshness(config, snap)}</td>"
        f"<td>{_breaker(services, sid)}</td><td>{_hour(minutes, snap.minutes is None)}</td>"
        f"<td>{sparkline(minutes.by_minute if minutes else {}, title=config.name)}</td></tr>"
    )


def _refresh(services: Services, source_id: str, now: datetime) -> str:
    stats = services.source_service.stats[source_id]
    ok_at, err_at, err = stats.last_success_at, stats.last_error_at, stats.last_error
    if err_at is not None and (ok_at is None or err_at > ok_at):
        state = f'<span class="state bad">failing</span> <small>{_ago(now, err_at)}</small>'
    elif ok_at is not None:
        state = f'<span class="state ok">ok</span> <small>{_ago(now, ok_at)}</small>'
    else:
        state = '<span class="muted">no upstream call yet</span>'
    if err is not None and err_at is not None:
        status = f" {err.http_status}" if err.http_status is not None else ""
        state += (
            f'<br><small>last error {_ago(now, err_at)}: <span class="bad">{escape(err.code)}{status}</span> '
            f"{escape(err.message)}</small>"
        )
    return state


def _freshness(config: SourceConfig, snap: Snapshot) -> str:
    if snap.newest is None:
        return '<span class="muted">unknown (no database)</span>'
    found = snap.newest.get(config.id)
    if found is None:
        return f'<span class="muted">nothing cached</span><br><small>ttl {config.ttl_s} s</small>'
    fetched, keys = found
    age = max(0.0, (snap.now - fetched).total_seconds())
    if age <= config.ttl_s:
        label = '<span class="state ok">fresh</span>'
    elif age <= config.max_stale_s:
        label = '<span class="state warn">stale</span> <small>(served if the upstream fails)</small>'
    else:
        label = '<span class="state bad">too old to serve</span>'
    return (
        f"{label}<br><small>newest copy {_duration(age)} old · ttl {config.ttl_s} s · "
        f"{keys} key{'s' if keys != 1 else ''} cached</small>"
    )


_BREAKER_CLASS = {BreakerState.CLOSED: "ok", BreakerState.HALF_OPEN: "warn", BreakerState.OPEN: "bad"}


def _breaker(services: Services, source_id: str) -> str:
    breaker = services.breakers[source_id]
    snap = breaker.snapshot()
    out = f'<span class="state {_BREAKER_CLASS[snap.state]}">{escape(snap.state.value)}</span>'
    if snap.state is BreakerState.OPEN:
        out += f"<br><small>probe in {_duration(breaker.retry_in())}</small>"
    return out + f"<br><small>{snap.failures} failure(s) in window</small>"


def _hour(minutes: stats_queries.Minutes | None, unknown: bool) -> str:
    if unknown:
        return '<span class="muted">unknown</span>'
    if minutes is None:
        return '<span class="muted">no calls</span>'
    t = minutes.total
    failures = f'<span class="bad">{t.failures} failed</span>' if t.failures else "0 failed"
    return f"{t.calls} call{'s' if t.calls != 1 else ''}, {failures}<br><small>p50 {t.p50_ms:.0f} ms · p95 {t.p95_ms:.0f} ms</small>"


def sparkline(by_minute: dict[int, stats_queries.Bucket], *, title: str, minutes: int = WINDOW_MINUTES) -> str:
    """An inline SVG of per-minute p50 and p95 (minute 0 at the left, the latest at the
    right), scaled to the highest p95; minutes without calls leave a gap, and minutes
    with failures get a red mark on the baseline. ``data-max-ms`` is the scale."""
    w, h, pad = SPARK_W, SPARK_H, SPARK_PAD
    top = max((b.p95_ms for b in by_minute.values()), default=0.0) or 1.0
    head = (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" data-max-ms="{top:.2f}" data-minutes="{minutes}">'
    )
    if not by_minute:
        return f'{head}<title>{escape(title)}: no calls</title><text class="empty" x="{pad}" y="{h / 2 + 3:.0f}">no calls</text></svg>'

    def x(m: int) -> float:
        return pad + m * (w - 2 * pad) / (minutes - 1)

    def y(ms: float) -> float:
        return h - pad - ms / top * (h - 2 * pad)

    parts = [f"<title>{escape(title)}: p50 and p95 per minute, top {top:.0f} ms</title>"]
    for cls, value in (("p95", lambda b: b.p95_ms), ("p50", lambda b: b.p50_ms)):
        d: list[str] = []
        for m in sorted(by_minute):
            step = "L" if m - 1 in by_minute else "M"
            d.append(f"{step}{x(m):.1f},{y(value(by_minute[m])):.1f}")
            if m - 1 not in by_minute and m + 1 not in by_minute:  # a lone minute: a dot
                parts.append(f'<circle class="dot{cls[1:]}" cx="{x(m):.1f}" cy="{y(value(by_minute[m])):.1f}" r="1.6"/>')
        parts.append(f'<path class="{cls}" d="{" ".join(d)}"/>')
    for m, b in sorted(by_minute.items()):
        if b.failures:
            parts.append(f'<rect class="fail" x="{x(m) - 1.5:.1f}" y="{h - 2}" width="3" height="2"/>')
    return head + "".join(parts) + "</svg>"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172_800:
        return f"{s // 3600} h"
    return f"{s // 86_400} d"


def _ago(now: datetime, then: datetime) -> str:
    return f"{_duration(max(0.0, (now - then).total_seconds()))} ago"
