-- 3: incremental datasets
ALTER TABLE syncd.ledger ADD COLUMN mode text, ADD COLUMN watermark text;
COMMENT ON COLUMN syncd.ledger.mode IS 'snapshot, full_refresh or incremental';
COMMENT ON COLUMN syncd.ledger.watermark IS 'incremental datasets: the watermark after the pass';
CREATE TABLE syncd.watermarks (
    source_id       text NOT NULL,
    dataset         text NOT NULL,
    cursor          text,
    watermark       text,
    full_refresh_at timestamptz,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (source_id, dataset)
);
COMMENT ON TABLE syncd.watermarks IS
    'Incremental datasets: how far each source has been read, and its last full refresh';
