-- Identity: users, workspace memberships, user API keys, OAuth clients and issued tokens.
-- Secrets are never stored: API keys and token ids as SHA-256, passwords as argon2id, client
-- secrets as an argon2id hash sealed under the workspace's data key.
CREATE TABLE users (
    id BLOB NOT NULL PRIMARY KEY,
    email TEXT NOT NULL,
    password_hash TEXT,
    created_at INTEGER NOT NULL,
    disabled_at INTEGER,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    -- TOTP secret, sealed under the installation's secrets key; enabled once verified.
    totp_secret BLOB,
    totp_enabled_at INTEGER,
    -- The last accepted time step: a code is accepted once.
    totp_last_step INTEGER,
    -- SHA-256 (hex, space-separated) of the unused recovery codes.
    recovery_codes TEXT
);
CREATE UNIQUE INDEX users_by_email ON users (email);

-- Web-console sessions: only the SHA-256 of the cookie value is stored.
CREATE TABLE sessions (
    id_hash BLOB NOT NULL PRIMARY KEY,
    user_id BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE memberships (
    workspace_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

-- A key acts as its user in one workspace, with at most the user's role there. Looked up by its
-- random id, which the presented key carries.
CREATE TABLE api_keys (
    id BLOB NOT NULL PRIMARY KEY,
    workspace_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    name TEXT NOT NULL,
    key_hash BLOB NOT NULL,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys (workspace_id, user_id);

CREATE TABLE oauth_clients (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    secret_rotated_at INTEGER NOT NULL,
    revoked_at INTEGER,
    PRIMARY KEY (workspace_id, id)
);

CREATE TABLE oauth_tokens (
    workspace_id BLOB NOT NULL,
    jti_hash BLOB NOT NULL,
    client_id BLOB NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    PRIMARY KEY (workspace_id, jti_hash)
);
CREATE INDEX oauth_tokens_by_client ON oauth_tokens (workspace_id, client_id);

-- Invitations by an owner or admin: one use, until they expire. Only the SHA-256 of the
-- invitation secret is stored.
CREATE TABLE invites (
    workspace_id BLOB NOT NULL,
    secret_hash BLOB NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    accepted_at INTEGER,
    PRIMARY KEY (workspace_id, secret_hash)
);
