-- idem inbound: one row per (actor, endpoint, client key).
-- Times are milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS idem_inbound (
    actor            TEXT    NOT NULL,
    endpoint         TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('in_flight', 'completed')),
    lease_token      TEXT,
    lease_expires_at INTEGER,
    replay_until     INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    response_status  INTEGER,
    response_headers BLOB,
    response_body    BLOB,
    replayable       INTEGER NOT NULL DEFAULT 1,
    UNIQUE (actor, endpoint, key)
);
CREATE INDEX IF NOT EXISTS idem_inbound_created ON idem_inbound (created_at);
-- One row per sweeper run.
CREATE TABLE IF NOT EXISTS idem_inbound_sweeps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    cutoff      INTEGER NOT NULL,
    deleted     INTEGER NOT NULL,
    batches     INTEGER NOT NULL,
    error       TEXT
);
