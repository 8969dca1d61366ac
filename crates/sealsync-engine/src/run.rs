//! Running a link: list, fetch what changed, match, plan, execute, record.
//!
//! Execution goes action by action in batches; each batch's hub writes, link-state changes,
//! events and conflicts commit in one transaction, after the endpoint has made that batch's
//! writes durable. A crash at any point therefore leaves either the whole batch or none of it
//! in the hub; an endpoint write whose state did not commit is recognised on the next run (the
//! item is found equal to its hub contact and adopted), so a rerun converges to the state one
//! uninterrupted run gives, with no duplicates. Batches commit in order, each while the next
//! is worked out (a crash may then leave two batches' endpoint writes unrecorded, recognised
//! alike); large runs take larger batches, as fewer commits write far fewer pages.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sealsync_connector::credential::Credential;
use sealsync_connector::par;
use sealsync_connector::{Connector, ConnectorError, Etag, ItemMeta, Listing, RemoteId};
use sealsync_contact::Contact;
use sealsync_contact::vcard::{VcardVersion, read_all, to_vcard};
use sealsync_crypto::{IndexKind, RecordRef, SetSum, WorkspaceKeys};
use sealsync_store::{
    Clocks, ConflictRow, EventRow, Hub, HubMeta, LinkMark, Moved, PreparedContact, RunRow,
    StateRow, Store, StoreError, SyncBatch, now_ms,
};
use sealsync_types::{ConflictId, ContactId, EndpointId, LinkId, RunId, WorkspaceId};
use serde::Serialize;

use crate::gather::{Gathered, Member, members_to_bytes, same_plans};
use crate::inbox::Inbox;
use crate::outbox::Outbox;
use crate::plan::{Action, Listed, Plan, PlanError, RemoteKey, Resolution};
use crate::spec::{EndpointSpec, LinkSpec};
use crate::transform::{inbound, inbound_raw, merge, outbound};

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("link {link}: {error}")]
    Endpoint { link: String, error: ConnectorError },
    #[error("link {link}: {error}")]
    Guard { link: String, error: PlanError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "link {link} is being run by {holder}; wait for it to finish (a claim of a process that died is taken over)"
    )]
    Busy { link: String, holder: String },
    /// The test hook stopped the run, as a crash would.
    #[error("run interrupted at step {0} (test hook)")]
    Interrupted(u64),
}

impl RunError {
    /// What a run record says of the error: its kind and a message without the details
    /// (which name endpoints, paths and servers, and go to the log).
    pub fn summary(&self) -> serde_json::Value {
        let (error, message) = match self {
            RunError::Guard { error, .. } => ("guard", error.to_string()),
            RunError::Busy { .. } => ("busy", "another run of this link is going on".into()),
            RunError::Endpoint { .. } => (
                "endpoint",
                "the endpoint could not be read or written; see the log".into(),
            ),
            RunError::Store(_) | RunError::Interrupted(_) => (
                "internal",
                "the run stopped on a storage error; see the log".into(),
            ),
        };
        serde_json::json!({"error": error, "message": message})
    }
}

/// A link as the engine runs it.
#[derive(Debug, Clone)]
pub struct LinkDef {
    pub id: LinkId,
    pub name: String,
    pub spec: LinkSpec,
    pub endpoint_name: String,
    pub endpoint_id: EndpointId,
    pub endpoint: EndpointSpec,
}

/// Actions per transaction of a link run, unless a caller needs smaller ones (webhook groups
/// that answer a sender). Each commit writes every page it touched; random keys (blind
/// indexes, link state) touch many, so fewer, larger commits write far less.
pub const DEFAULT_BATCH: usize = 1000;

/// The most actions per transaction of a large run (an initial sync): its sealed rows and
/// bindings are held until they commit.
pub const LARGE_BATCH: usize = 8192;

/// A batch's actions are worked a part of this many at a time: the items fetched again and
/// the hub contacts opened for a part are let go before the next part's are read. (Debug
/// builds take parts of two, so that tests work batches of several parts.)
const OPENED_PART: usize = if cfg!(debug_assertions) { 2 } else { 1024 };

/// New items are looked up in the hub's indexes this many at a time (two in debug builds, so
/// that tests match across parts).
const MATCH_PART: usize = if cfg!(debug_assertions) { 2 } else { 4096 };

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plan only; change nothing.
    pub dry_run: bool,
    /// Go on even when the plan deletes more than the link allows.
    pub allow_mass_delete: bool,
    /// Actions per transaction.
    pub batch: usize,
    /// Test hook: stop as if killed when this many steps have run (a step is the start of an
    /// action, or the moment after an endpoint write and before its state is committed).
    pub interrupt_at: Option<u64>,
}

/// What a run did, per side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub hub_created: u64,
    pub hub_updated: u64,
    pub hub_deleted: u64,
    pub remote_created: u64,
    pub remote_updated: u64,
    pub remote_deleted: u64,
}

/// One item that went wrong; the run went on. Names ids, never contact data.
#[derive(Debug, Clone, Serialize)]
pub struct ItemError {
    pub remote: Option<String>,
    pub contact: Option<ContactId>,
    pub error: String,
}

/// The outcome of one link's run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub link: String,
    pub run: Option<RunId>,
    pub counts: Counts,
    pub errors: Vec<ItemError>,
    #[serde(skip)]
    pub plan: Option<Plan>,
    #[serde(skip)]
    pub listed: Vec<Listed>,
    /// The link was settled: nothing its plan reads had changed since its last run left
    /// nothing to do, so it was not planned again.
    #[serde(skip)]
    pub settled: bool,
    /// The run planned from what changed since the link's last settled run (the listed items
    /// whose etag moved, the hub contacts written since), not from its whole state.
    #[serde(skip)]
    pub since_mark: bool,
    /// The account whose credentials the run used (callers audit the use).
    #[serde(skip)]
    pub account: Option<sealsync_types::AccountId>,
    /// The `oauth-app` account whose client secret refreshed the account's grant, if it was.
    #[serde(skip)]
    pub app_account: Option<sealsync_types::AccountId>,
}

impl RunReport {
    /// Every account whose secret the run opened.
    pub fn accounts_used(&self) -> impl Iterator<Item = sealsync_types::AccountId> + '_ {
        self.account.into_iter().chain(self.app_account)
    }
}

impl RunReport {
    /// Adds a follow-up run's counts and errors to this one.
    fn absorb(&mut self, more: RunReport) {
        self.app_account = self.app_account.or(more.app_account);
        let (a, b) = (&mut self.counts, &more.counts);
        a.hub_created += b.hub_created;
        a.hub_updated += b.hub_updated;
        a.hub_deleted += b.hub_deleted;
        a.remote_created += b.remote_created;
        a.remote_updated += b.remote_updated;
        a.remote_deleted += b.remote_deleted;
        a.created += b.created;
        a.updated += b.updated;
        a.deleted += b.deleted;
        a.conflicts += b.conflicts;
        a.rejected += b.rejected;
        // Unchanged is what the last look found unchanged.
        a.unchanged = b.unchanged;
        self.errors.extend(more.errors);
        self.run = more.run.or(self.run);
    }
}

/// Progress of a run: actions done of actions planned.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// The sync engine of one workspace.
#[derive(Debug, Clone)]
pub struct Engine {
    hub: Hub,
    keys: Arc<WorkspaceKeys>,
    region: Option<String>,
}

/// A fetched remote item: what planning and matching need, and the contact itself as vCard
/// text, a fraction of the parsed form's size (an initial sync holds every item until it is
/// executed), parsed again when its action runs. A large run from an endpoint that fetches
/// cheaply holds no text: its items are fetched again, a batch at a time, when their actions
/// run.
pub(crate) struct Incoming {
    /// The etag of the fetched item, which the binding records ([`Incoming::etag`]); `None`
    /// when it is the listed one, as it mostly is (a large run holds every item's).
    etag: Option<Etag>,
    vcard: Option<zeroize::Zeroizing<String>>,
    pub(crate) content_mac: [u8; 32],
    /// What matching looks up, until the item is matched ([`Incoming::matched`]).
    keys: Option<Box<MatchKeys>>,
}

/// The blind-indexed values a new item is matched to hub contacts by.
struct MatchKeys {
    uid_mac: Option<[u8; 32]>,
    email_macs: Vec<[u8; 32]>,
    phone_macs: Vec<[u8; 32]>,
}

