-- One refresh per (source, request key) across every worker and replica: whoever
-- holds the lease calls the upstream; the others wait for its cache write (NOTIFY
-- on channel gateway_cache) or serve what they have. A lease expires by itself, so
-- a holder that died blocks nobody for long.
CREATE TABLE fetch_leases (
    source_id   text        NOT NULL,
    request_key text        NOT NULL,
    holder      text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (source_id, request_key)
);
