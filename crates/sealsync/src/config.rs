//! Configuration: defaults < TOML file (`--config`) < environment (`SEALSYNC_…`, `__` between
//! levels) < command-line flags.
//!
//! Unknown keys are an error, wherever they come from, so a typo never silently falls back to a
//! default. Every secret setting `X` may instead be given as `X_FILE`, a path to a file holding
//! it (for container secrets); giving both is an error.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use secrecy::SecretString;
use serde::Deserialize;

/// Environment variables with the prefix that are not configuration keys (besides `TEST_*`,
/// which the test suite uses).
const NOT_CONFIG: &[&str] = &["config"];

/// The whole configuration.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where sealsync keeps its database, keystore and keyfile.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub contacts: ContactsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// The master key itself (base64), for `keys.provider = "env"`.
    #[serde(default)]
    pub master_key: Option<SecretString>,
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:///path/db` or `postgres://…`; default: SQLite in the data directory.
    #[serde(default)]
    pub url: Option<SecretString>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Where wrapped keys live; default: `keystore.db` beside the SQLite database, or the
    /// `sealsync_keys` schema of the PostgreSQL database.
    #[serde(default)]
    pub keystore_url: Option<SecretString>,
    #[serde(default)]
    pub keystore_url_file: Option<PathBuf>,
    #[serde(default)]
    pub max_connections: Option<u32>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderKind {
    /// A keyfile in the data directory (default).
    #[default]
    Local,
    /// `master_key` / `SEALSYNC_MASTER_KEY`.
    Env,
    /// AWS KMS (`keys.kms_*`); needs a build with the `aws-kms` feature.
    #[serde(rename = "aws-kms")]
    AwsKms,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "aws-kms"), allow(dead_code))] // the kms_* keys are read by that feature
pub struct KeysConfig {
    #[serde(default)]
    pub provider: KeyProviderKind,
    /// The local keyfile; default `DATA_DIR/master.key`.
    #[serde(default)]
    pub keyfile: Option<PathBuf>,
    /// AWS KMS key id, ARN or alias.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub kms_region: Option<String>,
    /// Another KMS endpoint (VPC endpoint, test server).
    #[serde(default)]
    pub kms_endpoint: Option<String>,
    /// Static credentials; default: the standard AWS credential chain.
    #[serde(default)]
    pub kms_access_key_id: Option<String>,
    #[serde(default)]
    pub kms_secret_access_key: Option<SecretString>,
    #[serde(default)]
    pub kms_secret_access_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ContactsConfig {
    /// Region for phone numbers written without a country code (ISO 3166: `US`, `DE`).
    #[serde(default)]
    pub default_region: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or a tracing filter; default `warn`.
    #[serde(default)]
    pub level: Option<String>,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
}

impl Config {
    /// Loads `file` (if given) and the environment, then resolves `_FILE` secrets.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} not found", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed("SEALSYNC_")
                .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_"))
                .split("__")
                .ignore(NOT_CONFIG),
        );
        let mut config: Config = figment.extract().map_err(|e| {
            // figment names the key and where it came from; keep it to one line.
            anyhow::anyhow!(
                "invalid configuration: {}",
                e.to_string().replace('\n', "; ")
            )
        })?;
        config.resolve_files()?;
        if let Some(region) = &config.contacts.default_region
            && !sealsync_contact::normalize::is_known_region(region)
        {
            {
                bail!(
                    "invalid configuration: contacts.default_region {region:?} is not an ISO 3166 region code"
                );
            }
        }
        Ok(config)
    }

    fn resolve_files(&mut self) -> anyhow::Result<()> {
        resolve_secret(
            "master_key",
            &mut self.master_key,
            self.master_key_file.take(),
        )?;
        resolve_secret(
            "database.url",
            &mut self.database.url,
            self.database.url_file.take(),
        )?;
        resolve_secret(
            "database.keystore_url",
            &mut self.database.keystore_url,
            self.database.keystore_url_file.take(),
        )?;
        resolve_secret(
            "keys.kms_secret_access_key",
            &mut self.keys.kms_secret_access_key,
            self.keys.kms_secret_access_key_file.take(),
        )?;
        Ok(())
    }

    /// The data directory: flag, else configuration, else `./sealsync-data`.
    pub fn data_dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("sealsync-data"))
    }
}

fn resolve_secret(
    name: &str,
    value: &mut Option<SecretString>,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let Some(path) = file else { return Ok(()) };
    if value.is_some() {
        bail!("invalid configuration: both {name} and {name}_file are set; give one");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {name}_file {}", path.display()))?;
    *value = Some(SecretString::from(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn file_then_env_precedence() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "data_dir = \"/from/file\"\n[contacts]\ndefault_region = \"DE\"\n[log]\nlevel = \"info\"\n",
            )?;
            jail.set_env("SEALSYNC_DATA_DIR", "/from/env");
            jail.set_env("SEALSYNC_LOG__LEVEL", "debug");
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.data_dir(None), PathBuf::from("/from/env"));
            assert_eq!(
                c.data_dir(Some(Path::new("/from/flag"))),
                PathBuf::from("/from/flag")
            );
            assert_eq!(c.log.level.as_deref(), Some("debug"));
            assert_eq!(c.contacts.default_region.as_deref(), Some("DE"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected_from_file_and_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[database]\nulr = \"x\"\n")?;
            let err = Config::load(Some(Path::new("c.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("ulr"), "{err}");
            jail.create_file("ok.toml", "")?;
            jail.set_env("SEALSYNC_DATBASE__URL", "x");
            let err = Config::load(Some(Path::new("ok.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("datbase"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn not_config_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SEALSYNC_TEST_DATABASE_URL", "postgres://x/y");
            jail.set_env("SEALSYNC_CONFIG", "whatever.toml");
            Config::load(None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn secret_file_variant() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("key.txt", "c2VjcmV0\n")?;
            jail.create_file("db.txt", "sqlite:///tmp/x.db\n")?;
            jail.set_env("SEALSYNC_MASTER_KEY_FILE", "key.txt");
            jail.set_env("SEALSYNC_DATABASE__URL_FILE", "db.txt");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.master_key
                    .as_ref()
                    .map(|s| s.expose_secret().to_owned())
                    .as_deref(),
                Some("c2VjcmV0")
            );
            assert_eq!(
                c.database
                    .url
                    .as_ref()
                    .map(|s| s.expose_secret().to_owned())
                    .as_deref(),
                Some("sqlite:///tmp/x.db")
            );
            jail.set_env("SEALSYNC_MASTER_KEY", "inline");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("both master_key and master_key_file"), "{err}");
            assert!(
                !err.contains("inline") && !err.contains("c2VjcmV0"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_region_is_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SEALSYNC_CONTACTS__DEFAULT_REGION", "XX");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }
}
