-- Ballast metadata schema, version 1 (SQLite).
CREATE TABLE models (
    id             INTEGER PRIMARY KEY,
    namespace      TEXT NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    tags           TEXT NOT NULL DEFAULT '{}',
    latest_version INTEGER NOT NULL DEFAULT 0,
    created_by     TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    revision       INTEGER NOT NULL DEFAULT 1,
    UNIQUE (namespace, name)
);

CREATE TABLE versions (
    model_id         INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    sealed           INTEGER NOT NULL DEFAULT 0,
    stage            TEXT NOT NULL DEFAULT 'development',
    metadata         TEXT NOT NULL,
    tags             TEXT NOT NULL DEFAULT '{}',
    digest           TEXT,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    sealed_at        TEXT,
    stage_changed_at TEXT NOT NULL,
    ever_production  INTEGER NOT NULL DEFAULT 0,
    revision         INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (model_id, number)
) WITHOUT ROWID;
CREATE INDEX versions_by_stage ON versions (model_id, stage, number);

CREATE TABLE files (
    model_id   INTEGER NOT NULL,
    number     INTEGER NOT NULL,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT,
    PRIMARY KEY (model_id, number, path),
    FOREIGN KEY (model_id, number) REFERENCES versions (model_id, number) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX files_by_blob ON files (sha256);

CREATE TABLE aliases (
    model_id   INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    number     INTEGER NOT NULL,
    revision   INTEGER NOT NULL DEFAULT 1,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model_id, alias),
    FOREIGN KEY (model_id, number) REFERENCES versions (model_id, number) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE stage_history (
    id         INTEGER PRIMARY KEY,
    model_id   INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    number     INTEGER NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    replaced   INTEGER,
    actor      TEXT NOT NULL,
    comment    TEXT,
    at         TEXT NOT NULL
);
CREATE INDEX stage_history_by_model ON stage_history (model_id, id);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    before     TEXT NOT NULL,
    after      TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);

-- Events, written in the same transaction as the change they describe.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    type       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    subject    TEXT NOT NULL,
    model      TEXT,
    version    INTEGER,
    alias      TEXT,
    data       TEXT NOT NULL,
    request_id TEXT NOT NULL
);

CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    namespace   TEXT,
    model       TEXT,
    secret      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- One row per (webhook, event), created with the event. Times are Unix milliseconds.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        INTEGER NOT NULL REFERENCES outbox (id),
    status          TEXT NOT NULL DEFAULT 'pending',
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until_ms  INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_ms);
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, id);

CREATE TABLE delivery_attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at               TEXT NOT NULL,
    status           INTEGER,
    latency_ms       INTEGER NOT NULL,
    error            TEXT,
    response_snippet TEXT
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, id);

CREATE TABLE idempotency (
    actor       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (actor, key)
) WITHOUT ROWID;

-- Where sealed versions are served; the registry compiles routing snapshots from these.
CREATE TABLE deployments (
    id             INTEGER PRIMARY KEY,
    model_id       INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    number         INTEGER NOT NULL,
    region         TEXT NOT NULL,
    url            TEXT NOT NULL,
    weight         INTEGER NOT NULL,
    upstream_model TEXT,
    created_by     TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    UNIQUE (model_id, number, region, url),
    FOREIGN KEY (model_id, number) REFERENCES versions (model_id, number) ON DELETE CASCADE
);

-- Logical models served through routers: name -> stage or alias reference and settings (JSON).
CREATE TABLE routes (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    revision   INTEGER NOT NULL DEFAULT 1,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

-- MLflow compatibility
-- The MLflow name of a model created or renamed through the MLflow API (MLflow names are free-form).
CREATE TABLE mlflow_names (
    mlflow_name TEXT PRIMARY KEY,
    model_id    INTEGER NOT NULL UNIQUE REFERENCES models (id) ON DELETE CASCADE
);
-- MLflow's fields of a version (source, run_id, run_link, …) as JSON.
CREATE TABLE mlflow_versions (
    model_id INTEGER NOT NULL,
    number   INTEGER NOT NULL,
    info     TEXT NOT NULL,
    PRIMARY KEY (model_id, number),
    FOREIGN KEY (model_id, number) REFERENCES versions (model_id, number) ON DELETE CASCADE
) WITHOUT ROWID;
-- Tracking objects (experiments, runs, logged models) kept as the lineage of versions.
CREATE TABLE mlflow_objects (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    name TEXT,
    body TEXT NOT NULL,
    UNIQUE (kind, id)
);
CREATE UNIQUE INDEX mlflow_objects_by_name ON mlflow_objects (kind, name) WHERE name IS NOT NULL;
