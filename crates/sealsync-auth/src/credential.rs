//! Bearer credentials: their wire formats, generation and the hashes that are stored.
//!
//! - User API key: `ssk_<key id, 32 hex>_<secret, 43 base64url>` — 256 random bits. The key id
//!   finds the row; only SHA-256 of the whole key is stored (a 256-bit random secret needs no
//!   slow hash), compared in constant time.
//! - OAuth client id: `ssc_<workspace id, 32 hex><client id, 32 hex>`; not secret, and it names
//!   its workspace so every lookup stays tenant-first.
//! - OAuth client secret: `sss_<43 base64url>` — 256 random bits, stored as an argon2id hash
//!   that is itself sealed under the workspace's key.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use sealsync_types::WorkspaceId;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Why a credential was not accepted as well-formed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the secure random generator failed")]
    Random,
    #[error("malformed credential")]
    Malformed,
}

/// Identifies a user API key (the public half of the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(Uuid);

impl KeyId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Parses the 32-hex-digit form shown in listings.
    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CredentialError::Malformed);
        }
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| CredentialError::Malformed)
    }
}

impl Default for KeyId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

/// A freshly made user API key: shown once, then only its hash exists.
#[derive(Debug)]
pub struct ApiKeySecret {
    pub id: KeyId,
    /// The whole key, `ssk_…`; printed once to its owner.
    pub token: SecretString,
    /// SHA-256 of the whole key: what is stored.
    pub hash: [u8; 32],
}

impl ApiKeySecret {
    pub const PREFIX: &'static str = "ssk_";

    pub fn generate() -> Result<Self, CredentialError> {
        let id = KeyId::new();
        let secret = random_b64()?;
        let token = format!("{}{id}_{secret}", Self::PREFIX);
        let hash = sha256(token.as_bytes());
        Ok(Self {
            id,
            token: SecretString::from(token),
            hash,
        })
    }

    /// The key id and hash of a presented key, if it has the right shape.
    pub fn parse(presented: &str) -> Result<(KeyId, [u8; 32]), CredentialError> {
        let rest = presented
            .strip_prefix(Self::PREFIX)
            .ok_or(CredentialError::Malformed)?;
        if rest.len() != 32 + 1 + 43 || rest.as_bytes()[32] != b'_' {
            return Err(CredentialError::Malformed);
        }
        let id = KeyId::parse(&rest[..32])?;
        if !rest[33..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CredentialError::Malformed);
        }
        Ok((id, sha256(presented.as_bytes())))
    }
}

/// A Connect token: `sct_<workspace id><token id>_<secret>`. It lets one external end user
/// connect their own account, and nothing else; shown once, only its hash is stored.
#[derive(Debug)]
pub struct ConnectTokenSecret {
    pub workspace: WorkspaceId,
    pub id: KeyId,
    pub token: SecretString,
    /// SHA-256 of the whole token: what is stored.
    pub hash: [u8; 32],
}

impl ConnectTokenSecret {
    pub const PREFIX: &'static str = "sct_";

    pub fn generate(workspace: WorkspaceId) -> Result<Self, CredentialError> {
        let id = KeyId::new();
        let secret = random_b64()?;
        let token = format!(
            "{}{}{id}_{secret}",
            Self::PREFIX,
            Uuid::from_bytes(*workspace.as_bytes()).simple()
        );
        let hash = sha256(token.as_bytes());
        Ok(Self {
            workspace,
            id,
            token: SecretString::from(token),
            hash,
        })
    }

    /// The workspace, token id and hash of a presented token, if it has the right shape.
    pub fn parse(presented: &str) -> Result<(WorkspaceId, KeyId, [u8; 32]), CredentialError> {
        let rest = presented
            .strip_prefix(Self::PREFIX)
            .ok_or(CredentialError::Malformed)?;
        if rest.len() != 64 + 1 + 43 || rest.as_bytes()[64] != b'_' {
            return Err(CredentialError::Malformed);
        }
        let ws = Uuid::try_parse(&rest[..32]).map_err(|_| CredentialError::Malformed)?;
        let id = KeyId::parse(&rest[32..64])?;
        if !rest[65..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CredentialError::Malformed);
        }
        Ok((
            WorkspaceId::from_bytes(*ws.as_bytes()),
            id,
            sha256(presented.as_bytes()),
        ))
    }
}

/// Constant-time equality of two stored hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// An OAuth client's public id, bound to its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId {
    pub workspace: WorkspaceId,
    pub id: [u8; 16],
}

