//! Test bodies shared by the SQLite and PostgreSQL variants.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealsync_contact::vcard::read_all;
use sealsync_contact::{Contact, Property};
use sealsync_crypto::{IndexKind, LocalKeyfile};
use sealsync_store::{Hub, ImportItem, ImportOptions, ImportSession, Store, StoreConfig};
use sealsync_types::WorkspaceName;
use secrecy::ExposeSecret;

use crate::{Db, hub_on};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The sample contacts and the vendor fixtures (the broken file's good cards included).
fn corpus() -> Vec<Contact> {
    let mut out = Vec::new();
    for dir in ["examples/contacts", "tests/fixtures/vcard"] {
        let mut paths: Vec<_> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for p in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "vcf"))
        {
            out.extend(
                read_all(&std::fs::read(p).unwrap())
                    .0
                    .into_iter()
                    .map(|c| c.contact),
            );
        }
    }
    out
}

fn ws() -> WorkspaceName {
    WorkspaceName::default_workspace()
}

async fn export_all(hub: &Hub, keys: &sealsync_crypto::WorkspaceKeys) -> Vec<Contact> {
    let mut out = Vec::new();
    let errors = hub
        .for_each_contact(keys, |_, c| {
            out.push(c);
            Ok(())
        })
        .await
        .unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    out
}

fn sorted(mut v: Vec<Contact>) -> Vec<String> {
    let mut s: Vec<String> = v
        .drain(..)
        .map(|c| sealsync_contact::vcard::to_vcard(&c, sealsync_contact::VcardVersion::V4))
        .collect();
    s.sort();
    s
}

pub async fn import_export_round_trip(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    let (_, created) = hub.ensure_workspace(&ws()).await.unwrap();
    assert!(created);
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let corpus = corpus();
    let counts = hub
        .import(&keys, corpus.clone(), &ImportOptions::default())
        .await
        .unwrap();
    assert!(counts.imported > 70, "{counts:?}");
    let back = export_all(&hub, &keys).await;
    // Cards sharing a UID collapse into one (the last wins); everything else comes back exactly.
    assert_eq!(back.len() as u64, counts.imported);
    let mut expected: Vec<Contact> = Vec::new();
    for c in corpus {
        match c.uid().and_then(|u| {
            expected
                .iter()
                .position(|e| e.uid().as_deref() == Some(u.as_str()))
        }) {
            Some(at) => expected[at] = c,
            None => expected.push(c),
        }
    }
    assert_eq!(sorted(back), sorted(expected));
}

