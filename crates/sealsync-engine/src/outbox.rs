//! Webhook destinations: a push link's writes become signed deliveries, kept in the store until
//! the receiver takes them.
//!
//! - [`Outbox`] is the connector. Each create, update or delete keeps, in one transaction, the
//!   endpoint's copy of the item (so the endpoint lists and fetches like any other, and a rerun
//!   after a crash finds what was written) and one delivery, whose id is a keyed hash of the
//!   change: the same change written twice is one delivery with one `webhook-id`.
//! - [`deliver_pending`] sends an endpoint's due deliveries in order, one attempt each, until
//!   one is not taken. A run does it when it flushes; the server's delivery loop and
//!   `sealsync deliveries retry` do it later.
//! - [`next_attempt`]: retries back off (5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, then every
//!   4 h), or wait as long as the receiver's `Retry-After` says, for up to 24 hours after the
//!   delivery was queued (or replayed); then it is dead, listed until replayed.
//!
//! A delivery's body is sealed like a contact, and dropped once delivered.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sealsync_connector::credential::Credential;
use sealsync_connector::{
    ConnectorError, Destination, Etag, Item, ItemMeta, RemoteId, Snapshot, Source,
};
use sealsync_connectors::webhook::SigningSecret;
pub use sealsync_connectors::webhook_out;
use sealsync_connectors::webhook_out::{Outcome, Sender, SignKey, delete_body, upsert_body};
use sealsync_contact::Contact;
use sealsync_crypto::{IndexKind, RecordRef, WorkspaceKeys};
use sealsync_store::{AttemptResult, HookItemRow, KeyPurpose, OutboxChange, Store, StoreError};
use sealsync_types::{AccountId, EndpointId};

use secrecy::ExposeSecret as _;

use crate::inbox::{Inbox, item_id, seal_item};
use crate::{EndpointSpec, Engine, RunError};

/// How long a delivery is retried, from when it was queued or replayed (milliseconds).
pub const RETRY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Waits between attempts when the receiver gives none, in seconds; the last repeats.
const BACKOFF_S: [i64; 8] = [5, 30, 120, 600, 1800, 3600, 7200, 14400];

/// When to try a delivery again after its `attempts`-th failed attempt at `now`, queued at
/// `created_at` (milliseconds), the receiver having asked to wait `retry_after`. `None`: the
/// 24 hours are over, it is dead. The last attempt falls at the end of the window.
pub fn next_attempt(
    attempts: i64,
    created_at: i64,
    now: i64,
    retry_after: Option<Duration>,
) -> Option<i64> {
    let deadline = created_at + RETRY_WINDOW_MS;
    if now >= deadline {
        return None;
    }
    let step = usize::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(BACKOFF_S.len() - 1);
    let wait = match retry_after {
        Some(d) => i64::try_from(d.as_millis()).unwrap_or(RETRY_WINDOW_MS),
        None => BACKOFF_S[step] * 1000,
    };
    Some(now.saturating_add(wait).min(deadline))
}

/// What one pass over an endpoint's deliveries did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: u64,
    /// Failed this time; tried again later.
    pub retrying: u64,
    pub dead: u64,
    /// The account whose secret signed them, when any was sent (callers audit the use).
    pub account: Option<AccountId>,
}

