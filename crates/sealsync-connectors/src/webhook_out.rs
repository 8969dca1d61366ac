//! Outbound webhooks: each change pushed to a receiver as one signed `POST`.
//!
//! - Headers as the Standard Webhooks specification has them: `webhook-id` (stable across
//!   retries: the receiver's idempotency key), `webhook-timestamp` (the attempt's time) and
//!   `webhook-signature`, which holds two signatures over `id.timestamp.body`: `v1,` an
//!   HMAC-SHA256 under the shared secret, and `v1a,` an Ed25519 signature under the
//!   installation's signing key. `webhook-key-id` names that key as the JWKS at
//!   `/.well-known/jwks.json` does (`kid`), so a receiver can check it without a shared secret.
//! - Bodies are what a webhook source reads: `{"contacts": [jCard]}` for a contact created or
//!   changed, `{"deleted": ["UID"]}` for one removed.
//! - [`Sender::send`] makes one attempt and says what to do next: done, try again (after the
//!   receiver's `Retry-After` where it gave one: network errors, 408, 429 and 5xx), or give up
//!   (any other answer, or an address the egress policy refuses). Scheduling the retries is
//!   the caller's: they must outlive a run.
//!
//! Every request goes through [`Egress`]. Nothing from the body or the receiver's answer is
//! put in an outcome: only the status and what kind of failure it was.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use sealsync_connector::ConnectorError;
use sealsync_connector::egress::{Egress, EgressPolicy, SendError};
use sealsync_contact::Contact;
use sealsync_contact::jcard::to_jcard;

use crate::webhook::{
    ID_HEADER, SIGNATURE_HEADER, Signed, SigningSecret, TIMESTAMP_HEADER, TOLERANCE_SECS,
    WebhookError,
};

/// The header naming the Ed25519 key (`kid` in the JWKS).
pub const KEY_ID_HEADER: &str = "webhook-key-id";
/// The longest `Retry-After` taken as given; longer waits are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The installation's Ed25519 signing key, as outbound webhooks use it. Never printed.
pub struct SignKey {
    pair: Ed25519KeyPair,
    kid: String,
}

impl fmt::Debug for SignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SignKey {
    /// The key from its 32-byte seed, named by `kid_of` its public key.
    pub fn from_seed(seed: &[u8], kid_of: fn(&[u8]) -> String) -> Result<Self, ConnectorError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| ConnectorError::Config("the webhook signing key is not usable".into()))?;
        let kid = kid_of(pair.public_key().as_ref());
        Ok(Self { pair, kid })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver took it (2xx).
    Delivered,
    /// Worth trying again: after `after` when the receiver said so.
    Retry {
        after: Option<Duration>,
        status: Option<u16>,
        why: String,
    },
    /// Trying again will not help until something changes (the receiver refused the request,
    /// or the egress policy refuses the address).
    GiveUp { status: Option<u16>, why: String },
}

/// Sends signed deliveries to one receiver.
pub struct Sender {
    egress: Egress,
    url: String,
    secret: SigningSecret,
    key: SignKey,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender to `url`, once `policy` allows it.
    pub fn new(
        url: &str,
        secret: SigningSecret,
        key: SignKey,
        policy: EgressPolicy,
    ) -> Result<Self, ConnectorError> {
        check_url(url, &policy)?;
        let egress = Egress::new(policy).map_err(|e| ConnectorError::Config(e.to_string()))?;
        Ok(Self {
            egress,
            url: url.to_owned(),
            secret,
            key,
        })
    }

    /// One attempt to deliver `body` as delivery `id`, signed at `now` (Unix seconds).
    pub async fn send(&self, id: &str, body: &[u8], now: i64) -> Outcome {
        let request = match self.egress.request(reqwest::Method::POST, &self.url) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::GiveUp {
                    status: None,
                    why: format!("refused by the egress policy: {e}"),
                };
            }
        };
        let request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, id)
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(
                SIGNATURE_HEADER,
                signatures(&self.secret, &self.key, id, now, body),
            )
            .header(KEY_ID_HEADER, self.key.kid())
            .body(body.to_vec())
            .timeout(Duration::from_secs(30));
        let request = match request.build() {
            Ok(r) => r,
            Err(_) => {
                return Outcome::GiveUp {
                    status: None,
                    why: "the request cannot be built".into(),
                };
            }
        };
        match self.egress.execute(request).await {
            Ok(response) => {
                let status = response.status();
                let after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, SystemTime::now()));
                judge(status.as_u16(), after)
            }
            Err(SendError::Refused(e)) => Outcome::GiveUp {
                status: None,
                why: format!("refused by the egress policy: {e}"),
            },
            Err(SendError::Http(kind)) => Outcome::Retry {
                after: None,
                status: None,
                why: kind,
            },
        }
    }
}

/// What an answer with `status` means.
fn judge(status: u16, after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry {
            after,
            status: Some(status),
            why: format!("the receiver answered {status}"),
        },
        _ => Outcome::GiveUp {
            status: Some(status),
            why: format!("the receiver answered {status}"),
        },
    }
}

/// Checks a receiver URL against the policy without connecting.
pub fn check_url(url: &str, policy: &EgressPolicy) -> Result<(), ConnectorError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| ConnectorError::Config("the webhook URL is not valid".into()))?;
    policy
        .check(&parsed)
        .map_err(|e| ConnectorError::Config(e.to_string()))
}

