-- Raw-fetch cache: one row per (source, request key). ``payload`` holds the
-- normalised result (so a cache hit needs no re-parse); the validators make the
-- next upstream call conditional.
CREATE TABLE fetch_cache (
    source_id     text        NOT NULL,
    request_key   text        NOT NULL,
    payload       jsonb       NOT NULL,
    fetched_at    timestamptz NOT NULL,
    etag          text,
    last_modified text,
    PRIMARY KEY (source_id, request_key)
);

-- Every article the gateway has seen, normalised, so article(id:) works for it.
CREATE TABLE articles (
    id            text        PRIMARY KEY,
    source_id     text        NOT NULL,
    title         text        NOT NULL,
    url           text        NOT NULL,
    summary       text,
    author        text,
    image_url     text,
    published_at  timestamptz,
    score         integer,
    comment_count integer,
    comment_ids   bigint[]    NOT NULL DEFAULT '{}',
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX articles_published_idx ON articles (published_at DESC NULLS LAST, id);
CREATE INDEX articles_source_published_idx ON articles (source_id, published_at DESC NULLS LAST);
