use sealsync_engine::spec::{ConflictPolicy, DeleteVsEdit, Direction};
use sealsync_engine::{LinkSpec, PlanError, RunError, RunOptions, process_holder};
use sealsync_store::RunRow;
use sealsync_types::RunId;

use crate::harness::*;

fn both(conflict: ConflictPolicy) -> LinkSpec {
    LinkSpec {
        direction: Direction::Both,
        conflict,
        ..LinkSpec::default()
    }
}

/// Five people in vdir `a`, synced to the hub and on to vdir `b`.
async fn two_vdirs(conflict: ConflictPolicy) -> (World, std::path::PathBuf, std::path::PathBuf) {
    let w = world().await;
    let a = w.vdir_link("a", both(conflict)).await;
    let b = w.vdir_link("b", both(conflict)).await;
    for i in 1..=5 {
        put(
            &a,
            &format!("p{i}.vcf"),
            &card(
                &format!("p{i}"),
                &format!("Person {i}"),
                &format!("p{i}@example.org"),
                "",
            ),
        );
    }
    let r = w.sync("a").await;
    assert_eq!(r.counts.hub_created, 5);
    let r = w.sync("b").await;
    assert_eq!(r.counts.remote_created, 5);
    (w, a, b)
}

#[tokio::test]
async fn changes_on_either_side_reach_the_other() {
    let (w, a, b) = two_vdirs(ConflictPolicy::Manual).await;
    assert_eq!(vdir(&a), vdir(&b));
    assert_eq!(w.hub().await, vdir(&a));

    // A no-op run changes nothing.
    let r = w.sync("a").await;
    assert_eq!(
        (
            r.counts.created,
            r.counts.updated,
            r.counts.deleted,
            r.counts.unchanged
        ),
        (0, 0, 0, 5)
    );

    // Edit and create in b, delete in a.
    put(
        &b,
        &file_name(&b, "p2"),
        &card("p2", "Person Two", "p2@example.org", "edited in b"),
    );
    put(&b, "new.vcf", &card("p6", "Person 6", "p6@example.org", ""));
    std::fs::remove_file(a.join("p3.vcf")).unwrap();
    w.sync("a").await;
    w.sync("b").await;
    w.sync("a").await;
    let hub = w.hub().await;
    assert_eq!(hub.len(), 5);
    assert_eq!(hub["p2"].note, "edited in b");
    assert!(!hub.contains_key("p3"));
    assert_eq!(vdir(&a), hub);
    assert_eq!(vdir(&b), hub);
    // A run ends once the old versions its writes moved aside are gone.
    for dir in [&a, &b] {
        let staged = std::fs::read_dir(dir.join(".sealsync-staging")).map_or(0, Iterator::count);
        assert_eq!(staged, 0, "{}", dir.display());
    }
}

fn file_name(dir: &std::path::Path, uid: &str) -> String {
    file_of(dir, uid)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string()
}

/// Edits p1 in the hub (through vdir b) and in vdir a, then runs link a.
async fn conflict_on_p1(
    conflict: ConflictPolicy,
    remote_newer: bool,
) -> (World, std::path::PathBuf, std::path::PathBuf) {
    let (w, a, b) = two_vdirs(conflict).await;
    put(
        &b,
        &file_name(&b, "p1"),
        &card("p1", "Person 1", "p1@example.org", "hub side"),
    );
    w.sync("b").await;
    put(
        &a,
        "p1.vcf",
        &card("p1", "Person 1", "p1@example.org", "remote side"),
    );
    if remote_newer {
        touch_future(&a.join("p1.vcf"), 30);
    }
    (w, a, b)
}

#[tokio::test]
async fn conflicts_follow_the_link_policy() {
    for (policy, newer, expect) in [
        (ConflictPolicy::HubWins, true, "hub side"),
        (ConflictPolicy::RemoteWins, false, "remote side"),
        (ConflictPolicy::Newest, true, "remote side"),
        (ConflictPolicy::Newest, false, "hub side"),
    ] {
        let (w, a, b) = conflict_on_p1(policy, newer).await;
        w.sync("a").await;
        w.sync("b").await;
        let hub = w.hub().await;
        assert_eq!(hub["p1"].note, expect, "{policy:?} newer={newer}");
        assert_eq!(vdir(&a), hub, "{policy:?}");
        assert_eq!(vdir(&b), hub, "{policy:?}");
    }
}

