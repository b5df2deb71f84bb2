-- Persisted documents, shared by every worker and replica: trusted ones loaded from
-- client build manifests (`gateway persisted add FILE`) and automatic persisted
-- queries registered by clients (Apollo APQ). ``id`` is "sha256:<hex>" of ``body``.
CREATE TABLE persisted_documents (
    id         text        PRIMARY KEY,
    body       text        NOT NULL,
    trusted    boolean     NOT NULL DEFAULT false,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now()
);
