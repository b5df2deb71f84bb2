-- Every upstream call, written in the background by each process's statistics
-- writer (gateway/ops/stats.py) and read across processes by
-- SourceHealth.fetchStats; trimmed past GATEWAY_STATS_RETENTION_H by the
-- maintenance leader. No primary key: rows are only appended and trimmed by time.
CREATE TABLE fetch_stats (
    source_id   text        NOT NULL,
    request_key text        NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms real        NOT NULL,
    outcome     text        NOT NULL,
    http_status integer,
    bytes       integer     NOT NULL DEFAULT 0,
    items       integer     NOT NULL DEFAULT 0
);
CREATE INDEX fetch_stats_source_started_idx ON fetch_stats (source_id, started_at);
CREATE INDEX fetch_stats_started_idx ON fetch_stats (started_at);

-- Which keys were read lately, by any process (each flushes its reads every
-- maintenance round), so the maintenance leader can refresh them ahead of expiry.
-- ``search`` is what the key was built from (NULL: the latest items).
CREATE TABLE cache_reads (
    source_id    text        NOT NULL,
    request_key  text        NOT NULL,
    search       text,
    last_read_at timestamptz NOT NULL,
    PRIMARY KEY (source_id, request_key)
);

CREATE INDEX fetch_cache_fetched_idx ON fetch_cache (fetched_at);
