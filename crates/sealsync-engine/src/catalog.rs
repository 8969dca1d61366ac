//! Endpoints and links of a workspace, stored with sealed configurations; and `apply`, which
//! makes them match a declaration file (idempotent, and says what it changes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealsync_connector::credential::{Credential, OAuthApp};
use sealsync_connectors::sql::DatabaseUrl;
use sealsync_crypto::WorkspaceKeys;
use sealsync_store::{EndpointRow, LinkRow, StoreError, config_ref, now_ms};
use sealsync_types::{EndpointId, LinkId};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::run::{Engine, LinkDef};
use crate::spec::{ConflictPolicy, DeleteVsEdit, Deletions, Direction, EndpointSpec, LinkSpec};

/// Why a catalog change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Invalid(String),
    #[error("no endpoint named {0:?}; list them with `sealsync endpoint list`")]
    NoEndpoint(String),
    #[error("no link named {0:?}; list them with `sealsync link list`")]
    NoLink(String),
    #[error("no account named {0:?}; list them with `sealsync account list`")]
    NoAccount(String),
    #[error("endpoint {0:?} is used by a link; remove the link first")]
    InUse(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stored endpoint with its opened configuration.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: EndpointId,
    pub name: String,
    pub spec: EndpointSpec,
}

/// A stored link with its opened configuration.
#[derive(Debug, Clone)]
pub struct Link {
    pub id: LinkId,
    pub name: String,
    pub endpoint: EndpointId,
    pub spec: LinkSpec,
}

/// One change `apply` makes (or would make).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `create`, `update`, `remove` or `unchanged`.
    pub op: &'static str,
    /// `endpoint` or `link`.
    pub what: &'static str,
    pub name: String,
}

/// A declaration file: `[[endpoint]]` and `[[link]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyFile {
    /// The host names the workspace's connections may reach (`dav.example.com`,
    /// `*.example.org`); absent: left as it is.
    #[serde(default)]
    pub egress_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub account: Vec<AccountDecl>,
    #[serde(default)]
    pub endpoint: Vec<EndpointDecl>,
    #[serde(default)]
    pub link: Vec<LinkDecl>,
}

/// An account as declared: its secret comes from the environment or a file, never inline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountDecl {
    pub name: String,
    /// `basic`, `api-key` or `oauth-app`.
    pub kind: String,
    /// basic.
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// api-key.
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
    /// oauth-app: the client registered with the app, its secret from `client_secret_env` or
    /// `client_secret_file`, the app's endpoints, the scopes asked for, and addresses allowed
    /// although private (the token endpoint's).
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
}

