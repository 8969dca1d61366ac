//! Webhook sources, and where a workspace's connections may go.
//!
//! Webhook sources: what signed deliveries brought, per endpoint, until its pull link takes it
//! into the hub; and the delivery ids seen, so that a repeated delivery changes nothing.
//!
//! [`Store::store_deliveries`] writes many deliveries in one transaction and returns only once
//! it is durable (on SQLite the commit is synced to disk, not only to the write-ahead log), so
//! a server can answer each sender as soon as its delivery is in a committed group.

use sealsync_types::{EndpointId, WorkspaceId};
use sqlx::{Acquire as _, AssertSqlSafe};

use crate::db::{Backend, Marks, get};
use crate::{Store, StoreError};

/// Delivery ids are remembered this long (milliseconds).
pub const RECEIPT_TTL_MS: i64 = 24 * 3600 * 1000;

/// One item of a delivery: `item` is the sealed contact, `None` for a deletion.
#[derive(Debug, Clone)]
pub struct HookItemRow {
    /// Keyed hash of the endpoint and the item's id in the sending system.
    pub id: Vec<u8>,
    pub etag: String,
    pub item: Option<Vec<u8>>,
    /// The delivery's signed time (milliseconds): an older delivery never overwrites a newer.
    pub sent_at: i64,
}

/// One verified delivery, ready to keep.
#[derive(Debug, Clone)]
pub struct HookDelivery {
    pub workspace: WorkspaceId,
    pub endpoint: EndpointId,
    /// Keyed hash of the delivery id.
    pub receipt: Vec<u8>,
    /// The answer to give, and to give again to a repeat.
    pub answer: String,
    pub items: Vec<HookItemRow>,
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Stored,
    /// Seen before: nothing changed; the earlier answer.
    Repeated(String),
}

impl Store {
    /// The workspace of an endpoint, found by its id alone (a delivery names nothing else).
    pub async fn endpoint_workspace(
        &self,
        endpoint: EndpointId,
    ) -> Result<Option<WorkspaceId>, StoreError> {
        let row = sqlx::query("SELECT workspace_id FROM endpoints WHERE id = $1")
            .bind(endpoint.as_bytes().to_vec())
            .fetch_optional(&self.data)
            .await
            .map_err(StoreError::db)?;
        row.map(|r| {
            let ws: Vec<u8> = get(&r, "workspace_id")?;
            let ws: [u8; 16] = ws
                .try_into()
                .map_err(|_| StoreError::Corrupt("a workspace id is not 16 bytes"))?;
            Ok(WorkspaceId::from_bytes(ws))
        })
        .transpose()
    }

