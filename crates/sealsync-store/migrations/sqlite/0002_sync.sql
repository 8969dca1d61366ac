-- Sync: endpoints, links, per-link state, runs and their events, the conflict queue.
-- Configurations and event details are sealed like contacts; remote ids are kept only as keyed
-- hashes (the listing gives the ids themselves).
CREATE TABLE endpoints (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    config BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX endpoints_by_name ON endpoints (workspace_id, name);

CREATE TABLE links (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    endpoint_id BLOB NOT NULL,
    config BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX links_by_name ON links (workspace_id, name);
CREATE INDEX links_by_endpoint ON links (workspace_id, endpoint_id);

CREATE TABLE link_state (
    workspace_id BLOB NOT NULL,
    link_id BLOB NOT NULL,
    remote_key BLOB NOT NULL,
    contact_id BLOB NOT NULL,
    etag TEXT NOT NULL,
    remote_mac BLOB NOT NULL,
    hub_mac BLOB NOT NULL,
    PRIMARY KEY (workspace_id, link_id, remote_key)
);
CREATE UNIQUE INDEX link_state_by_contact ON link_state (workspace_id, link_id, contact_id);

CREATE TABLE runs (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    link_id BLOB NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    status TEXT NOT NULL,
    counts TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX runs_by_link ON runs (workspace_id, link_id, started_at);

CREATE TABLE run_events (
    workspace_id BLOB NOT NULL,
    run_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    contact_id BLOB,
    detail BLOB,
    at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, run_id, seq)
);

CREATE TABLE conflicts (
    workspace_id BLOB NOT NULL,
    link_id BLOB NOT NULL,
    contact_id BLOB NOT NULL,
    id BLOB NOT NULL,
    kind TEXT NOT NULL,
    resolution TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, link_id, contact_id)
);
CREATE UNIQUE INDEX conflicts_by_id ON conflicts (workspace_id, id);

-- One run per link at a time: the holder renews its claim while it works.
CREATE TABLE link_locks (
    workspace_id BLOB NOT NULL,
    link_id BLOB NOT NULL,
    holder TEXT NOT NULL,
    renewed_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, link_id)
);
