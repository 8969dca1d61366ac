//! Test bodies shared by the SQLite and PostgreSQL variants. Tampering goes through the raw
//! pool, as someone with database access but without the master key would do it.

use std::path::Path;
use std::sync::Arc;

use sealsync_audit::{
    Action, Actor, ActorKind, AuditError, AuditEvent, AuditKeys, AuditLog, Outcome, Problem,
    ReasonCode, Resource, ResourceKind,
};
use sealsync_store::{Hub, KeyPurpose, Store, StoreConfig};
use sealsync_types::WorkspaceId;
use sqlx::{AnyPool, Row as _};

use crate::hub_on;

async fn keys(hub: &Hub) -> AuditKeys {
    hub.ensure_installation_key(KeyPurpose::Audit)
        .await
        .unwrap();
    let keys = hub.installation_keys(KeyPurpose::Audit).await.unwrap();
    AuditKeys::new(keys.into_iter().map(|(v, k, _)| (v, k))).unwrap()
}

async fn log_on(config: &StoreConfig, dir: &Path) -> (Hub, AuditLog) {
    let hub = hub_on(config, dir).await;
    let log = AuditLog::new(hub.store().clone(), keys(&hub).await);
    (hub, log)
}

fn event(chain: Option<WorkspaceId>, i: usize) -> AuditEvent {
    AuditEvent::new(
        chain,
        Actor::new(ActorKind::User, &format!("user-{i}")).unwrap(),
        Action::ContactRead,
    )
    .with_resource(Resource::new(ResourceKind::Contact, &WorkspaceId::new().to_string()).unwrap())
    .with_source(format!("192.0.2.{}", i % 250).parse().unwrap())
}

/// A workspace chain with `n` entries.
async fn chain_of(log: &AuditLog, n: usize) -> WorkspaceId {
    let ws = WorkspaceId::new();
    for i in 0..n {
        let e = log.append(event(Some(ws), i)).await.unwrap();
        assert_eq!(e.seq, i as u64 + 1);
    }
    assert!(log.verify(ws).await.unwrap().is_ok());
    ws
}

fn pool(log_store: &Store) -> &AnyPool {
    log_store.data_pool()
}

async fn problems(log: &AuditLog, ws: WorkspaceId) -> Vec<Problem> {
    let report = log.verify(ws).await.unwrap();
    report.problems
}

async fn exec(pool: &AnyPool, sql: &'static str, ws: WorkspaceId, seq: i64) {
    sqlx::query(sql)
        .bind(ws.as_bytes().to_vec())
        .bind(seq)
        .execute(pool)
        .await
        .unwrap();
}

struct Raw {
    at_ms: i64,
    entry: String,
    prev_mac: Vec<u8>,
    mac: Vec<u8>,
}

async fn raw(pool: &AnyPool, ws: WorkspaceId, seq: i64) -> Raw {
    let r = sqlx::query(
        "SELECT at_ms, entry, prev_mac, mac FROM audit_log WHERE workspace_id = $1 AND seq = $2",
    )
    .bind(ws.as_bytes().to_vec())
    .bind(seq)
    .fetch_one(pool)
    .await
    .unwrap();
    Raw {
        at_ms: r.get("at_ms"),
        entry: r.get("entry"),
        prev_mac: r.get("prev_mac"),
        mac: r.get("mac"),
    }
}

async fn write_raw(pool: &AnyPool, ws: WorkspaceId, seq: i64, r: &Raw) {
    sqlx::query(
        "UPDATE audit_log SET entry = $1, prev_mac = $2, mac = $3 WHERE workspace_id = $4 AND seq = $5",
    )
    .bind(r.entry.clone())
    .bind(r.prev_mac.clone())
    .bind(r.mac.clone())
    .bind(ws.as_bytes().to_vec())
    .bind(seq)
    .execute(pool)
    .await
    .unwrap();
}

