//! Key providers against real services.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

#[cfg(feature = "aws-kms")]
mod kms;
