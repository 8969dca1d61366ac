//! Sync data: endpoints, links, link state, runs, run events and the conflict queue.
//!
//! Link state is what makes a sync incremental and restartable: per link and remote item, the
//! hub contact it is bound to, the etag last seen, and keyed content hashes of both sides as
//! last synced. Remote ids are stored only as keyed hashes. [`Store::apply_sync_batch`] writes
//! hub contacts, link state, events and conflicts of a batch of actions in one transaction.

use std::collections::HashSet;

use futures_util::TryStreamExt as _;
use sealsync_crypto::{IndexKind, RecordRef};
use sealsync_types::{ConflictId, ContactId, EndpointId, LinkId, RunId, WorkspaceId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::StoreError;
use crate::db::{ContactRow, IndexEntries, Marks, Store, contact_id, get, now, to32};

/// A stored endpoint; `config` is sealed.
#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub id: EndpointId,
    pub name: String,
    pub kind: String,
    pub config: Vec<u8>,
    pub created_at: i64,
}

/// A stored link; `config` is sealed.
#[derive(Debug, Clone)]
pub struct LinkRow {
    pub id: LinkId,
    pub name: String,
    pub endpoint: EndpointId,
    pub config: Vec<u8>,
    pub created_at: i64,
}

/// One remote item's binding to a hub contact, as of the last sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// Keyed hash of the remote id.
    pub remote_key: [u8; 32],
    pub contact: ContactId,
    pub etag: String,
    /// Keyed content hash of the remote item when last synced.
    pub remote_mac: [u8; 32],
    /// The hub contact's keyed content hash when last synced.
    pub hub_mac: [u8; 32],
}

/// What the sync engine needs of a hub contact without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubMeta {
    pub id: ContactId,
    pub version: i64,
    pub mac: [u8; 32],
    pub deleted: bool,
    pub updated_at: i64,
}

/// A run of a link.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: RunId,
    pub link: LinkId,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub status: String,
    /// JSON object of counts (no contact data).
    pub counts: String,
}

/// One event of a run; `detail` is sealed.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub action: String,
    pub contact: Option<ContactId>,
    pub detail: Option<Vec<u8>>,
    pub at: i64,
}

/// A queued conflict: a contact changed on both sides, waiting for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRow {
    pub id: ConflictId,
    pub link: LinkId,
    pub contact: ContactId,
    /// `both-changed`, `deleted-remotely` or `deleted-in-hub`.
    pub kind: String,
    /// `hub` or `remote` once someone decided.
    pub resolution: Option<String>,
    pub created_at: i64,
}

/// A connected account: its secret sealed (table `accounts`, field `secret`), a masked hint.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: [u8; 16],
    pub name: String,
    /// `basic` or `api-key`.
    pub kind: String,
    pub secret: Vec<u8>,
    pub hint: String,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    /// Why it cannot be used until connected again (`revoked`); `None` when it can. Writing
    /// the account clears it.
    pub status: Option<String>,
}

/// The change clocks a link's plan depends on: the workspace's hub clock and the link's own.
/// Each moves by one with every transaction that changes what it covers (hub contacts; the
/// link's state and conflicts), in that transaction. Zero until the first such change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clocks {
    pub hub: i64,
    pub link: i64,
}

/// The clocks a transaction moved: the value each has now, `None` for one it left alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub hub: Option<i64>,
    pub link: Option<i64>,
}

/// What a link's last run left settled: the clocks as of that state, a keyed digest of the
/// link's configuration and its endpoint's listing, and one of the configuration alone. While
/// the clocks and the first digest are unchanged, a run of the link has nothing to do. The
/// listing's members are kept beside the mark ([`Store::link_members`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMark {
    pub clocks: Clocks,
    pub digest: [u8; 32],
    pub settings: [u8; 32],
}

/// The clock scope of a workspace's hub contacts (a link's is its id).
const HUB_SCOPE: &[u8] = &[];

/// Everything one batch of sync actions writes, committed together.
#[derive(Debug, Default)]
pub struct SyncBatch {
    pub contacts: Vec<(ContactRow, IndexEntries)>,
    /// Remote keys whose state goes (applied before `upserts`).
    pub forget: Vec<[u8; 32]>,
    /// Bindings to write: each contact bound to one key (a remote key given twice lands as
    /// its last row).
    pub upserts: Vec<StateRow>,
    pub events: Vec<EventRow>,
    pub open_conflicts: Vec<ConflictRow>,
    pub close_conflicts: Vec<ContactId>,
}

impl SyncBatch {
    /// Whether the batch changes the link's state or its conflicts.
    fn moves_link(&self) -> bool {
        !(self.forget.is_empty()
            && self.upserts.is_empty()
            && self.open_conflicts.is_empty()
            && self.close_conflicts.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
            && self.forget.is_empty()
            && self.upserts.is_empty()
            && self.events.is_empty()
            && self.open_conflicts.is_empty()
            && self.close_conflicts.is_empty()
    }
}

/// Where a sealed endpoint or link configuration lives.
pub fn config_ref<'a>(table: &'a str, ws: WorkspaceId, id: &'a [u8; 16]) -> RecordRef<'a> {
    RecordRef {
        table,
        workspace: ws,
        record: id,
        field: "config",
    }
}

fn b(id: &[u8; 16]) -> Vec<u8> {
    id.to_vec()
}

fn run_row(r: &AnyRow) -> Result<RunRow, StoreError> {
    Ok(RunRow {
        id: RunId::from_bytes(id16(&get::<Vec<u8>>(r, "id")?)?),
        link: LinkId::from_bytes(id16(&get::<Vec<u8>>(r, "link_id")?)?),
        started_at: get(r, "started_at")?,
        ended_at: get(r, "ended_at")?,
        status: get(r, "status")?,
        counts: get(r, "counts")?,
    })
}

fn id16(bytes: &[u8]) -> Result<[u8; 16], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("id has the wrong length"))
}

impl Store {
    // ---- endpoints and links ----------------------------------------------------------------

