-- A link's clock row also keeps how many items the link binds (its rows in link_state), moved
-- in the same transaction as the bindings, so that a run need not count them. Counted here
-- once for the links that have bindings; a link without a clock row binds nothing.
ALTER TABLE sync_clocks ADD COLUMN bound INTEGER NOT NULL DEFAULT 0;
INSERT INTO sync_clocks (workspace_id, scope, n, bound)
    SELECT workspace_id, link_id, 0, COUNT(*) FROM link_state WHERE true GROUP BY workspace_id, link_id
    ON CONFLICT (workspace_id, scope) DO UPDATE SET bound = excluded.bound;
