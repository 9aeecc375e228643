-- The ledger's queries, loaded by name (syncd.sql.load("ledger")) by the modules of
-- syncd/ledger/. The tables they read and write are made by migrations/NNNN_*.sql.
-- Values are bind parameters ($1, $2...); statuses are the strings of syncd.ledger.states.
-- $1 of every advisory lock is syncd.ledger.lockkeys.LOCK_NAMESPACE.

-- name: migration_lock
-- one instance migrates schema `syncd` at a time (ledger/migrate.py)
SELECT pg_advisory_xact_lock($1, 0);

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS syncd;
CREATE TABLE IF NOT EXISTS syncd.schema_version (version integer NOT NULL);

-- name: schema_version
SELECT max(version) FROM syncd.schema_version;

-- name: record_version
INSERT INTO syncd.schema_version VALUES ($1);

-- name: next_pass_id
-- a pass begins (ledger/rows.py): its id, then its `running` rows
SELECT nextval('syncd.pass_id_seq');

-- name: begin_pass
-- $1 pass id, $2 source id, $3 its datasets, $4 this instance
INSERT INTO syncd.ledger (pass_id, source_id, dataset, started_at, status, instance)
SELECT $1, $2, d, clock_timestamp(), 'running', $4 FROM unnest($3::text[]) AS d;

-- name: finish_ledger
-- $1 pass id, $2 source id, then one array per column, a dataset per element
UPDATE syncd.ledger AS l
SET status = e.status, started_at = coalesce(e.started_at, l.started_at),
    ended_at = coalesce(e.ended_at, clock_timestamp()), rows = e.rows, bytes = e.bytes,
    attempts = e.attempts, error = e.error, mode = e.mode, watermark = e.watermark,
    inserted = e.inserted, deleted = e.deleted
FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bigint[],
            $8::bigint[], $9::integer[], $10::text[], $11::text[], $12::text[],
            $13::bigint[], $14::bigint[])
     AS e(dataset, status, started_at, ended_at, rows, bytes, attempts, error, mode,
          watermark, inserted, deleted)
WHERE l.pass_id = $1 AND l.source_id = $2 AND l.dataset = e.dataset;

-- name: finish_latest
-- $1 pass id, $2 source id, then one array per column, a dataset per element
INSERT INTO syncd.latest AS t (source_id, dataset, last_pass_id, last_status, last_ended,
                              last_error, last_success, last_rows)
SELECT $2, e.dataset, $1, e.status, coalesce(e.ended_at, clock_timestamp()), e.error,
       CASE WHEN e.status = 'ok' THEN coalesce(e.ended_at, clock_timestamp()) END,
       CASE WHEN e.status = 'ok' THEN e.rows END
FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::bigint[], $7::text[])
     AS e(dataset, status, ended_at, rows, error)
ON CONFLICT (source_id, dataset) DO UPDATE
SET last_pass_id = excluded.last_pass_id, last_status = excluded.last_status,
    last_ended = excluded.last_ended, last_error = excluded.last_error,
    last_success = coalesce(excluded.last_success, t.last_success),
    last_rows = CASE WHEN excluded.last_status = 'ok' THEN excluded.last_rows
                     ELSE t.last_rows END;

-- name: abort_stale
-- $1 source id, $2 the pass now under way
UPDATE syncd.ledger SET status = 'aborted',
       -- it ended, at the latest, when this pass of the same source began
       ended_at = (SELECT min(started_at) FROM syncd.ledger WHERE pass_id = $2),
       error = coalesce(error, 'syncd stopped before this pass ended (crash or kill)')
WHERE source_id = $1 AND status = 'running' AND pass_id <> $2;

-- name: abort_orphans
-- $1 source id
UPDATE syncd.ledger SET status = 'aborted', ended_at = clock_timestamp(),
       error = coalesce(error, 'syncd stopped before this pass ended (crash or kill)')
WHERE source_id = $1 AND status = 'running';

-- name: running_sources
SELECT DISTINCT source_id FROM syncd.ledger WHERE status = 'running';

-- name: latest
-- per (source, dataset): the last success and the last outcome
SELECT source_id, dataset, last_success, last_rows, last_status, last_ended, last_error
FROM syncd.latest ORDER BY source_id, dataset;

-- name: oldest_success
-- $1 source id, $2 datasets
SELECT min(last_success) AS oldest, count(last_success) AS n FROM syncd.latest
WHERE source_id = $1 AND dataset = ANY($2::text[]);

-- name: last_successes
-- $1 datasets
SELECT source_id, min(last_success) AS oldest, count(last_success) AS n FROM syncd.latest
WHERE dataset = ANY($1::text[]) GROUP BY source_id;

-- name: last_durations
SELECT l.source_id,
       extract(epoch FROM max(l.ended_at) - min(l.started_at))::float8 AS seconds
FROM syncd.ledger l
JOIN (SELECT source_id, max(last_pass_id) AS pass_id FROM syncd.latest
      GROUP BY source_id) p USING (pass_id, source_id)
GROUP BY l.source_id;

-- name: last_bytes
-- $1 source id, $2 datasets: what the source sent the last time each dataset landed, or
-- streamed before the disk budget stopped it (the budget's estimate, engine/diskbudget.py)
SELECT DISTINCT ON (dataset) dataset, bytes FROM syncd.ledger
WHERE source_id = $1 AND dataset = ANY($2::text[]) AND bytes > 0
ORDER BY dataset, started_at DESC;

-- name: consecutive_failures
WITH passes AS (
    SELECT source_id, pass_id, bool_and(status = 'ok') AS ok
    FROM syncd.ledger WHERE status <> 'running' GROUP BY source_id, pass_id)
SELECT p.source_id, count(*)::int AS n FROM passes p
LEFT JOIN (SELECT source_id, max(pass_id) AS last_ok FROM passes WHERE ok
           GROUP BY source_id) o USING (source_id)
WHERE NOT p.ok AND p.pass_id > coalesce(o.last_ok, 0)
GROUP BY p.source_id;

-- name: catalog_lock
-- one writer of syncd.catalog at a time (ledger/catalog.py)
SELECT pg_advisory_xact_lock($1, 2);

-- name: catalog_add
-- $1 source ids, $2 datasets, $3 source names: one (source, dataset) per element
INSERT INTO syncd.catalog (source_id, dataset, source_name)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT (source_id, dataset) DO UPDATE SET source_name = excluded.source_name;

-- name: catalog_keep_only
-- $1 source ids, $2 datasets: every other (source, dataset) leaves the catalog
DELETE FROM syncd.catalog c WHERE NOT EXISTS (
    SELECT 1 FROM unnest($1::text[], $2::text[]) AS k(source_id, dataset)
    WHERE k.source_id = c.source_id AND k.dataset = c.dataset);

-- name: pending_since
SELECT c.source_id, min(c.added_at) AS since
FROM syncd.catalog c LEFT JOIN syncd.latest l USING (source_id, dataset)
WHERE l.last_success IS NULL GROUP BY c.source_id;
