-- Identity: users, workspace memberships, user API keys, OAuth clients and issued tokens.
-- Secrets are never stored: API keys and token ids as SHA-256, passwords as argon2id, client
-- secrets as an argon2id hash sealed under the workspace's data key.
CREATE TABLE users (
    id BYTEA NOT NULL PRIMARY KEY,
    email TEXT NOT NULL,
    password_hash TEXT,
    created_at BIGINT NOT NULL,
    disabled_at BIGINT,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    -- TOTP secret, sealed under the installation's secrets key; enabled once verified.
    totp_secret BYTEA,
    totp_enabled_at BIGINT,
    -- The last accepted time step: a code is accepted once.
    totp_last_step BIGINT,
    -- SHA-256 (hex, space-separated) of the unused recovery codes.
    recovery_codes TEXT
);
CREATE UNIQUE INDEX users_by_email ON users (email);

-- Web-console sessions: only the SHA-256 of the cookie value is stored.
CREATE TABLE sessions (
    id_hash BYTEA NOT NULL PRIMARY KEY,
    user_id BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE memberships (
    workspace_id BYTEA NOT NULL,
    user_id BYTEA NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

-- A key acts as its user in one workspace, with at most the user's role there. Looked up by its
-- random id, which the presented key carries.
CREATE TABLE api_keys (
    id BYTEA NOT NULL PRIMARY KEY,
    workspace_id BYTEA NOT NULL,
    user_id BYTEA NOT NULL,
    name TEXT NOT NULL,
    key_hash BYTEA NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (workspace_id, user_id);

CREATE TABLE oauth_clients (
    workspace_id BYTEA NOT NULL,
    id BYTEA NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    secret_rotated_at BIGINT NOT NULL,
    revoked_at BIGINT,
    PRIMARY KEY (workspace_id, id)
);

CREATE TABLE oauth_tokens (
    workspace_id BYTEA NOT NULL,
    jti_hash BYTEA NOT NULL,
    client_id BYTEA NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    PRIMARY KEY (workspace_id, jti_hash)
);
CREATE INDEX oauth_tokens_by_client ON oauth_tokens (workspace_id, client_id);

-- Invitations by an owner or admin: one use, until they expire. Only the SHA-256 of the
-- invitation secret is stored.
CREATE TABLE invites (
    workspace_id BYTEA NOT NULL,
    secret_hash BYTEA NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    PRIMARY KEY (workspace_id, secret_hash)
);
