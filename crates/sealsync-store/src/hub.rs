//! The hub: contacts sealed on the way in, opened on the way out.
//!
//! A contact body is its vCard 4.0 text, sealed with the workspace's newest data key and bound
//! to `(contacts, workspace, contact id, body, key version)`. Beside it the store keeps only
//! keyed hashes (blind indexes of UID, email and phone; a keyed content hash), so matching and
//! change detection never need plaintext.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sealsync_contact::normalize::normalize_uid;
use sealsync_contact::vcard::{VcardVersion, read_all, to_vcard};
use sealsync_contact::{Contact, ContentHash, Email, Phone};
use sealsync_crypto::{
    IndexKind, KeyBytes, KeyProvider, RecordRef, WorkspaceKeys, sealed_key_version,
};
use sealsync_types::{ContactId, WorkspaceId, WorkspaceName};
use zeroize::Zeroizing;

use crate::StoreError;
use crate::db::{
    ContactRow, INSTALLATION, IndexEntries, KeyPurpose, Store, StoredKey, Workspace, now,
};
use crate::sealed::SealedField;

/// Contacts per page read on export.
const EXPORT_PAGE: u32 = 2_000;

/// Table name bound into every contact body's AAD.
const CONTACTS: &str = "contacts";

/// Import settings.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Region for phone numbers written without a country code (`US`, `DE`, …).
    pub default_region: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl ImportCounts {
    pub fn add(&mut self, other: ImportCounts) {
        self.imported += other.imported;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

/// What a re-encryption pass did.
#[derive(Debug, Clone, Default)]
pub struct ReencryptReport {
    /// Records moved to the newest data key.
    pub resealed: u64,
    /// Records that could not be opened (integrity errors); they keep their old key.
    pub failed: Vec<RecordError>,
    /// Records still under an older key afterwards (failed ones included).
    pub remaining: u64,
    /// Values outside contacts (configurations, secrets, run event details) moved.
    pub other_resealed: u64,
    /// Values outside contacts (configurations, secrets, run event details) that could not
    /// be opened: which table and column, and why.
    pub other_failed: Vec<String>,
}

/// Rows written in one import transaction before it commits: far fewer pages written than one
/// transaction a batch (the blind index takes random inserts, so every commit rewrites most of
/// its pages), while the rows themselves go to the database a batch at a time. On 100k
/// contacts, 50,000 rows a commit write a quarter less to disk than 25,000, and import about 10%
/// faster; [`COMMIT_AFTER`] still bounds how long other writers wait.
const COMMIT_ROWS: usize = 50_000;

/// How long an import keeps its write transaction open at most: other writers of the same
/// SQLite file wait for it.
const COMMIT_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// An import in progress: decided and sealed rows not yet written, and what the database will
/// hold once they are. Rows go to the database a batch at a time, into one transaction that
/// commits every [`COMMIT_ROWS`] rows or [`COMMIT_AFTER`]; the session's lookups read through
/// that transaction, so they see what it wrote.
pub struct ImportSession {
    workspace: WorkspaceId,
    options: ImportOptions,
    updated_at: i64,
    rows: Vec<(ContactRow, IndexEntries)>,
    row_at: HashMap<ContactId, usize>,
    by_uid: HashMap<[u8; 32], ContactId>,
    existing: HashMap<ContactId, (i64, [u8; 32])>,
    /// Content hashes of the rows not yet written.
    pending_content: HashSet<[u8; 32]>,
    /// The open transaction, the rows written into it, and when it began.
    tx: Option<ImportTx>,
    /// Whether the workspace's contacts are all this session's own writes.
    own: Own,
}

/// Whether an import session alone has written the workspace's contacts: it had none when the
/// session began, and every move of the hub clock since was this session's (each writer of
/// hub contacts moves it, first thing in its transaction). Then a UID or content hash the
/// session never wrote is in no stored contact, and is not looked up: an import into an empty
/// workspace reads nothing back.
enum Own {
    /// Not known until the session's first transaction.
    Unknown,
    Alone {
        /// The hub clock as this session's last transaction moved it (each of its
        /// transactions moves it once, as it begins, while the session is alone).
        clock: i64,
        /// Keyed UID hashes of the rows written.
        uids: HashSet<[u8; 32]>,
        /// Content hashes of the rows written without a UID (only those are matched by
        /// content; the content hash covers the UID).
        contents: HashSet<[u8; 32]>,
    },
    /// Another writer may have written contacts: everything is looked up.
    Shared,
}

struct ImportTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    /// The hub clock this transaction moved to, once it wrote a contact.
    stamp: Option<i64>,
    written: usize,
    began: std::time::Instant,
}

impl std::fmt::Debug for ImportSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportSession")
            .field("workspace", &self.workspace)
            .field("pending", &self.rows.len())
            .field("uncommitted", &self.tx.as_ref().map_or(0, |t| t.written))
            .finish_non_exhaustive()
    }
}

