//! What a link's plan reads: gathered in full, or only what changed since the link's mark.
//!
//! A link's mark ([`LinkMark`]) describes the state its last settled run left: every listed
//! item bound with its etag, every hub contact the link carries bound and up to date. It keeps
//! the listing's members (keyed hashes of id and etag). While the link's own clock has not
//! moved, a later run needs only
//! - the listed items whose member is new (new or changed items), with their link state,
//! - the hub contacts written since the mark's hub clock (each carries the clock of its last
//!   write), with their link state,
//! - and, for new items matched to a contact, that contact's state and metadata.
//!
//! Everything else is unchanged on both sides and would plan as unchanged. An item gone from
//! the listing (deleted or renamed) brings back the full gathering: deletions are judged against
//! the whole state, as are the mass-deletion guards. Debug builds gather both ways and check
//! that the plans agree.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sealsync_connector::{Connector, ConnectorError, ItemMeta, par};
use sealsync_store::{Clocks, HubMeta, LinkMark, PreparedContact, StateRow, StoreError};
use sealsync_types::ContactId;

use crate::plan::{Fetched, Listed, Plan, PlanInput, RemoteKey, Resolution, plan};
use crate::run::{Engine, Incoming, LinkDef, RunError};

/// From how many items to fetch a run holds no contents, where the endpoint fetches cheaply.
const FETCH_AGAIN_FROM: usize = 10_000;

/// A listing member as a mark keeps it: the first half of its keyed hash.
pub(crate) type Member = [u8; 16];

/// Everything a plan reads, but the conflict queue.
pub(crate) struct Gathered {
    pub state: Vec<StateRow>,
    pub hub: HashMap<ContactId, HubMeta>,
    pub listed: Vec<Listed>,
    pub fetched: HashMap<RemoteKey, Fetched>,
    pub incoming: HashMap<RemoteKey, Incoming>,
    pub matches: HashMap<RemoteKey, ContactId>,
    /// Listed items left out of `listed`: unchanged since the mark, like their contacts.
    pub left_out: u64,
    /// The link's bindings, all of them.
    pub linked: u64,
    /// Whether this is only what changed since the mark.
    pub since_mark: bool,
}

impl Gathered {
    pub fn plan(
        &self,
        spec: &crate::spec::LinkSpec,
        queued: &HashMap<ContactId, Option<Resolution>>,
    ) -> Plan {
        let mut p = plan(&PlanInput {
            spec,
            state: &self.state,
            listed: &self.listed,
            fetched: &self.fetched,
            hub: &self.hub,
            matches: &self.matches,
            queued,
        });
        p.unchanged += self.left_out;
        p.linked = self.linked;
        p
    }
}

/// The members a mark keeps, sorted, as bytes.
pub(crate) fn members_to_bytes(mut members: Vec<Member>) -> Vec<u8> {
    members.sort_unstable();
    members.dedup();
    members.concat()
}

fn members_from_bytes(bytes: &[u8]) -> Option<Vec<Member>> {
    if !bytes.len().is_multiple_of(16) {
        return None;
    }
    let members: Vec<Member> = bytes
        .chunks_exact(16)
        .map(|c| c.try_into().unwrap_or_default())
        .collect();
    members.is_sorted().then_some(members)
}

/// Once the fetched items are matched: lets go of what matching looked up, and gives what
/// planning takes of the fetch, each item's contents hash or why it was not fetched. (Made only
/// now, so that an initial sync does not hold both at once.)
fn matched(
    failed: HashMap<RemoteKey, String>,
    incoming: &mut HashMap<RemoteKey, Incoming>,
) -> HashMap<RemoteKey, Fetched> {
    let mut fetched = HashMap::with_capacity(failed.len() + incoming.len());
    for (key, inc) in incoming.iter_mut() {
        inc.matched();
        fetched.insert(*key, Fetched::Mac(inc.content_mac));
    }
    fetched.extend(failed.into_iter().map(|(k, e)| (k, Fetched::Failed(e))));
    fetched
}

/// Items fetched at a time; the next part is fetched while one is prepared. (Two in debug
/// builds, so that tests fetch in several parts.)
const FETCH_PART: usize = if cfg!(debug_assertions) { 2 } else { 500 };

