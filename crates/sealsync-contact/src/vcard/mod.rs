//! vCard (RFC 2425/2426/6350 and the 2.1 dialect) reading and writing.
//!
//! Reading is version-agnostic and lenient where real exporters are sloppy (2.1 bare types,
//! undeclared Windows-1252, missing `VERSION`), strict where guessing would corrupt data (bad
//! quoted-printable, bad base64, a line with no `:`): such a card is rejected with its line and a
//! reason, and the rest of the input is still read.

pub mod read;
pub mod write;

pub use read::{Card, Limits, Rejected, VcardReader, read_all};
pub use write::{VcardVersion, to_vcard, write_card};
