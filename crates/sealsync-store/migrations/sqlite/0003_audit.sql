-- Audit log: one hash chain per workspace (installation-wide events in the nil workspace's).
-- Entries hold ids and codes only, never secrets or contact fields. Rows are only ever
-- inserted; the head names the newest entry so that removing the newest ones is noticed too.
CREATE TABLE audit_log (
    workspace_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    key_version INTEGER NOT NULL,
    entry TEXT NOT NULL,
    prev_mac BLOB NOT NULL,
    mac BLOB NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);

CREATE TABLE audit_head (
    workspace_id BLOB NOT NULL PRIMARY KEY,
    seq INTEGER NOT NULL,
    key_version INTEGER NOT NULL,
    mac BLOB NOT NULL,
    head_mac BLOB NOT NULL
);
