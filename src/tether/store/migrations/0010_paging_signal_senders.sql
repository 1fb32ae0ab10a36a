-- Keyset pagination reads every list in the order of an index: a run's signals by id (the
-- only indexes on signals were partial), runs newest first with their id as the tie-break.
CREATE INDEX signals_by_run ON signals (run_id, id);
CREATE INDEX runs_by_created_id ON runs (tenant_id, created_at, id);
-- Who sent a signal (the audit name of the request: token:<name>@<tenant>, or the local
-- actor), shown with its arrival time beside the journal entry that took it.
ALTER TABLE signals ADD COLUMN sent_by TEXT
