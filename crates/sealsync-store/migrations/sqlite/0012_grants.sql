-- OAuth grants. `status` says why an account cannot be used until it is connected again
-- (`revoked`: the app refused its grant); NULL when it can. `lease_until` (milliseconds) lets
-- one process at a time refresh an account's tokens, so a rotating refresh token is spent once.
ALTER TABLE accounts ADD COLUMN status TEXT;
ALTER TABLE accounts ADD COLUMN lease_until INTEGER;