    /// Inserts or replaces (by name) an endpoint.
    pub async fn put_endpoint(&self, ws: WorkspaceId, e: &EndpointRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO endpoints (workspace_id, id, name, kind, config, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (workspace_id, id) DO UPDATE SET name = excluded.name, kind = excluded.kind, config = excluded.config",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(e.id.as_bytes()))
        .bind(e.name.clone())
        .bind(e.kind.clone())
        .bind(e.config.clone())
        .bind(e.created_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn endpoints(&self, ws: WorkspaceId) -> Result<Vec<EndpointRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, kind, config, created_at FROM endpoints WHERE workspace_id = $1 ORDER BY name",
        )
        .bind(b(ws.as_bytes()))
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                Ok(EndpointRow {
                    id: EndpointId::from_bytes(id16(&get::<Vec<u8>>(r, "id")?)?),
                    name: get(r, "name")?,
                    kind: get(r, "kind")?,
                    config: get(r, "config")?,
                    created_at: get(r, "created_at")?,
                })
            })
            .collect()
    }

    /// Deletes an endpoint that no link uses. `false` if a link still uses it.
    pub async fn delete_endpoint(
        &self,
        ws: WorkspaceId,
        id: EndpointId,
    ) -> Result<bool, StoreError> {
        let used = sqlx::query(
            "SELECT COUNT(*) AS n FROM links WHERE workspace_id = $1 AND endpoint_id = $2",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(id.as_bytes()))
        .fetch_one(&self.data)
        .await
        .map_err(StoreError::db)?;
        if get::<i64>(&used, "n")? > 0 {
            return Ok(false);
        }
        for sql in [
            "DELETE FROM hook_items WHERE workspace_id = $1 AND endpoint_id = $2",
            "DELETE FROM hook_receipts WHERE workspace_id = $1 AND endpoint_id = $2",
            "DELETE FROM webhook_deliveries WHERE workspace_id = $1 AND endpoint_id = $2",
            "DELETE FROM endpoints WHERE workspace_id = $1 AND id = $2",
        ] {
            sqlx::query(sql)
                .bind(b(ws.as_bytes()))
                .bind(b(id.as_bytes()))
                .execute(&self.data)
                .await
                .map_err(StoreError::db)?;
        }
        Ok(true)
    }

    /// Creates the account, or replaces the one with its id.
    pub async fn put_account(&self, ws: WorkspaceId, a: &AccountRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO accounts (workspace_id, id, name, kind, secret, hint, created_at, rotated_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (workspace_id, id) DO UPDATE SET kind = excluded.kind, secret = excluded.secret, hint = excluded.hint, rotated_at = excluded.rotated_at, status = excluded.status",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(&a.id))
        .bind(a.name.clone())
        .bind(a.kind.clone())
        .bind(a.secret.clone())
        .bind(a.hint.clone())
        .bind(a.created_at)
        .bind(a.rotated_at)
        .bind(a.status.clone())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn accounts(&self, ws: WorkspaceId) -> Result<Vec<AccountRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, kind, secret, hint, created_at, rotated_at, status FROM accounts WHERE workspace_id = $1 ORDER BY name",
        )
        .bind(b(ws.as_bytes()))
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                Ok(AccountRow {
                    id: id16(&get::<Vec<u8>>(r, "id")?)?,
                    name: get(r, "name")?,
                    kind: get(r, "kind")?,
                    secret: get(r, "secret")?,
                    hint: get(r, "hint")?,
                    created_at: get(r, "created_at")?,
                    rotated_at: get(r, "rotated_at")?,
                    status: get(r, "status")?,
                })
            })
            .collect()
    }

    /// Marks why an account cannot be used (`None`: it can again).
    pub async fn set_account_status(
        &self,
        ws: WorkspaceId,
        id: &[u8; 16],
        status: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE accounts SET status = $1 WHERE workspace_id = $2 AND id = $3")
            .bind(status.map(str::to_owned))
            .bind(b(ws.as_bytes()))
            .bind(b(id))
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?;
        Ok(())
    }

    /// Takes the account's lease until `until` (ms) when no one holds it at `now`; or, with
    /// `until` = `None`, gives it back. `false`: another holds it.
    pub async fn lease_account(
        &self,
        ws: WorkspaceId,
        id: &[u8; 16],
        until: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = match until {
            Some(until) => sqlx::query(
                "UPDATE accounts SET lease_until = $1 WHERE workspace_id = $2 AND id = $3 \
                 AND (lease_until IS NULL OR lease_until < $4)",
            )
            .bind(until)
            .bind(b(ws.as_bytes()))
            .bind(b(id))
            .bind(now),
            None => sqlx::query(
                "UPDATE accounts SET lease_until = NULL WHERE workspace_id = $1 AND id = $2",
            )
            .bind(b(ws.as_bytes()))
            .bind(b(id)),
        }
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes an account; `false` when there was none with that id.
    pub async fn delete_account(&self, ws: WorkspaceId, id: &[u8; 16]) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM accounts WHERE workspace_id = $1 AND id = $2")
            .bind(b(ws.as_bytes()))
            .bind(b(id))
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn put_link(&self, ws: WorkspaceId, l: &LinkRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO links (workspace_id, id, name, endpoint_id, config, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (workspace_id, id) DO UPDATE SET name = excluded.name, endpoint_id = excluded.endpoint_id, config = excluded.config",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(l.id.as_bytes()))
        .bind(l.name.clone())
        .bind(b(l.endpoint.as_bytes()))
        .bind(l.config.clone())
        .bind(l.created_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn links(&self, ws: WorkspaceId) -> Result<Vec<LinkRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, endpoint_id, config, created_at FROM links WHERE workspace_id = $1 ORDER BY name",
        )
        .bind(b(ws.as_bytes()))
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                Ok(LinkRow {
                    id: LinkId::from_bytes(id16(&get::<Vec<u8>>(r, "id")?)?),
                    name: get(r, "name")?,
                    endpoint: EndpointId::from_bytes(id16(&get::<Vec<u8>>(r, "endpoint_id")?)?),
                    config: get(r, "config")?,
                    created_at: get(r, "created_at")?,
                })
            })
            .collect()
    }

    /// Deletes a link with its state, runs and conflicts. Hub contacts stay.
    pub async fn delete_link(&self, ws: WorkspaceId, id: LinkId) -> Result<(), StoreError> {
        let mut tx = self.data.begin().await.map_err(StoreError::db)?;
        sqlx::query(
            "DELETE FROM run_events WHERE workspace_id = $1 AND run_id IN \
             (SELECT id FROM runs WHERE workspace_id = $1 AND link_id = $2)",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(id.as_bytes()))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        for sql in [
            "DELETE FROM runs WHERE workspace_id = $1 AND link_id = $2",
            "DELETE FROM link_locks WHERE workspace_id = $1 AND link_id = $2",
            "DELETE FROM link_state WHERE workspace_id = $1 AND link_id = $2",
            "DELETE FROM link_cursors WHERE workspace_id = $1 AND id = $2",
            "DELETE FROM link_marks WHERE workspace_id = $1 AND link_id = $2",
            "DELETE FROM sync_clocks WHERE workspace_id = $1 AND scope = $2",
            "DELETE FROM conflicts WHERE workspace_id = $1 AND link_id = $2",
            "DELETE FROM links WHERE workspace_id = $1 AND id = $2",
        ] {
            sqlx::query(sql)
                .bind(b(ws.as_bytes()))
                .bind(b(id.as_bytes()))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        }
        tx.commit().await.map_err(StoreError::db)
    }

    // ---- state ------------------------------------------------------------------------------

    /// The sealed cursor the link's endpoint left at its last listing, if any.
    pub async fn link_cursor(
        &self,
        ws: WorkspaceId,
        link: LinkId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT cursor FROM link_cursors WHERE workspace_id = $1 AND id = $2")
            .bind(b(ws.as_bytes()))
            .bind(b(link.as_bytes()))
            .fetch_optional(&self.data)
            .await
            .map_err(StoreError::db)
    }

    /// Keeps (or, with `None`, forgets) the link's sealed cursor.
    pub async fn put_link_cursor(
        &self,
        ws: WorkspaceId,
        link: LinkId,
        sealed: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let q = match sealed {
            Some(sealed) => sqlx::query(
                "INSERT INTO link_cursors (workspace_id, id, cursor) VALUES ($1, $2, $3) \
                 ON CONFLICT (workspace_id, id) DO UPDATE SET cursor = excluded.cursor",
            )
            .bind(b(ws.as_bytes()))
            .bind(b(link.as_bytes()))
            .bind(sealed),
            None => sqlx::query("DELETE FROM link_cursors WHERE workspace_id = $1 AND id = $2")
                .bind(b(ws.as_bytes()))
                .bind(b(link.as_bytes())),
        };
        q.execute(&self.data).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Every state row of a link.
    pub async fn link_state(
        &self,
        ws: WorkspaceId,
        link: LinkId,
    ) -> Result<Vec<StateRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT remote_key, contact_id, etag, remote_mac, hub_mac FROM link_state \
             WHERE workspace_id = $1 AND link_id = $2",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(link.as_bytes()));
        // Row by row: a link's state can hold a row per contact, and a run reads it beside
        // the hub's metadata; neither keeps a second copy in driver rows.
        let mut stream = rows.fetch(&self.data);
        let mut out = Vec::new();
        while let Some(r) = stream.try_next().await.map_err(StoreError::db)? {
            out.push(state_from_row(&r)?);
        }
        Ok(out)
    }

    /// Metadata of every hub contact, tombstones included, without opening any.
    pub async fn hub_meta(&self, ws: WorkspaceId) -> Result<Vec<HubMeta>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, version, content_mac, deleted, updated_at FROM contacts WHERE workspace_id = $1",
        )
        .bind(b(ws.as_bytes()));
        let mut stream = rows.fetch(&self.data);
        let mut out = Vec::new();
        while let Some(r) = stream.try_next().await.map_err(StoreError::db)? {
            out.push(hub_meta_from_row(&r)?);
        }
        Ok(out)
    }

    /// Metadata of the hub contacts written after the hub clock stood at `after`, tombstones
    /// included.
    pub async fn hub_meta_since(
        &self,
        ws: WorkspaceId,
        after: i64,
    ) -> Result<Vec<HubMeta>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, version, content_mac, deleted, updated_at FROM contacts \
             WHERE workspace_id = $1 AND hub_clock > $2",
        )
        .bind(b(ws.as_bytes()))
        .bind(after)
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter().map(hub_meta_from_row).collect()
    }

    /// Metadata of these hub contacts; ids the hub does not hold are left out.
    pub async fn hub_meta_of(
        &self,
        ws: WorkspaceId,
        ids: &[ContactId],
    ) -> Result<Vec<HubMeta>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut m = Marks::new(self.backend);
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "SELECT id, version, content_mac, deleted, updated_at FROM contacts \
                 WHERE workspace_id = {} AND id IN ({})",
                m.next(),
                m.list(chunk.len())
            )))
            .bind(b(ws.as_bytes()));
            for id in chunk {
                q = q.bind(b(id.as_bytes()));
            }
            for r in q.fetch_all(&self.data).await.map_err(StoreError::db)? {
                out.push(hub_meta_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// How many items `link` binds, as its clock row counts them (no row: none).
    pub async fn link_state_count(&self, ws: WorkspaceId, link: LinkId) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT bound FROM sync_clocks WHERE workspace_id = $1 AND scope = $2",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(link.as_bytes()))
        .fetch_optional(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// The rows of `link`'s state for these remote keys and for these contacts, each once.
    pub async fn link_state_of(
        &self,
        ws: WorkspaceId,
        link: LinkId,
        keys: &[[u8; 32]],
        contacts: &[ContactId],
    ) -> Result<Vec<StateRow>, StoreError> {
        let mut out: Vec<StateRow> = Vec::new();
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let contacts: Vec<Vec<u8>> = contacts.iter().map(|c| b(c.as_bytes())).collect();
        for (column, values) in [("remote_key", keys), ("contact_id", contacts)] {
            for chunk in values.chunks(500) {
                let mut m = Marks::new(self.backend);
                let mut q = sqlx::query(AssertSqlSafe(format!(
                    "SELECT remote_key, contact_id, etag, remote_mac, hub_mac FROM link_state \
                     WHERE workspace_id = {} AND link_id = {} AND {column} IN ({})",
                    m.next(),
                    m.next(),
                    m.list(chunk.len())
                )))
                .bind(b(ws.as_bytes()))
                .bind(b(link.as_bytes()));
                for v in chunk {
                    q = q.bind(v.clone());
                }
                for r in q.fetch_all(&self.data).await.map_err(StoreError::db)? {
                    out.push(state_from_row(&r)?);
                }
            }
        }
        out.sort_unstable_by_key(|s| s.remote_key);
        out.dedup_by_key(|s| s.remote_key);
        Ok(out)
    }

    /// Writes a batch of sync actions in one transaction: hub contacts with their index
    /// entries, link state, events and conflicts. All of it lands, or none.
    pub async fn apply_sync_batch(
        &self,
        ws: WorkspaceId,
        link: LinkId,
        run: RunId,
        batch: &SyncBatch,
    ) -> Result<Moved, StoreError> {
        if batch.is_empty() {
            return Ok(Moved::default());
        }
        let _turn = self.write_turn().await;
        // A batch of a few rows (a webhook delivery, a small run) fits the small cache.
        let wide = batch.contacts.len() + batch.upserts.len() >= 1000;
        let mut tx = if wide {
            self.begin_large(false).await?
        } else {
            self.data.begin().await.map_err(StoreError::db)?
        };
        let mut moved = Moved::default();
        if !batch.contacts.is_empty() {
            let stamp = self.bump_hub_clock(&mut tx, ws).await?;
            self.write_contacts_in(&mut tx, ws, &batch.contacts, stamp)
                .await?;
            moved.hub = Some(stamp);
        }
        let wsb = b(ws.as_bytes());
        let linkb = b(link.as_bytes());
        // How many bindings the batch adds, less those it removes: the link's clock row keeps
        // the count.
        let mut bound: i64 = 0;
        for part in batch.forget.chunks(400) {
            let sql = link_keys_sql(self.backend, "DELETE", part.len());
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(wsb.clone())
                .bind(linkb.clone());
            for k in part {
                q = q.bind(k.to_vec());
            }
            let gone = q.execute(&mut *tx).await.map_err(StoreError::db)?;
            bound -= gone.rows_affected() as i64;
        }
        // Each remote key once, as its last row says. A binding that stays (same key, same
        // contact) is updated in place: its etag and hashes are not indexed, so only the row's
        // page is written. Any other binding of these keys or contacts goes first.
        let mut upserts = last_per(&batch.upserts, |s| s.remote_key);
        // In key order, as the table keeps them (the keys are keyed hashes), where the order
        // cannot change the outcome: with each contact once, no part undoes another's binding.
        let mut contacts = HashSet::with_capacity(upserts.len());
        if upserts.iter().all(|s| contacts.insert(s.contact)) {
            upserts.sort_unstable_by_key(|s| s.remote_key);
        }
        // Until one part rebinds: a batch that rebinds mostly does so throughout, and its
        // parts go the long way without trying the short one first.
        let mut all_new = true;
        for part in upserts.chunks(400) {
            if all_new
                && self
                    .insert_new_bindings(&mut tx, &wsb, &linkb, part)
                    .await?
            {
                bound += part.len() as i64;
                continue;
            }
            all_new = false;
            // By contact, then by key: each one IN list on an indexed column.
            for by in ["contact_id", "remote_key"] {
                let mut m = Marks::new(self.backend);
                let (ws_at, link_at) = (m.next(), m.next());
                let list = m.list(part.len());
                let pairs = (0..part.len())
                    .map(|_| m.tuple(2))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "DELETE FROM link_state WHERE workspace_id = {ws_at} AND link_id = {link_at} \
                     AND {by} IN ({list}) AND (remote_key, contact_id) NOT IN (VALUES {pairs})"
                );
                let mut q = sqlx::query(AssertSqlSafe(sql))
                    .bind(wsb.clone())
                    .bind(linkb.clone());
                for s in part {
                    q = match by {
                        "contact_id" => q.bind(b(s.contact.as_bytes())),
                        _ => q.bind(s.remote_key.to_vec()),
                    };
                }
                for s in part {
                    q = q.bind(s.remote_key.to_vec()).bind(b(s.contact.as_bytes()));
                }
                let gone = q.execute(&mut *tx).await.map_err(StoreError::db)?;
                bound -= gone.rows_affected() as i64;
            }
            // Every row still holding one of these keys is a binding that stays: the insert
            // below updates it. The others are new.
            let sql = link_keys_sql(self.backend, "SELECT COUNT(*)", part.len());
            let mut q = sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(wsb.clone())
                .bind(linkb.clone());
            for s in part {
                q = q.bind(s.remote_key.to_vec());
            }
            let stay: i64 = q.fetch_one(&mut *tx).await.map_err(StoreError::db)?;
            bound += part.len() as i64 - stay;

            self.insert_bindings(&wsb, &linkb, part, true)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        }
        for part in batch.events.chunks(400) {
            let mut m = Marks::new(self.backend);
            let values = (0..part.len())
                .map(|_| m.tuple(7))
                .collect::<Vec<_>>()
                .join(", ");
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO run_events (workspace_id, run_id, seq, action, contact_id, detail, at) VALUES {values}"
            )));
            for e in part {
                q = q
                    .bind(wsb.clone())
                    .bind(b(run.as_bytes()))
                    .bind(e.seq)
                    .bind(e.action.clone())
                    .bind(e.contact.map(|c| b(c.as_bytes())))
                    .bind(e.detail.clone())
                    .bind(e.at);
            }
            q.execute(&mut *tx).await.map_err(StoreError::db)?;
        }
        for c in &batch.close_conflicts {
            sqlx::query("DELETE FROM conflicts WHERE workspace_id = $1 AND link_id = $2 AND contact_id = $3")
                .bind(wsb.clone())
                .bind(linkb.clone())
                .bind(b(c.as_bytes()))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        }
        for c in &batch.open_conflicts {
            sqlx::query(
                "INSERT INTO conflicts (workspace_id, link_id, contact_id, id, kind, resolution, created_at) \
                 VALUES ($1, $2, $3, $4, $5, NULL, $6) ON CONFLICT (workspace_id, link_id, contact_id) DO NOTHING",
            )
            .bind(wsb.clone())
            .bind(linkb.clone())
            .bind(b(c.contact.as_bytes()))
            .bind(b(c.id.as_bytes()))
            .bind(c.kind.clone())
            .bind(c.created_at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        }
        // Last, so that on PostgreSQL the link's clock row stays locked only until the commit.
        if batch.moves_link() {
            moved.link = Some(self.bump_clock(&mut tx, ws, link.as_bytes(), bound).await?);
        }
        if wide {
            self.narrow_cache(&mut tx).await?;
        }
        tx.commit().await.map_err(StoreError::db)?;
        Ok(moved)
    }

    /// Inserts these bindings as rows of their own where none of their keys or contacts is
    /// bound yet, as in an initial sync: the lookups that find the bindings to replace are not
    /// needed then. `false`, with nothing written, where one is.
    async fn insert_new_bindings(
        &self,
        tx: &mut AnyConnection,
        wsb: &[u8],
        linkb: &[u8],
        part: &[&StateRow],
    ) -> Result<bool, StoreError> {
        let mut attempt = sqlx::Connection::begin(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        match self
            .insert_bindings(wsb, linkb, part, false)
            .execute(&mut *attempt)
            .await
        {
            Ok(_) => {
                attempt.commit().await.map_err(StoreError::db)?;
                Ok(true)
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                attempt.rollback().await.map_err(StoreError::db)?;
                Ok(false)
            }
            Err(e) => Err(StoreError::db(e)),
        }
    }

    /// One statement inserting these bindings: as new rows only, or updating the row of a
    /// key that is bound to the same contact already.
    fn insert_bindings<'q>(
        &self,
        wsb: &[u8],
        linkb: &[u8],
        part: &[&StateRow],
        upsert: bool,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let mut m = Marks::new(self.backend);
        let values = (0..part.len())
            .map(|_| m.tuple(7))
            .collect::<Vec<_>>()
            .join(", ");
        let upsert = if upsert {
            " ON CONFLICT (workspace_id, link_id, remote_key) DO UPDATE SET \
             etag = excluded.etag, remote_mac = excluded.remote_mac, hub_mac = excluded.hub_mac"
        } else {
            ""
        };
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO link_state (workspace_id, link_id, remote_key, contact_id, etag, remote_mac, hub_mac) \
             VALUES {values}{upsert}"
        )));
        for s in part {
            q = q
                .bind(wsb.to_vec())
                .bind(linkb.to_vec())
                .bind(s.remote_key.to_vec())
                .bind(b(s.contact.as_bytes()))
                .bind(s.etag.clone())
                .bind(s.remote_mac.to_vec())
                .bind(s.hub_mac.to_vec());
        }
        q
    }

    /// Moves a clock of `ws` by one inside `tx`, and its count of bindings by `bound` (a
    /// link's; the hub's stays 0), and returns its new value. On PostgreSQL the clock's row
    /// stays locked until the commit.
    pub(crate) async fn bump_clock(
        &self,
        tx: &mut AnyConnection,
        ws: WorkspaceId,
        scope: &[u8],
        bound: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO sync_clocks (workspace_id, scope, n, bound) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (workspace_id, scope) DO UPDATE SET n = sync_clocks.n + 1, \
             bound = sync_clocks.bound + excluded.bound RETURNING n",
        )
        .bind(b(ws.as_bytes()))
        .bind(scope.to_vec())
        .bind(bound)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db)
    }

    /// Moves the hub clock of `ws`: every transaction that writes hub contacts calls it before
    /// its first write, and stamps the contacts it writes ([`Store::write_contacts_in`]) with
    /// the value it returns. Taking the hub clock first is also the lock order on PostgreSQL:
    /// hub clock, contact rows, link clock.
    pub(crate) async fn bump_hub_clock(
        &self,
        tx: &mut AnyConnection,
        ws: WorkspaceId,
    ) -> Result<i64, StoreError> {
        self.bump_clock(tx, ws, HUB_SCOPE, 0).await
    }

    /// The hub clock of `ws` as `tx` sees it (0 before its first write), and whether the
    /// workspace holds any contact row at all, tombstones included.
    pub(crate) async fn hub_clock_and_any_contact(
        &self,
        tx: &mut AnyConnection,
        ws: WorkspaceId,
    ) -> Result<(i64, bool), StoreError> {
        let clock: Option<i64> =
            sqlx::query_scalar("SELECT n FROM sync_clocks WHERE workspace_id = $1 AND scope = $2")
                .bind(b(ws.as_bytes()))
                .bind(HUB_SCOPE.to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        let any: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM contacts WHERE workspace_id = $1 LIMIT 1")
                .bind(b(ws.as_bytes()))
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        Ok((clock.unwrap_or(0), any.is_some()))
    }

    /// The hub's and `link`'s clocks now.
    pub async fn clocks(&self, ws: WorkspaceId, link: LinkId) -> Result<Clocks, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, n FROM sync_clocks WHERE workspace_id = $1 AND scope IN ($2, $3)",
        )
        .bind(b(ws.as_bytes()))
        .bind(HUB_SCOPE.to_vec())
        .bind(b(link.as_bytes()))
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        let mut clocks = Clocks::default();
        for r in &rows {
            let n: i64 = get(r, "n")?;
            if get::<Vec<u8>>(r, "scope")?.is_empty() {
                clocks.hub = n;
            } else {
                clocks.link = n;
            }
        }
        Ok(clocks)
    }

    /// The mark `link`'s last settled run left, if any.
    pub async fn link_mark(
        &self,
        ws: WorkspaceId,
        link: LinkId,
    ) -> Result<Option<LinkMark>, StoreError> {
        let row = sqlx::query(
            "SELECT hub_clock, link_clock, digest, settings FROM link_marks \
             WHERE workspace_id = $1 AND link_id = $2 AND settings IS NOT NULL",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(link.as_bytes()))
        .fetch_optional(&self.data)
        .await
        .map_err(StoreError::db)?;
        row.map(|r| {
            Ok(LinkMark {
                clocks: Clocks {
                    hub: get(&r, "hub_clock")?,
                    link: get(&r, "link_clock")?,
                },
                digest: to32(&get::<Vec<u8>>(&r, "digest")?)?,
                settings: to32(&get::<Vec<u8>>(&r, "settings")?)?,
            })
        })
        .transpose()
    }

    /// The listing members kept with `link`'s mark, as given to [`Store::put_link_mark`].
    pub async fn link_members(
        &self,
        ws: WorkspaceId,
        link: LinkId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row =
            sqlx::query("SELECT members FROM link_marks WHERE workspace_id = $1 AND link_id = $2")
                .bind(b(ws.as_bytes()))
                .bind(b(link.as_bytes()))
                .fetch_optional(&self.data)
                .await
                .map_err(StoreError::db)?;
        row.map(|r| get::<Option<Vec<u8>>>(&r, "members"))
            .transpose()
            .map(Option::flatten)
    }

    /// Keeps `link`'s mark with its listing's members (opaque bytes to the store), or forgets
    /// it.
    pub async fn put_link_mark(
        &self,
        ws: WorkspaceId,
        link: LinkId,
        mark: Option<(&LinkMark, &[u8])>,
    ) -> Result<(), StoreError> {
        let q = match mark {
            Some((m, members)) => sqlx::query(
                "INSERT INTO link_marks (workspace_id, link_id, hub_clock, link_clock, digest, settings, members) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (workspace_id, link_id) DO UPDATE SET \
                 hub_clock = excluded.hub_clock, link_clock = excluded.link_clock, digest = excluded.digest, \
                 settings = excluded.settings, members = excluded.members",
            )
            .bind(b(ws.as_bytes()))
            .bind(b(link.as_bytes()))
            .bind(m.clocks.hub)
            .bind(m.clocks.link)
            .bind(m.digest.to_vec())
            .bind(m.settings.to_vec())
            .bind(members.to_vec()),
            None => sqlx::query("DELETE FROM link_marks WHERE workspace_id = $1 AND link_id = $2")
                .bind(b(ws.as_bytes()))
                .bind(b(link.as_bytes())),
        };
        q.execute(&self.data).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Writes contacts and replaces their index entries inside a transaction, stamped with the
    /// hub clock `stamp` the transaction moved the clock to ([`Store::bump_hub_clock`]).
    ///
    /// A contact given twice is written once, as the last of them. New contacts (version 1)
    /// are inserted with conflicts ignored (on SQLite `INSERT OR IGNORE`: a statement that
    /// cannot abort half-way needs no statement journal, a copy of every page it touches); a
    /// chunk where some row was not inserted (its id was taken) loses those ids' index entries
    /// and is written again as an upsert, like replaced contacts.
    pub(crate) async fn write_contacts_in(
        &self,
        tx: &mut AnyConnection,
        ws: WorkspaceId,
        rows: &[(ContactRow, IndexEntries)],
        stamp: i64,
    ) -> Result<(), StoreError> {
        const CHUNK: usize = 200;
        const INDEX_CHUNK: usize = 300;
        let wsb = b(ws.as_bytes());
        let sqlite = self.backend == crate::db::Backend::Sqlite;
        let (mut delete_sql, mut insert_sql, mut upsert_sql) = Default::default();
        let rows = last_per(rows, |(r, _)| r.id);
        let (fresh, replaced): (Vec<_>, Vec<_>) = rows.iter().partition(|(r, _)| r.version == 1);
        // The replaced contacts' entries as they are: only those that go are deleted and only
        // those that come are inserted. An entry deleted and inserted again rewrites the pages
        // of both index trees for nothing, and most edits keep every email, phone and UID.
        let mut held: HashSet<([u8; 16], String, Vec<u8>)> = HashSet::new();
        for chunk in replaced.chunks(CHUNK) {
            self.index_entries_of(tx, &wsb, chunk, &mut held).await?;
        }
        let wanted: HashSet<([u8; 16], &str, &[u8])> = replaced
            .iter()
            .flat_map(|(row, index)| {
                index
                    .iter()
                    .map(move |(k, v)| (*row.id.as_bytes(), k.as_str(), v.as_slice()))
            })
            .collect();
        let kept: HashSet<([u8; 16], &str, &[u8])> = held
            .iter()
            .map(|(c, k, v)| (*c, k.as_str(), v.as_slice()))
            .collect();
        let gone: Vec<&([u8; 16], String, Vec<u8>)> = held
            .iter()
            .filter(|(c, k, v)| !wanted.contains(&(*c, k.as_str(), v.as_slice())))
            .collect();
        self.delete_index_entries(tx, &wsb, &gone, &mut delete_sql)
            .await?;
        let mut upserted: Vec<&ContactRow> = Vec::new();
        let columns = "contacts (workspace_id, id, version, key_version, body, content_mac, deleted, updated_at, hub_clock, index_keys)";
        let statement = |n: usize, upsert: bool| {
            let mut m = Marks::new(self.backend);
            let values = (0..n).map(|_| m.tuple(10)).collect::<Vec<_>>().join(", ");
            match (upsert, sqlite) {
                (false, true) => format!("INSERT OR IGNORE INTO {columns} VALUES {values}"),
                (false, false) => {
                    format!("INSERT INTO {columns} VALUES {values} ON CONFLICT DO NOTHING")
                }
                (true, _) => format!(
                    "INSERT INTO {columns} VALUES {values} \
                     ON CONFLICT (workspace_id, id) DO UPDATE SET version = excluded.version, \
                     body = excluded.body, content_mac = excluded.content_mac, \
                     deleted = excluded.deleted, updated_at = excluded.updated_at, hub_clock = excluded.hub_clock, \
                     index_keys = excluded.index_keys"
                ),
            }
        };
        let bind_rows = |text: String, chunk: &[&(ContactRow, IndexEntries)]| {
            let mut q = sqlx::query(AssertSqlSafe(text));
            for (row, index) in chunk {
                q = q
                    .bind(wsb.clone())
                    .bind(b(row.id.as_bytes()))
                    .bind(row.version)
                    .bind(i64::from(row.key_version))
                    .bind(row.body.clone())
                    .bind(row.content_mac.to_vec())
                    .bind(i64::from(row.body.is_none()))
                    .bind(row.updated_at)
                    .bind(stamp)
                    .bind(index_keys(index));
            }
            q
        };
        for chunk in fresh.chunks(CHUNK) {
            let text = SqlShapes::get(&mut insert_sql, chunk.len(), |n| statement(n, false));
            let done = bind_rows(text, chunk)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db)?;
            if done.rows_affected() != chunk.len() as u64 {
                // Rows already there (a run that stopped after writing them): their entries go
                // first, as a replaced row's do.
                let mut there = HashSet::new();
                self.index_entries_of(tx, &wsb, chunk, &mut there).await?;
                let there: Vec<_> = there.iter().collect();
                self.delete_index_entries(tx, &wsb, &there, &mut delete_sql)
                    .await?;
                let text = SqlShapes::get(&mut upsert_sql, chunk.len(), |n| statement(n, true));
                bind_rows(text, chunk)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db)?;
                upserted.extend(chunk.iter().map(|(row, _)| row));
            }
        }
        for chunk in replaced.chunks(CHUNK) {
            let text = SqlShapes::get(&mut upsert_sql, chunk.len(), |n| statement(n, true));
            bind_rows(text, chunk)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        }
        upserted.extend(replaced.iter().map(|(row, _)| row));
        // The upsert leaves a replaced row's key version alone: setting an indexed column, even
        // to the value it has, rewrites its index entry. Rows sealed under another version than
        // they had (a rotation between two writes) move here.
        let mut versions: Vec<u32> = upserted.iter().map(|r| r.key_version).collect();
        versions.sort_unstable();
        versions.dedup();
        for version in versions {
            let ids: Vec<&ContactRow> = upserted
                .iter()
                .copied()
                .filter(|r| r.key_version == version)
                .collect();
            for part in ids.chunks(400) {
                let mut m = Marks::new(self.backend);
                let (set, ws_at, other) = (m.next(), m.next(), m.next());
                let sql = format!(
                    "UPDATE contacts SET key_version = {set} WHERE workspace_id = {ws_at} \
                     AND key_version <> {other} AND id IN ({})",
                    m.list(part.len()),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql))
                    .bind(i64::from(version))
                    .bind(wsb.clone())
                    .bind(i64::from(version));
                for row in part {
                    q = q.bind(b(row.id.as_bytes()));
                }
                q.execute(&mut *tx).await.map_err(StoreError::db)?;
            }
        }
        let mut entries: Vec<(&ContactRow, &str, &[u8; 32])> = rows
            .iter()
            .flat_map(|(row, index)| index.iter().map(move |(k, v)| (row, k.as_str(), v)))
            .filter(|(row, kind, value)| {
                row.version == 1 || !kept.contains(&(*row.id.as_bytes(), *kind, value.as_slice()))
            })
            .collect();
        // In the index's own order: each insert lands next to the one before, on a page just
        // written, instead of anywhere in the tree (the values are keyed hashes).
        entries.sort_unstable_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)));
        let mut index_sql = SqlShapes::default();
        for part in entries.chunks(INDEX_CHUNK) {
            let text = SqlShapes::get(&mut index_sql, part.len(), |n| {
                let mut m = Marks::new(self.backend);
                let values = (0..n).map(|_| m.tuple(4)).collect::<Vec<_>>().join(", ");
                // The index holds each (value, contact) once; a repeat is the same entry.
                if sqlite {
                    format!(
                        "INSERT OR IGNORE INTO contact_index (workspace_id, kind, value, contact_id) VALUES {values}"
                    )
                } else {
                    format!(
                        "INSERT INTO contact_index (workspace_id, kind, value, contact_id) VALUES {values} \
                         ON CONFLICT DO NOTHING"
                    )
                }
            });
            let mut q = sqlx::query(AssertSqlSafe(text));
            for (row, kind, value) in part {
                q = q
                    .bind(wsb.clone())
                    .bind(*kind)
                    .bind(value.to_vec())
                    .bind(b(row.id.as_bytes()));
            }
            q.execute(&mut *tx).await.map_err(StoreError::db)?;
        }
        Ok(())
    }

    /// Adds the index entries these contacts hold to `held`, as their rows list them.
    async fn index_entries_of(
        &self,
        tx: &mut AnyConnection,
        wsb: &[u8],
        chunk: &[&(ContactRow, IndexEntries)],
        held: &mut HashSet<([u8; 16], String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut m = Marks::new(self.backend);
        let text = format!(
            "SELECT id, index_keys FROM contacts WHERE workspace_id = {} AND id IN ({})",
            m.next(),
            m.list(chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(text)).bind(wsb.to_vec());
        for (row, _) in chunk {
            q = q.bind(b(row.id.as_bytes()));
        }
        for row in q.fetch_all(&mut *tx).await.map_err(StoreError::db)? {
            let contact: Vec<u8> = get(&row, "id")?;
            let Ok(contact) = <[u8; 16]>::try_from(contact.as_slice()) else {
                continue;
            };
            let keys: Option<Vec<u8>> = get(&row, "index_keys")?;
            for (kind, value) in parse_index_keys(keys.as_deref().unwrap_or_default())? {
                held.insert((contact, kind.as_str().to_owned(), value.to_vec()));
            }
        }
        Ok(())
    }

    /// Deletes these index entries (contact, kind, value), by the index's own key.
    async fn delete_index_entries(
        &self,
        tx: &mut AnyConnection,
        wsb: &[u8],
        entries: &[&([u8; 16], String, Vec<u8>)],
        shapes: &mut SqlShapes,
    ) -> Result<(), StoreError> {
        for part in entries.chunks(100) {
            let text = SqlShapes::get(shapes, part.len(), |n| {
                let mut m = Marks::new(self.backend);
                let ws = m.next();
                let each = (0..n)
                    .map(|_| {
                        format!(
                            "(kind = {} AND value = {} AND contact_id = {})",
                            m.next(),
                            m.next(),
                            m.next()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" OR ");
                format!("DELETE FROM contact_index WHERE workspace_id = {ws} AND ({each})")
            });
            let mut q = sqlx::query(AssertSqlSafe(text)).bind(wsb.to_vec());
            for (contact, kind, value) in part {
                q = q
                    .bind(kind.clone())
                    .bind(value.clone())
                    .bind(contact.to_vec());
            }
            q.execute(&mut *tx).await.map_err(StoreError::db)?;
        }
        Ok(())
    }

    // ---- one run per link ---------------------------------------------------------------------

    /// Claims a link for one run. A claim is free when nobody holds it, when its holder stopped
    /// renewing it `stale_after` seconds ago, or when `holder_gone` says the holder no longer
    /// runs (a process on this host that died). Returns the current holder when taken.
    pub async fn claim_link(
        &self,
        ws: WorkspaceId,
        link: LinkId,
        holder: &str,
        stale_after: i64,
        holder_gone: impl Fn(&str) -> bool,
    ) -> Result<Result<(), String>, StoreError> {
        let now = now();
        let ws_b = b(ws.as_bytes());
        let link_b = b(link.as_bytes());
        // One statement, so that two processes cannot both take a free claim.
        let took = sqlx::query(
            "INSERT INTO link_locks (workspace_id, link_id, holder, renewed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (workspace_id, link_id) DO UPDATE SET holder = excluded.holder, renewed_at = excluded.renewed_at \
             WHERE link_locks.holder = excluded.holder OR link_locks.renewed_at < $5",
        )
        .bind(ws_b.clone())
        .bind(link_b.clone())
        .bind(holder.to_owned())
        .bind(now)
        .bind(now - stale_after)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        if took.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let row =
            sqlx::query("SELECT holder FROM link_locks WHERE workspace_id = $1 AND link_id = $2")
                .bind(ws_b.clone())
                .bind(link_b.clone())
                .fetch_optional(&self.data)
                .await
                .map_err(StoreError::db)?;
        let Some(row) = row else {
            return Ok(Err("another run (it just finished; try again)".into()));
        };
        let other: String = get(&row, "holder")?;
        if !holder_gone(&other) {
            return Ok(Err(other));
        }
        // The holder is gone: take over, unless someone else did first.
        let took = sqlx::query(
            "UPDATE link_locks SET holder = $1, renewed_at = $2 WHERE workspace_id = $3 AND link_id = $4 AND holder = $5",
        )
        .bind(holder.to_owned())
        .bind(now)
        .bind(ws_b)
        .bind(link_b)
        .bind(other.clone())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(if took.rows_affected() == 1 {
            Ok(())
        } else {
            Err(other)
        })
    }

    /// Renews (or, with `release`, drops) a claim held by `holder`.
    pub async fn renew_link_claim(
        &self,
        ws: WorkspaceId,
        link: LinkId,
        holder: &str,
        release: bool,
    ) -> Result<(), StoreError> {
        let sql = if release {
            "DELETE FROM link_locks WHERE workspace_id = $1 AND link_id = $2 AND holder = $3"
        } else {
            "UPDATE link_locks SET renewed_at = $4 WHERE workspace_id = $1 AND link_id = $2 AND holder = $3"
        };
        let mut q = sqlx::query(sql)
            .bind(b(ws.as_bytes()))
            .bind(b(link.as_bytes()))
            .bind(holder.to_owned());
        if !release {
            q = q.bind(now());
        }
        q.execute(&self.data).await.map_err(StoreError::db)?;
        Ok(())
    }

    // ---- runs, events, conflicts ------------------------------------------------------------

    pub async fn put_run(&self, ws: WorkspaceId, r: &RunRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runs (workspace_id, id, link_id, started_at, ended_at, status, counts) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (workspace_id, id) DO UPDATE SET ended_at = excluded.ended_at, status = excluded.status, counts = excluded.counts",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(r.id.as_bytes()))
        .bind(b(r.link.as_bytes()))
        .bind(r.started_at)
        .bind(r.ended_at)
        .bind(r.status.clone())
        .bind(r.counts.clone())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    /// Records a run accepted but not begun (`queued`), by `holder` (the process that will
    /// run it, `host:pid`).
    pub async fn queue_run(
        &self,
        ws: WorkspaceId,
        r: &RunRow,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runs (workspace_id, id, link_id, started_at, ended_at, status, counts, holder) \
             VALUES ($1, $2, $3, $4, NULL, 'queued', $5, $6)",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(r.id.as_bytes()))
        .bind(b(r.link.as_bytes()))
        .bind(r.started_at)
        .bind(r.counts.clone())
        .bind(holder.to_owned())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    /// Marks the runs of `link` still recorded as `running`, and those queued by a holder
    /// that `holder_gone` says no longer runs, as `interrupted`, ended at `now`
    /// (milliseconds). Called by the holder of the link's claim before its run is recorded:
    /// no other run of the link goes on, so those stopped without saying so. Returns how many.
    pub async fn interrupt_runs(
        &self,
        ws: WorkspaceId,
        link: LinkId,
        now: i64,
        holder_gone: impl Fn(&str) -> bool,
    ) -> Result<u64, StoreError> {
        let (ws_b, link_b) = (b(ws.as_bytes()), b(link.as_bytes()));
        let mut done = sqlx::query(
            "UPDATE runs SET status = 'interrupted', ended_at = $1 \
             WHERE workspace_id = $2 AND link_id = $3 AND status = 'running'",
        )
        .bind(now)
        .bind(ws_b.clone())
        .bind(link_b.clone())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?
        .rows_affected();
        let queued = sqlx::query(
            "SELECT id, holder FROM runs WHERE workspace_id = $1 AND link_id = $2 AND status = 'queued'",
        )
        .bind(ws_b.clone())
        .bind(link_b)
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        for row in &queued {
            let holder: Option<String> = get(row, "holder")?;
            if !holder.as_deref().is_some_and(&holder_gone) {
                continue;
            }
            let id: Vec<u8> = get(row, "id")?;
            done += sqlx::query(
                "UPDATE runs SET status = 'interrupted', ended_at = $1 \
                 WHERE workspace_id = $2 AND id = $3 AND status = 'queued'",
            )
            .bind(now)
            .bind(ws_b.clone())
            .bind(id)
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?
            .rows_affected();
        }
        Ok(done)
    }

    /// Runs of one link, newest first.
    pub async fn link_runs(
        &self,
        ws: WorkspaceId,
        link: LinkId,
        limit: u32,
    ) -> Result<Vec<RunRow>, StoreError> {
        self.runs_of(ws, Some(link), limit).await
    }

    /// Runs of the workspace, newest first.
    pub async fn runs(&self, ws: WorkspaceId, limit: u32) -> Result<Vec<RunRow>, StoreError> {
        self.runs_of(ws, None, limit).await
    }

    async fn runs_of(
        &self,
        ws: WorkspaceId,
        link: Option<LinkId>,
        limit: u32,
    ) -> Result<Vec<RunRow>, StoreError> {
        let sql = match link {
            Some(_) => {
                "SELECT id, link_id, started_at, ended_at, status, counts FROM runs \
                 WHERE workspace_id = $1 AND link_id = $2 ORDER BY started_at DESC, id DESC LIMIT $3"
            }
            None => {
                "SELECT id, link_id, started_at, ended_at, status, counts FROM runs \
                 WHERE workspace_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
            }
        };
        let mut q = sqlx::query(sql).bind(b(ws.as_bytes()));
        if let Some(link) = link {
            q = q.bind(b(link.as_bytes()));
        }
        let rows = q
            .bind(i64::from(limit))
            .fetch_all(&self.data)
            .await
            .map_err(StoreError::db)?;
        rows.iter().map(run_row).collect()
    }

    /// One run, if it is in the workspace.
    pub async fn run(&self, ws: WorkspaceId, id: RunId) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, link_id, started_at, ended_at, status, counts FROM runs WHERE workspace_id = $1 AND id = $2",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(id.as_bytes()))
        .fetch_optional(&self.data)
        .await
        .map_err(StoreError::db)?;
        row.as_ref().map(run_row).transpose()
    }

    pub async fn run_events(
        &self,
        ws: WorkspaceId,
        run: RunId,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, action, contact_id, detail, at FROM run_events WHERE workspace_id = $1 AND run_id = $2 ORDER BY seq",
        )
        .bind(b(ws.as_bytes()))
        .bind(b(run.as_bytes()))
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                let contact: Option<Vec<u8>> = get(r, "contact_id")?;
                Ok(EventRow {
                    seq: get(r, "seq")?,
                    action: get(r, "action")?,
                    contact: contact.map(|c| contact_id(&c)).transpose()?,
                    detail: get(r, "detail")?,
                    at: get(r, "at")?,
                })
            })
            .collect()
    }

    pub async fn conflicts(&self, ws: WorkspaceId) -> Result<Vec<ConflictRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, link_id, contact_id, kind, resolution, created_at FROM conflicts WHERE workspace_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(b(ws.as_bytes()))
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter().map(conflict_from_row).collect()
    }

    /// Records a decision for a queued conflict; the link's next run applies it. `false` when
    /// there is no such conflict.
    pub async fn resolve_conflict(
        &self,
        ws: WorkspaceId,
        id: ConflictId,
        resolution: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.data.begin().await.map_err(StoreError::db)?;
        let link: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE conflicts SET resolution = $1 WHERE workspace_id = $2 AND id = $3 RETURNING link_id",
        )
        .bind(resolution.to_owned())
        .bind(b(ws.as_bytes()))
        .bind(b(id.as_bytes()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        let Some(link) = link else {
            return Ok(false);
        };
        // The link's next run must look again.
        self.bump_clock(&mut tx, ws, &link, 0).await?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(true)
    }
}

/// `{verb} FROM link_state` for `n` remote keys of one link; binds the workspace, the link,
/// then the keys.
fn link_keys_sql(backend: crate::db::Backend, verb: &str, n: usize) -> String {
    let mut m = Marks::new(backend);
    format!(
        "{verb} FROM link_state WHERE workspace_id = {} AND link_id = {} AND remote_key IN ({})",
        m.next(),
        m.next(),
        m.list(n)
    )
}

/// Time now in milliseconds, for run and event stamps.
pub fn now_ms() -> i64 {
    now() * 1000
        + i64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_millis())
                .unwrap_or(0),
        )
}