#[tokio::test]
async fn keep_both_keeps_both_versions_everywhere() {
    let (w, a, b) = conflict_on_p1(ConflictPolicy::KeepBoth, false).await;
    let r = w.sync("a").await;
    assert_eq!(r.counts.conflicts, 1);
    w.sync("b").await;
    w.sync("a").await;
    let hub = w.hub().await;
    assert_eq!(hub.len(), 6);
    let notes: Vec<&str> = hub
        .values()
        .filter(|p| p.name == "Person 1")
        .map(|p| p.note.as_str())
        .collect();
    assert_eq!(notes.len(), 2);
    assert!(notes.contains(&"hub side") && notes.contains(&"remote side"));
    assert_eq!(vdir(&a), hub);
    assert_eq!(vdir(&b), hub);
}

#[tokio::test]
async fn manual_conflicts_wait_for_a_decision() {
    let (w, a, _b) = conflict_on_p1(ConflictPolicy::Manual, false).await;
    let r = w.sync("a").await;
    assert_eq!(r.counts.conflicts, 1);
    // Nothing moved on either side, and a second run does not queue it twice.
    assert_eq!(w.hub().await["p1"].note, "hub side");
    assert_eq!(vdir(&a)["p1"].note, "remote side");
    w.sync("a").await;
    let store = w.engine.hub().store();
    let ws = w.engine.keys().workspace();
    let queued = store.conflicts(ws).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert!(
        store
            .resolve_conflict(ws, queued[0].id, "remote")
            .await
            .unwrap()
    );
    w.sync("a").await;
    assert_eq!(w.hub().await["p1"].note, "remote side");
    assert!(store.conflicts(ws).await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_versus_edit_keeps_the_edit_by_default() {
    let (w, a, b) = two_vdirs(ConflictPolicy::Manual).await;
    // Edited in the hub (through b), deleted in a.
    put(
        &b,
        &file_name(&b, "p4"),
        &card("p4", "Person 4", "p4@example.org", "still here"),
    );
    w.sync("b").await;
    std::fs::remove_file(a.join("p4.vcf")).unwrap();
    w.sync("a").await;
    assert_eq!(w.hub().await["p4"].note, "still here");
    assert_eq!(
        vdir(&a)["p4"].note,
        "still here",
        "the deleted file comes back with the edit"
    );

    // Deleted in the hub (through b), edited in a: the edit restores it.
    std::fs::remove_file(file_of(&b, "p5")).unwrap();
    w.sync("b").await;
    assert!(!w.hub().await.contains_key("p5"));
    put(
        &a,
        "p5.vcf",
        &card("p5", "Person 5", "p5@example.org", "edited"),
    );
    w.sync("a").await;
    w.sync("b").await;
    let hub = w.hub().await;
    assert_eq!(hub["p5"].note, "edited");
    assert_eq!(vdir(&b), hub);
}

#[tokio::test]
async fn delete_wins_when_the_link_says_so() {
    let w = world().await;
    let spec = LinkSpec {
        delete_vs_edit: DeleteVsEdit::DeleteWins,
        ..both(ConflictPolicy::Manual)
    };
    let a = w.vdir_link("a", spec.clone()).await;
    let b = w.vdir_link("b", spec).await;
    for i in 1..=5 {
        put(
            &a,
            &format!("p{i}.vcf"),
            &card(&format!("p{i}"), "P", &format!("p{i}@example.org"), ""),
        );
    }
    w.sync("a").await;
    w.sync("b").await;
    put(
        &b,
        &file_name(&b, "p4"),
        &card("p4", "P", "p4@example.org", "edit"),
    );
    w.sync("b").await;
    std::fs::remove_file(a.join("p4.vcf")).unwrap();
    w.sync("a").await;
    w.sync("b").await;
    assert!(!w.hub().await.contains_key("p4"));
    assert!(!vdir(&b).contains_key("p4"));
}

#[tokio::test]
async fn the_same_people_twice_give_one_contact_each() {
    let (w, a, _b) = two_vdirs(ConflictPolicy::Manual).await;
    // The same export copied into a third folder: linked, not duplicated.
    let c = w
        .vdir_link(
            "c",
            LinkSpec {
                direction: Direction::Pull,
                ..LinkSpec::default()
            },
        )
        .await;
    for e in std::fs::read_dir(&a).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), c.join(e.file_name())).unwrap();
    }
    let r = w.sync("c").await;
    assert_eq!((r.counts.hub_created, r.counts.hub_updated), (0, 0));
    assert_eq!(w.hub().await.len(), 5);

    // The same person from another system, under another UID and with a second address.
    let d = w
        .vdir_link(
            "d",
            LinkSpec {
                direction: Direction::Pull,
                ..LinkSpec::default()
            },
        )
        .await;
    put(
        &d,
        "x.vcf",
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:other-system-7\r\nFN:Person 2\r\nEMAIL:P2@Example.org\r\nEMAIL:p2@work.example\r\nTITLE:Engineer\r\nEND:VCARD\r\n",
    );
    let r = w.sync("d").await;
    assert_eq!((r.counts.hub_created, r.counts.hub_updated), (0, 1));
    let hub = w.hub().await;
    assert_eq!(hub.len(), 5);
    assert_eq!(
        hub["p2"].emails,
        vec!["p2@example.org".to_owned(), "p2@work.example".to_owned()]
    );
}

