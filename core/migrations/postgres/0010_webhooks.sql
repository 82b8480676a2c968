-- idem webhooks. Times are milliseconds since the Unix epoch.
-- Inbound provider events: one row per (endpoint, provider event id).
CREATE TABLE IF NOT EXISTS idem_webhook_events (
    endpoint         TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    provider         TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'processing', 'processed')),
    lease_token      TEXT,
    lease_expires_at BIGINT,
    deliveries       BIGINT  NOT NULL DEFAULT 1,
    runs             BIGINT  NOT NULL DEFAULT 0,
    last_error       TEXT,
    received_at      BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    processed_at     BIGINT,
    PRIMARY KEY (endpoint, event_id)
);
CREATE INDEX IF NOT EXISTS idem_webhook_events_received ON idem_webhook_events (received_at);
-- Outbound: the platform's own endpoints (its customers' receivers).
CREATE TABLE IF NOT EXISTS idem_webhook_endpoints (
    id                   TEXT    PRIMARY KEY NOT NULL,
    url                  TEXT    NOT NULL,
    secrets              TEXT    NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN ('enabled', 'disabled')),
    consecutive_failures BIGINT  NOT NULL DEFAULT 0,
    disabled_at          BIGINT,
    disabled_reason      TEXT,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL
);
-- One delivery per `webhook:{event_id}`.
CREATE TABLE IF NOT EXISTS idem_webhook_deliveries (
    dedupe_key       TEXT    PRIMARY KEY NOT NULL,
    event_id         TEXT    NOT NULL,
    endpoint_id      TEXT    NOT NULL,
    ledger_key       TEXT    NOT NULL,
    payload          BYTEA   NOT NULL,
    payload_sha256   TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL,
    lease_token      TEXT,
    lease_expires_at BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX IF NOT EXISTS idem_webhook_deliveries_due ON idem_webhook_deliveries (state, next_attempt_at);
-- Every delivery attempt.
CREATE TABLE IF NOT EXISTS idem_webhook_attempts (
    dedupe_key        TEXT    NOT NULL,
    attempt           BIGINT  NOT NULL,
    webhook_id        TEXT    NOT NULL,
    webhook_timestamp BIGINT  NOT NULL,
    started_at        BIGINT  NOT NULL,
    finished_at       BIGINT  NOT NULL,
    outcome           TEXT    NOT NULL,
    status            BIGINT,
    error             TEXT,
    PRIMARY KEY (dedupe_key, attempt)
);