fn hub_meta_from_row(r: &AnyRow) -> Result<HubMeta, StoreError> {
    Ok(HubMeta {
        id: contact_id(&get::<Vec<u8>>(r, "id")?)?,
        version: get(r, "version")?,
        mac: to32(&get::<Vec<u8>>(r, "content_mac")?)?,
        deleted: get::<i64>(r, "deleted")? != 0,
        updated_at: get(r, "updated_at")?,
    })
}

fn state_from_row(r: &AnyRow) -> Result<StateRow, StoreError> {
    Ok(StateRow {
        remote_key: to32(&get::<Vec<u8>>(r, "remote_key")?)?,
        contact: contact_id(&get::<Vec<u8>>(r, "contact_id")?)?,
        etag: get(r, "etag")?,
        remote_mac: to32(&get::<Vec<u8>>(r, "remote_mac")?)?,
        hub_mac: to32(&get::<Vec<u8>>(r, "hub_mac")?)?,
    })
}

fn conflict_from_row(r: &AnyRow) -> Result<ConflictRow, StoreError> {
    Ok(ConflictRow {
        id: ConflictId::from_bytes(id16(&get::<Vec<u8>>(r, "id")?)?),
        link: LinkId::from_bytes(id16(&get::<Vec<u8>>(r, "link_id")?)?),
        contact: contact_id(&get::<Vec<u8>>(r, "contact_id")?)?,
        kind: get(r, "kind")?,
        resolution: get(r, "resolution")?,
        created_at: get(r, "created_at")?,
    })
}

