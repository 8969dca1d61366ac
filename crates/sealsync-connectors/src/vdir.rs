//! A vdir: a folder of `.vcf` files, one contact each. The file name is the remote id; the etag
//! is the file's inode, modification time and size, so listing needs no reads.
//!
//! New files are named after the contact's UID when it is a safe file name, else a fresh UUID;
//! a create never replaces an existing file (hard link of a finished file that had no name: an
//! unnamed `O_TMPFILE` where the filesystem has them, else a temporary file in a hidden staging
//! folder), an update replaces the file by rename. Hidden files and other extensions are ignored.
//!
//! An update swaps the new file with the old one (`renameat2` with `RENAME_EXCHANGE`) and a
//! delete moves the file into the staging folder; either way the file moved aside is checked
//! against the expected etag (a file replaced after the check is put back and reported as a
//! conflict). The files moved aside are removed on a thread of its own once the batch is
//! flushed, while the engine records it: removing a file frees its blocks, which can wait on the
//! device (`discard`), and removals beside the batch's writes would contend with them for the
//! folder (and, on ext4 without a journal, each new file would skip the inodes just freed). The
//! batch's next write, and [`Destination::finish`], wait for them to be gone. Files moved aside
//! and left by a crash are removed when the folder is next opened.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use sealsync_connector::{
    ConnectorError, Destination, Etag, Item, ItemMeta, RemoteId, Snapshot, Source,
};
use sealsync_contact::Contact;
use sealsync_contact::vcard::{VcardVersion, read_all, to_vcard};

use crate::{file_etag, io_error};

/// A written file without a name yet, with its etag and modification time.
type Unnamed = (std::fs::File, Etag, Option<i64>);

/// The hidden folder where files are written before they are moved into place, and where files
/// moved aside wait to be removed.
const STAGING: &str = ".sealsync-staging";

/// Threads that remove the files a batch moved aside. Removing a file waits on the device
/// (`discard` frees its blocks) once the folder's lock is let go, so removals on several
/// threads wait at the same time: 1,000 removals took 77–92 ms on one thread here, 32–51 ms on
/// four, 27–28 ms on eight.
const REMOVERS: usize = 8;

/// Threads that write a part's new files at once. Creating 30,000 files in one folder took
/// 1.8 s on one thread here and 1.05 s on two; four gained nothing more, and where many files
/// were removed moments before (ext4 without a journal scans past each freed inode) more threads
/// only contend: 4.5 s on two, 11.5 s on four, against 1.9 s on one.
const WRITERS: usize = 2;

/// A file of the staging folder unchanged for this long belongs to no write going on: it was
/// left by a crash, and is removed when the folder is opened.
const STALE_STAGED: Duration = Duration::from_secs(60);

/// A folder of vCards.
#[derive(Debug, Clone)]
pub struct Vdir {
    dir: PathBuf,
    version: VcardVersion,
    sync: bool,
    /// Whether new files start unnamed (`O_TMPFILE`, linked by `/proc/self/fd`); turned off
    /// for good the first time the filesystem refuses one.
    unnamed: Arc<AtomicBool>,
    /// Whether updates swap files (`RENAME_EXCHANGE`); turned off for good the first time the
    /// filesystem refuses one.
    swaps: Arc<AtomicBool>,
    /// Removes the files moved aside.
    reaper: Arc<Reaper>,
}

/// Removes files on a thread of its own: those queued by [`Reaper::remove`] once
/// [`Reaper::start`] hands them over; [`Reaper::wait`] returns once every file handed over is
/// gone. Files still queued when the last handle goes are handed over then.
#[derive(Debug, Default)]
struct Reaper {
    sender: OnceLock<Option<mpsc::Sender<Vec<PathBuf>>>>,
    queued: Mutex<Vec<PathBuf>>,
    pending: Arc<(Mutex<usize>, Condvar)>,
}

impl Reaper {
    /// Queues a file to remove.
    fn remove(&self, path: PathBuf) {
        lock(&self.queued).push(path);
    }