impl AccountDecl {
    /// The credential, with its secret read now (files relative to `base`).
    pub fn credential(&self, base: &Path) -> Result<Credential, CatalogError> {
        let bad = |what: String| CatalogError::Invalid(format!("account {:?}: {what}", self.name));
        let read = |env: &Option<String>, file: &Option<PathBuf>, what: &str| {
            let value = match (env, file) {
                (Some(var), None) => std::env::var(var).map_err(|_| {
                    bad(format!(
                        "the environment variable {var} (its {what}) is not set"
                    ))
                })?,
                (None, Some(f)) => {
                    let path = base.join(f);
                    std::fs::read_to_string(&path).map_err(|e| {
                        bad(format!(
                            "cannot read its {what} from {}: {}",
                            path.display(),
                            e.kind()
                        ))
                    })?
                }
                _ => {
                    return Err(bad(format!(
                        "give its {what} as {what}_env or {what}_file (never inline)"
                    )));
                }
            };
            let value = value.strip_suffix('\n').unwrap_or(&value);
            Ok(SecretString::from(
                value.strip_suffix('\r').unwrap_or(value).to_owned(),
            ))
        };
        let oauth_given = self.client_id.is_some()
            || self.client_secret_env.is_some()
            || self.client_secret_file.is_some()
            || self.authorize_url.is_some()
            || self.token_url.is_some()
            || self.scopes.is_some()
            || self.allow.is_some();
        if oauth_given && self.kind != "oauth-app" {
            return Err(bad(
                "client_id, client_secret_*, authorize_url, token_url, scopes and allow belong to oauth-app accounts".into(),
            ));
        }
        match self.kind.as_str() {
            "basic" => {
                if self.key_env.is_some() || self.key_file.is_some() {
                    return Err(bad(
                        "a basic account takes password_env or password_file, not a key".into(),
                    ));
                }
                Ok(Credential::Basic {
                    username: self
                        .username
                        .clone()
                        .ok_or_else(|| bad("username is required".into()))?,
                    password: read(&self.password_env, &self.password_file, "password")?,
                })
            }
            "oauth-app" => {
                if self.username.is_some()
                    || self.password_env.is_some()
                    || self.password_file.is_some()
                    || self.key_env.is_some()
                    || self.key_file.is_some()
                {
                    return Err(bad(
                        "an oauth-app account takes client_id, client_secret_env or client_secret_file, authorize_url, token_url, scopes and allow".into(),
                    ));
                }
                let required = |v: &Option<String>, what: &str| {
                    v.clone().ok_or_else(|| bad(format!("{what} is required")))
                };
                Ok(Credential::OAuthApp(OAuthApp {
                    client_id: required(&self.client_id, "client_id")?,
                    client_secret: read(
                        &self.client_secret_env,
                        &self.client_secret_file,
                        "client_secret",
                    )?,
                    authorize_url: required(&self.authorize_url, "authorize_url")?,
                    token_url: required(&self.token_url, "token_url")?,
                    scopes: self.scopes.clone().unwrap_or_default(),
                    allow: self.allow.clone().unwrap_or_default(),
                }))
            }
            "api-key" => {
                if self.username.is_some()
                    || self.password_env.is_some()
                    || self.password_file.is_some()
                {
                    return Err(bad(
                        "an api-key account takes key_env or key_file only".into()
                    ));
                }
                Ok(Credential::ApiKey {
                    key: read(&self.key_env, &self.key_file, "key")?,
                })
            }
            other => Err(bad(format!(
                "unknown kind {other:?}: expected basic, api-key or oauth-app (oauth accounts are connected, not declared)"
            ))),
        }
    }
}

/// An endpoint as declared. Which fields apply depends on `kind`; [`EndpointDecl::to_spec`]
/// says which are missing or do not belong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointDecl {
    pub name: String,
    pub kind: String,
    /// vdir, csv.
    pub path: Option<PathBuf>,
    /// vdir.
    pub version: Option<String>,
    /// csv.
    pub preset: Option<String>,
    pub map: Option<PathBuf>,
    /// sql: `url` or `url_env`, `table`, `id_column`, `columns`, optionally `etag_column`;
    /// carddav: `url` (kept secret-typed: a database URL may hold a password).
    pub url: Option<SecretString>,
    /// carddav: the account that signs in, and addresses allowed although private.
    pub account: Option<String>,
    pub allow: Option<Vec<String>>,
    pub url_env: Option<String>,
    pub table: Option<String>,
    pub id_column: Option<String>,
    pub etag_column: Option<String>,
    pub columns: Option<Vec<String>>,
    /// webhook: `account` (the signing secret), JSON `fields` to targets, the `id_field`.
    pub fields: Option<BTreeMap<String, String>>,
    pub id_field: Option<String>,
}

/// A link as declared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDecl {
    pub name: String,
    pub endpoint: String,
    pub direction: Option<Direction>,
    pub conflict: Option<ConflictPolicy>,
    pub delete_vs_edit: Option<DeleteVsEdit>,
    pub deletions: Option<Deletions>,
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub mask: Vec<String>,
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    pub priority: Option<i32>,
    pub max_delete_share: Option<f64>,
}

