//! What every command needs: configuration, the data directory, the key provider and the hub.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use sealsync_crypto::{EnvKeyProvider, KeyProvider, LocalKeyfile};
use sealsync_store::{Hub, Store, StoreConfig};
use sealsync_types::WorkspaceName;
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::{Config, KeyProviderKind};

/// Configuration and locations for one command.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub data_dir: PathBuf,
}

impl Context {
    pub fn new(config: Config, data_dir_flag: Option<&Path>) -> Self {
        let data_dir = config.data_dir(data_dir_flag);
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        Self { config, data_dir }
    }

    pub fn keyfile_path(&self) -> PathBuf {
        self.config
            .keys
            .keyfile
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// Whether the configured database is the embedded SQLite one in the data directory.
    pub fn uses_embedded_database(&self) -> bool {
        self.config.database.url.is_none()
    }

    /// Where the data and keystore live. `create` lets SQLite create missing files.
    pub fn store_config(&self, create: bool) -> StoreConfig {
        let mode = if create { "rwc" } else { "rw" };
        let sqlite = |file: &str| {
            SecretString::from(format!(
                "sqlite://{}?mode={mode}",
                self.data_dir.join(file).display()
            ))
        };
        let database_url = self
            .config
            .database
            .url
            .clone()
            .unwrap_or_else(|| sqlite("sealsync.db"));
        let keystore_url = match (
            &self.config.database.keystore_url,
            &self.config.database.url,
        ) {
            (Some(k), _) => k.clone(),
            (None, Some(url)) if !url.expose_secret().starts_with("sqlite:") => url.clone(),
            _ => sqlite("keystore.db"),
        };
        StoreConfig {
            database_url,
            keystore_url,
            max_connections: self.config.database.max_connections.unwrap_or(8),
        }
    }

    /// The configured key provider; with `create`, a missing local keyfile is made (and the
    /// second value says so).
    pub async fn provider(&self, create: bool) -> anyhow::Result<(Arc<dyn KeyProvider>, bool)> {
        match self.config.keys.provider {
            KeyProviderKind::Local => {
                let path = self.keyfile_path();
                if create && !path.exists() {
                    let kf = LocalKeyfile::create(&path)?;
                    return Ok((Arc::new(kf), true));
                }
                Ok((Arc::new(LocalKeyfile::open(&path)?), false))
            }
            KeyProviderKind::Env => {
                let Some(secret) = &self.config.master_key else {
                    bail!(
                        "keys.provider is \"env\" but no master key is set: set SEALSYNC_MASTER_KEY or SEALSYNC_MASTER_KEY_FILE"
                    );
                };
                Ok((Arc::new(EnvKeyProvider::from_secret(secret)?), false))
            }
            KeyProviderKind::AwsKms => Ok((self.aws_kms().await?, false)),
        }
    }

    #[cfg(feature = "aws-kms")]
    async fn aws_kms(&self) -> anyhow::Result<Arc<dyn KeyProvider>> {
        let k = &self.config.keys;
        let Some(key_id) = &k.kms_key_id else {
            bail!("keys.provider is \"aws-kms\" but keys.kms_key_id is not set");
        };
        let credentials = match (&k.kms_access_key_id, &k.kms_secret_access_key) {
            (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            (None, None) => None,
            _ => {
                bail!("set both keys.kms_access_key_id and keys.kms_secret_access_key, or neither")
            }
        };
        let config = sealsync_crypto::AwsKmsConfig {
            key_id: key_id.clone(),
            region: k.kms_region.clone(),
            endpoint: k.kms_endpoint.clone(),
            max_attempts: None,
            credentials,
        };
        Ok(Arc::new(
            sealsync_crypto::AwsKmsProvider::new(&config).await?,
        ))
    }

    #[cfg(not(feature = "aws-kms"))]
    async fn aws_kms(&self) -> anyhow::Result<Arc<dyn KeyProvider>> {
        bail!("this sealsync was built without AWS KMS support; build it with `--features aws-kms`")
    }

    /// The hub of an initialised installation.
    pub async fn hub(&self) -> anyhow::Result<Hub> {
        if self.uses_embedded_database() && !self.data_dir.join("sealsync.db").exists() {
            bail!(
                "no sealsync data in {}; run `sealsync init` (or `sealsync quickstart`) first, or pass --data-dir",
                self.data_dir.display()
            );
        }
        let (provider, _) = self.provider(false).await?;
        let store = Store::open(&self.store_config(false))
            .await
            .context("cannot open the database")?;
        Ok(Hub::new(store, provider))
    }

    pub fn default_region(&self) -> Option<String> {
        self.config.contacts.default_region.clone()
    }
}

/// A workspace name from a flag, `default` when absent.
pub fn workspace_name(arg: Option<&str>) -> anyhow::Result<WorkspaceName> {
    match arg {
        None => Ok(WorkspaceName::default_workspace()),
        Some(s) => WorkspaceName::parse(s).with_context(|| format!("invalid workspace name {s:?}")),
    }
}