impl ImportSession {
    pub fn new(workspace: WorkspaceId, options: ImportOptions) -> Self {
        Self {
            workspace,
            options,
            updated_at: now(),
            rows: Vec::new(),
            row_at: HashMap::new(),
            by_uid: HashMap::new(),
            existing: HashMap::new(),
            pending_content: HashSet::new(),
            tx: None,
            own: Own::Unknown,
        }
    }

    /// Takes the session's transaction, begun if none is open (the caller puts it back). On
    /// SQLite it takes the write lock at once: a transaction that read first could not write
    /// once another writer had committed.
    async fn take_tx(&mut self, store: &Store) -> Result<ImportTx, StoreError> {
        if let Some(open) = self.tx.take() {
            return Ok(open);
        }
        let mut tx = store.begin_large(true).await?;
        let mut stamp = None;
        if !matches!(self.own, Own::Shared) {
            // Alone only while the hub clock moves by this session's own ticks. The tick is
            // taken now, before any lookup: on PostgreSQL it also holds off every other
            // writer of hub contacts until this transaction ends.
            let (clock, any) = store
                .hub_clock_and_any_contact(&mut tx, self.workspace)
                .await?;
            let alone = match &self.own {
                Own::Unknown => !any,
                Own::Alone { clock: mine, .. } => clock == *mine,
                Own::Shared => false,
            };
            if alone {
                let tick = store.bump_hub_clock(&mut tx, self.workspace).await?;
                stamp = Some(tick);
                if tick == clock + 1 {
                    match &mut self.own {
                        Own::Alone { clock, .. } => *clock = tick,
                        own => {
                            *own = Own::Alone {
                                clock: tick,
                                uids: HashSet::new(),
                                contents: HashSet::new(),
                            }
                        }
                    }
                } else {
                    self.own = Own::Shared;
                }
            } else {
                self.own = Own::Shared;
            }
        }
        Ok(ImportTx {
            tx,
            stamp,
            written: 0,
            began: std::time::Instant::now(),
        })
    }

    /// Whether `mac` may be stored under `kind` by anyone but this session's pending rows:
    /// always, unless the session alone wrote the workspace's contacts and never this hash.
    fn may_be_stored(&self, kind: IndexKind, mac: &[u8; 32]) -> bool {
        match &self.own {
            Own::Alone { uids, contents, .. } => match kind {
                IndexKind::Uid => uids.contains(mac),
                _ => contents.contains(mac),
            },
            Own::Unknown | Own::Shared => true,
        }
    }

    /// Notes the rows just written, while the session is alone.
    fn note_written(&mut self) {
        if let Own::Alone { uids, contents, .. } = &mut self.own {
            for (row, index) in &self.rows {
                let mut has_uid = false;
                for (kind, mac) in index {
                    if *kind == IndexKind::Uid {
                        uids.insert(*mac);
                        has_uid = true;
                    }
                }
                if !has_uid {
                    contents.insert(row.content_mac);
                }
            }
        }
    }

    /// Rows waiting to be written.
    pub fn pending(&self) -> usize {
        self.rows.len()
    }

    /// After a write the database knows everything the session did.
    fn clear(&mut self) {
        self.rows.clear();
        self.row_at.clear();
        self.by_uid.clear();
        self.existing.clear();
        self.pending_content.clear();
        self.updated_at = now();
    }
}

/// A record that could not be opened; the rest of the export goes on.
#[derive(Debug, Clone)]
pub struct RecordError {
    pub id: ContactId,
    pub error: String,
}

/// The sealed hub over a [`Store`] and a [`KeyProvider`].
#[derive(Debug, Clone)]
pub struct Hub {
    store: Store,
    provider: Arc<dyn KeyProvider>,
}

