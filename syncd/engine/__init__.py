"""What moves data: the municipal source, the byte pipe, the landing on the destination, one
municipality's sync, its retries and its failures. Knows nothing of daemons or people.

    sync.py          one municipality: lock, ledger rows, attempts, root span;  sync_many
    attempt.py       one attempt: snapshot, landing, every dataset, commit
    shared.py        `Engine`: what every sync of a run shares (config, destination, limits...)
    results.py       what a pass produces, per municipality and dataset
    progress.py      the hooks that the display, the metrics and the status board listen to
    source.py        the municipal side (read-only snapshot sessions);  shape.py  a dataset's
                     columns
    copy.py          the byte pipe: COPY out -> bounded queue -> COPY in
    destination.py   the analytical side: pool, dataset tables, DDL under timeouts.lock;
                     destsettings.py  the settings its sessions pin, whatever the DBA's defaults
    widening.py      a mixed fleet: a column's common type, its conversion on the source;
                     typechange.py  how the table takes it: one bounded ALTER, or online:
                     retype.py  (backfill.py  filling the new column,  reindex.py  its indexes)
    diskbudget.py    the analytical database's disk: the budget, and a full disk as a state
    landing.py       one municipality's destination transaction: replace, upsert, commit;
                     txn.py  its transaction and savepoints
    rowdiff/         the row differ: only the changed rows cross into the destination
    delta.py         delta transfer: only the rows the destination lacks cross the municipal
                     link;  fingerprint.py  its SQL at the source;  fpstore.py  what the
                     destination stores of it
    tables.py, layout.py, vacuum.py, upgrade.py   what syncd knows of its tables, their names,
                     the vacuum lane, the conversion of tables an older syncd made
    incremental.py   windows and watermarks;  downstream.py  the NOTIFY of a landed municipality
    compare.py       does the destination hold exactly the source's rows (`syncd verify`)
    retry.py         the one retry policy;  errors.py  failures as values (kind, side, SQLSTATE)
    limits.py        resizable limiters;  synclock.py  one syncd at a time per municipality
    ratelimit.py     `max_rate`: token buckets the COPY-out sink awaits (per source, per bastion)
    survey.py        the municipal catalog of a whole pass in one round trip
    connect.py       what every connection gets;  quoting.py  identifiers and literals quoted
    tunnel/          sources behind an SSH bastion
    spans.py         the engine's trace spans
"""
