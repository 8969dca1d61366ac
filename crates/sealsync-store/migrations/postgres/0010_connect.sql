-- Connect tokens: each lets one external end user connect their own accounts (the apps named)
-- for a few hours. Only the token's hash is kept; the user is a keyed hash (`user_tag`), never
-- the id the customer's system gave.
CREATE TABLE connect_tokens (
    workspace_id BYTEA NOT NULL,
    id BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    user_tag TEXT NOT NULL,
    apps TEXT NOT NULL,
    origins TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX connect_tokens_by_user ON connect_tokens (workspace_id, user_tag);
