//! Connect: accounts that external end users connect themselves.
//!
//! The customer's system names its user by its own id (`external_user_id`); sealsync keeps only
//! a keyed hash of it, the user's tag. An account a user connects for an app is named
//! `<app>.<tag>`, so the customer can find it (the tag comes back when a token is made) and
//! removing the user finds all of them, with what was synced through them.

use std::collections::HashSet;

use sealsync_crypto::IndexKind;
use sealsync_store::{Hub, now_ms};
use sealsync_types::ContactId;
use serde::Serialize;

use crate::catalog::{CatalogError, check_name};
use crate::run::Engine;

/// Hex digits of the user tag in account names.
const TAG_LEN: usize = 24;

/// What removing an end user took away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectRemoval {
    pub accounts: usize,
    pub endpoints: usize,
    pub links: usize,
    /// Hub contacts that came only through the removed links.
    pub contacts: usize,
    pub tokens: u64,
}

/// An app name a user may connect: a plain name without dots, at most 32 characters.
pub fn check_app(app: &str) -> Result<(), CatalogError> {
    check_name(app)?;
    if app.contains('.') || app.len() > 32 {
        return Err(CatalogError::Invalid(format!(
            "app {app:?}: at most 32 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

impl Engine {
    /// The keyed tag of an external user id.
    pub fn connect_user_tag(&self, external_user_id: &str) -> String {
        let mac = self.keys().blind_index().index(
            IndexKind::Remote,
            &format!("connect\u{1f}{external_user_id}"),
        );
        hex::encode(&mac[..TAG_LEN / 2])
    }

    /// The account an end user (by tag) connects for `app`.
    pub fn connect_account_name(app: &str, tag: &str) -> String {
        format!("{app}.{tag}")
    }

    /// Removes an end user: their Connect tokens, their accounts, the endpoints that use those
    /// accounts with their links (state, runs and cursors with them), and every hub contact
    /// that came only through those links.
    pub async fn remove_connect_user(
        &self,
        external_user_id: &str,
    ) -> Result<ConnectRemoval, CatalogError> {
        let tag = self.connect_user_tag(external_user_id);
        let suffix = format!(".{tag}");
        let ws = self.keys().workspace();
        let store = self.hub().store();
        let mut out = ConnectRemoval {
            tokens: store
                .delete_connect_tokens(ws, &tag, now_ms() / 1000)
                .await?,
            ..ConnectRemoval::default()
        };
        let accounts: Vec<String> = self
            .accounts()
            .await?
            .into_iter()
            .map(|a| a.name)
            .filter(|n| n.ends_with(&suffix))
            .collect();
        let endpoints: Vec<_> = self
            .endpoints()
            .await?
            .into_iter()
            .filter(|e| {
                e.spec
                    .account()
                    .is_some_and(|a| accounts.iter().any(|n| n == a))
            })
            .collect();
        let links: Vec<_> = self
            .links()
            .await?
            .into_iter()
            .filter(|l| endpoints.iter().any(|e| e.id == l.endpoint))
            .collect();
        // What came through those links, before their state goes.
        let mut through: HashSet<ContactId> = HashSet::new();
        for l in &links {
            through.extend(
                store
                    .link_state(ws, l.id)
                    .await?
                    .into_iter()
                    .map(|s| s.contact),
            );
        }
        for l in &links {
            self.remove_link(&l.name).await?;
        }
        for e in &endpoints {
            self.remove_endpoint(&e.name).await?;
        }
        for a in &accounts {
            self.remove_account(a).await?;
        }
        // A contact another link still holds stays: it is that system's too.
        let mut kept: HashSet<ContactId> = HashSet::new();
        for l in self.links().await? {
            kept.extend(
                store
                    .link_state(ws, l.id)
                    .await?
                    .into_iter()
                    .map(|s| s.contact),
            );
        }
        let meta = store.hub_meta(ws).await?;
        let now = now_ms() / 1000;
        let tombs: Vec<_> = meta
            .iter()
            .filter(|m| !m.deleted && through.contains(&m.id) && !kept.contains(&m.id))
            .map(|m| Hub::tombstone(m.id, m.version + 1, now))
            .collect();
        store.write_contacts(ws, &tombs).await?;
        out.accounts = accounts.len();
        out.endpoints = endpoints.len();
        out.links = links.len();
        out.contacts = tombs.len();
        Ok(out)
    }
}
