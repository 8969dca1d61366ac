//! The plan: a pure function of (link state, remote snapshot, hub) that says what one run of a
//! link will do, action by action. No I/O: it can be printed (`--dry-run`) and tested alone.
//!
//! Sides are compared by keyed content hashes: a remote item changed when its etag differs
//! from the one last synced *and* its contents hash differently; a hub contact changed when
//! its hash differs from the one last synced. Neither needs the hub opened.

use std::collections::{HashMap, HashSet};

use sealsync_connector::ItemMeta;
use sealsync_store::{HubMeta, StateRow};
use sealsync_types::ContactId;
use serde::Serialize;

use crate::spec::{ConflictPolicy, DeleteVsEdit, Deletions, LinkSpec};

/// A keyed hash of a remote id.
pub type RemoteKey = [u8; 32];

/// A listed remote item and its key.
#[derive(Debug, Clone)]
pub struct Listed {
    pub meta: ItemMeta,
    pub key: RemoteKey,
}

/// What fetching a remote item gave: its keyed content hash, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Mac([u8; 32]),
    Failed(String),
}

/// A decision taken in the conflict queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    Hub,
    Remote,
}

/// Everything the plan looks at.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub spec: &'a LinkSpec,
    pub state: &'a [StateRow],
    /// The complete remote listing.
    pub listed: &'a [Listed],
    /// Contents hashes of the items that were fetched (new ones and those whose etag changed).
    pub fetched: &'a HashMap<RemoteKey, Fetched>,
    pub hub: &'a HashMap<ContactId, HubMeta>,
    /// New remote items matched to a hub contact (by UID, then email, then phone); also items
    /// bound to a contact deleted in the hub, which another contact may have replaced.
    pub matches: &'a HashMap<RemoteKey, ContactId>,
    /// Contacts waiting in this link's conflict queue, with a decision if one was taken.
    pub queued: &'a HashMap<ContactId, Option<Resolution>>,
}

/// Why a side's change won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    Changed,
    Conflict,
    Decided,
    EditWins,
    Restore,
}

/// One step of a run. `remote` indexes [`PlanInput::listed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// A new remote item becomes a new hub contact.
    PullCreate { remote: usize },
    /// A new remote item is the same person as a hub contact: merged into it.
    PullMerge { remote: usize, contact: ContactId },
    /// A new remote item equal to a hub contact (a rerun after a crash, an identical copy).
    Adopt { remote: usize, contact: ContactId },
    /// The remote version replaces the hub's.
    PullUpdate {
        remote: usize,
        contact: ContactId,
        why: Why,
    },
    /// The remote item is gone: the hub contact is deleted.
    PullDelete { contact: ContactId, key: RemoteKey },
    /// A hub contact is written to the endpoint as a new item.
    PushCreate { contact: ContactId, why: Why },
    /// The hub version replaces the remote item.
    PushUpdate {
        remote: usize,
        contact: ContactId,
        why: Why,
    },
    /// The hub contact is gone: the remote item is deleted.
    PushDelete { remote: usize, contact: ContactId },
    /// Both sides agree; only the link state moves forward.
    Refresh { remote: usize, contact: ContactId },
    /// The binding goes; neither side changes.
    Forget { contact: ContactId, key: RemoteKey },
    /// Both versions are kept: the remote one as a new hub contact, the hub one as a new item.
    KeepBoth { remote: usize, contact: ContactId },
    /// Changed on both sides (or deleted on one, edited on the other): queued for a decision.
    Queue {
        contact: ContactId,
        kind: ConflictKind,
    },
    /// A remote item that could not be read: left alone, retried next run.
    Skip { remote: usize, reason: String },
}

/// What kind of conflict waits in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKind {
    BothChanged,
    DeletedRemotely,
    DeletedInHub,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::BothChanged => "both-changed",
            ConflictKind::DeletedRemotely => "deleted-remotely",
            ConflictKind::DeletedInHub => "deleted-in-hub",
        }
    }
}

/// A run's plan: actions in the order they execute (hub side first), and what stays as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub unchanged: u64,
    /// How many bindings the link had before the run.
    pub linked: u64,
}

