//! The chain: appending entries under the installation's audit key, and reading them back.
//!
//! Entry `seq` of chain `w` stores `mac = HMAC(key, "sealsync audit v1\0" | w | seq | at_ms |
//! key_version | prev_mac | entry)`, with `prev_mac` the MAC of entry `seq - 1` (32 zero bytes
//! for the first). The head row stores the newest `(seq, mac)` and `head_mac = HMAC(key,
//! "sealsync audit head v1\0" | w | seq | key_version | mac)`. Integers are big-endian.
//!
//! Appends never update or delete an entry; they take the chain's write lock before reading the
//! head, so concurrent writers (threads or processes, SQLite or PostgreSQL) queue rather than
//! fork the chain.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aws_lc_rs::{constant_time, hmac};
use sealsync_crypto::KeyBytes;
use sealsync_store::Store;
use sealsync_types::WorkspaceId;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use crate::event::StoredEventV1;
use crate::{AuditError, AuditEvent};

/// The audit MAC key, every version of it. The newest MACs new entries; older ones still
/// verify what they MACed. Not `Clone`, and `Debug` shows only the versions.
pub struct AuditKeys {
    /// By version.
    keys: BTreeMap<u32, hmac::Key>,
}

impl AuditKeys {
    /// Takes the key versions (as from `Hub::installation_keys(KeyPurpose::Audit)`).
    pub fn new(keys: impl IntoIterator<Item = (u32, KeyBytes)>) -> Result<Self, AuditError> {
        let keys: BTreeMap<u32, hmac::Key> = keys
            .into_iter()
            .map(|(v, k)| (v, hmac::Key::new(hmac::HMAC_SHA256, k.expose())))
            .collect();
        if keys.is_empty() {
            return Err(AuditError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// The version that MACs new entries.
    pub fn current_version(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    pub(crate) fn key(&self, version: u32) -> Option<&hmac::Key> {
        self.keys.get(&version)
    }
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKeys")
            .field("versions", &self.versions())
            .finish_non_exhaustive()
    }
}

/// One entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub chain: WorkspaceId,
    pub seq: u64,
    /// Milliseconds since the Unix epoch, UTC.
    pub at_ms: i64,
    pub key_version: u32,
    pub event: AuditEvent,
}

/// The audit log of one installation.
#[derive(Debug)]
pub struct AuditLog {
    store: Store,
    keys: AuditKeys,
}

/// How often an append tries again after losing a race to another writer.
const MAX_ATTEMPTS: u32 = 12;

impl AuditLog {
    pub fn new(store: Store, keys: AuditKeys) -> Self {
        Self { store, keys }
    }

    pub fn keys(&self) -> &AuditKeys {
        &self.keys
    }

    /// Appends `event` to its chain as the next entry, under the newest key.
    pub async fn append(&self, event: AuditEvent) -> Result<AuditEntry, AuditError> {
        let chain = event.chain();
        let entry = StoredEventV1::to_json(&event)?;
        let version = self.keys.current_version();
        let key = self
            .keys
            .key(version)
            .ok_or(AuditError::UnknownKeyVersion(version))?;
        for attempt in 1..=MAX_ATTEMPTS {
            match self.try_append(chain, &entry, version, key).await {
                Ok((seq, at_ms)) => {
                    return Ok(AuditEntry {
                        chain,
                        seq,
                        at_ms,
                        key_version: version,
                        event,
                    });
                }
                Err(Attempt::Lost) => {
                    // Back off a little more each time so that queued writers spread out.
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        Err(AuditError::Contended {
            chain,
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn try_append(
        &self,
        chain: WorkspaceId,
        entry: &str,
        version: u32,
        key: &hmac::Key,
    ) -> Result<(u64, i64), Attempt> {
        let ws = chain.as_bytes().to_vec();
        let mut tx = self.store.data_pool().begin().await.map_err(Attempt::db)?;
        // A write first, so the transaction holds the chain's lock before it reads the head:
        // SQLite takes its write lock here (waiting out other writers instead of failing later
        // on a stale snapshot), PostgreSQL locks the head row until commit.
        sqlx::query("UPDATE audit_head SET seq = seq WHERE workspace_id = $1")
            .bind(ws.clone())
            .execute(&mut *tx)
            .await
            .map_err(Attempt::db)?;
        let head = read_head(&mut tx, chain).await.map_err(Attempt::Failed)?;
        let (prev_seq, prev_mac) = match &head {
            Some(h) => {
                let head_key = self.keys.key(h.key_version).ok_or(Attempt::Failed(
                    AuditError::UnknownKeyVersion(h.key_version),
                ))?;
                if !h.is_authentic(head_key, chain) {
                    return Err(Attempt::Failed(AuditError::Damaged {
                        chain,
                        what: "its head record fails its MAC",
                    }));
                }
                let mac: [u8; 32] = h.mac.as_slice().try_into().map_err(|_| {
                    Attempt::Failed(AuditError::Damaged {
                        chain,
                        what: "its head record is malformed",
                    })
                })?;
                (h.seq, mac)
            }
            None => {
                let any = sqlx::query("SELECT seq FROM audit_log WHERE workspace_id = $1 LIMIT 1")
                    .bind(ws.clone())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Attempt::db)?;
                if any.is_some() {
                    // On PostgreSQL (read committed) another writer's first entry can commit,
                    // head and all, between the two reads: if the head is there now, try again.
                    if read_head(&mut tx, chain)
                        .await
                        .map_err(Attempt::Failed)?
                        .is_some()
                    {
                        return Err(Attempt::Lost);
                    }
                    return Err(Attempt::Failed(AuditError::Damaged {
                        chain,
                        what: "it has entries but no head record",
                    }));
                }
                (0, [0u8; 32])
            }
        };
        let seq = prev_seq + 1;
        let at_ms = sealsync_store::now_ms();
        let mac = entry_mac(key, chain, seq, at_ms, version, &prev_mac, entry.as_bytes());
        let head_mac = head_mac(key, chain, seq, version, &mac);
        sqlx::query(
            "INSERT INTO audit_log (workspace_id, seq, at_ms, key_version, entry, prev_mac, mac) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(ws.clone())
        .bind(to_i64(seq))
        .bind(at_ms)
        .bind(i64::from(version))
        .bind(entry.to_owned())
        .bind(prev_mac.to_vec())
        .bind(mac.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(Attempt::db)?;
        let moved = if head.is_some() {
            sqlx::query(
                "UPDATE audit_head SET seq = $1, key_version = $2, mac = $3, head_mac = $4 \
                 WHERE workspace_id = $5 AND seq = $6",
            )
            .bind(to_i64(seq))
            .bind(i64::from(version))
            .bind(mac.to_vec())
            .bind(head_mac.to_vec())
            .bind(ws)
            .bind(to_i64(prev_seq))
            .execute(&mut *tx)
            .await
            .map_err(Attempt::db)?
            .rows_affected()
        } else {
            sqlx::query(
                "INSERT INTO audit_head (workspace_id, seq, key_version, mac, head_mac) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(ws)
            .bind(to_i64(seq))
            .bind(i64::from(version))
            .bind(mac.to_vec())
            .bind(head_mac.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(Attempt::db)?
            .rows_affected()
        };
        if moved != 1 {
            // Another writer moved the head since we read it; dropping `tx` rolls back.
            return Err(Attempt::Lost);
        }
        tx.commit().await.map_err(Attempt::db)?;
        Ok((seq, at_ms))
    }

    /// Entries after `after_seq` (from the first when `None`), oldest first, at most `limit`.
    pub async fn page(
        &self,
        chain: WorkspaceId,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        self.raw_page(chain, after_seq.unwrap_or(0), limit)
            .await?
            .into_iter()
            .map(|r| r.into_entry(chain))
            .collect()
    }

    /// The newest `n` entries, oldest first.
    pub async fn tail(&self, chain: WorkspaceId, n: u32) -> Result<Vec<AuditEntry>, AuditError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, key_version, entry, prev_mac, mac FROM audit_log \
             WHERE workspace_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(chain.as_bytes().to_vec())
        .bind(i64::from(n))
        .fetch_all(self.store.data_pool())
        .await
        .map_err(AuditError::db)?;
        let mut out = rows
            .iter()
            .map(|r| RawEntry::from_row(chain, r)?.into_entry(chain))
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Every chain with entries or a head (a head alone means its entries were removed, which
    /// verification must still see).
    pub async fn chains(&self) -> Result<Vec<WorkspaceId>, AuditError> {
        let rows = sqlx::query(
            "SELECT workspace_id FROM audit_head UNION SELECT workspace_id FROM audit_log",
        )
        .fetch_all(self.store.data_pool())
        .await
        .map_err(AuditError::db)?;
        let mut out = rows
            .iter()
            .map(|r| {
                let id: Vec<u8> = r.try_get("workspace_id").map_err(AuditError::db)?;
                let id: [u8; 16] = id.as_slice().try_into().map_err(|_| AuditError::Corrupt {
                    chain: WorkspaceId::NIL,
                    seq: 0,
                    what: "a chain id has the wrong length",
                })?;
                Ok(WorkspaceId::from_bytes(id))
            })
            .collect::<Result<Vec<_>, AuditError>>()?;
        out.sort();
        Ok(out)
    }

    /// Stored rows after `after`, in order, unchecked.
    pub(crate) async fn raw_page(
        &self,
        chain: WorkspaceId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RawEntry>, AuditError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, key_version, entry, prev_mac, mac FROM audit_log \
             WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(chain.as_bytes().to_vec())
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(self.store.data_pool())
        .await
        .map_err(AuditError::db)?;
        rows.iter().map(|r| RawEntry::from_row(chain, r)).collect()
    }

    pub(crate) async fn head(&self, chain: WorkspaceId) -> Result<Option<Head>, AuditError> {
        let mut conn = self
            .store
            .data_pool()
            .acquire()
            .await
            .map_err(AuditError::db)?;
        read_head(&mut conn, chain).await
    }
}

/// One attempt at an append: lost to a concurrent writer (try again) or failed.
enum Attempt {
    Lost,
    Failed(AuditError),
}

impl Attempt {
    /// Lock timeouts, serialization failures and a duplicate `seq` mean another writer got
    /// there first; anything else is a real failure.
    fn db(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite: BUSY (5) and LOCKED (6), with their extended codes; PostgreSQL:
            // serialization_failure and deadlock_detected.
            let sqlite_busy = code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
            if d.is_unique_violation() || sqlite_busy || code == "40001" || code == "40P01" {
                return Attempt::Lost;
            }
        }
        Attempt::Failed(AuditError::db(e))
    }
}

/// A chain's head row as stored.
#[derive(Debug)]
pub(crate) struct Head {
    pub seq: u64,
    pub key_version: u32,
    pub mac: Vec<u8>,
    pub head_mac: Vec<u8>,
}

impl Head {
    pub(crate) fn is_authentic(&self, key: &hmac::Key, chain: WorkspaceId) -> bool {
        let Ok(mac) = <[u8; 32]>::try_from(self.mac.as_slice()) else {
            return false;
        };
        let expected = head_mac(key, chain, self.seq, self.key_version, &mac);
        constant_time::verify_slices_are_equal(&expected, &self.head_mac).is_ok()
    }
}

async fn read_head(
    conn: &mut AnyConnection,
    chain: WorkspaceId,
) -> Result<Option<Head>, AuditError> {
    let row = sqlx::query(
        "SELECT seq, key_version, mac, head_mac FROM audit_head WHERE workspace_id = $1",
    )
    .bind(chain.as_bytes().to_vec())
    .fetch_optional(&mut *conn)
    .await
    .map_err(AuditError::db)?;
    let Some(r) = row else { return Ok(None) };
    let corrupt = |what| AuditError::Corrupt {
        chain,
        seq: 0,
        what,
    };
    Ok(Some(Head {
        seq: u64::try_from(r.try_get::<i64, _>("seq").map_err(AuditError::db)?)
            .map_err(|_| corrupt("the head's position is negative"))?,
        key_version: u32::try_from(r.try_get::<i64, _>("key_version").map_err(AuditError::db)?)
            .map_err(|_| corrupt("the head's key version is out of range"))?,
        mac: r.try_get("mac").map_err(AuditError::db)?,
        head_mac: r.try_get("head_mac").map_err(AuditError::db)?,
    }))
}

/// A stored entry, not yet checked or parsed. MACs are kept at whatever length is stored: a
/// wrong length is tampering for verification to report, not an error that stops it.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub seq: u64,
    pub at_ms: i64,
    /// `None` when the stored value cannot be a key version.
    pub key_version: Option<u32>,
    pub entry: String,
    pub prev_mac: Vec<u8>,
    pub mac: Vec<u8>,
}

impl RawEntry {
    fn from_row(chain: WorkspaceId, r: &AnyRow) -> Result<Self, AuditError> {
        let seq: i64 = r.try_get("seq").map_err(AuditError::db)?;
        Ok(Self {
            seq: u64::try_from(seq).map_err(|_| AuditError::Corrupt {
                chain,
                seq: 0,
                what: "negative position",
            })?,
            at_ms: r.try_get("at_ms").map_err(AuditError::db)?,
            key_version: u32::try_from(r.try_get::<i64, _>("key_version").map_err(AuditError::db)?)
                .ok(),
            entry: r.try_get("entry").map_err(AuditError::db)?,
            prev_mac: r.try_get("prev_mac").map_err(AuditError::db)?,
            mac: r.try_get("mac").map_err(AuditError::db)?,
        })
    }

    /// Whether this row's MAC verifies as entry `seq` written at `at_ms`.
    pub(crate) fn verifies_as(
        &self,
        key: &hmac::Key,
        chain: WorkspaceId,
        seq: u64,
        at_ms: i64,
    ) -> bool {
        let (Some(version), Ok(prev)) = (
            self.key_version,
            <[u8; 32]>::try_from(self.prev_mac.as_slice()),
        ) else {
            return false;
        };
        let expected = entry_mac(
            key,
            chain,
            seq,
            at_ms,
            version,
            &prev,
            self.entry.as_bytes(),
        );
        constant_time::verify_slices_are_equal(&expected, &self.mac).is_ok()
    }

    fn into_entry(self, chain: WorkspaceId) -> Result<AuditEntry, AuditError> {
        let corrupt = |what| AuditError::Corrupt {
            chain,
            seq: self.seq,
            what,
        };
        let key_version = self
            .key_version
            .ok_or_else(|| corrupt("key version out of range"))?;
        let event = StoredEventV1::from_json(chain, &self.entry)
            .ok_or_else(|| corrupt("the stored event cannot be read"))?;
        Ok(AuditEntry {
            chain,
            seq: self.seq,
            at_ms: self.at_ms,
            key_version,
            event,
        })
    }
}

const ENTRY_LABEL: &[u8] = b"sealsync audit v1\0";
const HEAD_LABEL: &[u8] = b"sealsync audit head v1\0";

/// The MAC of one entry. `entry` comes last, so no other field's bytes can be shifted into it.
pub(crate) fn entry_mac(
    key: &hmac::Key,
    chain: WorkspaceId,
    seq: u64,
    at_ms: i64,
    key_version: u32,
    prev_mac: &[u8; 32],
    entry: &[u8],
) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(ENTRY_LABEL);
    ctx.update(chain.as_bytes());
    ctx.update(&seq.to_be_bytes());
    ctx.update(&at_ms.to_be_bytes());
    ctx.update(&key_version.to_be_bytes());
    ctx.update(prev_mac);
    ctx.update(entry);
    to_array(ctx.sign())
}

/// The MAC of a head row.
pub(crate) fn head_mac(
    key: &hmac::Key,
    chain: WorkspaceId,
    seq: u64,
    key_version: u32,
    mac: &[u8; 32],
) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(HEAD_LABEL);
    ctx.update(chain.as_bytes());
    ctx.update(&seq.to_be_bytes());
    ctx.update(&key_version.to_be_bytes());
    ctx.update(mac);
    to_array(ctx.sign())
}

fn to_array(tag: hmac::Tag) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HMAC-SHA256 tags are 32 bytes; copy what there is rather than assume it.
    let bytes = tag.as_ref();
    let n = bytes.len().min(32);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Positions are stored as `BIGINT`; a chain will not reach 2^63 entries.
fn to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn hides_content() {
        let keys = AuditKeys::new([
            (1, KeyBytes::from_slice(&[0x5a; 32]).unwrap()),
            (3, KeyBytes::from_slice(&[0x5b; 32]).unwrap()),
        ])
        .unwrap();
        let shown = format!("{keys:?}");
        assert_eq!(shown, "AuditKeys { versions: [1, 3], .. }");
        assert_eq!(keys.current_version(), 3);
        assert!(matches!(AuditKeys::new([]), Err(AuditError::NoKeys)));
    }

    #[test]
    fn every_field_is_bound_by_the_mac() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]);
        let (ws, prev) = (WorkspaceId::new(), [2u8; 32]);
        let base = entry_mac(&key, ws, 5, 1000, 1, &prev, b"{}");
        for other in [
            entry_mac(&key, WorkspaceId::new(), 5, 1000, 1, &prev, b"{}"),
            entry_mac(&key, ws, 6, 1000, 1, &prev, b"{}"),
            entry_mac(&key, ws, 5, 1001, 1, &prev, b"{}"),
            entry_mac(&key, ws, 5, 1000, 2, &prev, b"{}"),
            entry_mac(&key, ws, 5, 1000, 1, &[3; 32], b"{}"),
            entry_mac(&key, ws, 5, 1000, 1, &prev, b"{ }"),
            entry_mac(
                &hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]),
                ws,
                5,
                1000,
                1,
                &prev,
                b"{}",
            ),
        ] {
            assert_ne!(base, other);
        }
        // A head MAC is never a valid entry MAC for the same values, nor the reverse.
        assert_ne!(head_mac(&key, ws, 5, 1, &prev), base);
    }
}
