-- 5: landing v2 (hash buckets, rows replaced in one transaction per municipality); the dataset tables of the one-partition-per-municipality layout are converted by `upgrade.upgrade_layout`, which records each here
CREATE TABLE syncd.layout_upgrades (
    schema_name  text        NOT NULL,
    dataset      text        NOT NULL,
    rows         bigint      NOT NULL,
    upgraded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, dataset)
);
COMMENT ON TABLE syncd.layout_upgrades IS
    'Dataset tables converted from one partition per municipality to hash buckets';
