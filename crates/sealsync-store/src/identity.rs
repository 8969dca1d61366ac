//! Identity data: users, memberships, user API keys, OAuth clients and issued access tokens.
//!
//! Only hashes of secrets are stored; the client-secret hash arrives already sealed. Times are
//! seconds since the Unix epoch.

use sealsync_types::{Role, UserId, WorkspaceId};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::db::{Store, get, to32};

/// A user of the installation.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: UserId,
    /// Lower-cased login email.
    pub email: String,
    /// argon2id PHC string; `None` for single-sign-on-only users.
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    /// Failed logins since the last success.
    pub failed_logins: i64,
    /// No login is accepted before this time.
    pub locked_until: Option<i64>,
    /// Sealed TOTP secret (pending until `totp_enabled_at` is set).
    pub totp_secret: Option<Vec<u8>>,
    pub totp_enabled_at: Option<i64>,
    pub totp_last_step: Option<i64>,
    /// Hex SHA-256 of each unused recovery code, space-separated.
    pub recovery_codes: Option<String>,
}

/// A web-console session: the hash of its cookie value.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id_hash: [u8; 32],
    pub user_id: UserId,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// A user API key as stored: its SHA-256, never the key.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: [u8; 16],
    pub workspace_id: WorkspaceId,
    pub user_id: UserId,
    pub name: String,
    pub key_hash: [u8; 32],
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// An OAuth client as stored; `secret` is the sealed argon2id hash of its secret.
#[derive(Debug, Clone)]
pub struct ClientRow {
    pub id: [u8; 16],
    pub name: String,
    pub scopes: String,
    pub secret: Vec<u8>,
    pub created_at: i64,
    pub secret_rotated_at: i64,
    pub revoked_at: Option<i64>,
}

/// An issued access token: its id's hash and lifetime.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub jti_hash: [u8; 32],
    pub client_id: [u8; 16],
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

fn id16(bytes: &[u8]) -> Result<[u8; 16], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("id has the wrong length"))
}

fn user_row(r: &AnyRow) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: UserId::from_bytes(id16(&get::<Vec<u8>>(r, "id")?)?),
        email: get(r, "email")?,
        password_hash: get(r, "password_hash")?,
        created_at: get(r, "created_at")?,
        disabled_at: get(r, "disabled_at")?,
        failed_logins: get(r, "failed_logins")?,
        locked_until: get(r, "locked_until")?,
        totp_secret: get(r, "totp_secret")?,
        totp_enabled_at: get(r, "totp_enabled_at")?,
        totp_last_step: get(r, "totp_last_step")?,
        recovery_codes: get(r, "recovery_codes")?,
    })
}

fn api_key_row(r: &AnyRow) -> Result<ApiKeyRow, StoreError> {
    Ok(ApiKeyRow {
        id: id16(&get::<Vec<u8>>(r, "id")?)?,
        workspace_id: WorkspaceId::from_bytes(id16(&get::<Vec<u8>>(r, "workspace_id")?)?),
        user_id: UserId::from_bytes(id16(&get::<Vec<u8>>(r, "user_id")?)?),
        name: get(r, "name")?,
        key_hash: to32(&get::<Vec<u8>>(r, "key_hash")?)?,
        scopes: get(r, "scopes")?,
        created_at: get(r, "created_at")?,
        expires_at: get(r, "expires_at")?,
        last_used_at: get(r, "last_used_at")?,
        revoked_at: get(r, "revoked_at")?,
    })
}

fn client_row(r: &AnyRow) -> Result<ClientRow, StoreError> {
    Ok(ClientRow {
        id: id16(&get::<Vec<u8>>(r, "id")?)?,
        name: get(r, "name")?,
        scopes: get(r, "scopes")?,
        secret: get(r, "secret")?,
        created_at: get(r, "created_at")?,
        secret_rotated_at: get(r, "secret_rotated_at")?,
        revoked_at: get(r, "revoked_at")?,
    })
}

