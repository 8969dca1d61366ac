//! The database layer: one implementation over sqlx's `Any` driver for SQLite and PostgreSQL,
//! with the few dialect differences in one place ([`Backend`]).
//!
//! Queries are written in the SQL both databases share (`$n` placeholders in order, or
//! [`Marks`] for statements built at run time; `ON
//! CONFLICT … DO UPDATE`, no vendor functions); the migrations differ only in column types.
//! Nothing here sees plaintext: rows hold sealed bodies and keyed hashes.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealsync_crypto::{IndexKind, WrappedKey};
use sealsync_types::{ContactId, WorkspaceId, WorkspaceName};
use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions as _, Executor as _, Row as _};

use crate::StoreError;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Config(
                "database URL must start with sqlite: or postgres:".into(),
            ))
        }
    }
}

/// Where the data and the keystore live.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite:///path/sealsync.db` or `postgres://…`. May hold a password: kept secret.
    pub database_url: SecretString,
    /// The keystore: for SQLite its own file (`sqlite:///path/keystore.db`); for PostgreSQL the
    /// `sealsync_keys` schema of this URL's database (the same database by default).
    pub keystore_url: SecretString,
    pub max_connections: u32,
}

/// The PostgreSQL schema that holds the keystore.
pub const KEYSTORE_SCHEMA: &str = "sealsync_keys";

/// A workspace row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: WorkspaceName,
    pub created_at: i64,
}

/// A wrapped key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub purpose: KeyPurpose,
    pub version: u32,
    pub wrapped: WrappedKey,
    pub created_at: i64,
}

/// What a stored key is for. `Data` and `Index` belong to a workspace; `Audit` and `Signing`
/// are installation keys, kept under [`INSTALLATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    Data,
    Index,
    /// Keys the audit log's MAC chain.
    Audit,
    /// The seed of an Ed25519 key that signs access tokens.
    Signing,
    /// Seals installation-level secrets (users' TOTP secrets).
    Secrets,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Data => "data",
            KeyPurpose::Index => "index",
            KeyPurpose::Audit => "audit",
            KeyPurpose::Signing => "signing",
            KeyPurpose::Secrets => "secrets",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "data" => KeyPurpose::Data,
            "index" => KeyPurpose::Index,
            "audit" => KeyPurpose::Audit,
            "signing" => KeyPurpose::Signing,
            "secrets" => KeyPurpose::Secrets,
            _ => return None,
        })
    }
}

/// The keystore owner of installation-wide keys (audit chain, token signing): the nil id, which
/// no workspace has, so deleting a workspace never touches them.
pub const INSTALLATION: WorkspaceId = WorkspaceId::NIL;

/// A contact as stored: sealed body, keyed hashes, version for optimistic concurrency.
#[derive(Debug, Clone)]
pub struct ContactRow {
    pub id: ContactId,
    pub version: i64,
    pub key_version: u32,
    /// `None` for a tombstone.
    pub body: Option<Vec<u8>>,
    pub content_mac: [u8; 32],
    pub updated_at: i64,
}

/// Blind-index entries of one contact: (kind, keyed hash).
pub type IndexEntries = Vec<(IndexKind, [u8; 32])>;

/// The database handle: a pool for the data and one for the keystore.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) data: AnyPool,
    keys: AnyPool,
    pub(crate) backend: Backend,
    /// SQLite takes one writer at a time, and a writer that finds the file locked polls with
    /// growing sleeps (up to 100 ms each). The busiest writers of this process (sync batches,
    /// webhook deliveries) queue here instead, in order, and never poll each other.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Where large write transactions run ([`Store::begin_large`]): on SQLite one connection
    /// of its own, so that only that connection's page cache ever grows to the wide size; on
    /// PostgreSQL the data pool.
    large: AnyPool,
}

fn migration(version: i64, name: &'static str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        Cow::Borrowed(name),
        MigrationType::Simple,
        sqlx::SqlSafeStr::into_sql_str(sql),
        false,
    )
}