impl EndpointDecl {
    /// The endpoint this declares, paths resolved against `base`.
    pub fn to_spec(&self, base: &Path) -> Result<EndpointSpec, CatalogError> {
        let bad = |what: &str| CatalogError::Invalid(format!("endpoint {:?}: {what}", self.name));
        let given = [
            ("path", self.path.is_some()),
            ("version", self.version.is_some()),
            ("preset", self.preset.is_some()),
            ("map", self.map.is_some()),
            ("url", self.url.is_some()),
            ("account", self.account.is_some()),
            ("allow", self.allow.is_some()),
            ("url_env", self.url_env.is_some()),
            ("table", self.table.is_some()),
            ("id_column", self.id_column.is_some()),
            ("etag_column", self.etag_column.is_some()),
            ("columns", self.columns.is_some()),
            ("fields", self.fields.is_some()),
            ("id_field", self.id_field.is_some()),
        ];
        let allowed: &[&str] = match self.kind.as_str() {
            "vdir" => &["path", "version"],
            "csv" => &["path", "preset", "map"],
            "carddav" => &["url", "account", "version", "allow"],
            "sql" => &[
                "url",
                "url_env",
                "table",
                "id_column",
                "etag_column",
                "columns",
            ],
            "webhook" => &["account", "fields", "id_field"],
            "webhook-out" => &["url", "account", "allow"],
            other => {
                return Err(bad(&format!(
                    "unknown kind {other:?}: expected vdir, csv, carddav, sql, webhook or webhook-out"
                )));
            }
        };
        let extra: Vec<&str> = given
            .iter()
            .filter(|(f, is)| *is && !allowed.contains(f))
            .map(|(f, _)| *f)
            .collect();
        if !extra.is_empty() {
            return Err(bad(&format!(
                "{} not used by {} endpoints (they take {})",
                extra.join(", "),
                self.kind,
                allowed.join(", ")
            )));
        }
        let required = |field: &'static str| bad(&format!("{field} is required"));
        let mut spec = match self.kind.as_str() {
            "vdir" => EndpointSpec::Vdir {
                path: self.path.clone().ok_or_else(|| required("path"))?,
                version: self.version.clone(),
            },
            "csv" => EndpointSpec::Csv {
                path: self.path.clone().ok_or_else(|| required("path"))?,
                preset: self.preset.clone(),
                map: self.map.clone(),
            },
            "carddav" => EndpointSpec::Carddav {
                url: self
                    .url
                    .as_ref()
                    .map(|u| u.expose_secret().to_owned())
                    .ok_or_else(|| required("url"))?,
                account: self.account.clone(),
                version: self.version.clone(),
                allow: self.allow.clone().unwrap_or_default(),
            },
            "webhook-out" => EndpointSpec::WebhookOut {
                url: self
                    .url
                    .as_ref()
                    .map(|u| u.expose_secret().to_owned())
                    .ok_or_else(|| required("url"))?,
                account: self.account.clone().ok_or_else(|| required("account"))?,
                allow: self.allow.clone().unwrap_or_default(),
            },
            "webhook" => EndpointSpec::Webhook {
                account: self.account.clone().ok_or_else(|| required("account"))?,
                fields: self.fields.clone().unwrap_or_default(),
                id_field: self.id_field.clone(),
            },
            _ => EndpointSpec::Sql {
                url: self
                    .url
                    .as_ref()
                    .map(|u| DatabaseUrl::parse(u.expose_secret()))
                    .transpose()
                    .map_err(|e| bad(&e.to_string()))?,
                url_env: self.url_env.clone(),
                table: self.table.clone().ok_or_else(|| required("table"))?,
                id_column: self
                    .id_column
                    .clone()
                    .ok_or_else(|| required("id_column"))?,
                etag_column: self.etag_column.clone(),
                columns: self.columns.clone().ok_or_else(|| required("columns"))?,
            },
        };
        spec.resolve_paths(base);
        spec.validate().map_err(|e| bad(&e.to_string()))?;
        Ok(spec)
    }
}