/// Why a plan is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the endpoint lists no items but the link holds {linked} contacts: refusing to treat that as {linked} deletions (pass --allow-mass-delete if it is meant)"
    )]
    EmptySnapshot { linked: u64 },
    #[error(
        "this run would delete {deletes} of the link's {linked} contacts, more than the allowed {share:.0}%: nothing was changed (pass --allow-mass-delete if it is meant)"
    )]
    MassDelete {
        deletes: u64,
        linked: u64,
        share: f64,
    },
}

impl Plan {
    /// Deletions the plan makes on either side.
    pub fn deletions(&self) -> u64 {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::PullDelete { .. } | Action::PushDelete { .. }))
            .count() as u64
    }

    /// Refuses a plan that looks like a broken endpoint rather than real deletions.
    pub fn check_guard(&self, spec: &LinkSpec, listed: usize) -> Result<(), PlanError> {
        if self.linked == 0 {
            return Ok(());
        }
        if listed == 0 {
            return Err(PlanError::EmptySnapshot {
                linked: self.linked,
            });
        }
        let deletes = self.deletions();
        if deletes as f64 > spec.max_delete_share * self.linked as f64 {
            return Err(PlanError::MassDelete {
                deletes,
                linked: self.linked,
                share: spec.max_delete_share * 100.0,
            });
        }
        Ok(())
    }
}

/// Which side a conflict goes to, or `None` to queue it.
fn decide(
    input: &PlanInput<'_>,
    contact: ContactId,
    hub: &HubMeta,
    remote: &Listed,
) -> Option<Resolution> {
    if let Some(Some(r)) = input.queued.get(&contact) {
        return Some(*r);
    }
    let spec = input.spec;
    match spec.conflict {
        ConflictPolicy::HubWins => Some(Resolution::Hub),
        ConflictPolicy::RemoteWins => Some(Resolution::Remote),
        ConflictPolicy::Newest => {
            // Seconds on both sides: the hub keeps seconds; a tie goes to the hub.
            let remote_s = remote.meta.modified_ms.map(|ms| ms.div_euclid(1000));
            match remote_s {
                Some(r) if r > hub.updated_at => Some(Resolution::Remote),
                _ => Some(Resolution::Hub),
            }
        }
        ConflictPolicy::KeepBoth | ConflictPolicy::Manual => None,
    }
}