impl ClientId {
    pub const PREFIX: &'static str = "ssc_";

    pub fn new(workspace: WorkspaceId) -> Self {
        Self {
            workspace,
            id: *Uuid::new_v4().as_bytes(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        let rest = s
            .strip_prefix(Self::PREFIX)
            .ok_or(CredentialError::Malformed)?;
        if rest.len() != 64 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CredentialError::Malformed);
        }
        let ws = Uuid::try_parse(&rest[..32]).map_err(|_| CredentialError::Malformed)?;
        let id = Uuid::try_parse(&rest[32..]).map_err(|_| CredentialError::Malformed)?;
        Ok(Self {
            workspace: WorkspaceId::from_bytes(*ws.as_bytes()),
            id: *id.as_bytes(),
        })
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            Self::PREFIX,
            Uuid::from_bytes(*self.workspace.as_bytes()).simple(),
            Uuid::from_bytes(self.id).simple()
        )
    }
}

/// A new client secret, shown once.
#[derive(Debug)]
pub struct ClientCredentials {
    pub client_id: ClientId,
    pub secret: SecretString,
}

impl ClientCredentials {
    pub const SECRET_PREFIX: &'static str = "sss_";

    pub fn new_secret() -> Result<SecretString, CredentialError> {
        Ok(SecretString::from(format!(
            "{}{}",
            Self::SECRET_PREFIX,
            random_b64()?
        )))
    }

    /// Whether a presented secret has the right shape (checked before any hashing).
    pub fn secret_well_formed(secret: &SecretString) -> bool {
        let s = secret.expose_secret();
        s.len() == 4 + 43
            && s.starts_with(Self::SECRET_PREFIX)
            && s[4..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}

/// SHA-256, for stored hashes of high-entropy secrets (API keys, token ids).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn random_b64() -> Result<String, CredentialError> {
    let mut bytes = [0u8; 32];
    sealsync_crypto::random_bytes(&mut bytes).map_err(|_| CredentialError::Random)?;
    Ok(B64URL.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_token_round_trip() {
        let ws = WorkspaceId::new();
        let t = ConnectTokenSecret::generate(ws).unwrap();
        let token = t.token.expose_secret();
        assert!(token.starts_with("sct_"));
        let (got_ws, id, hash) = ConnectTokenSecret::parse(token).unwrap();
        assert_eq!((got_ws, id), (ws, t.id));
        assert!(hashes_equal(&hash, &t.hash));
        for bad in [
            "",
            "sct_",
            "ssk_x",
            &token[..token.len() - 1],
            &token.replace('_', "-"),
        ] {
            assert!(ConnectTokenSecret::parse(bad).is_err(), "{bad}");
        }
        // An API key is not a Connect token, nor the other way round.
        let key = ApiKeySecret::generate().unwrap();
        assert!(ConnectTokenSecret::parse(key.token.expose_secret()).is_err());
        assert!(ApiKeySecret::parse(token).is_err());
    }

    #[test]
    fn api_key_round_trip() {
        let k = ApiKeySecret::generate().unwrap();
        let token = k.token.expose_secret();
        assert!(token.starts_with("ssk_"));
        assert_eq!(token.len(), 80);
        let (id, hash) = ApiKeySecret::parse(token).unwrap();
        assert_eq!(id, k.id);
        assert!(hashes_equal(&hash, &k.hash));
        let mut tampered = token.to_owned();
        tampered.pop();
        tampered.push('A');
        let (_, other) = ApiKeySecret::parse(&tampered).unwrap();
        assert!(!hashes_equal(&other, &k.hash) || token.ends_with('A'));
        for bad in [
            "",
            "ssk_",
            "ssk_zz",
            &token[..79],
            &format!("{token}x"),
            "Bearer x",
        ] {
            assert!(ApiKeySecret::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_id_round_trip() {
        let ws = WorkspaceId::new();
        let c = ClientId::new(ws);
        let s = c.to_string();
        assert_eq!(ClientId::parse(&s).unwrap(), c);
        assert!(ClientId::parse("ssc_1234").is_err());
        assert!(ClientId::parse(&s.replace("ssc_", "ssk_")).is_err());
    }

    #[test]
    fn secrets_are_hidden() {
        let k = ApiKeySecret::generate().unwrap();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(k.token.expose_secret()), "hides_content");
        let s = ClientCredentials::new_secret().unwrap();
        assert!(ClientCredentials::secret_well_formed(&s));
        assert!(!format!("{s:?}").contains(s.expose_secret()));
    }
}
