-- idem outbound ledger: one row per idempotency key.
-- Times are milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS idem_operations (
    key              TEXT    PRIMARY KEY,
    provider         TEXT    NOT NULL,
    operation        TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'sending', 'succeeded', 'failed', 'unknown', 'superseded')),
    claims           BIGINT  NOT NULL DEFAULT 0,
    lease_token      TEXT,
    lease_expires_at BIGINT,
    first_sent_at    BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    response_status  BIGINT,
    response_body    BYTEA,
    note             TEXT,
    checkpoint       TEXT,
    superseded_by    TEXT
);
CREATE INDEX IF NOT EXISTS idem_operations_state_updated ON idem_operations (state, updated_at);
