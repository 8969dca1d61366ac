-- Audit log: one hash chain per workspace (installation-wide events in the nil workspace's).
-- Entries hold ids and codes only, never secrets or contact fields. Rows are only ever
-- inserted; the head names the newest entry so that removing the newest ones is noticed too.
CREATE TABLE audit_log (
    workspace_id BYTEA NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    key_version BIGINT NOT NULL,
    entry TEXT NOT NULL,
    prev_mac BYTEA NOT NULL,
    mac BYTEA NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);

CREATE TABLE audit_head (
    workspace_id BYTEA NOT NULL PRIMARY KEY,
    seq BIGINT NOT NULL,
    key_version BIGINT NOT NULL,
    mac BYTEA NOT NULL,
    head_mac BYTEA NOT NULL
);
