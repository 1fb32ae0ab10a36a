-- What a deployment pins beyond its manifest, proven at every load: its code file by file
-- (JSON {path: sha256}), its environment (JSON: mode, fingerprint, lock), the virtual
-- environment it runs in (the lock digest, NULL: the server's), and the log of its build.
ALTER TABLE deployments ADD COLUMN code TEXT;
ALTER TABLE deployments ADD COLUMN environment TEXT;
ALTER TABLE deployments ADD COLUMN venv TEXT;
ALTER TABLE deployments ADD COLUMN build_log TEXT
