-- Single sign-on: which user an OpenID Connect account (issuer and subject) logs in as.
-- The account is kept only as SHA-256 over issuer and subject.
CREATE TABLE sso_identities (
    account_hash BYTEA NOT NULL PRIMARY KEY,
    user_id BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL
);
CREATE INDEX sso_identities_by_user ON sso_identities (user_id);
