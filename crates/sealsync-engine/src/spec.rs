//! What endpoints and links are: their settings, as stored (sealed JSON) and as declared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealsync_connector::credential::Credential;
use sealsync_connector::egress::{AllowedAddr, EgressPolicy};
use sealsync_connector::{Connector, ConnectorError};
use sealsync_connectors::carddav::CardDav;
use sealsync_connectors::csv::CsvFile;
use sealsync_connectors::sql::{DatabaseUrl, SqlShape, SqlTable};
use sealsync_connectors::vdir::Vdir;
use sealsync_connectors::webhook::{JsonMapping, SigningSecret};
use sealsync_connectors::webhook_out::{Sender, SignKey, check_url};
use sealsync_contact::VcardVersion;
use sealsync_contact::csv::{CsvLayout, CsvPreset};
use serde::{Deserialize, Serialize};

/// One external contact collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EndpointSpec {
    /// A folder of `.vcf` files.
    Vdir {
        path: PathBuf,
        /// vCard version of files written: `4.0` (default) or `3.0`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// One CSV file.
    Csv {
        path: PathBuf,
        /// `google` (default) or `outlook`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preset: Option<String>,
        /// A column mapping file (TOML), instead of a preset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map: Option<PathBuf>,
    },
    /// A CardDAV address book.
    Carddav {
        /// The address book's collection URL.
        url: String,
        /// The account whose credentials sign in (none: the server needs none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// vCard version of cards written, `3.0` or `4.0`; default: what the server wants.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        /// Addresses reached although private or loopback (`127.0.0.1:5232`): the egress
        /// policy refuses them otherwise.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allow: Vec<String>,
    },
    /// One table of a SQLite or PostgreSQL database.
    Sql {
        /// The database URL, when stored in the (sealed) configuration.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<DatabaseUrl>,
        /// The environment variable holding the URL, read when the endpoint opens.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url_env: Option<String>,
        /// `name` or `schema.name`.
        table: String,
        /// The text primary key.
        id_column: String,
        /// A version or time the user's application moves on every change; without it the
        /// etag is a hash of the mapped values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        etag_column: Option<String>,
        /// `TARGET=column` pairs: `FN=full_name`, `N:given=first_name`, `EMAIL=email`.
        columns: Vec<String>,
    },
    /// Contacts delivered by signed webhooks (`POST /v1/hooks/{endpoint id}`), kept until the
    /// endpoint's pull link takes them.
    Webhook {
        /// The account holding the shared signing secret (kind `api-key`).
        account: String,
        /// JSON field to target (`"mail" = "EMAIL"`); none: the usual field names.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        fields: BTreeMap<String, String>,
        /// The JSON field holding the contact's id in the sending system (default `id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id_field: Option<String>,
    },
    /// A receiver that the endpoint's push link sends each change to, as a signed webhook
    /// (`POST url`), retried for up to 24 hours.
    WebhookOut {
        /// Where deliveries go.
        url: String,
        /// The account holding the shared signing secret (kind `api-key`).
        account: String,
        /// Addresses reached although private or loopback: the egress policy refuses them
        /// otherwise.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allow: Vec<String>,
    },
}