fn migrators(backend: Backend) -> (Migrator, Migrator) {
    let (data, keys) = match backend {
        Backend::Sqlite => (
            vec![
                migration(1, "hub", include_str!("../migrations/sqlite/0001_hub.sql")),
                migration(
                    2,
                    "sync",
                    include_str!("../migrations/sqlite/0002_sync.sql"),
                ),
                migration(
                    3,
                    "audit",
                    include_str!("../migrations/sqlite/0003_audit.sql"),
                ),
                migration(
                    4,
                    "identity",
                    include_str!("../migrations/sqlite/0004_identity.sql"),
                ),
                migration(5, "sso", include_str!("../migrations/sqlite/0005_sso.sql")),
                migration(
                    6,
                    "accounts",
                    include_str!("../migrations/sqlite/0006_accounts.sql"),
                ),
                migration(
                    7,
                    "cursors",
                    include_str!("../migrations/sqlite/0007_cursors.sql"),
                ),
                migration(
                    8,
                    "hooks",
                    include_str!("../migrations/sqlite/0008_hooks.sql"),
                ),
                migration(
                    9,
                    "egress",
                    include_str!("../migrations/sqlite/0009_egress.sql"),
                ),
                migration(
                    10,
                    "connect",
                    include_str!("../migrations/sqlite/0010_connect.sql"),
                ),
                migration(
                    11,
                    "outbox",
                    include_str!("../migrations/sqlite/0011_outbox.sql"),
                ),
                migration(
                    12,
                    "grants",
                    include_str!("../migrations/sqlite/0012_grants.sql"),
                ),
                migration(
                    13,
                    "marks",
                    include_str!("../migrations/sqlite/0013_marks.sql"),
                ),
                migration(
                    14,
                    "changes",
                    include_str!("../migrations/sqlite/0014_changes.sql"),
                ),
                migration(
                    15,
                    "bound",
                    include_str!("../migrations/sqlite/0015_bound.sql"),
                ),
                migration(
                    16,
                    "running",
                    include_str!("../migrations/sqlite/0016_running.sql"),
                ),
                migration(
                    17,
                    "hook deletions",
                    include_str!("../migrations/sqlite/0017_hook_deletions.sql"),
                ),
                migration(
                    18,
                    "index keys",
                    include_str!("../migrations/sqlite/0018_index_keys.sql"),
                ),
            ],
            vec![migration(
                1,
                "keystore",
                include_str!("../migrations/sqlite/keystore_0001.sql"),
            )],
        ),
        Backend::Postgres => (
            vec![
                migration(
                    1,
                    "hub",
                    include_str!("../migrations/postgres/0001_hub.sql"),
                ),
                migration(
                    2,
                    "sync",
                    include_str!("../migrations/postgres/0002_sync.sql"),
                ),
                migration(
                    3,
                    "audit",
                    include_str!("../migrations/postgres/0003_audit.sql"),
                ),
                migration(
                    4,
                    "identity",
                    include_str!("../migrations/postgres/0004_identity.sql"),
                ),
                migration(
                    5,
                    "sso",
                    include_str!("../migrations/postgres/0005_sso.sql"),
                ),
                migration(
                    6,
                    "accounts",
                    include_str!("../migrations/postgres/0006_accounts.sql"),
                ),
                migration(
                    7,
                    "cursors",
                    include_str!("../migrations/postgres/0007_cursors.sql"),
                ),
                migration(
                    8,
                    "hooks",
                    include_str!("../migrations/postgres/0008_hooks.sql"),
                ),
                migration(
                    9,
                    "egress",
                    include_str!("../migrations/postgres/0009_egress.sql"),
                ),
                migration(
                    10,
                    "connect",
                    include_str!("../migrations/postgres/0010_connect.sql"),
                ),
                migration(
                    11,
                    "outbox",
                    include_str!("../migrations/postgres/0011_outbox.sql"),
                ),
                migration(
                    12,
                    "grants",
                    include_str!("../migrations/postgres/0012_grants.sql"),
                ),
                migration(
                    13,
                    "marks",
                    include_str!("../migrations/postgres/0013_marks.sql"),
                ),
                migration(
                    14,
                    "changes",
                    include_str!("../migrations/postgres/0014_changes.sql"),
                ),
                migration(
                    15,
                    "bound",
                    include_str!("../migrations/postgres/0015_bound.sql"),
                ),
                migration(
                    16,
                    "running",
                    include_str!("../migrations/postgres/0016_running.sql"),
                ),
                migration(
                    17,
                    "hook deletions",
                    include_str!("../migrations/postgres/0017_hook_deletions.sql"),
                ),
                migration(
                    18,
                    "index keys",
                    include_str!("../migrations/postgres/0018_index_keys.sql"),
                ),
            ],
            vec![migration(
                1,
                "keystore",
                include_str!("../migrations/postgres/keystore_0001.sql"),
            )],
        ),
    };
    (
        Migrator::with_migrations(data),
        Migrator::with_migrations(keys),
    )
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Connects and brings both schemas up to date.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = config.database_url.expose_secret();
        let backend = Backend::of_url(url)?;
        let keys_url = config.keystore_url.expose_secret();
        if Backend::of_url(keys_url)? != backend {
            return Err(StoreError::Config(
                "database and keystore must use the same kind of database".into(),
            ));
        }
        let data = pool(backend, url, config.max_connections, None).await?;
        if backend == Backend::Postgres {
            // The keystore schema must exist before a pool can use it as its search path.
            sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {KEYSTORE_SCHEMA}"
            )))
            .execute(&data)
            .await
            .map_err(StoreError::db)?;
        }
        let schema = (backend == Backend::Postgres).then_some(KEYSTORE_SCHEMA);
        let keys = pool(backend, keys_url, config.max_connections.min(4), schema).await?;
        let (data_migrator, keys_migrator) = migrators(backend);
        data_migrator
            .run(&data)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        keys_migrator
            .run(&keys)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let large = match backend {
            Backend::Sqlite => pool(backend, url, 1, None).await?,
            Backend::Postgres => data.clone(),
        };
        Ok(Self {
            data,
            keys,
            backend,
            writer: std::sync::Arc::default(),
            large,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// On SQLite, this process's turn to write (see `writer`); PostgreSQL takes writers at once.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.lock().await),
            Backend::Postgres => None,
        }
    }

    pub async fn close(&self) {
        self.large.close().await;
        self.data.close().await;
        self.keys.close().await;
    }

    // ---- workspaces -------------------------------------------------------------------------

    pub async fn insert_workspace(&self, name: &WorkspaceName) -> Result<Workspace, StoreError> {
        let ws = Workspace {
            id: WorkspaceId::new(),
            name: name.clone(),
            created_at: now(),
        };
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(ws.id.as_bytes().to_vec())
            .bind(ws.name.as_str().to_owned())
            .bind(ws.created_at)
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?;
        Ok(ws)
    }

    pub async fn workspace_by_name(
        &self,
        name: &WorkspaceName,
    ) -> Result<Option<Workspace>, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE name = $1")
            .bind(name.as_str().to_owned())
            .fetch_optional(&self.data)
            .await
            .map_err(StoreError::db)?;
        row.map(|r| workspace_from_row(&r)).transpose()
    }

    pub async fn workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        let rows = sqlx::query("SELECT id, name, created_at FROM workspaces ORDER BY name")
            .fetch_all(&self.data)
            .await
            .map_err(StoreError::db)?;
        rows.iter().map(workspace_from_row).collect()
    }

    /// Deletes a workspace: its keys first (after which its data is unreadable everywhere,
    /// backups included), then its rows.
    pub async fn delete_workspace(&self, id: WorkspaceId) -> Result<(), StoreError> {
        let ws = id.as_bytes().to_vec();
        sqlx::query("DELETE FROM workspace_keys WHERE workspace_id = $1")
            .bind(ws.clone())
            .execute(&self.keys)
            .await
            .map_err(StoreError::db)?;
        let mut tx = self.data.begin().await.map_err(StoreError::db)?;
        for sql in [
            "DELETE FROM contact_index WHERE workspace_id = $1",
            "DELETE FROM contacts WHERE workspace_id = $1",
            "DELETE FROM link_state WHERE workspace_id = $1",
            "DELETE FROM link_cursors WHERE workspace_id = $1",
            "DELETE FROM link_marks WHERE workspace_id = $1",
            "DELETE FROM sync_clocks WHERE workspace_id = $1",
            "DELETE FROM hook_items WHERE workspace_id = $1",
            "DELETE FROM hook_receipts WHERE workspace_id = $1",
            "DELETE FROM webhook_deliveries WHERE workspace_id = $1",
            "DELETE FROM connect_tokens WHERE workspace_id = $1",
            "DELETE FROM run_events WHERE workspace_id = $1",
            "DELETE FROM runs WHERE workspace_id = $1",
            "DELETE FROM conflicts WHERE workspace_id = $1",
            "DELETE FROM link_locks WHERE workspace_id = $1",
            "DELETE FROM links WHERE workspace_id = $1",
            "DELETE FROM endpoints WHERE workspace_id = $1",
            "DELETE FROM accounts WHERE workspace_id = $1",
            "DELETE FROM oauth_tokens WHERE workspace_id = $1",
            "DELETE FROM oauth_clients WHERE workspace_id = $1",
            "DELETE FROM api_keys WHERE workspace_id = $1",
            "DELETE FROM invites WHERE workspace_id = $1",
            "DELETE FROM memberships WHERE workspace_id = $1",
            "DELETE FROM workspaces WHERE id = $1",
        ] {
            sqlx::query(sql)
                .bind(ws.clone())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        }
        tx.commit().await.map_err(StoreError::db)?;
        Ok(())
    }

    // ---- keystore ---------------------------------------------------------------------------

    pub async fn insert_key(&self, ws: WorkspaceId, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO workspace_keys (workspace_id, purpose, version, kek, wrapped, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(key.purpose.as_str())
        .bind(i64::from(key.version))
        .bind(key.wrapped.kek.clone())
        .bind(key.wrapped.bytes.clone())
        .bind(key.created_at)
        .execute(&self.keys)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn keys_of(&self, ws: WorkspaceId) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT purpose, version, kek, wrapped, created_at FROM workspace_keys \
             WHERE workspace_id = $1 ORDER BY purpose, version",
        )
        .bind(ws.as_bytes().to_vec())
        .fetch_all(&self.keys)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                let purpose = KeyPurpose::parse(&get::<String>(r, "purpose")?)
                    .ok_or(StoreError::Corrupt("unknown key purpose in keystore"))?;
                Ok(StoredKey {
                    purpose,
                    version: u32::try_from(get::<i64>(r, "version")?)
                        .map_err(|_| StoreError::Corrupt("key version out of range"))?,
                    wrapped: WrappedKey {
                        kek: get(r, "kek")?,
                        bytes: get(r, "wrapped")?,
                    },
                    created_at: get(r, "created_at")?,
                })
            })
            .collect()
    }

    // ---- contacts ---------------------------------------------------------------------------

    /// Writes contacts and replaces their index entries, all in one transaction.
    pub async fn write_contacts(
        &self,
        ws: WorkspaceId,
        rows: &[(ContactRow, IndexEntries)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.data.begin().await.map_err(StoreError::db)?;
        let stamp = self.bump_hub_clock(&mut tx, ws).await?;
        self.write_contacts_in(&mut tx, ws, rows, stamp).await?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Replaces one live contact only if its stored version is still `expected` (optimistic
    /// concurrency: the check and the write are one transaction, the row locked first).
    /// `false` when the contact changed, went away or never existed.
    pub async fn write_contact_if_version(
        &self,
        ws: WorkspaceId,
        row: &(ContactRow, IndexEntries),
        expected: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.data.begin().await.map_err(StoreError::db)?;
        // The hub clock first: the lock order every hub write keeps.
        let stamp = self.bump_hub_clock(&mut tx, ws).await?;
        let locked = sqlx::query(
            "UPDATE contacts SET version = version WHERE workspace_id = $1 AND id = $2 \
             AND version = $3 AND deleted = 0",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(row.0.id.as_bytes().to_vec())
        .bind(expected)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        if locked.rows_affected() != 1 {
            return Ok(false);
        }
        self.write_contacts_in(&mut tx, ws, std::slice::from_ref(row), stamp)
            .await?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(true)
    }

    /// Contacts after `after` in id order, at most `limit`, tombstones included.
    pub async fn contacts_page(
        &self,
        ws: WorkspaceId,
        after: Option<ContactId>,
        limit: u32,
    ) -> Result<Vec<ContactRow>, StoreError> {
        let after = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT id, version, key_version, body, content_mac, updated_at FROM contacts \
             WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter().map(contact_from_row).collect()
    }

    /// Contacts by id (missing ones are left out).
    pub async fn contacts_by_id(
        &self,
        ws: WorkspaceId,
        ids: &[ContactId],
    ) -> Result<Vec<ContactRow>, StoreError> {
        let mut conn = self.data.acquire().await.map_err(StoreError::db)?;
        self.contacts_by_id_on(&mut conn, ws, ids).await
    }

    /// [`Store::contacts_by_id`] on `conn` (inside its transaction, if one is open).
    pub(crate) async fn contacts_by_id_on(
        &self,
        conn: &mut AnyConnection,
        ws: WorkspaceId,
        ids: &[ContactId],
    ) -> Result<Vec<ContactRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut m = Marks::new(self.backend);
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "SELECT id, version, key_version, body, content_mac, updated_at FROM contacts \
                 WHERE workspace_id = {} AND id IN ({})",
                m.next(),
                m.list(chunk.len())
            )))
            .bind(ws.as_bytes().to_vec());
            for id in chunk {
                q = q.bind(id.as_bytes().to_vec());
            }
            for r in q.fetch_all(&mut *conn).await.map_err(StoreError::db)? {
                out.push(contact_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// Which contacts carry each of these index values.
    pub async fn lookup_index(
        &self,
        ws: WorkspaceId,
        kind: IndexKind,
        values: &[[u8; 32]],
    ) -> Result<Vec<([u8; 32], ContactId)>, StoreError> {
        let mut conn = self.data.acquire().await.map_err(StoreError::db)?;
        self.lookup_index_on(&mut conn, ws, kind, values).await
    }

    /// [`Store::lookup_index`] on `conn`.
    pub(crate) async fn lookup_index_on(
        &self,
        conn: &mut AnyConnection,
        ws: WorkspaceId,
        kind: IndexKind,
        values: &[[u8; 32]],
    ) -> Result<Vec<([u8; 32], ContactId)>, StoreError> {
        let mut out = Vec::new();
        for chunk in values.chunks(500) {
            let mut m = Marks::new(self.backend);
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "SELECT value, contact_id FROM contact_index WHERE workspace_id = {} AND kind = {} AND value IN ({})",
                m.next(),
                m.next(),
                m.list(chunk.len())
            )))
            .bind(ws.as_bytes().to_vec())
            .bind(kind.as_str());
            for v in chunk {
                q = q.bind(v.to_vec());
            }
            for r in q.fetch_all(&mut *conn).await.map_err(StoreError::db)? {
                let value: Vec<u8> = get(&r, "value")?;
                let id: Vec<u8> = get(&r, "contact_id")?;
                out.push((to32(&value)?, contact_id(&id)?));
            }
        }
        Ok(out)
    }

    /// Live contacts whose content hash is one of these, read on `conn` (inside its
    /// transaction, if one is open).
    pub(crate) async fn lookup_content_on(
        &self,
        conn: &mut AnyConnection,
        ws: WorkspaceId,
        macs: &[[u8; 32]],
    ) -> Result<Vec<([u8; 32], ContactId)>, StoreError> {
        let mut out = Vec::new();
        for chunk in macs.chunks(500) {
            let mut m = Marks::new(self.backend);
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "SELECT content_mac, id FROM contacts WHERE workspace_id = {} AND deleted = 0 AND content_mac IN ({})",
                m.next(),
                m.list(chunk.len())
            )))
            .bind(ws.as_bytes().to_vec());
            for v in chunk {
                q = q.bind(v.to_vec());
            }
            for r in q.fetch_all(&mut *conn).await.map_err(StoreError::db)? {
                let mac: Vec<u8> = get(&r, "content_mac")?;
                let id: Vec<u8> = get(&r, "id")?;
                out.push((to32(&mac)?, contact_id(&id)?));
            }
        }
        Ok(out)
    }

    /// Live contacts per data-key version.
    pub async fn contacts_per_key_version(
        &self,
        ws: WorkspaceId,
    ) -> Result<Vec<(u32, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_version, COUNT(*) AS n FROM contacts WHERE workspace_id = $1 AND deleted = 0 \
             GROUP BY key_version ORDER BY key_version",
        )
        .bind(ws.as_bytes().to_vec())
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    u32::try_from(get::<i64>(r, "key_version")?).unwrap_or(0),
                    get::<i64>(r, "n")?,
                ))
            })
            .collect()
    }

    /// Sealed contacts after `after` whose data key is older than `version`, in id order.
    pub async fn contacts_below_key_version(
        &self,
        ws: WorkspaceId,
        version: u32,
        after: Option<ContactId>,
        limit: u32,
    ) -> Result<Vec<ContactRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, version, key_version, body, content_mac, updated_at FROM contacts \
             WHERE workspace_id = $1 AND key_version < $2 AND body IS NOT NULL AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(i64::from(version))
        .bind(after.map(|a| a.as_bytes().to_vec()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter().map(contact_from_row).collect()
    }

    /// How many sealed contacts use a data key older than `version`.
    pub async fn count_below_key_version(
        &self,
        ws: WorkspaceId,
        version: u32,
    ) -> Result<i64, StoreError> {
        self.count_sealed(ws, "key_version < $2", version).await
    }

    /// How many sealed contacts use exactly data key `version`.
    pub async fn count_at_key_version(
        &self,
        ws: WorkspaceId,
        version: u32,
    ) -> Result<i64, StoreError> {
        self.count_sealed(ws, "key_version = $2", version).await
    }

    async fn count_sealed(
        &self,
        ws: WorkspaceId,
        condition: &'static str,
        version: u32,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM contacts WHERE workspace_id = $1 AND {condition} AND body IS NOT NULL"
        )))
        .bind(ws.as_bytes().to_vec())
        .bind(i64::from(version))
        .fetch_one(&self.data)
        .await
        .map_err(StoreError::db)?;
        get(&row, "n")
    }

    /// Replaces sealed bodies with their re-sealed form, each only if the row is still exactly
    /// as read (same version and key version): a concurrent writer always wins. Returns how many
    /// rows were replaced.
    pub async fn reseal_contacts(
        &self,
        ws: WorkspaceId,
        updates: &[(ContactRow, Vec<u8>, u32)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.data.begin().await.map_err(StoreError::db)?;
        let mut done = 0;
        for (old, body, key_version) in updates {
            let r = sqlx::query(
                "UPDATE contacts SET body = $1, key_version = $2 \
                 WHERE workspace_id = $3 AND id = $4 AND version = $5 AND key_version = $6",
            )
            .bind(body.clone())
            .bind(i64::from(*key_version))
            .bind(ws.as_bytes().to_vec())
            .bind(old.id.as_bytes().to_vec())
            .bind(old.version)
            .bind(i64::from(old.key_version))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
            done += r.rows_affected();
        }
        tx.commit().await.map_err(StoreError::db)?;
        Ok(done)
    }

    /// Replaces one wrapped key (after re-wrapping under a new master key).
    pub async fn update_key(&self, ws: WorkspaceId, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE workspace_keys SET kek = $1, wrapped = $2 WHERE workspace_id = $3 AND purpose = $4 AND version = $5",
        )
        .bind(key.wrapped.kek.clone())
        .bind(key.wrapped.bytes.clone())
        .bind(ws.as_bytes().to_vec())
        .bind(key.purpose.as_str())
        .bind(i64::from(key.version))
        .execute(&self.keys)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    /// Destroys one wrapped key.
    pub async fn delete_key(
        &self,
        ws: WorkspaceId,
        purpose: KeyPurpose,
        version: u32,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM workspace_keys WHERE workspace_id = $1 AND purpose = $2 AND version = $3",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(purpose.as_str())
        .bind(i64::from(version))
        .execute(&self.keys)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    /// On SQLite, lets the connection of a write transaction of thousands of rows cache 16 MiB
    /// of pages instead of 4 while it writes: its inserts land all over the index trees, and a
    /// cache that overflows writes pages to the log more than once. On the 100k-contact import
    /// benchmark 4 MiB for all took 10% longer, 16 MiB for all held 35–50 MB more in a sync.
    /// [`Store::narrow_cache`] before the commit gives the room back as the commit writes the
    /// pages out; a transaction that fails keeps it until its connection's next large write.
    pub(crate) async fn widen_cache(&self, tx: &mut AnyConnection) -> Result<(), StoreError> {
        self.cache_pragma(tx, WIDE_CACHE).await
    }

    /// Begins a large write transaction (`BEGIN IMMEDIATE` on SQLite when `immediate`) with
    /// the wide cache ([`Store::widen_cache`]). On SQLite it always runs on the same
    /// connection: a connection's memory, once grown, stays with the thread that serves it,
    /// so large writes spread over the pool would each leave one grown.
    pub(crate) async fn begin_large(
        &self,
        immediate: bool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = match (self.backend, immediate) {
            (Backend::Sqlite, true) => self.large.begin_with("BEGIN IMMEDIATE").await,
            _ => self.large.begin().await,
        }
        .map_err(StoreError::db)?;
        self.widen_cache(&mut tx).await?;
        Ok(tx)
    }

    /// Back to the small cache of [`Store::widen_cache`], before the commit.
    pub(crate) async fn narrow_cache(&self, tx: &mut AnyConnection) -> Result<(), StoreError> {
        self.cache_pragma(tx, NARROW_CACHE).await
    }

    async fn cache_pragma(
        &self,
        tx: &mut AnyConnection,
        pragma: &'static str,
    ) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            tx.execute(pragma).await.map_err(StoreError::db)?;
        }
        Ok(())
    }

    /// The raw pool, for tests that inspect stored bytes.
    pub fn data_pool(&self) -> &AnyPool {
        &self.data
    }
}

