//! Identity for sealsync: who a request is, and what it may do.
//!
//! - [`password`]: argon2id hashes of user passwords (and of OAuth client secrets), with a dummy
//!   verification so an unknown user costs the same time as a wrong password.
//! - [`credential`]: the bearer secrets sealsync hands out — user API keys (`ssk_…`), OAuth
//!   client ids (`ssc_…`) and secrets (`sss_…`) — their formats, parsing and stored hashes.
//! - [`jwt`]: Ed25519-signed access tokens (`kid` header, one-hour lifetime), their verification
//!   and the JWKS that publishes the public keys.
//! - [`policy`]: scopes, the role each needs, and the one function that decides every request.
//!
//! Never logs, prints or returns a secret after it is first shown: every secret is held in a
//! redacting type and only hashes are stored.

pub mod credential;
pub mod directory;
pub mod jwt;
pub mod password;
pub mod policy;
pub mod totp;

pub use credential::{
    ApiKeySecret, ClientCredentials, ClientId, ConnectTokenSecret, CredentialError, KeyId,
};
pub use jwt::{AccessClaims, TOKEN_LIFETIME_SECS, TokenError, TokenKeys};
pub use password::{PasswordError, hash_password, verify_password};
pub use policy::{Denial, Principal, PrincipalKind, Scope, ScopeSet, authorize};
