//! argon2id password hashing (m = 19 MiB, t = 2, p = 1: the OWASP baseline).
//!
//! Hashing is CPU-bound for tens of milliseconds: async callers run it on a blocking thread.

use std::sync::OnceLock;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the secure random generator failed")]
    Random,
    #[error("password hashing failed")]
    Hash,
}

/// Passwords longer than this are refused before hashing (argon2 itself would take them, but a
/// megabyte "password" is an attack, not a password).
pub const MAX_PASSWORD_LEN: usize = 1024;

fn hasher() -> Argon2<'static> {
    // Fixed, valid parameters: `Params::new` cannot fail for them.
    let params = Params::new(19 * 1024, 2, 1, Some(32)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// An argon2id hash in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
pub fn hash_password(password: &SecretString) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    sealsync_crypto::random_bytes(&mut salt).map_err(|_| PasswordError::Random)?;
    let bytes = password.expose_secret().as_bytes();
    let bytes = &bytes[..bytes.len().min(MAX_PASSWORD_LEN)];
    hasher()
        .hash_password_with_salt(bytes, &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches `hash`. With `None` (no such user), a dummy hash is checked so
/// the caller takes the same time either way; the answer is then always `false`.
pub fn verify_password(hash: Option<&str>, password: &SecretString) -> bool {
    let bytes = password.expose_secret().as_bytes();
    if bytes.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match hash {
        Some(h) => hasher().verify_password(bytes, h).is_ok(),
        None => {
            if let Some(dummy) = dummy_hash() {
                let _ = hasher().verify_password(bytes, dummy);
            }
            false
        }
    }
}

/// A hash of a random password nobody knows, with the same parameters, made once per process.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let mut pw = [0u8; 32];
            sealsync_crypto::random_bytes(&mut pw).ok()?;
            let pw = SecretString::from(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                pw,
            ));
            hash_password(&pw).ok()
        })
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let pw = SecretString::from("correct horse battery staple");
        let a = hash_password(&pw).unwrap();
        let b = hash_password(&pw).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_ne!(a, b, "salted");
        assert!(verify_password(Some(&a), &pw));
        assert!(!verify_password(Some(&a), &SecretString::from("wrong")));
        assert!(!verify_password(None, &pw));
        assert!(!verify_password(Some("not a hash"), &pw));
    }

    #[test]
    fn dummy_hash_exists() {
        assert!(dummy_hash().is_some_and(|h| h.starts_with("$argon2id$")));
    }
}