impl LinkDecl {
    pub fn to_spec(&self) -> Result<LinkSpec, CatalogError> {
        let d = LinkSpec::default();
        let mut spec = LinkSpec {
            direction: self.direction.unwrap_or(d.direction),
            conflict: self.conflict.unwrap_or(d.conflict),
            delete_vs_edit: self.delete_vs_edit.unwrap_or(d.delete_vs_edit),
            deletions: self.deletions.unwrap_or(d.deletions),
            drop: self.drop.clone(),
            mask: self.mask.clone(),
            map: self.map.clone(),
            priority: self.priority.unwrap_or(d.priority),
            max_delete_share: self.max_delete_share.unwrap_or(d.max_delete_share),
        };
        spec.validate()
            .map_err(|e| CatalogError::Invalid(format!("link {:?}: {e}", self.name)))?;
        Ok(spec)
    }
}

/// Names of endpoints and links: what a person types.
/// A host allowlist, checked and normalized, without duplicates.
fn egress_hosts(hosts: &[String]) -> Result<Vec<String>, CatalogError> {
    let mut out: Vec<String> = Vec::new();
    for h in hosts {
        let h = sealsync_connector::egress::host_pattern(h)
            .map_err(|e| CatalogError::Invalid(format!("egress_hosts: {e}")))?;
        if !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(out)
}

pub fn check_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "{name:?} is not a valid name: use 1 to 63 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn seal_json<T: Serialize>(
    keys: &WorkspaceKeys,
    table: &str,
    id: &[u8; 16],
    value: &T,
) -> Result<Vec<u8>, CatalogError> {
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec(value).map_err(|e| CatalogError::Invalid(e.to_string()))?,
    );
    keys.seal(&config_ref(table, keys.workspace(), id), &json)
        .map_err(|e| {
            CatalogError::Store(StoreError::Crypto {
                record: table.into(),
                error: e.to_string(),
            })
        })
}

fn open_json<T: for<'de> Deserialize<'de>>(
    keys: &WorkspaceKeys,
    table: &str,
    id: &[u8; 16],
    sealed: &[u8],
) -> Result<T, CatalogError> {
    let plain = zeroize::Zeroizing::new(
        keys.open(&config_ref(table, keys.workspace(), id), sealed)
            .map_err(|e| {
                CatalogError::Store(StoreError::Crypto {
                    record: table.into(),
                    error: e.to_string(),
                })
            })?,
    );
    serde_json::from_slice(&plain).map_err(|_| {
        CatalogError::Store(StoreError::Corrupt("stored configuration is not readable"))
    })
}

impl Engine {
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, CatalogError> {
        let keys = self.keys();
        let rows = self.hub().store().endpoints(keys.workspace()).await?;
        rows.into_iter()
            .map(|r| {
                Ok(Endpoint {
                    id: r.id,
                    spec: open_json(keys, "endpoints", r.id.as_bytes(), &r.config)?,
                    name: r.name,
                })
            })
            .collect()
    }

    pub async fn links(&self) -> Result<Vec<Link>, CatalogError> {
        let keys = self.keys();
        let rows = self.hub().store().links(keys.workspace()).await?;
        rows.into_iter()
            .map(|r| {
                Ok(Link {
                    id: r.id,
                    spec: open_json(keys, "links", r.id.as_bytes(), &r.config)?,
                    endpoint: r.endpoint,
                    name: r.name,
                })
            })
            .collect()
    }