/// Sends the endpoint's deliveries that are due at `now` (milliseconds), in order, until one
/// is not taken: later ones wait behind it, so a receiver sees changes in the order made.
pub async fn deliver_pending(
    store: &Store,
    keys: &WorkspaceKeys,
    endpoint: EndpointId,
    sender: &Sender,
    now: i64,
) -> Result<DeliveryReport, StoreError> {
    let ws = keys.workspace();
    let mut report = DeliveryReport::default();
    let Some(_delivering) = Delivering::enter(endpoint) else {
        return Ok(report);
    };
    loop {
        let rows = store.pending_deliveries(ws, endpoint, 100).await?;
        if rows.is_empty() {
            return Ok(report);
        }
        for row in rows {
            if row.next_at > now {
                return Ok(report);
            }
            let attempts = row.attempts + 1;
            let opened = row
                .body
                .as_deref()
                .and_then(|b| keys.open(&body_at(keys, &row.id), b).ok())
                .map(zeroize::Zeroizing::new);
            let result = match opened {
                None => AttemptResult::Dead {
                    status: None,
                    error: "the delivery's body does not decrypt".into(),
                },
                Some(body) => {
                    let outcome = sender.send(&webhook_id(&row.id), &body, now / 1000).await;
                    match outcome {
                        Outcome::Delivered => AttemptResult::Delivered,
                        Outcome::GiveUp { status, why } => AttemptResult::Dead {
                            status: status.map(i64::from),
                            error: why,
                        },
                        Outcome::Retry { after, status, why } => {
                            match next_attempt(attempts, row.created_at, now, after) {
                                Some(next_at) => AttemptResult::Retry {
                                    next_at,
                                    status: status.map(i64::from),
                                    error: why,
                                },
                                None => AttemptResult::Dead {
                                    status: status.map(i64::from),
                                    error: format!("{why}; retried for 24 hours"),
                                },
                            }
                        }
                    }
                }
            };
            store.delivery_attempted(ws, &row.id, &result).await?;
            match result {
                AttemptResult::Delivered => report.delivered += 1,
                AttemptResult::Retry { .. } => {
                    report.retrying += 1;
                    return Ok(report);
                }
                AttemptResult::Dead { error, .. } => {
                    tracing::warn!(
                        endpoint = %endpoint,
                        workspace = %ws,
                        delivery = %hex::encode(&row.id),
                        error = %error,
                        "A webhook delivery is dead: it is kept until replayed."
                    );
                    report.dead += 1;
                }
            }
        }
    }
}

/// Endpoints being delivered by this process: one pass at a time per endpoint, so a run's
/// flush and the delivery loop never send the same delivery twice at once.
static DELIVERING: std::sync::Mutex<Vec<EndpointId>> = std::sync::Mutex::new(Vec::new());

struct Delivering(EndpointId);

impl Delivering {
    fn enter(endpoint: EndpointId) -> Option<Self> {
        let mut busy = DELIVERING.lock().ok()?;
        if busy.contains(&endpoint) {
            return None;
        }
        busy.push(endpoint);
        Some(Self(endpoint))
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        if let Ok(mut busy) = DELIVERING.lock() {
            busy.retain(|e| *e != self.0);
        }
    }
}

impl Engine {
    /// The sender of a webhook destination, signing with `credential` (an api-key account's
    /// shared secret) and the installation's newest signing key.
    pub async fn webhook_sender(
        &self,
        spec: &EndpointSpec,
        credential: &Credential,
    ) -> Result<Sender, ConnectorError> {
        let secret = match credential {
            Credential::ApiKey { key } => SigningSecret::parse(key.expose_secret())
                .map_err(|e| ConnectorError::Config(format!("the account's {e}")))?,
            _ => {
                return Err(ConnectorError::Config(
                    "a webhook destination's account must be of kind api-key (its signing secret)"
                        .into(),
                ));
            }
        };
        let (_, seed) = self
            .hub()
            .ensure_installation_key(KeyPurpose::Signing)
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("the signing key: {e}")))?;
        let key = SignKey::from_seed(seed.expose(), sealsync_crypto::key_id)?;
        let hosts = self
            .hub()
            .store()
            .egress_hosts(self.keys().workspace())
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("the egress allowlist: {e}")))?
            .unwrap_or_default();
        spec.webhook_sender(secret, key, &hosts)
    }

    /// Sends what is due at `now` (milliseconds) of a webhook destination's deliveries, under
    /// its push link's claim (so no run or other process sends them at the same time).
    pub async fn deliver(
        &self,
        endpoint: EndpointId,
        now: i64,
    ) -> Result<DeliveryReport, RunError> {
        let store = self.hub().store();
        let endpoint_error = |name: &str, error| RunError::Endpoint {
            link: name.to_owned(),
            error,
        };
        let defs = self.link_defs().await.map_err(|e| {
            endpoint_error("(deliveries)", ConnectorError::Unavailable(e.to_string()))
        })?;
        let Some(link) = defs
            .into_iter()
            .find(|d| d.endpoint_id == endpoint && d.endpoint.push_only())
        else {
            // Without a link there is no account to sign with: what is queued waits for one.
            return Ok(DeliveryReport::default());
        };
        self.with_claim(&link, async |_| {
            let Some(name) = link.endpoint.account() else {
                return Ok(DeliveryReport::default());
            };
            let (account, credential) = self.open_account(name).await.map_err(|e| {
                endpoint_error(
                    &link.name,
                    ConnectorError::Config(format!("account {name:?}: {e}")),
                )
            })?;
            let sender = self
                .webhook_sender(&link.endpoint, &credential)
                .await
                .map_err(|e| endpoint_error(&link.name, e))?;
            drop(credential);
            let mut report = deliver_pending(store, self.keys(), endpoint, &sender, now).await?;
            if report.delivered + report.retrying + report.dead > 0 {
                report.account = Some(account);
            }
            Ok(report)
        })
        .await
    }
}