impl Engine {
    /// Fetches these items and prepares each as the hub would take it, on every core (parsing,
    /// normalising and keyed hashes are CPU work); `f` turns a prepared item (and the listing's
    /// entry it was fetched for) into what the caller keeps, on the same cores. Each item may
    /// fail on its own.
    async fn fetch_prepared<T: Send>(
        &self,
        link: &LinkDef,
        conn: &Arc<dyn Connector>,
        wanted: &[&Listed],
        f: impl Fn(&Listed, ItemMeta, PreparedContact) -> Result<T, String> + Sync,
        mut keep: impl FnMut(RemoteKey, Result<T, String>),
    ) -> Result<(), RunError> {
        let listed: HashMap<&sealsync_connector::RemoteId, &Listed> =
            wanted.iter().map(|l| (&l.meta.id, *l)).collect();
        let fetch = |chunk: &[&Listed]| {
            let ids: Vec<_> = chunk.iter().map(|l| l.meta.id.clone()).collect();
            let conn = conn.clone();
            tokio::spawn(async move { conn.fetch(&ids).await })
        };
        let mut chunks = wanted.chunks(FETCH_PART);
        let mut next = chunks.next().map(fetch);
        while let Some(pending) = next.take() {
            let items = pending
                .await
                .unwrap_or_else(|e| {
                    Err(ConnectorError::Unavailable(format!(
                        "fetching stopped: {e}"
                    )))
                })
                .map_err(|error| RunError::Endpoint {
                    link: link.name.clone(),
                    error,
                })?;
            // The next part is fetched while this one is prepared. Let it start, and requests
            // served on the same runtime go first now and then.
            next = chunks.next().map(fetch);
            tokio::task::yield_now().await;
            let prepared = par::map(items, 64, |(id, item)| {
                let l = *listed.get(&id)?;
                Some(match item {
                    Ok(item) => {
                        let p = self.prepare_incoming(link, item.contact);
                        (l.key, f(l, item.meta, p))
                    }
                    Err(e) => (l.key, Err(e.to_string())),
                })
            });
            for (key, item) in prepared.into_iter().flatten() {
                keep(key, item);
            }
        }
        Ok(())
    }

    /// Fetches these items, prepares them and hashes their contents; returns the items that
    /// could not be fetched, with why, and the others.
    pub(crate) async fn fetch_items(
        &self,
        link: &LinkDef,
        conn: &Arc<dyn Connector>,
        wanted: &[&Listed],
    ) -> Result<(HashMap<RemoteKey, String>, HashMap<RemoteKey, Incoming>), RunError> {
        let mut failed = HashMap::new();
        let mut incoming = HashMap::with_capacity(wanted.len());
        // A large run from an endpoint that fetches cheaply reads each item again when its
        // action runs, rather than hold every one until then. (Debug builds do from the first
        // item, so that tests take that way.)
        let least = if cfg!(debug_assertions) {
            1
        } else {
            FETCH_AGAIN_FROM
        };
        let hold = !(conn.fetches_cheaply() && wanted.len() >= least);
        self.fetch_prepared(
            link,
            conn,
            wanted,
            |l, meta, p| Ok(Incoming::new(l, meta.etag, p, hold)),
            |key, item| match item {
                Ok(inc) => {
                    incoming.insert(key, inc);
                }
                Err(e) => {
                    failed.insert(key, e);
                }
            },
        )
        .await?;
        Ok((failed, incoming))
    }

    /// Fetches again the items of a batch whose contents the run did not hold, as the hub
    /// would take them. An item that cannot be read, or whose contents are no longer those
    /// the run planned with, maps to an error.
    pub(crate) async fn fetch_again(
        &self,
        link: &LinkDef,
        conn: &Arc<dyn Connector>,
        again: &[&Listed],
        incoming: &HashMap<RemoteKey, Incoming>,
    ) -> Result<HashMap<RemoteKey, Result<PreparedContact, String>>, RunError> {
        let mut out = HashMap::with_capacity(again.len());
        self.fetch_prepared(
            link,
            conn,
            again,
            |l, _, p| match incoming.get(&l.key) {
                Some(inc) if inc.content_mac == p.content_mac => Ok(p),
                _ => Err("changed while the run went on; the next run takes it up".to_owned()),
            },
            |key, item| {
                out.insert(key, item);
            },
        )
        .await?;
        Ok(out)
    }

