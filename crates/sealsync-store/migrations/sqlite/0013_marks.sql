-- Change clocks: per workspace, one for its hub contacts (scope empty) and one per link for
-- the link's state and conflicts (scope = link id). Each write transaction moves the clocks of
-- what it changed by one, in the same transaction.
CREATE TABLE sync_clocks (
    workspace_id BLOB NOT NULL,
    scope BLOB NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, scope)
) WITHOUT ROWID;

-- Per link, what its last run left settled: the clocks it saw and a keyed digest of the link's
-- configuration and its endpoint's listing. While both clocks and the digest are the same, a
-- run of the link has nothing to do. Only a cache: losing it costs one full run.
CREATE TABLE link_marks (
    workspace_id BLOB NOT NULL,
    link_id BLOB NOT NULL,
    hub_clock INTEGER NOT NULL,
    link_clock INTEGER NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (workspace_id, link_id)
);
