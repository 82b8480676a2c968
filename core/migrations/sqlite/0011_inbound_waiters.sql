-- The `waiting` mark of the PostgreSQL store (which notifies only records
-- somebody waits for). SQLite wakes waiters in the process, so the column is
-- only kept for the shared SQL.
ALTER TABLE idem_inbound ADD COLUMN waiting BOOLEAN NOT NULL DEFAULT 0;