/// The `webhook-signature` value: the HMAC (`v1,`) and the Ed25519 signature (`v1a,`).
pub fn signatures(secret: &SigningSecret, key: &SignKey, id: &str, ts: i64, body: &[u8]) -> String {
    let signature = key.pair.sign(&message(id, ts, body));
    format!(
        "{} v1a,{}",
        secret.sign(id, ts, body),
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    )
}

/// Checks a delivery's `v1a` signature with the public key `public` (from the JWKS entry the
/// `webhook-key-id` header names), at `now` (Unix seconds); gives its id and time.
pub fn verify_asymmetric<'a>(
    public: &[u8],
    headers: Signed<'a>,
    body: &[u8],
    now: i64,
) -> Result<(&'a str, i64), WebhookError> {
    let id = headers.id.ok_or(WebhookError::Missing(ID_HEADER))?;
    let ts: i64 = headers
        .timestamp
        .ok_or(WebhookError::Missing(TIMESTAMP_HEADER))?
        .trim()
        .parse()
        .map_err(|_| WebhookError::BadTimestamp)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(WebhookError::Expired);
    }
    let key = UnparsedPublicKey::new(&ED25519, public);
    let signed = message(id, ts, body);
    let matched = headers
        .signature
        .ok_or(WebhookError::Missing(SIGNATURE_HEADER))?
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1a,"))
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .any(|sig| key.verify(&signed, &sig).is_ok());
    if matched {
        Ok((id, ts))
    } else {
        Err(WebhookError::BadSignature)
    }
}

fn message(id: &str, ts: i64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(id.len() + body.len() + 24);
    m.extend_from_slice(id.as_bytes());
    m.push(b'.');
    m.extend_from_slice(ts.to_string().as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

/// A `Retry-After` value (seconds, or an HTTP date) as a wait from `now`; at most
/// [`MAX_RETRY_AFTER`]. A date in the past is no wait.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The body announcing a contact created or changed.
pub fn upsert_body(contact: &Contact) -> Vec<u8> {
    serde_json::json!({ "contacts": [to_jcard(contact)] })
        .to_string()
        .into_bytes()
}

/// The body announcing that the contact `id` (its UID) is gone.
pub fn delete_body(id: &str) -> Vec<u8> {
    serde_json::json!({ "deleted": [id] })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{JsonMapping, read_delivery};

    fn key() -> SignKey {
        SignKey::from_seed(&[7u8; 32], |_| "k1".into()).unwrap()
    }

    fn secret() -> SigningSecret {
        SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    #[test]
    fn both_signatures_verify_and_neither_survives_a_change() {
        let body = br#"{"deleted":["a"]}"#;
        let sig = signatures(&secret(), &key(), "msg_1", 1_700_000_000, body);
        let signed = Signed {
            id: Some("msg_1"),
            timestamp: Some("1700000000"),
            signature: Some(&sig),
        };
        assert_eq!(
            secret().verify(signed, body, 1_700_000_010),
            Ok(("msg_1", 1_700_000_000))
        );
        assert_eq!(
            verify_asymmetric(key().public(), signed, body, 1_700_000_010),
            Ok(("msg_1", 1_700_000_000))
        );
        let other = br#"{"deleted":["b"]}"#;
        assert!(secret().verify(signed, other, 1_700_000_010).is_err());
        assert_eq!(
            verify_asymmetric(key().public(), signed, other, 1_700_000_010),
            Err(WebhookError::BadSignature)
        );
        let stranger = SignKey::from_seed(&[8u8; 32], |_| "k2".into()).unwrap();
        assert_eq!(
            verify_asymmetric(stranger.public(), signed, body, 1_700_000_010),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_asymmetric(key().public(), signed, body, 1_700_000_000 + 301),
            Err(WebhookError::Expired)
        );
    }

    #[test]
    fn answers_are_judged_as_the_receiver_meant_them() {
        assert_eq!(judge(204, None), Outcome::Delivered);
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(judge(status, None), Outcome::Retry { .. }),
                "{status}"
            );
        }
        for status in [301, 400, 401, 404, 410, 422] {
            assert!(
                matches!(judge(status, None), Outcome::GiveUp { .. }),
                "{status}"
            );
        }
        let after = Some(Duration::from_secs(7));
        assert!(matches!(judge(429, after), Outcome::Retry { after: a, .. } if a == after));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn bodies_are_what_a_webhook_source_reads() {
        let mut c = Contact::new();
        c.push(sealsync_contact::Property::text("UID", "u-1"));
        c.push(sealsync_contact::Property::text("FN", "Ada Lovelace"));
        let mapping = JsonMapping::new(&Default::default(), None).unwrap();
        let got = read_delivery("application/json", &upsert_body(&c), &mapping).unwrap();
        assert_eq!(got.upserts.len(), 1);
        assert_eq!(got.upserts[0].id.as_str(), "u-1");
        assert_eq!(
            got.upserts[0].contact.formatted_name().as_deref(),
            Some("Ada Lovelace")
        );
        let got = read_delivery("application/json", &delete_body("u-1"), &mapping).unwrap();
        assert_eq!(got.deletes.len(), 1);
        assert_eq!(got.deletes[0].as_str(), "u-1");
    }

    #[test]
    fn the_key_hides_itself() {
        assert!(!format!("{:?}", key()).contains("pair"));
    }
}
