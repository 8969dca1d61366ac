//! The connectors: each module reads and writes one kind of external contact collection through
//! the [`sealsync_connector`] contract.
//!
//! - [`vdir`]: a folder of `.vcf` files, one contact per file (the layout vdirsyncer, khard and
//!   many phones' exports use); writes are atomic renames.
//! - [`csv`]: one CSV file in a Google, Outlook or user-mapped layout, read whole and written
//!   back atomically.
//! - [`sql`]: one table of a SQLite or PostgreSQL database through a column mapping; writes
//!   check the row's etag in the same transaction.
//! - [`carddav`]: a CardDAV address book, through the egress policy; conditional writes.
//! - [`oauth`]: authorization-code grants with external apps, and their tokens refreshed.
//! - [`webhook`]: signed inbound webhooks and the contacts they carry; [`webhook_out`]: signed
//!   outbound deliveries, one attempt at a time.
//!
//! Connectors never see the hub or keys and never put contact data in an error: errors name the
//! file and line (or table and row id), never a value, and never a database URL.

pub mod carddav;
pub mod csv;
pub mod oauth;
pub mod sql;
pub mod testing;
pub mod vdir;
pub mod webhook;
pub mod webhook_out;

use std::path::Path;

use sealsync_connector::ConnectorError;

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed over.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> Result<(), ConnectorError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".sealsync-{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io_error(path, &e))
}

/// An I/O error naming the file and the kind of failure.
pub(crate) fn io_error(path: &Path, e: &std::io::Error) -> ConnectorError {
    ConnectorError::Unavailable(format!("{}: {}", path.display(), e.kind()))
}

/// A file's etag: inode, modification time (ns) and size. An atomic rename changes the inode,
/// an in-place edit the time or size.
pub(crate) fn file_etag(meta: &std::fs::Metadata) -> (sealsync_connector::Etag, Option<i64>) {
    use std::fmt::Write as _;
    use std::os::unix::fs::MetadataExt as _;
    let ns = meta
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec());
    // Sized once: a listing makes one per file.
    let mut etag = String::with_capacity(48);
    let _ = write!(etag, "{:x}-{:x}-{:x}", meta.ino(), ns, meta.len());
    (sealsync_connector::Etag::new(etag), Some(ns / 1_000_000))
}
