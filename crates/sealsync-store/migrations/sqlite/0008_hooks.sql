-- Webhook sources. What signed deliveries brought, kept per endpoint until the endpoint's pull
-- link takes it into the hub: one row per item of the sending system, keyed by a keyed hash
-- of the endpoint and the item's id there. The contact is sealed; a deletion leaves the row
-- without one. `sent_at` is the delivery's signed time: an older delivery never overwrites a
-- newer one.
CREATE TABLE hook_items (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    endpoint_id BLOB NOT NULL,
    etag TEXT NOT NULL,
    item BLOB,
    sent_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX hook_items_by_endpoint ON hook_items (workspace_id, endpoint_id);

-- Delivery ids seen (keyed hashes), with the answer given, for 24 hours: a repeated delivery
-- gets the same answer and changes nothing.
CREATE TABLE hook_receipts (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    endpoint_id BLOB NOT NULL,
    answer TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX hook_receipts_by_time ON hook_receipts (workspace_id, received_at);

-- Webhook deliveries name the endpoint alone: find its workspace.
CREATE INDEX endpoints_by_id ON endpoints (id);
