"""SQL that a DBA may want to read: the ledger\x27s migrations."""
