-- A contact's blind-index entries, kept in its own row: one byte for the kind (0 email,
-- 1 phone, 2 uid) and the 32-byte keyed hash, per entry. Replacing or erasing a contact finds
-- the entries it must delete there, by the index's own key, so the index no longer needs a
-- second tree ordered by contact, which every import and sync wrote as much as the first.
ALTER TABLE contacts ADD COLUMN index_keys BLOB;
UPDATE contacts SET index_keys = (
    SELECT unhex(group_concat(
        CASE i.kind WHEN 'email' THEN '00' WHEN 'phone' THEN '01' WHEN 'uid' THEN '02'
            WHEN 'content' THEN '03' ELSE '04' END || hex(i.value), ''))
    FROM contact_index i
    WHERE i.workspace_id = contacts.workspace_id AND i.contact_id = contacts.id
);
DROP INDEX contact_index_by_contact;
