//! Integration tests for the contact codecs: the fixture corpus, properties, CSV layouts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

mod fixtures;
mod fuzz_corpus;
mod props;
