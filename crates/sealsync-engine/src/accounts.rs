//! Connected accounts: credentials for external systems, sealed under the workspace's data key,
//! write-only. Listing shows metadata and a masked hint; the secret is opened only for a run.

use sealsync_connector::credential::{Credential, OAuthApp, OAuthGrant};
use sealsync_crypto::RecordRef;
use sealsync_store::{AccountRow, StoreError, now_ms};
use sealsync_types::{AccountId, WorkspaceId};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::catalog::{CatalogError, Change, check_name};
use crate::run::Engine;

/// An account as shown: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct AccountInfo {
    pub id: AccountId,
    pub name: String,
    /// `basic` or `api-key`.
    pub kind: String,
    /// A masked reminder: the user name's first letter, or an API key's last four characters.
    pub hint: String,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    /// Why it cannot be used until connected again (`revoked`), if so.
    pub status: Option<String>,
}

/// The sealed form. Its secrets are wiped from memory when it is dropped (the credential
/// itself holds them as secrets); opening takes them out of it.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Sealed {
    Basic {
        username: String,
        password: String,
    },
    ApiKey {
        key: String,
    },
    OauthApp {
        client_id: String,
        client_secret: String,
        authorize_url: String,
        token_url: String,
        scopes: Vec<String>,
        allow: Vec<String>,
    },
    Oauth {
        app: String,
        access: String,
        refresh: Option<String>,
        expires_at: Option<i64>,
    },
}

fn secret_ref(ws: WorkspaceId, id: &AccountId) -> RecordRef<'_> {
    RecordRef {
        table: "accounts",
        workspace: ws,
        record: id.as_bytes(),
        field: "secret",
    }
}

/// A hint safe to show: it names no more than one letter of a user name, and only the end of a
/// long key.
pub fn hint(c: &Credential) -> String {
    match c {
        Credential::Basic { username, .. } => {
            let first: String = username.chars().take(1).collect();
            format!("user {first}…, password set")
        }
        Credential::ApiKey { key } => {
            let k = key.expose_secret();
            if k.chars().count() >= 16 {
                let tail: String = k
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("key …{tail}")
            } else {
                "key set".into()
            }
        }
        Credential::OAuthApp(app) => {
            let first: String = app.client_id.chars().take(4).collect();
            format!("client {first}…, secret set")
        }
        Credential::OAuth(grant) => format!(
            "grant from {}{}",
            grant.app,
            if grant.refresh.is_some() {
                ", refreshable"
            } else {
                ""
            }
        ),
    }
}

fn check_credential(c: &Credential) -> Result<(), CatalogError> {
    let bad = |m: &str| Err(CatalogError::Invalid(m.into()));
    match c {
        Credential::Basic { username, password } => {
            if username.is_empty() || username.len() > 256 || username.chars().any(char::is_control)
            {
                return bad("the user name is empty, too long or has control characters");
            }
            if password.expose_secret().is_empty() || password.expose_secret().len() > 4096 {
                return bad("the password is empty or longer than 4096 bytes");
            }
        }
        Credential::ApiKey { key } => {
            let k = key.expose_secret();
            if k.is_empty() || k.len() > 8192 || k.chars().any(char::is_control) {
                return bad("the key is empty, too long or has control characters");
            }
        }
        Credential::OAuthApp(app) => {
            if app.client_id.is_empty() || app.client_id.len() > 512 {
                return bad("the client id is empty or longer than 512 bytes");
            }
            if app.client_secret.expose_secret().is_empty() {
                return bad("the client secret is empty");
            }
            for url in [&app.authorize_url, &app.token_url] {
                let fine = reqwest_like_url(url);
                if !fine {
                    return bad("authorize_url and token_url must be http(s) URLs");
                }
            }
            for a in &app.allow {
                a.parse::<sealsync_connector::egress::AllowedAddr>()
                    .map_err(CatalogError::Invalid)?;
            }
        }
        Credential::OAuth(grant) => {
            check_name(&grant.app)?;
            if grant.access.expose_secret().is_empty() {
                return bad("the access token is empty");
            }
        }
    }
    Ok(())
}

/// An absolute http(s) URL with a host.
fn reqwest_like_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
}

fn crypto_error(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Store(StoreError::Crypto {
        record: "accounts".into(),
        error: e.to_string(),
    })
}

impl Engine {
    pub async fn accounts(&self) -> Result<Vec<AccountInfo>, CatalogError> {
        let rows = self.hub().store().accounts(self.keys().workspace()).await?;
        Ok(rows
            .into_iter()
            .map(|r| AccountInfo {
                id: AccountId::from_bytes(r.id),
                name: r.name,
                kind: r.kind,
                hint: r.hint,
                created_at: r.created_at,
                rotated_at: r.rotated_at,
                status: r.status,
            })
            .collect())
    }