impl EndpointSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            EndpointSpec::Vdir { .. } => "vdir",
            EndpointSpec::Csv { .. } => "csv",
            EndpointSpec::Carddav { .. } => "carddav",
            EndpointSpec::Sql { .. } => "sql",
            EndpointSpec::Webhook { .. } => "webhook",
            EndpointSpec::WebhookOut { .. } => "webhook-out",
        }
    }

    /// Checks what can be checked without touching the endpoint.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        match self {
            EndpointSpec::Vdir { version, .. } => vcard_version(version.as_deref()).map(|_| ()),
            EndpointSpec::Csv { preset, map, .. } => {
                layout(preset.as_deref(), map.as_deref()).map(|_| ())
            }
            EndpointSpec::Carddav {
                url,
                version,
                allow,
                ..
            } => {
                dav_version(version.as_deref())?;
                CardDav::open(url, None, egress(allow)?, None).map(|_| ())
            }
            EndpointSpec::Sql {
                url,
                url_env,
                table,
                id_column,
                etag_column,
                columns,
            } => {
                match (url, url_env) {
                    (Some(_), Some(_)) => {
                        return Err(ConnectorError::Config(
                            "give url or url_env, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err(ConnectorError::Config(
                            "give url or url_env (the environment variable holding the URL)".into(),
                        ));
                    }
                    (None, Some(var)) => env_name(var)?,
                    (Some(_), None) => {}
                }
                SqlShape::parse(table, id_column, etag_column.as_deref(), columns).map(|_| ())
            }
            EndpointSpec::Webhook { .. } => self.json_mapping().map(|_| ()),
            EndpointSpec::WebhookOut { url, allow, .. } => check_url(url, &egress(allow)?),
        }
    }

    /// How a webhook endpoint reads JSON contacts.
    pub fn json_mapping(&self) -> Result<JsonMapping, ConnectorError> {
        match self {
            EndpointSpec::Webhook {
                fields, id_field, ..
            } => JsonMapping::new(fields, id_field.as_deref())
                .map_err(|e| ConnectorError::Config(e.to_string())),
            _ => Err(ConnectorError::Config("not a webhook endpoint".into())),
        }
    }

    /// Whether links to this endpoint may only pull (it cannot be written).
    pub fn pull_only(&self) -> bool {
        matches!(self, EndpointSpec::Webhook { .. })
    }

    /// Whether links to this endpoint may only push (it cannot be read back from its system).
    pub fn push_only(&self) -> bool {
        matches!(self, EndpointSpec::WebhookOut { .. })
    }

    /// The account this endpoint signs in with, if any.
    pub fn account(&self) -> Option<&str> {
        match self {
            EndpointSpec::Carddav { account, .. } => account.as_deref(),
            EndpointSpec::Webhook { account, .. } | EndpointSpec::WebhookOut { account, .. } => {
                Some(account)
            }
            _ => None,
        }
    }

    /// Whether the endpoint's URL is within the workspace's host allowlist (`hosts`; empty:
    /// any public host). Checked without connecting.
    pub fn check_hosts(&self, hosts: &[String]) -> Result<(), ConnectorError> {
        match self {
            EndpointSpec::Carddav { url, allow, .. } => {
                let mut policy = egress(allow)?;
                policy.hosts = hosts.to_vec();
                CardDav::open(url, None, policy, None).map(|_| ())
            }
            EndpointSpec::WebhookOut { url, allow, .. } => {
                let mut policy = egress(allow)?;
                policy.hosts = hosts.to_vec();
                check_url(url, &policy)
            }
            _ => Ok(()),
        }
    }

    /// The sender of a webhook destination: its URL and the workspace's `hosts` checked, signed
    /// with `secret` (the account's) and `key` (the installation's).
    pub fn webhook_sender(
        &self,
        secret: SigningSecret,
        key: SignKey,
        hosts: &[String],
    ) -> Result<Sender, ConnectorError> {
        match self {
            EndpointSpec::WebhookOut { url, allow, .. } => {
                let mut policy = egress(allow)?;
                policy.hosts = hosts.to_vec();
                Sender::new(url, secret, key, policy)
            }
            _ => Err(ConnectorError::Config("not a webhook destination".into())),
        }
    }

    /// Opens the connector this endpoint describes, with its account's credential, reaching
    /// only `hosts` when the workspace names any.
    pub fn open(
        &self,
        credential: Option<&Credential>,
        hosts: &[String],
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        match self {
            EndpointSpec::Carddav {
                url,
                version,
                allow,
                ..
            } => {
                let mut policy = egress(allow)?;
                policy.hosts = hosts.to_vec();
                Ok(Arc::new(CardDav::open(
                    url,
                    credential,
                    policy,
                    dav_version(version.as_deref())?,
                )?))
            }
            EndpointSpec::Vdir { path, version } => Ok(Arc::new(Vdir::open(
                path,
                vcard_version(version.as_deref())?,
            )?)),
            EndpointSpec::Csv { path, preset, map } => Ok(Arc::new(CsvFile::open(
                path,
                layout(preset.as_deref(), map.as_deref())?,
            )?)),
            EndpointSpec::Sql {
                url,
                url_env,
                table,
                id_column,
                etag_column,
                columns,
            } => {
                let url = match (url, url_env) {
                    (Some(url), None) => url.clone(),
                    (None, Some(var)) => {
                        env_name(var)?;
                        let value = std::env::var(var).map_err(|_| {
                            ConnectorError::Config(format!(
                                "environment variable {var} (the database URL) is not set"
                            ))
                        })?;
                        let value = zeroize::Zeroizing::new(value);
                        DatabaseUrl::parse(&value).map_err(|e| {
                            ConnectorError::Config(format!("environment variable {var}: {e}"))
                        })?
                    }
                    _ => {
                        return Err(ConnectorError::Config(
                            "give exactly one of url and url_env".into(),
                        ));
                    }
                };
                let shape = SqlShape::parse(table, id_column, etag_column.as_deref(), columns)?;
                Ok(Arc::new(SqlTable::open(url, shape)?))
            }
            EndpointSpec::Webhook { .. } | EndpointSpec::WebhookOut { .. } => {
                Err(ConnectorError::Config(
                    "a webhook endpoint is kept in the store, not opened".into(),
                ))
            }
        }
    }

    /// Makes relative paths relative to `base` (the folder of the file that declared them).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            EndpointSpec::Vdir { path, .. } => fix(path),
            EndpointSpec::Csv { path, map, .. } => {
                fix(path);
                if let Some(m) = map {
                    fix(m);
                }
            }
            EndpointSpec::Carddav { .. }
            | EndpointSpec::Sql { .. }
            | EndpointSpec::Webhook { .. }
            | EndpointSpec::WebhookOut { .. } => {}
        }
    }
}

fn vcard_version(v: Option<&str>) -> Result<VcardVersion, ConnectorError> {
    match v.unwrap_or("4.0") {
        "4.0" | "4" => Ok(VcardVersion::V4),
        "3.0" | "3" => Ok(VcardVersion::V3),
        other => Err(ConnectorError::Config(format!(
            "vCard version {other:?}: expected 4.0 or 3.0"
        ))),
    }
}

