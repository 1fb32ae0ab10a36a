-- Several nodes on one database: the node whose attempt a running run is in (its lease) and
-- until when the lease holds unless renewed; a node whose lease lapses loses the run to
-- another node, which gives it a new attempt. Appends are fenced by attempt and lease.
-- (PostgreSQL's version also indexes the leases of running runs, which its nodes' heartbeats
-- scan; SQLite has one node, which never scans them.)
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires REAL;

-- The nodes serving this database, each renewing its heartbeat (and its leases) while alive.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    lease_timeout REAL NOT NULL,
    workers TEXT
)
