//! Webhooks, signed as the Standard Webhooks specification says
//! (<https://www.standardwebhooks.com/>), and the contacts they carry.
//!
//! - A delivery carries three headers: `webhook-id` (unique per delivery: the idempotency key),
//!   `webhook-timestamp` (Unix seconds) and `webhook-signature`: space-separated `v1,<base64>`
//!   values, each an HMAC-SHA256 under the shared secret over `id.timestamp.body`.
//! - A delivery more than five minutes from now, either way, is refused (replay window).
//! - A secret is written `whsec_<base64>` (as the specification's libraries write it) or given
//!   as plain text of at least 24 characters.
//!
//! Bodies: `application/vcard+json` is a jCard or an array of jCards (the item's id is its
//! UID); `application/json` is a contact object, an array of them, or
//! `{"contacts": [...], "deleted": ["id", ...]}`, where each contact is an object mapped field by
//! field (the targets of a CSV mapping file; a list value gives several occurrences) or a jCard.
//! A bad item is rejected on its own, with its index and why, never its contents.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine as _;
use sealsync_connector::RemoteId;
use sealsync_contact::Contact;
use sealsync_contact::csv::CsvLayout;
use sealsync_contact::jcard::from_jcard;
use serde_json::Value;

/// The delivery's unique id header.
pub const ID_HEADER: &str = "webhook-id";
/// The delivery's time header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signatures header.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// How far a delivery's time may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;
/// Contacts (and deletions) one delivery may carry.
pub const MAX_ITEMS: usize = 1000;

/// Why a delivery is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("webhook-id must be 1 to 200 printable ASCII characters")]
    BadId,
    #[error("webhook-timestamp must be a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes from now")]
    Expired,
    #[error("no webhook-signature matches the delivery")]
    BadSignature,
    #[error("signing secret: {0}")]
    Secret(&'static str),
    #[error("{0}")]
    Body(String),
}

/// A webhook signing secret. Never printed.
pub struct SigningSecret(hmac::Key);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

/// The three signed headers of a delivery, as received.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

impl SigningSecret {
    /// `whsec_<base64>`, or plain text of at least 24 characters.
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let text = text.trim();
        let bytes = match text.strip_prefix("whsec_") {
            Some(b64) => zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| WebhookError::Secret("whsec_ must be followed by base64"))?,
            ),
            None => zeroize::Zeroizing::new(text.as_bytes().to_vec()),
        };
        if bytes.len() < 24 {
            return Err(WebhookError::Secret("shorter than 24 bytes"));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    fn tag(&self, id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        ctx.sign()
    }

    /// The `webhook-signature` value for a delivery: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.tag(id, timestamp, body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }

    /// Checks a delivery's headers against its body at time `now` (Unix seconds); gives the
    /// delivery's id and time.
    pub fn verify<'a>(
        &self,
        headers: Signed<'a>,
        body: &[u8],
        now: i64,
    ) -> Result<(&'a str, i64), WebhookError> {
        let id = headers.id.ok_or(WebhookError::Missing(ID_HEADER))?;
        if id.is_empty() || id.len() > 200 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WebhookError::BadId);
        }
        let timestamp: i64 = headers
            .timestamp
            .ok_or(WebhookError::Missing(TIMESTAMP_HEADER))?
            .trim()
            .parse()
            .map_err(|_| WebhookError::BadTimestamp)?;
        if (now - timestamp).abs() > TOLERANCE_SECS {
            return Err(WebhookError::Expired);
        }
        let signatures = headers
            .signature
            .ok_or(WebhookError::Missing(SIGNATURE_HEADER))?;
        let mut message = Vec::with_capacity(id.len() + body.len() + 24);
        message.extend_from_slice(id.as_bytes());
        message.push(b'.');
        message.extend_from_slice(timestamp.to_string().as_bytes());
        message.push(b'.');
        message.extend_from_slice(body);
        let matched = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .any(|tag| hmac::verify(&self.0, &message, &tag).is_ok());
        if matched {
            Ok((id, timestamp))
        } else {
            Err(WebhookError::BadSignature)
        }
    }
}

