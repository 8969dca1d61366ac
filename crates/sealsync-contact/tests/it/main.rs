//! Integration tests for the contact codecs: the fixture corpus, properties, CSV layouts.

mod fixtures;
mod props;
