//! Webhook sources in the store: a verified delivery becomes sealed rows
//! ([`delivery_rows`]), and the endpoint's pull link reads them through [`Inbox`], a connector
//! like any other (listing by etag, fetching in batches) that cannot be written.
//!
//! An item's id as the engine sees it is the hex of its keyed row id: the sending system's id
//! never leaves the sealed row.

use std::sync::Arc;

use async_trait::async_trait;
use sealsync_connector::{
    ConnectorError, Destination, Etag, Item, ItemMeta, RemoteId, Snapshot, Source,
};
pub use sealsync_connectors::webhook;
use sealsync_connectors::webhook::Delivery;
use sealsync_contact::Contact;
use sealsync_contact::vcard::{VcardVersion, read_all, to_vcard};
use sealsync_crypto::{IndexKind, RecordRef, WorkspaceKeys};
use sealsync_store::{HookDelivery, HookItemRow, Hub, Store};
use sealsync_types::EndpointId;

fn at<'a>(keys: &'a WorkspaceKeys, id: &'a [u8]) -> RecordRef<'a> {
    RecordRef {
        table: "hook_items",
        workspace: keys.workspace(),
        record: id,
        field: "item",
    }
}

/// The row id of an item of `endpoint`: a keyed hash of the endpoint and the sender's id.
pub fn item_id(keys: &WorkspaceKeys, endpoint: EndpointId, remote: &RemoteId) -> Vec<u8> {
    keys.blind_index()
        .index(
            IndexKind::Remote,
            &format!("hook\u{1f}{endpoint}\u{1f}{}", remote.as_str()),
        )
        .to_vec()
}

/// The receipt id of a delivery id at `endpoint`.
pub fn receipt_id(keys: &WorkspaceKeys, endpoint: EndpointId, delivery: &str) -> Vec<u8> {
    keys.blind_index()
        .index(
            IndexKind::Remote,
            &format!("hook-delivery\u{1f}{endpoint}\u{1f}{delivery}"),
        )
        .to_vec()
}

/// The rows a verified delivery leaves: each contact sealed, each deletion a row without one.
/// `sent_at` is the delivery's signed time in milliseconds.
pub fn delivery_rows(
    keys: &WorkspaceKeys,
    endpoint: EndpointId,
    delivery_id: &str,
    sent_at: i64,
    delivery: &Delivery,
    answer: String,
) -> Result<HookDelivery, ConnectorError> {
    let mut items = Vec::with_capacity(delivery.upserts.len() + delivery.deletes.len());
    for u in &delivery.upserts {
        let id = item_id(keys, endpoint, &u.id);
        let (etag, sealed) = seal_item(keys, &id, &u.contact)?;
        items.push(HookItemRow {
            id,
            etag,
            item: Some(sealed),
            sent_at,
        });
    }
    for d in &delivery.deletes {
        items.push(HookItemRow {
            id: item_id(keys, endpoint, d),
            etag: String::new(),
            item: None,
            sent_at,
        });
    }
    Ok(HookDelivery {
        workspace: keys.workspace(),
        endpoint,
        receipt: receipt_id(keys, endpoint, delivery_id),
        answer,
        items,
    })
}

/// An endpoint's item `id` as kept: its etag (a keyed hash of the contents) and the sealed
/// vCard.
pub(crate) fn seal_item(
    keys: &WorkspaceKeys,
    id: &[u8],
    contact: &Contact,
) -> Result<(String, Vec<u8>), ConnectorError> {
    let mac = Hub::content_mac(keys, contact);
    let text = zeroize::Zeroizing::new(to_vcard(contact, VcardVersion::V4));
    let sealed = keys
        .seal(&at(keys, id), text.as_bytes())
        .map_err(|_| ConnectorError::Unavailable("the workspace key cannot seal".into()))?;
    Ok((hex::encode(&mac[..16]), sealed))
}

/// What a webhook endpoint's deliveries left, as a connector.
#[derive(Clone)]
pub struct Inbox {
    store: Store,
    keys: Arc<WorkspaceKeys>,
    endpoint: EndpointId,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    pub fn new(store: Store, keys: Arc<WorkspaceKeys>, endpoint: EndpointId) -> Self {
        Self {
            store,
            keys,
            endpoint,
        }
    }

    fn unavailable(e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Unavailable(format!("webhook items: {e}"))
    }
}

#[async_trait]
impl Source for Inbox {
    async fn list(&self) -> Result<Snapshot, ConnectorError> {
        let rows = self
            .store
            .hook_listing(self.keys.workspace(), self.endpoint)
            .await
            .map_err(Self::unavailable)?;
        let items = rows
            .into_iter()
            .map(|(id, etag)| {
                Ok(ItemMeta {
                    id: RemoteId::parse(&hex::encode(&id))?,
                    etag: Etag::new(etag),
                    modified_ms: None,
                })
            })
            .collect::<Result<_, ConnectorError>>()?;
        Ok(Snapshot { items })
    }

    async fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, Result<Item, ConnectorError>)>, ConnectorError> {
        let raw: Vec<Vec<u8>> = ids
            .iter()
            .map(|i| hex::decode(i.as_str()).unwrap_or_default())
            .collect();
        let rows = self
            .store
            .hook_items(self.keys.workspace(), self.endpoint, &raw)
            .await
            .map_err(Self::unavailable)?;
        let mut by_id: std::collections::HashMap<Vec<u8>, HookItemRow> =
            rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        Ok(ids
            .iter()
            .zip(raw)
            .map(|(id, raw)| {
                let item = match by_id.remove(&raw) {
                    Some(HookItemRow {
                        item: Some(sealed),
                        etag,
                        ..
                    }) => self.open(id, &raw, &sealed).map(|contact| Item {
                        meta: ItemMeta {
                            id: id.clone(),
                            etag: Etag::new(etag),
                            modified_ms: None,
                        },
                        contact,
                    }),
                    _ => Err(ConnectorError::NotFound),
                };
                (id.clone(), item)
            })
            .collect())
    }
}

impl Inbox {
    pub(crate) fn open(
        &self,
        id: &RemoteId,
        raw: &[u8],
        sealed: &[u8],
    ) -> Result<Contact, ConnectorError> {
        let plain = zeroize::Zeroizing::new(
            self.keys
                .open(&at(&self.keys, raw), sealed)
                .map_err(|_| ConnectorError::Invalid(format!("{id}: does not decrypt")))?,
        );
        let (cards, _) = read_all(&plain);
        cards
            .into_iter()
            .next()
            .map(|c| c.contact)
            .ok_or_else(|| ConnectorError::Invalid(format!("{id}: no vCard")))
    }
}

fn read_only() -> ConnectorError {
    ConnectorError::Config(
        "a webhook endpoint only delivers contacts: its links pull, never write".into(),
    )
}

#[async_trait]
impl Destination for Inbox {
    async fn create(&self, _: &Contact) -> Result<ItemMeta, ConnectorError> {
        Err(read_only())
    }

    async fn update(
        &self,
        _: &RemoteId,
        _: &Etag,
        _: &Contact,
    ) -> Result<ItemMeta, ConnectorError> {
        Err(read_only())
    }

    async fn delete(&self, _: &RemoteId, _: &Etag) -> Result<(), ConnectorError> {
        Err(read_only())
    }
}