/// SQL texts built once per shape (a statement's row count) within one write.
#[derive(Default)]
struct SqlShapes(std::collections::HashMap<usize, String>);

impl SqlShapes {
    fn get(shapes: &mut Self, shape: usize, build: impl FnOnce(usize) -> String) -> String {
        shapes
            .0
            .entry(shape)
            .or_insert_with(|| build(shape))
            .clone()
    }
}

/// The last row of each key, in the order of those rows.
fn last_per<T, K: Eq + std::hash::Hash>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut seen = HashSet::with_capacity(rows.len());
    let mut out: Vec<&T> = rows.iter().rev().filter(|r| seen.insert(key(r))).collect();
    out.reverse();
    out
}

/// A contact's index entries as its row keeps them (`contacts.index_keys`): per entry, the
/// kind's code and the 32-byte keyed hash. `None` when it has none (a tombstone).
fn index_keys(index: &IndexEntries) -> Option<Vec<u8>> {
    let mut entries: Vec<&(IndexKind, [u8; 32])> = index.iter().collect();
    entries.sort_unstable();
    entries.dedup();
    let mut out = Vec::with_capacity(entries.len() * INDEX_KEY_LEN);
    for (kind, value) in entries {
        out.push(*kind as u8);
        out.extend_from_slice(value);
    }
    (!out.is_empty()).then_some(out)
}

