"""Resilience of the gateway, measured from the outside: real processes, real sockets.

Everything runs on 127.0.0.1 as separate processes, the way an operator runs it:

* one embedded PostgreSQL (pgserver) for the whole benchmark, in a temp dir; every
  scenario run gets a fresh database (``CREATE DATABASE``), so caches start cold;
* one demo upstream (``gateway demo-upstream``): 300 ms latency on every route, faults
  installed through ``PUT /_demo/faults``, upstream calls read from ``GET /_demo/stats``;
* one gateway per scenario run (``gateway serve --workers N``) with a generated sources
  file: three sources (NewsAPI ``top-headlines?sources=bbc-news``, RSS ``tech``, Atom
  ``world``), ``ttl_s = 10``, ``timeout_ms = 1000``, breaker ``failure_threshold = 5``,
  ``recovery_s = 5``, ``half_open_max_calls = 1``; ``GATEWAY_REQUEST_DEADLINE_MS=3000``;
* one load generator process per run (this module with ``--loadgen``): aiohttp, a
  ``TCPConnector(limit=concurrency)``, connections opened (``GET /livez``) before the
  start signal, N clients in closed loop (each sends its next request when the previous
  one has answered), one prebuilt request body. It records, per request, the send time,
  the latency (send to last body byte), the HTTP status and each source's
  ``status``/``error.code``, and exits by itself if the benchmark goes away (stdin EOF).

The orchestrator (this process) only starts and stops things, samples the demo's
counters once a second and polls the gateway's ``health`` field, so its timings are not
disturbed by the load. Every query is::

    { articles(first: 10) { nodes { title url }
        sources { source { id } status ageSeconds error { code } } } }

Scenarios (each for every ``--workers`` count, all workers sharing the one Postgres):

``stampede``
    Cold cache; 100 identical queries fired at once (one each, on warm connections).
    Upstream calls = the demo's request total after the burst. Targets: <= 3 upstream
    calls in total (one per source, however many workers), p50 <= 330 ms, p99 <= 400 ms.
``sustained``
    100 clients in closed loop for 30 s (``--quick``: 12 s). The demo's counters are
    sampled every second; calls are bucketed in 10 s windows from the start of the load
    (the last window may be partial). Target: <= 3 upstream calls per window (one per
    source per TTL). Also throughput and p50/p99.
``faults``
    Caches warmed with one healthy query; then ``feeds.rss:tech`` hangs and
    ``feeds.atom:world`` answers 500 (after 300 ms); the load (200 clients, 30 s,
    ``--quick`` 12 s) starts once the warm copies are past their TTL, so every request
    from the first one on needs the upstreams. Targets: no 5xx or transport errors; the
    healthy source ``bbc`` has data (FRESH/CACHED/STALE) in every response, and every
    source is listed in every response; p99 <= deadline + 50 ms; each faulty source's
    breaker opens, and once it is open in every worker its route gets at most
    ``half_open_max_calls x workers`` calls in any ``recovery_s`` window (breakers are
    per process; SKIP when that moment never comes within the run). Breaker states come
    from the gateway itself: ``health`` is polled every 100 ms on fresh connections, so
    each poll reaches some worker; all workers' breakers count as open once a breaker
    was seen open and no poll has seen it CLOSED for 3 s (30 polls; exact with one
    worker). ``--quick`` is mostly too short to judge the breaker window target.
``pgrestart``
    Healthy sources, 100 clients; after 5 s Postgres is stopped (``pg_ctl stop -m fast``)
    for 5 s, then started again on the same socket; 10 s more (``--quick``: 3/5/6 s).
    ``{ health { database { ok } } }`` is polled every 100 ms on fresh connections.
    Targets: no 5xx or transport errors; health reports the database ok, and stays ok,
    within 2 s of Postgres being back ("back" = ``pg_ctl -w start`` returned).

Percentiles are nearest-rank over all answered requests. A target that could not be
evaluated (e.g. the run ended before a breaker window completed) is SKIP, not PASS.

Usage, from the repository root::

    .venv/bin/python -m tests.bench.resilience                  # full run (~5 min)
    .venv/bin/python -m tests.bench.resilience --quick          # smoke run (~2 min)
    .venv/bin/python -m tests.bench.resilience --workers 3 --scenario faults,pgrestart
    .venv/bin/python -m tests.bench.resilience --log-dir /tmp/bench-logs   # keep logs

Exit status: 0 all targets PASS (or SKIP), 1 a target FAILed or a run could not be
done, 130/143 interrupted. Everything started here is stopped on the way out (process
groups: SIGINT, then SIGTERM, then SIGKILL), Ctrl-C included.
"""
