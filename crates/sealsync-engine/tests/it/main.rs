//! Sync scenarios on real vdir folders, CSV files and a real sealed store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod crash;
mod harness;
mod outbox;
mod props;
mod scenarios;
mod sql;
