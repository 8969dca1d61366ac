-- Webhook destinations. Each change a push link makes is kept as one delivery until the
-- receiver takes it: retried with backoff for up to 24 hours, then kept as dead until someone
-- replays it. `id` is a keyed hash naming the change (the same change queued twice is one
-- delivery); `seq` orders an endpoint's deliveries, which go out one after another. The body
-- is sealed, and dropped once delivered. `last_error` says what kind of failure it was, never
-- what the receiver answered.
CREATE TABLE webhook_deliveries (
    workspace_id BYTEA NOT NULL,
    id BYTEA NOT NULL,
    endpoint_id BYTEA NOT NULL,
    seq BIGINT NOT NULL,
    body BYTEA,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX webhook_deliveries_in_order ON webhook_deliveries (workspace_id, endpoint_id, seq);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
