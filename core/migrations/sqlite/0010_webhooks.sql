-- idem webhooks. Times are milliseconds since the Unix epoch.
-- Inbound provider events: one row per (endpoint, provider event id).
CREATE TABLE IF NOT EXISTS idem_webhook_events (
    endpoint         TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    provider         TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'processing', 'processed')),
    lease_token      TEXT,
    lease_expires_at INTEGER,
    deliveries       INTEGER NOT NULL DEFAULT 1,
    runs             INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    received_at      INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    processed_at     INTEGER,
    PRIMARY KEY (endpoint, event_id)
);
CREATE INDEX IF NOT EXISTS idem_webhook_events_received ON idem_webhook_events (received_at);
-- Outbound: the platform's own endpoints (its customers' receivers).
CREATE TABLE IF NOT EXISTS idem_webhook_endpoints (
    id                   TEXT    PRIMARY KEY NOT NULL,
    url                  TEXT    NOT NULL,
    secrets              TEXT    NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN ('enabled', 'disabled')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    disabled_at          INTEGER,
    disabled_reason      TEXT,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
-- One delivery per `webhook:{event_id}`.
CREATE TABLE IF NOT EXISTS idem_webhook_deliveries (
    dedupe_key       TEXT    PRIMARY KEY NOT NULL,
    event_id         TEXT    NOT NULL,
    endpoint_id      TEXT    NOT NULL,
    ledger_key       TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    payload_sha256   TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX IF NOT EXISTS idem_webhook_deliveries_due ON idem_webhook_deliveries (state, next_attempt_at);
-- Every delivery attempt.
CREATE TABLE IF NOT EXISTS idem_webhook_attempts (
    dedupe_key        TEXT    NOT NULL,
    attempt           INTEGER NOT NULL,
    webhook_id        TEXT    NOT NULL,
    webhook_timestamp INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER NOT NULL,
    outcome           TEXT    NOT NULL,
    status            INTEGER,
    error             TEXT,
    PRIMARY KEY (dedupe_key, attempt)
);