    /// Creates the account `name`, or gives it a new secret (a rotation).
    pub async fn put_account(
        &self,
        name: &str,
        credential: &Credential,
    ) -> Result<(Change, AccountId), CatalogError> {
        check_name(name)?;
        check_credential(credential)?;
        let keys = self.keys();
        let ws = keys.workspace();
        let existing = self.accounts().await?.into_iter().find(|a| a.name == name);
        let id = existing.as_ref().map(|a| a.id).unwrap_or_default();
        let plain = match credential {
            Credential::Basic { username, password } => Sealed::Basic {
                username: username.clone(),
                password: password.expose_secret().to_owned(),
            },
            Credential::ApiKey { key } => Sealed::ApiKey {
                key: key.expose_secret().to_owned(),
            },
            Credential::OAuthApp(app) => Sealed::OauthApp {
                client_id: app.client_id.clone(),
                client_secret: app.client_secret.expose_secret().to_owned(),
                authorize_url: app.authorize_url.clone(),
                token_url: app.token_url.clone(),
                scopes: app.scopes.clone(),
                allow: app.allow.clone(),
            },
            Credential::OAuth(g) => Sealed::Oauth {
                app: g.app.clone(),
                access: g.access.expose_secret().to_owned(),
                refresh: g.refresh.as_ref().map(|r| r.expose_secret().to_owned()),
                expires_at: g.expires_at,
            },
        };
        let json = Zeroizing::new(serde_json::to_vec(&plain).map_err(crypto_error)?);
        drop(plain);
        let secret = keys
            .seal(&secret_ref(ws, &id), &json)
            .map_err(crypto_error)?;
        let now = now_ms() / 1000;
        self.hub()
            .store()
            .put_account(
                ws,
                &AccountRow {
                    id: *id.as_bytes(),
                    name: name.to_owned(),
                    kind: credential.kind().to_owned(),
                    secret,
                    hint: hint(credential),
                    created_at: existing.as_ref().map_or(now, |a| a.created_at),
                    rotated_at: existing.as_ref().map(|_| now),
                    status: None,
                },
            )
            .await?;
        let op = if existing.is_some() {
            "update"
        } else {
            "create"
        };
        Ok((
            Change {
                op,
                what: "account",
                name: name.to_owned(),
            },
            id,
        ))
    }

    /// What `apply` does with a declared account: nothing when its secret is the same, else
    /// a create or a rotation.
    pub(crate) async fn apply_account(
        &self,
        name: &str,
        credential: &Credential,
        dry_run: bool,
    ) -> Result<Change, CatalogError> {
        check_credential(credential)?;
        let same = match self.open_account(name).await {
            Ok((_, old)) => match (&old, credential) {
                (
                    Credential::Basic {
                        username: u1,
                        password: p1,
                    },
                    Credential::Basic {
                        username: u2,
                        password: p2,
                    },
                ) => u1 == u2 && p1.expose_secret() == p2.expose_secret(),
                (Credential::ApiKey { key: k1 }, Credential::ApiKey { key: k2 }) => {
                    k1.expose_secret() == k2.expose_secret()
                }
                (Credential::OAuthApp(a), Credential::OAuthApp(b)) => {
                    a.client_id == b.client_id
                        && a.client_secret.expose_secret() == b.client_secret.expose_secret()
                        && a.authorize_url == b.authorize_url
                        && a.token_url == b.token_url
                        && a.scopes == b.scopes
                        && a.allow == b.allow
                }
                _ => false,
            },
            Err(CatalogError::NoAccount(_)) => {
                let op = "create";
                if dry_run {
                    return Ok(Change {
                        op,
                        what: "account",
                        name: name.to_owned(),
                    });
                }
                return Ok(self.put_account(name, credential).await?.0);
            }
            Err(e) => return Err(e),
        };
        if same {
            return Ok(Change {
                op: "unchanged",
                what: "account",
                name: name.to_owned(),
            });
        }
        if dry_run {
            return Ok(Change {
                op: "update",
                what: "account",
                name: name.to_owned(),
            });
        }
        Ok(self.put_account(name, credential).await?.0)
    }

    /// Deletes the account `name`: its secret is gone.
    pub async fn remove_account(&self, name: &str) -> Result<AccountId, CatalogError> {
        let a = self
            .accounts()
            .await?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| CatalogError::NoAccount(name.to_owned()))?;
        self.hub()
            .store()
            .delete_account(self.keys().workspace(), a.id.as_bytes())
            .await?;
        Ok(a.id)
    }

    /// Opens the account `name` for a run. Callers audit the use.
    pub async fn open_account(&self, name: &str) -> Result<(AccountId, Credential), CatalogError> {
        let ws = self.keys().workspace();
        let row = self
            .hub()
            .store()
            .accounts(ws)
            .await?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| CatalogError::NoAccount(name.to_owned()))?;
        let id = AccountId::from_bytes(row.id);
        let plain = Zeroizing::new(
            self.keys()
                .open(&secret_ref(ws, &id), &row.secret)
                .map_err(crypto_error)?,
        );
        let mut sealed: Sealed = serde_json::from_slice(&plain).map_err(|_| {
            CatalogError::Store(StoreError::Corrupt("a stored account is not readable"))
        })?;
        let secret = |s: &mut String| SecretString::from(std::mem::take(s));
        let credential = match &mut sealed {
            Sealed::Basic { username, password } => Credential::Basic {
                username: std::mem::take(username),
                password: secret(password),
            },
            Sealed::ApiKey { key } => Credential::ApiKey { key: secret(key) },
            Sealed::OauthApp {
                client_id,
                client_secret,
                authorize_url,
                token_url,
                scopes,
                allow,
            } => Credential::OAuthApp(OAuthApp {
                client_id: std::mem::take(client_id),
                client_secret: secret(client_secret),
                authorize_url: std::mem::take(authorize_url),
                token_url: std::mem::take(token_url),
                scopes: std::mem::take(scopes),
                allow: std::mem::take(allow),
            }),
            Sealed::Oauth {
                app,
                access,
                refresh,
                expires_at,
            } => Credential::OAuth(OAuthGrant {
                app: std::mem::take(app),
                access: secret(access),
                refresh: refresh.as_mut().map(secret),
                expires_at: *expires_at,
            }),
        };
        Ok((id, credential))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sealed_form_wipes_its_secrets_when_dropped() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Sealed>();
    }
}
