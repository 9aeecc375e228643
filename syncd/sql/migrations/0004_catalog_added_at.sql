-- 4: since when each pair is configured: a municipality that never synced ages from there
ALTER TABLE syncd.catalog ADD COLUMN added_at timestamptz NOT NULL DEFAULT now();
COMMENT ON COLUMN syncd.catalog.added_at IS
    'When syncd was first configured with this pair (rows older than migration 4: then)';
