-- Retention and the supervisor: finished runs are found by when they ended, a pruned run's
-- signals by its id, and runs left running by when they last changed. Runs pruned by
-- retention leave a tombstone (kept for another retention period) so a lookup can say so.
CREATE INDEX runs_finished ON runs (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX runs_running ON runs (updated_at) WHERE status = 'running' AND ready_at IS NULL;
CREATE INDEX signals_by_run ON signals (run_id);
CREATE TABLE pruned_runs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    pruned_at REAL NOT NULL
);
CREATE INDEX pruned_runs_by_time ON pruned_runs (pruned_at)