#[tokio::test]
async fn mass_deletion_stops_the_run_before_any_change() {
    let (w, a, b) = two_vdirs(ConflictPolicy::Manual).await;
    for i in 1..=2 {
        std::fs::remove_file(a.join(format!("p{i}.vcf"))).unwrap();
    }
    let err = w.try_sync("a", &RunOptions::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Guard {
                error: PlanError::MassDelete {
                    deletes: 2,
                    linked: 5,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(w.hub().await.len(), 5);

    // An emptied folder is never read as "everyone was deleted".
    for e in std::fs::read_dir(&b).unwrap() {
        let path = e.unwrap().path();
        if path.is_file() {
            std::fs::remove_file(path).unwrap();
        }
    }
    let err = w.try_sync("b", &RunOptions::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Guard {
                error: PlanError::EmptySnapshot { linked: 5 },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(w.hub().await.len(), 5);

    // Unless it is meant.
    let r = w
        .try_sync(
            "a",
            &RunOptions {
                allow_mass_delete: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.counts.hub_deleted, 2);
    assert_eq!(w.hub().await.len(), 3);
}

#[tokio::test]
async fn an_unreadable_endpoint_deletes_nothing() {
    let (w, a, _b) = two_vdirs(ConflictPolicy::Manual).await;
    // One unreadable file: skipped and reported, never read as a deletion.
    put(&a, "p1.vcf", "this is not a vCard");
    let r = w.sync("a").await;
    assert_eq!(r.counts.rejected, 1);
    assert_eq!(r.counts.hub_deleted, 0);
    assert_eq!(w.hub().await.len(), 5);
    // A folder that cannot be listed stops the run.
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::write(&a, "now a file").unwrap();
    assert!(matches!(
        w.try_sync("a", &RunOptions::default()).await,
        Err(RunError::Endpoint { .. })
    ));
    assert_eq!(w.hub().await.len(), 5);
}

#[tokio::test]
async fn dry_run_plans_and_changes_nothing() {
    let w = world().await;
    let a = w.vdir_link("a", both(ConflictPolicy::Manual)).await;
    put(&a, "p1.vcf", &card("p1", "P", "p1@example.org", ""));
    let r = w
        .try_sync(
            "a",
            &RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.plan.unwrap().actions.len(), 1);
    assert!(w.hub().await.is_empty());
    assert!(
        w.engine
            .hub()
            .store()
            .runs(w.engine.keys().workspace(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn push_links_drop_fields_and_pulls_keep_them() {
    let w = world().await;
    let spec = LinkSpec {
        drop: vec!["NOTE".into()],
        ..both(ConflictPolicy::Manual)
    };
    let a = w.vdir_link("a", spec).await;
    w.engine
        .hub()
        .import(
            w.engine.keys(),
            vec![contact("p1", "Ann", "secret note")],
            &Default::default(),
        )
        .await
        .unwrap();
    w.sync("a").await;
    assert_eq!(
        vdir(&a)["p1"].note,
        "",
        "the dropped NOTE never reaches the endpoint"
    );
    put(&a, &file_name(&a, "p1"), &card("p1", "Ann B", "", ""));
    w.sync("a").await;
    let hub = w.hub().await;
    assert_eq!(hub["p1"].name, "Ann B");
    assert_eq!(
        hub["p1"].note, "secret note",
        "pulling an edit keeps what the link never carries"
    );
}

fn contact(uid: &str, name: &str, note: &str) -> sealsync_contact::Contact {
    let text = card(uid, name, "", note);
    sealsync_contact::vcard::read_all(text.as_bytes())
        .0
        .remove(0)
        .contact
}

#[tokio::test]
async fn runs_are_recorded_with_sealed_event_details() {
    let (w, _a, _b) = two_vdirs(ConflictPolicy::Manual).await;
    let store = w.engine.hub().store();
    let ws = w.engine.keys().workspace();
    let runs = store.runs(ws, 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| r.status == "ok" && r.ended_at.is_some())
    );
    let events = store.run_events(ws, runs[1].id).await.unwrap();
    assert_eq!(events.len(), 5);
    for e in &events {
        assert_eq!(e.action, "hub-created");
        let sealed = e.detail.as_ref().unwrap();
        assert!(
            !String::from_utf8_lossy(sealed).contains(".vcf"),
            "event detail in plaintext"
        );
        let detail = w.engine.open_detail(runs[1].id, e.seq, sealed).unwrap();
        assert!(detail["remote"].as_str().unwrap().ends_with(".vcf"));
    }
}

#[tokio::test]
async fn csv_backup_gets_every_contact_without_dropped_fields() {
    let w = world().await;
    let a = w.vdir_link("a", both(ConflictPolicy::Manual)).await;
    for i in 1..=3 {
        put(
            &a,
            &format!("p{i}.vcf"),
            &card(
                &format!("p{i}"),
                &format!("Person {i}"),
                &format!("p{i}@example.org"),
                "private",
            ),
        );
    }
    w.sync("a").await;
    let csv = w.path("backup.csv");
    w.engine
        .put_endpoint(
            "backup",
            &sealsync_engine::EndpointSpec::Csv {
                path: csv.clone(),
                preset: Some("google".into()),
                map: None,
            },
            false,
        )
        .await
        .unwrap();
    let spec = LinkSpec {
        direction: Direction::Push,
        drop: vec!["NOTE".into()],
        ..LinkSpec::default()
    };
    w.engine
        .put_link("backup", "backup", &spec, false)
        .await
        .unwrap();
    let r = w.sync("backup").await;
    assert_eq!(r.counts.remote_created, 3);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(!text.contains("private"));
    // A second run is a no-op; an edit in the hub updates its row.
    let r = w.sync("backup").await;
    assert_eq!(
        (r.counts.created, r.counts.updated, r.counts.unchanged),
        (0, 0, 3)
    );
    put(
        &a,
        "p2.vcf",
        &card("p2", "Person Two", "p2@example.org", "private"),
    );
    w.sync("a").await;
    let r = w.sync("backup").await;
    assert_eq!(r.counts.remote_updated, 1);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.contains("Person Two") && !text.contains("Person 2"),
        "{text}"
    );
}

#[tokio::test]
async fn pg_two_way_sync_on_postgres() {
    let Some(w) = pg_world().await else { return };
    let a = w.vdir_link("a", both(ConflictPolicy::Newest)).await;
    let b = w.vdir_link("b", both(ConflictPolicy::Newest)).await;
    for i in 1..=5 {
        put(
            &a,
            &format!("p{i}.vcf"),
            &card(&format!("p{i}"), "P", &format!("p{i}@example.org"), ""),
        );
    }
    w.sync("a").await;
    w.sync("b").await;
    put(
        &b,
        &file_name(&b, "p2"),
        &card("p2", "P", "p2@example.org", "edited"),
    );
    std::fs::remove_file(a.join("p1.vcf")).unwrap();
    w.sync("b").await;
    w.sync("a").await;
    w.sync("b").await;
    let hub = w.hub().await;
    assert_eq!(hub.len(), 4);
    assert_eq!(hub["p2"].note, "edited");
    assert_eq!(vdir(&a), hub);
    assert_eq!(vdir(&b), hub);
}

#[tokio::test]
async fn one_run_per_link_at_a_time() {
    let w = world().await;
    let a = w.vdir_link("a", both(ConflictPolicy::Manual)).await;
    put(&a, "p1.vcf", &card("p1", "P", "p1@example.org", ""));
    let def = w.def("a").await;
    let store = w.engine.hub().store();
    let ws = w.engine.keys().workspace();
    // Another host's live run holds the link.
    store
        .claim_link(ws, def.id, "elsewhere:1", 120, |_| false)
        .await
        .unwrap()
        .unwrap();
    let err = w.try_sync("a", &RunOptions::default()).await.unwrap_err();
    assert!(matches!(err, RunError::Busy { .. }), "{err}");
    assert!(w.hub().await.is_empty());
    // A holder on this host whose process is gone is taken over at once.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    store
        .renew_link_claim(ws, def.id, "elsewhere:1", true)
        .await
        .unwrap();
    let dead = format!("{}:{}", host.trim(), u32::MAX - 1);
    store
        .claim_link(ws, def.id, &dead, 120, |_| false)
        .await
        .unwrap()
        .unwrap();
    w.sync("a").await;
    assert_eq!(w.hub().await.len(), 1);
}

// A server runs many links in one process: a second run of the same link there is refused
// as one from another process would be, and runs once the first has let the link go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_link_within_one_process_too() {
    let w = world().await;
    let a = w.vdir_link("a", both(ConflictPolicy::Manual)).await;
    put(&a, "p1.vcf", &card("p1", "P", "p1@example.org", ""));
    let def = w.def("a").await;
    let second: std::sync::Mutex<Vec<bool>> = std::sync::Mutex::new(Vec::new());
    // The first run reports progress while it holds the link: the second starts then.
    let during = |_: u64, _: u64| {
        let mut seen = second.lock().unwrap();
        if seen.is_empty() {
            let again = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(w.engine.run(
                    &def,
                    &RunOptions::default(),
                    &|_, _| {},
                ))
            });
            seen.push(matches!(again, Err(RunError::Busy { .. })));
        }
    };
    let first = w
        .engine
        .run(&def, &RunOptions::default(), &during)
        .await
        .unwrap();
    assert_eq!(first.counts.hub_created, 1);
    assert_eq!(*second.lock().unwrap(), [true]);
    assert_eq!(w.hub().await.len(), 1);
    let runs = w.runs().await;
    assert_eq!(
        runs.len(),
        1,
        "the refused run is not recorded: it never ran"
    );
    // The link is free again.
    put(&a, "p2.vcf", &card("p2", "Q", "p2@example.org", ""));
    w.sync("a").await;
    assert_eq!(w.hub().await.len(), 2);
}

// A run that stops on an error says so in its record; one that stopped as a crash does is
// recorded as interrupted by the next run of its link.
#[tokio::test]
async fn runs_that_stop_are_recorded_as_failed_or_interrupted() {
    let w = world().await;
    let a = w.vdir_link("a", both(ConflictPolicy::Manual)).await;
    for i in 0..4 {
        let uid = format!("p{i}");
        put(
            &a,
            &format!("{uid}.vcf"),
            &card(&uid, "P", &format!("{uid}@example.org"), ""),
        );
    }
    let crash = RunOptions {
        batch: 1,
        interrupt_at: Some(3),
        ..RunOptions::default()
    };
    let err = w.try_sync("a", &crash).await.unwrap_err();
    assert!(matches!(err, RunError::Interrupted(_)), "{err}");
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].ended_at),
        ("running", None)
    );
    // Runs a server queued: one by a process that is gone, one by this one (still waiting).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let def = w.def("a").await;
    let store = w.engine.hub().store();
    let ws = w.engine.keys().workspace();
    let queued = |started_at| RunRow {
        id: RunId::new(),
        link: def.id,
        started_at,
        ended_at: None,
        status: "queued".into(),
        counts: "{}".into(),
    };
    let (lost, waiting) = (
        queued(runs[0].started_at - 2),
        queued(runs[0].started_at - 1),
    );
    let dead = format!("{}:{}", host.trim(), u32::MAX - 1);
    store.queue_run(ws, &lost, &dead).await.unwrap();
    store
        .queue_run(ws, &waiting, &process_holder())
        .await
        .unwrap();
    // The rerun, in this same process, takes the link over and closes the records of the cut
    // run and of the run its gone process had queued.
    w.sync("a").await;
    let runs = w.runs().await;
    let status: Vec<&str> = runs.iter().rev().map(|r| r.status.as_str()).collect();
    assert_eq!(status, ["interrupted", "queued", "interrupted", "ok"]);
    assert_eq!((runs[3].id, runs[2].id), (lost.id, waiting.id));
    assert!(
        runs.iter()
            .all(|r| r.ended_at.is_some() == (r.id != waiting.id))
    );
    assert_eq!(w.hub().await.len(), 4);
    // The folder is gone (a file stands in its place): the run fails and says why, by kind.
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::write(&a, "not a folder").unwrap();
    let err = w.try_sync("a", &RunOptions::default()).await.unwrap_err();
    assert!(matches!(err, RunError::Endpoint { .. }), "{err}");
    let runs = w.runs().await;
    assert_eq!(runs.len(), 5);
    let failed = &runs[0];
    assert_eq!(failed.status, "failed");
    assert!(failed.ended_at.is_some());
    let counts: serde_json::Value = serde_json::from_str(&failed.counts).unwrap();
    assert_eq!(counts["error"], "endpoint");
    assert!(
        !failed.counts.contains(a.to_str().unwrap()),
        "no paths in the record"
    );
}

#[tokio::test]
async fn an_edit_of_a_contact_recreated_in_the_hub_goes_to_the_new_one() {
    let w = world().await;
    let a = w.vdir_link("a", both(ConflictPolicy::Newest)).await;
    put(&a, "p1.vcf", &card("p1", "Ann", "p1@example.org", ""));
    w.sync("a").await;
    // Deleted in the hub, then created there again under the same UID ...
    hub_delete(&w, "p1").await;
    w.engine
        .hub()
        .import(
            w.engine.keys(),
            vec![contact("p1", "Ann New", "from the hub")],
            &Default::default(),
        )
        .await
        .unwrap();
    // ... while the file, still bound to the deleted contact, was edited.
    put(
        &a,
        "p1.vcf",
        &card("p1", "Ann", "p1@example.org", "edited in a"),
    );
    w.sync("a").await;
    // One contact for p1 everywhere (`hub` and `vdir` fail on a UID held twice), not the old
    // one restored beside the new one.
    let hub = w.hub().await;
    assert_eq!(hub.len(), 1);
    assert_eq!(hub["p1"].emails, vec!["p1@example.org".to_owned()]);
    assert_eq!(vdir(&a), hub);
    let r = w.sync("a").await;
    assert_eq!((r.counts.created, r.counts.updated), (0, 0));
    assert_eq!(vdir(&a), w.hub().await);
}

#[tokio::test]
async fn a_uid_match_wins_over_another_items_email_match() {
    let w = world().await;
    let a = w.vdir_link("a", both(ConflictPolicy::Newest)).await;
    let b = w.vdir_link("b", both(ConflictPolicy::Newest)).await;
    put(&a, "p0.vcf", &card("p0", "Ann", "shared@example.org", ""));
    w.sync("a").await;
    // In b: p0 itself (no email), and other people with p0's email; several, so that one of
    // them is listed before p0 whatever order the folder lists in.
    put(&b, "p0.vcf", &card("p0", "Ann", "", ""));
    for i in 1..=4 {
        put(
            &b,
            &format!("p{i}.vcf"),
            &card(&format!("p{i}"), "Bob", "shared@example.org", ""),
        );
    }
    for link in ["b", "a", "b", "a"] {
        w.sync(link).await;
    }
    // p0 stays one contact (`hub` and `vdir` fail on a UID held twice).
    let hub = w.hub().await;
    assert_eq!(hub["p0"].emails, vec!["shared@example.org".to_owned()]);
    assert_eq!(vdir(&a), hub);
    assert_eq!(vdir(&b), hub);
}

/// A link whose last run left nothing to do is not planned again (its run is recorded as
/// settled) until something its plan reads changes: a file of its folder, the hub, its
/// settings. Every run that follows a change carries the change.
#[tokio::test]
async fn a_settled_link_is_planned_again_only_after_a_change() {
    let w = world().await;
    let a = w.vdir_link("a", both(ConflictPolicy::Newest)).await;
    let b = w
        .vdir_link(
            "b",
            LinkSpec {
                direction: Direction::Push,
                ..LinkSpec::default()
            },
        )
        .await;
    for i in 1..=10 {
        let uid = format!("p{i}");
        put(
            &a,
            &format!("{uid}.vcf"),
            &card(&uid, &uid, &format!("{uid}@example.org"), ""),
        );
    }
    // How each run was planned: settled (not at all), since the link's mark, or in full.
    let settled = async |name: &str| {
        let r = w.sync(name).await;
        let how = match (r.settled, r.since_mark) {
            (true, _) => "settled",
            (false, true) => "since",
            (false, false) => "full",
        };
        (
            how,
            r.counts.created,
            r.counts.updated,
            r.counts.deleted,
            r.counts.unchanged,
        )
    };
    assert_eq!(settled("a").await, ("full", 10, 0, 0, 0));
    assert_eq!(settled("b").await, ("full", 10, 0, 0, 0));
    // Runs that carried changes left their links settled.
    assert_eq!(settled("a").await, ("settled", 0, 0, 0, 10));
    assert_eq!(settled("b").await, ("settled", 0, 0, 0, 10));

    // An edit in a's folder: a pulls it; the hub moved, so b pushes it. Each reads only what
    // changed since its mark.
    put(&a, "p1.vcf", &card("p1", "p1", "p1@example.org", "edited"));
    assert_eq!(settled("a").await, ("since", 0, 1, 0, 9));
    assert_eq!(settled("b").await, ("since", 0, 1, 0, 9));
    assert_eq!(settled("a").await, ("settled", 0, 0, 0, 10));
    assert_eq!(settled("b").await, ("settled", 0, 0, 0, 10));
    assert_eq!(vdir(&b)["p1"].note, "edited");

    // An edit in place, same size, only the modification time moved.
    let p2 = a.join("p2.vcf");
    let text = std::fs::read_to_string(&p2)
        .unwrap()
        .replace("FN:p2", "FN:q2");
    std::fs::write(&p2, text).unwrap();
    touch_future(&p2, 5);
    assert_eq!(settled("a").await, ("since", 0, 1, 0, 9));
    assert_eq!(settled("b").await, ("since", 0, 1, 0, 9));
    assert_eq!(vdir(&b)["p2"].name, "q2");

    // A new file in a's folder with the email of a contact a already binds: the match is
    // judged with that binding (read since the mark), so the file is a contact of its own.
    put(
        &a,
        "p1-copy.vcf",
        &card("p1-copy", "p1", "p1@example.org", ""),
    );
    assert_eq!(settled("a").await, ("since", 1, 0, 0, 10));
    assert_eq!(settled("b").await, ("since", 1, 0, 0, 10));
    // An item gone from the listing brings back the whole state.
    std::fs::remove_file(a.join("p1-copy.vcf")).unwrap();
    assert_eq!(settled("a").await, ("full", 0, 0, 1, 10));
    assert_eq!(settled("b").await, ("since", 0, 0, 1, 10));

    // A file removed from b's folder comes back; a file of b's own stays and is counted.
    // From then on b's folder holds an item it does not bind: b is planned in full.
    std::fs::remove_file(file_of(&b, "p3")).unwrap();
    put(&b, "own.vcf", &card("own", "Own", "own@example.net", ""));
    assert_eq!(settled("b").await, ("full", 1, 0, 0, 10));
    assert_eq!(settled("b").await, ("settled", 0, 0, 0, 11));

    // The hub changed through another link.
    let c = w.vdir_link("c", both(ConflictPolicy::Newest)).await;
    put(&c, "p11.vcf", &card("p11", "p11", "p11@example.org", ""));
    assert_eq!(settled("c").await, ("full", 11, 0, 0, 0));
    assert_eq!(settled("a").await, ("since", 1, 0, 0, 10));
    assert_eq!(settled("b").await, ("full", 1, 0, 0, 11));
    assert_eq!(settled("a").await.0, "settled");

    // A deletion in a's folder; the hub's tombstone reaches c since its mark.
    std::fs::remove_file(a.join("p4.vcf")).unwrap();
    assert_eq!(settled("a").await, ("full", 0, 0, 1, 10));
    assert_eq!(settled("b").await, ("full", 0, 0, 1, 11));
    assert_eq!(settled("c").await, ("since", 0, 0, 1, 10));
    assert!(!w.hub().await.contains_key("p4"));

    // New settings are planned with, in full.
    let mut spec = w.def("b").await.spec;
    spec.drop = vec!["NOTE".into()];
    w.engine.put_link("b", "b", &spec, false).await.unwrap();
    assert_eq!(settled("b").await, ("full", 0, 0, 0, 11));
    assert_eq!(settled("b").await, ("settled", 0, 0, 0, 11));
}

#[tokio::test]
async fn an_item_changed_between_plan_and_write_waits_for_the_next_run() {
    // The run plans with each item's contents, then reads each again as it writes it (a
    // folder of files is read twice rather than held). An item that changed or went in between
    // is not written with contents the folder no longer holds.
    let w = world().await;
    let a = w
        .vdir_link(
            "a",
            LinkSpec {
                direction: Direction::Pull,
                ..LinkSpec::default()
            },
        )
        .await;
    for p in ["p1", "p2", "p3"] {
        put(
            &a,
            &format!("{p}.vcf"),
            &card(p, p, &format!("{p}@example.org"), "first"),
        );
    }
    let planned = || {
        // Called once the plan is made, before any action runs.
        put(&a, "p1.vcf", &card("p1", "p1", "p1@example.org", "second"));
        std::fs::remove_file(a.join("p2.vcf")).unwrap();
    };
    let once = std::sync::Once::new();
    let def = w.def("a").await;
    let r = w
        .engine
        .run(&def, &RunOptions::default(), &|_, _| {
            once.call_once(planned)
        })
        .await
        .unwrap();
    assert_eq!(
        (r.counts.hub_created, r.counts.rejected),
        (1, 2),
        "{:?}",
        r.errors
    );
    let hub = w.hub().await;
    assert_eq!(hub.keys().collect::<Vec<_>>(), ["p3"]);
    // The next run takes the changed item up as it is now.
    let r = w.sync("a").await;
    assert_eq!(r.counts.hub_created, 1);
    assert_eq!(w.hub().await, vdir(&a));
    assert_eq!(w.hub().await["p1"].note, "second");
}