pub async fn reimport_is_unchanged_and_edits_update(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let corpus: Vec<Contact> = corpus()
        .into_iter()
        .filter(|c| c.uid().is_some())
        .take(30)
        .collect();
    let first = hub
        .import(&keys, corpus.clone(), &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(first.imported, 30);
    let again = hub
        .import(&keys, corpus.clone(), &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((again.imported, again.updated, again.unchanged), (0, 0, 30));
    let mut edited = corpus[0].clone();
    edited.set_text("NOTE", Some("changed"));
    let third = hub
        .import(
            &keys,
            vec![edited.clone(), corpus[1].clone()],
            &ImportOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((third.imported, third.updated, third.unchanged), (0, 1, 1));
    let back = export_all(&hub, &keys).await;
    assert_eq!(back.len(), 30);
    assert!(back.contains(&edited));
    // A card without UID is recognised by its content.
    let mut plain = Contact::new();
    plain.push(Property::text("FN", "No Uid Person"));
    let a = hub
        .import(&keys, vec![plain.clone()], &ImportOptions::default())
        .await
        .unwrap();
    let b = hub
        .import(&keys, vec![plain], &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((a.imported, b.imported, b.unchanged), (1, 0, 1));
}

/// Values from the corpus that must never appear in stored bytes.
fn needles(corpus: &[Contact]) -> Vec<String> {
    let mut n = Vec::new();
    for c in corpus {
        n.extend(c.emails());
        n.extend(c.phones().into_iter().filter(|p| p.len() >= 8));
        if let Some(f) = c.formatted_name() {
            n.push(f);
        }
        if let Some(note) = c.note() {
            n.extend(note.lines().filter(|l| l.len() >= 12).map(str::to_owned));
        }
    }
    n.retain(|s| s.len() >= 6);
    n.sort();
    n.dedup();
    n
}

fn find_needles(haystack: &[u8], needles: &[String]) -> Vec<String> {
    needles
        .iter()
        .filter(|n| haystack.windows(n.len()).any(|w| w == n.as_bytes()))
        .cloned()
        .collect()
}

pub async fn nothing_sensitive_in_stored_bytes(config: StoreConfig, dir: &Path, db: Db) {
    let hub = hub_on(&config, dir).await;
    hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let corpus = corpus();
    let needles = needles(&corpus);
    assert!(needles.len() > 100, "{}", needles.len());
    hub.import(&keys, corpus, &ImportOptions::default())
        .await
        .unwrap();
    let mut raw = Vec::new();
    match db {
        Db::Sqlite => {
            hub.store().close().await;
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "key") {
                    continue;
                }
                raw.extend(std::fs::read(&path).unwrap());
            }
        }
        Db::Postgres => {
            let out = std::process::Command::new("pg_dump")
                .arg("--dbname")
                .arg(config.database_url.expose_secret())
                .output()
                .expect("pg_dump runs");
            assert!(out.status.success(), "pg_dump failed");
            raw = out.stdout;
            assert!(raw.len() > 10_000, "dump too small to mean anything");
            assert!(
                find_needles(&raw, &["sealsync_keys".to_owned()]).len() == 1,
                "keystore schema not in dump"
            );
        }
    }
    assert!(raw.len() > 50_000);
    let found = find_needles(&raw, &needles);
    assert!(
        found.is_empty(),
        "{} plaintext values found in stored bytes",
        found.len()
    );
}

pub async fn swapped_ciphertexts_fail_integrity(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    hub.ensure_workspace(&ws()).await.unwrap();
    let (wsrow, keys) = hub.open_workspace(&ws()).await.unwrap();
    let contacts: Vec<Contact> = corpus().into_iter().take(3).collect();
    hub.import(&keys, contacts, &ImportOptions::default())
        .await
        .unwrap();
    let rows = hub.store().contacts_page(wsrow.id, None, 10).await.unwrap();
    let (a, b) = (&rows[0], &rows[1]);
    let swapped = vec![
        (
            sealsync_store::ContactRow {
                body: b.body.clone(),
                ..a.clone()
            },
            vec![],
        ),
        (
            sealsync_store::ContactRow {
                body: a.body.clone(),
                ..b.clone()
            },
            vec![],
        ),
    ];
    hub.store()
        .write_contacts(wsrow.id, &swapped)
        .await
        .unwrap();
    let mut opened = 0;
    let errors = hub
        .for_each_vcard(&keys, |_, _| {
            opened += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(opened, 1, "only the untouched record opens");
    assert_eq!(errors.len(), 2);
    assert!(
        errors.iter().all(|e| e.error.contains("integrity")),
        "{errors:?}"
    );

    // Moving a ciphertext into another workspace fails the same way.
    let other = WorkspaceName::parse("other").unwrap();
    let (other_ws, _) = hub.ensure_workspace(&other).await.unwrap();
    let (_, other_keys) = hub.open_workspace(&other).await.unwrap();
    let moved = vec![(rows[2].clone(), vec![])];
    hub.store()
        .write_contacts(other_ws.id, &moved)
        .await
        .unwrap();
    let errors = hub
        .for_each_vcard(&other_keys, |_, _| Ok(()))
        .await
        .unwrap();
    assert_eq!(errors.len(), 1);
}

pub async fn find_by_blind_index(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let corpus = corpus();
    let target = corpus
        .iter()
        .find(|c| !c.emails().is_empty())
        .unwrap()
        .clone();
    hub.import(
        &keys,
        corpus,
        &ImportOptions {
            default_region: Some("US".into()),
        },
    )
    .await
    .unwrap();
    let email = sealsync_contact::Email::parse(&target.emails()[0].to_uppercase()).unwrap();
    let found = hub
        .find(&keys, IndexKind::Email, email.as_str())
        .await
        .unwrap();
    assert!(
        found.iter().any(|(_, c)| c.uid() == target.uid()),
        "not found by email"
    );
    let none = hub
        .find(&keys, IndexKind::Email, "nobody@example.invalid")
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub async fn deleting_a_workspace_shreds_its_keys(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    let (wsrow, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    hub.import(
        &keys,
        corpus().into_iter().take(5).collect(),
        &ImportOptions::default(),
    )
    .await
    .unwrap();
    let before = hub.store().contacts_page(wsrow.id, None, 10).await.unwrap();
    hub.store().delete_workspace(wsrow.id).await.unwrap();
    assert!(hub.store().keys_of(wsrow.id).await.unwrap().is_empty());
    assert!(hub.workspace_keys(wsrow.id).await.is_err());
    // A "backup" of the rows cannot be opened with any key the system still has.
    let (fresh, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let fresh_keys = hub.workspace_keys(fresh.id).await.unwrap();
    hub.store()
        .write_contacts(
            fresh.id,
            &before.into_iter().map(|r| (r, vec![])).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let errors = hub
        .for_each_vcard(&fresh_keys, |_, _| Ok(()))
        .await
        .unwrap();
    assert_eq!(errors.len(), 5);
}

pub async fn wrong_master_key_is_a_clear_error(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    hub.ensure_workspace(&ws()).await.unwrap();
    hub.store().close().await;
    std::fs::remove_file(dir.join("master.key")).unwrap();
    let other = LocalKeyfile::create(&dir.join("master.key")).unwrap();
    let hub = Hub::new(Store::open(&config).await.unwrap(), Arc::new(other));
    let err = hub.open_workspace(&ws()).await.unwrap_err().to_string();
    assert!(
        err.contains("local keyfile")
            && err.contains("local:1")
            && err.contains("wrong master key"),
        "{err}"
    );
}

fn generated(n: usize, note: &str) -> Vec<Contact> {
    (0..n)
        .map(|i| {
            let mut c = Contact::new();
            c.push(Property::text("UID", &format!("rot-{i:05}")));
            c.push(Property::text("FN", &format!("Rotation Person {i}")));
            c.push(Property::text("EMAIL", &format!("rot{i}@example.org")));
            c.push(Property::text("NOTE", note));
            c
        })
        .collect()
}

pub async fn rotation_under_concurrent_writes(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    let (wsrow, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let (_, v1_keys) = hub.open_workspace(&ws()).await.unwrap();
    hub.import(
        &v1_keys,
        generated(400, "before"),
        &ImportOptions::default(),
    )
    .await
    .unwrap();

    // A writer that loaded its keys before the rotation keeps writing during it.
    let writer_hub = hub.clone();
    let writer = tokio::spawn(async move {
        for round in 0..8 {
            let edits: Vec<Contact> = generated(400, &format!("round {round}"))
                .into_iter()
                .skip(round * 40)
                .take(40)
                .collect();
            writer_hub
                .import(&v1_keys, edits, &ImportOptions::default())
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        let extra: Vec<Contact> = (0..20)
            .map(|i| {
                let mut c = Contact::new();
                c.push(Property::text("UID", &format!("new-{i}")));
                c.push(Property::text("FN", "Written during rotation"));
                c
            })
            .collect();
        writer_hub
            .import(&v1_keys, extra, &ImportOptions::default())
            .await
            .unwrap();
    });
    assert_eq!(hub.rotate_data_key(wsrow.id).await.unwrap(), 2);
    let v2_keys = hub.workspace_keys(wsrow.id).await.unwrap();
    assert_eq!(v2_keys.current_version(), 2);
    let mut seen_progress = 0;
    let first = hub
        .reencrypt(&v2_keys, 50, |done, _| seen_progress = done)
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(first.failed.is_empty());
    assert!(seen_progress > 0);
    // What the stale writer sealed under v1 is picked up by the next run.
    let second = hub.reencrypt(&v2_keys, 50, |_, _| {}).await.unwrap();
    assert_eq!(second.remaining, 0);
    assert_eq!(
        hub.retire_unused_data_keys(wsrow.id).await.unwrap(),
        vec![1]
    );

    // Every record opens with only the newest key left, none lost, the last write of each kept.
    let keys = hub.workspace_keys(wsrow.id).await.unwrap();
    assert_eq!(keys.versions().collect::<Vec<_>>(), vec![2]);
    let all = export_all(&hub, &keys).await;
    assert_eq!(all.len(), 420);
    for c in &all {
        let uid = c.uid().unwrap();
        if let Some(i) = uid
            .strip_prefix("rot-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            let expected = if i < 320 {
                format!("round {}", i / 40)
            } else {
                "before".to_owned()
            };
            assert_eq!(c.note().as_deref(), Some(expected.as_str()), "{uid}");
        }
    }
}

pub async fn reencryption_resumes_after_a_crash(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    let (wsrow, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    hub.import(&keys, generated(200, "x"), &ImportOptions::default())
        .await
        .unwrap();
    hub.rotate_data_key(wsrow.id).await.unwrap();
    let keys = hub.workspace_keys(wsrow.id).await.unwrap();
    // A run that stopped after its first batches: half the records moved, half not.
    let half = hub
        .store()
        .contacts_below_key_version(wsrow.id, 2, None, 100)
        .await
        .unwrap();
    let updates: Vec<_> = half
        .into_iter()
        .map(|r| {
            let at = sealsync_crypto::RecordRef {
                table: "contacts",
                workspace: wsrow.id,
                record: r.id.as_bytes(),
                field: "body",
            };
            let sealed = keys.reseal(&at, r.body.as_ref().unwrap()).unwrap().unwrap();
            (r, sealed, 2)
        })
        .collect();
    assert_eq!(
        hub.store()
            .reseal_contacts(wsrow.id, &updates)
            .await
            .unwrap(),
        100
    );
    assert_eq!(
        hub.store()
            .count_below_key_version(wsrow.id, 2)
            .await
            .unwrap(),
        100
    );
    let report = hub.reencrypt(&keys, 30, |_, _| {}).await.unwrap();
    assert_eq!((report.resealed, report.remaining), (100, 0));
    assert_eq!(export_all(&hub, &keys).await.len(), 200);
}

pub async fn master_key_rotation_rewraps_every_key(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    hub.ensure_workspace(&ws()).await.unwrap();
    hub.ensure_workspace(&WorkspaceName::parse("second").unwrap())
        .await
        .unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    hub.import(&keys, generated(10, "k"), &ImportOptions::default())
        .await
        .unwrap();
    let mut kf = LocalKeyfile::open(&dir.join("master.key")).unwrap();
    assert_eq!(kf.add_version().unwrap(), 2);
    let hub = Hub::new(
        hub.store().clone(),
        Arc::new(LocalKeyfile::open(&dir.join("master.key")).unwrap()),
    );
    assert_eq!(hub.rewrap_keys().await.unwrap(), 4);
    assert_eq!(
        hub.master_keys_in_use().await.unwrap(),
        vec!["local:2".to_owned()]
    );
    assert_eq!(
        kf.retire_versions(&hub.master_keys_in_use().await.unwrap())
            .unwrap(),
        vec![1]
    );
    let hub = Hub::new(
        hub.store().clone(),
        Arc::new(LocalKeyfile::open(&dir.join("master.key")).unwrap()),
    );
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    assert_eq!(export_all(&hub, &keys).await.len(), 10);
}

/// Endpoint and link configurations, client secret hashes, account secrets and run event
/// details are sealed under the workspace's keys too: a rotation moves them, and the old key is
/// retired only once none of them uses it.
pub async fn rotation_moves_configurations_secrets_and_events_too(
    config: StoreConfig,
    dir: &Path,
    _db: Db,
) {
    use sealsync_store::{AccountRow, EndpointRow, SealedField};
    let hub = hub_on(&config, dir).await;
    let (wsrow, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let ws = wsrow.id;
    let keys = hub.workspace_keys(ws).await.unwrap();
    let store = hub.store();
    let endpoint = sealsync_types::EndpointId::new();
    let config_at = sealsync_store::config_ref("endpoints", ws, endpoint.as_bytes());
    store
        .put_endpoint(
            ws,
            &EndpointRow {
                id: endpoint,
                name: "phone".into(),
                kind: "vdir".into(),
                config: keys.seal(&config_at, b"{\"kind\":\"vdir\"}").unwrap(),
                created_at: 1,
            },
        )
        .await
        .unwrap();
    let account = [9u8; 16];
    let secret_at = sealsync_crypto::RecordRef {
        table: "accounts",
        workspace: ws,
        record: &account,
        field: "secret",
    };
    store
        .put_account(
            ws,
            &AccountRow {
                id: account,
                name: "dav".into(),
                kind: "basic".into(),
                secret: keys.seal(&secret_at, b"hunter2hunter2").unwrap(),
                hint: "u...".into(),
                created_at: 1,
                rotated_at: None,
                status: None,
            },
        )
        .await
        .unwrap();

    hub.rotate_data_key(ws).await.unwrap();
    let keys = hub.workspace_keys(ws).await.unwrap();
    let report = hub.reencrypt(&keys, 50, |_, _| {}).await.unwrap();
    assert_eq!(report.remaining, 0);
    assert_eq!(report.other_resealed, 2);
    assert!(report.other_failed.is_empty(), "{:?}", report.other_failed);
    assert_eq!(hub.retire_unused_data_keys(ws).await.unwrap(), vec![1]);
    let keys = hub.workspace_keys(ws).await.unwrap();
    for field in [SealedField::EndpointConfig, SealedField::AccountSecret] {
        let values = store.sealed_values(ws, field).await.unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(
            sealsync_crypto::sealed_key_version(&values[0].sealed).unwrap(),
            2
        );
        keys.open(&values[0].at(ws), &values[0].sealed)
            .expect("still readable after the old key is gone");
    }

    // Values still under the old key keep it alive, even with no contact using it.
    hub.rotate_data_key(ws).await.unwrap();
    assert_eq!(
        hub.retire_unused_data_keys(ws).await.unwrap(),
        Vec::<u32>::new()
    );
    let keys = hub.workspace_keys(ws).await.unwrap();
    let value = store
        .sealed_values(ws, SealedField::AccountSecret)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        keys.open(&value.at(ws), &value.sealed).unwrap(),
        b"hunter2hunter2"
    );
}

/// `n` corpus contacts with a UID, and a card without one.
fn with_uid_and_plain(n: usize) -> (Vec<Contact>, Contact) {
    let corpus = corpus()
        .into_iter()
        .filter(|c| c.uid().is_some())
        .take(n)
        .collect();
    let mut plain = Contact::new();
    plain.push(Property::text("FN", "No Uid Person"));
    (corpus, plain)
}

/// An import writes batch after batch into one transaction: later batches see what earlier
/// ones wrote (an edit is an update, a repeat is unchanged, never a second contact, even when
/// sealed ahead as new), other connections see nothing until it commits, and then all of it.
pub async fn import_batches_see_earlier_uncommitted_ones(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    let (workspace, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let (corpus, plain) = with_uid_and_plain(4);
    let mut session = ImportSession::new(keys.workspace(), ImportOptions::default());
    let mut first = corpus[..3].to_vec();
    first.push(plain.clone());
    let a = hub.import_into(&keys, &mut session, first).await.unwrap();
    assert_eq!((a.imported, a.updated, a.unchanged), (4, 0, 0));
    hub.write_import(&mut session).await.unwrap();
    assert_eq!(session.pending(), 0, "rows are written batch by batch");
    let outside = hub
        .store()
        .contacts_page(workspace.id, None, 100)
        .await
        .unwrap();
    assert!(
        outside.is_empty(),
        "uncommitted rows are visible: {}",
        outside.len()
    );

    let mut edited = corpus[0].clone();
    edited.set_text("NOTE", Some("changed in the second batch"));
    // Sealed ahead as new, as the CLI does while batches are mostly new: the rows of the
    // contacts that turn out known are sealed again under their own ids.
    let mut second: Vec<ImportItem> = [edited.clone(), corpus[1].clone(), plain, corpus[3].clone()]
        .into_iter()
        .map(|c| ImportItem::sealed_as_new(&keys, Hub::prepare(&keys, c, None)).unwrap())
        .collect();
    let b = hub
        .import_prepared(&keys, &mut session, &mut second)
        .await
        .unwrap();
    assert_eq!((b.imported, b.updated, b.unchanged), (1, 1, 2));
    hub.flush_import(&mut session).await.unwrap();

    let back = export_all(&hub, &keys).await;
    assert_eq!(back.len(), 5);
    assert!(back.contains(&edited));
    let rows = hub
        .store()
        .contacts_page(workspace.id, None, 100)
        .await
        .unwrap();
    let mut versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
    versions.sort();
    assert_eq!(versions, [1, 1, 1, 1, 2]);
}

/// An import into an empty workspace skips looking up what it never wrote, but only while
/// nobody else writes: a contact another writer stored between two of its transactions is
/// found by its UID and by its content, never imported a second time.
pub async fn import_sees_contacts_another_writer_stored_meanwhile(
    config: StoreConfig,
    dir: &Path,
    _db: Db,
) {
    let hub = hub_on(&config, dir).await;
    hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let (corpus, plain) = with_uid_and_plain(3);
    let mut session = ImportSession::new(keys.workspace(), ImportOptions::default());
    let a = hub
        .import_into(&keys, &mut session, vec![corpus[0].clone()])
        .await
        .unwrap();
    assert_eq!(a.imported, 1);
    hub.flush_import(&mut session).await.unwrap();
    // Another writer, between two transactions of the import.
    let other = hub
        .import(
            &keys,
            vec![corpus[1].clone(), plain.clone()],
            &ImportOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(other.imported, 2);
    let b = hub
        .import_into(
            &keys,
            &mut session,
            vec![corpus[1].clone(), plain, corpus[2].clone()],
        )
        .await
        .unwrap();
    assert_eq!((b.imported, b.updated, b.unchanged), (1, 0, 2));
    hub.flush_import(&mut session).await.unwrap();
    assert_eq!(export_all(&hub, &keys).await.len(), 4);
}

/// Rows written as new that are not (the same id twice in one write, or an id already
/// stored) end up as the last of them, body and index entries, as upserts would.
pub async fn new_rows_with_taken_ids_are_upserted(config: StoreConfig, dir: &Path, _db: Db) {
    let hub = hub_on(&config, dir).await;
    let (workspace, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let mut corpus: Vec<Contact> = corpus()
        .into_iter()
        .filter(|c| !c.emails().is_empty())
        .collect();
    corpus.dedup_by_key(|c| c.emails()[0].to_lowercase());
    corpus.truncate(3);
    let found_by_email = async |c: &Contact| {
        let email = sealsync_contact::Email::parse(&c.emails()[0]).unwrap();
        hub.find(&keys, IndexKind::Email, email.as_str())
            .await
            .unwrap()
            .len()
    };
    let id = sealsync_types::ContactId::new();
    let row = |c: &Contact| {
        let prepared = Hub::prepare(&keys, c.clone(), None);
        Hub::seal_row(&keys, id, 1, &prepared, 1).unwrap()
    };
    let store = hub.store();
    store
        .write_contacts(workspace.id, &[row(&corpus[0]), row(&corpus[1])])
        .await
        .unwrap();
    assert_eq!(export_all(&hub, &keys).await, vec![corpus[1].clone()]);
    store
        .write_contacts(workspace.id, &[row(&corpus[2])])
        .await
        .unwrap();
    assert_eq!(export_all(&hub, &keys).await, vec![corpus[2].clone()]);
    assert_eq!(found_by_email(&corpus[0]).await, 0);
    assert_eq!(found_by_email(&corpus[1]).await, 0);
    assert_eq!(found_by_email(&corpus[2]).await, 1);
}

/// Every write a link's plan reads moves a change clock in its own transaction: hub contacts
/// (API writes, imports, sync batches) the workspace's hub clock; a link's state and conflicts
/// (sync batches, decisions) that link's clock. A link's mark is kept and goes with its link.
pub async fn change_clocks_move_with_every_write(config: StoreConfig, dir: &Path, _db: Db) {
    use sealsync_store::{Clocks, ConflictRow, EventRow, LinkMark, Moved, StateRow, SyncBatch};
    use sealsync_types::{ConflictId, ContactId, LinkId, RunId};

    let hub = hub_on(&config, dir).await;
    let (workspace, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let store = hub.store();
    let ws = workspace.id;
    let (link, other) = (LinkId::new(), LinkId::new());
    let clocks = async |link| store.clocks(ws, link).await.unwrap();
    let at = |hub, link| Clocks { hub, link };
    assert_eq!(clocks(link).await, at(0, 0));

    let people: Vec<Contact> = corpus().into_iter().take(3).collect();
    let id = ContactId::new();
    let row = |c: &Contact, version| {
        Hub::seal_row(&keys, id, version, &Hub::prepare(&keys, c.clone(), None), 1).unwrap()
    };
    store
        .write_contacts(ws, &[row(&people[0], 1)])
        .await
        .unwrap();
    assert_eq!(clocks(link).await, at(1, 0), "an API write");
    assert!(
        store
            .write_contact_if_version(ws, &row(&people[1], 2), 1)
            .await
            .unwrap()
    );
    assert_eq!(clocks(link).await, at(2, 0), "a conditional write");
    assert!(
        !store
            .write_contact_if_version(ws, &row(&people[1], 3), 1)
            .await
            .unwrap()
    );
    assert_eq!(clocks(link).await, at(2, 0), "a refused conditional write");

    let mut session = ImportSession::new(ws, ImportOptions::default());
    hub.import_into(&keys, &mut session, people.clone())
        .await
        .unwrap();
    hub.flush_import(&mut session).await.unwrap();
    assert_eq!(clocks(link).await, at(3, 0), "an import, once per commit");
    let mut session = ImportSession::new(ws, ImportOptions::default());
    hub.import_into(&keys, &mut session, people.clone())
        .await
        .unwrap();
    hub.flush_import(&mut session).await.unwrap();
    assert_eq!(clocks(link).await, at(3, 0), "an import that wrote nothing");

    let state = StateRow {
        remote_key: [7; 32],
        contact: id,
        etag: "e1".into(),
        remote_mac: [1; 32],
        hub_mac: [2; 32],
    };
    let batch = SyncBatch {
        contacts: vec![row(&people[2], 3)],
        upserts: vec![state],
        ..SyncBatch::default()
    };
    let run = RunId::new();
    let moved = store.apply_sync_batch(ws, link, run, &batch).await.unwrap();
    assert_eq!(
        moved,
        Moved {
            hub: Some(4),
            link: Some(1)
        }
    );
    let events = SyncBatch {
        events: vec![EventRow {
            seq: 1,
            action: "rejected".into(),
            contact: None,
            detail: None,
            at: 1,
        }],
        ..SyncBatch::default()
    };
    let moved = store
        .apply_sync_batch(ws, link, run, &events)
        .await
        .unwrap();
    assert_eq!(
        moved,
        Moved::default(),
        "events alone change nothing a plan reads"
    );
    let conflict = ConflictRow {
        id: ConflictId::new(),
        link,
        contact: id,
        kind: "both-changed".into(),
        resolution: None,
        created_at: 1,
    };
    let queued = SyncBatch {
        open_conflicts: vec![conflict.clone()],
        ..SyncBatch::default()
    };
    let moved = store
        .apply_sync_batch(ws, link, run, &queued)
        .await
        .unwrap();
    assert_eq!(moved.link, Some(2));
    assert!(
        store
            .resolve_conflict(ws, conflict.id, "hub")
            .await
            .unwrap()
    );
    assert_eq!(clocks(link).await, at(4, 3), "a decision");
    assert!(
        !store
            .resolve_conflict(ws, ConflictId::new(), "hub")
            .await
            .unwrap()
    );
    assert_eq!(clocks(link).await, at(4, 3));
    assert_eq!(clocks(other).await, at(4, 0), "each link has its own clock");

    // Contacts carry the hub clock of their last write: the sync batch (4) rewrote `id`.
    let ids = |metas: Vec<sealsync_store::HubMeta>| metas.iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(ids(store.hub_meta_since(ws, 3).await.unwrap()), vec![id]);
    assert!(store.hub_meta_since(ws, 4).await.unwrap().is_empty());
    let all = store.hub_meta(ws).await.unwrap();
    assert_eq!(store.hub_meta_since(ws, 0).await.unwrap().len(), all.len());
    assert_eq!(
        store.hub_meta_since(ws, 2).await.unwrap().len(),
        all.len(),
        "every contact was written by the import or the batch"
    );
    assert_eq!(
        ids(store
            .hub_meta_of(ws, &[ContactId::new(), id])
            .await
            .unwrap()),
        vec![id]
    );
    let rows = store
        .link_state_of(ws, link, &[[7; 32], [8; 32]], &[id])
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .map(|s| (s.remote_key, s.contact))
            .collect::<Vec<_>>(),
        vec![([7; 32], id)],
        "a row found by key and by contact comes once"
    );
    assert!(
        store
            .link_state_of(ws, other, &[[7; 32]], &[id])
            .await
            .unwrap()
            .is_empty()
    );

    let mark = LinkMark {
        clocks: at(4, 3),
        digest: [9; 32],
        settings: [8; 32],
    };
    let members = [5u8; 48];
    assert_eq!(store.link_mark(ws, link).await.unwrap(), None);
    assert_eq!(store.link_members(ws, link).await.unwrap(), None);
    store
        .put_link_mark(ws, link, Some((&mark, &members)))
        .await
        .unwrap();
    assert_eq!(store.link_mark(ws, link).await.unwrap(), Some(mark.clone()));
    assert_eq!(
        store.link_members(ws, link).await.unwrap(),
        Some(members.to_vec())
    );
    assert_eq!(store.link_mark(ws, other).await.unwrap(), None);
    store.put_link_mark(ws, link, None).await.unwrap();
    assert_eq!(store.link_mark(ws, link).await.unwrap(), None);
    store
        .put_link_mark(ws, link, Some((&mark, &members)))
        .await
        .unwrap();
    store.delete_link(ws, link).await.unwrap();
    assert_eq!(store.link_mark(ws, link).await.unwrap(), None);
    assert_eq!(
        clocks(link).await,
        at(4, 0),
        "a deleted link's clock goes with it"
    );
}

/// A write rewrites only what changed (index entries that stay are left in place, a binding
/// that stays is updated in place), and what changed is exactly as a full rewrite leaves it.
pub async fn rewrites_keep_what_stays_and_replace_the_rest(
    config: StoreConfig,
    dir: &Path,
    _db: Db,
) {
    use sealsync_store::{StateRow, SyncBatch};
    use sealsync_types::{ContactId, LinkId, RunId};

    let hub = hub_on(&config, dir).await;
    let (workspace, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let (_, keys) = hub.open_workspace(&ws()).await.unwrap();
    let store = hub.store();
    let ws = workspace.id;
    let person = corpus().remove(0);
    let id = ContactId::new();
    let row = |version, key_version, index: Vec<(IndexKind, [u8; 32])>| {
        let (mut r, _) = Hub::seal_row(
            &keys,
            id,
            version,
            &Hub::prepare(&keys, person.clone(), None),
            1,
        )
        .unwrap();
        r.key_version = key_version;
        (r, index)
    };
    let found = async |kind, value: [u8; 32]| {
        store
            .lookup_index(ws, kind, &[value])
            .await
            .unwrap()
            .into_iter()
            .map(|(_, c)| c)
            .collect::<Vec<_>>()
    };
    store
        .write_contacts(
            ws,
            &[row(
                1,
                1,
                vec![(IndexKind::Email, [1; 32]), (IndexKind::Phone, [2; 32])],
            )],
        )
        .await
        .unwrap();
    // The email changes, the phone stays, a UID comes; the row moves to key version 2.
    store
        .write_contacts(
            ws,
            &[row(
                2,
                2,
                vec![
                    (IndexKind::Email, [3; 32]),
                    (IndexKind::Phone, [2; 32]),
                    (IndexKind::Uid, [4; 32]),
                ],
            )],
        )
        .await
        .unwrap();
    assert!(
        found(IndexKind::Email, [1; 32]).await.is_empty(),
        "old email"
    );
    assert_eq!(found(IndexKind::Email, [3; 32]).await, vec![id]);
    assert_eq!(found(IndexKind::Phone, [2; 32]).await, vec![id]);
    assert_eq!(found(IndexKind::Uid, [4; 32]).await, vec![id]);
    assert_eq!(store.count_at_key_version(ws, 2).await.unwrap(), 1);
    assert_eq!(store.count_at_key_version(ws, 1).await.unwrap(), 0);
    // Same key version again: it stays.
    store
        .write_contacts(ws, &[row(3, 2, vec![(IndexKind::Phone, [2; 32])])])
        .await
        .unwrap();
    assert_eq!(store.count_at_key_version(ws, 2).await.unwrap(), 1);
    assert!(found(IndexKind::Email, [3; 32]).await.is_empty());
    assert!(found(IndexKind::Uid, [4; 32]).await.is_empty());
    assert_eq!(found(IndexKind::Phone, [2; 32]).await, vec![id]);

    // Link state: bindings that stay, swap, move to a new key, are given twice or forgotten.
    // The link's clock row counts them as they go.
    let link = LinkId::new();
    let (c1, c2, c3) = (ContactId::new(), ContactId::new(), ContactId::new());
    let bind = |key: u8, contact, etag: &str| StateRow {
        remote_key: [key; 32],
        contact,
        etag: etag.into(),
        remote_mac: [key; 32],
        hub_mac: [key; 32],
    };
    let apply = async |upserts: Vec<StateRow>, forget: Vec<[u8; 32]>| {
        let batch = SyncBatch {
            upserts,
            forget,
            ..SyncBatch::default()
        };
        store
            .apply_sync_batch(ws, link, RunId::new(), &batch)
            .await
            .unwrap();
        let mut state: Vec<(u8, ContactId, String)> = store
            .link_state(ws, link)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.remote_key[0], s.contact, s.etag))
            .collect();
        state.sort_by_key(|s| s.0);
        assert_eq!(
            store.link_state_count(ws, link).await.unwrap(),
            state.len() as u64
        );
        state
    };
    assert_eq!(
        apply(
            vec![bind(1, c1, "a"), bind(2, c2, "a"), bind(3, c3, "a")],
            vec![]
        )
        .await,
        vec![
            (1, c1, "a".into()),
            (2, c2, "a".into()),
            (3, c3, "a".into())
        ]
    );
    assert_eq!(
        apply(
            vec![bind(1, c2, "b"), bind(2, c1, "b"), bind(3, c3, "b")],
            vec![]
        )
        .await,
        vec![
            (1, c2, "b".into()),
            (2, c1, "b".into()),
            (3, c3, "b".into())
        ],
        "a swap within one batch, and a binding that stays"
    );
    assert_eq!(
        apply(
            vec![bind(4, c3, "c"), bind(5, c1, "c"), bind(5, c1, "d")],
            vec![]
        )
        .await,
        vec![
            (1, c2, "b".into()),
            (4, c3, "c".into()),
            (5, c1, "d".into())
        ],
        "a contact moved to a new key drops its old binding; a row given twice lands as its last"
    );
    assert_eq!(
        apply(vec![bind(6, c2, "e")], vec![[4; 32], [9; 32]]).await,
        vec![(5, c1, "d".into()), (6, c2, "e".into())],
        "forgotten keys, one of them never bound, and a contact moved while the batch forgets"
    );

    // A batch larger than one statement: new bindings, and last a contact of its first part
    // moved to a new key. That part's rows are written before the move is seen.
    let many: Vec<ContactId> = (0..401).map(|_| ContactId::new()).collect();
    let wide_key = |i: usize| {
        let mut key = [0xee; 32];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        key
    };
    let mut upserts: Vec<StateRow> = many
        .iter()
        .enumerate()
        .map(|(i, c)| StateRow {
            remote_key: wide_key(i),
            contact: *c,
            etag: "f".into(),
            remote_mac: [0; 32],
            hub_mac: [0; 32],
        })
        .collect();
    upserts.push(StateRow {
        remote_key: wide_key(1000),
        ..upserts[0].clone()
    });
    let state = apply(upserts, vec![]).await;
    assert_eq!(state.len(), 2 + 401, "each contact bound once");
    let bound: std::collections::HashSet<[u8; 32]> = store
        .link_state(ws, link)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.remote_key)
        .collect();
    assert!(!bound.contains(&wide_key(0)), "the moved contact's old key");
    assert!(bound.contains(&wide_key(1000)) && bound.contains(&wide_key(400)));
}

/// Interrupting a link's runs closes only that link's runs still recorded as running, and its
/// queued ones whose holder is gone.
pub async fn interrupting_runs_closes_only_the_links_running_ones(
    config: StoreConfig,
    dir: &Path,
    _db: Db,
) {
    use sealsync_store::RunRow;
    use sealsync_types::{LinkId, RunId};

    let hub = hub_on(&config, dir).await;
    let (workspace, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let store = hub.store();
    let ws = workspace.id;
    let (link, other) = (LinkId::new(), LinkId::new());
    let run = |link, status: &str, ended_at| RunRow {
        id: RunId::new(),
        link,
        started_at: 1,
        ended_at,
        status: status.into(),
        counts: "{}".into(),
    };
    let rows = [
        run(link, "running", None),
        run(link, "running", None),
        run(link, "ok", Some(2)),
        run(link, "queued", None),
        run(link, "queued", None),
        run(other, "running", None),
        run(other, "queued", None),
    ];
    for (i, r) in rows.iter().enumerate() {
        match (i, r.status.as_str()) {
            (3 | 6, _) => store.queue_run(ws, r, "gone").await.unwrap(),
            (4, _) => store.queue_run(ws, r, "alive").await.unwrap(),
            _ => store.put_run(ws, r).await.unwrap(),
        }
    }
    let gone = |h: &str| h == "gone";
    assert_eq!(store.interrupt_runs(ws, link, 7, gone).await.unwrap(), 3);
    let after = async |r: &RunRow| {
        let got = store.run(ws, r.id).await.unwrap().unwrap();
        (got.status, got.ended_at)
    };
    let interrupted = ("interrupted".to_owned(), Some(7));
    assert_eq!(after(&rows[0]).await, interrupted);
    assert_eq!(after(&rows[1]).await, interrupted);
    assert_eq!(after(&rows[2]).await, ("ok".into(), Some(2)));
    assert_eq!(after(&rows[3]).await, interrupted);
    assert_eq!(after(&rows[4]).await, ("queued".into(), None));
    assert_eq!(after(&rows[5]).await, ("running".into(), None));
    assert_eq!(after(&rows[6]).await, ("queued".into(), None));
    assert_eq!(store.interrupt_runs(ws, link, 8, gone).await.unwrap(), 0);
}

/// Pruning webhook history forgets old delivery ids and old deletions, never a live item.
pub async fn pruning_hook_history_keeps_live_items(config: StoreConfig, dir: &Path, _db: Db) {
    use sealsync_store::{HookDelivery, HookItemRow, HookOutcome};
    use sealsync_types::EndpointId;

    let hub = hub_on(&config, dir).await;
    let (workspace, _) = hub.ensure_workspace(&ws()).await.unwrap();
    let store = hub.store();
    let ws = workspace.id;
    let endpoint = EndpointId::new();
    let item = |id: u8, item: Option<Vec<u8>>| HookItemRow {
        id: vec![id; 32],
        etag: format!("e{id}"),
        item,
        sent_at: 1_000,
    };
    let delivery = HookDelivery {
        workspace: ws,
        endpoint,
        receipt: vec![7; 32],
        answer: "{}".into(),
        items: vec![item(1, Some(vec![1, 2, 3])), item(2, None)],
    };
    let kept = store
        .store_deliveries(std::slice::from_ref(&delivery))
        .await
        .unwrap();
    assert_eq!(kept, [HookOutcome::Stored]);
    let start = sealsync_store::now_ms();
    // Nothing is old enough yet.
    assert_eq!(store.prune_hook_history(start - 60_000).await.unwrap(), 0);
    assert_eq!(store.prune_hook_receipts().await.unwrap(), 0);
    let held = async || {
        let rows = store
            .hook_items(ws, endpoint, &[vec![1; 32], vec![2; 32]])
            .await
            .unwrap();
        let mut ids: Vec<(u8, bool)> = rows.iter().map(|r| (r.id[0], r.item.is_some())).collect();
        ids.sort();
        ids
    };
    assert_eq!(held().await, [(1, true), (2, false)]);
    // Later: the delivery id and the deletion go, the live item stays.
    assert_eq!(
        store.prune_hook_history(start + 60_000).await.unwrap(),
        2,
        "one receipt and one deletion"
    );
    assert_eq!(held().await, [(1, true)]);
    let listed = store.hook_listing(ws, endpoint).await.unwrap();
    assert_eq!(listed.len(), 1);
    // The delivery id is forgotten: the same delivery is kept again, not answered as a repeat.
    let again = store.store_deliveries(&[delivery]).await.unwrap();
    assert_eq!(again, [HookOutcome::Stored]);
}
