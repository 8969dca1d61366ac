//! One CSV file as a collection: read whole on listing, changed in memory, written back
//! atomically on flush.
//!
//! A row's remote id is its contact's UID when the layout carries one, else a hash of the row's
//! contents (`h:` and 16 hex digits; `~2`, `~3` for identical rows); its etag is the content
//! hash. An edited UID-less row therefore reads as a new id: the engine's matching links it to
//! the contact it was. A file with a row that cannot be read is refused whole, never listed
//! without that row (which would read as a deletion). A file changed by someone else between
//! the listing and the flush is not overwritten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use sealsync_connector::{
    ConnectorError, Destination, Etag, Item, ItemMeta, RemoteId, Snapshot, Source,
};
use sealsync_contact::csv::{CsvLayout, CsvReader, CsvWriter};
use sealsync_contact::{Contact, ContentHash};

use crate::{file_etag, io_error, write_atomic};

/// A CSV file in one layout.
#[derive(Debug)]
pub struct CsvFile {
    path: PathBuf,
    layout: CsvLayout,
    state: Mutex<Option<Loaded>>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// Rows in file order; a deleted row is `None` until the file is written.
    rows: Vec<Option<Row>>,
    at: HashMap<RemoteId, usize>,
    /// The file's own etag when read (`None`: there was no file).
    file: Option<Etag>,
    dirty: bool,
}

#[derive(Debug, Clone)]
struct Row {
    meta: ItemMeta,
    contact: Contact,
}

impl CsvFile {
    pub fn open(path: &Path, layout: CsvLayout) -> Result<Self, ConnectorError> {
        if path.is_dir() {
            return Err(ConnectorError::Config(format!(
                "{} is a folder, not a CSV file",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            layout,
            state: Mutex::new(None),
        })
    }

    fn file_etag(&self) -> Result<Option<Etag>, ConnectorError> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(Some(file_etag(&m).0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&self.path, &e)),
        }
    }

    fn load(&self) -> Result<Loaded, ConnectorError> {
        let file = self.file_etag()?;
        if file.is_none() {
            return Ok(Loaded::default());
        }
        let bytes = std::fs::read(&self.path).map_err(|e| io_error(&self.path, &e))?;
        let mut reader = CsvReader::new(bytes.as_slice(), self.layout.clone())
            .map_err(|e| ConnectorError::Invalid(format!("{}: {e}", self.path.display())))?;
        let mut loaded = Loaded {
            file,
            ..Loaded::default()
        };
        while let Some(next) = reader.next_contact() {
            match next {
                Ok((_, contact)) => {
                    loaded.push(contact)?;
                }
                Err(r) => {
                    return Err(ConnectorError::Invalid(format!(
                        "{} line {}: {}; the file is left alone until it is fixed",
                        self.path.display(),
                        r.line,
                        r.reason
                    )));
                }
            }
        }
        Ok(loaded)
    }

    /// What a contact becomes once written as a row of this layout and read back.
    fn project(&self, contact: &Contact) -> Result<Contact, ConnectorError> {
        let mut w = CsvWriter::new(Vec::new(), self.layout.clone())
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
        w.write(contact)
            .map_err(|e| ConnectorError::Invalid(e.to_string()))?;
        let bytes = w
            .finish()
            .map_err(|e| ConnectorError::Invalid(e.to_string()))?;
        let mut r = CsvReader::new(bytes.as_slice(), self.layout.clone())
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
        match r.next_contact() {
            Some(Ok((_, c))) => Ok(c),
            _ => Err(ConnectorError::Invalid(
                "the contact has nothing this CSV layout can hold".into(),
            )),
        }
    }

    fn with_loaded<T>(
        &self,
        f: impl FnOnce(&mut Loaded) -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| ConnectorError::Unavailable("CSV state poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.load()?);
        }
        match guard.as_mut() {
            Some(loaded) => f(loaded),
            None => Err(ConnectorError::Unavailable("CSV file not loaded".into())),
        }
    }
}

