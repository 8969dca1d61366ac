-- Every workspace-owned table leads with workspace_id in its key and indexes.
CREATE TABLE workspaces (
    id BLOB PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE contacts (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    version INTEGER NOT NULL,
    key_version INTEGER NOT NULL,
    body BLOB,
    content_mac BLOB NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX contacts_by_key_version ON contacts (workspace_id, key_version);

CREATE TABLE contact_index (
    workspace_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    value BLOB NOT NULL,
    contact_id BLOB NOT NULL,
    PRIMARY KEY (workspace_id, kind, value, contact_id)
) WITHOUT ROWID;
CREATE INDEX contact_index_by_contact ON contact_index (workspace_id, contact_id);
