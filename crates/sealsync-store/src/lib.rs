//! The sealed store: workspaces, contacts and their keys on SQLite (embedded default) or
//! PostgreSQL (scale-out).
//!
//! - [`Store`]: the database layer. Data and keystore are apart: a second SQLite file, or the
//!   `sealsync_keys` schema in PostgreSQL, so a backup of the data holds only ciphertext.
//! - [`Hub`]: seals contacts on the way in and opens them on the way out, with the workspace's
//!   keys unwrapped by the configured key provider.
//!
//! Never stores or logs plaintext contact data; errors name records by id only.

mod connect;
mod db;
mod hooks;
mod hub;
mod identity;
mod outbox;
mod sealed;
mod sync;
pub mod testing;

pub use connect::ConnectTokenRow;
pub use db::{
    Backend, ContactRow, INSTALLATION, IndexEntries, KEYSTORE_SCHEMA, KeyPurpose, Store,
    StoreConfig, StoredKey, Workspace,
};
pub use hooks::{HookDelivery, HookItemRow, HookOutcome, RECEIPT_TTL_MS};
pub use hub::{
    Hub, ImportCounts, ImportItem, ImportOptions, ImportSession, PreparedContact, RecordError,
    ReencryptReport,
};
pub use identity::{ApiKeyRow, ClientRow, SessionRow, TokenRow, UserRow};
pub use outbox::{AttemptResult, DeliveryRow, DeliveryState, OutboxChange};
pub use sealed::{SealedField, SealedValue};
pub use sync::{
    AccountRow, Clocks, ConflictRow, EndpointRow, EventRow, HubMeta, LinkMark, LinkRow, Moved,
    RunRow, StateRow, SyncBatch, config_ref, now_ms,
};

use sealsync_crypto::KeyError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database configuration: {0}")]
    Config(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("database error: {0}")]
    Db(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("record {record}: {error}")]
    Crypto { record: String, error: String },
    #[error("no workspace named {0:?}; list them with `sealsync workspace list`")]
    NoWorkspace(String),
    #[error("workspace {0} has no keys (was it deleted?)")]
    NoKeys(String),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// A database error, keeping only the database's own message (never bound values).
    pub(crate) fn db(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(d) => StoreError::Db(d.message().to_owned()),
            other => StoreError::Db(other.to_string()),
        }
    }

    pub(crate) fn connect(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(d) => StoreError::Connect(d.message().to_owned()),
            other => StoreError::Connect(other.to_string()),
        }
    }
}
