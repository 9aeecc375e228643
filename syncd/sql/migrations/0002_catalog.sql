-- 2: what is configured, and how fresh it is, for the SQL users who do not open Grafana
CREATE TABLE syncd.catalog (
    source_id   text NOT NULL,
    dataset     text NOT NULL,
    source_name text,
    PRIMARY KEY (source_id, dataset)
);
COMMENT ON TABLE syncd.catalog IS
    'The (source, dataset) pairs syncd is configured to keep fresh';
CREATE VIEW syncd.freshness AS
SELECT c.source_id, c.source_name, c.dataset, l.last_success,
       now() - l.last_success AS age,
       CASE WHEN l.last_success IS NULL THEN 'never'
            WHEN l.last_success < now() - interval '72 hours' THEN 'critical'
            WHEN l.last_success < now() - interval '48 hours' THEN 'late'
            ELSE 'ok' END AS state,
       l.last_status, l.last_ended, l.last_error
FROM syncd.catalog c
LEFT JOIN syncd.latest l USING (source_id, dataset);
COMMENT ON VIEW syncd.freshness IS
    'Per municipality and dataset: last success and state (ok, late > 48 h, critical > 72 h, never)';
