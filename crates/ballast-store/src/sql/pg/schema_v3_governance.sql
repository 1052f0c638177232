-- Policies, transition requests and approvals.

-- A policy on a namespace (model_id NULL) or on one model (which overrides its namespace's policy
-- field by field). The body is the policy's JSON.
CREATE TABLE policies (
    id         BIGINT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    model_id   BIGINT REFERENCES models (id) ON DELETE CASCADE,
    body       TEXT NOT NULL,
    revision   BIGINT NOT NULL DEFAULT 1,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX policies_by_target ON policies (namespace, coalesce(model_id, 0));

-- A request to move a version into staging or production, with the verdicts of its gates.
CREATE TABLE transition_requests (
    id                 BIGINT PRIMARY KEY,
    model_id           BIGINT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    number             BIGINT NOT NULL,
    from_stage         TEXT NOT NULL,
    to_stage           TEXT NOT NULL,
    state              TEXT NOT NULL,
    requested_by       TEXT NOT NULL,
    comment            TEXT,
    risk               TEXT NOT NULL,
    policy_source      TEXT NOT NULL,
    gates_passed       BIGINT NOT NULL,
    verdicts           TEXT NOT NULL,
    baseline_version   BIGINT,
    required_approvals BIGINT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    closed_by          TEXT,
    resolution         TEXT,
    FOREIGN KEY (model_id, number) REFERENCES versions (model_id, number) ON DELETE CASCADE
);
CREATE INDEX transition_requests_by_version ON transition_requests (model_id, number, state);
CREATE INDEX transition_requests_by_state ON transition_requests (state, id);
-- At most one pending request per version and target stage.
CREATE UNIQUE INDEX transition_requests_one_pending ON transition_requests (model_id, number, to_stage)
    WHERE state = 'pending';

-- Reviews: one per reviewer and request, so the same reviewer counts once.
CREATE TABLE transition_reviews (
    request_id BIGINT NOT NULL REFERENCES transition_requests (id) ON DELETE CASCADE,
    reviewer   TEXT NOT NULL,
    decision   TEXT NOT NULL,
    comment    TEXT,
    at         TEXT NOT NULL,
    PRIMARY KEY (request_id, reviewer)
);

CREATE TRIGGER policies_id BEFORE INSERT ON policies FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
CREATE TRIGGER transition_requests_id BEFORE INSERT ON transition_requests FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