/// A SQLite connection's page cache: 4 MiB, and 16 MiB while a large write transaction writes
/// ([`Store::widen_cache`]).
const NARROW_CACHE: &str = "PRAGMA cache_size = -4096";
const WIDE_CACHE: &str = "PRAGMA cache_size = -16384";

async fn pool(
    backend: Backend,
    url: &str,
    max: u32,
    search_path: Option<&'static str>,
) -> Result<AnyPool, StoreError> {
    let options = AnyPoolOptions::new()
        .max_connections(max.max(1))
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => {
                        // A small page cache per connection (every pooled connection of a sync
                        // fills its own); large write transactions widen theirs while they
                        // write ([`Store::widen_cache`]).
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA temp_store = MEMORY;",
                        )
                        .await?;
                        conn.execute(NARROW_CACHE).await?;
                    }
                    Backend::Postgres => {
                        if let Some(schema) = search_path {
                            conn.execute(AssertSqlSafe(format!("SET search_path TO {schema}")))
                                .await?;
                        }
                    }
                }
                Ok(())
            })
        });
    // Reading a whole link state or the hub's metadata (a row per contact) takes over a
    // second on large workspaces: expected, not worth a warning on every sync.
    let connect = <sqlx::any::AnyConnectOptions as std::str::FromStr>::from_str(url)
        .map_err(StoreError::connect)?
        .log_slow_statements(log::LevelFilter::Info, Duration::from_secs(1));
    options
        .connect_with(connect)
        .await
        .map_err(StoreError::connect)
}