const INDEX_KEY_LEN: usize = 33;

/// Reads what [`index_keys`] wrote.
fn parse_index_keys(bytes: &[u8]) -> Result<Vec<(IndexKind, [u8; 32])>, StoreError> {
    let malformed = || StoreError::Other("a contact's index keys are malformed".into());
    if !bytes.len().is_multiple_of(INDEX_KEY_LEN) {
        return Err(malformed());
    }
    bytes
        .chunks_exact(INDEX_KEY_LEN)
        .map(|entry| {
            let kind = IndexKind::from_code(entry[0]).ok_or_else(malformed)?;
            let value = <[u8; 32]>::try_from(&entry[1..]).map_err(|_| malformed())?;
            Ok((kind, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

    use super::*;

    #[test]
    fn index_keys_read_back_as_written_once_each() {
        let index = vec![
            (IndexKind::Uid, [7u8; 32]),
            (IndexKind::Email, [1u8; 32]),
            (IndexKind::Email, [1u8; 32]),
            (IndexKind::Phone, [0u8; 32]),
        ];
        let bytes = index_keys(&index).unwrap();
        assert_eq!(bytes.len(), 3 * INDEX_KEY_LEN);
        assert_eq!(
            parse_index_keys(&bytes).unwrap(),
            vec![
                (IndexKind::Email, [1u8; 32]),
                (IndexKind::Phone, [0u8; 32]),
                (IndexKind::Uid, [7u8; 32]),
            ]
        );
        assert_eq!(index_keys(&Vec::new()), None);
        assert!(parse_index_keys(&[]).unwrap().is_empty());
        // A truncated list or an unknown kind is an error, never a guess.
        assert!(parse_index_keys(&bytes[..40]).is_err());
        let mut unknown = bytes.clone();
        unknown[0] = 200;
        assert!(parse_index_keys(&unknown).is_err());
    }
}