/// The version a CardDAV endpoint asks for; none: what the server wants.
fn dav_version(v: Option<&str>) -> Result<Option<VcardVersion>, ConnectorError> {
    v.map(|v| vcard_version(Some(v))).transpose()
}

/// The egress policy of an endpoint: public hosts, and these addresses.
pub(crate) fn egress(allow: &[String]) -> Result<EgressPolicy, ConnectorError> {
    let allow = allow
        .iter()
        .map(|a| a.parse::<AllowedAddr>().map_err(ConnectorError::Config))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EgressPolicy::allowing(allow))
}

/// A plausible environment variable name; its value is read only when the endpoint opens.
fn env_name(var: &str) -> Result<(), ConnectorError> {
    let ok = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConnectorError::Config(format!(
            "{var:?} is not an environment variable name"
        )))
    }
}

fn layout(preset: Option<&str>, map: Option<&Path>) -> Result<CsvLayout, ConnectorError> {
    match (preset, map) {
        (Some(_), Some(_)) => Err(ConnectorError::Config(
            "give a CSV preset or a map, not both".into(),
        )),
        (_, Some(map)) => {
            let text = std::fs::read_to_string(map)
                .map_err(|e| ConnectorError::Config(format!("{}: {}", map.display(), e.kind())))?;
            CsvLayout::from_mapping_toml(&text)
                .map_err(|e| ConnectorError::Config(format!("{}: {e}", map.display())))
        }
        (p, None) => {
            let preset: CsvPreset = p
                .unwrap_or("google")
                .parse()
                .map_err(ConnectorError::Config)?;
            Ok(CsvLayout::preset(preset))
        }
    }
}

/// Which way a link moves contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Endpoint → hub.
    Pull,
    /// Hub → endpoint.
    Push,
    /// Both ways.
    #[default]
    Both,
}

impl Direction {
    pub fn pulls(self) -> bool {
        matches!(self, Direction::Pull | Direction::Both)
    }

    pub fn pushes(self) -> bool {
        matches!(self, Direction::Push | Direction::Both)
    }
}

/// What happens when a contact changed on both sides since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The hub's version wins.
    HubWins,
    /// The endpoint's version wins.
    RemoteWins,
    /// The version changed last wins (a tie goes to the hub).
    Newest,
    /// Both versions are kept, as two contacts.
    KeepBoth,
    /// Nothing changes; the contact waits in the conflict queue for a decision.
    #[default]
    Manual,
}

/// What happens when one side deleted a contact the other side edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeleteVsEdit {
    /// The edited contact survives (and comes back where it was deleted).
    #[default]
    EditWins,
    /// The delete wins.
    DeleteWins,
}

/// Whether deletions travel over this link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deletions {
    /// A delete on one side deletes on the other.
    #[default]
    Propagate,
    /// Deletes are not passed on; the contact is only unlinked.
    Keep,
}

/// A link's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub conflict: ConflictPolicy,
    #[serde(default)]
    pub delete_vs_edit: DeleteVsEdit,
    #[serde(default)]
    pub deletions: Deletions,
    /// Properties never written to the endpoint (and kept in the hub when pulling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
    /// Properties written to the endpoint masked (and kept in the hub when pulling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<String>,
    /// Renames on the way out: hub property → endpoint property (reversed on the way in).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub map: BTreeMap<String, String>,
    /// Source priority for merging single values into a matched contact: the higher wins;
    /// the hub's values count as 0.
    #[serde(default)]
    pub priority: i32,
    /// Largest share of the link's contacts one run may delete without `--allow-mass-delete`.
    #[serde(default = "default_max_delete_share")]
    pub max_delete_share: f64,
}

fn default_max_delete_share() -> f64 {
    0.2
}

impl Default for LinkSpec {
    fn default() -> Self {
        Self {
            direction: Direction::default(),
            conflict: ConflictPolicy::default(),
            delete_vs_edit: DeleteVsEdit::default(),
            deletions: Deletions::default(),
            drop: Vec::new(),
            mask: Vec::new(),
            map: BTreeMap::new(),
            priority: 0,
            max_delete_share: default_max_delete_share(),
        }
    }
}

impl LinkSpec {
    /// Whether contacts cross the link unchanged (no drops, masks or renames).
    pub fn is_identity(&self) -> bool {
        self.drop.is_empty() && self.mask.is_empty() && self.map.is_empty()
    }

    /// Normalizes property names and checks values.
    pub fn validate(&mut self) -> Result<(), String> {
        for list in [&mut self.drop, &mut self.mask] {
            for p in list.iter_mut() {
                *p = property_name(p)?;
            }
        }
        let mut map = BTreeMap::new();
        for (k, v) in &self.map {
            map.insert(property_name(k)?, property_name(v)?);
        }
        self.map = map;
        if !(0.0..=1.0).contains(&self.max_delete_share) {
            return Err("max_delete_share must be between 0 and 1".into());
        }
        Ok(())
    }
}

fn property_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(format!("{s:?} is not a vCard property name"))
    }
}
