//! A vdir: a folder of `.vcf` files, one contact each. The file name is the remote id; the etag
//! is the file's inode, modification time and size, so listing needs no reads.
//!
//! New files are named after the contact's UID when it is a safe file name, else a fresh UUID;
//! a create never replaces an existing file (hard link of a finished file that had no name: an
//! unnamed `O_TMPFILE` where the filesystem has them, else a temporary file in a hidden staging
//! folder), an update replaces the file by rename. Hidden files and other extensions are ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use sealsync_connector::{
    ConnectorError, Destination, Etag, Item, ItemMeta, RemoteId, Snapshot, Source,
};
use sealsync_contact::Contact;
use sealsync_contact::vcard::{VcardVersion, read_all, to_vcard};

use crate::{file_etag, io_error};

/// A written file without a name yet, with its etag and modification time.
type Unnamed = (std::fs::File, Etag, Option<i64>);

/// The hidden folder where files are written before they are moved into place.
const STAGING: &str = ".sealsync-staging";

/// A folder of vCards.
#[derive(Debug, Clone)]
pub struct Vdir {
    dir: PathBuf,
    version: VcardVersion,
    sync: bool,
    /// Whether new files start unnamed (`O_TMPFILE`, linked by `/proc/self/fd`); turned off
    /// for good the first time the filesystem refuses one.
    unnamed: Arc<AtomicBool>,
}

impl Vdir {
    /// Opens (and creates, if missing) the folder; new files are written as `version`.
    pub fn open(dir: &Path, version: VcardVersion) -> Result<Self, ConnectorError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        if !dir.is_dir() {
            return Err(ConnectorError::Config(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
            version,
            sync: false,
            unnamed: Arc::new(AtomicBool::new(Path::new("/proc/self/fd").is_dir())),
        })
    }

    /// Syncs every written file to disk before it is renamed into place (slower; survives power
    /// loss, not only a crash of sealsync).
    pub fn with_fsync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Whether new files may start unnamed (`O_TMPFILE`, the default where the system has
    /// them); off, every new file is staged in the hidden staging folder first.
    pub fn with_unnamed_files(self, on: bool) -> Self {
        self.unnamed.store(
            on && self.unnamed.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self
    }

    /// Writes `bytes` to a new file in the staging folder (hidden, inside the vdir so that a
    /// rename or link into place stays on one filesystem, and apart from the contacts so that
    /// staging does not cost a search of a large folder). Returns its path and etag.
    fn stage(&self, bytes: &[u8]) -> Result<(PathBuf, Etag, Option<i64>), ConnectorError> {
        let staging = self.dir.join(STAGING);
        let tmp = staging.join(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = (|| {
            let mut f = match std::fs::File::create_new(&tmp) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&staging)?;
                    std::fs::File::create_new(&tmp)?
                }
                other => other?,
            };
            self.fill(&mut f, bytes)
        })();
        match written {
            Ok((etag, modified)) => Ok((tmp, etag, modified)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(io_error(&tmp, &e))
            }
        }
    }

    /// Writes `bytes` to a new file of the folder that has no name yet (`O_TMPFILE`): a crash
    /// before it is linked leaves nothing behind, and it costs no staging file to remove.
    /// `None` where the filesystem has no unnamed files: the caller stages instead.
    fn write_unnamed(&self, bytes: &[u8]) -> Option<Result<Unnamed, ConnectorError>> {
        use rustix::fs::{CWD, Mode, OFlags};
        use rustix::io::Errno;
        if !self.unnamed.load(Ordering::Relaxed) {
            return None;
        }
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(CWD, &self.dir, flags, Mode::from_raw_mode(0o666)) {
            Ok(fd) => fd,
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => {
                self.unnamed.store(false, Ordering::Relaxed);
                return None;
            }
            Err(e) => return Some(Err(io_error(&self.dir, &e.into()))),
        };
        let mut file = std::fs::File::from(fd);
        Some(match self.fill(&mut file, bytes) {
            Ok((etag, modified)) => Ok((file, etag, modified)),
            Err(e) => Err(io_error(&self.dir, &e)),
        })
    }

