//! The audit log's suite: every test runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL variants (`pg::*`) need `SEALSYNC_TEST_DATABASE_URL` and get a database of their
//! own; without it they print that they were skipped and pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

mod suite;

use std::sync::Arc;

use sealsync_crypto::LocalKeyfile;
use sealsync_store::testing::{postgres_config, sqlite_config};
use sealsync_store::{Hub, Store, StoreConfig};

/// Where a test's database lives.
#[derive(Debug, Clone, Copy)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub async fn config_for(db: Db, dir: &std::path::Path) -> Option<StoreConfig> {
    match db {
        Db::Sqlite => Some(sqlite_config(dir)),
        Db::Postgres => {
            let config = postgres_config().await.expect("test PostgreSQL answers");
            if config.is_none() {
                eprintln!("skipped: SEALSYNC_TEST_DATABASE_URL is not set");
            }
            config
        }
    }
}

/// A hub on a fresh database, with a fresh keyfile in `dir`: the installation's audit key
/// comes from its keystore, as in production.
pub async fn hub_on(config: &StoreConfig, dir: &std::path::Path) -> Hub {
    let store = Store::open(config).await.expect("store opens");
    let keyfile = LocalKeyfile::create(&dir.join("master.key")).expect("keyfile");
    Hub::new(store, Arc::new(keyfile))
}

/// Declares `sqlite::NAME` and `pg::NAME` tests running `suite::NAME`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let config = super::config_for(super::Db::Sqlite, dir.path()).await.unwrap();
                    super::suite::$name(config, dir.path()).await;
                }
            )*
        }
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let Some(config) = super::config_for(super::Db::Postgres, dir.path()).await else { return };
                    super::suite::$name(config, dir.path()).await;
                }
            )*
        }
    };
}

both!(
    appended_entries_verify_and_read_back,
    edited_entry_is_named,
    removed_entry_is_named,
    swapped_entries_are_reordered,
    removed_newest_entry_is_noticed_through_the_head,
    forged_head_is_noticed,
    missing_head_is_noticed_and_stops_appends,
    concurrent_appends_from_two_processes_form_one_chain,
    verifying_during_appends_finds_nothing,
    entries_under_rotated_keys_verify,
    stored_entries_hold_no_email,
    a_rolled_back_log_is_told_by_an_earlier_anchor,
);
