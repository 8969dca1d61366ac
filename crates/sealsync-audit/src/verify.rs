//! Verification: reading a chain back and saying, entry by entry, what no longer adds up.
//!
//! One streaming pass in pages checks each entry's MAC at its position, the link to the entry
//! before it, gaps in the positions, and the head. Only when MACs fail does it look further:
//! a failed entry is tried at the positions of the other failed entries and at the position
//! after the entry its `prev_mac` names, to tell a moved entry from an edited one. Memory stays
//! bounded by the page size plus a fixed number of failed entries kept for that search.

use std::collections::HashMap;
use std::fmt;

use sealsync_types::WorkspaceId;
use serde::Serialize;

use crate::chain::RawEntry;
use crate::{AuditError, AuditLog};

/// What verifying one chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub chain: WorkspaceId,
    pub entries_checked: u64,
    /// In chain order; head problems last.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The entry at `seq` does not match its MAC: its content, time, key version or links were
    /// changed after it was written.
    Edited { seq: u64 },
    /// Entries `from_seq..=to_seq` are missing.
    Removed { from_seq: u64, to_seq: u64 },
    /// The entry at `seq` is genuine but was written as entry `written_as`.
    Reordered { seq: u64, written_as: u64 },
    /// The head names entry `head_seq`, but the chain ends at `last_seq` (0: no entries left).
    TailRemoved { head_seq: u64, last_seq: u64 },
    /// There are entries but no head: the newest entries may have been removed unnoticed.
    HeadMissing,
    /// The head does not match its MAC.
    HeadForged,
    /// The entry at `seq` (or the head, at its `seq`) is MACed with a key version not given.
    UnknownKeyVersion { seq: u64, version: u32 },
    /// The entry at `seq` verifies on its own but does not follow the entry before it (or, for
    /// the newest, is not the one the head names): one of them was swapped for another genuine
    /// entry, e.g. from a copy of the log.
    Unlinked { seq: u64 },
    /// Entries after the head's `head_seq` up to `last_seq` exist: they were added behind the
    /// log's back, or the head was put back to an older state.
    HeadBehind { head_seq: u64, last_seq: u64 },
    /// An anchor taken earlier names entry `anchored_seq`, but the head now records entry
    /// `head_seq`: the log was put back to an older state (a restored copy), which the chain
    /// alone cannot show.
    RolledBack { anchored_seq: u64, head_seq: u64 },
    /// The entry at `seq` is not the one an anchor taken earlier names: the log was replaced
    /// from there on.
    Diverged { seq: u64 },
}

/// A chain's newest entry (its position and MAC) at one moment. Kept outside the database, by
/// whoever audits it, an anchor lets a later verification tell a log that only grew from one
/// put back to an older state: the chain alone cannot, since an older copy is genuine too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Anchor {
    pub seq: u64,
    /// The entry's MAC, hex: it shows nothing of the entry without the audit key.
    pub mac: String,
}

impl Problem {
    /// Where in the chain the problem is, for ordering; head problems sort last.
    fn position(&self) -> u64 {
        match self {
            Problem::Edited { seq }
            | Problem::Reordered { seq, .. }
            | Problem::UnknownKeyVersion { seq, .. }
            | Problem::Unlinked { seq } => *seq,
            Problem::Removed { from_seq, .. } => *from_seq,
            Problem::TailRemoved { .. }
            | Problem::HeadMissing
            | Problem::HeadForged
            | Problem::HeadBehind { .. }
            | Problem::RolledBack { .. }
            | Problem::Diverged { .. } => u64::MAX,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Edited { seq } => write!(f, "entry {seq} was changed after it was written"),
            Problem::Removed { from_seq, to_seq } if from_seq == to_seq => {
                write!(f, "entry {from_seq} was removed")
            }
            Problem::Removed { from_seq, to_seq } => {
                write!(f, "entries {from_seq} to {to_seq} were removed")
            }
            Problem::Reordered { seq, written_as } => write!(
                f,
                "entry {seq} was moved there: it was written as entry {written_as}"
            ),
            Problem::TailRemoved {
                head_seq,
                last_seq: 0,
            } => write!(
                f,
                "all entries were removed: the head records entry {head_seq} but none is left"
            ),
            Problem::TailRemoved { head_seq, last_seq } => write!(
                f,
                "the newest entries were removed: the head records entry {head_seq} but the last entry is {last_seq}"
            ),
            Problem::HeadMissing => f.write_str(
                "the head record is missing, so removal of the newest entries cannot be ruled out",
            ),
            Problem::HeadForged => {
                f.write_str("the head record was changed: it does not match its MAC")
            }
            Problem::UnknownKeyVersion { seq, version } => write!(
                f,
                "entry {seq} is sealed with audit key version {version}, which is not available, so it cannot be checked"
            ),
            Problem::Unlinked { seq } => write!(
                f,
                "entry {seq} does not follow on from the entry before it: one of them was replaced"
            ),
            Problem::HeadBehind { head_seq, last_seq } => write!(
                f,
                "entries {} to {last_seq} were added outside the log, or the head was rolled back to entry {head_seq}",
                head_seq + 1
            ),
            Problem::RolledBack {
                anchored_seq,
                head_seq,
            } => write!(
                f,
                "the log was put back to an older state: an earlier verification anchored entry {anchored_seq}, but the head records entry {head_seq}"
            ),
            Problem::Diverged { seq } => write!(
                f,
                "entry {seq} is not the entry an earlier verification anchored: the log was replaced from there on"
            ),
        }
    }
}

