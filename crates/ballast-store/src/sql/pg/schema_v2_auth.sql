-- Tokens and role bindings (access control).
-- A token's secret is never stored: only its SHA-256 (hex) and a short prefix to recognise it.
CREATE TABLE tokens (
    id BIGINT PRIMARY KEY,
    principal TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    prefix TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
CREATE INDEX tokens_principal ON tokens (principal);

CREATE TABLE role_bindings (
    principal TEXT NOT NULL,
    namespace TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('reader', 'writer', 'reviewer', 'maintainer', 'admin')),
    granted_at TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    PRIMARY KEY (principal, namespace, role)
);

CREATE TRIGGER tokens_id BEFORE INSERT ON tokens FOR EACH ROW EXECUTE FUNCTION ballast_next_id();