impl Incoming {
    pub(crate) fn new(listed: &Listed, etag: Etag, mut p: PreparedContact, hold: bool) -> Self {
        // Held until the item's action runs, for every fetched item: each value takes only
        // the room it needs (the text's growth left it up to twice that; the written text is
        // wiped, not shrunk in place, which would free it unwiped).
        let vcard = hold.then(|| {
            let written = zeroize::Zeroizing::new(to_vcard(&p.contact, VcardVersion::V4));
            zeroize::Zeroizing::new(written.as_str().to_owned())
        });
        p.email_macs.shrink_to_fit();
        p.phone_macs.shrink_to_fit();
        Self {
            etag: (etag != listed.meta.etag).then_some(etag),
            vcard,
            content_mac: p.content_mac,
            keys: Some(Box::new(MatchKeys {
                uid_mac: p.uid_mac,
                email_macs: p.email_macs,
                phone_macs: p.phone_macs,
            })),
        }
    }

    /// The etag of the fetched item, listed as `listed`.
    fn etag<'a>(&'a self, listed: &'a Listed) -> &'a Etag {
        self.etag.as_ref().unwrap_or(&listed.meta.etag)
    }

    /// Matching is over: what it looked up is let go (a large run holds every item until its
    /// action runs).
    pub(crate) fn matched(&mut self) {
        self.keys = None;
    }

    /// Whether the item's action needs it fetched again.
    pub(crate) fn fetched_again(&self) -> bool {
        self.vcard.is_none()
    }

    fn contact(&self) -> Result<Contact, RunError> {
        let text = self.vcard.as_deref().map_or("", String::as_str);
        read_all(text.as_bytes())
            .0
            .into_iter()
            .next()
            .map(|c| c.contact)
            .ok_or(RunError::Store(StoreError::Corrupt(
                "a fetched item did not read back",
            )))
    }
}

struct Ctx<'a> {
    link: &'a LinkDef,
    run: RunId,
    conn: Arc<dyn Connector>,
    listed: &'a [Listed],
    incoming: HashMap<RemoteKey, Incoming>,
    /// The contacts of this batch's items that hold no text, fetched again and prepared.
    again: HashMap<RemoteKey, Result<PreparedContact, String>>,
    /// New items this part wrote ahead, by hub contact: the write's result and the keyed hash
    /// of what was written (see [`Engine::create_ahead`]).
    created: HashMap<ContactId, (Result<ItemMeta, ConnectorError>, [u8; 32])>,
    hub: &'a HashMap<ContactId, HubMeta>,
    versions: HashMap<ContactId, i64>,
    queued: HashMap<ContactId, Option<Resolution>>,
    batch: SyncBatch,
    counts: Counts,
    errors: Vec<ItemError>,
    seq: i64,
    steps: u64,
    interrupt_at: Option<u64>,
    /// The endpoint's listing as this run leaves it: the listing it read, with its own writes.
    listing: SetSum,
    /// Members this run's writes took from the listing (`false`) and added to it (`true`), in
    /// the order of the writes.
    wrote: Vec<(Member, bool)>,
}

impl Engine {
    pub fn new(hub: Hub, keys: Arc<WorkspaceKeys>, region: Option<String>) -> Self {
        Self { hub, keys, region }
    }