/// Plans one run of a link.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let spec = input.spec;
    let dir = spec.direction;
    let mut pulls: Vec<Action> = Vec::new();
    let mut pushes: Vec<Action> = Vec::new();
    let mut unchanged = 0u64;

    let present: HashMap<RemoteKey, usize> = input
        .listed
        .iter()
        .enumerate()
        .map(|(i, l)| (l.key, i))
        .collect();
    let bound: HashSet<RemoteKey> = input.state.iter().map(|s| s.remote_key).collect();

    // A new item matched to a contact whose item vanished is that item, moved or renamed:
    // the binding follows it and it is judged as a changed item.
    let mut moved: HashMap<ContactId, usize> = HashMap::new();
    let state_of: HashMap<ContactId, &StateRow> =
        input.state.iter().map(|s| (s.contact, s)).collect();
    for (i, l) in input.listed.iter().enumerate() {
        if bound.contains(&l.key) {
            continue;
        }
        if let Some(c) = input.matches.get(&l.key)
            && let Some(s) = state_of.get(c)
            && !present.contains_key(&s.remote_key)
            && !moved.contains_key(c)
        {
            moved.insert(*c, i);
        }
    }

    let mut linked_contacts: HashSet<ContactId> = HashSet::new();
    let mut claimed: HashSet<ContactId> = HashSet::new();
    for s in input.state {
        linked_contacts.insert(s.contact);
        let hub = input.hub.get(&s.contact).filter(|h| !h.deleted);
        let hub_changed = hub.is_some_and(|h| h.mac != s.hub_mac);
        let at = present
            .get(&s.remote_key)
            .copied()
            .or_else(|| moved.get(&s.contact).copied());
        let was_moved = !present.contains_key(&s.remote_key) && at.is_some();
        let queued = input.queued.get(&s.contact).copied();

        let Some(at) = at else {
            // The remote item is gone.
            match hub {
                None => pulls.push(Action::Forget {
                    contact: s.contact,
                    key: s.remote_key,
                }),
                Some(_) if hub_changed => match (queued, spec.delete_vs_edit) {
                    (Some(Some(Resolution::Remote)), _) | (None, DeleteVsEdit::DeleteWins)
                        if dir.pulls() && spec.deletions == Deletions::Propagate =>
                    {
                        pulls.push(Action::PullDelete {
                            contact: s.contact,
                            key: s.remote_key,
                        })
                    }
                    _ if dir.pushes() => pushes.push(Action::PushCreate {
                        contact: s.contact,
                        why: Why::EditWins,
                    }),
                    _ => pulls.push(Action::Forget {
                        contact: s.contact,
                        key: s.remote_key,
                    }),
                },
                Some(_) if dir.pulls() && spec.deletions == Deletions::Propagate => {
                    pulls.push(Action::PullDelete {
                        contact: s.contact,
                        key: s.remote_key,
                    })
                }
                Some(_) if dir.pulls() => pulls.push(Action::Forget {
                    contact: s.contact,
                    key: s.remote_key,
                }),
                // A push-only link mirrors the hub: what was deleted there comes back.
                Some(_) => pushes.push(Action::PushCreate {
                    contact: s.contact,
                    why: Why::Restore,
                }),
            }
            continue;
        };
        let remote = &input.listed[at];
        let remote_changed = if was_moved || remote.meta.etag.as_str() != s.etag {
            match input.fetched.get(&remote.key) {
                Some(Fetched::Mac(m)) => Some(*m != s.remote_mac),
                Some(Fetched::Failed(reason)) => {
                    pulls.push(Action::Skip {
                        remote: at,
                        reason: reason.clone(),
                    });
                    continue;
                }
                None => {
                    pulls.push(Action::Skip {
                        remote: at,
                        reason: "not fetched".into(),
                    });
                    continue;
                }
            }
        } else {
            Some(false)
        };
        let remote_changed = remote_changed.unwrap_or(false);
        let remote_mac = match input.fetched.get(&remote.key) {
            Some(Fetched::Mac(m)) => Some(*m),
            _ => None,
        };
        match hub {
            None => {
                // Deleted in the hub.
                if remote_changed {
                    match (queued, spec.delete_vs_edit) {
                        (Some(Some(Resolution::Hub)), _) | (None, DeleteVsEdit::DeleteWins)
                            if dir.pushes() && spec.deletions == Deletions::Propagate =>
                        {
                            pushes.push(Action::PushDelete {
                                remote: at,
                                contact: s.contact,
                            })
                        }
                        _ if dir.pulls() => {
                            // The hub has a new contact for the same person (deleted, then
                            // created again): the edit goes to it, as a new item's would;
                            // restoring the old one would give the hub the person twice.
                            let successor = input
                                .matches
                                .get(&remote.key)
                                .copied()
                                .filter(|c| !state_of.contains_key(c) && !claimed.contains(c))
                                .and_then(|c| {
                                    input.hub.get(&c).filter(|h| !h.deleted).map(|h| (c, h))
                                });
                            match successor {
                                Some((c, h)) => {
                                    claimed.insert(c);
                                    pulls.push(if remote_mac == Some(h.mac) {
                                        Action::Adopt {
                                            remote: at,
                                            contact: c,
                                        }
                                    } else {
                                        Action::PullMerge {
                                            remote: at,
                                            contact: c,
                                        }
                                    });
                                }
                                None => pulls.push(Action::PullUpdate {
                                    remote: at,
                                    contact: s.contact,
                                    why: Why::EditWins,
                                }),
                            }
                        }
                        _ => pulls.push(Action::Forget {
                            contact: s.contact,
                            key: s.remote_key,
                        }),
                    }
                } else if dir.pushes() && spec.deletions == Deletions::Propagate {
                    pushes.push(Action::PushDelete {
                        remote: at,
                        contact: s.contact,
                    });
                } else if dir.pushes() {
                    pulls.push(Action::Forget {
                        contact: s.contact,
                        key: s.remote_key,
                    });
                } else {
                    unchanged += 1;
                }
            }
            Some(h) => {
                if hub_changed && remote_changed {
                    if remote_mac == Some(h.mac) {
                        pulls.push(Action::Refresh {
                            remote: at,
                            contact: s.contact,
                        });
                        continue;
                    }
                    match decide(input, s.contact, h, remote) {
                        Some(Resolution::Hub) if dir.pushes() => pushes.push(Action::PushUpdate {
                            remote: at,
                            contact: s.contact,
                            why: Why::Conflict,
                        }),
                        Some(Resolution::Remote) if dir.pulls() => pulls.push(Action::PullUpdate {
                            remote: at,
                            contact: s.contact,
                            why: Why::Conflict,
                        }),
                        Some(_) => pulls.push(Action::Refresh {
                            remote: at,
                            contact: s.contact,
                        }),
                        None if spec.conflict == ConflictPolicy::KeepBoth
                            && dir.pulls()
                            && dir.pushes() =>
                        {
                            pulls.push(Action::KeepBoth {
                                remote: at,
                                contact: s.contact,
                            })
                        }
                        None => pulls.push(Action::Queue {
                            contact: s.contact,
                            kind: ConflictKind::BothChanged,
                        }),
                    }
                } else if remote_changed {
                    if dir.pulls() {
                        pulls.push(Action::PullUpdate {
                            remote: at,
                            contact: s.contact,
                            why: Why::Changed,
                        });
                    } else {
                        unchanged += 1;
                    }
                } else if hub_changed {
                    if dir.pushes() {
                        pushes.push(Action::PushUpdate {
                            remote: at,
                            contact: s.contact,
                            why: Why::Changed,
                        });
                    } else {
                        unchanged += 1;
                    }
                } else if remote.meta.etag.as_str() != s.etag || was_moved {
                    pulls.push(Action::Refresh {
                        remote: at,
                        contact: s.contact,
                    });
                } else {
                    unchanged += 1;
                }
            }
        }
    }

    // New remote items.
    for (i, l) in input.listed.iter().enumerate() {
        if bound.contains(&l.key) || moved.values().any(|&m| m == i) {
            continue;
        }
        let mac = match input.fetched.get(&l.key) {
            Some(Fetched::Mac(m)) => *m,
            Some(Fetched::Failed(reason)) => {
                pulls.push(Action::Skip {
                    remote: i,
                    reason: reason.clone(),
                });
                continue;
            }
            None => {
                pulls.push(Action::Skip {
                    remote: i,
                    reason: "not fetched".into(),
                });
                continue;
            }
        };
        let matched = input
            .matches
            .get(&l.key)
            .copied()
            .filter(|c| !linked_contacts.contains(c) && !claimed.contains(c))
            .and_then(|c| input.hub.get(&c).filter(|h| !h.deleted).map(|h| (c, h)));
        match matched {
            Some((c, h)) => {
                claimed.insert(c);
                if h.mac == mac {
                    pulls.push(Action::Adopt {
                        remote: i,
                        contact: c,
                    });
                } else if dir.pulls() {
                    pulls.push(Action::PullMerge {
                        remote: i,
                        contact: c,
                    });
                } else {
                    pushes.push(Action::PushUpdate {
                        remote: i,
                        contact: c,
                        why: Why::Changed,
                    });
                }
            }
            None if dir.pulls() => pulls.push(Action::PullCreate { remote: i }),
            // A push-only link leaves the endpoint's own items alone.
            None => unchanged += 1,
        }
    }

    // Hub contacts the endpoint does not have yet.
    if dir.pushes() {
        let mut fresh: Vec<ContactId> = input
            .hub
            .values()
            .filter(|h| !h.deleted && !linked_contacts.contains(&h.id) && !claimed.contains(&h.id))
            .map(|h| h.id)
            .collect();
        fresh.sort_unstable();
        pushes.extend(fresh.into_iter().map(|contact| Action::PushCreate {
            contact,
            why: Why::Changed,
        }));
    }

    pulls.extend(pushes);
    Plan {
        actions: pulls,
        unchanged,
        linked: input.state.len() as u64,
    }
}
