-- Who may do what: tenants, API tokens (only a hash of each is kept) and dashboard sessions.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
);
INSERT INTO tenants (id, created_at, created_by) VALUES ('default', 0, 'tether');

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL REFERENCES tokens (id),
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX sessions_by_token ON sessions (token_id);