/// Placeholders for a statement built at run time: plain `?` for SQLite (its numbered and named
/// forms cost a linear search per bound value, quadratic in a multi-row statement), `$n` for
/// PostgreSQL. Values are bound in the order the placeholders were handed out.
pub(crate) struct Marks {
    backend: Backend,
    n: usize,
}

impl Marks {
    pub(crate) fn new(backend: Backend) -> Self {
        Self { backend, n: 0 }
    }

    pub(crate) fn next(&mut self) -> String {
        self.n += 1;
        match self.backend {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${}", self.n),
        }
    }

    /// `k` placeholders separated by commas.
    pub(crate) fn list(&mut self, k: usize) -> String {
        (0..k).map(|_| self.next()).collect::<Vec<_>>().join(", ")
    }

    /// `(…)` around `k` placeholders: one row of a multi-row `VALUES`.
    pub(crate) fn tuple(&mut self, k: usize) -> String {
        format!("({})", self.list(k))
    }
}

pub(crate) fn get<T>(row: &AnyRow, column: &str) -> Result<T, StoreError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(StoreError::db)
}

pub(crate) fn to32(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("index value has the wrong length"))
}

pub(crate) fn contact_id(bytes: &[u8]) -> Result<ContactId, StoreError> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("contact id has the wrong length"))?;
    Ok(ContactId::from_bytes(arr))
}

