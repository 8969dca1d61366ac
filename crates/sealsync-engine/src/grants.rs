//! OAuth grants: an `oauth-app` account (an external app's client) starts authorization-code
//! flows; each finished flow is an `oauth` account holding the grant's tokens, sealed like any
//! secret.
//!
//! [`Engine::oauth_access`] gives a run a grant whose access token lives at least another
//! minute, refreshing it first when needed. One refresh of an account goes on at a time: in
//! this process behind a lock, across processes behind the account's lease in the store, and
//! whoever waited reads the tokens the refresh kept. A rotating refresh token is so spent once.
//! An app that refuses the grant marks the account `revoked`: runs using it stop at once with
//! that status, without asking the app again, until the account is connected anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealsync_connector::ConnectorError;
use sealsync_connector::credential::{Credential, OAuthGrant};
use sealsync_connectors::oauth::{OAuthClient, OAuthError, Tokens};
use sealsync_store::now_ms;
use sealsync_types::{AccountId, WorkspaceId};

use crate::catalog::CatalogError;
use crate::run::Engine;
use crate::spec::egress;

/// A grant is refreshed when its access token has less than this left (seconds).
pub const REFRESH_AHEAD_S: i64 = 60;
/// How long one process may hold an account's refresh lease (milliseconds).
const LEASE_MS: i64 = 30_000;
/// The status of an account whose grant the app refused.
pub const REVOKED: &str = "revoked";

/// Per account, the lock its refreshes in this process take turns on.
type Locks = Mutex<HashMap<(WorkspaceId, String), Arc<tokio::sync::Mutex<()>>>>;
static REFRESHING: std::sync::LazyLock<Locks> = std::sync::LazyLock::new(Locks::default);

fn config(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Config(e.to_string())
}

impl Engine {
    /// The OAuth client of the `oauth-app` account `app`, sending users back to `redirect`
    /// (none: for refreshing only).
    pub async fn oauth_client(
        &self,
        app: &str,
        redirect: Option<&str>,
    ) -> Result<OAuthClient, CatalogError> {
        let (_, credential) = self.open_account(app).await?;
        let Credential::OAuthApp(app_config) = credential else {
            return Err(CatalogError::Invalid(format!(
                "account {app:?} is not an oauth-app account"
            )));
        };
        let mut policy =
            egress(&app_config.allow).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        policy.hosts = self
            .hub()
            .store()
            .egress_hosts(self.keys().workspace())
            .await?
            .unwrap_or_default();
        OAuthClient::new(&app_config, redirect, policy)
            .map_err(|e| CatalogError::Invalid(format!("account {app:?}: {e}")))
    }

    /// Keeps the tokens of a grant from `app` as the account `name`: created, or replaced
    /// (which clears a `revoked` status).
    pub async fn keep_grant(
        &self,
        name: &str,
        app: &str,
        tokens: Tokens,
        previous_refresh: Option<secrecy::SecretString>,
    ) -> Result<AccountId, CatalogError> {
        let grant = OAuthGrant {
            app: app.to_owned(),
            access: tokens.access,
            refresh: tokens.refresh.or(previous_refresh),
            expires_at: tokens
                .expires_in
                .map(|d| now_ms() / 1000 + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)),
        };
        Ok(self.put_account(name, &Credential::OAuth(grant)).await?.1)
    }

    /// The grant of the `oauth` account `name`, its access token valid for at least another
    /// minute: refreshed first when not, one refresh at a time. With it, the `oauth-app`
    /// account whose secret refreshed it, when this call did (callers audit the use).
    pub async fn oauth_access(
        &self,
        name: &str,
    ) -> Result<(OAuthGrant, Option<AccountId>), ConnectorError> {
        let ws = self.keys().workspace();
        let lock = REFRESHING
            .lock()
            .map_err(|_| ConnectorError::Unavailable("the refresh lock is poisoned".into()))?
            .entry((ws, name.to_owned()))
            .or_default()
            .clone();
        let _turn = lock.lock().await;
        let store = self.hub().store();
        for _ in 0..(LEASE_MS / 200 + 10) {
            let (id, grant) = self.current_grant(name).await?;
            let now = now_ms();
            if grant
                .expires_at
                .is_none_or(|t| t > now / 1000 + REFRESH_AHEAD_S)
            {
                return Ok((grant, None));
            }
            let Some(refresh) = grant.refresh.clone() else {
                return Err(config(format!(
                    "account {name:?}: its access token expired and the app gave no refresh token: connect it again"
                )));
            };
            if !store
                .lease_account(ws, id.as_bytes(), Some(now + LEASE_MS), now)
                .await
                .map_err(|e| ConnectorError::Unavailable(e.to_string()))?
            {
                // Another process refreshes it: wait for the tokens it keeps.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let outcome = self.refresh_grant(name, &grant, refresh).await;
            let released = store.lease_account(ws, id.as_bytes(), None, now).await;
            let refreshed = outcome?;
            released.map_err(|e| ConnectorError::Unavailable(e.to_string()))?;
            let app = self
                .accounts()
                .await
                .map_err(config)?
                .into_iter()
                .find(|a| a.name == grant.app)
                .map(|a| a.id);
            return Ok((refreshed, app));
        }
        Err(ConnectorError::Unavailable(format!(
            "account {name:?}: another process has been refreshing its tokens for too long"
        )))
    }

    /// The grant as stored now, unless the account is marked.
    async fn current_grant(&self, name: &str) -> Result<(AccountId, OAuthGrant), ConnectorError> {
        let status = self
            .accounts()
            .await
            .map_err(config)?
            .into_iter()
            .find(|a| a.name == name)
            .and_then(|a| a.status);
        if let Some(status) = status {
            return Err(config(format!(
                "account {name:?} is {status}: the app refused its grant; connect it again"
            )));
        }
        match self.open_account(name).await.map_err(config)? {
            (id, Credential::OAuth(grant)) => Ok((id, grant)),
            _ => Err(config(format!("account {name:?} is not an oauth account"))),
        }
    }

    /// Refreshes under the lease; a refused grant marks the account.
    async fn refresh_grant(
        &self,
        name: &str,
        grant: &OAuthGrant,
        refresh: secrecy::SecretString,
    ) -> Result<OAuthGrant, ConnectorError> {
        let client = self.oauth_client(&grant.app, None).await.map_err(config)?;
        match client.refresh(&refresh).await {
            Ok(tokens) => {
                self.keep_grant(name, &grant.app, tokens, Some(refresh))
                    .await
                    .map_err(config)?;
                match self.open_account(name).await.map_err(config)? {
                    (_, Credential::OAuth(g)) => Ok(g),
                    _ => Err(config(format!("account {name:?} is not an oauth account"))),
                }
            }
            Err(OAuthError::Refused(why)) => {
                let (id, _) = self.open_account(name).await.map_err(config)?;
                self.hub()
                    .store()
                    .set_account_status(self.keys().workspace(), id.as_bytes(), Some(REVOKED))
                    .await
                    .map_err(|e| ConnectorError::Unavailable(e.to_string()))?;
                tracing::warn!(account = %id, reason = %why, "An OAuth grant was refused: the account is marked revoked until connected again.");
                Err(config(format!(
                    "account {name:?} is {REVOKED}: the app refused its grant ({why}); connect it again"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }
}
