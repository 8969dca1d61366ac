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

/// Copies folder `from` to `to` (a backup, or putting one back).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_log_put_back_to_an_older_copy_is_told_by_the_anchors() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let anchors = tmp.path().join("anchors.json");
    assert!(sealsync(&dd, &["init"]).status.success());
    assert!(
        sealsync(&dd, &["workspace", "create", "sales"])
            .status
            .success()
    );
    let anchor = |dd: &Path| {
        sealsync(
            dd,
            &["audit", "verify", "--anchor", anchors.to_str().unwrap()],
        )
    };
    let first = anchor(&dd);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("Anchors of 1 chains kept in"),
        "{}",
        stdout(&first)
    );
    let backup = tmp.path().join("backup");
    copy_dir(&dd, &backup);
    assert!(
        sealsync(&dd, &["keys", "rotate", "--workspace", "sales"])
            .status
            .success()
    );
    let grown = anchor(&dd);
    assert!(grown.status.success(), "{}", stdout(&grown));
    assert!(stdout(&grown).contains("Anchors of 2 chains kept in"));
    let kept = std::fs::read(&anchors).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(v["chains"].as_object().unwrap().len(), 2, "{v}");

    // The older copy is put back: on its own it verifies, the anchors tell.
    std::fs::remove_dir_all(&dd).unwrap();
    copy_dir(&backup, &dd);
    let alone = sealsync(&dd, &["audit", "verify"]);
    assert!(alone.status.success(), "{}", stdout(&alone));
    let told = anchor(&dd);
    assert_eq!(told.status.code(), Some(1), "{}", stderr(&told));
    let out = stdout(&told);
    assert!(
        out.contains("the log was put back to an older state: an earlier verification anchored entry 1, but the head records entry 0"),
        "{out}"
    );
    assert!(
        out.contains("Audit chain installation: 2 entries, intact."),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&anchors).unwrap(),
        kept,
        "the anchors stay as the evidence"
    );
    // Not an anchors file: refused, nothing written over it.
    std::fs::write(&anchors, "{}garbage").unwrap();
    let bad = anchor(&dd);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("is not an anchors file"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(std::fs::read(&anchors).unwrap(), b"{}garbage");
}
