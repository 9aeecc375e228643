-- Delta transfer's queries on the destination (syncd/engine/delta.py), loaded by name
-- (syncd.sql.load("delta")). The table is made by migrations/0007_delta.sql.
-- Values are bind parameters ($1, $2...).

-- name: load_context
-- $1 source id, $2 dataset: what the stored fingerprints were made under, and their totals
SELECT context::text AS context, row_count, fp_sum::text AS fp_sum
FROM syncd.fingerprints WHERE source_id = $1 AND dataset = $2;

-- name: store_context
-- $1 source id, $2 dataset, $3 context (json text), $4 row count, $5 sum of fingerprints (text)
INSERT INTO syncd.fingerprints AS f (source_id, dataset, context, row_count, fp_sum, updated_at)
VALUES ($1, $2, $3::jsonb, $4, $5::numeric, now())
ON CONFLICT (source_id, dataset) DO UPDATE
SET context = excluded.context, row_count = excluded.row_count, fp_sum = excluded.fp_sum,
    updated_at = now();

-- name: forget_context
-- the rows landed without fingerprints: nothing stored describes them any more
DELETE FROM syncd.fingerprints WHERE source_id = $1 AND dataset = $2;
