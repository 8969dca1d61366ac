//! Every connector passes the one compliance suite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod carddav;
mod csv;
mod sql;
mod vdir;
