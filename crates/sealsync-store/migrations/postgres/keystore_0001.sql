-- Wrapped (encrypted) workspace keys, kept apart from the data they protect.
CREATE TABLE workspace_keys (
    workspace_id BYTEA NOT NULL,
    purpose TEXT NOT NULL,
    version BIGINT NOT NULL,
    kek TEXT NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, purpose, version)
);
