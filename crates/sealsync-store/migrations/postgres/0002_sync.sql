-- Sync: endpoints, links, per-link state, runs and their events, the conflict queue.
-- Configurations and event details are sealed like contacts; remote ids are kept only as keyed
-- hashes (the listing gives the ids themselves).
CREATE TABLE endpoints (
    workspace_id BYTEA NOT NULL,
    id BYTEA NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    config BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX endpoints_by_name ON endpoints (workspace_id, name);

CREATE TABLE links (
    workspace_id BYTEA NOT NULL,
    id BYTEA NOT NULL,
    name TEXT NOT NULL,
    endpoint_id BYTEA NOT NULL,
    config BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX links_by_name ON links (workspace_id, name);
CREATE INDEX links_by_endpoint ON links (workspace_id, endpoint_id);

CREATE TABLE link_state (
    workspace_id BYTEA NOT NULL,
    link_id BYTEA NOT NULL,
    remote_key BYTEA NOT NULL,
    contact_id BYTEA NOT NULL,
    etag TEXT NOT NULL,
    remote_mac BYTEA NOT NULL,
    hub_mac BYTEA NOT NULL,
    PRIMARY KEY (workspace_id, link_id, remote_key)
);
CREATE UNIQUE INDEX link_state_by_contact ON link_state (workspace_id, link_id, contact_id);

CREATE TABLE runs (
    workspace_id BYTEA NOT NULL,
    id BYTEA NOT NULL,
    link_id BYTEA NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    status TEXT NOT NULL,
    counts TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX runs_by_link ON runs (workspace_id, link_id, started_at);

CREATE TABLE run_events (
    workspace_id BYTEA NOT NULL,
    run_id BYTEA NOT NULL,
    seq BIGINT NOT NULL,
    action TEXT NOT NULL,
    contact_id BYTEA,
    detail BYTEA,
    at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, run_id, seq)
);

CREATE TABLE conflicts (
    workspace_id BYTEA NOT NULL,
    link_id BYTEA NOT NULL,
    contact_id BYTEA NOT NULL,
    id BYTEA NOT NULL,
    kind TEXT NOT NULL,
    resolution TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, link_id, contact_id)
);
CREATE UNIQUE INDEX conflicts_by_id ON conflicts (workspace_id, id);

-- One run per link at a time: the holder renews its claim while it works.
CREATE TABLE link_locks (
    workspace_id BYTEA NOT NULL,
    link_id BYTEA NOT NULL,
    holder TEXT NOT NULL,
    renewed_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, link_id)
);