    /// Hands the queued files to the thread.
    fn start(&self) {
        let paths = std::mem::take(&mut *lock(&self.queued));
        if paths.is_empty() {
            return;
        }
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Vec<PathBuf>>();
            let pending = self.pending.clone();
            std::thread::Builder::new()
                .name("vdir-reaper".into())
                .spawn(move || {
                    // Ends when the folder's last handle is dropped and the queue is empty.
                    for paths in rx {
                        sealsync_connector::par::map_on(REMOVERS, paths, 64, |path| {
                            // Best effort: what stays is removed when the folder is next opened.
                            let _ = std::fs::remove_file(&path);
                            done(&pending);
                        });
                    }
                })
                .ok()
                .map(|_| tx)
        });
        *lock(&self.pending.0) += paths.len();
        let unsent = match sender {
            Some(tx) => tx.send(paths).err().map(|e| e.0),
            None => Some(paths),
        };
        // No thread to hand them to: removed here.
        for path in unsent.unwrap_or_default() {
            let _ = std::fs::remove_file(path);
            done(&self.pending);
        }
    }

    /// Whether files handed over are still there.
    fn busy(&self) -> bool {
        *lock(&self.pending.0) > 0
    }

    /// Blocks until every file handed over is removed.
    fn wait(&self) {
        let (count, idle) = &*self.pending;
        let mut n = lock(count);
        while *n > 0 {
            n = idle
                .wait(n)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.start();
    }
}