/// How a JSON contact object maps to a contact: field name to target (`EMAIL`, `N:given`,
/// `TEL;TYPE=cell`, as in a CSV mapping file), and which field holds the item's id.
#[derive(Debug, Clone)]
pub struct JsonMapping {
    layout: CsvLayout,
    id_field: String,
}

impl JsonMapping {
    /// The fields most JSON contacts have, when the endpoint names none.
    pub const DEFAULT_FIELDS: [(&'static str, &'static str); 12] = [
        ("uid", "UID"),
        ("name", "FN"),
        ("full_name", "FN"),
        ("given_name", "N:given"),
        ("family_name", "N:family"),
        ("email", "EMAIL"),
        ("emails", "EMAIL"),
        ("phone", "TEL"),
        ("phones", "TEL"),
        ("organization", "ORG"),
        ("title", "TITLE"),
        ("note", "NOTE"),
    ];

    /// A mapping from `fields` (the default when empty) with the id in `id_field` ("id").
    pub fn new(
        fields: &BTreeMap<String, String>,
        id_field: Option<&str>,
    ) -> Result<Self, WebhookError> {
        let layout = if fields.is_empty() {
            CsvLayout::from_targets(Self::DEFAULT_FIELDS)
        } else {
            CsvLayout::from_targets(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        }
        .map_err(|e| WebhookError::Body(format!("field mapping: {e}")))?;
        Ok(Self {
            layout,
            id_field: id_field.unwrap_or("id").to_owned(),
        })
    }
}

/// A contact that a delivery carried, under its id in the sending system.
#[derive(Debug, Clone)]
pub struct Upsert {
    pub id: RemoteId,
    pub contact: Contact,
}

/// An item of a delivery that was not taken, and why (never its contents).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

/// What one delivery carries.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub upserts: Vec<Upsert>,
    pub deletes: Vec<RemoteId>,
    pub rejected: Vec<Rejected>,
}

/// Reads a delivery's body by its content type.
pub fn read_delivery(
    content_type: &str,
    body: &[u8],
    mapping: &JsonMapping,
) -> Result<Delivery, WebhookError> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let jcard_only = match essence.as_str() {
        "application/vcard+json" => true,
        "application/json" => false,
        _ => {
            return Err(WebhookError::Body(
                "the content type must be application/json or application/vcard+json".into(),
            ));
        }
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Body(format!("the body is not JSON ({e})")))?;
    let (contacts, deleted): (Vec<&Value>, &[Value]) = match &value {
        Value::Array(a) if a.first().and_then(Value::as_str) == Some("vcard") => {
            (vec![&value], &[])
        }
        Value::Array(a) => (a.iter().collect(), &[]),
        Value::Object(o)
            if !jcard_only && (o.contains_key("contacts") || o.contains_key("deleted")) =>
        {
            let contacts = match o.get("contacts") {
                None => Vec::new(),
                Some(Value::Array(a)) => a.iter().collect(),
                Some(_) => return Err(WebhookError::Body("\"contacts\" must be a list".into())),
            };
            let deleted = match o.get("deleted") {
                None => &[][..],
                Some(Value::Array(a)) => a.as_slice(),
                Some(_) => return Err(WebhookError::Body("\"deleted\" must be a list".into())),
            };
            (contacts, deleted)
        }
        Value::Object(_) if !jcard_only => (vec![&value], &[]),
        _ => {
            return Err(WebhookError::Body(if jcard_only {
                "expected a jCard or a list of jCards".into()
            } else {
                "expected a contact, a list of contacts, or {\"contacts\": [...], \"deleted\": [...]}"
                    .into()
            }));
        }
    };
    if contacts.len() + deleted.len() > MAX_ITEMS {
        return Err(WebhookError::Body(format!(
            "a delivery carries at most {MAX_ITEMS} items"
        )));
    }
    let mut out = Delivery::default();
    for (index, item) in contacts.into_iter().enumerate() {
        let read = match item {
            Value::Array(_) => read_jcard(item),
            Value::Object(o) if !jcard_only => read_object(o, mapping),
            _ => Err("not a contact".to_owned()),
        };
        match read {
            Ok(upsert) => out.upserts.push(upsert),
            Err(reason) => out.rejected.push(Rejected { index, reason }),
        }
    }
    let base = out.upserts.len() + out.rejected.len();
    for (i, id) in deleted.iter().enumerate() {
        match id.as_str().map(RemoteId::parse) {
            Some(Ok(id)) => out.deletes.push(id),
            _ => out.rejected.push(Rejected {
                index: base + i,
                reason: "a deleted id must be a non-empty string without control characters".into(),
            }),
        }
    }
    Ok(out)
}

