-- Connected accounts: credentials for external systems. The secret (and the user name with it)
-- is sealed under the workspace's data key; `hint` is a masked reminder safe to show.
CREATE TABLE accounts (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    secret BLOB NOT NULL,
    hint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    rotated_at INTEGER,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX accounts_by_name ON accounts (workspace_id, name);