    /// Keeps deliveries, in one transaction, durably. Each is checked against the delivery ids
    /// seen: a repeat stores nothing and gets its earlier answer.
    pub async fn store_deliveries(
        &self,
        deliveries: &[HookDelivery],
    ) -> Result<Vec<HookOutcome>, StoreError> {
        let now = crate::now_ms();
        let _turn = self.write_turn().await;
        let mut conn = self.data.acquire().await.map_err(StoreError::db)?;
        let sqlite = self.backend == Backend::Sqlite;
        if sqlite {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db)?;
        }
        let result = async {
            let mut tx = conn.begin().await.map_err(StoreError::db)?;
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                let ws = d.workspace.as_bytes().to_vec();
                let endpoint = d.endpoint.as_bytes().to_vec();
                let fresh = sqlx::query(
                    "INSERT INTO hook_receipts (workspace_id, id, endpoint_id, answer, received_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, id) DO NOTHING",
                )
                .bind(ws.clone())
                .bind(d.receipt.clone())
                .bind(endpoint.clone())
                .bind(d.answer.clone())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db)?
                .rows_affected()
                    > 0;
                if !fresh {
                    let answer: String = sqlx::query_scalar(
                        "SELECT answer FROM hook_receipts WHERE workspace_id = $1 AND id = $2",
                    )
                    .bind(ws.clone())
                    .bind(d.receipt.clone())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::db)?;
                    outcomes.push(HookOutcome::Repeated(answer));
                    continue;
                }
                for item in &d.items {
                    sqlx::query(
                        "INSERT INTO hook_items (workspace_id, id, endpoint_id, etag, item, sent_at, received_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (workspace_id, id) DO UPDATE SET etag = excluded.etag, \
                         item = excluded.item, sent_at = excluded.sent_at, received_at = excluded.received_at \
                         WHERE hook_items.sent_at <= excluded.sent_at",
                    )
                    .bind(ws.clone())
                    .bind(item.id.clone())
                    .bind(endpoint.clone())
                    .bind(item.etag.clone())
                    .bind(item.item.clone())
                    .bind(item.sent_at)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db)?;
                }
                outcomes.push(HookOutcome::Stored);
            }
            tx.commit().await.map_err(StoreError::db)?;
            Ok(outcomes)
        }
        .await;
        if sqlite {
            // Back to the pool's setting; a failure here only leaves this connection stricter.
            let _ = sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await;
        }
        result
    }

    /// Forgets delivery ids older than the receipt lifetime, and the deletions deliveries
    /// brought as long ago. Returns how many rows went.
    pub async fn prune_hook_receipts(&self) -> Result<u64, StoreError> {
        self.prune_hook_history(crate::now_ms() - RECEIPT_TTL_MS)
            .await
    }

    /// Forgets delivery ids received before `before` (milliseconds), and the deletions
    /// received before then. A deletion is kept only so that an older delivery cannot bring
    /// its item back; a signature is accepted only within minutes of its time, so a delivery
    /// accepted from now on is signed after such a deletion and would replace it anyway.
    pub async fn prune_hook_history(&self, before: i64) -> Result<u64, StoreError> {
        let mut done = 0;
        for sql in [
            "DELETE FROM hook_receipts WHERE received_at < $1",
            "DELETE FROM hook_items WHERE item IS NULL AND received_at < $1",
        ] {
            done += sqlx::query(sql)
                .bind(before)
                .execute(&self.data)
                .await
                .map_err(StoreError::db)?
                .rows_affected();
        }
        Ok(done)
    }

    /// Every item an endpoint holds (deletions left out): id and etag.
    pub async fn hook_listing(
        &self,
        ws: WorkspaceId,
        endpoint: EndpointId,
    ) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, etag FROM hook_items WHERE workspace_id = $1 AND endpoint_id = $2 AND item IS NOT NULL",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(endpoint.as_bytes().to_vec())
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| Ok((get(r, "id")?, get(r, "etag")?)))
            .collect()
    }

    /// These items of an endpoint: id, etag and sealed contact (none for a deletion). Ids it
    /// does not hold are left out.
    pub async fn hook_items(
        &self,
        ws: WorkspaceId,
        endpoint: EndpointId,
        ids: &[Vec<u8>],
    ) -> Result<Vec<HookItemRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(400) {
            let mut m = Marks::new(self.backend);
            let sql = format!(
                "SELECT id, etag, item, sent_at FROM hook_items WHERE workspace_id = {} AND endpoint_id = {} AND id IN ({})",
                m.next(),
                m.next(),
                m.list(part.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(ws.as_bytes().to_vec())
                .bind(endpoint.as_bytes().to_vec());
            for id in part {
                q = q.bind(id.clone());
            }
            for r in q.fetch_all(&self.data).await.map_err(StoreError::db)? {
                out.push(HookItemRow {
                    id: get(&r, "id")?,
                    etag: get(&r, "etag")?,
                    item: get(&r, "item")?,
                    sent_at: get(&r, "sent_at")?,
                });
            }
        }
        Ok(out)
    }
}

impl Store {
    /// The host names the workspace's connections may reach; `None`: any public host.
    pub async fn egress_hosts(&self, ws: WorkspaceId) -> Result<Option<Vec<String>>, StoreError> {
        let text: Option<Option<String>> =
            sqlx::query_scalar("SELECT egress_hosts FROM workspaces WHERE id = $1")
                .bind(ws.as_bytes().to_vec())
                .fetch_optional(&self.data)
                .await
                .map_err(StoreError::db)?;
        Ok(text
            .flatten()
            .map(|t| t.lines().map(str::to_owned).collect()))
    }

    /// Sets (or, with `None`, lifts) the workspace's host allowlist.
    pub async fn set_egress_hosts(
        &self,
        ws: WorkspaceId,
        hosts: Option<&[String]>,
    ) -> Result<(), StoreError> {
        if hosts.is_some_and(|h| h.iter().any(|h| h.contains('\n'))) {
            return Err(StoreError::Other("a host name holds a line break".into()));
        }
        let text = hosts.map(|h| h.join("\n"));
        sqlx::query("UPDATE workspaces SET egress_hosts = $1 WHERE id = $2")
            .bind(text)
            .bind(ws.as_bytes().to_vec())
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?;
        Ok(())
    }
}