/// Rows read per query while verifying.
const PAGE: u32 = 1000;
/// Failed entries kept for the search for where they came from; beyond this, a failed entry
/// is reported as edited without searching (the chain is badly damaged either way).
const MAX_SEARCHED: usize = 256;

impl AuditLog {
    /// The chain's anchor now: its head's entry (`None` while it has none).
    pub async fn anchor(&self, chain: WorkspaceId) -> Result<Option<Anchor>, AuditError> {
        Ok(self
            .head(chain)
            .await?
            .filter(|h| h.seq > 0)
            .map(|h| Anchor {
                seq: h.seq,
                mac: hex::encode(&h.mac),
            }))
    }

    /// Checks the chain against an anchor taken earlier: its head is not before the anchored
    /// entry, and that entry is still the one anchored. Call it with [`AuditLog::verify`], which
    /// checks everything else.
    pub async fn check_anchor(
        &self,
        chain: WorkspaceId,
        anchor: &Anchor,
    ) -> Result<Option<Problem>, AuditError> {
        let head_seq = self.head(chain).await?.map_or(0, |h| h.seq);
        if head_seq < anchor.seq {
            return Ok(Some(Problem::RolledBack {
                anchored_seq: anchor.seq,
                head_seq,
            }));
        }
        let entry = self
            .raw_page(chain, anchor.seq.saturating_sub(1), 1)
            .await?
            .into_iter()
            .next();
        Ok(match entry {
            Some(e) if e.seq == anchor.seq && hex::encode(&e.mac) == anchor.mac => None,
            _ => Some(Problem::Diverged { seq: anchor.seq }),
        })
    }

