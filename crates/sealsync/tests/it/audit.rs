//! `sealsync audit`: commands leave entries, verification passes on an untouched log and names
//! the entry when a row of the database file is edited behind sealsync's back.

use std::path::Path;

use sealsync_store::Store;
use sealsync_store::testing::sqlite_config;
use sealsync_types::WorkspaceId;

use super::{sealsync, stderr, stdout};

/// Runs `sql` on the data directory's database, as someone with file access could.
fn tamper(data_dir: &Path, sql: &'static str) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(&sqlite_config(data_dir)).await.unwrap();
        let done = sqlx::query(sql)
            .bind(WorkspaceId::NIL.as_bytes().to_vec())
            .execute(store.data_pool())
            .await
            .unwrap()
            .rows_affected();
        store.close().await;
        done
    })
}

#[test]
fn commands_are_audited_and_tampering_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let init = sealsync(&dd, &["init"]);
    assert!(init.status.success(), "{}", stderr(&init));
    assert!(stdout(&init).contains("audit log key"), "{}", stdout(&init));
    let create = sealsync(&dd, &["workspace", "create", "sales"]);
    assert!(create.status.success(), "{}", stderr(&create));
    let rotate = sealsync(&dd, &["keys", "rotate", "--workspace", "sales"]);
    assert!(rotate.status.success(), "{}", stderr(&rotate));

    let ok = sealsync(&dd, &["audit", "verify"]);
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    let out = stdout(&ok);
    assert!(
        out.contains("Audit chain installation: 2 entries, intact."),
        "{out}"
    );
    assert!(
        out.contains("Audit chain sales: 1 entries, intact."),
        "{out}"
    );

    let tail = sealsync(&dd, &["audit", "tail", "--installation"]);
    assert!(tail.status.success(), "{}", stderr(&tail));
    let lines: Vec<String> = stdout(&tail).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(
        fields[0].ends_with('Z') && fields[0].contains('T'),
        "{}",
        lines[1]
    );
    assert_eq!(
        fields[1..],
        [
            "2",
            "system:cli",
            "workspace.created",
            fields[4],
            "success",
            "-"
        ]
    );
    assert!(fields[4].starts_with("workspace:"), "{}", lines[1]);
    let json = sealsync(&dd, &["audit", "tail", "--workspace", "sales", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(v["entries"][0]["action"], "keys.rotated");
    assert_eq!(v["entries"][0]["resource"]["id"], "data.v2");

    let edited = tamper(
        &dd,
        "UPDATE audit_log SET entry = REPLACE(entry, 'workspace.created', 'workspace.deleted') \
         WHERE workspace_id = $1 AND seq = 2",
    );
    assert_eq!(edited, 1);
    let bad = sealsync(&dd, &["audit", "verify"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    let out = stdout(&bad);
    assert!(
        out.contains("installation: entry 2 was changed after it was written"),
        "{out}"
    );
    assert!(
        out.contains("Audit chain sales: 1 entries, intact."),
        "{out}"
    );
    let json = sealsync(
        &dd,
        &["audit", "verify", "--workspace", "default", "--json"],
    );
    assert!(json.status.success(), "the default chain has no entries");
    let all = sealsync(&dd, &["audit", "verify", "--all", "--json"]);
    assert_eq!(all.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&all)).unwrap();
    assert_eq!(v["ok"], false);
    let problems = v["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chain"] == "installation")
        .unwrap()["problems"]
        .clone();
    assert_eq!(problems[0]["problem"], "edited");
    assert_eq!(problems[0]["seq"], 2);

    // Workspace deletion is recorded too, and the chain of the deleted workspace stays.
    let tmp2 = tempfile::tempdir().unwrap();
    let dd2 = tmp2.path().join("data");
    assert!(sealsync(&dd2, &["init"]).status.success());
    assert!(
        sealsync(&dd2, &["workspace", "create", "gone"])
            .status
            .success()
    );
    assert!(
        sealsync(&dd2, &["keys", "rotate", "--workspace", "gone"])
            .status
            .success()
    );
    let del = sealsync(&dd2, &["workspace", "delete", "gone", "--yes"]);
    assert!(del.status.success(), "{}", stderr(&del));
    let tail = sealsync(&dd2, &["audit", "tail", "--installation", "-n", "1"]);
    assert!(
        stdout(&tail).contains("workspace.deleted"),
        "{}",
        stdout(&tail)
    );
    let ok = sealsync(&dd2, &["audit", "verify"]);
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert!(
        stdout(&ok).contains("(deleted workspace): 1 entries, intact."),
        "{}",
        stdout(&ok)
    );
}