pub async fn appended_entries_verify_and_read_back(config: StoreConfig, dir: &Path) {
    let (_hub, log) = log_on(&config, dir).await;
    let ws = WorkspaceId::new();
    let failed = AuditEvent::new(None, Actor::anonymous(), Action::LoginFailed)
        .with_source("2001:db8::1".parse().unwrap())
        .with_outcome(
            Outcome::Denied,
            Some(ReasonCode::parse("bad_password").unwrap()),
        );
    let first = log.append(failed.clone()).await.unwrap();
    assert_eq!((first.chain, first.seq), (WorkspaceId::NIL, 1));
    for i in 0..7 {
        log.append(event(Some(ws), i)).await.unwrap();
    }
    // Installation events have a chain of their own, numbered on their own.
    assert_eq!(log.append(failed.clone()).await.unwrap().seq, 2);

    let mut expected = vec![WorkspaceId::NIL, ws];
    expected.sort();
    assert_eq!(log.chains().await.unwrap(), expected);
    for chain in [WorkspaceId::NIL, ws] {
        let report = log.verify(chain).await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }
    assert_eq!(log.verify(ws).await.unwrap().entries_checked, 7);

    let installation = log.page(WorkspaceId::NIL, None, 10).await.unwrap();
    assert_eq!(installation.len(), 2);
    assert_eq!(installation[0].event, failed);
    assert_eq!(installation[0].event.workspace, None);
    let page = log.page(ws, Some(2), 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(
        page[0].event,
        event(Some(ws), 2).with_resource(page[0].event.resource.clone().unwrap())
    );
    let tail = log.tail(ws, 3).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert!(tail.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // An empty chain is clean and has nothing to show.
    let empty = log.verify(WorkspaceId::new()).await.unwrap();
    assert!(empty.is_ok() && empty.entries_checked == 0);
}

pub async fn edited_entry_is_named(config: StoreConfig, dir: &Path) {
    let (hub, log) = log_on(&config, dir).await;
    let ws = chain_of(&log, 5).await;
    let mut r = raw(pool(hub.store()), ws, 3).await;
    r.entry = r.entry.replace("contact.read", "contact.created");
    write_raw(pool(hub.store()), ws, 3, &r).await;
    let found = problems(&log, ws).await;
    assert_eq!(found, vec![Problem::Edited { seq: 3 }]);
    assert_eq!(
        found[0].to_string(),
        "entry 3 was changed after it was written"
    );
}

pub async fn removed_entry_is_named(config: StoreConfig, dir: &Path) {
    let (hub, log) = log_on(&config, dir).await;
    let ws = chain_of(&log, 6).await;
    for seq in [3, 4] {
        exec(
            pool(hub.store()),
            "DELETE FROM audit_log WHERE workspace_id = $1 AND seq = $2",
            ws,
            seq,
        )
        .await;
    }
    let found = problems(&log, ws).await;
    assert_eq!(
        found,
        vec![Problem::Removed {
            from_seq: 3,
            to_seq: 4
        }]
    );
    assert_eq!(found[0].to_string(), "entries 3 to 4 were removed");
    // The first entry too: a chain must start at 1.
    exec(
        pool(hub.store()),
        "DELETE FROM audit_log WHERE workspace_id = $1 AND seq = $2",
        ws,
        1,
    )
    .await;
    assert_eq!(
        problems(&log, ws).await,
        vec![
            Problem::Removed {
                from_seq: 1,
                to_seq: 1
            },
            Problem::Removed {
                from_seq: 3,
                to_seq: 4
            }
        ]
    );
}

pub async fn swapped_entries_are_reordered(config: StoreConfig, dir: &Path) {
    let (hub, log) = log_on(&config, dir).await;
    let ws = chain_of(&log, 6).await;
    let p = pool(hub.store());
    let (two, five) = (raw(p, ws, 2).await, raw(p, ws, 5).await);
    write_raw(p, ws, 2, &five).await;
    write_raw(p, ws, 5, &two).await;
    let found = problems(&log, ws).await;
    assert_eq!(
        found,
        vec![
            Problem::Reordered {
                seq: 2,
                written_as: 5
            },
            Problem::Reordered {
                seq: 5,
                written_as: 2
            }
        ]
    );
    assert_eq!(
        found[0].to_string(),
        "entry 2 was moved there: it was written as entry 5"
    );

    // Whole rows moved, times included, between neighbours.
    let ws = chain_of(&log, 4).await;
    let (three, four) = (raw(p, ws, 3).await, raw(p, ws, 4).await);
    for (seq, r) in [(3, &four), (4, &three)] {
        sqlx::query(
            "UPDATE audit_log SET at_ms = $1, entry = $2, prev_mac = $3, mac = $4 \
             WHERE workspace_id = $5 AND seq = $6",
        )
        .bind(r.at_ms)
        .bind(r.entry.clone())
        .bind(r.prev_mac.clone())
        .bind(r.mac.clone())
        .bind(ws.as_bytes().to_vec())
        .bind(seq)
        .execute(p)
        .await
        .unwrap();
    }
    let found = problems(&log, ws).await;
    assert!(
        found.contains(&Problem::Reordered {
            seq: 3,
            written_as: 4
        }) && found.contains(&Problem::Reordered {
            seq: 4,
            written_as: 3
        }),
        "{found:?}"
    );
}

pub async fn removed_newest_entry_is_noticed_through_the_head(config: StoreConfig, dir: &Path) {
    let (hub, log) = log_on(&config, dir).await;
    let ws = chain_of(&log, 5).await;
    exec(
        pool(hub.store()),
        "DELETE FROM audit_log WHERE workspace_id = $1 AND seq = $2",
        ws,
        5,
    )
    .await;
    let found = problems(&log, ws).await;
    assert_eq!(
        found,
        vec![Problem::TailRemoved {
            head_seq: 5,
            last_seq: 4
        }]
    );
    assert!(found[0].to_string().contains("newest entries were removed"));
    // Every entry removed: the head alone still lists the chain and tells.
    exec(
        pool(hub.store()),
        "DELETE FROM audit_log WHERE workspace_id = $1 AND seq <= $2",
        ws,
        4,
    )
    .await;
    assert!(log.chains().await.unwrap().contains(&ws));
    assert_eq!(
        problems(&log, ws).await,
        vec![Problem::TailRemoved {
            head_seq: 5,
            last_seq: 0
        }]
    );
}

pub async fn forged_head_is_noticed(config: StoreConfig, dir: &Path) {
    let (hub, log) = log_on(&config, dir).await;
    let ws = chain_of(&log, 5).await;
    let p = pool(hub.store());
    exec(
        p,
        "DELETE FROM audit_log WHERE workspace_id = $1 AND seq = $2",
        ws,
        5,
    )
    .await;
    // The head moved back to entry 4, its MAC copied from the real head: plausible, but only
    // the key could make a matching head_mac.
    let four = raw(p, ws, 4).await;
    sqlx::query("UPDATE audit_head SET seq = $1, mac = $2 WHERE workspace_id = $3")
        .bind(4i64)
        .bind(four.mac.clone())
        .bind(ws.as_bytes().to_vec())
        .execute(p)
        .await
        .unwrap();
    assert_eq!(problems(&log, ws).await, vec![Problem::HeadForged]);
    // Appending to it would bury the removal under fresh, valid entries: refused.
    let err = log.append(event(Some(ws), 9)).await.unwrap_err();
    assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
    assert_eq!(log.tail(ws, 10).await.unwrap().len(), 4);
}

pub async fn missing_head_is_noticed_and_stops_appends(config: StoreConfig, dir: &Path) {
    let (hub, log) = log_on(&config, dir).await;
    let ws = chain_of(&log, 3).await;
    exec(
        pool(hub.store()),
        "DELETE FROM audit_head WHERE workspace_id = $1 AND seq = $2",
        ws,
        3,
    )
    .await;
    assert_eq!(problems(&log, ws).await, vec![Problem::HeadMissing]);
    let err = log.append(event(Some(ws), 9)).await.unwrap_err();
    assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
}

pub async fn concurrent_appends_from_two_processes_form_one_chain(config: StoreConfig, dir: &Path) {
    let hub = hub_on(&config, dir).await;
    // Two stores with pools of their own, as two processes would have.
    let logs = [
        Arc::new(AuditLog::new(hub.store().clone(), keys(&hub).await)),
        Arc::new(AuditLog::new(
            Store::open(&config).await.unwrap(),
            keys(&hub).await,
        )),
    ];
    let ws = WorkspaceId::new();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let log = Arc::clone(&logs[t % 2]);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                log.append(event(Some(ws), t * 100 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = logs[0].verify(ws).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 200);
    let mut seqs = Vec::new();
    let mut after = None;
    loop {
        let page = logs[1].page(ws, after, 64).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        seqs.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
}

/// Verifying while entries are being appended reports nothing: an entry that lands between
/// reading the entries and reading the head is read too.
pub async fn verifying_during_appends_finds_nothing(config: StoreConfig, dir: &Path) {
    let (_hub, log) = log_on(&config, dir).await;
    let log = Arc::new(log);
    let ws = chain_of(&log, 3).await;
    let writer = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            for i in 0..150 {
                log.append(event(Some(ws), 10 + i)).await.unwrap();
            }
        })
    };
    let mut rounds = 0;
    while !writer.is_finished() {
        let report = log.verify(ws).await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        rounds += 1;
    }
    writer.await.unwrap();
    assert!(rounds > 0);
    assert!(log.verify(ws).await.unwrap().is_ok());
}

pub async fn entries_under_rotated_keys_verify(config: StoreConfig, dir: &Path) {
    let (hub, v1) = log_on(&config, dir).await;
    let ws = WorkspaceId::new();
    for i in 0..3 {
        log_append(&v1, ws, i).await;
    }
    let (version, _) = hub.add_installation_key(KeyPurpose::Audit).await.unwrap();
    assert_eq!(version, 2);
    let both = AuditLog::new(hub.store().clone(), keys(&hub).await);
    assert_eq!(both.keys().current_version(), 2);
    for i in 3..6 {
        log_append(&both, ws, i).await;
    }
    let versions: Vec<u32> = both
        .page(ws, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.key_version)
        .collect();
    assert_eq!(versions, vec![1, 1, 1, 2, 2, 2]);
    assert!(both.verify(ws).await.unwrap().is_ok());
    // Without the old version its entries cannot be checked, and the report says so.
    let newest = hub
        .installation_keys(KeyPurpose::Audit)
        .await
        .unwrap()
        .into_iter()
        .filter(|(v, _, _)| *v == 2)
        .map(|(v, k, _)| (v, k));
    let v2_only = AuditLog::new(hub.store().clone(), AuditKeys::new(newest).unwrap());
    assert_eq!(
        problems(&v2_only, ws).await,
        (1..=3)
            .map(|seq| Problem::UnknownKeyVersion { seq, version: 1 })
            .collect::<Vec<_>>()
    );
}

async fn log_append(log: &AuditLog, ws: WorkspaceId, i: usize) {
    log.append(event(Some(ws), i)).await.unwrap();
}

pub async fn stored_entries_hold_no_email(config: StoreConfig, dir: &Path) {
    let (hub, log) = log_on(&config, dir).await;
    assert!(Actor::new(ActorKind::User, "a@b.c").is_err());
    assert!(Resource::new(ResourceKind::User, "ann@example.com").is_err());
    let ws = chain_of(&log, 3).await;
    log.append(AuditEvent::new(
        None,
        Actor::anonymous(),
        Action::LoginFailed,
    ))
    .await
    .unwrap();
    let rows = sqlx::query("SELECT entry FROM audit_log")
        .fetch_all(pool(hub.store()))
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        let entry: String = r.get("entry");
        assert!(!entry.contains('@'), "{entry}");
    }
    // An email written into a stored entry by hand does not come back out as an event.
    let p = pool(hub.store());
    let mut one = raw(p, ws, 1).await;
    one.entry = one.entry.replace("user-0", "ann@example.com");
    write_raw(p, ws, 1, &one).await;
    let err = log.page(ws, None, 10).await.unwrap_err();
    assert!(!err.to_string().contains("example.com"), "{err}");
}

