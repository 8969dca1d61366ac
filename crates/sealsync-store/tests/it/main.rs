//! The shared store suite: every test runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL variants (`pg_*`) need `SEALSYNC_TEST_DATABASE_URL`; the test script runs them
//! whenever it is set and reports them as skipped when it is not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

mod suite;

use std::sync::Arc;

use sealsync_crypto::LocalKeyfile;
use sealsync_store::testing::{postgres_config, sqlite_config};
use sealsync_store::{Hub, Store, StoreConfig};

/// A hub on a fresh database, with a fresh keyfile in `dir`.
pub async fn hub_on(config: &StoreConfig, dir: &std::path::Path) -> Hub {
    let store = Store::open(config).await.expect("store opens");
    let keyfile = LocalKeyfile::create(&dir.join("master.key")).expect("keyfile");
    Hub::new(store, Arc::new(keyfile))
}

/// Where a test's database lives.
#[derive(Debug)]
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

/// Declares `sqlite_NAME` and `pg_NAME` tests running `suite::NAME`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let config = super::config_for(super::Db::Sqlite, dir.path()).await.unwrap();
                    super::suite::$name(config, dir.path(), super::Db::Sqlite).await;
                }
            )*
        }
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let Some(config) = super::config_for(super::Db::Postgres, dir.path()).await else { return };
                    super::suite::$name(config, dir.path(), super::Db::Postgres).await;
                }
            )*
        }
    };
}

both!(
    import_export_round_trip,
    import_sees_contacts_another_writer_stored_meanwhile,
    reimport_is_unchanged_and_edits_update,
    nothing_sensitive_in_stored_bytes,
    swapped_ciphertexts_fail_integrity,
    find_by_blind_index,
    deleting_a_workspace_shreds_its_keys,
    wrong_master_key_is_a_clear_error,
    rotation_under_concurrent_writes,
    reencryption_resumes_after_a_crash,
    rotation_moves_configurations_secrets_and_events_too,
    master_key_rotation_rewraps_every_key,
    import_batches_see_earlier_uncommitted_ones,
    new_rows_with_taken_ids_are_upserted,
    change_clocks_move_with_every_write,
    rewrites_keep_what_stays_and_replace_the_rest,
    interrupting_runs_closes_only_the_links_running_ones,
    pruning_hook_history_keeps_live_items,
);
