//! Access tokens: JWTs signed with Ed25519, one hour long, verified against our own keys only.
//!
//! Signing keys are 32-byte seeds kept wrapped in the keystore (one version per rotation). The
//! newest version signs; older versions stay published in the JWKS, and keep verifying, until
//! every token they signed has expired. Verification accepts exactly `alg: EdDSA` with a known
//! `kid`: `none`, HMAC algorithms (the "HS256 with the public key" trick) and unknown keys are
//! refused before any signature check.

use std::collections::HashSet;
use std::fmt;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sealsync_crypto::KeyBytes;
use serde::{Deserialize, Serialize};

/// How long an access token lives.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY_SECS: u64 = 30;

/// Audience of every access token: the sealsync API.
pub const AUDIENCE: &str = "sealsync-api";

/// Why a token was refused. The variants are for logs and audit reasons; clients see one
/// `invalid_token` answer whatever the cause.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid for this issuer or audience")]
    Claims,
    #[error("no signing key")]
    NoKey,
    #[error("signing failed")]
    Sign,
}

impl TokenError {
    /// A short code for audit entries.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::UnknownKey => "unknown_kid",
            TokenError::Signature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::Claims => "bad_claims",
            TokenError::NoKey => "no_key",
            TokenError::Sign => "sign_failed",
        }
    }
}

/// The claims of a sealsync access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The OAuth client id (`ssc_…`).
    pub sub: String,
    /// The workspace the client belongs to (UUID).
    pub ws: String,
    /// Space-separated scopes.
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    /// Random token id; stored only as a hash, for revocation.
    pub jti: String,
}

struct SigningKey {
    version: u32,
    kid: String,
    created_at: i64,
    public: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The installation's token signing keys, oldest first.
pub struct TokenKeys {
    issuer: String,
    keys: Vec<SigningKey>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field(
                "kids",
                &self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TokenKeys {
    /// Keys from their seeds: `(version, seed, created_at seconds)`.
    pub fn from_seeds(
        issuer: impl Into<String>,
        seeds: Vec<(u32, KeyBytes, i64)>,
    ) -> Result<Self, TokenError> {
        let mut keys = Vec::with_capacity(seeds.len());
        for (version, seed, created_at) in seeds {
            let pair = Ed25519KeyPair::from_seed_unchecked(seed.expose())
                .map_err(|_| TokenError::NoKey)?;
            // jsonwebtoken reads PKCS#8 v1 for Ed25519.
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| TokenError::NoKey)?;
            let public = pair.public_key().as_ref().to_vec();
            let kid = sealsync_crypto::key_id(&public);
            keys.push(SigningKey {
                version,
                kid,
                created_at,
                encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
                decoding: DecodingKey::from_ed_der(&public),
                public,
            });
        }
        keys.sort_by_key(|k| k.version);
        Ok(Self {
            issuer: issuer.into(),
            keys,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The version and kid of the signing key.
    pub fn current(&self) -> Option<(u32, &str)> {
        self.keys.last().map(|k| (k.version, k.kid.as_str()))
    }

    /// Signs `claims` with the newest key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let key = self.keys.last().ok_or(TokenError::NoKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|_| TokenError::Sign)
    }

    /// Verifies signature, algorithm, key, issuer, audience and lifetime.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[AUDIENCE]);
        v.required_spec_claims = ["exp", "iat", "iss", "aud", "sub"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>();
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::InvalidSignature => TokenError::Signature,
                K::InvalidIssuer | K::InvalidAudience | K::MissingRequiredClaim(_) => {
                    TokenError::Claims
                }
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        let now = now_secs();
        // A token from the future, or claiming to live longer than we issue, is not ours.
        if claims.iat > now + LEEWAY_SECS as i64 || claims.exp - claims.iat > TOKEN_LIFETIME_SECS {
            return Err(TokenError::Claims);
        }
        Ok(claims)
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self
                .keys
                .iter()
                .map(|k| Jwk {
                    common: CommonParameters {
                        public_key_use: Some(PublicKeyUse::Signature),
                        key_algorithm: Some(KeyAlgorithm::EdDSA),
                        key_id: Some(k.kid.clone()),
                        ..Default::default()
                    },
                    algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                        key_type: OctetKeyPairType::OctetKeyPair,
                        curve: EllipticCurve::Ed25519,
                        x: B64URL.encode(&k.public),
                    }),
                })
                .collect(),
        }
    }

    /// Versions no longer needed: superseded by a key that has been signing for longer than a
    /// token lives (so every token they signed has expired).
    pub fn retirable(&self, now: i64) -> Vec<u32> {
        let mut out = Vec::new();
        for pair in self.keys.windows(2) {
            let (old, next) = (&pair[0], &pair[1]);
            if next.created_at + TOKEN_LIFETIME_SECS + LEEWAY_SECS as i64 <= now {
                out.push(old.version);
            }
        }
        out
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(versions: &[(u32, i64)]) -> TokenKeys {
        TokenKeys::from_seeds(
            "https://sealsync.test",
            versions
                .iter()
                .map(|(v, at)| (*v, KeyBytes::generate().unwrap(), *at))
                .collect(),
        )
        .unwrap()
    }

    fn claims(iat: i64, exp: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://sealsync.test".into(),
            aud: AUDIENCE.into(),
            sub: "ssc_x".into(),
            ws: "w".into(),
            scope: "contacts:read".into(),
            iat,
            exp,
            jti: "j".into(),
        }
    }