/// A delivery id as listed (64 hex characters).
pub fn parse_delivery_id(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok().filter(|b| b.len() == 32)
}

/// The `webhook-id` of a delivery.
pub fn webhook_id(id: &[u8]) -> String {
    format!("msg_{}", hex::encode(&id[..id.len().min(16)]))
}

fn body_at<'a>(keys: &'a WorkspaceKeys, id: &'a [u8]) -> RecordRef<'a> {
    RecordRef {
        table: "webhook_deliveries",
        workspace: keys.workspace(),
        record: id,
        field: "body",
    }
}

/// A webhook destination, as a connector.
pub struct Outbox {
    inbox: Inbox,
    store: Store,
    keys: Arc<WorkspaceKeys>,
    endpoint: EndpointId,
    sender: Option<Arc<Sender>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// The endpoint's outbox; with a sender, flushing delivers what is due.
    pub fn new(
        store: Store,
        keys: Arc<WorkspaceKeys>,
        endpoint: EndpointId,
        sender: Option<Arc<Sender>>,
    ) -> Self {
        Self {
            inbox: Inbox::new(store.clone(), keys.clone(), endpoint),
            store,
            keys,
            endpoint,
            sender,
        }
    }

    fn unavailable(e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Unavailable(format!("webhook outbox: {e}"))
    }

    /// The endpoint's copy of an item, with the UID it went out under.
    async fn current(
        &self,
        id: &RemoteId,
    ) -> Result<Option<(Vec<u8>, Etag, String)>, ConnectorError> {
        let Ok(raw) = hex::decode(id.as_str()) else {
            return Ok(None);
        };
        let rows = self
            .store
            .hook_items(
                self.keys.workspace(),
                self.endpoint,
                std::slice::from_ref(&raw),
            )
            .await
            .map_err(Self::unavailable)?;
        let Some(HookItemRow {
            item: Some(sealed),
            etag,
            ..
        }) = rows.into_iter().next()
        else {
            return Ok(None);
        };
        let contact = self.inbox.open(id, &raw, &sealed)?;
        let uid = contact
            .uid()
            .ok_or_else(|| ConnectorError::Invalid(format!("{id}: no UID")))?;
        Ok(Some((raw, Etag::new(etag), uid)))
    }

    /// Keeps `contact` (or, with `None`, the deletion of `uid`) as the item's new state, and
    /// its delivery, named by the change from `before`.
    async fn put(
        &self,
        uid: &str,
        before: &str,
        contact: Option<&Contact>,
    ) -> Result<ItemMeta, ConnectorError> {
        let remote = RemoteId::parse(uid)?;
        let raw = item_id(&self.keys, self.endpoint, &remote);
        let id = RemoteId::parse(&hex::encode(&raw))?;
        let (etag, item, body) = match contact {
            Some(c) => {
                let (etag, sealed) = seal_item(&self.keys, &raw, c)?;
                (etag, Some(sealed), zeroize::Zeroizing::new(upsert_body(c)))
            }
            None => (
                String::new(),
                None,
                zeroize::Zeroizing::new(delete_body(uid)),
            ),
        };
        let delivery = self
            .keys
            .blind_index()
            .index(
                IndexKind::Remote,
                &format!(
                    "hook-out\u{1f}{}\u{1f}{id}\u{1f}{before}\u{1f}{etag}",
                    self.endpoint
                ),
            )
            .to_vec();
        let body = self
            .keys
            .seal(&body_at(&self.keys, &delivery), &body)
            .map_err(|_| ConnectorError::Unavailable("the workspace key cannot seal".into()))?;
        let change = OutboxChange {
            item: HookItemRow {
                id: raw,
                etag: etag.clone(),
                item,
                sent_at: 0,
            },
            delivery,
            body,
        };
        self.store
            .outbox_put(self.keys.workspace(), self.endpoint, &change)
            .await
            .map_err(Self::unavailable)?;
        Ok(ItemMeta {
            id,
            etag: Etag::new(etag),
            modified_ms: None,
        })
    }
}

