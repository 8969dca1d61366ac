-- Each hub contact carries the hub clock its last write moved it to, so that a link whose
-- mark is older can read only the contacts written since.
ALTER TABLE contacts ADD COLUMN hub_clock BIGINT NOT NULL DEFAULT 0;
CREATE INDEX contacts_by_hub_clock ON contacts (workspace_id, hub_clock);

-- An import matches a card without a UID to a live contact with the same contents: by index,
-- not by reading every contact of the workspace for each batch.
CREATE INDEX contacts_by_content ON contacts (workspace_id, content_mac) WHERE deleted = 0;

-- A mark now also keeps the digest of the link's settings alone and the listing's members
-- (sorted, 16 bytes each, keyed), so that a later run can tell which items changed without
-- reading the link's whole state. Marks kept before contacts carried their clock cannot say
-- what changed since: they are dropped (each costs one full run).
DELETE FROM link_marks;
ALTER TABLE link_marks ADD COLUMN settings BYTEA;
ALTER TABLE link_marks ADD COLUMN members BYTEA;