    fn b64(v: &serde_json::Value) -> String {
        B64URL.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn signs_and_verifies() {
        let k = keys(&[(1, 0)]);
        let now = now_secs();
        let t = k.sign(&claims(now, now + 3600)).unwrap();
        assert_eq!(k.verify(&t).unwrap().sub, "ssc_x");
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), k.current().map(|c| c.1));
    }

    #[test]
    fn refuses_forgeries() {
        let k = keys(&[(1, 0)]);
        let now = now_secs();
        let good = k.sign(&claims(now, now + 3600)).unwrap();
        let kid = k.current().unwrap().1.to_owned();
        let body = good.split('.').nth(1).unwrap().to_owned();

        // Expired.
        let old = k.sign(&claims(now - 7200, now - 3600)).unwrap();
        assert_eq!(k.verify(&old), Err(TokenError::Expired));
        // Too long a lifetime.
        let long = k.sign(&claims(now, now + 86_400)).unwrap();
        assert_eq!(k.verify(&long), Err(TokenError::Claims));
        // alg: none.
        let none = format!(
            "{}.{body}.",
            b64(&serde_json::json!({"alg": "none", "kid": kid}))
        );
        assert!(matches!(
            k.verify(&none),
            Err(TokenError::Algorithm | TokenError::Malformed)
        ));
        // HS256 keyed with the public key (the classic confusion attack).
        let public = k.jwks().keys[0].clone();
        let AlgorithmParameters::OctetKeyPair(p) = &public.algorithm else {
            panic!("okp")
        };
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        let hs = jsonwebtoken::encode(
            &h,
            &claims(now, now + 3600),
            &EncodingKey::from_secret(p.x.as_bytes()),
        )
        .unwrap();
        assert_eq!(k.verify(&hs), Err(TokenError::Algorithm));
        // Signed by another key with our kid.
        let other = keys(&[(1, 0)]);
        let forged = other.sign(&claims(now, now + 3600)).unwrap();
        let mut parts: Vec<&str> = forged.split('.').collect();
        let our_header = good.split('.').next().unwrap();
        parts[0] = our_header;
        assert_eq!(k.verify(&parts.join(".")), Err(TokenError::Signature));
        // Unknown kid.
        assert_eq!(k.verify(&forged), Err(TokenError::UnknownKey));
        // Edited claims.
        let mut c = claims(now, now + 3600);
        c.ws = "another".into();
        let edited = format!(
            "{}.{}.{}",
            our_header,
            b64(&serde_json::to_value(&c).unwrap()),
            good.split('.').nth(2).unwrap()
        );
        assert_eq!(k.verify(&edited), Err(TokenError::Signature));
        // Wrong issuer.
        let mut c = claims(now, now + 3600);
        c.iss = "https://evil.test".into();
        assert_eq!(k.verify(&k.sign(&c).unwrap()), Err(TokenError::Claims));
        // Garbage.
        for g in ["", "a.b", "a.b.c", "....", &"x".repeat(5000)] {
            assert!(k.verify(g).is_err());
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_retired() {
        let now = now_secs();
        let k1 = keys(&[(1, now - 10_000)]);
        let t1 = k1.sign(&claims(now, now + 3600)).unwrap();
        // Same seed for v1 is needed to verify: rebuild from shared seeds.
        let seed1 = KeyBytes::generate().unwrap();
        let seed1b = KeyBytes::from_slice(seed1.expose()).unwrap();
        let seed2 = KeyBytes::generate().unwrap();
        let before =
            TokenKeys::from_seeds("https://sealsync.test", vec![(1, seed1, now - 10_000)]).unwrap();
        let t = before.sign(&claims(now, now + 3600)).unwrap();
        let after = TokenKeys::from_seeds(
            "https://sealsync.test",
            vec![(1, seed1b, now - 10_000), (2, seed2, now)],
        )
        .unwrap();
        assert!(after.verify(&t).is_ok(), "old key still verifies");
        assert_eq!(after.jwks().keys.len(), 2);
        assert!(after.retirable(now).is_empty());
        assert_eq!(after.retirable(now + TOKEN_LIFETIME_SECS + 60), vec![1]);
        let new = after.sign(&claims(now, now + 3600)).unwrap();
        assert_ne!(
            jsonwebtoken::decode_header(&new).unwrap().kid,
            jsonwebtoken::decode_header(&t).unwrap().kid
        );
        assert!(after.verify(&t1).is_err(), "unrelated key");
    }

    #[test]
    fn debug_hides_keys() {
        let k = keys(&[(1, 0)]);
        let d = format!("{k:?}");
        assert!(d.contains("kids") && !d.contains("encoding"));
    }
}
