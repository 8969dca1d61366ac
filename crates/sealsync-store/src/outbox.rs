//! Webhook destinations: what a push link wrote, and the deliveries that carry it out.
//!
//! A push link's write to a webhook destination is one transaction ([`Store::outbox_put`]):
//! the endpoint's copy of the item (in `hook_items`, as a webhook source keeps what it
//! received, so the endpoint lists and fetches like any other) and a delivery. Deliveries of an
//! endpoint go out in order; each is `pending` until the receiver takes it (then `delivered`,
//! its body dropped) or until it has failed for 24 hours (`dead`, kept until replayed).

use sealsync_types::{EndpointId, WorkspaceId};
use sqlx::Acquire as _;

use crate::db::get;
use crate::{Store, StoreError};

/// One write to a webhook destination.
#[derive(Debug, Clone)]
pub struct OutboxChange {
    /// The endpoint's item: keyed id, etag and sealed contact (`None`: deleted).
    pub item: crate::HookItemRow,
    /// Keyed hash naming this change: the same change written twice is one delivery.
    pub delivery: Vec<u8>,
    /// The sealed request body.
    pub body: Vec<u8>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// One delivery. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: Vec<u8>,
    pub endpoint: EndpointId,
    pub seq: i64,
    /// Sealed; present while the delivery is not delivered (and only when asked for).
    pub body: Option<Vec<u8>>,
    pub state: DeliveryState,
    pub attempts: i64,
    /// When its 24 hours started: queued, or replayed.
    pub created_at: i64,
    pub next_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

/// What an attempt came to, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    /// Try again at `next_at`.
    Retry {
        next_at: i64,
        status: Option<i64>,
        error: String,
    },
    Dead {
        status: Option<i64>,
        error: String,
    },
}

const COLUMNS: &str = "id, endpoint_id, seq, state, attempts, created_at, next_at, last_status, last_error, updated_at";

