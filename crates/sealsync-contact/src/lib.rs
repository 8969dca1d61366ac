//! Contacts: the canonical model and its codecs.
//!
//! - [`model`]: a contact is an ordered list of vCard 4.0 properties, kept lossless (unknown and
//!   `X-` properties and parameters survive), with typed accessors for the common ones.
//! - [`vcard`]: streaming reader for vCard 2.1, 3.0 and 4.0 with per-card errors and memory
//!   limits; writer for 3.0 and 4.0.
//! - [`jcard`]: RFC 7095 JSON form.
//! - [`csv`]: Google and Outlook layouts and user mappings, streaming, formula-injection safe.
//! - [`normalize`] and [`hash`]: matching keys and change detection.
//!
//! This crate does no I/O of its own beyond the readers and writers it is handed, and never puts
//! contact data in an error message: errors say where and what, not which value.

mod calling_codes;
pub mod check;
pub mod csv;
pub mod hash;
pub mod jcard;
pub mod model;
pub mod normalize;
pub mod vcard;

pub use hash::ContentHash;
pub use model::{Address, Contact, Param, Property, StructuredName};
pub use normalize::{Email, Phone};
pub use vcard::{Card, Rejected, VcardReader, VcardVersion};
