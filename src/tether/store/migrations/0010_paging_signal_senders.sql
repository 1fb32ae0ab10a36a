-- Keyset pagination reads every list in the order of an index: runs newest first with their id
-- as the tie-break (a run's signals page by signals_by_run of 0008, which holds the rowid id).
CREATE INDEX runs_by_created_id ON runs (tenant_id, created_at, id);
-- Who sent a signal (the audit name of the request: token:<name>@<tenant>, or the local
-- actor), shown with its arrival time beside the journal entry that took it.
ALTER TABLE signals ADD COLUMN sent_by TEXT
