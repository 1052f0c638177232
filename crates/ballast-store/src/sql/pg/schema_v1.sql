-- Ids: tables with an `id` key get the next id in commit order, without gaps, from this trigger
-- (writers hold one advisory lock, so max(id) + 1 cannot race) — the same numbering as SQLite's.
CREATE FUNCTION ballast_next_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS NULL THEN
        EXECUTE format('SELECT coalesce(max(id), 0) + 1 FROM %I', TG_TABLE_NAME) INTO NEW.id;
    END IF;
    RETURN NEW;
END
$$;

-- Ballast metadata schema, version 1 (PostgreSQL).
CREATE TABLE models (
    id             BIGINT PRIMARY KEY,
    namespace      TEXT NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    tags           TEXT NOT NULL DEFAULT '{}',
    latest_version BIGINT NOT NULL DEFAULT 0,
    created_by     TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    revision       BIGINT NOT NULL DEFAULT 1,
    UNIQUE (namespace, name)
);
-- Model listings page in byte order of (namespace, name), as on SQLite, whatever the locale.
CREATE INDEX models_bytewise ON models ((namespace COLLATE "C"), (name COLLATE "C"));

CREATE TABLE versions (
    model_id         BIGINT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    number           BIGINT NOT NULL,
    sealed           BIGINT NOT NULL DEFAULT 0,
    stage            TEXT NOT NULL DEFAULT 'development',
    metadata         TEXT NOT NULL,
    tags             TEXT NOT NULL DEFAULT '{}',
    digest           TEXT,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    sealed_at        TEXT,
    stage_changed_at TEXT NOT NULL,
    ever_production  BIGINT NOT NULL DEFAULT 0,
    revision         BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (model_id, number)
);
CREATE INDEX versions_by_stage ON versions (model_id, stage, number);

CREATE TABLE files (
    model_id   BIGINT NOT NULL,
    number     BIGINT NOT NULL,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    media_type TEXT,
    PRIMARY KEY (model_id, number, path),
    FOREIGN KEY (model_id, number) REFERENCES versions (model_id, number) ON DELETE CASCADE
);
CREATE INDEX files_by_blob ON files (sha256);

CREATE TABLE aliases (
    model_id   BIGINT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    number     BIGINT NOT NULL,
    revision   BIGINT NOT NULL DEFAULT 1,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model_id, alias),
    FOREIGN KEY (model_id, number) REFERENCES versions (model_id, number) ON DELETE CASCADE
);

CREATE TABLE stage_history (
    id         BIGINT PRIMARY KEY,
    model_id   BIGINT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    number     BIGINT NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    replaced   BIGINT,
    actor      TEXT NOT NULL,
    comment    TEXT,
    at         TEXT NOT NULL
);
CREATE INDEX stage_history_by_model ON stage_history (model_id, id);

CREATE TABLE audit (
    id         BIGINT PRIMARY KEY,
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
    id         BIGINT PRIMARY KEY,
    at         TEXT NOT NULL,
    type       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    subject    TEXT NOT NULL,
    model      TEXT,
    version    BIGINT,
    alias      TEXT,
    data       TEXT NOT NULL,
    request_id TEXT NOT NULL
);

CREATE TABLE webhooks (
    id          BIGINT PRIMARY KEY,
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
    id              BIGINT PRIMARY KEY,
    webhook_id      BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        BIGINT NOT NULL REFERENCES outbox (id),
    status          TEXT NOT NULL DEFAULT 'pending',
    attempt_count   BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until_ms  BIGINT NOT NULL DEFAULT 0,
    created_ms      BIGINT NOT NULL,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_ms);
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, id);

CREATE TABLE delivery_attempts (
    id               BIGINT PRIMARY KEY,
    delivery_id      BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at               TEXT NOT NULL,
    status           BIGINT,
    latency_ms       BIGINT NOT NULL,
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
);

-- Where sealed versions are served; the registry compiles routing snapshots from these.
CREATE TABLE deployments (
    id             BIGINT PRIMARY KEY,
    model_id       BIGINT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    number         BIGINT NOT NULL,
    region         TEXT NOT NULL,
    url            TEXT NOT NULL,
    weight         BIGINT NOT NULL,
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
    revision   BIGINT NOT NULL DEFAULT 1,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- MLflow compatibility
-- The MLflow name of a model created or renamed through the MLflow API (MLflow names are free-form).
CREATE TABLE mlflow_names (
    mlflow_name TEXT PRIMARY KEY,
    model_id    BIGINT NOT NULL UNIQUE REFERENCES models (id) ON DELETE CASCADE
);
-- MLflow's fields of a version (source, run_id, run_link, …) as JSON.
CREATE TABLE mlflow_versions (
    model_id BIGINT NOT NULL,
    number   BIGINT NOT NULL,
    info     TEXT NOT NULL,
    PRIMARY KEY (model_id, number),
    FOREIGN KEY (model_id, number) REFERENCES versions (model_id, number) ON DELETE CASCADE
);
-- Tracking objects (experiments, runs, logged models) kept as the lineage of versions.
CREATE TABLE mlflow_objects (
    rowid BIGSERIAL,
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    name TEXT,
    body TEXT NOT NULL,
    UNIQUE (kind, id)
);
CREATE UNIQUE INDEX mlflow_objects_by_name ON mlflow_objects (kind, name) WHERE name IS NOT NULL;

CREATE TRIGGER models_id BEFORE INSERT ON models FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
CREATE TRIGGER stage_history_id BEFORE INSERT ON stage_history FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
CREATE TRIGGER audit_id BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
CREATE TRIGGER outbox_id BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
CREATE TRIGGER webhooks_id BEFORE INSERT ON webhooks FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
CREATE TRIGGER deliveries_id BEFORE INSERT ON deliveries FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
CREATE TRIGGER delivery_attempts_id BEFORE INSERT ON delivery_attempts FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
CREATE TRIGGER deployments_id BEFORE INSERT ON deployments FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
