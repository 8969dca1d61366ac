-- A run is recorded as running only while its process holds the link's claim; a run a server
-- has accepted but not begun is queued, with the server's process (`host:pid`) as its holder.
-- Whoever claims the link next marks the link's runs still recorded as running, and those
-- queued by a process that is gone, as interrupted: they stopped without saying so (a crash,
-- a shutdown). The index finds them without reading every run.
ALTER TABLE runs ADD COLUMN holder TEXT;
CREATE INDEX runs_open ON runs (workspace_id, link_id) WHERE status IN ('running', 'queued');
