-- 7: delta transfer (only the rows the destination lacks cross the municipal link): per (source, dataset), the context its rows' stored source fingerprints (syncd_src_fp) were made under, and their count and sum
CREATE TABLE syncd.fingerprints (
    source_id  text        NOT NULL,
    dataset    text        NOT NULL,
    context    jsonb       NOT NULL,
    row_count  bigint      NOT NULL,
    fp_sum     numeric     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, dataset)
);
COMMENT ON TABLE syncd.fingerprints IS
    'Per (source, dataset) with delta transfer: what the source fingerprints stored with its rows (syncd_src_fp) were computed under (server major version, settings, columns, function), and their count and sum. Any change of context: the next pass streams everything';