fn workspace_from_row(r: &AnyRow) -> Result<Workspace, StoreError> {
    let id: Vec<u8> = get(r, "id")?;
    let arr: [u8; 16] = id
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt("workspace id has the wrong length"))?;
    let name: String = get(r, "name")?;
    Ok(Workspace {
        id: WorkspaceId::from_bytes(arr),
        name: WorkspaceName::parse(&name)
            .map_err(|_| StoreError::Corrupt("invalid workspace name"))?,
        created_at: get(r, "created_at")?,
    })
}

fn contact_from_row(r: &AnyRow) -> Result<ContactRow, StoreError> {
    let id: Vec<u8> = get(r, "id")?;
    let mac: Vec<u8> = get(r, "content_mac")?;
    Ok(ContactRow {
        id: contact_id(&id)?,
        version: get(r, "version")?,
        key_version: u32::try_from(get::<i64>(r, "key_version")?)
            .map_err(|_| StoreError::Corrupt("key version out of range"))?,
        body: get(r, "body")?,
        content_mac: to32(&mac)?,
        updated_at: get(r, "updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

    use super::*;

    /// A database with every migration before the one described as `migration`, and the
    /// migrator that brings it up to date.
    async fn migrated_before(
        migration: &str,
        config: &StoreConfig,
        backend: Backend,
    ) -> (AnyPool, Migrator) {
        sqlx::any::install_default_drivers();
        let data = pool(backend, config.database_url.expose_secret(), 1, None)
            .await
            .unwrap();
        let (latest, _) = migrators(backend);
        let mut before = latest.migrations.to_vec();
        let at = before
            .iter()
            .position(|m| m.description == migration)
            .unwrap();
        before.truncate(at);
        Migrator::with_migrations(before).run(&data).await.unwrap();
        (data, latest)
    }

    /// A database the release before counted bindings left: its links get their counts from
    /// their state when it is brought up to date, whether or not they had a clock row.
    async fn counting_bindings_on_upgrade(config: StoreConfig, backend: Backend) {
        let (data, latest) = migrated_before("bound", &config, backend).await;
        let (ws, ticked, unticked) = (vec![1u8; 16], vec![2u8; 16], vec![3u8; 16]);
        let bind = |link: &[u8], key: u8| {
            sqlx::query(
                "INSERT INTO link_state (workspace_id, link_id, remote_key, contact_id, etag, remote_mac, hub_mac) \
                 VALUES ($1, $2, $3, $4, 'e', $5, $5)",
            )
            .bind(ws.clone())
            .bind(link.to_vec())
            .bind(vec![key; 32])
            .bind(vec![key; 16])
            .bind(vec![0u8; 32])
        };
        for key in 1..=3 {
            bind(&ticked, key).execute(&data).await.unwrap();
        }
        bind(&unticked, 9).execute(&data).await.unwrap();
        for (scope, n) in [(Vec::new(), 7i64), (ticked.clone(), 5)] {
            sqlx::query("INSERT INTO sync_clocks (workspace_id, scope, n) VALUES ($1, $2, $3)")
                .bind(ws.clone())
                .bind(scope)
                .bind(n)
                .execute(&data)
                .await
                .unwrap();
        }
        latest.run(&data).await.unwrap();
        let mut clocks: Vec<(Vec<u8>, i64, Option<i64>)> =
            sqlx::query("SELECT scope, n, bound FROM sync_clocks")
                .fetch_all(&data)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        get(r, "scope").unwrap(),
                        get(r, "n").unwrap(),
                        get(r, "bound").unwrap(),
                    )
                })
                .collect();
        clocks.sort();
        assert_eq!(
            clocks,
            vec![
                (Vec::new(), 7, Some(0)),
                (ticked, 5, Some(3)),
                (unticked, 0, Some(1))
            ]
        );
    }

    /// A database from before contacts listed their own index entries: the upgrade fills
    /// each contact's list from the index, so that replacing a contact afterwards deletes the
    /// entries it had then (an email it no longer has stops finding it).
    async fn index_keys_on_upgrade(config: StoreConfig, backend: Backend) {
        let (data, latest) = migrated_before("index keys", &config, backend).await;
        let ws = WorkspaceId::new();
        let (a, b) = (ContactId::new(), ContactId::new());
        let entries = [
            (a, IndexKind::Email, [1u8; 32]),
            (a, IndexKind::Uid, [2u8; 32]),
            (a, IndexKind::Phone, [3u8; 32]),
            (b, IndexKind::Email, [4u8; 32]),
        ];
        for id in [a, b] {
            sqlx::query(
                "INSERT INTO contacts (workspace_id, id, version, key_version, body, content_mac, \
                 deleted, updated_at) VALUES ($1, $2, 1, 1, $3, $4, 0, 0)",
            )
            .bind(ws.as_bytes().to_vec())
            .bind(id.as_bytes().to_vec())
            .bind(vec![0u8; 40])
            .bind(vec![id.as_bytes()[15]; 32])
            .execute(&data)
            .await
            .unwrap();
        }
        for (id, kind, value) in entries {
            sqlx::query(
                "INSERT INTO contact_index (workspace_id, kind, value, contact_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(ws.as_bytes().to_vec())
            .bind(kind.as_str())
            .bind(value.to_vec())
            .bind(id.as_bytes().to_vec())
            .execute(&data)
            .await
            .unwrap();
        }
        latest.run(&data).await.unwrap();
        data.close().await;

        let store = Store::open(&config).await.unwrap();
        // `a` now has one email, the one it had, and a new phone; its UID goes.
        let row = ContactRow {
            id: a,
            version: 2,
            key_version: 1,
            body: Some(vec![0u8; 40]),
            content_mac: [9; 32],
            updated_at: 1,
        };
        store
            .write_contacts(
                ws,
                &[(
                    row,
                    vec![(IndexKind::Email, [1u8; 32]), (IndexKind::Phone, [5u8; 32])],
                )],
            )
            .await
            .unwrap();
        let found = |kind: IndexKind, value: [u8; 32]| {
            let store = &store;
            async move {
                store
                    .lookup_index(ws, kind, &[value])
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(_, id)| id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(found(IndexKind::Email, [1; 32]).await, vec![a]);
        assert_eq!(found(IndexKind::Phone, [5; 32]).await, vec![a]);
        assert!(
            found(IndexKind::Uid, [2; 32]).await.is_empty(),
            "the UID it lost still finds it"
        );
        assert!(
            found(IndexKind::Phone, [3; 32]).await.is_empty(),
            "the phone it lost still finds it"
        );
        assert_eq!(found(IndexKind::Email, [4; 32]).await, vec![b]);
        // A tombstone takes every entry of `b` with it.
        store
            .write_contacts(ws, &[crate::Hub::tombstone(b, 2, 2)])
            .await
            .unwrap();
        assert!(found(IndexKind::Email, [4; 32]).await.is_empty());
    }

    async fn cache_size(conn: &mut AnyConnection) -> i64 {
        sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// On SQLite every large write runs on the same connection, never on one of the data
    /// pool's, and with the wide cache: a temporary table is seen only by the connection that
    /// made it.
    #[tokio::test]
    async fn large_writes_keep_to_one_connection_with_the_wide_cache() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::testing::sqlite_config(dir.path());
        let store = Store::open(&config).await.unwrap();
        let mut tx = store.begin_large(true).await.unwrap();
        assert_eq!(cache_size(&mut tx).await, -16384);
        tx.execute("CREATE TEMP TABLE mine (x INTEGER)")
            .await
            .unwrap();
        store.narrow_cache(&mut tx).await.unwrap();
        tx.commit().await.unwrap();

        let mut held = Vec::new();
        for _ in 0..config.max_connections {
            let mut conn = store.data.acquire().await.unwrap();
            let seen: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_temp_master WHERE name = 'mine'")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            assert_eq!(seen, 0, "a data connection ran the large write");
            assert_eq!(cache_size(&mut conn).await, -4096);
            held.push(conn);
        }
        let mut tx = store.begin_large(false).await.unwrap();
        sqlx::query("INSERT INTO mine (x) VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_index_keys_on_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        index_keys_on_upgrade(crate::testing::sqlite_config(dir.path()), Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn pg_index_keys_on_upgrade() {
        let Some(config) = crate::testing::postgres_config().await.unwrap() else {
            eprintln!("skipped: SEALSYNC_TEST_DATABASE_URL is not set");
            return;
        };
        index_keys_on_upgrade(config, Backend::Postgres).await;
    }

    #[tokio::test]
    async fn sqlite_counting_bindings_on_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        counting_bindings_on_upgrade(crate::testing::sqlite_config(dir.path()), Backend::Sqlite)
            .await;
    }

    #[tokio::test]
    async fn pg_counting_bindings_on_upgrade() {
        let Some(config) = crate::testing::postgres_config().await.unwrap() else {
            eprintln!("skipped: SEALSYNC_TEST_DATABASE_URL is not set");
            return;
        };
        counting_bindings_on_upgrade(config, Backend::Postgres).await;
    }
}
