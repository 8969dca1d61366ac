//! Convergence under `newest`: random edits, creates and deletes in two vdirs and in the hub,
//! interleaved with runs of both links in random order, end with the same contacts on every
//! side once both links have run twice more, and a further round changes nothing.
//!
//! `newest` compares a file's mtime with the hub's `updated_at`, which the hub stamps from the
//! wall clock. Edited files therefore get explicit mtimes from a logical clock either far in the
//! future (the file is newer than anything in the hub) or far in the past (it is older), so the
//! outcome of every conflict is fixed by the generated steps, never by timing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use sealsync_engine::spec::{ConflictPolicy, Direction};
use sealsync_engine::{LinkSpec, RunOptions, RunReport};

use crate::harness::*;

const UIDS: usize = 6;
const NAMES: &[&str] = &["Ann", "Bob", "Cy"];
const NOTES: &[&str] = &["", "call back", "met at the fair"];
/// 2100-01-01: file edits stamped from here on are newer than any hub write.
const FUTURE: u64 = 4_102_444_800;
/// 2001-01-01: file edits stamped from here on are older than any hub write.
const PAST: u64 = 978_307_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
    Hub,
}

#[derive(Debug, Clone)]
enum Step {
    /// Creates the contact on this side, or replaces it there.
    Put {
        side: Side,
        uid: usize,
        name: usize,
        note: usize,
        /// 0: no email; 1: this UID's own address; 2: an address every UID may use, so
        /// that new items also match other people's contacts by email.
        email: usize,
        /// For a file: stamped older than the hub rather than newer.
        stale: bool,
    },
    Delete {
        side: Side,
        uid: usize,
    },
    Sync(Side),
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::A), Just(Side::B), Just(Side::Hub)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (side(), 0..UIDS, 0..NAMES.len(), 0..NOTES.len(), 0..3usize, any::<bool>())
            .prop_map(|(side, uid, name, note, email, stale)| Step::Put {
                side,
                uid,
                name,
                note,
                email,
                stale,
            }),
        2 => (side(), 0..UIDS).prop_map(|(side, uid)| Step::Delete { side, uid }),
        3 => prop_oneof![Just(Side::A), Just(Side::B)].prop_map(Step::Sync),
    ]
}

fn uid(i: usize) -> String {
    format!("u{i}")
}

fn email(uid: &str, which: usize) -> String {
    match which {
        0 => String::new(),
        1 => format!("{uid}@home.example"),
        _ => "shared@example.org".to_owned(),
    }
}

/// The world under test: links `a` and `b`, both ways, `newest`.
struct Sides {
    w: World,
    a: PathBuf,
    b: PathBuf,
    /// Logical clock for file mtimes: every edit gets a time no other edit has.
    tick: u64,
}

impl Sides {
    async fn new() -> Self {
        let w = world().await;
        let spec = LinkSpec {
            direction: Direction::Both,
            conflict: ConflictPolicy::Newest,
            ..LinkSpec::default()
        };
        let a = w.vdir_link("a", spec.clone()).await;
        let b = w.vdir_link("b", spec).await;
        Self { w, a, b, tick: 0 }
    }

    fn dir(&self, side: Side) -> &Path {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
            Side::Hub => unreachable!("the hub is not a folder"),
        }
    }

    async fn apply(&mut self, step: &Step) {
        match *step {
            Step::Put {
                side,
                uid: u,
                name,
                note,
                email: e,
                stale,
            } => {
                let u = uid(u);
                let text = card(&u, NAMES[name], &email(&u, e), NOTES[note]);
                if side == Side::Hub {
                    let contact = sealsync_contact::vcard::read_all(text.as_bytes())
                        .0
                        .remove(0)
                        .contact;
                    self.w
                        .engine
                        .hub()
                        .import(self.w.engine.keys(), vec![contact], &Default::default())
                        .await
                        .unwrap();
                    return;
                }
                self.tick += 1;
                let at = if stale { PAST } else { FUTURE } + self.tick;
                let dir = self.dir(side);
                // A new card gets a file of its own: `{uid}.vcf` may already hold another
                // contact (one merged by email keeps its own UID in the file it came from).
                let file = file_for(dir, &u).unwrap_or_else(|| {
                    let plain = format!("{u}.vcf");
                    if dir.join(&plain).exists() {
                        format!("{u}-{}.vcf", self.tick)
                    } else {
                        plain
                    }
                });
                put(dir, &file, &text);
                let f = std::fs::File::options()
                    .write(true)
                    .open(dir.join(&file))
                    .unwrap();
                f.set_modified(UNIX_EPOCH + Duration::from_secs(at))
                    .unwrap();
            }
            Step::Delete {
                side: Side::Hub,
                uid: u,
            } => hub_delete(&self.w, &uid(u)).await,
            Step::Delete { side, uid: u } => {
                let dir = self.dir(side);
                if let Some(file) = file_for(dir, &uid(u)) {
                    std::fs::remove_file(dir.join(file)).unwrap();
                }
            }
            Step::Sync(side) => {
                self.sync(side).await;
            }
        }
    }

    async fn sync(&self, side: Side) -> RunReport {
        let name = if side == Side::A { "a" } else { "b" };
        // Deleting one of a handful of contacts trips the mass-delete guard; the guard is not
        // what this property is about.
        let r = self
            .w
            .try_sync(
                name,
                &RunOptions {
                    batch: 3,
                    allow_mass_delete: true,
                    ..RunOptions::default()
                },
            )
            .await
            .unwrap();
        assert!(r.errors.is_empty(), "run of {name}: {:?}", r.errors);
        r
    }

    async fn all(&self) -> [BTreeMap<String, Person>; 3] {
        [self.w.hub().await, vdir(&self.a), vdir(&self.b)]
    }
}

/// The file holding this UID, if any.
fn file_for(dir: &Path, uid: &str) -> Option<String> {
    vdir_files(dir)
        .into_iter()
        .find(|(_, u)| u == uid)
        .map(|(f, _)| f)
}

/// (file name, UID) of every card in a vdir.
fn vdir_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !name.ends_with(".vcf") {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        let (cards, _) = sealsync_contact::vcard::read_all(&bytes);
        out.push((name, cards[0].contact.uid().unwrap_or_default()));
    }
    out
}

async fn check(steps: Vec<Step>) {
    let mut s = Sides::new().await;
    for step in &steps {
        s.apply(step).await;
    }
    for side in [Side::A, Side::B, Side::A, Side::B] {
        s.sync(side).await;
    }
    // `hub` and `vdir` fail on a UID held twice; equal maps mean every UID that exists
    // anywhere exists everywhere, with the same contents.
    let [hub, a, b] = s.all().await;
    assert_eq!(a, hub, "vdir a differs from the hub");
    assert_eq!(b, hub, "vdir b differs from the hub");

    // Settled: another round neither changes nor reports anything.
    for side in [Side::A, Side::B] {
        let r = s.sync(side).await;
        let c = &r.counts;
        assert_eq!(
            (c.created, c.updated, c.deleted, c.conflicts, c.rejected),
            (0, 0, 0, 0, 0),
            "a settled link {side:?} still moved: {c:?}"
        );
    }
    assert_eq!(s.all().await, [hub.clone(), hub.clone(), hub]);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn two_vdirs_and_the_hub_converge_under_newest(
        steps in proptest::collection::vec(step(), 1..=12)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(check(steps));
    }
}
