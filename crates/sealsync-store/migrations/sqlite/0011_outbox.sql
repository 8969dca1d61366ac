-- Webhook destinations. Each change a push link makes is kept as one delivery until the
-- receiver takes it: retried with backoff for up to 24 hours, then kept as dead until someone
-- replays it. `id` is a keyed hash naming the change (the same change queued twice is one
-- delivery); `seq` orders an endpoint's deliveries, which go out one after another. The body
-- is sealed, and dropped once delivered. `last_error` says what kind of failure it was, never
-- what the receiver answered.
CREATE TABLE webhook_deliveries (
    workspace_id BLOB NOT NULL,
    id BLOB NOT NULL,
    endpoint_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX webhook_deliveries_in_order ON webhook_deliveries (workspace_id, endpoint_id, seq);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