    /// Creates or replaces the endpoint `name`. Returns the change made.
    pub async fn put_endpoint(
        &self,
        name: &str,
        spec: &EndpointSpec,
        dry_run: bool,
    ) -> Result<Change, CatalogError> {
        check_name(name)?;
        spec.validate()
            .map_err(|e| CatalogError::Invalid(format!("endpoint {name:?}: {e}")))?;
        if let Some(hosts) = self.egress_hosts().await? {
            spec.check_hosts(&hosts)
                .map_err(|e| CatalogError::Invalid(format!("endpoint {name:?}: {e}")))?;
        }
        let existing = self.endpoints().await?.into_iter().find(|e| e.name == name);
        let op = match &existing {
            Some(e) if &e.spec == spec => "unchanged",
            Some(_) => "update",
            None => "create",
        };
        if op != "unchanged" && !dry_run {
            let id = existing.map(|e| e.id).unwrap_or_default();
            let keys = self.keys();
            self.hub()
                .store()
                .put_endpoint(
                    keys.workspace(),
                    &EndpointRow {
                        id,
                        name: name.to_owned(),
                        kind: spec.kind().to_owned(),
                        config: seal_json(keys, "endpoints", id.as_bytes(), spec)?,
                        created_at: now_ms() / 1000,
                    },
                )
                .await?;
        }
        Ok(Change {
            op,
            what: "endpoint",
            name: name.to_owned(),
        })
    }

    /// Creates or replaces the link `name` to endpoint `endpoint`.
    pub async fn put_link(
        &self,
        name: &str,
        endpoint: &str,
        spec: &LinkSpec,
        dry_run: bool,
    ) -> Result<Change, CatalogError> {
        check_name(name)?;
        let mut spec = spec.clone();
        spec.validate()
            .map_err(|e| CatalogError::Invalid(format!("link {name:?}: {e}")))?;
        let endpoints = self.endpoints().await?;
        let ep = endpoints.iter().find(|e| e.name == endpoint);
        let existing = self.links().await?.into_iter().find(|l| l.name == name);
        let Some(ep) = ep else {
            // In a dry run the endpoint may be one the same file creates.
            if dry_run {
                return Ok(Change {
                    op: if existing.is_some() {
                        "update"
                    } else {
                        "create"
                    },
                    what: "link",
                    name: name.to_owned(),
                });
            }
            return Err(CatalogError::NoEndpoint(endpoint.to_owned()));
        };
        if ep.spec.pull_only() && spec.direction != Direction::Pull {
            return Err(CatalogError::Invalid(format!(
                "link {name:?}: endpoint {endpoint:?} only delivers contacts, so its links pull (direction = \"pull\")"
            )));
        }
        if ep.spec.push_only() && spec.direction != Direction::Push {
            return Err(CatalogError::Invalid(format!(
                "link {name:?}: endpoint {endpoint:?} only receives changes, so its links push (direction = \"push\")"
            )));
        }
        if let Some(l) = &existing
            && l.endpoint != ep.id
        {
            return Err(CatalogError::Invalid(format!(
                "link {name:?} is bound to another endpoint; remove the link first (its sync state belongs to that endpoint)"
            )));
        }
        let op = match &existing {
            Some(l) if l.spec == spec => "unchanged",
            Some(_) => "update",
            None => "create",
        };
        if op != "unchanged" && !dry_run {
            let id = existing.map(|l| l.id).unwrap_or_default();
            let keys = self.keys();
            self.hub()
                .store()
                .put_link(
                    keys.workspace(),
                    &LinkRow {
                        id,
                        name: name.to_owned(),
                        endpoint: ep.id,
                        config: seal_json(keys, "links", id.as_bytes(), &spec)?,
                        created_at: now_ms() / 1000,
                    },
                )
                .await?;
        }
        Ok(Change {
            op,
            what: "link",
            name: name.to_owned(),
        })
    }

