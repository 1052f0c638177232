-- Retention policies.

-- A retention policy on a namespace (model_id NULL) or on one model (which replaces its
-- namespace's policy for that model). The body is the policy's JSON.
CREATE TABLE retention_policies (
    id         INTEGER PRIMARY KEY,
    namespace  TEXT NOT NULL,
    model_id   INTEGER REFERENCES models (id) ON DELETE CASCADE,
    body       TEXT NOT NULL,
    revision   INTEGER NOT NULL DEFAULT 1,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX retention_policies_by_target ON retention_policies (namespace, coalesce(model_id, 0));

-- Versions naming a version of another model as their lineage parent (`ns/model/N`): garbage
-- collection keeps such a parent while the child exists.
CREATE INDEX versions_by_lineage_parent ON versions (json_extract(metadata, '$.lineage.parent'))
    WHERE json_extract(metadata, '$.lineage.parent') IS NOT NULL;
