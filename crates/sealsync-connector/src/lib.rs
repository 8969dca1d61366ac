//! The connector contract: how the sync engine reads and writes one external contact collection.
//!
//! - A [`Source`] lists every item of the collection as a [`Snapshot`] of `(remote id, etag)`
//!   pairs, cheaply (no contents), then fetches the contents of the items the engine asks for.
//!   A listing that fails, or is incomplete, is an error: never a short snapshot, because a
//!   missing item reads as a deletion.
//! - A [`Destination`] creates, updates and deletes items; updates and deletes carry the etag
//!   the engine last saw and fail with [`ConnectorError::Conflict`] when the item changed since
//!   (HTTP's `If-Match`), so a concurrent edit is never blindly overwritten.
//! - [`compliance`] is the suite every connector passes.
//!
//! Connectors never see the hub, the store or keys, and never put contact data in an error.

pub mod compliance;
pub mod credential;
pub mod egress;
pub mod par;

use std::fmt;

use async_trait::async_trait;
use sealsync_contact::Contact;

/// An item's identity in its collection: a file name, a row key, a URL path. Opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteId(String);

impl RemoteId {
    /// A remote id: non-empty, at most 1024 bytes, no control characters.
    pub fn parse(s: &str) -> Result<Self, ConnectorError> {
        if s.is_empty() || s.len() > 1024 || s.chars().any(char::is_control) {
            return Err(ConnectorError::Invalid(
                "remote id is empty, too long or has control characters".into(),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RemoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version tag of one item: changes whenever the item does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Etag(String);

impl Etag {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One listed item: its id, its etag and, when the collection knows it, when it last changed
/// (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemMeta {
    pub id: RemoteId,
    pub etag: Etag,
    pub modified_ms: Option<i64>,
}

/// Everything in the collection at one moment: complete, or not produced at all.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub items: Vec<ItemMeta>,
}

/// A listing and, from a connector that can list changes since an earlier listing (CardDAV's
/// `sync-collection`), a cursor for the next one.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub snapshot: Snapshot,
    /// Opaque to the engine, which keeps it sealed per link and hands it back next time. It
    /// describes only the collection at one moment, never what the engine did with it, so it
    /// may be stored as soon as it is returned.
    pub cursor: Option<Vec<u8>>,
}

/// One item with its contents.
#[derive(Debug, Clone)]
pub struct Item {
    pub meta: ItemMeta,
    pub contact: Contact,
}

/// Why a connector operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The collection cannot be reached or read; the run stops, nothing is deleted.
    #[error("endpoint unavailable: {0}")]
    Unavailable(String),
    /// The item changed (or appeared) since the etag the caller holds.
    #[error("the item changed on the endpoint since it was last read")]
    Conflict,
    /// The item is gone.
    #[error("the item does not exist on the endpoint")]
    NotFound,
    /// The item's contents cannot be read as a contact; says where and why, never what.
    #[error("unreadable item: {0}")]
    Invalid(String),
    /// The endpoint's configuration is wrong.
    #[error("endpoint configuration: {0}")]
    Config(String),
}

/// Reading side of a connector.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// Every item, without contents.
    async fn list(&self) -> Result<Snapshot, ConnectorError>;

    /// Every item, without contents, building on an earlier listing's `cursor` where the
    /// collection can say what changed since. The snapshot is complete either way. A cursor
    /// the connector cannot use (another collection, a token the server forgot) is ignored
    /// for a full listing. The default lists in full and gives no cursor.
    async fn list_from(&self, cursor: Option<&[u8]>) -> Result<Listing, ConnectorError> {
        let _ = cursor;
        Ok(Listing {
            snapshot: self.list().await?,
            cursor: None,
        })
    }

    /// Every item, without contents, listed while the caller does other work: where the
    /// connector can, at a lower CPU priority, so that the listing takes the time that work
    /// leaves and does not slow it down. The default is [`Source::list_from`] with no cursor.
    async fn list_behind(&self) -> Result<Listing, ConnectorError> {
        self.list_from(None).await
    }

    /// Whether fetching an item again costs little next to holding its contents (a local file
    /// an item): a large run then reads each item it pulls twice, once to plan and again to
    /// write it, instead of holding every one in memory in between. The default is no.
    fn fetches_cheaply(&self) -> bool {
        false
    }

    /// Contents of these items; each may fail on its own (unreadable, gone since listing).
    async fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, Result<Item, ConnectorError>)>, ConnectorError>;
}

/// Writing side of a connector.
#[async_trait]
pub trait Destination: Send + Sync + fmt::Debug {
    /// Adds an item; returns where it went and its etag.
    async fn create(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError>;

    /// Adds several items, each as [`Destination::create`] would; one result an item, in their
    /// order. The default creates them one after another.
    async fn create_many(&self, contacts: Vec<Contact>) -> Vec<Result<ItemMeta, ConnectorError>> {
        let mut out = Vec::with_capacity(contacts.len());
        for contact in &contacts {
            out.push(self.create(contact).await);
        }
        out
    }

    /// Whether [`Destination::create_many`] writes items at the same time, faster than one
    /// create after another: the engine then creates a part's new items together, ahead of the
    /// part's other actions. The default is no.
    fn creates_at_once(&self) -> bool {
        false
    }

    /// Replaces an item if its etag is still `expected`.
    async fn update(
        &self,
        id: &RemoteId,
        expected: &Etag,
        contact: &Contact,
    ) -> Result<ItemMeta, ConnectorError>;

    /// Removes an item if its etag is still `expected`. An item already gone is not an error.
    async fn delete(&self, id: &RemoteId, expected: &Etag) -> Result<(), ConnectorError>;

    /// Makes every write so far durable (a connector that writes one file writes it here,
    /// atomically). The engine calls it before it records the writes as done.
    async fn flush(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Waits for what earlier writes still do in the background (a vdir removes the old
    /// versions its updates and deletes moved aside, once they are flushed). The engine calls it
    /// when a run's writes are recorded. The default has nothing to wait for.
    async fn finish(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A connector that both reads and writes.
pub trait Connector: Source + Destination {}

impl<T: Source + Destination> Connector for T {}