    /// Checks one chain from its first entry to its head.
    pub async fn verify(&self, chain: WorkspaceId) -> Result<VerifyReport, AuditError> {
        let mut problems = Vec::new();
        let mut checked = 0u64;
        let mut failed: Vec<RawEntry> = Vec::new();
        // The last row seen: its position, stored MAC, and whether its MAC verified there.
        let mut last: Option<(u64, Vec<u8>, bool)> = None;
        let mut reported_last = false;
        let mut after = 0u64;
        // Entries are read, then the head: an entry appended in between shows as a head ahead
        // of the entries read, so reading goes on from where it stopped until the head is
        // reached. An entry commits with the head that names it: once a round after the first
        // reads nothing new while the head read before it is ahead, the tail was removed.
        let mut first = true;
        let head = loop {
            let read_before = checked;
            loop {
                let rows = self.raw_page(chain, after, PAGE).await?;
                let Some(end) = rows.last().map(|r| r.seq) else {
                    break;
                };
                for row in rows {
                    checked += 1;
                    let expected = last.as_ref().map_or(1, |(seq, _, _)| seq + 1);
                    if row.seq > expected {
                        problems.push(Problem::Removed {
                            from_seq: expected,
                            to_seq: row.seq - 1,
                        });
                    }
                    reported_last = true;
                    let verified = match row.key_version {
                        None => {
                            problems.push(Problem::Edited { seq: row.seq });
                            false
                        }
                        Some(version) => match self.keys().key(version) {
                            None => {
                                problems.push(Problem::UnknownKeyVersion {
                                    seq: row.seq,
                                    version,
                                });
                                false
                            }
                            Some(key) if row.verifies_as(key, chain, row.seq, row.at_ms) => {
                                // The MAC covers prev_mac, so it must name the entry before.
                                let predecessor = match &last {
                                    _ if row.seq == 1 => Some(&[0u8; 32][..]),
                                    Some((seq, mac, true)) if seq + 1 == row.seq => Some(&mac[..]),
                                    _ => None,
                                };
                                if predecessor.is_some_and(|p| p != row.prev_mac.as_slice()) {
                                    problems.push(Problem::Unlinked { seq: row.seq });
                                } else {
                                    reported_last = false;
                                }
                                true
                            }
                            Some(_) if failed.len() < MAX_SEARCHED => {
                                failed.push(row.clone());
                                false
                            }
                            Some(_) => {
                                problems.push(Problem::Edited { seq: row.seq });
                                false
                            }
                        },
                    };
                    last = Some((row.seq, row.mac, verified));
                }
                after = end;
            }
            let head = self.head(chain).await?;
            let last_seq = last.as_ref().map_or(0, |(seq, _, _)| *seq);
            match &head {
                Some(h) if h.seq > last_seq && (first || checked > read_before) => first = false,
                _ => break head,
            }
        };
        if !failed.is_empty() {
            for (row, origin) in failed.iter().zip(self.origins(chain, &failed).await?) {
                problems.push(match origin {
                    Some(written_as) => Problem::Reordered {
                        seq: row.seq,
                        written_as,
                    },
                    None => Problem::Edited { seq: row.seq },
                });
            }
        }
        match (head, &last) {
            (None, None) => {}
            (None, Some(_)) => problems.push(Problem::HeadMissing),
            (Some(head), _) => match self.keys().key(head.key_version) {
                None => problems.push(Problem::UnknownKeyVersion {
                    seq: head.seq,
                    version: head.key_version,
                }),
                Some(key) if !head.is_authentic(key, chain) => problems.push(Problem::HeadForged),
                Some(_) => {
                    let last_seq = last.as_ref().map_or(0, |(seq, _, _)| *seq);
                    if head.seq > last_seq {
                        problems.push(Problem::TailRemoved {
                            head_seq: head.seq,
                            last_seq,
                        });
                    } else if head.seq < last_seq {
                        problems.push(Problem::HeadBehind {
                            head_seq: head.seq,
                            last_seq,
                        });
                    } else if let Some((seq, mac, _)) = &last
                        && !reported_last
                        && *mac != head.mac
                    {
                        problems.push(Problem::Unlinked { seq: *seq });
                    }
                }
            },
        }
        problems.sort_by_key(Problem::position);
        Ok(VerifyReport {
            chain,
            entries_checked: checked,
            problems,
        })
    }

    /// For each entry whose MAC failed at its position, the position it was written at, if it
    /// is a genuine entry that was moved.
    async fn origins(
        &self,
        chain: WorkspaceId,
        failed: &[RawEntry],
    ) -> Result<Vec<Option<u64>>, AuditError> {
        // Positions (and times) of the other failed entries: a swap or rotation leaves every
        // moved entry failing where it now sits, each at the place of another. A partial swap
        // may have left the times behind, so try both this entry's time and that place's.
        let mut found: Vec<Option<u64>> = failed
            .iter()
            .map(|row| {
                let key = row.key_version.and_then(|v| self.keys().key(v))?;
                if row.prev_mac == [0u8; 32]
                    && row.seq != 1
                    && row.verifies_as(key, chain, 1, row.at_ms)
                {
                    return Some(1);
                }
                failed
                    .iter()
                    .filter(|other| other.seq != row.seq)
                    .find(|other| {
                        row.verifies_as(key, chain, other.seq, row.at_ms)
                            || row.verifies_as(key, chain, other.seq, other.at_ms)
                    })
                    .map(|other| other.seq)
            })
            .collect();
        // The rest: the entry after the one each `prev_mac` names, found in one more pass.
        let mut wanted: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for (i, row) in failed.iter().enumerate() {
            if found[i].is_none() {
                wanted.entry(row.prev_mac.as_slice()).or_default().push(i);
            }
        }
        if wanted.is_empty() {
            return Ok(found);
        }
        let mut after = 0u64;
        loop {
            let rows = self.raw_page(chain, after, PAGE).await?;
            let Some(end) = rows.last().map(|r| r.seq) else {
                break;
            };
            for predecessor in &rows {
                let Some(indexes) = wanted.get(predecessor.mac.as_slice()) else {
                    continue;
                };
                for &i in indexes {
                    let row = &failed[i];
                    let candidate = predecessor.seq + 1;
                    let key = row.key_version.and_then(|v| self.keys().key(v));
                    if found[i].is_none()
                        && candidate != row.seq
                        && key.is_some_and(|k| row.verifies_as(k, chain, candidate, row.at_ms))
                    {
                        found[i] = Some(candidate);
                    }
                }
            }
            after = end;
        }
        Ok(found)
    }
}
