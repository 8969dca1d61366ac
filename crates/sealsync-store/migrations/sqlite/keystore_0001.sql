-- Wrapped (encrypted) workspace keys, kept apart from the data they protect.
CREATE TABLE workspace_keys (
    workspace_id BLOB NOT NULL,
    purpose TEXT NOT NULL,
    version INTEGER NOT NULL,
    kek TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, purpose, version)
);