    pub async fn remove_endpoint(&self, name: &str) -> Result<(), CatalogError> {
        let ep = self
            .endpoints()
            .await?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| CatalogError::NoEndpoint(name.to_owned()))?;
        if !self
            .hub()
            .store()
            .delete_endpoint(self.keys().workspace(), ep.id)
            .await?
        {
            return Err(CatalogError::InUse(name.to_owned()));
        }
        Ok(())
    }

    pub async fn remove_link(&self, name: &str) -> Result<(), CatalogError> {
        let link = self
            .links()
            .await?
            .into_iter()
            .find(|l| l.name == name)
            .ok_or_else(|| CatalogError::NoLink(name.to_owned()))?;
        self.hub()
            .store()
            .delete_link(self.keys().workspace(), link.id)
            .await?;
        Ok(())
    }

    /// The workspace's host allowlist; `None`: any public host.
    pub async fn egress_hosts(&self) -> Result<Option<Vec<String>>, CatalogError> {
        Ok(self
            .hub()
            .store()
            .egress_hosts(self.keys().workspace())
            .await?)
    }

    /// Sets (`None`: lifts) the workspace's host allowlist; endpoints outside it fail to open.
    pub async fn set_egress_hosts(
        &self,
        hosts: Option<Vec<String>>,
        dry_run: bool,
    ) -> Result<Change, CatalogError> {
        let hosts = hosts.map(|h| egress_hosts(&h)).transpose()?;
        let op = if self.egress_hosts().await? == hosts {
            "unchanged"
        } else {
            "update"
        };
        if op != "unchanged" && !dry_run {
            self.hub()
                .store()
                .set_egress_hosts(self.keys().workspace(), hosts.as_deref())
                .await?;
        }
        Ok(Change {
            op,
            what: "egress",
            name: "hosts".into(),
        })
    }

    /// Every link with its endpoint, ready to run: pulling links first, then push-only ones,
    /// each group by name.
    pub async fn link_defs(&self) -> Result<Vec<LinkDef>, CatalogError> {
        let endpoints = self.endpoints().await?;
        let mut defs = Vec::new();
        for l in self.links().await? {
            let ep = endpoints
                .iter()
                .find(|e| e.id == l.endpoint)
                .ok_or(CatalogError::Store(StoreError::Corrupt(
                    "a link's endpoint is missing",
                )))?;
            defs.push(LinkDef {
                id: l.id,
                name: l.name,
                spec: l.spec,
                endpoint_name: ep.name.clone(),
                endpoint_id: ep.id,
                endpoint: ep.spec.clone(),
            });
        }
        defs.sort_by(|a, b| {
            (!a.spec.direction.pulls(), &a.name).cmp(&(!b.spec.direction.pulls(), &b.name))
        });
        Ok(defs)
    }

    /// Makes the workspace's endpoints and links match `file` (read from a file in `base`).
    /// Endpoints and links the file does not mention are left alone.
    pub async fn apply(
        &self,
        file: &ApplyFile,
        base: &Path,
        dry_run: bool,
    ) -> Result<Vec<Change>, CatalogError> {
        // Check everything before changing anything.
        let hosts = file
            .egress_hosts
            .as_ref()
            .map(|h| egress_hosts(h))
            .transpose()?;
        let mut accounts: Vec<(String, Credential)> = Vec::new();
        for a in &file.account {
            check_name(&a.name)?;
            if accounts.iter().any(|(n, _)| n == &a.name) {
                return Err(CatalogError::Invalid(format!(
                    "account {:?} is declared twice",
                    a.name
                )));
            }
            accounts.push((a.name.clone(), a.credential(base)?));
        }
        let mut endpoints = Vec::new();
        for e in &file.endpoint {
            check_name(&e.name)?;
            if endpoints
                .iter()
                .any(|(n, _): &(String, EndpointSpec)| n == &e.name)
            {
                return Err(CatalogError::Invalid(format!(
                    "endpoint {:?} is declared twice",
                    e.name
                )));
            }
            endpoints.push((e.name.clone(), e.to_spec(base)?));
        }
        let known: Vec<String> = self
            .endpoints()
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect();
        let mut links = Vec::new();
        for l in &file.link {
            check_name(&l.name)?;
            if links
                .iter()
                .any(|(n, _, _): &(String, String, LinkSpec)| n == &l.name)
            {
                return Err(CatalogError::Invalid(format!(
                    "link {:?} is declared twice",
                    l.name
                )));
            }
            if !endpoints.iter().any(|(n, _)| n == &l.endpoint) && !known.contains(&l.endpoint) {
                return Err(CatalogError::NoEndpoint(l.endpoint.clone()));
            }
            links.push((l.name.clone(), l.endpoint.clone(), l.to_spec()?));
        }
        let mut changes = Vec::new();
        if let Some(hosts) = &hosts {
            for (name, spec) in &endpoints {
                spec.check_hosts(hosts)
                    .map_err(|e| CatalogError::Invalid(format!("endpoint {name:?}: {e}")))?;
            }
            changes.push(self.set_egress_hosts(Some(hosts.clone()), dry_run).await?);
        }
        for (name, credential) in &accounts {
            changes.push(self.apply_account(name, credential, dry_run).await?);
        }
        for (name, spec) in &endpoints {
            changes.push(self.put_endpoint(name, spec, dry_run).await?);
        }
        for (name, endpoint, spec) in &links {
            changes.push(self.put_link(name, endpoint, spec, dry_run).await?);
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(text: &str) -> Result<EndpointSpec, String> {
        let file: ApplyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.endpoint[0]
            .to_spec(Path::new("/base"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sql_endpoints_are_declared_with_their_own_fields() {
        let spec = decl(
            r#"[[endpoint]]
            name = "crm"
            kind = "sql"
            url_env = "CRM_DATABASE_URL"
            table = "crm.people"
            id_column = "id"
            etag_column = "version"
            columns = ["FN=full_name", "EMAIL=email"]"#,
        )
        .unwrap();
        assert_eq!(spec.kind(), "sql");

        let err = decl(
            r#"[[endpoint]]
            name = "crm"
            kind = "sql"
            url_env = "CRM_DATABASE_URL"
            path = "x.csv"
            table = "people"
            id_column = "id"
            columns = ["FN=full_name"]"#,
        )
        .unwrap_err();
        assert!(err.contains("path not used by sql endpoints"), "{err}");

        let err = decl(
            r#"[[endpoint]]
            name = "crm"
            kind = "sql"
            url_env = "CRM_DATABASE_URL"
            id_column = "id"
            columns = ["FN=full_name"]"#,
        )
        .unwrap_err();
        assert!(err.contains("table is required"), "{err}");

        let err = decl(
            r#"[[endpoint]]
            name = "crm"
            kind = "sql"
            table = "people"
            id_column = "id"
            columns = ["FN=full_name"]"#,
        )
        .unwrap_err();
        assert!(err.contains("url_env"), "{err}");

        let err = decl(
            r#"[[endpoint]]
            name = "crm"
            kind = "sql"
            url = "postgres://u:hunter2@db/x"
            url_env = "X"
            table = "people"
            id_column = "id"
            columns = ["FN=full_name"]"#,
        )
        .unwrap_err();
        assert!(
            err.contains("not both") && !err.contains("hunter2"),
            "{err}"
        );

        let err = decl(
            r#"[[endpoint]]
            name = "b"
            kind = "vdir"
            table = "people""#,
        )
        .unwrap_err();
        assert!(err.contains("table not used by vdir"), "{err}");
    }

    #[test]
    fn hides_content() {
        let file: ApplyFile = toml::from_str(
            r#"[[endpoint]]
            name = "crm"
            kind = "sql"
            url = "postgres://u:hunter2@db/x"
            table = "people"
            id_column = "id"
            columns = ["FN=full_name"]"#,
        )
        .unwrap();
        let spec = file.endpoint[0].to_spec(Path::new("/")).unwrap();
        assert!(!format!("{file:?} {spec:?}").contains("hunter2"));
    }
}
