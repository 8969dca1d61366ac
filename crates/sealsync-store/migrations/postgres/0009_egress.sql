-- Per workspace, the host names its connections may reach (names and `*.suffix` patterns, one
-- per line); NULL: any public host.
ALTER TABLE workspaces ADD COLUMN egress_hosts TEXT;
