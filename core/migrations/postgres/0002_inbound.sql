-- idem inbound: one row per (actor, endpoint, client key).
-- Times are milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS idem_inbound (
    actor            TEXT    NOT NULL,
    endpoint         TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('in_flight', 'completed')),
    lease_token      TEXT,
    lease_expires_at BIGINT,
    replay_until     BIGINT  NOT NULL,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    response_status  BIGINT,
    response_headers BYTEA,
    response_body    BYTEA,
    replayable       BOOLEAN NOT NULL DEFAULT TRUE,
    UNIQUE (actor, endpoint, key)
);
CREATE INDEX IF NOT EXISTS idem_inbound_created ON idem_inbound (created_at);
-- One row per sweeper run.
CREATE TABLE IF NOT EXISTS idem_inbound_sweeps (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    cutoff      BIGINT NOT NULL,
    deleted     BIGINT NOT NULL,
    batches     BIGINT NOT NULL,
    error       TEXT
);
-- Wake waiters in every process when an in-flight record completes or is
-- released (payload: the client key; waiters look the record up again).
CREATE OR REPLACE FUNCTION idem_inbound_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('idem_inbound', OLD.key);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER idem_inbound_settled
    AFTER UPDATE OR DELETE ON idem_inbound
    FOR EACH ROW WHEN (OLD.state = 'in_flight')
    EXECUTE FUNCTION idem_inbound_notify();
