-- Per link, what the endpoint's last listing left for the next one (a CardDAV sync token and
-- the listing at that token), sealed under the workspace's data key. Only a cache of the
-- endpoint's state: losing it costs one full listing.
CREATE TABLE link_cursors (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    cursor BLOB NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