/// The contact as it goes out, under `uid`.
fn with_uid(contact: &Contact, uid: &str) -> Contact {
    let mut c = contact.clone();
    if c.uid().as_deref() != Some(uid) {
        c.set_text("UID", Some(uid));
    }
    c
}

#[async_trait]
impl Source for Outbox {
    async fn list(&self) -> Result<Snapshot, ConnectorError> {
        self.inbox.list().await
    }

    async fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, Result<Item, ConnectorError>)>, ConnectorError> {
        self.inbox.fetch(ids).await
    }
}

#[async_trait]
impl Destination for Outbox {
    async fn create(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError> {
        let uid = contact
            .uid()
            .unwrap_or_else(|| format!("urn:uuid:{}", uuid::Uuid::new_v4()));
        self.put(&uid, "", Some(&with_uid(contact, &uid))).await
    }

    async fn update(
        &self,
        id: &RemoteId,
        expected: &Etag,
        contact: &Contact,
    ) -> Result<ItemMeta, ConnectorError> {
        let Some((_, etag, uid)) = self.current(id).await? else {
            return Err(ConnectorError::NotFound);
        };
        if &etag != expected {
            return Err(ConnectorError::Conflict);
        }
        self.put(&uid, etag.as_str(), Some(&with_uid(contact, &uid)))
            .await
    }

    async fn delete(&self, id: &RemoteId, expected: &Etag) -> Result<(), ConnectorError> {
        let Some((_, etag, uid)) = self.current(id).await? else {
            return Ok(());
        };
        if &etag != expected {
            return Err(ConnectorError::Conflict);
        }
        self.put(&uid, etag.as_str(), None).await.map(|_| ())
    }

    async fn flush(&self) -> Result<(), ConnectorError> {
        // What is written is durable in the outbox; sending now only saves waiting for the
        // delivery loop. A receiver that fails is retried later, not the run.
        if let Some(sender) = &self.sender {
            deliver_pending(
                &self.store,
                &self.keys,
                self.endpoint,
                sender,
                sealsync_store::now_ms(),
            )
            .await
            .map_err(Self::unavailable)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_delivery_id_is_64_hex_characters_and_nothing_else() {
        let id = "ab".repeat(32);
        assert_eq!(parse_delivery_id(&id), Some(vec![0xab; 32]));
        assert_eq!(parse_delivery_id(&id.to_uppercase()), Some(vec![0xab; 32]));
        for bad in [
            &id[..62],
            "+f".repeat(32).as_str(),
            &format!("{}zz", &id[..62]),
        ] {
            assert_eq!(parse_delivery_id(bad), None, "{bad}");
        }
    }

    use super::*;
    use sealsync_contact::Property;

    #[test]
    fn retries_back_off_then_stop_after_a_day() {
        let t0 = 1_000_000;
        assert_eq!(next_attempt(1, t0, t0, None), Some(t0 + 5_000));
        assert_eq!(next_attempt(2, t0, t0 + 5_000, None), Some(t0 + 35_000));
        assert_eq!(next_attempt(8, t0, t0, None), Some(t0 + 14_400_000));
        assert_eq!(next_attempt(50, t0, t0, None), Some(t0 + 14_400_000));
        // The receiver's Retry-After wins over the schedule, shorter or longer.
        assert_eq!(
            next_attempt(5, t0, t0, Some(Duration::from_secs(2))),
            Some(t0 + 2_000)
        );
        assert_eq!(
            next_attempt(1, t0, t0, Some(Duration::from_secs(3600))),
            Some(t0 + 3_600_000)
        );
        // The last attempt falls at the end of the 24 hours; after it, nothing.
        let late = t0 + RETRY_WINDOW_MS - 1_000;
        assert_eq!(next_attempt(9, t0, late, None), Some(t0 + RETRY_WINDOW_MS));
        assert_eq!(next_attempt(10, t0, t0 + RETRY_WINDOW_MS, None), None);
    }

    #[test]
    fn webhook_ids_are_short_and_stable() {
        let id = [0xabu8; 32];
        assert_eq!(webhook_id(&id), format!("msg_{}", "ab".repeat(16)));
    }

    #[test]
    fn a_uid_is_set_only_where_it_differs() {
        let mut c = Contact::new();
        c.push(Property::text("FN", "A"));
        assert_eq!(with_uid(&c, "u").uid().as_deref(), Some("u"));
    }
}