fn read_jcard(value: &Value) -> Result<Upsert, String> {
    let contact = from_jcard(value).map_err(|e| e.to_string())?;
    let id = contact
        .uid()
        .and_then(|u| RemoteId::parse(&u).ok())
        .ok_or("a jCard needs a UID to be told apart")?;
    Ok(Upsert { id, contact })
}

fn read_object(
    o: &serde_json::Map<String, Value>,
    mapping: &JsonMapping,
) -> Result<Upsert, String> {
    for (name, value) in o {
        let fine = match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => true,
            Value::Array(a) => a
                .iter()
                .all(|v| matches!(v, Value::String(_) | Value::Number(_))),
            Value::Object(_) => false,
        };
        if !fine {
            return Err(format!(
                "field {:?} must be text, a number or a list of them",
                short(name)
            ));
        }
    }
    // Numbers are taken as their JSON text; everything is borrowed from one table of strings.
    let texts: BTreeMap<&str, Vec<String>> = o
        .iter()
        .map(|(k, v)| {
            let list = match v {
                Value::Array(a) => a.iter().map(scalar).collect(),
                other => vec![scalar(other)],
            };
            (k.as_str(), list)
        })
        .collect();
    let contact = mapping.layout.contact_from_fields(|field, nth| {
        texts
            .get(field)
            .and_then(|l| l.get(nth))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    });
    if contact.properties().is_empty() {
        return Err("no mapped field has a value".into());
    }
    let id = match texts.get(mapping.id_field.as_str()).and_then(|l| l.first()) {
        Some(id) => RemoteId::parse(id).map_err(|_| {
            format!(
                "field {:?} must be a non-empty id without control characters",
                short(&mapping.id_field)
            )
        })?,
        None => contact
            .uid()
            .and_then(|u| RemoteId::parse(&u).ok())
            .ok_or_else(|| {
                format!(
                    "no {:?} field and no UID to tell the contact apart",
                    short(&mapping.id_field)
                )
            })?,
    };
    Ok(Upsert { id, contact })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A field name as shown in a reason: names are the sender's schema, not contact data, but are
