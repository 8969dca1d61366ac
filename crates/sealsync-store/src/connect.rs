//! Connect tokens, by hash: what each lets one external end user do, and until when.

use sealsync_types::WorkspaceId;

use crate::db::get;
use crate::{Store, StoreError};

/// A stored Connect token. `apps` and `origins` are JSON lists, as the server wrote them.
#[derive(Debug, Clone)]
pub struct ConnectTokenRow {
    pub id: [u8; 16],
    pub hash: [u8; 32],
    pub user_tag: String,
    pub apps: String,
    pub origins: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Store {
    pub async fn put_connect_token(
        &self,
        ws: WorkspaceId,
        t: &ConnectTokenRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connect_tokens (workspace_id, id, hash, user_tag, apps, origins, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(t.id.to_vec())
        .bind(t.hash.to_vec())
        .bind(t.user_tag.clone())
        .bind(t.apps.clone())
        .bind(t.origins.clone())
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn connect_token(
        &self,
        ws: WorkspaceId,
        id: &[u8; 16],
    ) -> Result<Option<ConnectTokenRow>, StoreError> {
        let row = sqlx::query(
            "SELECT hash, user_tag, apps, origins, created_at, expires_at FROM connect_tokens \
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(id.to_vec())
        .fetch_optional(&self.data)
        .await
        .map_err(StoreError::db)?;
        row.map(|r| {
            Ok(ConnectTokenRow {
                id: *id,
                hash: crate::db::to32(&get::<Vec<u8>>(&r, "hash")?)?,
                user_tag: get(&r, "user_tag")?,
                apps: get(&r, "apps")?,
                origins: get(&r, "origins")?,
                created_at: get(&r, "created_at")?,
                expires_at: get(&r, "expires_at")?,
            })
        })
        .transpose()
    }

    /// Deletes every token of one end user (and any expired token); how many went.
    pub async fn delete_connect_tokens(
        &self,
        ws: WorkspaceId,
        user_tag: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM connect_tokens WHERE workspace_id = $1 AND (user_tag = $2 OR expires_at < $3)",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(user_tag.to_owned())
        .bind(now)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected())
    }
}
