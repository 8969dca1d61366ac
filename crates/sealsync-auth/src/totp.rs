//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30-second steps, one step of skew) and
//! recovery codes.
//!
//! A secret is 160 random bits, shown once as an `otpauth://` URI for an authenticator app and
//! then kept sealed. A code is accepted once (the caller stores the step). Recovery codes are
//! 80 random bits each, shown once, stored as SHA-256.

use base64::Engine as _;
use totp_rs::{Builder, Totp};
use zeroize::Zeroizing;

use crate::credential::sha256;

/// Why a TOTP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("the secure random generator failed")]
    Random,
    #[error("the TOTP secret is unusable")]
    Secret,
}

/// A fresh secret.
pub fn new_secret() -> Result<Zeroizing<Vec<u8>>, TotpError> {
    let mut s = Zeroizing::new(vec![0u8; 20]);
    sealsync_crypto::random_bytes(&mut s).map_err(|_| TotpError::Random)?;
    Ok(s)
}

fn totp(secret: &[u8], account: &str) -> Result<Totp, TotpError> {
    Builder::new()
        .with_secret(secret.to_vec())
        .with_account_name(account)
        .with_issuer(Some("sealsync"))
        .build()
        .map_err(|_| TotpError::Secret)
}

/// The `otpauth://totp/…` URI an authenticator app (or its QR code) takes.
pub fn otpauth_uri(secret: &[u8], account: &str) -> Result<String, TotpError> {
    totp(secret, account)?
        .to_url()
        .map_err(|_| TotpError::Secret)
}

/// The time step `code` is valid for at `now` (seconds), if any.
pub fn check(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "-").ok()?.check(code, now)
}

/// The code for `now` (for tests and tools).
pub fn code_at(secret: &[u8], now: u64) -> Option<String> {
    Some(totp(secret, "-").ok()?.generate(now).to_string())
}

/// Ten recovery codes: shown once; the second value is what is stored.
pub fn recovery_codes() -> Result<(Vec<String>, String), TotpError> {
    let mut shown = Vec::new();
    let mut stored = Vec::new();
    for _ in 0..10 {
        let mut raw = [0u8; 10];
        sealsync_crypto::random_bytes(&mut raw).map_err(|_| TotpError::Random)?;
        let code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        stored.push(hex::encode(sha256(code.as_bytes())));
        shown.push(code);
    }
    Ok((shown, stored.join(" ")))
}

/// The stored list without `code`, if `code` is in it.
pub fn use_recovery_code(stored: &str, code: &str) -> Option<String> {
    let h = hex::encode(sha256(code.trim().as_bytes()));
    let list: Vec<&str> = stored.split(' ').filter(|s| !s.is_empty()).collect();
    if !list.contains(&h.as_str()) {
        return None;
    }
    Some(
        list.into_iter()
            .filter(|s| *s != h)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_verify_once_per_step_window() {
        let s = new_secret().unwrap();
        let now = 1_800_000_000;
        let code = code_at(&s, now).unwrap();
        assert_eq!(check(&s, &code, now), Some(now / 30));
        assert!(check(&s, &code, now + 30).is_some(), "one step of skew");
        assert!(check(&s, &code, now + 300).is_none());
        assert!(check(&s, "12345", now).is_none());
        assert!(check(&s, "abcdef", now).is_none());
        let uri = otpauth_uri(&s, "ann@example.test").unwrap();
        assert!(uri.starts_with("otpauth://totp/") && uri.contains("issuer=sealsync"));
    }

    #[test]
    fn recovery_codes_work_once() {
        let (shown, stored) = recovery_codes().unwrap();
        assert_eq!(shown.len(), 10);
        assert!(!stored.contains(&shown[0]));
        let rest = use_recovery_code(&stored, &shown[0]).unwrap();
        assert!(use_recovery_code(&rest, &shown[0]).is_none());
        assert!(use_recovery_code(&rest, &shown[1]).is_some());
    }
}