impl Hub {
    pub fn new(store: Store, provider: Arc<dyn KeyProvider>) -> Self {
        Self { store, provider }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn provider(&self) -> &dyn KeyProvider {
        self.provider.as_ref()
    }

    /// Finds or creates the workspace `name`, with its keys. `true` when something was created.
    pub async fn ensure_workspace(
        &self,
        name: &WorkspaceName,
    ) -> Result<(Workspace, bool), StoreError> {
        let (ws, mut created) = match self.store.workspace_by_name(name).await? {
            Some(ws) => (ws, false),
            None => match self.store.insert_workspace(name).await {
                Ok(ws) => (ws, true),
                // Another process created it first.
                Err(_) => (
                    self.store
                        .workspace_by_name(name)
                        .await?
                        .ok_or_else(|| StoreError::NoWorkspace(name.to_string()))?,
                    false,
                ),
            },
        };
        let keys = self.store.keys_of(ws.id).await?;
        for purpose in [KeyPurpose::Data, KeyPurpose::Index] {
            if !keys.iter().any(|k| k.purpose == purpose) {
                self.add_key(ws.id, purpose, 1).await?;
                created = true;
            }
        }
        Ok((ws, created))
    }

    async fn add_key(
        &self,
        ws: WorkspaceId,
        purpose: KeyPurpose,
        version: u32,
    ) -> Result<(), StoreError> {
        let (_key, wrapped) = self
            .provider
            .generate(&key_context(ws, purpose, version))
            .await?;
        self.store
            .insert_key(
                ws,
                &StoredKey {
                    purpose,
                    version,
                    wrapped,
                    created_at: now(),
                },
            )
            .await
    }

    /// The workspace `name` and its unwrapped keys.
    pub async fn open_workspace(
        &self,
        name: &WorkspaceName,
    ) -> Result<(Workspace, WorkspaceKeys), StoreError> {
        let ws = self
            .store
            .workspace_by_name(name)
            .await?
            .ok_or_else(|| StoreError::NoWorkspace(name.to_string()))?;
        let keys = self.workspace_keys(ws.id).await?;
        Ok((ws, keys))
    }

    pub async fn workspace_keys(&self, ws: WorkspaceId) -> Result<WorkspaceKeys, StoreError> {
        let stored = self.store.keys_of(ws).await?;
        let mut deks = Vec::new();
        let mut index = None;
        for k in stored {
            let key = self
                .provider
                .unwrap(&k.wrapped, &key_context(ws, k.purpose, k.version))
                .await?;
            match k.purpose {
                KeyPurpose::Data => deks.push((k.version, key)),
                KeyPurpose::Index => index = Some(key),
                KeyPurpose::Audit | KeyPurpose::Signing | KeyPurpose::Secrets => {}
            }
        }
        let index = index.ok_or_else(|| StoreError::NoKeys(ws.to_string()))?;
        if deks.is_empty() {
            return Err(StoreError::NoKeys(ws.to_string()));
        }
        WorkspaceKeys::new(ws, deks, &index).map_err(|e| StoreError::Crypto {
            record: "workspace keys".into(),
            error: e.to_string(),
        })
    }

    /// Imports contacts: a contact whose UID the hub knows replaces it (or is unchanged); one
    /// without a UID that equals a stored contact is unchanged; anything else is new.
    pub async fn import(
        &self,
        keys: &WorkspaceKeys,
        contacts: Vec<Contact>,
        options: &ImportOptions,
    ) -> Result<ImportCounts, StoreError> {
        let mut session = ImportSession::new(keys.workspace(), options.clone());
        let counts = self.import_into(keys, &mut session, contacts).await?;
        self.flush_import(&mut session).await?;
        Ok(counts)
    }

    /// Imports one batch into `session`: decided and sealed now, written by the next
    /// [`Hub::write_import`] or [`Hub::flush_import`]. Later batches see earlier ones exactly as
    /// if each had been written on its own (same outcome, versions and counts as
    /// [`Hub::import`] batch after batch).
    pub async fn import_into(
        &self,
        keys: &WorkspaceKeys,
        session: &mut ImportSession,
        contacts: Vec<Contact>,
    ) -> Result<ImportCounts, StoreError> {
        let region = session.options.default_region.clone();
        let mut items: Vec<ImportItem> = contacts
            .into_iter()
            .map(|c| ImportItem::from(Self::prepare(keys, c, region.as_deref())))
            .collect();
        self.import_prepared(keys, session, &mut items).await
    }

    /// [`Hub::import_into`] with contacts already [`Hub::prepare`]d (with the session's
    /// default region), and perhaps sealed ahead as new ([`ImportItem::sealed_as_new`]), so
    /// that a caller can hash and seal the next batch while this one is written. The items
    /// stay the caller's, to drop on its own thread (rows sealed ahead are taken from them).
    pub async fn import_prepared(
        &self,
        keys: &WorkspaceKeys,
        session: &mut ImportSession,
        items: &mut [ImportItem],
    ) -> Result<ImportCounts, StoreError> {
        let ws = keys.workspace();
        if ws != session.workspace {
            return Err(StoreError::Other(
                "import session belongs to another workspace".into(),
            ));
        }
        let mut counts = ImportCounts::default();

        // Existing contacts by UID and (for UID-less cards) by content: what the session holds
        // unwritten first, then the database.
        let mut open = session.take_tx(&self.store).await?;
        let uid_macs: Vec<[u8; 32]> = items
            .iter()
            .filter_map(|i| i.prepared.uid_mac)
            .filter(|m| !session.by_uid.contains_key(m))
            .filter(|m| session.may_be_stored(IndexKind::Uid, m))
            .collect();
        let conn = &mut *open.tx;
        let found: HashMap<[u8; 32], ContactId> = self
            .store
            .lookup_index_on(conn, ws, IndexKind::Uid, &uid_macs)
            .await?
            .into_iter()
            .collect();
        let content_macs: Vec<[u8; 32]> = items
            .iter()
            .filter(|i| i.prepared.uid_mac.is_none())
            .map(|i| i.prepared.content_mac)
            .filter(|m| !session.pending_content.contains(m))
            .filter(|m| session.may_be_stored(IndexKind::Content, m))
            .collect();
        // A stored contact with a row waiting to replace it no longer has its stored content.
        let mut known_content: HashSet<[u8; 32]> = self
            .store
            .lookup_content_on(conn, ws, &content_macs)
            .await?
            .into_iter()
            .filter(|(_, id)| !session.row_at.contains_key(id))
            .map(|(m, _)| m)
            .collect();
        known_content.extend(session.pending_content.iter().copied());
        let existing_ids: Vec<ContactId> = found
            .values()
            .filter(|id| !session.existing.contains_key(id))
            .copied()
            .collect();
        for r in self
            .store
            .contacts_by_id_on(conn, ws, &existing_ids)
            .await?
        {
            session.existing.insert(r.id, (r.version, r.content_mac));
        }
        session.tx = Some(open);

        session.by_uid.extend(found);
        // Which rows this batch wrote: a UID seen earlier in the same batch was counted then.
        let mut written: HashSet<ContactId> = HashSet::new();
        for item in items.iter_mut() {
            let (p, ahead) = (&item.prepared, &mut item.new_row);
            let (id, version) = match p.uid_mac.and_then(|m| session.by_uid.get(&m).copied()) {
                Some(id) => {
                    let (version, mac) = session.existing.get(&id).copied().unwrap_or((0, [0; 32]));
                    if mac == p.content_mac {
                        counts.unchanged += 1;
                        continue;
                    }
                    if !written.contains(&id) {
                        counts.updated += 1;
                    }
                    (id, version + 1)
                }
                None => {
                    if p.uid_mac.is_none() && !known_content.insert(p.content_mac) {
                        counts.unchanged += 1;
                        continue;
                    }
                    counts.imported += 1;
                    (ahead.as_ref().map_or_else(ContactId::new, |r| r.0.id), 1)
                }
            };
            if let Some(m) = p.uid_mac {
                session.by_uid.insert(m, id);
            }
            session.existing.insert(id, (version, p.content_mac));
            written.insert(id);
            // A row sealed ahead serves only the new contact it was sealed as.
            let row = match ahead.take().filter(|r| r.0.id == id && version == 1) {
                Some(mut row) => {
                    row.0.updated_at = session.updated_at;
                    row
                }
                None => Self::seal_row(keys, id, version, p, session.updated_at)?,
            };
            // A row not yet written is replaced: the later card wins, as a later write would.
            match session.row_at.get(&id) {
                Some(&at) => session.rows[at] = row,
                None => {
                    session.row_at.insert(id, session.rows.len());
                    session.rows.push(row);
                }
            }
        }
        // What the next batch would find stored, had this one been written.
        session.pending_content = session.rows.iter().map(|(r, _)| r.content_mac).collect();
        Ok(counts)
    }

    /// Writes the rows `session` holds into its transaction, and commits once the transaction
    /// holds [`COMMIT_ROWS`] rows or has been open [`COMMIT_AFTER`].
    pub async fn write_import(&self, session: &mut ImportSession) -> Result<(), StoreError> {
        if !session.rows.is_empty() {
            let ws = session.workspace;
            let mut open = session.take_tx(&self.store).await?;
            let stamp = match open.stamp {
                Some(stamp) => stamp,
                None => self.store.bump_hub_clock(&mut open.tx, ws).await?,
            };
            open.stamp = Some(stamp);
            self.store
                .write_contacts_in(&mut open.tx, ws, &session.rows, stamp)
                .await?;
            open.written += session.rows.len();
            session.tx = Some(open);
            session.note_written();
            session.clear();
        }
        if let Some(open) = &session.tx
            && (open.written >= COMMIT_ROWS || open.began.elapsed() >= COMMIT_AFTER)
        {
            self.commit_import(session).await?;
        }
        Ok(())
    }

    /// Writes what `session` holds and commits everything it wrote.
    pub async fn flush_import(&self, session: &mut ImportSession) -> Result<(), StoreError> {
        self.write_import(session).await?;
        self.commit_import(session).await
    }

    async fn commit_import(&self, session: &mut ImportSession) -> Result<(), StoreError> {
        // The wide cache stays: the next transaction of the import (often on the same
        // connection) writes into the same trees.
        if let Some(open) = session.tx.take() {
            open.tx.commit().await.map_err(StoreError::db)?;
        }
        Ok(())
    }

    /// Calls `f` with every live contact's vCard 4.0 text, in id order, a page at a time.
    /// Records that fail to open are returned, not fatal.
    pub async fn for_each_vcard<F>(
        &self,
        keys: &WorkspaceKeys,
        mut f: F,
    ) -> Result<Vec<RecordError>, StoreError>
    where
        F: FnMut(ContactId, &str) -> Result<(), StoreError>,
    {
        let ws = keys.workspace();
        let mut errors = Vec::new();
        // The next page is read while this one is opened and handed out.
        let mut next = Some(self.spawn_page(ws, None));
        let mut plain = Zeroizing::new(Vec::new());
        while let Some(task) = next.take() {
            let page = task
                .await
                .map_err(|e| StoreError::Other(format!("page read failed: {e}")))??;
            let Some(last) = page.last() else { break };
            if page.len() >= EXPORT_PAGE as usize {
                next = Some(self.spawn_page(ws, Some(last.id)));
            }
            for row in page {
                let Some(body) = row.body else { continue };
                match keys.open_into(&body_ref(ws, &row.id), &body, &mut plain) {
                    Ok(opened) => match std::str::from_utf8(opened) {
                        Ok(text) => f(row.id, text)?,
                        Err(_) => errors.push(RecordError {
                            id: row.id,
                            error: "body is not UTF-8".into(),
                        }),
                    },
                    Err(e) => errors.push(RecordError {
                        id: row.id,
                        error: e.to_string(),
                    }),
                }
            }
        }
        Ok(errors)
    }

    fn spawn_page(
        &self,
        ws: WorkspaceId,
        after: Option<ContactId>,
    ) -> tokio::task::JoinHandle<Result<Vec<ContactRow>, StoreError>> {
        let store = self.store.clone();
        tokio::spawn(async move { store.contacts_page(ws, after, EXPORT_PAGE).await })
    }

    /// Calls `f` with every live contact, parsed.
    pub async fn for_each_contact<F>(
        &self,
        keys: &WorkspaceKeys,
        mut f: F,
    ) -> Result<Vec<RecordError>, StoreError>
    where
        F: FnMut(ContactId, Contact) -> Result<(), StoreError>,
    {
        let mut parse_errors = Vec::new();
        let mut errors = self
            .for_each_vcard(keys, |id, text| {
                let (cards, _) = read_all(text.as_bytes());
                match cards.into_iter().next() {
                    Some(card) => f(id, card.contact),
                    None => {
                        parse_errors.push(RecordError {
                            id,
                            error: "stored body is not a vCard".into(),
                        });
                        Ok(())
                    }
                }
            })
            .await?;
        errors.extend(parse_errors);
        Ok(errors)
    }

    /// Contacts whose blind index of `kind` matches `normalized` (already normalized).
    pub async fn find(
        &self,
        keys: &WorkspaceKeys,
        kind: IndexKind,
        normalized: &str,
    ) -> Result<Vec<(ContactId, Contact)>, StoreError> {
        let ws = keys.workspace();
        let mac = keys.blind_index().index(kind, normalized);
        let ids: Vec<ContactId> = self
            .store
            .lookup_index(ws, kind, &[mac])
            .await?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let mut out = Vec::new();
        for row in self.store.contacts_by_id(ws, &ids).await? {
            let Some(body) = row.body else { continue };
            let plain = Zeroizing::new(keys.open(&body_ref(ws, &row.id), &body).map_err(|e| {
                StoreError::Crypto {
                    record: row.id.to_string(),
                    error: e.to_string(),
                }
            })?);
            if let Some(card) = read_all(&plain).0.into_iter().next() {
                out.push((row.id, card.contact));
            }
        }
        Ok(out)
    }
}

impl Hub {
    /// Adds a data-key version to the workspace; every write from then on uses it.
    pub async fn rotate_data_key(&self, ws: WorkspaceId) -> Result<u32, StoreError> {
        let keys = self.store.keys_of(ws).await?;
        let next = keys
            .iter()
            .filter(|k| k.purpose == KeyPurpose::Data)
            .map(|k| k.version)
            .max()
            .unwrap_or(0)
            + 1;
        self.add_key(ws, KeyPurpose::Data, next).await?;
        Ok(next)
    }

