-- Change clocks: per workspace, one for its hub contacts (scope empty) and one per link for
-- the link's state and conflicts (scope = link id). Each write transaction moves the clocks of
-- what it changed by one, in the same transaction.
CREATE TABLE sync_clocks (
    workspace_id BYTEA NOT NULL,
    scope BYTEA NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, scope)
);

-- Per link, what its last run left settled: the clocks it saw and a keyed digest of the link's
-- configuration and its endpoint's listing. While both clocks and the digest are the same, a
-- run of the link has nothing to do. Only a cache: losing it costs one full run.
CREATE TABLE link_marks (
    workspace_id BYTEA NOT NULL,
    link_id BYTEA NOT NULL,
    hub_clock BIGINT NOT NULL,
    link_clock BIGINT NOT NULL,
    digest BYTEA NOT NULL,
    PRIMARY KEY (workspace_id, link_id)
);
