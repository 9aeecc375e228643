-- 6: landing v3 (only what changed is written): what each pass inserted and deleted; snapshot datasets keep their last full refresh (rewrite) in syncd.watermarks too
ALTER TABLE syncd.ledger ADD COLUMN inserted bigint, ADD COLUMN deleted bigint;
COMMENT ON COLUMN syncd.ledger.rows IS 'rows the source had (incremental windows: rows read)';
COMMENT ON COLUMN syncd.ledger.inserted IS 'rows this pass wrote (new or changed at the source)';
COMMENT ON COLUMN syncd.ledger.deleted IS 'rows this pass deleted (gone or changed at the source)';
COMMENT ON TABLE syncd.watermarks IS
    'Per (source, dataset): the last full refresh (rewrite); incremental datasets: how far each source has been read';
