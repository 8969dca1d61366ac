//! The API over real HTTPS: a server on port 0 with a fresh database, a real client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod connect;
mod deliveries;
mod grants;
mod harness;
mod hooks;
mod matrix;
mod sso;
mod sync_ops;