/// One file handed to a [`Reaper`] is gone.
fn done(pending: &(Mutex<usize>, Condvar)) {
    let mut n = lock(&pending.0);
    *n -= 1;
    if *n == 0 {
        pending.1.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        remove_stale_staged(&dir.join(STAGING), STALE_STAGED);
        Ok(Self {
            dir: dir.to_owned(),
            version,
            sync: false,
            unnamed: Arc::new(AtomicBool::new(Path::new("/proc/self/fd").is_dir())),
            swaps: Arc::new(AtomicBool::new(true)),
            reaper: Arc::default(),
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

    /// Whether updates may swap the new file with the old one (`RENAME_EXCHANGE`, the default
    /// where the filesystem has it); off, the new file is renamed over the old one.
    pub fn with_swaps(self, on: bool) -> Self {
        self.swaps
            .store(on && self.swaps.load(Ordering::Relaxed), Ordering::Relaxed);
        self
    }

    /// Waits until the files handed to the reaper are gone: a batch's writes do not start
    /// beside the removal of the files the last one moved aside.
    async fn removed(&self) -> Result<(), ConnectorError> {
        if self.reaper.busy() {
            let reaper = self.reaper.clone();
            tokio::task::spawn_blocking(move || reaper.wait())
                .await
                .map_err(|e| {
                    ConnectorError::Unavailable(format!("removing old files stopped: {e}"))
                })?;
        }
        Ok(())
    }

    /// A fresh name in the staging folder (which may not exist yet).
    fn staged_name(&self) -> PathBuf {
        self.dir
            .join(STAGING)
            .join(format!("{}.tmp", uuid::Uuid::new_v4().simple()))
    }

    /// Puts the staged file `tmp` in the place of `path`, whose etag must be `expected`.
    /// The old file ends up at `tmp` and is removed off this thread. Where the filesystem has
    /// no swaps, `tmp` is renamed over `path`.
    fn swap_in(&self, tmp: &Path, path: &Path, expected: &Etag) -> Result<(), ConnectorError> {
        use rustix::fs::{CWD, RenameFlags};
        use rustix::io::Errno;
        let fail = |e: &std::io::Error| {
            let _ = std::fs::remove_file(tmp);
            io_error(path, e)
        };
        if self.swaps.load(Ordering::Relaxed) {
            match rustix::fs::renameat_with(CWD, tmp, CWD, path, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    // `tmp` is the file that was in place: if it is not the one checked, it was
                    // replaced meanwhile, and goes back.
                    let moved = std::fs::symlink_metadata(tmp).map_err(|e| fail(&e))?;
                    if &file_etag(&moved).0 != expected {
                        rustix::fs::renameat_with(CWD, tmp, CWD, path, RenameFlags::EXCHANGE)
                            .map_err(|e| fail(&e.into()))?;
                        let _ = std::fs::remove_file(tmp);
                        return Err(ConnectorError::Conflict);
                    }
                    self.reaper.remove(tmp.to_owned());
                    return Ok(());
                }
                Err(Errno::NOENT) if !path.exists() => {
                    let _ = std::fs::remove_file(tmp);
                    return Err(ConnectorError::NotFound);
                }
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    self.swaps.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(fail(&e.into())),
            }
        }
        std::fs::rename(tmp, path).map_err(|e| fail(&e))
    }

    /// Moves the file at `path`, whose etag must be `expected`, out of the folder and removes it
    /// off this thread.
    fn move_out(&self, path: &Path, expected: &Etag) -> Result<(), ConnectorError> {
        use rustix::fs::{CWD, RenameFlags};
        let aside = self.staged_name();
        let mut moved = std::fs::rename(path, &aside);
        let staging = self.dir.join(STAGING);
        if matches!(&moved, Err(e) if e.kind() == std::io::ErrorKind::NotFound) && !staging.is_dir()
        {
            std::fs::create_dir_all(&staging).map_err(|e| io_error(&staging, &e))?;
            moved = std::fs::rename(path, &aside);
        }
        match moved {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(path, &e)),
        }
        let moved = std::fs::symlink_metadata(&aside).map_err(|e| io_error(&aside, &e))?;
        if &file_etag(&moved).0 != expected {
            // Replaced after the check: back in place, or beside it when the name was taken
            // again meanwhile.
            let back = rustix::fs::renameat_with(CWD, &aside, CWD, path, RenameFlags::NOREPLACE);
            if back.is_err() {
                let base = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("contact.vcf");
                self.name_new(base, |to| std::fs::hard_link(&aside, to))?;
                let _ = std::fs::remove_file(&aside);
            }
            return Err(ConnectorError::Conflict);
        }
        self.reaper.remove(aside);
        Ok(())
    }

    /// Writes `bytes` to a new file in the staging folder (hidden, inside the vdir so that a
    /// rename or link into place stays on one filesystem, and apart from the contacts so that
    /// staging does not cost a search of a large folder). Returns its path and etag.
    fn stage(&self, bytes: &[u8]) -> Result<(PathBuf, Etag, Option<i64>), ConnectorError> {
        let tmp = self.staged_name();
        let written = (|| {
            let mut f = match std::fs::File::create_new(&tmp) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(self.dir.join(STAGING))?;
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

    /// Writes a new file for `contact` (the caller has waited for the removals, see
    /// [`Vdir::removed`]); safe on several threads at once: each name is taken by a link that
    /// fails when the name exists.
    fn create_now(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError> {
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

    /// The file of `id`: its path, bytes and etag.
    fn read(&self, id: &RemoteId) -> Result<(PathBuf, Vec<u8>, ItemMeta), ConnectorError> {
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
        Ok((path, bytes, meta))
    }

    /// The one vCard of a file read by [`Vdir::read`].
    fn parse((path, bytes, meta): (PathBuf, Vec<u8>, ItemMeta)) -> Result<Item, ConnectorError> {
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

/// Removes the files of the staging folder unchanged for `age` (left by a crash), best effort.
fn remove_stale_staged(staging: &Path, age: Duration) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    for entry in entries.flatten() {
        // The change time moves with every rename: a file moved aside a moment ago is new.
        let stale = entry.metadata().is_ok_and(|m| {
            m.is_file() && Duration::new(m.ctime().max(0).unsigned_abs(), 0) + age <= now
        });
        if stale {
            let _ = std::fs::remove_file(entry.path());
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

/// Every `.vcf` file of `dir`, with its etag, without reading any. In a large folder the
/// entries read so far are stat'ed on a few threads while the folder is still being read: a stat
/// a file is most of a listing's time.
fn list_dir(dir: &Path) -> Result<Snapshot, ConnectorError> {
    /// Entries handed to a thread at a time; a folder of fewer is stat'ed on this one. (Two in
    /// debug builds, so that tests list on several threads.)
    const PART: usize = if cfg!(debug_assertions) { 2 } else { 4096 };
    type Part = (usize, Vec<std::fs::DirEntry>);
    type Stated = Vec<(usize, Result<Vec<ItemMeta>, ConnectorError>)>;
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, 4);
    let read = std::fs::read_dir(dir).map_err(|e| io_error(dir, &e))?;
    let (parts, queue) = mpsc::channel::<Part>();
    let queue = Mutex::new(queue);
    // Takes parts off the queue until it is closed and empty.
    let work = || {
        let mut out = Stated::new();
        loop {
            let next = lock(&queue).recv();
            let Ok((at, entries)) = next else { return out };
            out.push((at, stat_entries(&entries)));
        }
    };
    let stated: Result<Stated, ConnectorError> = std::thread::scope(|scope| {
        let mut running = Vec::new();
        let mut part = Vec::with_capacity(PART);
        let mut sent = 0;
        for entry in read {
            let entry = entry.map_err(|e| io_error(dir, &e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !name.ends_with(".vcf") {
                continue;
            }
            part.push(entry);
            if part.len() == PART {
                if running.len() < threads {
                    running.push(scope.spawn(work));
                }
                let full = std::mem::replace(&mut part, Vec::with_capacity(PART));
                // The threads end only once the queue is closed, below.
                let _ = parts.send((sent, full));
                sent += 1;
            }
        }
        let mut stated = vec![(sent, stat_entries(&part))];
        drop(parts);
        stated.extend(work());
        for t in running {
            let more = t
                .join()
                .map_err(|_| ConnectorError::Unavailable("listing stopped".into()))?;
            stated.extend(more);
        }
        Ok(stated)
    });
    let mut stated = stated?;
    stated.sort_unstable_by_key(|(at, _)| *at);
    let mut items = Vec::new();
    for (_, part) in stated {
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

    async fn list_behind(&self) -> Result<sealsync_connector::Listing, ConnectorError> {
        // On a thread of its own at the lowest priority; the threads it starts to stat
        // entries take its priority.
        let dir = self.dir.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("vdir-list-behind".into())
            .spawn(move || {
                // Best effort: a listing at the usual priority is as correct. (On Linux a nice
                // value is the thread's own.)
                let _ = rustix::process::setpriority_process(None, 19);
                let _ = tx.send(list_dir(&dir));
            })
            .map_err(|e| ConnectorError::Unavailable(format!("listing did not start: {e}")))?;
        let snapshot = rx
            .await
            .map_err(|_| ConnectorError::Unavailable("listing stopped".into()))??;
        Ok(sealsync_connector::Listing {
            snapshot,
            cursor: None,
        })
    }

    fn fetches_cheaply(&self) -> bool {
        true
    }

    async fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, Result<Item, ConnectorError>)>, ConnectorError> {
        // On a blocking thread, so that the run prepares what it fetched before meanwhile. The
        // files are read on more threads than cores, so that those not in memory are read from
        // the disk many at a time, and parsed on the cores.
        use sealsync_connector::par;
        let (this, ids) = (self.clone(), ids.to_vec());
        tokio::task::spawn_blocking(move || {
            let ids: Vec<&RemoteId> = ids.iter().collect();
            let read = par::map_on(par::READERS, ids, 64, |id| (id, this.read(id)));
            par::map(read, 64, |(id, file)| {
                (id.clone(), file.and_then(Vdir::parse))
            })
        })
        .await
        .map_err(|e| ConnectorError::Unavailable(format!("reading stopped: {e}")))
    }
}

#[async_trait]
impl Destination for Vdir {
    async fn create(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError> {
        self.removed().await?;
        self.create_now(contact)
    }

    async fn create_many(&self, contacts: Vec<Contact>) -> Vec<Result<ItemMeta, ConnectorError>> {
        if let Err(e) = self.removed().await {
            return contacts.iter().map(|_| Err(e.clone())).collect();
        }
        // Off the async workers (a batch committing meanwhile runs there); the gain is the
        // files written on `WRITERS` threads at once.
        let this = self.clone();
        let n = contacts.len();
        tokio::task::spawn_blocking(move || {
            sealsync_connector::par::map_on(WRITERS, contacts, 16, |c| this.create_now(&c))
        })
        .await
        .unwrap_or_else(|e| {
            let e = ConnectorError::Unavailable(format!("writing stopped: {e}"));
            (0..n).map(|_| Err(e.clone())).collect()
        })
    }

    fn creates_at_once(&self) -> bool {
        true
    }

    async fn update(
        &self,
        id: &RemoteId,
        expected: &Etag,
        contact: &Contact,
    ) -> Result<ItemMeta, ConnectorError> {
        self.removed().await?;
        let path = self.path(id)?;
        match self.current(&path)? {
            None => return Err(ConnectorError::NotFound),
            Some(m) if &m.etag != expected => return Err(ConnectorError::Conflict),
            Some(_) => {}
        }
        let (tmp, etag, modified_ms) = self.stage(to_vcard(contact, self.version).as_bytes())?;
        self.swap_in(&tmp, &path, expected)?;
        Ok(ItemMeta {
            id: id.clone(),
            etag,
            modified_ms,
        })
    }

    async fn delete(&self, id: &RemoteId, expected: &Etag) -> Result<(), ConnectorError> {
        self.removed().await?;
        let path = self.path(id)?;
        match self.current(&path)? {
            None => return Ok(()),
            Some(m) if &m.etag != expected => return Err(ConnectorError::Conflict),
            Some(_) => {}
        }
        self.move_out(&path, expected)
    }

    async fn flush(&self) -> Result<(), ConnectorError> {
        // The files this batch moved aside are removed while the engine records it.
        self.removed().await?;
        self.reaper.start();
        if self.sync {
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(&self.dir, &e))?;
        }
        Ok(())
    }

    async fn finish(&self) -> Result<(), ConnectorError> {
        self.reaper.start();
        self.removed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etag_of(path: &Path) -> Etag {
        file_etag(&std::fs::metadata(path).unwrap()).0
    }

    fn staged(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(STAGING)).map_or(0, Iterator::count)
    }

    #[tokio::test]
    async fn a_file_replaced_after_the_check_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vdir::open(dir.path(), VcardVersion::V4).unwrap();
        let path = dir.path().join("a.vcf");
        std::fs::write(&path, b"checked").unwrap();
        let checked = etag_of(&path);
        // Another program replaces the file after the check, before the swap or the move.
        let theirs = dir.path().join(".theirs");
        std::fs::write(&theirs, b"theirs").unwrap();
        std::fs::rename(&theirs, &path).unwrap();
        let (tmp, _, _) = v.stage(b"ours").unwrap();
        assert!(matches!(
            v.swap_in(&tmp, &path, &checked),
            Err(ConnectorError::Conflict)
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        assert!(!tmp.exists());
        assert!(matches!(
            v.move_out(&path, &checked),
            Err(ConnectorError::Conflict)
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        v.flush().await.unwrap();
        v.finish().await.unwrap();
        assert_eq!(staged(dir.path()), 0);
        // With the etag of the file in place, both go through.
        let (tmp, _, _) = v.stage(b"ours").unwrap();
        v.swap_in(&tmp, &path, &etag_of(&path)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ours");
        v.move_out(&path, &etag_of(&path)).unwrap();
        assert!(!path.exists());
        v.flush().await.unwrap();
        v.finish().await.unwrap();
        assert_eq!(staged(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_listing_read_in_parts_has_every_contact_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vdir::open(dir.path(), VcardVersion::V4).unwrap();
        let mut written = std::collections::BTreeMap::new();
        for i in 0..11 {
            let name = format!("c{i}.vcf");
            std::fs::write(dir.path().join(&name), format!("v{i}")).unwrap();
            written.insert(name.clone(), etag_of(&dir.path().join(name)));
        }
        // Not contacts: hidden, another extension, a folder.
        std::fs::write(dir.path().join(".hidden.vcf"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub.vcf")).unwrap();
        let items = v.list().await.unwrap().items;
        assert_eq!(items.len(), 11);
        let listed: std::collections::BTreeMap<String, Etag> = items
            .into_iter()
            .map(|m| (m.id.as_str().to_owned(), m.etag))
            .collect();
        assert_eq!(listed, written);
    }

    #[test]
    fn files_left_in_the_staging_folder_are_removed_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(STAGING);
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("left.tmp"), b"an old version").unwrap();
        // Just moved there: another write may still need it.
        remove_stale_staged(&staging, STALE_STAGED);
        assert_eq!(staged(dir.path()), 1);
        remove_stale_staged(&staging, Duration::ZERO);
        assert_eq!(staged(dir.path()), 0);
    }
}
