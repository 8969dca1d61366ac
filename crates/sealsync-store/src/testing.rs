//! Test support: fresh databases for the shared store suite.
//!
//! PostgreSQL tests read `SEALSYNC_TEST_DATABASE_URL`; each gets a database of its own, named
//! by a random id, dropped by nobody (the server is a throwaway test instance).

use secrecy::SecretString;

use crate::{StoreConfig, StoreError};

/// The variable naming a PostgreSQL server for tests.
pub const TEST_DATABASE_ENV: &str = "SEALSYNC_TEST_DATABASE_URL";

/// A SQLite configuration in `dir`.
pub fn sqlite_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        database_url: SecretString::from(format!(
            "sqlite://{}?mode=rwc",
            dir.join("sealsync.db").display()
        )),
        keystore_url: SecretString::from(format!(
            "sqlite://{}?mode=rwc",
            dir.join("keystore.db").display()
        )),
        max_connections: 4,
    }
}

/// A fresh PostgreSQL database, or `None` when no test server is configured.
pub async fn postgres_config() -> Result<Option<StoreConfig>, StoreError> {
    let Ok(base) = std::env::var(TEST_DATABASE_ENV) else {
        return Ok(None);
    };
    let name = format!("sealsync_test_{}", uuid_like());
    sqlx::any::install_default_drivers();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
        .await
        .map_err(StoreError::connect)?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .map_err(StoreError::db)?;
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => {
            return Err(StoreError::Config(
                "test database URL has no database name".into(),
            ));
        }
    };
    Ok(Some(StoreConfig {
        database_url: SecretString::from(url.clone()),
        keystore_url: SecretString::from(url),
        max_connections: 4,
    }))
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    let _ = sealsync_crypto::random_bytes(&mut b);
    hex::encode(b)
}