impl Store {
    /// Keeps a write to a webhook destination and its delivery, in one transaction.
    pub async fn outbox_put(
        &self,
        ws: WorkspaceId,
        endpoint: EndpointId,
        change: &OutboxChange,
    ) -> Result<(), StoreError> {
        let now = crate::now_ms();
        let wsb = ws.as_bytes().to_vec();
        let epb = endpoint.as_bytes().to_vec();
        let _turn = self.write_turn().await;
        let mut conn = self.data.acquire().await.map_err(StoreError::db)?;
        let mut tx = conn.begin().await.map_err(StoreError::db)?;
        sqlx::query(
            "INSERT INTO hook_items (workspace_id, id, endpoint_id, etag, item, sent_at, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (workspace_id, id) DO UPDATE SET etag = excluded.etag, \
             item = excluded.item, sent_at = excluded.sent_at, received_at = excluded.received_at",
        )
        .bind(wsb.clone())
        .bind(change.item.id.clone())
        .bind(epb.clone())
        .bind(change.item.etag.clone())
        .bind(change.item.item.clone())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        let seq: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM webhook_deliveries WHERE workspace_id = $1 AND endpoint_id = $2",
        )
        .bind(wsb.clone())
        .bind(epb.clone())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (workspace_id, id, endpoint_id, seq, body, state, attempts, \
             created_at, next_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $8) \
             ON CONFLICT (workspace_id, id) DO NOTHING",
        )
        .bind(wsb)
        .bind(change.delivery.clone())
        .bind(epb)
        .bind(seq)
        .bind(change.body.clone())
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(())
    }

    /// The endpoint's pending deliveries, oldest first, with their bodies.
    pub async fn pending_deliveries(
        &self,
        ws: WorkspaceId,
        endpoint: EndpointId,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, body FROM webhook_deliveries WHERE workspace_id = $1 AND endpoint_id = $2 \
             AND state = 'pending' ORDER BY seq LIMIT $3"
        )))
        .bind(ws.as_bytes().to_vec())
        .bind(endpoint.as_bytes().to_vec())
        .bind(limit)
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter().map(|r| delivery_from_row(r, true)).collect()
    }

    /// Records an attempt at a pending delivery.
    pub async fn delivery_attempted(
        &self,
        ws: WorkspaceId,
        id: &[u8],
        result: &AttemptResult,
    ) -> Result<(), StoreError> {
        let now = crate::now_ms();
        let (state, next_at, status, error) = match result {
            AttemptResult::Delivered => ("delivered", now, None, None),
            AttemptResult::Retry {
                next_at,
                status,
                error,
            } => ("pending", *next_at, *status, Some(error.clone())),
            AttemptResult::Dead { status, error } => ("dead", now, *status, Some(error.clone())),
        };
        // A delivered body is dropped: the receiver has it, and the store need not.
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_at = $2, \
             last_status = $3, last_error = $4, updated_at = $5, \
             body = CASE WHEN $1 = 'delivered' THEN NULL ELSE body END \
             WHERE workspace_id = $6 AND id = $7 AND state = 'pending'",
        )
        .bind(state)
        .bind(next_at)
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(ws.as_bytes().to_vec())
        .bind(id.to_vec())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    /// The workspace's deliveries in `state` (any state: `None`), newest first, without bodies.
    pub async fn deliveries(
        &self,
        ws: WorkspaceId,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE workspace_id = $1 \
             AND ($2 IS NULL OR state = $2) ORDER BY updated_at DESC, seq DESC LIMIT $3"
        )))
        .bind(ws.as_bytes().to_vec())
        .bind(state.map(DeliveryState::as_str))
        .bind(limit)
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter().map(|r| delivery_from_row(r, false)).collect()
    }

    /// Puts dead deliveries back in line (all of them: `ids` is `None`), each with a new
    /// 24 hours, due at once. Gives how many.
    pub async fn replay_deliveries(
        &self,
        ws: WorkspaceId,
        ids: Option<&[Vec<u8>]>,
    ) -> Result<u64, StoreError> {
        let now = crate::now_ms();
        let sql = "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, created_at = $1, \
                   next_at = $2, updated_at = $3 WHERE workspace_id = $4 AND state = 'dead'";
        let mut n = 0;
        match ids {
            None => {
                n += sqlx::query(sql)
                    .bind(now)
                    .bind(now)
                    .bind(now)
                    .bind(ws.as_bytes().to_vec())
                    .execute(&self.data)
                    .await
                    .map_err(StoreError::db)?
                    .rows_affected();
            }
            Some(ids) => {
                let one = format!("{sql} AND id = $5");
                for id in ids {
                    n += sqlx::query(sqlx::AssertSqlSafe(one.clone()))
                        .bind(now)
                        .bind(now)
                        .bind(now)
                        .bind(ws.as_bytes().to_vec())
                        .bind(id.clone())
                        .execute(&self.data)
                        .await
                        .map_err(StoreError::db)?
                        .rows_affected();
                }
            }
        }
        Ok(n)
    }

    /// Every endpoint, of any workspace, with a pending delivery due by `now`.
    pub async fn due_delivery_endpoints(
        &self,
        now: i64,
    ) -> Result<Vec<(WorkspaceId, EndpointId)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT workspace_id, endpoint_id FROM webhook_deliveries \
             WHERE state = 'pending' AND next_at <= $1",
        )
        .bind(now)
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                let ws: Vec<u8> = get(r, "workspace_id")?;
                let ep: Vec<u8> = get(r, "endpoint_id")?;
                Ok((
                    WorkspaceId::from_bytes(id16(&ws)?),
                    EndpointId::from_bytes(id16(&ep)?),
                ))
            })
            .collect()
    }

    /// Forgets delivered deliveries last touched before `before` (milliseconds).
    pub async fn prune_delivered(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND updated_at < $1",
        )
        .bind(before)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected())
    }
}

fn id16(bytes: &[u8]) -> Result<[u8; 16], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("an id is not 16 bytes"))
}

fn delivery_from_row(r: &sqlx::any::AnyRow, body: bool) -> Result<DeliveryRow, StoreError> {
    let endpoint: Vec<u8> = get(r, "endpoint_id")?;
    let state: String = get(r, "state")?;
    Ok(DeliveryRow {
        id: get(r, "id")?,
        endpoint: EndpointId::from_bytes(id16(&endpoint)?),
        seq: get(r, "seq")?,
        body: if body { get(r, "body")? } else { None },
        state: DeliveryState::parse(&state)
            .ok_or(StoreError::Corrupt("a delivery's state is not known"))?,
        attempts: get(r, "attempts")?,
        created_at: get(r, "created_at")?,
        next_at: get(r, "next_at")?,
        last_status: get(r, "last_status")?,
        last_error: get(r, "last_error")?,
        updated_at: get(r, "updated_at")?,
    })
}