    /// Writes `bytes` into a new file (synced to disk when the folder asks for it) and returns
    /// its etag and modification time.
    fn fill(&self, file: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<(Etag, Option<i64>)> {
        use std::io::Write as _;
        file.write_all(bytes)?;
        if self.sync {
            file.sync_all()?;
        }
        Ok(file_etag(&file.metadata()?))
    }

    /// Gives a finished file the name `base`, or `base-2`, `base-3`… when taken: `link`
    /// makes the name and fails when it exists, so a create never replaces a file.
    fn name_new(
        &self,
        base: &str,
        link: impl Fn(&Path) -> std::io::Result<()>,
    ) -> Result<RemoteId, ConnectorError> {
        let mut name = base.to_owned();
        for attempt in 0..100 {
            let path = self.dir.join(&name);
            match link(&path) {
                Ok(()) => return RemoteId::parse(&name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    name = format!("{}-{}.vcf", base.trim_end_matches(".vcf"), attempt + 2);
                }
                Err(e) => return Err(io_error(&path, &e)),
            }
        }
        Err(ConnectorError::Unavailable(format!(
            "{}: no free file name for a new contact",
            self.dir.display()
        )))
    }

    fn path(&self, id: &RemoteId) -> Result<PathBuf, ConnectorError> {
        let name = id.as_str();
        if name.contains('/') || name.starts_with('.') || !name.ends_with(".vcf") {
            return Err(ConnectorError::Invalid(format!(
                "{name:?} is not a file of this folder"
            )));
        }
        Ok(self.dir.join(name))
    }

    fn current(&self, path: &Path) -> Result<Option<ItemMeta>, ConnectorError> {
        match std::fs::metadata(path) {
            Ok(m) => {
                let (etag, modified_ms) = file_etag(&m);
                Ok(Some(ItemMeta {
                    id: id_of(path)?,
                    etag,
                    modified_ms,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path, &e)),
        }
    }

    fn read(&self, id: &RemoteId) -> Result<Item, ConnectorError> {
        let path = self.path(id)?;
        let (bytes, etag, modified_ms) = match read_file(&path) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConnectorError::NotFound);
            }
            Err(e) => return Err(io_error(&path, &e)),
        };
        let meta = ItemMeta {
            id: id.clone(),
            etag,
            modified_ms,
        };
        let (cards, rejected) = read_all(&bytes);
        let mut cards = cards.into_iter();
        match (cards.next(), cards.next()) {
            (Some(card), None) => Ok(Item {
                meta,
                contact: card.contact,
            }),
            (Some(_), Some(_)) => Err(ConnectorError::Invalid(format!(
                "{}: holds more than one vCard",
                path.display()
            ))),
            (None, _) => Err(ConnectorError::Invalid(match rejected.first() {
                Some(r) => format!("{} line {}: {}", path.display(), r.line, r.reason),
                None => format!("{}: no vCard in the file", path.display()),
            })),
        }
    }
}

/// A file's bytes with the etag of the very file read, taken before reading: a file replaced
/// or rewritten meanwhile shows another etag in the next listing, so it is read again. (An etag
/// taken by path after the read could be the replacement's, recorded with the older contents:
/// that edit would then never be pulled.)
fn read_file(path: &Path) -> std::io::Result<(Vec<u8>, Etag, Option<i64>)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    let (etag, modified_ms) = file_etag(&meta);
    Ok((bytes, etag, modified_ms))
}

fn id_of(path: &Path) -> Result<RemoteId, ConnectorError> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        ConnectorError::Invalid(format!("{}: file name is not UTF-8", path.display()))
    })?;
    RemoteId::parse(name)
}

/// Every `.vcf` file of `dir`, with its etag, without reading any. A large folder is stat'ed
/// on a few threads: a stat a file is most of a listing's time.
fn list_dir(dir: &Path) -> Result<Snapshot, ConnectorError> {
    /// Below this many files one thread is quicker than starting more.
    const PER_THREAD: usize = 4096;
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, &e))? {
        let entry = entry.map_err(|e| io_error(dir, &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".vcf") {
            continue;
        }
        entries.push(entry);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, 4)
        .min(entries.len().div_ceil(PER_THREAD))
        .max(1);
    let part = entries.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<ItemMeta>, ConnectorError>> = std::thread::scope(|scope| {
        let running: Vec<_> = entries
            .chunks(part)
            .map(|chunk| scope.spawn(move || stat_entries(chunk)))
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(ConnectorError::Unavailable("listing stopped".into())))
            })
            .collect()
    });
    let mut items = Vec::with_capacity(entries.len());
    for part in parts {
        items.extend(part?);
    }
    Ok(Snapshot { items })
}

