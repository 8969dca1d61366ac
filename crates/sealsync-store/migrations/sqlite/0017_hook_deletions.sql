-- A deletion a webhook delivery brought is kept (a hook_items row without an item) only so
-- that an older delivery cannot bring the item back. Once older than the delivery ids kept
-- (24 hours), no delivery still accepted is signed before it, and it is pruned with them.
-- The index holds the deletions alone.
CREATE INDEX hook_items_deleted ON hook_items (workspace_id, received_at) WHERE item IS NULL;
