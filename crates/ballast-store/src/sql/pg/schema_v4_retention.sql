-- Retention policies.

-- A retention policy on a namespace (model_id NULL) or on one model (which replaces its
-- namespace's policy for that model). The body is the policy's JSON.
CREATE TABLE retention_policies (
    id         BIGINT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    model_id   BIGINT REFERENCES models (id) ON DELETE CASCADE,
    body       TEXT NOT NULL,
    revision   BIGINT NOT NULL DEFAULT 1,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX retention_policies_by_target ON retention_policies (namespace, coalesce(model_id, 0));

-- Versions naming a version of another model as their lineage parent (`ns/model/N`): garbage
-- collection keeps such a parent while the child exists. Looked up by a bytewise range (the
-- names under `ns/model/`), hence the "C" collation.
CREATE INDEX versions_by_lineage_parent ON versions (((metadata::jsonb #>> '{lineage,parent}') COLLATE "C"))
    WHERE (metadata::jsonb #>> '{lineage,parent}') IS NOT NULL;

CREATE TRIGGER retention_policies_id BEFORE INSERT ON retention_policies FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