/// The etags of `entries`' regular files.
fn stat_entries(entries: &[std::fs::DirEntry]) -> Result<Vec<ItemMeta>, ConnectorError> {
    let mut items = Vec::with_capacity(entries.len());
    for entry in entries {
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Removed between the directory read and the stat: not there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&entry.path(), &e)),
        };
        if !meta.is_file() {
            continue;
        }
        let (etag, modified_ms) = file_etag(&meta);
        let name = entry.file_name();
        items.push(ItemMeta {
            id: RemoteId::parse(name.to_str().unwrap_or_default())?,
            etag,
            modified_ms,
        });
    }
    Ok(items)
}

/// A file name for a new contact: its UID when that is a plain, safe name.
pub(crate) fn file_name_for(contact: &Contact) -> String {
    let uid = contact.uid().unwrap_or_default();
    let uid = uid.strip_prefix("urn:uuid:").unwrap_or(&uid);
    let safe = !uid.is_empty()
        && uid.len() <= 120
        && !uid.starts_with('.')
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(&b));
    if safe {
        format!("{uid}.vcf")
    } else {
        format!("{}.vcf", uuid::Uuid::new_v4())
    }
}

#[async_trait]
impl Source for Vdir {
    async fn list(&self) -> Result<Snapshot, ConnectorError> {
        // A large folder takes a stat a file: on a blocking thread, so that the run's other
        // reads (its link state, the hub) go on meanwhile.
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || list_dir(&dir))
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("listing stopped: {e}")))?
    }

    async fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, Result<Item, ConnectorError>)>, ConnectorError> {
        // Reading and parsing many files: on every core.
        let ids: Vec<&RemoteId> = ids.iter().collect();
        Ok(sealsync_connector::par::map(ids, 64, |id| {
            (id.clone(), self.read(id))
        }))
    }
}

#[async_trait]
impl Destination for Vdir {
    async fn create(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError> {
        use std::os::fd::AsRawFd as _;
        let text = to_vcard(contact, self.version);
        let base = file_name_for(contact);
        // The link is the same inode with the same modification time, so the etag is the
        // written file's.
        if let Some(unnamed) = self.write_unnamed(text.as_bytes()) {
            let (file, etag, modified_ms) = unnamed?;
            let from = format!("/proc/self/fd/{}", file.as_raw_fd());
            let id = self.name_new(&base, |to| {
                use rustix::fs::{AtFlags, CWD};
                rustix::fs::linkat(CWD, from.as_str(), CWD, to, AtFlags::SYMLINK_FOLLOW)
                    .map_err(std::io::Error::from)
            })?;
            return Ok(ItemMeta {
                id,
                etag,
                modified_ms,
            });
        }
        let (tmp, etag, modified_ms) = self.stage(text.as_bytes())?;
        let id = self.name_new(&base, |to| std::fs::hard_link(&tmp, to));
        let _ = std::fs::remove_file(&tmp);
        Ok(ItemMeta {
            id: id?,
            etag,
            modified_ms,
        })
    }

    async fn update(
        &self,
        id: &RemoteId,
        expected: &Etag,
        contact: &Contact,
    ) -> Result<ItemMeta, ConnectorError> {
        let path = self.path(id)?;
        match self.current(&path)? {
            None => return Err(ConnectorError::NotFound),
            Some(m) if &m.etag != expected => return Err(ConnectorError::Conflict),
            Some(_) => {}
        }
        let (tmp, etag, modified_ms) = self.stage(to_vcard(contact, self.version).as_bytes())?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_error(&path, &e));
        }
        Ok(ItemMeta {
            id: id.clone(),
            etag,
            modified_ms,
        })
    }

    async fn delete(&self, id: &RemoteId, expected: &Etag) -> Result<(), ConnectorError> {
        let path = self.path(id)?;
        match self.current(&path)? {
            None => return Ok(()),
            Some(m) if &m.etag != expected => return Err(ConnectorError::Conflict),
            Some(_) => {}
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    async fn flush(&self) -> Result<(), ConnectorError> {
        if self.sync {
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(&self.dir, &e))?;
        }
        Ok(())
    }
}
