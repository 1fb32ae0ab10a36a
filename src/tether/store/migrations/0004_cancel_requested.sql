-- Cooperative cancellation: the run's waits fail with Cancelled until it ends.
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