/// cut short all the same.
fn short(name: &str) -> String {
    name.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> JsonMapping {
        JsonMapping::new(&BTreeMap::new(), None).unwrap()
    }

    fn secret() -> SigningSecret {
        SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    #[test]
    fn the_specifications_example_verifies() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let body = br#"{"test": 2432232314}"#;
        let signed = Signed {
            id: Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            timestamp: Some("1614265330"),
            signature: Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        };
        assert_eq!(
            secret().sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(secret().verify(signed, body, 1614265330 + 299).is_ok());
        assert_eq!(
            secret().verify(signed, body, 1614265330 + 301),
            Err(WebhookError::Expired)
        );
        assert_eq!(
            secret().verify(signed, body, 1614265330 - 301),
            Err(WebhookError::Expired)
        );
        assert_eq!(
            secret().verify(signed, br#"{"test": 2432232315}"#, 1614265330),
            Err(WebhookError::BadSignature)
        );
        let other_id = Signed {
            id: Some("msg_other"),
            ..signed
        };
        assert_eq!(
            secret().verify(other_id, body, 1614265330),
            Err(WebhookError::BadSignature)
        );
        // One matching signature among several is enough (secret rotation).
        let several = Signed {
            signature: Some("v1,bm90IGl0 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ..signed
        };
        assert!(secret().verify(several, body, 1614265330).is_ok());
        let missing = Signed {
            signature: None,
            ..signed
        };
        assert_eq!(
            secret().verify(missing, body, 1614265330),
            Err(WebhookError::Missing(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn short_or_malformed_secrets_are_refused() {
        assert!(SigningSecret::parse("too short").is_err());
        assert!(SigningSecret::parse("whsec_!!!").is_err());
        assert!(SigningSecret::parse("a plain secret of enough length").is_ok());
        assert_eq!(format!("{:?}", secret()), "SigningSecret(…)");
    }

    #[test]
    fn json_objects_map_field_by_field_and_bad_items_stand_alone() {
        let body = br#"{"contacts": [
            {"id": "crm-1", "name": "Ada Lovelace", "emails": ["ada@example.org", "ada@work.example"], "phone": 442079460001},
            {"name": "No Id"},
            {"id": "crm-3", "email": {"nested": true}},
            ["vcard", [["uid", {}, "text", "jc-1"], ["fn", {}, "text", "Grace Hopper"]]]
        ], "deleted": ["crm-9", ""]}"#;
        let d = read_delivery("application/json", body, &plain()).unwrap();
        assert_eq!(d.upserts.len(), 2);
        assert_eq!(d.upserts[0].id.as_str(), "crm-1");
        let ada = &d.upserts[0].contact;
        assert_eq!(ada.formatted_name().as_deref(), Some("Ada Lovelace"));
        assert_eq!(ada.emails().len(), 2);
        assert_eq!(ada.phones().len(), 1);
        assert_eq!(d.upserts[1].id.as_str(), "jc-1");
        assert_eq!(d.deletes.len(), 1);
        let indexes: Vec<usize> = d.rejected.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![1, 2, 5]);
        for r in &d.rejected {
            assert!(
                !r.reason.contains("No Id") && !r.reason.contains("nested"),
                "{}",
                r.reason
            );
        }
    }

    #[test]
    fn jcard_bodies_need_uids_and_other_types_are_refused() {
        let one = br#"["vcard", [["uid", {}, "text", "u-1"], ["fn", {}, "text", "A"]]]"#;
        let d = read_delivery("application/vcard+json", one, &plain()).unwrap();
        assert_eq!(d.upserts[0].id.as_str(), "u-1");
        let no_uid = br#"[["vcard", [["fn", {}, "text", "A"]]]]"#;
        let d = read_delivery("application/vcard+json", no_uid, &plain()).unwrap();
        assert_eq!(d.rejected.len(), 1);
        assert!(read_delivery("text/vcard", one, &plain()).is_err());
        assert!(read_delivery("application/json", b"{not json", &plain()).is_err());
        let object = br#"{"id": "x", "name": "A"}"#;
        assert!(read_delivery("application/vcard+json", object, &plain()).is_err());
    }

    #[test]
    fn a_mapping_names_its_own_fields_and_id() {
        let fields: BTreeMap<String, String> = [
            ("fullName", "FN"),
            ("mail", "EMAIL;TYPE=work"),
            ("first", "N:given"),
            ("last", "N:family"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let mapping = JsonMapping::new(&fields, Some("contactId")).unwrap();
        let body = br#"[{"contactId": 42, "fullName": "Ada L", "mail": "a@example.org", "first": "Ada", "last": "L"}]"#;
        let d = read_delivery("application/json", body, &mapping).unwrap();
        assert_eq!(d.upserts[0].id.as_str(), "42");
        let c = &d.upserts[0].contact;
        assert_eq!(c.emails().len(), 1);
        assert!(c.first("N").is_some());
        assert!(
            JsonMapping::new(
                &[("x".to_owned(), "not a property!".to_owned())]
                    .into_iter()
                    .collect(),
                None
            )
            .is_err()
        );
    }
}
