-- Every workspace-owned table leads with workspace_id in its key and indexes.
CREATE TABLE workspaces (
    id BYTEA PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE contacts (
    workspace_id BYTEA NOT NULL,
    id BYTEA NOT NULL,
    version BIGINT NOT NULL,
    key_version BIGINT NOT NULL,
    body BYTEA,
    content_mac BYTEA NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX contacts_by_key_version ON contacts (workspace_id, key_version);

CREATE TABLE contact_index (
    workspace_id BYTEA NOT NULL,
    kind TEXT NOT NULL,
    value BYTEA NOT NULL,
    contact_id BYTEA NOT NULL,
    PRIMARY KEY (workspace_id, kind, value, contact_id)
);
CREATE INDEX contact_index_by_contact ON contact_index (workspace_id, contact_id);
