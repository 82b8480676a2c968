-- maybe_applied_at: the earliest time an attempt of this key may have taken effect at the
--   provider (ms). Set when an outcome becomes unknown; cleared only by reconciliation proving
--   absence. A row with it set never goes back to 'pending' by itself.
-- provider_id: the provider's id of the object created (kept when the body is compacted).
-- compacted_at: when the sweep dropped the stored body (ms); the key and its outcome remain.
ALTER TABLE idem_operations ADD COLUMN maybe_applied_at BIGINT;
ALTER TABLE idem_operations ADD COLUMN provider_id TEXT;
ALTER TABLE idem_operations ADD COLUMN compacted_at BIGINT;
-- Rows already unknown before this migration may have taken effect.
UPDATE idem_operations SET maybe_applied_at = COALESCE(first_sent_at, updated_at) WHERE state = 'unknown';