    /// Gathers from the whole listing, link state and hub.
    pub(crate) async fn gather_full(
        &self,
        link: &LinkDef,
        conn: &Arc<dyn Connector>,
        items: Vec<ItemMeta>,
        mut state: Vec<StateRow>,
        hub: Vec<HubMeta>,
    ) -> Result<Gathered, RunError> {
        // In key order, as a gathering since the mark has it: plans do not depend on the
        // order the database returns rows in.
        state.sort_unstable_by_key(|s| s.remote_key);
        let listed: Vec<Listed> = items
            .into_iter()
            .map(|meta| Listed {
                key: self.remote_key(link.id, &meta.id),
                meta,
            })
            .collect();
        let hub: HashMap<ContactId, HubMeta> = hub.into_iter().map(|h| (h.id, h)).collect();
        let wanted = wanted(&state, &listed);
        let (failed, mut incoming) = self.fetch_items(link, conn, &wanted).await?;
        let matches = self.match_fresh(&state, &hub, &listed, &incoming).await?;
        let fetched = matched(failed, &mut incoming);
        Ok(Gathered {
            linked: state.len() as u64,
            state,
            hub,
            listed,
            fetched,
            incoming,
            matches,
            left_out: 0,
            since_mark: false,
        })
    }

    /// Matches new items to hub contacts: UID, then email, then phone. Items bound to a
    /// contact deleted in the hub are matched too: the hub may hold that person anew.
    async fn match_fresh(
        &self,
        state: &[StateRow],
        hub: &HashMap<ContactId, HubMeta>,
        listed: &[Listed],
        incoming: &HashMap<RemoteKey, Incoming>,
    ) -> Result<HashMap<RemoteKey, ContactId>, StoreError> {
        let bound: HashSet<RemoteKey> = state
            .iter()
            .filter(|s| hub.get(&s.contact).is_some_and(|h| !h.deleted))
            .map(|s| s.remote_key)
            .collect();
        let fresh: Vec<&Listed> = listed
            .iter()
            .filter(|l| !bound.contains(&l.key) && incoming.contains_key(&l.key))
            .collect();
        self.match_items(&fresh, incoming).await
    }