impl Loaded {
    /// Id and etag for a row that is not yet in the file.
    fn meta_for(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError> {
        let hash = ContentHash::of(contact).to_hex();
        let base = match contact.uid() {
            Some(uid) if !uid.trim().is_empty() => format!("uid:{}", uid.trim()),
            _ => format!("h:{}", &hash[..16]),
        };
        let mut id = RemoteId::parse(&base)?;
        let mut n = 1;
        while self.at.contains_key(&id) {
            n += 1;
            id = RemoteId::parse(&format!("{base}~{n}"))?;
        }
        Ok(ItemMeta {
            id,
            etag: Etag::new(hash),
            modified_ms: None,
        })
    }

    fn push(&mut self, contact: Contact) -> Result<ItemMeta, ConnectorError> {
        let meta = self.meta_for(&contact)?;
        self.at.insert(meta.id.clone(), self.rows.len());
        self.rows.push(Some(Row {
            meta: meta.clone(),
            contact,
        }));
        Ok(meta)
    }

    fn row(&self, id: &RemoteId) -> Option<&Row> {
        self.at
            .get(id)
            .and_then(|&i| self.rows.get(i))
            .and_then(Option::as_ref)
    }

    fn live(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().flatten()
    }
}

#[async_trait]
impl Source for CsvFile {
    async fn list(&self) -> Result<Snapshot, ConnectorError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| ConnectorError::Unavailable("CSV state poisoned".into()))?;
        // A listing always reads the file as it is now.
        let loaded = self.load()?;
        let items = loaded.live().map(|r| r.meta.clone()).collect();
        *guard = Some(loaded);
        Ok(Snapshot { items })
    }

    async fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, Result<Item, ConnectorError>)>, ConnectorError> {
        self.with_loaded(|l| {
            Ok(ids
                .iter()
                .map(|id| {
                    let item = l
                        .row(id)
                        .map(|r| Item {
                            meta: r.meta.clone(),
                            contact: r.contact.clone(),
                        })
                        .ok_or(ConnectorError::NotFound);
                    (id.clone(), item)
                })
                .collect())
        })
    }
}

#[async_trait]
impl Destination for CsvFile {
    async fn create(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError> {
        let projected = self.project(contact)?;
        self.with_loaded(|l| {
            let meta = l.push(projected)?;
            l.dirty = true;
            Ok(meta)
        })
    }

    async fn update(
        &self,
        id: &RemoteId,
        expected: &Etag,
        contact: &Contact,
    ) -> Result<ItemMeta, ConnectorError> {
        let projected = self.project(contact)?;
        self.with_loaded(|l| {
            let at = *l.at.get(id).ok_or(ConnectorError::NotFound)?;
            if l.row(id).map(|r| &r.meta.etag) != Some(expected) {
                return Err(ConnectorError::Conflict);
            }
            l.at.remove(id);
            let meta = l.meta_for(&projected)?;
            l.at.insert(meta.id.clone(), at);
            l.rows[at] = Some(Row {
                meta: meta.clone(),
                contact: projected,
            });
            l.dirty = true;
            Ok(meta)
        })
    }

    async fn delete(&self, id: &RemoteId, expected: &Etag) -> Result<(), ConnectorError> {
        self.with_loaded(|l| {
            let Some(&at) = l.at.get(id) else {
                return Ok(());
            };
            if l.row(id).map(|r| &r.meta.etag) != Some(expected) {
                return Err(ConnectorError::Conflict);
            }
            l.at.remove(id);
            l.rows[at] = None;
            l.dirty = true;
            Ok(())
        })
    }

    async fn flush(&self) -> Result<(), ConnectorError> {
        let current = self.file_etag()?;
        self.with_loaded(|l| {
            if !l.dirty {
                return Ok(());
            }
            if current != l.file {
                return Err(ConnectorError::Unavailable(format!(
                    "{} was changed by someone else during the run; it was not overwritten",
                    self.path.display()
                )));
            }
            let mut w = CsvWriter::new(Vec::new(), self.layout.clone())
                .map_err(|e| ConnectorError::Config(e.to_string()))?;
            for r in l.live() {
                w.write(&r.contact)
                    .map_err(|e| ConnectorError::Invalid(e.to_string()))?;
            }
            let bytes = w
                .finish()
                .map_err(|e| ConnectorError::Invalid(e.to_string()))?;
            write_atomic(&self.path, &bytes, true)?;
            l.file = self.file_etag()?;
            l.dirty = false;
            Ok(())
        })
    }
}
