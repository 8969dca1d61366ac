//! Sealing: how sealsync keeps data unreadable at rest.
//!
//! - A **KEK** (key-encryption key) lives with a [`KeyProvider`]: a local keyfile (default),
//!   an environment variable, or a KMS. It only ever wraps data keys.
//! - Each workspace has **DEKs** (data-encryption keys, versioned) and one **index root**, both
//!   stored wrapped by the KEK in a keystore apart from the data. Destroying them makes every
//!   copy of the workspace's data unreadable (crypto-shredding).
//! - [`WorkspaceKeys::seal`] encrypts one value with AES-256-GCM under the newest DEK, a random
//!   96-bit nonce, and AAD that binds table, workspace, record, field and key version: a
//!   ciphertext moved to another row, field or tenant fails to open. Stored format:
//!   `0x01 | key version (u32 BE) | nonce (12) | ciphertext | tag (16)`.
//! - [`BlindIndex`] gives HMAC-SHA256 keys over normalized email / phone / UID so lookups never
//!   need plaintext.
//!
//! Key material is zeroized on drop, never `Clone`, never printed.

mod keys;
#[cfg(feature = "aws-kms")]
mod kms;
mod provider;
mod seal;

pub use keys::{BlindIndex, IndexKind, KeyBytes, SetSum, WorkspaceKeys};
#[cfg(feature = "aws-kms")]
pub use kms::{AwsKmsConfig, AwsKmsProvider, testing as kms_testing};
pub use provider::{
    EnvKeyProvider, KeyError, KeyProvider, LocalKeyfile, WrappedKey, check_private_file,
};
pub use seal::{CryptoError, RecordRef, SEALED_V1, sealed_key_version};

/// The id of a public signing key, as JWKS `kid` and webhook `webhook-key-id` name it: the
/// first 16 bytes of SHA-256 of the key, base64url without padding.
pub fn key_id(public: &[u8]) -> String {
    use base64::Engine as _;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..16])
}

/// Fills `out` from the system's secure random generator.
pub fn random_bytes(out: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(out).map_err(|_| CryptoError::Random)
}
