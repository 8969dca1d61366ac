//! Sealed values outside the contacts table (endpoint and link configurations, client secret
//! hashes, account secrets, run event details, link cursors, webhook items, outgoing webhook
//! deliveries): listed and replaced by key rotation, so that a data key is retired only when
//! nothing at all is sealed under it.

use sealsync_crypto::RecordRef;
use sealsync_types::WorkspaceId;
use sqlx::AssertSqlSafe;

use crate::db::get;
use crate::{Store, StoreError};

/// A sealed column outside `contacts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedField {
    EndpointConfig,
    LinkConfig,
    ClientSecret,
    AccountSecret,
    RunEventDetail,
    LinkCursor,
    HookItem,
    DeliveryBody,
}

impl SealedField {
    pub const ALL: [SealedField; 8] = [
        SealedField::EndpointConfig,
        SealedField::LinkConfig,
        SealedField::ClientSecret,
        SealedField::AccountSecret,
        SealedField::RunEventDetail,
        SealedField::LinkCursor,
        SealedField::HookItem,
        SealedField::DeliveryBody,
    ];

    /// Table and column, as bound into each value's AAD.
    pub fn table_field(self) -> (&'static str, &'static str) {
        match self {
            SealedField::EndpointConfig => ("endpoints", "config"),
            SealedField::LinkConfig => ("links", "config"),
            SealedField::ClientSecret => ("oauth_clients", "secret"),
            SealedField::AccountSecret => ("accounts", "secret"),
            SealedField::RunEventDetail => ("run_events", "detail"),
            SealedField::LinkCursor => ("link_cursors", "cursor"),
            SealedField::HookItem => ("hook_items", "item"),
            SealedField::DeliveryBody => ("webhook_deliveries", "body"),
        }
    }
}

/// One sealed value and the record id its AAD names.
#[derive(Debug, Clone)]
pub struct SealedValue {
    pub field: SealedField,
    /// The row id (for run events: run id, then the sequence number big-endian).
    pub record: Vec<u8>,
    pub sealed: Vec<u8>,
}

impl SealedValue {
    pub fn at(&self, ws: WorkspaceId) -> RecordRef<'_> {
        let (table, field) = self.field.table_field();
        RecordRef {
            table,
            workspace: ws,
            record: &self.record,
            field,
        }
    }
}

impl Store {
    /// Every value of `field` in the workspace.
    pub async fn sealed_values(
        &self,
        ws: WorkspaceId,
        field: SealedField,
    ) -> Result<Vec<SealedValue>, StoreError> {
        let (table, column) = field.table_field();
        let events = field == SealedField::RunEventDetail;
        let sql = if events {
            "SELECT run_id, seq, detail AS v FROM run_events WHERE workspace_id = $1 AND detail IS NOT NULL"
                .to_owned()
        } else {
            format!(
                "SELECT id, {column} AS v FROM {table} WHERE workspace_id = $1 AND {column} IS NOT NULL"
            )
        };
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ws.as_bytes().to_vec())
            .fetch_all(&self.data)
            .await
            .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                let record = if events {
                    let mut rec: Vec<u8> = get(r, "run_id")?;
                    rec.extend_from_slice(&get::<i64>(r, "seq")?.to_be_bytes());
                    rec
                } else {
                    get(r, "id")?
                };
                Ok(SealedValue {
                    field,
                    record,
                    sealed: get(r, "v")?,
                })
            })
            .collect()
    }

    /// Replaces a sealed value if it is still exactly `old` (a concurrent writer wins).
    pub async fn replace_sealed(
        &self,
        ws: WorkspaceId,
        old: &SealedValue,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let (table, column) = old.field.table_field();
        let q = if old.field == SealedField::RunEventDetail {
            let (run, seq) = old.record.split_at(16.min(old.record.len()));
            let seq = i64::from_be_bytes(seq.try_into().map_err(|_| {
                StoreError::Corrupt("a run event's record id is not run id and sequence")
            })?);
            sqlx::query(
                "UPDATE run_events SET detail = $1 WHERE workspace_id = $2 AND run_id = $3 AND seq = $4 AND detail = $5",
            )
            .bind(new)
            .bind(ws.as_bytes().to_vec())
            .bind(run.to_vec())
            .bind(seq)
            .bind(old.sealed.clone())
        } else {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = $1 WHERE workspace_id = $2 AND id = $3 AND {column} = $4"
            )))
            .bind(new)
            .bind(ws.as_bytes().to_vec())
            .bind(old.record.clone())
            .bind(old.sealed.clone())
        };
        let done = q.execute(&self.data).await.map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }
}