    /// Moves every record of the workspace to its newest data key, `batch` records per
    /// transaction, while reads and writes go on. Resumable: what remains is exactly the records
    /// under older keys, so a rerun after a crash continues where it stopped. A record written
    /// concurrently is left to its writer and picked up by the next pass.
    pub async fn reencrypt(
        &self,
        keys: &WorkspaceKeys,
        batch: u32,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ReencryptReport, StoreError> {
        let ws = keys.workspace();
        let current = keys.current_version();
        let total =
            u64::try_from(self.store.count_below_key_version(ws, current).await?).unwrap_or(0);
        let mut report = ReencryptReport::default();
        progress(0, total);
        for _pass in 0..5 {
            let mut after = None;
            let mut raced = 0;
            report.failed.clear();
            loop {
                let page = self
                    .store
                    .contacts_below_key_version(ws, current, after, batch.max(1))
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                let mut updates = Vec::with_capacity(page.len());
                for row in page {
                    let Some(body) = &row.body else { continue };
                    match keys.reseal(&body_ref(ws, &row.id), body) {
                        Ok(Some(sealed)) => updates.push((row, sealed, current)),
                        Ok(None) => {}
                        Err(e) => report.failed.push(RecordError {
                            id: row.id,
                            error: e.to_string(),
                        }),
                    }
                }
                let done = self.store.reseal_contacts(ws, &updates).await?;
                raced += updates.len() as u64 - done;
                report.resealed += done;
                progress(report.resealed.min(total), total);
            }
            if raced == 0 {
                break;
            }
        }
        // Then everything else sealed under the workspace's keys (few rows, or run events).
        for field in SealedField::ALL {
            for value in self.store.sealed_values(ws, field).await? {
                match keys.reseal(&value.at(ws), &value.sealed) {
                    Ok(Some(sealed)) => {
                        if self.store.replace_sealed(ws, &value, sealed).await? {
                            report.other_resealed += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => report.other_failed.push(format!(
                        "{}.{}: {e}",
                        field.table_field().0,
                        field.table_field().1
                    )),
                }
            }
        }
        report.remaining = u64::try_from(self.store.count_below_key_version(ws, current).await?)
            .unwrap_or(0)
            + self.sealed_below(ws, current).await?;
        Ok(report)
    }

    /// Values outside `contacts` per data-key version, read once; values whose header cannot
    /// be read are counted under `None` (they keep every key: never retire one on a guess).
    async fn sealed_outside_contacts(
        &self,
        ws: WorkspaceId,
    ) -> Result<std::collections::BTreeMap<Option<u32>, u64>, StoreError> {
        let mut per_version = std::collections::BTreeMap::new();
        for field in SealedField::ALL {
            for value in self.store.sealed_values(ws, field).await? {
                *per_version
                    .entry(sealed_key_version(&value.sealed).ok())
                    .or_insert(0) += 1;
            }
        }
        Ok(per_version)
    }

    /// How many values outside `contacts` may still need a key older than `version`.
    async fn sealed_below(&self, ws: WorkspaceId, version: u32) -> Result<u64, StoreError> {
        Ok(self
            .sealed_outside_contacts(ws)
            .await?
            .iter()
            .filter(|(v, _)| v.is_none_or(|v| v < version))
            .map(|(_, n)| n)
            .sum())
    }

    /// Destroys data-key versions older than the newest that no record uses any more.
    pub async fn retire_unused_data_keys(&self, ws: WorkspaceId) -> Result<Vec<u32>, StoreError> {
        let versions: Vec<u32> = self
            .store
            .keys_of(ws)
            .await?
            .into_iter()
            .filter(|k| k.purpose == KeyPurpose::Data)
            .map(|k| k.version)
            .collect();
        let Some(&current) = versions.iter().max() else {
            return Ok(Vec::new());
        };
        let outside = self.sealed_outside_contacts(ws).await?;
        let in_use = |v: u32| outside.contains_key(&None) || outside.contains_key(&Some(v));
        let mut retired = Vec::new();
        for v in versions.into_iter().filter(|v| *v < current) {
            if self.store.count_at_key_version(ws, v).await? == 0 && !in_use(v) {
                self.store.delete_key(ws, KeyPurpose::Data, v).await?;
                retired.push(v);
            }
        }
        Ok(retired)
    }

    /// Every version of an installation key (`Audit`, `Signing`), oldest first, unwrapped,
    /// with its creation time (seconds).
    pub async fn installation_keys(
        &self,
        purpose: KeyPurpose,
    ) -> Result<Vec<(u32, KeyBytes, i64)>, StoreError> {
        let mut out = Vec::new();
        for k in self.store.keys_of(INSTALLATION).await? {
            if k.purpose != purpose {
                continue;
            }
            let key = self
                .provider
                .unwrap(&k.wrapped, &key_context(INSTALLATION, purpose, k.version))
                .await?;
            out.push((k.version, key, k.created_at));
        }
        Ok(out)
    }

    /// The newest version of an installation key, made on first use. Safe when several
    /// processes ask at once: one makes it, the others read it.
    pub async fn ensure_installation_key(
        &self,
        purpose: KeyPurpose,
    ) -> Result<(u32, KeyBytes), StoreError> {
        if let Some((v, key, _)) = self.installation_keys(purpose).await?.pop() {
            return Ok((v, key));
        }
        // An error here is most likely another process making it first; a real failure shows
        // up on the read below.
        let _ = self.add_key(INSTALLATION, purpose, 1).await;
        self.installation_keys(purpose)
            .await?
            .pop()
            .map(|(v, key, _)| (v, key))
            .ok_or_else(|| StoreError::NoKeys(format!("installation ({})", purpose.as_str())))
    }

    /// Adds the next version of an installation key and returns it.
    pub async fn add_installation_key(
        &self,
        purpose: KeyPurpose,
    ) -> Result<(u32, KeyBytes), StoreError> {
        let next = self
            .store
            .keys_of(INSTALLATION)
            .await?
            .iter()
            .filter(|k| k.purpose == purpose)
            .map(|k| k.version)
            .max()
            .unwrap_or(0)
            + 1;
        self.add_key(INSTALLATION, purpose, next).await?;
        let key = self
            .installation_keys(purpose)
            .await?
            .into_iter()
            .find(|(v, _, _)| *v == next)
            .map(|(_, key, _)| key)
            .ok_or_else(|| StoreError::NoKeys(format!("installation ({})", purpose.as_str())))?;
        Ok((next, key))
    }

    /// Destroys one version of an installation key.
    pub async fn retire_installation_key(
        &self,
        purpose: KeyPurpose,
        version: u32,
    ) -> Result<(), StoreError> {
        self.store.delete_key(INSTALLATION, purpose, version).await
    }

    /// Re-wraps every workspace and installation key that the provider's current master key
    /// did not wrap. Resumable: each key is replaced on its own.
    pub async fn rewrap_keys(&self) -> Result<u64, StoreError> {
        let current = self.provider.current_kek();
        let mut n = 0;
        for ws in self.key_owners().await? {
            for k in self.store.keys_of(ws).await? {
                if k.wrapped.kek == current {
                    continue;
                }
                let context = key_context(ws, k.purpose, k.version);
                let key = self.provider.unwrap(&k.wrapped, &context).await?;
                let wrapped = self.provider.wrap(&key, &context).await?;
                self.store
                    .update_key(ws, &StoredKey { wrapped, ..k })
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every workspace that holds keys, and the installation.
    async fn key_owners(&self) -> Result<Vec<WorkspaceId>, StoreError> {
        let mut owners: Vec<WorkspaceId> = self
            .store
            .workspaces()
            .await?
            .iter()
            .map(|w| w.id)
            .collect();
        owners.push(INSTALLATION);
        Ok(owners)
    }

    /// The master-key versions that wrap at least one stored key.
    pub async fn master_keys_in_use(&self) -> Result<Vec<String>, StoreError> {
        let mut used = Vec::new();
        for ws in self.key_owners().await? {
            for k in self.store.keys_of(ws).await? {
                if !used.contains(&k.wrapped.kek) {
                    used.push(k.wrapped.kek);
                }
            }
        }
        Ok(used)
    }
}

fn body_ref(ws: WorkspaceId, id: &ContactId) -> RecordRef<'_> {
    RecordRef {
        table: CONTACTS,
        workspace: ws,
        record: id.as_bytes(),
        field: "body",
    }
}

fn key_context(ws: WorkspaceId, purpose: KeyPurpose, version: u32) -> Vec<u8> {
    format!(
        "sealsync workspace key v1|{ws}|{}|{version}",
        purpose.as_str()
    )
    .into_bytes()
}

/// A contact for [`Hub::import_prepared`]: prepared, and perhaps sealed ahead as a new contact.
#[derive(Debug)]
pub struct ImportItem {
    pub prepared: PreparedContact,
    new_row: Option<(ContactRow, IndexEntries)>,
}

impl From<PreparedContact> for ImportItem {
    fn from(prepared: PreparedContact) -> Self {
        Self {
            prepared,
            new_row: None,
        }
    }
}

impl ImportItem {
    /// Seals the contact now as a new contact with a fresh id: the import takes that row as
    /// it is if the contact turns out new, and seals again otherwise. A caller that expects
    /// mostly new contacts seals them ahead on its own thread, off the import's writer.
    pub fn sealed_as_new(
        keys: &WorkspaceKeys,
        prepared: PreparedContact,
    ) -> Result<Self, StoreError> {
        let row = Hub::seal_row(keys, ContactId::new(), 1, &prepared, 0)?;
        Ok(Self {
            prepared,
            new_row: Some(row),
        })
    }
}

/// A contact ready for the hub: its blind-index entries and keyed content hash.
#[derive(Debug, Clone)]
pub struct PreparedContact {
    pub contact: Contact,
    pub uid_mac: Option<[u8; 32]>,
    pub email_macs: Vec<[u8; 32]>,
    pub phone_macs: Vec<[u8; 32]>,
    pub content_mac: [u8; 32],
    pub index: IndexEntries,
}

impl Hub {
    /// Computes a contact's keyed hashes: what matching and change detection use.
    pub fn prepare(
        keys: &WorkspaceKeys,
        contact: Contact,
        default_region: Option<&str>,
    ) -> PreparedContact {
        let blind = keys.blind_index();
        let uid_mac = contact
            .uid()
            .and_then(|u| normalize_uid(&u))
            .map(|u| blind.index(IndexKind::Uid, &u));
        let email_macs: Vec<[u8; 32]> = contact
            .emails()
            .iter()
            .filter_map(|e| Email::parse(e))
            .map(|e| blind.index(IndexKind::Email, e.as_str()))
            .collect();
        let phone_macs: Vec<[u8; 32]> = contact
            .phones()
            .iter()
            .filter_map(|p| Phone::parse(p, default_region))
            .map(|p| blind.index(IndexKind::Phone, p.as_str()))
            .collect();
        let mut index: IndexEntries = uid_mac.iter().map(|m| (IndexKind::Uid, *m)).collect();
        index.extend(email_macs.iter().map(|m| (IndexKind::Email, *m)));
        index.extend(phone_macs.iter().map(|m| (IndexKind::Phone, *m)));
        index.sort_unstable();
        index.dedup();
        let content_mac = Self::content_mac(keys, &contact);
        PreparedContact {
            contact,
            uid_mac,
            email_macs,
            phone_macs,
            content_mac,
            index,
        }
    }

    /// The keyed content hash of a contact, as the hub stores it.
    pub fn content_mac(keys: &WorkspaceKeys, contact: &Contact) -> [u8; 32] {
        keys.blind_index()
            .index(IndexKind::Content, &ContentHash::of(contact).to_hex())
    }

    /// Seals a prepared contact as version `version` of contact `id`.
    pub fn seal_row(
        keys: &WorkspaceKeys,
        id: ContactId,
        version: i64,
        prepared: &PreparedContact,
        updated_at: i64,
    ) -> Result<(ContactRow, IndexEntries), StoreError> {
        let ws = keys.workspace();
        let body = Zeroizing::new(to_vcard(&prepared.contact, VcardVersion::V4));
        let sealed = keys
            .seal(&body_ref(ws, &id), body.as_bytes())
            .map_err(|e| StoreError::Crypto {
                record: id.to_string(),
                error: e.to_string(),
            })?;
        Ok((
            ContactRow {
                id,
                version,
                key_version: keys.current_version(),
                body: Some(sealed),
                content_mac: prepared.content_mac,
                updated_at,
            },
            prepared.index.clone(),
        ))
    }

    /// A tombstone replacing version `version - 1` of contact `id`.
    pub fn tombstone(id: ContactId, version: i64, updated_at: i64) -> (ContactRow, IndexEntries) {
        (
            ContactRow {
                id,
                version,
                key_version: 0,
                body: None,
                content_mac: [0; 32],
                updated_at,
            },
            Vec::new(),
        )
    }

    /// Opens these contacts; missing, deleted or unreadable ones are reported apart.
    pub async fn open_contacts(
        &self,
        keys: &WorkspaceKeys,
        ids: &[ContactId],
    ) -> Result<(HashMap<ContactId, Contact>, Vec<RecordError>), StoreError> {
        let ws = keys.workspace();
        let mut out = HashMap::with_capacity(ids.len());
        let mut errors = Vec::new();
        for row in self.store.contacts_by_id(ws, ids).await? {
            match Self::open_row(keys, &row) {
                Ok(Some(c)) => {
                    out.insert(row.id, c);
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        Ok((out, errors))
    }

    /// Opens one stored row already read (`None` for a tombstone).
    pub fn open_row(
        keys: &WorkspaceKeys,
        row: &ContactRow,
    ) -> Result<Option<Contact>, RecordError> {
        let Some(body) = &row.body else {
            return Ok(None);
        };
        let plain = keys
            .open(&body_ref(keys.workspace(), &row.id), body)
            .map_err(|e| RecordError {
                id: row.id,
                error: e.to_string(),
            })?;
        let plain = Zeroizing::new(plain);
        match read_all(&plain).0.into_iter().next() {
            Some(card) => Ok(Some(card.contact)),
            None => Err(RecordError {
                id: row.id,
                error: "stored body is not a vCard".into(),
            }),
        }
    }
}
