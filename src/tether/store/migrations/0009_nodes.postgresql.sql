-- PostgreSQL's version of 0009_nodes.sql: the same, plus an index of the leases of running
-- runs, which every node's heartbeat renews and scans for lapsed ones.
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires DOUBLE PRECISION;
CREATE INDEX runs_leased ON runs (lease_expires) WHERE status = 'running';
CREATE INDEX runs_by_lease_owner ON runs (lease_owner) WHERE status = 'running';

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    lease_timeout DOUBLE PRECISION NOT NULL,
    workers TEXT
)
