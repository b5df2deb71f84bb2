-- Per-client rate-limit buckets shared by every worker and replica (gateway/edge/ratelimit.py).
-- `debt` is points spent and not yet restored as of `updated_at` (the database's clock,
-- so processes on different machines agree); it drains at `per_s` points per second.
CREATE TABLE rate_limit_buckets (
    client_id  text             PRIMARY KEY,
    debt       double precision NOT NULL,
    per_s      double precision NOT NULL,
    updated_at timestamptz      NOT NULL
);
CREATE INDEX rate_limit_buckets_updated_at ON rate_limit_buckets (updated_at);