fn role(s: &str) -> Result<Role, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt("unknown role in memberships"))
}

const USER_COLS: &str = "id, email, password_hash, created_at, disabled_at, failed_logins, locked_until, \
     totp_secret, totp_enabled_at, totp_last_step, recovery_codes";
const KEY_COLS: &str = "id, workspace_id, user_id, name, key_hash, scopes, created_at, expires_at, last_used_at, revoked_at";
const CLIENT_COLS: &str = "id, name, scopes, secret, created_at, secret_rotated_at, revoked_at";

impl Store {
    // ---- users and memberships --------------------------------------------------------------

    /// Adds a user; fails if the email is taken.
    pub async fn insert_user(&self, u: &UserRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, disabled_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(u.id.as_bytes().to_vec())
        .bind(u.email.clone())
        .bind(u.password_hash.clone())
        .bind(u.created_at)
        .bind(u.disabled_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        let q = format!("SELECT {USER_COLS} FROM users WHERE email = $1");
        sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(email.to_owned())
            .fetch_optional(&self.data)
            .await
            .map_err(StoreError::db)?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    pub async fn user_by_id(&self, id: UserId) -> Result<Option<UserRow>, StoreError> {
        let q = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id.as_bytes().to_vec())
            .fetch_optional(&self.data)
            .await
            .map_err(StoreError::db)?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    pub async fn set_password_hash(&self, id: UserId, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash.to_owned())
            .bind(id.as_bytes().to_vec())
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?;
        Ok(())
    }

    /// Adds a member or changes its role.
    pub async fn put_member(
        &self,
        ws: WorkspaceId,
        user: UserId,
        r: Role,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(user.as_bytes().to_vec())
        .bind(r.as_str())
        .bind(at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn member_role(
        &self,
        ws: WorkspaceId,
        user: UserId,
    ) -> Result<Option<Role>, StoreError> {
        let row =
            sqlx::query("SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2")
                .bind(ws.as_bytes().to_vec())
                .bind(user.as_bytes().to_vec())
                .fetch_optional(&self.data)
                .await
                .map_err(StoreError::db)?;
        row.map(|r| role(&get::<String>(&r, "role")?)).transpose()
    }

    /// Members of a workspace: (user, role, email).
    pub async fn members(
        &self,
        ws: WorkspaceId,
    ) -> Result<Vec<(UserId, Role, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.user_id, m.role, u.email FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.workspace_id = $1 ORDER BY u.email",
        )
        .bind(ws.as_bytes().to_vec())
        .fetch_all(&self.data)
        .await
        .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserId::from_bytes(id16(&get::<Vec<u8>>(r, "user_id")?)?),
                    role(&get::<String>(r, "role")?)?,
                    get(r, "email")?,
                ))
            })
            .collect()
    }

    /// The workspaces a user belongs to, with the role in each.
    pub async fn memberships_of(
        &self,
        user: UserId,
    ) -> Result<Vec<(WorkspaceId, Role)>, StoreError> {
        let rows = sqlx::query("SELECT workspace_id, role FROM memberships WHERE user_id = $1")
            .bind(user.as_bytes().to_vec())
            .fetch_all(&self.data)
            .await
            .map_err(StoreError::db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    WorkspaceId::from_bytes(id16(&get::<Vec<u8>>(r, "workspace_id")?)?),
                    role(&get::<String>(r, "role")?)?,
                ))
            })
            .collect()
    }

    pub async fn remove_member(&self, ws: WorkspaceId, user: UserId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2")
            .bind(ws.as_bytes().to_vec())
            .bind(user.as_bytes().to_vec())
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a failed login; locks the user until `lock_until` once `max` failures are
    /// reached. Returns the failure count.
    pub async fn login_failed(
        &self,
        id: UserId,
        max: i64,
        lock_until: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1, \
             locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END \
             WHERE id = $3",
        )
        .bind(max)
        .bind(lock_until)
        .bind(id.as_bytes().to_vec())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(self
            .user_by_id(id)
            .await?
            .map(|u| u.failed_logins)
            .unwrap_or(0))
    }

    /// Clears failures and lockout after a successful login.
    pub async fn login_succeeded(&self, id: UserId) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
            .bind(id.as_bytes().to_vec())
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?;
        Ok(())
    }

    /// Stores a new TOTP secret, pending until verified (an enabled one is not replaced).
    pub async fn set_totp_pending(&self, id: UserId, sealed: Vec<u8>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_secret = $1 WHERE id = $2 AND totp_enabled_at IS NULL",
        )
        .bind(sealed)
        .bind(id.as_bytes().to_vec())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Turns TOTP on, with the recovery codes' hashes and the step just used.
    pub async fn enable_totp(
        &self,
        id: UserId,
        recovery: &str,
        step: i64,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_enabled_at = $1, recovery_codes = $2, totp_last_step = $3 \
             WHERE id = $4 AND totp_enabled_at IS NULL AND totp_secret IS NOT NULL",
        )
        .bind(at)
        .bind(recovery.to_owned())
        .bind(step)
        .bind(id.as_bytes().to_vec())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Accepts a TOTP time step once: `false` if it (or a later one) was used before.
    pub async fn use_totp_step(&self, id: UserId, step: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 \
             AND (totp_last_step IS NULL OR totp_last_step < $3)",
        )
        .bind(step)
        .bind(id.as_bytes().to_vec())
        .bind(step)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the recovery-code list if it is still `expected` (so a code is used once).
    pub async fn replace_recovery_codes(
        &self,
        id: UserId,
        expected: &str,
        remaining: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET recovery_codes = $1 WHERE id = $2 AND recovery_codes = $3",
        )
        .bind(remaining.to_owned())
        .bind(id.as_bytes().to_vec())
        .bind(expected.to_owned())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Records an invitation.
    pub async fn insert_invite(
        &self,
        ws: WorkspaceId,
        secret_hash: &[u8; 32],
        email: &str,
        r: Role,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invites (workspace_id, secret_hash, email, role, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(secret_hash.to_vec())
        .bind(email.to_owned())
        .bind(r.as_str())
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    /// Takes an unexpired, unused invitation: its email and role. Taken once, atomically.
    pub async fn take_invite(
        &self,
        ws: WorkspaceId,
        secret_hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<(String, Role)>, StoreError> {
        let mut tx = self.data.begin().await.map_err(StoreError::db)?;
        let done = sqlx::query(
            "UPDATE invites SET accepted_at = $1 WHERE workspace_id = $2 AND secret_hash = $3 \
             AND accepted_at IS NULL AND expires_at > $4",
        )
        .bind(now)
        .bind(ws.as_bytes().to_vec())
        .bind(secret_hash.to_vec())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT email, role FROM invites WHERE workspace_id = $1 AND secret_hash = $2",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(secret_hash.to_vec())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        let out = (
            get::<String>(&row, "email")?,
            role(&get::<String>(&row, "role")?)?,
        );
        tx.commit().await.map_err(StoreError::db)?;
        Ok(Some(out))
    }

    // ---- sessions ---------------------------------------------------------------------------

    pub async fn insert_session(&self, s: &SessionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.id_hash.to_vec())
        .bind(s.user_id.as_bytes().to_vec())
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.revoked_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn session(&self, id_hash: &[u8; 32]) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id_hash, user_id, created_at, expires_at, revoked_at FROM sessions WHERE id_hash = $1",
        )
        .bind(id_hash.to_vec())
        .fetch_optional(&self.data)
        .await
        .map_err(StoreError::db)?;
        row.map(|r| {
            Ok(SessionRow {
                id_hash: to32(&get::<Vec<u8>>(&r, "id_hash")?)?,
                user_id: UserId::from_bytes(id16(&get::<Vec<u8>>(&r, "user_id")?)?),
                created_at: get(&r, "created_at")?,
                expires_at: get(&r, "expires_at")?,
                revoked_at: get(&r, "revoked_at")?,
            })
        })
        .transpose()
    }

    /// Ends one session; `false` when it was unknown or already ended.
    pub async fn revoke_session(&self, id_hash: &[u8; 32], at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE id_hash = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id_hash.to_vec())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    // ---- single sign-on --------------------------------------------------------------------

    /// The user an SSO account (SHA-256 over its issuer and subject) logs in as, noting the
    /// login.
    pub async fn sso_login(
        &self,
        account_hash: &[u8; 32],
        at: i64,
    ) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query(
            "UPDATE sso_identities SET last_login_at = $1 WHERE account_hash = $2 RETURNING user_id",
        )
        .bind(at)
        .bind(account_hash.to_vec())
        .fetch_optional(&self.data)
        .await
        .map_err(StoreError::db)?;
        row.map(|r| Ok(UserId::from_bytes(id16(&get::<Vec<u8>>(&r, "user_id")?)?)))
            .transpose()
    }

    /// Binds an SSO account to a user (the first login; later ones find it by account).
    /// `false` when the account is already bound.
    pub async fn bind_sso(
        &self,
        account_hash: &[u8; 32],
        user: UserId,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO sso_identities (account_hash, user_id, created_at, last_login_at) VALUES ($1, $2, $3, $3) ON CONFLICT (account_hash) DO NOTHING",
        )
        .bind(account_hash.to_vec())
        .bind(user.as_bytes().to_vec())
        .bind(at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    // ---- user API keys ----------------------------------------------------------------------

    pub async fn insert_api_key(&self, k: &ApiKeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, workspace_id, user_id, name, key_hash, scopes, created_at, expires_at, last_used_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(k.id.to_vec())
        .bind(k.workspace_id.as_bytes().to_vec())
        .bind(k.user_id.as_bytes().to_vec())
        .bind(k.name.clone())
        .bind(k.key_hash.to_vec())
        .bind(k.scopes.clone())
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.last_used_at)
        .bind(k.revoked_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn api_key(&self, id: &[u8; 16]) -> Result<Option<ApiKeyRow>, StoreError> {
        let q = format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id.to_vec())
            .fetch_optional(&self.data)
            .await
            .map_err(StoreError::db)?
            .as_ref()
            .map(api_key_row)
            .transpose()
    }

    /// A user's keys in one workspace.
    pub async fn api_keys_of(
        &self,
        ws: WorkspaceId,
        user: UserId,
    ) -> Result<Vec<ApiKeyRow>, StoreError> {
        let q = format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE workspace_id = $1 AND user_id = $2 ORDER BY created_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(ws.as_bytes().to_vec())
            .bind(user.as_bytes().to_vec())
            .fetch_all(&self.data)
            .await
            .map_err(StoreError::db)?;
        rows.iter().map(api_key_row).collect()
    }

    /// Revokes a key of `user`; `false` when the user has no such live key.
    pub async fn revoke_api_key(
        &self,
        user: UserId,
        id: &[u8; 16],
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id.to_vec())
        .bind(user.as_bytes().to_vec())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a key's use, at most once a minute per key to keep reads cheap; `true` when
    /// this use was recorded.
    pub async fn touch_api_key(&self, id: &[u8; 16], at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(at)
        .bind(id.to_vec())
        .bind(at - 60)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    // ---- OAuth clients and tokens -----------------------------------------------------------

    pub async fn insert_client(&self, ws: WorkspaceId, c: &ClientRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_clients (workspace_id, id, name, scopes, secret, created_at, secret_rotated_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(c.id.to_vec())
        .bind(c.name.clone())
        .bind(c.scopes.clone())
        .bind(c.secret.clone())
        .bind(c.created_at)
        .bind(c.secret_rotated_at)
        .bind(c.revoked_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn client(
        &self,
        ws: WorkspaceId,
        id: &[u8; 16],
    ) -> Result<Option<ClientRow>, StoreError> {
        let q =
            format!("SELECT {CLIENT_COLS} FROM oauth_clients WHERE workspace_id = $1 AND id = $2");
        sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(ws.as_bytes().to_vec())
            .bind(id.to_vec())
            .fetch_optional(&self.data)
            .await
            .map_err(StoreError::db)?
            .as_ref()
            .map(client_row)
            .transpose()
    }

    pub async fn clients(&self, ws: WorkspaceId) -> Result<Vec<ClientRow>, StoreError> {
        let q = format!(
            "SELECT {CLIENT_COLS} FROM oauth_clients WHERE workspace_id = $1 ORDER BY created_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(ws.as_bytes().to_vec())
            .fetch_all(&self.data)
            .await
            .map_err(StoreError::db)?;
        rows.iter().map(client_row).collect()
    }

    /// Revokes a client and every token it holds; `false` when no live client matched.
    pub async fn revoke_client(
        &self,
        ws: WorkspaceId,
        id: &[u8; 16],
        at: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.data.begin().await.map_err(StoreError::db)?;
        let done = sqlx::query(
            "UPDATE oauth_clients SET revoked_at = $1 WHERE workspace_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(ws.as_bytes().to_vec())
        .bind(id.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = $1 WHERE workspace_id = $2 AND client_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(ws.as_bytes().to_vec())
        .bind(id.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a live client's sealed secret hash.
    pub async fn set_client_secret(
        &self,
        ws: WorkspaceId,
        id: &[u8; 16],
        sealed: Vec<u8>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_clients SET secret = $1, secret_rotated_at = $2 \
             WHERE workspace_id = $3 AND id = $4 AND revoked_at IS NULL",
        )
        .bind(sealed)
        .bind(at)
        .bind(ws.as_bytes().to_vec())
        .bind(id.to_vec())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Records an issued token (and drops the workspace's tokens that expired a day ago).
    pub async fn insert_token(&self, ws: WorkspaceId, t: &TokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_tokens (workspace_id, jti_hash, client_id, issued_at, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(t.jti_hash.to_vec())
        .bind(t.client_id.to_vec())
        .bind(t.issued_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        sqlx::query("DELETE FROM oauth_tokens WHERE workspace_id = $1 AND expires_at < $2")
            .bind(ws.as_bytes().to_vec())
            .bind(t.issued_at - 86_400)
            .execute(&self.data)
            .await
            .map_err(StoreError::db)?;
        Ok(())
    }

    pub async fn token(
        &self,
        ws: WorkspaceId,
        jti_hash: &[u8; 32],
    ) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query(
            "SELECT jti_hash, client_id, issued_at, expires_at, revoked_at FROM oauth_tokens \
             WHERE workspace_id = $1 AND jti_hash = $2",
        )
        .bind(ws.as_bytes().to_vec())
        .bind(jti_hash.to_vec())
        .fetch_optional(&self.data)
        .await
        .map_err(StoreError::db)?;
        row.map(|r| {
            Ok(TokenRow {
                jti_hash: to32(&get::<Vec<u8>>(&r, "jti_hash")?)?,
                client_id: id16(&get::<Vec<u8>>(&r, "client_id")?)?,
                issued_at: get(&r, "issued_at")?,
                expires_at: get(&r, "expires_at")?,
                revoked_at: get(&r, "revoked_at")?,
            })
        })
        .transpose()
    }

    /// Revokes one token; `false` when it was unknown or already revoked.
    pub async fn revoke_token(
        &self,
        ws: WorkspaceId,
        jti_hash: &[u8; 32],
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = $1 WHERE workspace_id = $2 AND jti_hash = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(ws.as_bytes().to_vec())
        .bind(jti_hash.to_vec())
        .execute(&self.data)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() > 0)
    }
}
