-- tether schema, version 1. Times are seconds since the epoch (REAL); JSON is stored as TEXT.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE artifacts (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB,
    created_at REAL NOT NULL
);

CREATE TABLE deployments (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    label TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    app_ref TEXT,
    url TEXT,
    bundle_digest TEXT,
    manifest_digest TEXT NOT NULL,
    manifest TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    removed_at REAL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, label)
);

CREATE TABLE environments (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    targets TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE env_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    targets TEXT NOT NULL,
    previous TEXT,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    undone_by INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX env_history_by_env ON env_history (tenant_id, name, id);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    env TEXT,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    stuck_reason TEXT,
    last_error TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    ready_at REAL,
    parent_run_id TEXT,
    parent_index INTEGER,
    idempotency_key TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    completed_at REAL
);
CREATE INDEX runs_ready ON runs (ready_at) WHERE ready_at IS NOT NULL;
CREATE INDEX runs_by_deployment ON runs (tenant_id, deployment_id, status);
CREATE INDEX runs_by_created ON runs (tenant_id, created_at);
CREATE UNIQUE INDEX runs_idempotency ON runs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE journal (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    args_digest TEXT NOT NULL,
    args TEXT,
    completed INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    manual_digest TEXT,
    extra TEXT,
    attempt INTEGER NOT NULL,
    created_at REAL NOT NULL,
    completed_at REAL,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    consumed_index INTEGER
);
CREATE INDEX signals_unconsumed ON signals (run_id, name, id) WHERE consumed_index IS NULL;

CREATE TABLE timers (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    fire_at REAL NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX timers_due ON timers (fire_at);

CREATE TABLE run_state (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant_id, id);