/// A log put back to an older copy verifies on its own; an anchor taken earlier tells.
pub async fn a_rolled_back_log_is_told_by_an_earlier_anchor(config: StoreConfig, dir: &Path) {
    let (hub, log) = log_on(&config, dir).await;
    let ws = chain_of(&log, 3).await;
    let p = pool(hub.store());
    let head_row = |ws: WorkspaceId| {
        sqlx::query(
            "SELECT seq, key_version, mac, head_mac FROM audit_head WHERE workspace_id = $1",
        )
        .bind(ws.as_bytes().to_vec())
        .fetch_one(p)
    };
    let old_head = head_row(ws).await.unwrap();
    let at_three = log.anchor(ws).await.unwrap().unwrap();
    assert_eq!(at_three.seq, 3);
    assert_eq!(log.anchor(WorkspaceId::new()).await.unwrap(), None);
    for i in 3..5 {
        log.append(event(Some(ws), i)).await.unwrap();
    }
    let at_five = log.anchor(ws).await.unwrap().unwrap();
    // Grown since: both anchors hold.
    assert_eq!(log.check_anchor(ws, &at_three).await.unwrap(), None);
    assert_eq!(log.check_anchor(ws, &at_five).await.unwrap(), None);
    // Put back to the state at entry 3 (its genuine head, as a restored backup holds it).
    exec(
        p,
        "DELETE FROM audit_log WHERE workspace_id = $1 AND seq > $2",
        ws,
        3,
    )
    .await;
    sqlx::query(
        "UPDATE audit_head SET seq = $1, key_version = $2, mac = $3, head_mac = $4 WHERE workspace_id = $5",
    )
    .bind(old_head.get::<i64, _>("seq"))
    .bind(old_head.get::<i64, _>("key_version"))
    .bind(old_head.get::<Vec<u8>, _>("mac"))
    .bind(old_head.get::<Vec<u8>, _>("head_mac"))
    .bind(ws.as_bytes().to_vec())
    .execute(p)
    .await
    .unwrap();
    assert_eq!(
        problems(&log, ws).await,
        vec![],
        "the chain alone cannot tell"
    );
    let rolled = log.check_anchor(ws, &at_five).await.unwrap().unwrap();
    assert_eq!(
        rolled,
        Problem::RolledBack {
            anchored_seq: 5,
            head_seq: 3
        }
    );
    assert!(rolled.to_string().contains("put back to an older state"));
    assert_eq!(log.check_anchor(ws, &at_three).await.unwrap(), None);
    // New entries written over the gap: as long again, but not the entries anchored.
    for i in 10..12 {
        log.append(event(Some(ws), i)).await.unwrap();
    }
    assert_eq!(problems(&log, ws).await, vec![]);
    assert_eq!(
        log.check_anchor(ws, &at_five).await.unwrap(),
        Some(Problem::Diverged { seq: 5 })
    );
}
