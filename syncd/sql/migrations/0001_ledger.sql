-- 1: the ledger
CREATE SEQUENCE syncd.pass_id_seq;
CREATE TABLE syncd.ledger (
    pass_id     bigint      NOT NULL,
    source_id   text        NOT NULL,
    dataset     text        NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    status      text        NOT NULL
                CHECK (status IN ('running', 'ok', 'failed', 'aborted')),
    rows        bigint,
    bytes       bigint,
    attempts    integer     NOT NULL DEFAULT 0,
    error       text,
    instance    text        NOT NULL,
    PRIMARY KEY (pass_id, source_id, dataset)
);
CREATE INDEX ledger_source_dataset ON syncd.ledger (source_id, dataset, started_at DESC);
CREATE INDEX ledger_running ON syncd.ledger (source_id) WHERE status = 'running';
COMMENT ON TABLE syncd.ledger IS
    'One row per (pass, source, dataset): what syncd did, when, how much, and why it failed';
CREATE TABLE syncd.latest (
    source_id     text NOT NULL,
    dataset       text NOT NULL,
    last_pass_id  bigint NOT NULL,
    last_status   text NOT NULL,
    last_ended    timestamptz,
    last_error    text,
    last_success  timestamptz,
    last_rows     bigint,
    PRIMARY KEY (source_id, dataset)
);
COMMENT ON TABLE syncd.latest IS
    'Per (source, dataset): the last outcome and the last success, kept by syncd';
