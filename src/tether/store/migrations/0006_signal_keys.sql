-- A signal sent with an Idempotency-Key is delivered at most once per run and key: a retry
-- finds the row it delivered (same name and payload) and is answered from it.
ALTER TABLE signals ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX signals_idempotency ON signals (run_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
