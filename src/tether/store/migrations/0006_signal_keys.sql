-- A signal sent with an Idempotency-Key is delivered at most once per run and key: a retry
-- finds the row it delivered (same name and payload) and is answered from it.
ALTER TABLE signals ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX signals_idempotency ON signals (run_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The deployment a run was started on when its ingress named one (POST /v1/deployments/{dep}/
-- workflows/{name}/runs); NULL when started through an environment (runs.env names it). A move
-- changes runs.deployment_id, never this: a retried start with the run's Idempotency-Key is
-- still recognised as the same request after a move.
ALTER TABLE runs ADD COLUMN started_on_deployment TEXT