    pub fn keys(&self) -> &WorkspaceKeys {
        &self.keys
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(crate) fn remote_key(&self, link: LinkId, id: &RemoteId) -> RemoteKey {
        self.keys
            .blind_index()
            .index(IndexKind::Remote, &format!("{link}\u{1f}{}", id.as_str()))
    }

    /// Runs one link. Only one run of a link goes on at a time, across processes and hosts
    /// sharing the database: a second one is refused while the first holds the link's claim.
    pub async fn run(
        &self,
        link: &LinkDef,
        options: &RunOptions,
        progress: Progress<'_>,
    ) -> Result<RunReport, RunError> {
        self.run_as(link, options, progress, None).await
    }

    /// [`Engine::run`], recording the run under `run_id` (which the caller has already shown,
    /// for example in an API answer) instead of a new id. A dry run records nothing.
    pub async fn run_as(
        &self,
        link: &LinkDef,
        options: &RunOptions,
        progress: Progress<'_>,
        run_id: Option<RunId>,
    ) -> Result<RunReport, RunError> {
        self.run_inner(link, options, progress, run_id, Chain::default())
            .await
    }

    async fn run_inner(
        &self,
        link: &LinkDef,
        options: &RunOptions,
        progress: Progress<'_>,
        run_id: Option<RunId>,
        chain: Chain,
    ) -> Result<RunReport, RunError> {
        if options.dry_run {
            return self
                .run_claimed(link, options, progress, None, None, chain)
                .await;
        }
        let run_id = run_id.unwrap_or_default();
        let started = now_ms();
        self.with_claim(link, async |holder| {
            let result = self
                .run_claimed(link, options, progress, Some(holder), Some(run_id), chain)
                .await;
            // A run stopped by an error is recorded as failed (with the kind of error, never
            // its details), whether it stopped before its first action or after. The test
            // hook's stop stands for a crash: the run stays recorded as it was.
            if let Err(e) = &result
                && !matches!(e, RunError::Interrupted(_))
            {
                let row = RunRow {
                    id: run_id,
                    link: link.id,
                    started_at: started,
                    ended_at: Some(now_ms()),
                    status: "failed".into(),
                    counts: e.summary().to_string(),
                };
                if let Err(store_error) = self
                    .hub
                    .store()
                    .put_run(self.keys.workspace(), &row)
                    .await
                {
                    tracing::warn!(link = %link.name, run = %run_id, error = %store_error, "A failed run could not be recorded.");
                }
            }
            result
        })
        .await
    }

    /// Claims `link` for this process (refused while another holds it), does `work` under
    /// the claim and releases it, unless the work stopped as a crash would: then the claim
    /// goes stale, or its dead holder is recognised.
    pub(crate) async fn with_claim<T>(
        &self,
        link: &LinkDef,
        work: impl AsyncFnOnce(&str) -> Result<T, RunError>,
    ) -> Result<T, RunError> {
        let ws = self.keys.workspace();
        let store = self.hub.store();
        let claim = LiveClaim::new();
        let holder = claim.holder();
        if let Err(other) = store
            .claim_link(ws, link.id, holder, CLAIM_STALE_AFTER_S, holder_gone)
            .await?
        {
            return Err(RunError::Busy {
                link: link.name.clone(),
                holder: other,
            });
        }
        // No other run of the link goes on now: one still recorded as running was cut short.
        let cut = store
            .interrupt_runs(ws, link.id, now_ms(), holder_gone)
            .await?;
        if cut > 0 {
            tracing::info!(link = %link.name, runs = cut, "Runs of the link that stopped without finishing are recorded as interrupted.");
        }
        let result = work(holder).await;
        if !matches!(result, Err(RunError::Interrupted(_))) {
            store.renew_link_claim(ws, link.id, holder, true).await?;
        }
        result
    }

    async fn run_claimed(
        &self,
        link: &LinkDef,
        options: &RunOptions,
        progress: Progress<'_>,
        holder: Option<&str>,
        run_id: Option<RunId>,
        chain: Chain,
    ) -> Result<RunReport, RunError> {
        let Chain { ahead, listed } = chain;
        let ws = self.keys.workspace();
        let store = self.hub.store();
        let endpoint_error = |error| RunError::Endpoint {
            link: link.name.clone(),
            error,
        };
        // The account's secret is opened here, for this run only. A webhook source's account
        // signs deliveries; its run reads the store.
        let mut app_account = None;
        let (account, credential) = match link.endpoint.account() {
            Some(name) if !link.endpoint.pull_only() => {
                let (id, c) = self.open_account(name).await.map_err(|e| {
                    endpoint_error(ConnectorError::Config(format!("account {name:?}: {e}")))
                })?;
                // A grant's access token, refreshed first when it is about to expire.
                let c = match c {
                    Credential::OAuth(_) if !options.dry_run => {
                        let (grant, app) = self.oauth_access(name).await.map_err(endpoint_error)?;
                        app_account = app;
                        Credential::OAuth(grant)
                    }
                    other => other,
                };
                (Some(id), Some(c))
            }
            _ => (None, None),
        };
        let conn: Arc<dyn Connector> = match &link.endpoint {
            EndpointSpec::Webhook { .. } => Arc::new(Inbox::new(
                store.clone(),
                self.keys.clone(),
                link.endpoint_id,
            )),
            EndpointSpec::WebhookOut { .. } => {
                let sender = match &credential {
                    Some(c) if !options.dry_run => Some(Arc::new(
                        self.webhook_sender(&link.endpoint, c)
                            .await
                            .map_err(endpoint_error)?,
                    )),
                    _ => None,
                };
                Arc::new(Outbox::new(
                    store.clone(),
                    self.keys.clone(),
                    link.endpoint_id,
                    sender,
                ))
            }
            other => {
                let hosts = store.egress_hosts(ws).await?.unwrap_or_default();
                other
                    .open(credential.as_ref(), &hosts)
                    .map_err(endpoint_error)?
            }
        };
        drop(credential);

        // 1. What is there now, on both sides. The change clocks are read before anything
        // they cover, so that a mark recorded with them never claims a later state.
        let began = std::time::Instant::now();
        let earlier = self.open_cursor(link.id).await?;
        let from = earlier.as_deref().map(Vec::as_slice);
        let clocks = store.clocks(ws, link.id).await?;
        let settings = self.settings_digest(link);
        // A mark is of use while the link's state and settings are as it left them; the hub
        // may have moved since (its contacts say when they were written).
        let mark = match options.dry_run {
            true => None,
            false => store.link_mark(ws, link.id).await?.filter(|m| {
                m.clocks.link == clocks.link && m.clocks.hub <= clocks.hub && m.settings == settings
            }),
        };
        // A listing started ahead serves a run that has no cursor to list from.
        let listed_ahead = async {
            match ahead {
                Some(ahead) if from.is_none() => match ahead.task.await {
                    Ok(listing) => listing,
                    Err(_) => conn.list_from(from).await,
                },
                _ => conn.list_from(from).await,
            }
        };
        let (listing, loaded) = if mark.is_some() {
            // Only the listing and what was written since the mark can show work: the listing
            // is read alone first.
            (listed_ahead.await, None)
        } else {
            // Both sides at the same time.
            let (listing, state, hub) = tokio::join!(
                listed_ahead,
                store.link_state(ws, link.id),
                store.hub_meta(ws),
            );
            (listing, Some((state, hub)))
        };
        // The next link's listing may start.
        drop(listed);
        // The endpoint's listing builds on the cursor its last one left, which describes only
        // the endpoint, so it is kept at once.
        let listing = listing.map_err(endpoint_error)?;
        drop(earlier);
        let cursor = listing.cursor.map(zeroize::Zeroizing::new);
        if !options.dry_run {
            self.keep_cursor(link.id, cursor.as_deref().map(Vec::as_slice))
                .await?;
        }
        let items = listing.snapshot.items;
        let mut listing_sum = SetSum::default();
        let mut members: Vec<Member> = Vec::with_capacity(items.len());
        for member in self.listing_members(&items) {
            listing_sum.add(&member);
            members.push(short(&member));
        }
        let settled = mark.as_ref().is_some_and(|m| {
            m.clocks == clocks && m.digest == self.mark_digest(&settings, listing_sum)
        });
        let listed_in = began.elapsed();
        // A settled link's run has nothing to do. Debug builds plan it anyway and check that
        // the plan is empty, so that every test that syncs twice checks the marks.
        let settled_run = async || {
            self.record_settled(
                link,
                run_id,
                listing_sum.count(),
                progress,
                account,
                app_account,
            )
            .await
        };
        if settled && !cfg!(debug_assertions) {
            return settled_run().await;
        }
        let conflicts = store.conflicts(ws).await?;
        let queued: HashMap<ContactId, Option<Resolution>> = conflicts
            .into_iter()
            .filter(|c| c.link == link.id)
            .map(|c| {
                let r = match c.resolution.as_deref() {
                    Some("hub") => Some(Resolution::Hub),
                    Some("remote") => Some(Resolution::Remote),
                    _ => None,
                };
                (c.contact, r)
            })
            .collect();

        // 2. Fetch what is new or whose etag moved; match new items to hub contacts; plan.
        // Since the mark where one serves, else in full.
        let since = match &mark {
            Some(m) if !settled => {
                self.gather_since(link, &conn, m, clocks, &items, &members)
                    .await?
            }
            _ => None,
        };
        let gathered = match since {
            Some(since) => {
                if cfg!(debug_assertions) {
                    let (state, hub) =
                        tokio::join!(store.link_state(ws, link.id), store.hub_meta(ws));
                    let full = self
                        .gather_full(link, &conn, items.clone(), state?, hub?)
                        .await?;
                    let (a, b) = (
                        since.plan(&link.spec, &queued),
                        full.plan(&link.spec, &queued),
                    );
                    debug_assert!(
                        same_plans(&a, &since.listed, &b, &full.listed),
                        "link {}: planned since its mark {a:?}, in full {b:?}",
                        link.name
                    );
                }
                since
            }
            None => {
                let (state, hub) = match loaded {
                    Some(loaded) => loaded,
                    None => tokio::join!(store.link_state(ws, link.id), store.hub_meta(ws)),
                };
                self.gather_full(link, &conn, items, state?, hub?).await?
            }
        };
        let loaded_in = began.elapsed();
        let the_plan = gathered.plan(&link.spec, &queued);
        let Gathered {
            listed,
            hub,
            incoming,
            since_mark,
            state,
            fetched,
            matches,
            ..
        } = gathered;
        // What only planning needed goes now, not when the run ends.
        drop((state, fetched, matches));
        tracing::debug!(
            link = %link.name,
            listed = listing_sum.count(),
            since_mark,
            listed_ms = listed_in.as_millis(),
            loaded_ms = loaded_in.as_millis(),
            planned_ms = began.elapsed().as_millis(),
            actions = the_plan.actions.len(),
            "Link run planned."
        );
        if !options.allow_mass_delete {
            the_plan
                .check_guard(&link.spec, listing_sum.count() as usize)
                .map_err(|error| RunError::Guard {
                    link: link.name.clone(),
                    error,
                })?;
        }
        if settled {
            debug_assert!(
                the_plan.actions.is_empty() && the_plan.unchanged == listing_sum.count(),
                "link {}: its mark says settled, but its plan has {} actions",
                link.name,
                the_plan.actions.len()
            );
            return settled_run().await;
        }
        // Whether the state this run leaves, if every action goes through, is settled: its plan
        // would be empty. Skips and conflicts come back every run; an unlinked contact may
        // be pushed again.
        let settles = the_plan.actions.iter().all(settles);
        if options.dry_run {
            return Ok(RunReport {
                link: link.name.clone(),
                run: None,
                counts: Counts {
                    unchanged: the_plan.unchanged,
                    ..Counts::default()
                },
                errors: Vec::new(),
                plan: Some(the_plan),
                listed,
                settled: false,
                since_mark: false,
                account,
                app_account,
            });
        }

        // 5. Execute, recording the run.
        let run_id = run_id.unwrap_or_default();
        let started = now_ms();
        let mut run_row = RunRow {
            id: run_id,
            link: link.id,
            started_at: started,
            ended_at: None,
            status: "running".into(),
            counts: "{}".into(),
        };
        store.put_run(ws, &run_row).await?;
        let mut ctx = Ctx {
            link,
            run: run_id,
            conn,
            listed: &listed,
            incoming,
            again: HashMap::new(),
            created: HashMap::new(),
            hub: &hub,
            versions: hub.values().map(|h| (h.id, h.version)).collect(),
            queued,
            batch: SyncBatch::default(),
            counts: Counts {
                unchanged: the_plan.unchanged,
                ..Counts::default()
            },
            errors: Vec::new(),
            seq: 0,
            steps: 0,
            interrupt_at: options.interrupt_at,
            listing: listing_sum,
            wrote: Vec::new(),
        };
        // The clocks as this run's own writes move them; `None` once another writer moved one.
        let mut expect = Some(clocks);
        let total = the_plan.actions.len() as u64;
        let batch = batch_size(options.batch, the_plan.actions.len());
        progress(0, total);
        // Each batch commits while the next one is worked out: its endpoint writes are durable
        // already, and a batch that reads a contact the one committing writes waits for it.
        // Webhook endpoints keep their records in the store: their batches go one by one.
        let overlap = !matches!(
            link.endpoint,
            EndpointSpec::Webhook { .. } | EndpointSpec::WebhookOut { .. }
        );
        let mut committing: Option<Committing> = None;
        let mut done = 0u64;
        for chunk in the_plan.actions.chunks(batch) {
            let needed: Vec<ContactId> = chunk
                .iter()
                .filter_map(|a| needs_hub_contact(&link.spec, a))
                .collect();
            if let Some(c) = committing.take_if(|c| needed.iter().any(|n| c.writes.contains(n))) {
                done += c.settle(store, ws, link.id, holder, &mut expect).await?;
                progress(done, total);
            }
            let worked = async {
                // A part at a time, so that only a part's contacts are held in full at once.
                for part in chunk.chunks(OPENED_PART) {
                    let again: Vec<&Listed> = part
                        .iter()
                        .filter_map(pulled)
                        .map(|i| &listed[i])
                        .filter(|l| {
                            ctx.incoming
                                .get(&l.key)
                                .is_some_and(Incoming::fetched_again)
                        })
                        .collect();
                    ctx.again = self
                        .fetch_again(link, &ctx.conn, &again, &ctx.incoming)
                        .await?;
                    let needed: Vec<ContactId> = part
                        .iter()
                        .filter_map(|a| needs_hub_contact(&link.spec, a))
                        .collect();
                    let (opened, unreadable) = self.hub.open_contacts(&self.keys, &needed).await?;
                    for e in unreadable {
                        ctx.errors.push(ItemError {
                            remote: None,
                            contact: Some(e.id),
                            error: e.error,
                        });
                    }
                    ctx.created = self.create_ahead(&ctx, part, &opened).await;
                    for (i, action) in part.iter().enumerate() {
                        ctx.step()?;
                        self.execute(&mut ctx, action, &opened).await?;
                        // Sealing and matching are CPU work between awaits: let requests
                        // served on the same runtime go first now and then.
                        if i % 16 == 15 {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                // The endpoint's writes are durable before the state that records them
                // commits.
                ctx.conn.flush().await.map_err(endpoint_error)
            }
            .await;
            // Whatever happens next, the batch handed to the store commits first, as it would
            // if the process stopped here.
            let earlier = match committing.take() {
                Some(c) => c.settle(store, ws, link.id, holder, &mut expect).await,
                None => Ok(0),
            };
            worked?;
            done += earlier?;
            progress(done, total);
            let rows = std::mem::take(&mut ctx.batch);
            let c = Committing::start(store, ws, link.id, run_id, rows, chunk.len() as u64);
            if overlap {
                committing = Some(c);
            } else {
                done += c.settle(store, ws, link.id, holder, &mut expect).await?;
                progress(done, total);
            }
        }
        if let Some(c) = committing.take() {
            done += c.settle(store, ws, link.id, holder, &mut expect).await?;
            progress(done, total);
        }
        let c = &mut ctx.counts;
        c.created = c.hub_created + c.remote_created;
        c.updated = c.hub_updated + c.remote_updated;
        c.deleted = c.hub_deleted + c.remote_deleted;
        run_row.ended_at = Some(now_ms());
        run_row.status = if ctx.errors.is_empty() && ctx.counts.rejected == 0 {
            "ok"
        } else {
            "partial"
        }
        .into();
        run_row.counts = serde_json::to_string(&ctx.counts).unwrap_or_else(|_| "{}".into());
        store.put_run(ws, &run_row).await?;
        let c = &ctx.counts;
        if let Some(clocks) = expect
            && settles
            && ctx.errors.is_empty()
            && c.rejected == 0
            && c.conflicts == 0
        {
            let mark = LinkMark {
                clocks,
                digest: self.mark_digest(&settings, ctx.listing),
                settings,
            };
            // The listing as this run leaves it: each member its writes touched is where its
            // last write left it.
            let last: HashMap<Member, bool> = ctx.wrote.iter().copied().collect();
            let mut members = members;
            members.retain(|m| !last.contains_key(m));
            members.extend(last.into_iter().filter(|(_, there)| *there).map(|(m, _)| m));
            let members = members_to_bytes(members);
            store
                .put_link_mark(ws, link.id, Some((&mark, &members)))
                .await?;
        }
        // This run's own writes would show as changes in the next listing: move the cursor past
        // them now (their etags are in the link state). Best effort: the old cursor stays valid.
        let wrote =
            ctx.counts.remote_created + ctx.counts.remote_updated + ctx.counts.remote_deleted;
        if let (Some(cursor), true) = (cursor.as_deref(), wrote > 0)
            && let Ok(after) = ctx.conn.list_from(Some(cursor)).await
            && let Some(after) = after.cursor.map(zeroize::Zeroizing::new)
        {
            self.keep_cursor(link.id, Some(&after)).await?;
        }
        // The endpoint's background work ends with the run (a vdir's old versions are gone).
        ctx.conn.finish().await.map_err(endpoint_error)?;
        tracing::info!(
            link = %link.name,
            run = %run_id,
            created = ctx.counts.created,
            updated = ctx.counts.updated,
            deleted = ctx.counts.deleted,
            conflicts = ctx.counts.conflicts,
            rejected = ctx.counts.rejected,
            "Link run finished."
        );
        Ok(RunReport {
            link: link.name.clone(),
            run: Some(run_id),
            counts: ctx.counts,
            errors: ctx.errors,
            plan: None,
            listed: Vec::new(),
            settled: false,
            since_mark,
            account,
            app_account,
        })
    }

    /// Records the run of a settled link: nothing to do, every listed item unchanged.
    async fn record_settled(
        &self,
        link: &LinkDef,
        run_id: Option<RunId>,
        unchanged: u64,
        progress: Progress<'_>,
        account: Option<sealsync_types::AccountId>,
        app_account: Option<sealsync_types::AccountId>,
    ) -> Result<RunReport, RunError> {
        progress(0, 0);
        let counts = Counts {
            unchanged,
            ..Counts::default()
        };
        let now = now_ms();
        let run_id = run_id.unwrap_or_default();
        let row = RunRow {
            id: run_id,
            link: link.id,
            started_at: now,
            ended_at: Some(now),
            status: "ok".into(),
            counts: serde_json::to_string(&counts).unwrap_or_else(|_| "{}".into()),
        };
        self.hub
            .store()
            .put_run(self.keys.workspace(), &row)
            .await?;
        tracing::info!(link = %link.name, run = %run_id, unchanged, "Link run finished: nothing changed since the last one.");
        Ok(RunReport {
            link: link.name.clone(),
            run: Some(run_id),
            counts,
            errors: Vec::new(),
            plan: None,
            listed: Vec::new(),
            settled: true,
            since_mark: false,
            account,
            app_account,
        })
    }

    /// The members of a whole listing, in its order: a large one on every core.
    fn listing_members(&self, items: &[ItemMeta]) -> Vec<[u8; 32]> {
        let items: Vec<&ItemMeta> = items.iter().collect();
        par::map(items, 8192, |m| self.listing_member(&m.id, &m.etag))
    }

    /// A listed item as a member of the listing's [`SetSum`].
    fn listing_member(&self, id: &RemoteId, etag: &Etag) -> [u8; 32] {
        self.keys
            .blind_index()
            .member(id.as_str().as_bytes(), etag.as_str().as_bytes())
    }

    /// The digest of a link's settings a mark keeps: keyed, over the link's settings and its
    /// endpoint's.
    fn settings_digest(&self, link: &LinkDef) -> [u8; 32] {
        let settings = serde_json::to_string(&(&link.spec, &link.endpoint)).unwrap_or_default();
        let text = format!("{}\u{1e}{}\u{1e}{settings}", link.id, link.endpoint_id);
        self.keys.blind_index().index(IndexKind::Remote, &text)
    }

    /// The digest a link's mark keeps: keyed, over the digest of its settings
    /// ([`Engine::settings_digest`]) and the endpoint's listing.
    fn mark_digest(&self, settings: &[u8; 32], listing: SetSum) -> [u8; 32] {
        let text = hex::encode([&settings[..], &listing.to_bytes()[..]].concat());
        self.keys.blind_index().index(IndexKind::Remote, &text)
    }

    /// Runs links in order (pulling links first), then once more every pushing link that ran
    /// before a later link changed the hub, so that one `sync` carries a change from any
    /// endpoint to every other. The second round's counts are added to the first's.
    pub async fn run_all(
        &self,
        links: &[LinkDef],
        options: &RunOptions,
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Vec<(String, Result<RunReport, RunError>)> {
        let mut out: Vec<(String, Result<RunReport, RunError>)> = Vec::new();
        let mut last_change = None;
        let mut ahead = None;
        for (i, def) in links.iter().enumerate() {
            // The next link's endpoint is listed while this one runs, where that is safe: once
            // this one's listing is done, so that the two do not share the cores.
            let (listed, then) = tokio::sync::oneshot::channel();
            let next = links
                .get(i + 1)
                .and_then(|next| list_ahead(next, def, then));
            let chain = Chain {
                ahead: ahead.take(),
                listed: Some(listed),
            };
            let r = self
                .run_inner(def, options, &|d, t| progress(&def.name, d, t), None, chain)
                .await;
            ahead = next;
            if let Ok(rep) = &r {
                let c = &rep.counts;
                if c.hub_created + c.hub_updated + c.hub_deleted > 0 {
                    last_change = Some(i);
                }
            }
            let stop = matches!(r, Err(RunError::Interrupted(_)));
            out.push((def.name.clone(), r));
            if stop {
                return out;
            }
        }
        if options.dry_run {
            return out;
        }
        let Some(last) = last_change else { return out };
        for (i, def) in links.iter().enumerate().take(last) {
            if !def.spec.direction.pushes() || out[i].1.is_err() {
                continue;
            }
            let again = self
                .run(def, options, &|d, t| progress(&def.name, d, t))
                .await;
            match (again, &mut out[i].1) {
                (Ok(more), Ok(first)) => first.absorb(more),
                (Ok(_), Err(_)) => {}
                (Err(e), slot) => {
                    let stop = matches!(e, RunError::Interrupted(_));
                    *slot = Err(e);
                    if stop {
                        return out;
                    }
                }
            }
        }
        out
    }

    pub(crate) async fn match_items(
        &self,
        fresh: &[&Listed],
        incoming: &HashMap<RemoteKey, Incoming>,
    ) -> Result<HashMap<RemoteKey, ContactId>, StoreError> {
        let ws = self.keys.workspace();
        let store = self.hub.store();
        let mut matches = HashMap::new();
        if fresh.is_empty() {
            return Ok(matches);
        }
        let prepared = |l: &Listed| incoming.get(&l.key)?.keys.as_deref();
        let add = |m: &mut HashMap<[u8; 32], ContactId>, v: Vec<([u8; 32], ContactId)>| {
            for (mac, id) in v {
                m.entry(mac).and_modify(|e| *e = (*e).min(id)).or_insert(id);
            }
        };
        // A part at a time: only what is found is kept, not every value looked up.
        let (mut by_uid, mut by_email, mut by_phone) =
            (HashMap::new(), HashMap::new(), HashMap::new());
        for part in fresh.chunks(MATCH_PART) {
            let keys: Vec<&MatchKeys> = part.iter().filter_map(|l| prepared(l)).collect();
            let uids: Vec<[u8; 32]> = keys.iter().filter_map(|k| k.uid_mac).collect();
            let emails: Vec<[u8; 32]> = keys
                .iter()
                .flat_map(|k| k.email_macs.iter().copied())
                .collect();
            let phones: Vec<[u8; 32]> = keys
                .iter()
                .flat_map(|k| k.phone_macs.iter().copied())
                .collect();
            add(
                &mut by_uid,
                store.lookup_index(ws, IndexKind::Uid, &uids).await?,
            );
            add(
                &mut by_email,
                store.lookup_index(ws, IndexKind::Email, &emails).await?,
            );
            add(
                &mut by_phone,
                store.lookup_index(ws, IndexKind::Phone, &phones).await?,
            );
        }
        // A contact one item names by UID is that item's: another item sharing only an email
        // or a phone with it must not take it first and leave the UID to a second contact.
        let named: std::collections::HashSet<ContactId> = fresh
            .iter()
            .filter_map(|l| prepared(l)?.uid_mac.and_then(|m| by_uid.get(&m)).copied())
            .collect();
        let unnamed = |c: &&ContactId| !named.contains(*c);
        for l in fresh {
            let Some(p) = prepared(l) else { continue };
            let found = p
                .uid_mac
                .and_then(|m| by_uid.get(&m))
                .or_else(|| {
                    p.email_macs
                        .iter()
                        .find_map(|m| by_email.get(m).filter(unnamed))
                })
                .or_else(|| {
                    p.phone_macs
                        .iter()
                        .find_map(|m| by_phone.get(m).filter(unnamed))
                });
            if let Some(c) = found {
                matches.insert(l.key, *c);
            }
        }
        Ok(matches)
    }

    async fn execute(
        &self,
        ctx: &mut Ctx<'_>,
        action: &Action,
        opened: &HashMap<ContactId, Contact>,
    ) -> Result<(), RunError> {
        let spec = &ctx.link.spec;
        let listed = ctx.listed;
        let now_s = now_ms() / 1000;
        if let Some(c) = action_contact(action)
            && ctx.queued.contains_key(&c)
            && !matches!(action, Action::Queue { .. })
        {
            ctx.batch.close_conflicts.push(c);
        }
        match action {
            Action::PullCreate { remote } => {
                let l = &listed[*remote];
                let Some(inc) = ctx.incoming.remove(&l.key) else {
                    return Ok(());
                };
                let prepared = match ctx.take(l, &inc)? {
                    Some(Taken::Read(contact)) => self.prepare(contact),
                    Some(Taken::Prepared(prepared)) => prepared,
                    None => return Ok(()),
                };
                let id = ContactId::new();
                ctx.batch
                    .contacts
                    .push(Hub::seal_row(&self.keys, id, 1, &prepared, now_s)?);
                ctx.versions.insert(id, 1);
                ctx.bind(l, id, inc.etag(l), inc.content_mac, prepared.content_mac);
                ctx.counts.hub_created += 1;
                ctx.event(self, "hub-created", Some(id), Some(&l.meta.id), None);
            }
            Action::Adopt { remote, contact } => {
                let l = &listed[*remote];
                let Some(inc) = ctx.incoming.remove(&l.key) else {
                    return Ok(());
                };
                let mac = inc.content_mac;
                ctx.bind(l, *contact, inc.etag(l), mac, mac);
                ctx.counts.unchanged += 1;
                ctx.event(self, "linked", Some(*contact), Some(&l.meta.id), None);
            }
            Action::PullMerge { remote, contact } => {
                let l = &listed[*remote];
                let (Some(inc), Some(current)) = (ctx.incoming.remove(&l.key), opened.get(contact))
                else {
                    ctx.unreadable(*contact);
                    return Ok(());
                };
                let Some(contact_in) = ctx.contact_of(l, &inc)? else {
                    return Ok(());
                };
                let merged = merge(current, &contact_in, spec.priority > 0);
                let prepared = Hub::prepare(&self.keys, merged, self.region.as_deref());
                let hub_mac = ctx.hub.get(contact).map(|h| h.mac).unwrap_or_default();
                let remote_mac = inc.content_mac;
                let mut etag = inc.etag(l).clone();
                let mut meta_id = l.meta.id.clone();
                if prepared.content_mac != hub_mac {
                    let v = ctx.next_version(*contact);
                    ctx.batch
                        .contacts
                        .push(Hub::seal_row(&self.keys, *contact, v, &prepared, now_s)?);
                    ctx.counts.hub_updated += 1;
                }
                let mut bound_remote_mac = remote_mac;
                if spec.direction.pushes() && prepared.content_mac != remote_mac {
                    let out = outbound(spec, &prepared.contact);
                    ctx.step()?;
                    match ctx.conn.update(&l.meta.id, &etag, &out).await {
                        Ok(meta) => {
                            ctx.remote_wrote(self, Some(&l.meta), Some(&meta));
                            etag = meta.etag;
                            meta_id = meta.id;
                            bound_remote_mac =
                                Hub::content_mac(&self.keys, &inbound_raw(spec, &out));
                            ctx.counts.remote_updated += 1;
                        }
                        Err(e) => ctx.item_error(Some(&l.meta.id), Some(*contact), &e),
                    }
                    ctx.step()?;
                }
                let key = self.remote_key(ctx.link.id, &meta_id);
                ctx.bind_key(key, *contact, &etag, bound_remote_mac, prepared.content_mac);
                ctx.event(self, "merged", Some(*contact), Some(&meta_id), None);
            }
            Action::PullUpdate {
                remote, contact, ..
            } => {
                let l = &listed[*remote];
                let Some(inc) = ctx.incoming.remove(&l.key) else {
                    return Ok(());
                };
                let current = opened.get(contact);
                let restored = ctx.hub.get(contact).is_none_or(|h| h.deleted);
                let Some(contact_in) = ctx.contact_of(l, &inc)? else {
                    return Ok(());
                };
                let contact_in = inbound(spec, &contact_in, current);
                let prepared = Hub::prepare(&self.keys, contact_in, self.region.as_deref());
                let v = ctx.next_version(*contact);
                ctx.batch
                    .contacts
                    .push(Hub::seal_row(&self.keys, *contact, v, &prepared, now_s)?);
                let (etag, remote_mac) = (inc.etag(l).clone(), inc.content_mac);
                ctx.bind(l, *contact, &etag, remote_mac, prepared.content_mac);
                if restored {
                    ctx.counts.hub_created += 1;
                } else {
                    ctx.counts.hub_updated += 1;
                }
                ctx.event(
                    self,
                    if restored {
                        "hub-restored"
                    } else {
                        "hub-updated"
                    },
                    Some(*contact),
                    Some(&l.meta.id),
                    None,
                );
            }
            Action::PullDelete { contact, key } => {
                if ctx.hub.get(contact).is_some_and(|h| !h.deleted) {
                    let v = ctx.next_version(*contact);
                    ctx.batch.contacts.push(Hub::tombstone(*contact, v, now_s));
                    ctx.counts.hub_deleted += 1;
                }
                ctx.batch.forget.push(*key);
                ctx.event(self, "hub-deleted", Some(*contact), None, None);
            }
            Action::PushCreate { contact, .. } => {
                let Some(current) = opened.get(contact) else {
                    ctx.unreadable(*contact);
                    return Ok(());
                };
                if let Some(id) = self.push_new(ctx, *contact, current).await? {
                    ctx.event(self, "remote-created", Some(*contact), Some(&id), None);
                }
            }
            Action::PushUpdate {
                remote, contact, ..
            } => {
                let l = &listed[*remote];
                let Some(current) = opened.get(contact) else {
                    ctx.unreadable(*contact);
                    return Ok(());
                };
                let out = outbound(spec, current);
                match ctx.conn.update(&l.meta.id, &l.meta.etag, &out).await {
                    Ok(meta) => {
                        ctx.remote_wrote(self, Some(&l.meta), Some(&meta));
                        ctx.step()?;
                        let key = self.remote_key(ctx.link.id, &meta.id);
                        let hub_mac = ctx.hub.get(contact).map(|h| h.mac).unwrap_or_default();
                        let remote_mac = self.written_mac(spec, &out, hub_mac);
                        ctx.bind_key(key, *contact, &meta.etag, remote_mac, hub_mac);
                        ctx.counts.remote_updated += 1;
                        ctx.event(self, "remote-updated", Some(*contact), Some(&meta.id), None);
                    }
                    Err(e) => ctx.item_error(Some(&l.meta.id), Some(*contact), &e),
                }
            }
            Action::PushDelete { remote, contact } => {
                let l = &listed[*remote];
                match ctx.conn.delete(&l.meta.id, &l.meta.etag).await {
                    Ok(()) => {
                        ctx.remote_wrote(self, Some(&l.meta), None);
                        ctx.step()?;
                        ctx.batch.forget.push(l.key);
                        ctx.counts.remote_deleted += 1;
                        ctx.event(
                            self,
                            "remote-deleted",
                            Some(*contact),
                            Some(&l.meta.id),
                            None,
                        );
                    }
                    Err(e) => ctx.item_error(Some(&l.meta.id), Some(*contact), &e),
                }
            }
            Action::Refresh { remote, contact } => {
                let l = &listed[*remote];
                let hub_mac = ctx.hub.get(contact).map(|h| h.mac).unwrap_or_default();
                let remote_mac = ctx.incoming.get(&l.key).map(|i| i.content_mac);
                match remote_mac {
                    Some(m) => ctx.bind(l, *contact, &l.meta.etag.clone(), m, hub_mac),
                    None => ctx.bind(l, *contact, &l.meta.etag.clone(), hub_mac, hub_mac),
                }
                ctx.counts.unchanged += 1;
            }
            Action::Forget { contact, key } => {
                ctx.batch.forget.push(*key);
                ctx.event(self, "unlinked", Some(*contact), None, None);
            }
            Action::KeepBoth { remote, contact } => {
                let l = &listed[*remote];
                let (Some(inc), Some(current)) = (ctx.incoming.remove(&l.key), opened.get(contact))
                else {
                    ctx.unreadable(*contact);
                    return Ok(());
                };
                // The remote version becomes a contact of its own, with a UID of its own.
                let copy_id = ContactId::new();
                let Some(contact_in) = ctx.contact_of(l, &inc)? else {
                    return Ok(());
                };
                let mut copy = inbound(spec, &contact_in, Some(current));
                copy.set_text("UID", Some(&format!("urn:uuid:{}", uuid::Uuid::new_v4())));
                let copy = Hub::prepare(&self.keys, copy, self.region.as_deref());
                ctx.batch
                    .contacts
                    .push(Hub::seal_row(&self.keys, copy_id, 1, &copy, now_s)?);
                // The endpoint's item takes the copy's new UID, so the two never match again.
                let copy_out = outbound(spec, &copy.contact);
                ctx.step()?;
                let (mut etag, mut remote_mac) = (inc.etag(l).clone(), inc.content_mac);
                let mut copy_key = l.key;
                match ctx.conn.update(&l.meta.id, &etag, &copy_out).await {
                    Ok(meta) => {
                        ctx.remote_wrote(self, Some(&l.meta), Some(&meta));
                        etag = meta.etag;
                        remote_mac = Hub::content_mac(&self.keys, &inbound_raw(spec, &copy_out));
                        copy_key = self.remote_key(ctx.link.id, &meta.id);
                    }
                    Err(e) => ctx.item_error(Some(&l.meta.id), Some(copy_id), &e),
                }
                ctx.bind_key(copy_key, copy_id, &etag, remote_mac, copy.content_mac);
                ctx.counts.hub_created += 1;
                ctx.counts.conflicts += 1;
                // The hub version goes to the endpoint as a new item.
                ctx.step()?;
                self.push_new(ctx, *contact, current).await?;
                ctx.event(self, "kept-both", Some(*contact), Some(&l.meta.id), None);
            }
            Action::Queue { contact, kind } => {
                ctx.batch.open_conflicts.push(ConflictRow {
                    id: ConflictId::new(),
                    link: ctx.link.id,
                    contact: *contact,
                    kind: kind.as_str().into(),
                    resolution: None,
                    created_at: now_s,
                });
                ctx.counts.conflicts += 1;
                ctx.event(self, "conflict", Some(*contact), None, Some(kind.as_str()));
            }
            Action::Skip { remote, reason } => {
                let l = &listed[*remote];
                ctx.counts.rejected += 1;
                ctx.errors.push(ItemError {
                    remote: Some(l.meta.id.to_string()),
                    contact: None,
                    error: reason.clone(),
                });
                ctx.event(self, "rejected", None, Some(&l.meta.id), Some(reason));
            }
        }
        Ok(())
    }

    /// Writes a hub contact to the endpoint as a new item and binds it. `None` when the
    /// endpoint refused it (recorded as an item error).
    async fn push_new(
        &self,
        ctx: &mut Ctx<'_>,
        contact: ContactId,
        current: &Contact,
    ) -> Result<Option<RemoteId>, RunError> {
        let spec = &ctx.link.spec;
        let hub_mac = ctx.hub.get(&contact).map(|h| h.mac).unwrap_or_default();
        let (written, remote_mac) = match ctx.created.remove(&contact) {
            Some(ahead) => ahead,
            None => {
                let out = outbound(spec, current);
                let remote_mac = self.written_mac(spec, &out, hub_mac);
                (ctx.conn.create(&out).await, remote_mac)
            }
        };
        match written {
            Ok(meta) => {
                ctx.remote_wrote(self, None, Some(&meta));
                ctx.step()?;
                let key = self.remote_key(ctx.link.id, &meta.id);
                ctx.bind_key(key, contact, &meta.etag, remote_mac, hub_mac);
                ctx.counts.remote_created += 1;
                Ok(Some(meta.id))
            }
            Err(e) => {
                ctx.item_error(None, Some(contact), &e);
                Ok(None)
            }
        }
    }

    /// Writes the new items of a part's `PushCreate` actions at once, where the endpoint writes
    /// them faster so ([`sealsync_connector::Destination::creates_at_once`]);
    /// [`Engine::push_new`] then takes each result in its turn. A crash before the batch's
    /// state commits leaves these writes as it leaves any other write of the batch: the next
    /// run finds each item equal to its contact, and adopts it.
    async fn create_ahead(
        &self,
        ctx: &Ctx<'_>,
        part: &[Action],
        opened: &HashMap<ContactId, Contact>,
    ) -> HashMap<ContactId, (Result<ItemMeta, ConnectorError>, [u8; 32])> {
        if !ctx.conn.creates_at_once() {
            return HashMap::new();
        }
        let spec = &ctx.link.spec;
        let mut ids = Vec::new();
        let mut outs = Vec::new();
        let mut seen = HashSet::new();
        for action in part {
            if let Action::PushCreate { contact, .. } = action
                && let Some(current) = opened.get(contact)
                && seen.insert(*contact)
            {
                let out = outbound(spec, current);
                let hub_mac = ctx.hub.get(contact).map(|h| h.mac).unwrap_or_default();
                ids.push((*contact, self.written_mac(spec, &out, hub_mac)));
                outs.push(out);
            }
        }
        if outs.len() < 2 {
            return HashMap::new();
        }
        let written = ctx.conn.create_many(outs).await;
        ids.into_iter()
            .zip(written)
            .map(|((contact, mac), w)| (contact, (w, mac)))
            .collect()
    }

    /// A fetched item's contact as the hub would take it, prepared.
    pub(crate) fn prepare_incoming(&self, link: &LinkDef, contact: Contact) -> PreparedContact {
        self.prepare(if link.spec.is_identity() {
            contact
        } else {
            inbound_raw(&link.spec, &contact)
        })
    }

    fn prepare(&self, contact: Contact) -> PreparedContact {
        Hub::prepare(&self.keys, contact, self.region.as_deref())
    }

    /// The keyed content hash of what was written to the endpoint, as it will read back. With no
    /// transforms that is the hub contact itself.
    fn written_mac(&self, spec: &LinkSpec, out: &Contact, hub_mac: [u8; 32]) -> [u8; 32] {
        if spec.is_identity() {
            hub_mac
        } else {
            Hub::content_mac(&self.keys, &inbound_raw(spec, out))
        }
    }

    /// Where a link's cursor sits, for its AAD.
    fn cursor_at<'a>(&'a self, link: &'a LinkId) -> RecordRef<'a> {
        RecordRef {
            table: "link_cursors",
            workspace: self.keys.workspace(),
            record: link.as_bytes(),
            field: "cursor",
        }
    }

    /// The link's cursor; one that no longer opens is dropped (it costs one full listing).
    async fn open_cursor(
        &self,
        link: LinkId,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, RunError> {
        let Some(sealed) = self
            .hub
            .store()
            .link_cursor(self.keys.workspace(), link)
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .keys
            .open(&self.cursor_at(&link), &sealed)
            .ok()
            .map(zeroize::Zeroizing::new))
    }

    /// Keeps the link's cursor sealed, or forgets it.
    async fn keep_cursor(&self, link: LinkId, cursor: Option<&[u8]>) -> Result<(), RunError> {
        let sealed = match cursor {
            Some(plain) => self.keys.seal(&self.cursor_at(&link), plain).ok(),
            None => None,
        };
        self.hub
            .store()
            .put_link_cursor(self.keys.workspace(), link, sealed)
            .await?;
        Ok(())
    }

    /// Seals an event's detail (remote id, reason) for the run's event log.
    fn seal_detail(
        &self,
        run: RunId,
        seq: i64,
        remote: Option<&RemoteId>,
        note: Option<&str>,
    ) -> Option<Vec<u8>> {
        if remote.is_none() && note.is_none() {
            return None;
        }
        let detail = serde_json::json!({ "remote": remote.map(RemoteId::as_str), "note": note });
        let mut record = run.as_bytes().to_vec();
        record.extend_from_slice(&seq.to_be_bytes());
        let at = RecordRef {
            table: "run_events",
            workspace: self.keys.workspace(),
            record: &record,
            field: "detail",
        };
        self.keys.seal(&at, detail.to_string().as_bytes()).ok()
    }

    /// Opens an event's detail.
    pub fn open_detail(&self, run: RunId, seq: i64, sealed: &[u8]) -> Option<serde_json::Value> {
        let mut record = run.as_bytes().to_vec();
        record.extend_from_slice(&seq.to_be_bytes());
        let at = RecordRef {
            table: "run_events",
            workspace: self.keys.workspace(),
            record: &record,
            field: "detail",
        };
        let plain = zeroize::Zeroizing::new(self.keys.open(&at, sealed).ok()?);
        serde_json::from_slice(&plain).ok()
    }
}

impl Ctx<'_> {
    /// Follows an endpoint write in the listing's digest: `before` left, `after` came.
    fn remote_wrote(
        &mut self,
        engine: &Engine,
        before: Option<&ItemMeta>,
        after: Option<&ItemMeta>,
    ) {
        if let Some(m) = before {
            let member = engine.listing_member(&m.id, &m.etag);
            self.listing.remove(&member);
            self.wrote.push((short(&member), false));
        }
        if let Some(m) = after {
            let member = engine.listing_member(&m.id, &m.etag);
            self.listing.add(&member);
            self.wrote.push((short(&member), true));
        }
    }

    /// The contact of a fetched item, from the text it holds or as fetched again for this
    /// batch. `None`, with the item's error recorded, when it could not be fetched again or
    /// changed since the run planned it: the next run takes it up.
    fn contact_of(&mut self, l: &Listed, inc: &Incoming) -> Result<Option<Contact>, RunError> {
        Ok(self.take(l, inc)?.map(Taken::into_contact))
    }

    /// As [`Ctx::contact_of`], with the contact as it was prepared when fetched again.
    fn take(&mut self, l: &Listed, inc: &Incoming) -> Result<Option<Taken>, RunError> {
        if !inc.fetched_again() {
            return inc.contact().map(|c| Some(Taken::Read(c)));
        }
        let error = match self.again.remove(&l.key) {
            Some(Ok(prepared)) => return Ok(Some(Taken::Prepared(prepared))),
            Some(Err(error)) => error,
            None => "not fetched again".to_owned(),
        };
        self.counts.rejected += 1;
        self.errors.push(ItemError {
            remote: Some(l.meta.id.to_string()),
            contact: None,
            error,
        });
        Ok(None)
    }

    fn step(&mut self) -> Result<(), RunError> {
        self.steps += 1;
        if self.interrupt_at == Some(self.steps) {
            return Err(RunError::Interrupted(self.steps));
        }
        Ok(())
    }

    fn next_version(&mut self, c: ContactId) -> i64 {
        let v = self.versions.entry(c).or_insert(0);
        *v += 1;
        *v
    }

    fn bind(
        &mut self,
        l: &Listed,
        contact: ContactId,
        etag: &Etag,
        remote_mac: [u8; 32],
        hub_mac: [u8; 32],
    ) {
        self.bind_key(l.key, contact, etag, remote_mac, hub_mac);
    }

    fn bind_key(
        &mut self,
        key: RemoteKey,
        contact: ContactId,
        etag: &Etag,
        remote_mac: [u8; 32],
        hub_mac: [u8; 32],
    ) {
        self.batch.upserts.push(StateRow {
            remote_key: key,
            contact,
            etag: etag.as_str().to_owned(),
            remote_mac,
            hub_mac,
        });
    }

    fn event(
        &mut self,
        engine: &Engine,
        action: &str,
        contact: Option<ContactId>,
        remote: Option<&RemoteId>,
        note: Option<&str>,
    ) {
        self.seq += 1;
        let detail = engine.seal_detail(self.run, self.seq, remote, note);
        self.batch.events.push(EventRow {
            seq: self.seq,
            action: action.to_owned(),
            contact,
            detail,
            at: now_ms(),
        });
    }

    fn item_error(
        &mut self,
        remote: Option<&RemoteId>,
        contact: Option<ContactId>,
        e: &ConnectorError,
    ) {
        self.counts.rejected += 1;
        self.errors.push(ItemError {
            remote: remote.map(ToString::to_string),
            contact,
            error: e.to_string(),
        });
    }

    fn unreadable(&mut self, contact: ContactId) {
        self.counts.rejected += 1;
        self.errors.push(ItemError {
            remote: None,
            contact: Some(contact),
            error: "the hub contact could not be opened".into(),
        });
    }
}

/// A fetched item's contact, as its action takes it.
enum Taken {
    /// Read back from the text the run held.
    Read(Contact),
    /// Fetched again and prepared as the hub takes it.
    Prepared(PreparedContact),
}

impl Taken {
    fn into_contact(self) -> Contact {
        match self {
            Taken::Read(contact) => contact,
            Taken::Prepared(prepared) => prepared.contact,
        }
    }
}

/// Seconds after which a claim that was not renewed is free.
const CLAIM_STALE_AFTER_S: i64 = 120;

/// A listing started ahead of its link's run.
struct Ahead {
    task: tokio::task::JoinHandle<Result<Listing, ConnectorError>>,
}

/// What a run of [`Engine::run_all`] takes from the run before and gives to the next.
#[derive(Default)]
struct Chain {
    /// This link's listing, started ahead.
    ahead: Option<Ahead>,
    /// Dropped once this run's own listing is done: the next link's listing waits for it.
    listed: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Starts listing `link`'s endpoint while `before` runs, where nothing can tell it from a
/// listing taken when its own run starts: a local folder or file, which needs no account and
/// lists without a cursor, and not where `before` writes. Endpoints elsewhere list in their
/// own run (an account's secret is opened only there).
fn list_ahead(
    link: &LinkDef,
    before: &LinkDef,
    after: tokio::sync::oneshot::Receiver<()>,
) -> Option<Ahead> {
    let local = |spec: &EndpointSpec| match spec {
        EndpointSpec::Vdir { path, .. } | EndpointSpec::Csv { path, .. } => Some(path.clone()),
        _ => None,
    };
    let path = local(&link.endpoint)?;
    if link.endpoint_id == before.endpoint_id || local(&before.endpoint).as_ref() == Some(&path) {
        return None;
    }
    let conn = link.endpoint.open(None, &[]).ok()?;
    Some(Ahead {
        task: tokio::spawn(async move {
            // Sent or dropped, it is time.
            let _ = after.await;
            conn.list_behind().await
        }),
    })
}

/// Actions per transaction: the size asked for, or for a large run a tenth of it, up to
/// [`LARGE_BATCH`] actions. A smaller size than the default is kept as asked.
fn batch_size(asked: usize, actions: usize) -> usize {
    if asked < DEFAULT_BATCH {
        return asked.max(1);
    }
    (actions / 10).clamp(asked, LARGE_BATCH.max(asked))
}

/// A batch being committed by the store while the run goes on.
struct Committing {
    task: tokio::task::JoinHandle<Result<Moved, StoreError>>,
    /// The hub contacts it writes.
    writes: HashSet<ContactId>,
    /// Its actions.
    actions: u64,
}

impl Committing {
    fn start(
        store: &Store,
        ws: WorkspaceId,
        link: LinkId,
        run: RunId,
        batch: SyncBatch,
        actions: u64,
    ) -> Self {
        let writes = batch.contacts.iter().map(|(row, _)| row.id).collect();
        let store = store.clone();
        let task = tokio::spawn(async move { store.apply_sync_batch(ws, link, run, &batch).await });
        Self {
            task,
            writes,
            actions,
        }
    }

    /// Waits for the commit; moves the clocks the run expects (`None` once another writer
    /// moved one) and renews the run's claim. Returns the batch's actions.
    async fn settle(
        self,
        store: &Store,
        ws: WorkspaceId,
        link: LinkId,
        holder: Option<&str>,
        expect: &mut Option<Clocks>,
    ) -> Result<u64, RunError> {
        let moved = match self.task.await {
            Ok(moved) => moved?,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => return Err(StoreError::Corrupt("a batch's commit was cancelled").into()),
            },
        };
        *expect = expect.and_then(|mut c| {
            let step = |at: &mut i64, to: Option<i64>| match to {
                Some(to) if to != *at + 1 => false,
                Some(to) => {
                    *at = to;
                    true
                }
                None => true,
            };
            (step(&mut c.hub, moved.hub) && step(&mut c.link, moved.link)).then_some(c)
        });
        if let Some(holder) = holder {
            store.renew_link_claim(ws, link, holder, false).await?;
        }
        Ok(self.actions)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// This process as the holder of the runs it queues (`host:pid`): gone when the process is.
pub fn process_holder() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// The claims this process holds now, by holder. A claim of this process that is not among
/// them was left by a run that stopped (the test hook's crash, a run dropped unfinished).
static LIVE_CLAIMS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn live_claims() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<String>> {
    LIVE_CLAIMS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One claim attempt's holder, `host:pid:n`: its own, so that two runs of one link in one
/// process (a server) exclude each other as runs in two processes do. Live while this value
/// is: dropped, whatever became of the work, the claim is known as left.
struct LiveClaim(String);

impl LiveClaim {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let holder = format!("{}:{n}", process_holder());
        live_claims().insert(holder.clone());
        Self(holder)
    }

    fn holder(&self) -> &str {
        &self.0
    }
}

impl Drop for LiveClaim {
    fn drop(&mut self) {
        live_claims().remove(&self.0);
    }
}

/// Whether a claim's holder (`host:pid`, or `host:pid:n`) no longer runs: a process of this
/// host that is gone, or a claim of this process that it no longer holds.
fn holder_gone(holder: &str) -> bool {
    let Some((host, rest)) = holder.split_once(':') else {
        return false;
    };
    let (pid, own) = match rest.split_once(':') {
        Some((pid, _)) => (pid, true),
        None => (rest, false),
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if host != hostname() {
        return false;
    }
    if pid == std::process::id() {
        return own && !live_claims().contains(holder);
    }
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether the state an action leaves, once done, needs nothing more of the next run. A skipped
/// item and a queued conflict come back; keep-both writes a copy the next run reads back; a
/// forgotten binding may leave a contact that a pushing link creates again.
fn settles(a: &Action) -> bool {
    !matches!(
        a,
        Action::Skip { .. }
            | Action::Queue { .. }
            | Action::KeepBoth { .. }
            | Action::Forget { .. }
    )
}

/// The hub contact an action must open, if any.
fn needs_hub_contact(spec: &LinkSpec, a: &Action) -> Option<ContactId> {
    match a {
        // The remote version replaces the hub's; only fields the link drops or masks on the
        // way out are kept from the hub, so without those the hub's version is not read.
        Action::PullUpdate { .. } if spec.drop.is_empty() && spec.mask.is_empty() => None,
        Action::PullMerge { contact, .. }
        | Action::PullUpdate { contact, .. }
        | Action::PushCreate { contact, .. }
        | Action::PushUpdate { contact, .. }
        | Action::KeepBoth { contact, .. } => Some(*contact),
        _ => None,
    }
}

/// The listed item whose fetched contents an action takes into the hub.
fn pulled(a: &Action) -> Option<usize> {
    match a {
        Action::PullCreate { remote }
        | Action::PullMerge { remote, .. }
        | Action::PullUpdate { remote, .. }
        | Action::KeepBoth { remote, .. } => Some(*remote),
        _ => None,
    }
}

fn action_contact(a: &Action) -> Option<ContactId> {
    match a {
        Action::PullMerge { contact, .. }
        | Action::Adopt { contact, .. }
        | Action::PullUpdate { contact, .. }
        | Action::PullDelete { contact, .. }
        | Action::PushCreate { contact, .. }
        | Action::PushUpdate { contact, .. }
        | Action::PushDelete { contact, .. }
        | Action::Refresh { contact, .. }
        | Action::Forget { contact, .. }
        | Action::KeepBoth { contact, .. }
        | Action::Queue { contact, .. } => Some(*contact),
        Action::PullCreate { .. } | Action::Skip { .. } => None,
    }
}

/// A listing member as a mark keeps it.
fn short(member: &[u8; 32]) -> Member {
    member[..16].try_into().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_runs_commit_in_larger_batches() {
        // Small sizes asked for (webhook groups, tests) are kept.
        assert_eq!(batch_size(3, 100_000), 3);
        assert_eq!(batch_size(0, 10), 1);
        // The default for a usual run; a tenth of a large one, up to the cap.
        assert_eq!(batch_size(DEFAULT_BATCH, 1_000), DEFAULT_BATCH);
        assert_eq!(batch_size(DEFAULT_BATCH, 50_000), 5_000);
        assert_eq!(batch_size(DEFAULT_BATCH, 1_000_000), LARGE_BATCH);
        // A size asked for above the cap is kept.
        assert_eq!(batch_size(20_000, 1_000_000), 20_000);
    }

    fn local_link(endpoint: EndpointId, spec: EndpointSpec) -> LinkDef {
        LinkDef {
            id: LinkId::new(),
            name: "l".into(),
            spec: LinkSpec::default(),
            endpoint_name: "e".into(),
            endpoint_id: endpoint,
            endpoint: spec,
        }
    }

    /// A signal already given.
    fn now() -> tokio::sync::oneshot::Receiver<()> {
        tokio::sync::oneshot::channel().1
    }

    #[tokio::test]
    async fn only_a_local_endpoint_the_run_before_does_not_write_is_listed_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let vdir = |name: &str| EndpointSpec::Vdir {
            path: dir.path().join(name),
            version: None,
        };
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        let a = local_link(EndpointId::new(), vdir("a"));
        let b = local_link(EndpointId::new(), vdir("b"));
        // It waits for the run before to be done listing.
        let (listed, then) = tokio::sync::oneshot::channel();
        let ahead = list_ahead(&b, &a, then).expect("another folder is listed ahead");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!ahead.task.is_finished());
        drop(listed);
        let listing = ahead.task.await.unwrap().unwrap();
        assert!(listing.snapshot.items.is_empty() && listing.cursor.is_none());
        // Not the endpoint the run before writes, under its id or its path.
        let again = local_link(a.endpoint_id, vdir("a"));
        assert!(list_ahead(&again, &a, now()).is_none());
        let same_path = local_link(EndpointId::new(), vdir("a"));
        assert!(list_ahead(&same_path, &a, now()).is_none());
        // Not an endpoint elsewhere.
        let dav = local_link(
            EndpointId::new(),
            EndpointSpec::Carddav {
                url: "https://127.0.0.1:1/dav/".into(),
                version: None,
                allow: Vec::new(),
                account: None,
            },
        );
        assert!(list_ahead(&dav, &a, now()).is_none());
    }
}