    /// Gathers only what changed since `mark`, whose link clock is the link's clock now and
    /// whose settings are the link's. `None` when that cannot be told apart from the rest
    /// (no members kept, an item gone) or would not read less.
    pub(crate) async fn gather_since(
        &self,
        link: &LinkDef,
        conn: &Arc<dyn Connector>,
        mark: &LinkMark,
        clocks: Clocks,
        items: &[ItemMeta],
        members: &[Member],
    ) -> Result<Option<Gathered>, RunError> {
        let ws = self.keys().workspace();
        let store = self.hub().store();
        let Some(kept) = store.link_members(ws, link.id).await? else {
            return Ok(None);
        };
        let Some(kept) = members_from_bytes(&kept) else {
            return Ok(None);
        };
        // The mark's state bound every item its listing had (and only those) when it binds as
        // many: a settled state binds no item that is not listed. Otherwise some listed items
        // are unbound (a push-only link's own items), and those are matched again every run.
        if store.link_state_count(ws, link.id).await? != kept.len() as u64 {
            return Ok(None);
        }
        let changed: Vec<usize> = (0..items.len())
            .filter(|&i| kept.binary_search(&members[i]).is_err())
            .collect();
        // Past a quarter of the listing, reading it all costs no more.
        let limit = items.len() / 4 + 64;
        if changed.len() > limit {
            return Ok(None);
        }
        let written = if clocks.hub > mark.clocks.hub {
            store.hub_meta_since(ws, mark.clocks.hub).await?
        } else {
            Vec::new()
        };
        if changed.len() + written.len() > limit {
            return Ok(None);
        }
        let mut picked: HashMap<usize, RemoteKey> = changed
            .iter()
            .map(|&i| (i, self.remote_key(link.id, &items[i].id)))
            .collect();
        let changed_keys: HashSet<RemoteKey> = picked.values().copied().collect();
        let keys: Vec<RemoteKey> = changed_keys.iter().copied().collect();
        let ids: Vec<ContactId> = written.iter().map(|h| h.id).collect();
        let mut state = store.link_state_of(ws, link.id, &keys, &ids).await?;
        // The mark's state bound every item it listed, each once: an item neither unchanged
        // nor listed again under its id is gone.
        let again = state
            .iter()
            .filter(|s| changed_keys.contains(&s.remote_key))
            .count();
        if kept.len() != items.len() - changed.len() + again {
            return Ok(None);
        }
        let mut hub: HashMap<ContactId, HubMeta> = written.into_iter().map(|h| (h.id, h)).collect();
        let missing: Vec<ContactId> = state
            .iter()
            .map(|s| s.contact)
            .filter(|c| !hub.contains_key(c))
            .collect();
        hub.extend(
            store
                .hub_meta_of(ws, &missing)
                .await?
                .into_iter()
                .map(|h| (h.id, h)),
        );

        let listed_at = |at: &[usize], picked: &HashMap<usize, RemoteKey>| -> Vec<Listed> {
            at.iter()
                .map(|i| Listed {
                    key: picked[i],
                    meta: items[*i].clone(),
                })
                .collect()
        };
        let fresh_listed = listed_at(&changed, &picked);
        let wanted = wanted(&state, &fresh_listed);
        let (failed, mut incoming) = self.fetch_items(link, conn, &wanted).await?;
        let matches = self
            .match_fresh(&state, &hub, &fresh_listed, &incoming)
            .await?;
        let fetched = matched(failed, &mut incoming);

        // A matched contact's binding elsewhere in the link decides what the match does.
        let known: HashSet<ContactId> = state.iter().map(|s| s.contact).collect();
        let mut more: Vec<ContactId> = matches
            .values()
            .filter(|c| !known.contains(c))
            .copied()
            .collect();
        more.sort_unstable();
        more.dedup();
        if !more.is_empty() {
            state.extend(store.link_state_of(ws, link.id, &[], &more).await?);
            let missing: Vec<ContactId> =
                more.into_iter().filter(|c| !hub.contains_key(c)).collect();
            hub.extend(
                store
                    .hub_meta_of(ws, &missing)
                    .await?
                    .into_iter()
                    .map(|h| (h.id, h)),
            );
        }
        state.sort_unstable_by_key(|s| s.remote_key);
        state.dedup_by_key(|s| s.remote_key);

        // The listed items of every binding read.
        let need: HashSet<RemoteKey> = state
            .iter()
            .map(|s| s.remote_key)
            .filter(|k| !changed_keys.contains(k))
            .collect();
        if !need.is_empty() {
            // An unchanged item is listed with the etag its binding recorded: only items with
            // one of those etags are worth a keyed hash (a listing of 100k items costs 100k
            // otherwise). A binding whose item is not found brings back the full gathering.
            let etags: HashSet<&str> = state
                .iter()
                .filter(|s| need.contains(&s.remote_key))
                .map(|s| s.etag.as_str())
                .collect();
            let mut found = 0;
            for (i, item) in items.iter().enumerate() {
                if picked.contains_key(&i) || !etags.contains(item.etag.as_str()) {
                    continue;
                }
                let key = self.remote_key(link.id, &item.id);
                if need.contains(&key) {
                    picked.insert(i, key);
                    found += 1;
                }
            }
            if found != need.len() {
                return Ok(None);
            }
        }
        let mut at: Vec<usize> = picked.keys().copied().collect();
        at.sort_unstable();
        let listed = listed_at(&at, &picked);
        Ok(Some(Gathered {
            left_out: (items.len() - listed.len()) as u64,
            linked: kept.len() as u64,
            state,
            hub,
            listed,
            fetched,
            incoming,
            matches,
            since_mark: true,
        }))
    }
}

/// The listed items to fetch: new ones, and those whose etag moved since they were synced.
fn wanted<'a>(state: &[StateRow], listed: &'a [Listed]) -> Vec<&'a Listed> {
    let etags: HashMap<RemoteKey, &str> = state
        .iter()
        .map(|s| (s.remote_key, s.etag.as_str()))
        .collect();
    listed
        .iter()
        .filter(|l| etags.get(&l.key).is_none_or(|e| *e != l.meta.etag.as_str()))
        .collect()
}

/// Whether two plans do the same, item for item (actions name items by their keys).
pub(crate) fn same_plans(a: &Plan, a_listed: &[Listed], b: &Plan, b_listed: &[Listed]) -> bool {
    let named = |p: &Plan, listed: &[Listed]| -> Vec<serde_json::Value> {
        p.actions
            .iter()
            .map(|action| {
                let mut v = serde_json::to_value(action).unwrap_or_default();
                if let Some(i) = v.get("remote").and_then(serde_json::Value::as_u64)
                    && let Some(l) = listed.get(i as usize)
                {
                    v["remote"] = serde_json::Value::from(l.key.to_vec());
                }
                v
            })
            .collect()
    };
    a.unchanged == b.unchanged && a.linked == b.linked && named(a, a_listed) == named(b, b_listed)
}
