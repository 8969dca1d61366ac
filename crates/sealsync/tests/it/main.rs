//! The `sealsync` binary, run as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

mod accounts;
mod audit;
mod carddav;
mod serve;

use std::path::Path;
use std::process::{Command, Output};

/// Hub contacts after `quickstart`: the 55 samples and the one its sync demo adds.
const AFTER_QUICKSTART: u64 = 56;

fn sealsync(data_dir: &Path, args: &[&str]) -> Output {
    sealsync_env(data_dir, args, &[])
}

fn sealsync_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealsync"));
    cmd.arg("--data-dir").arg(data_dir).args(args);
    // A clean environment: no SEALSYNC_ settings leak in from the caller.
    for (k, _) in std::env::vars() {
        if k.starts_with("SEALSYNC_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_is_idempotent_and_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let first = sealsync(&dd, &["init"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("created master keyfile"));
    assert_eq!(mode(&dd), 0o700);
    assert_eq!(mode(&dd.join("master.key")), 0o600);
    for f in ["sealsync.db", "keystore.db"] {
        assert_eq!(mode(&dd.join(f)), 0o600, "{f}");
    }
    let key_before = std::fs::read(dd.join("master.key")).unwrap();
    let second = sealsync(&dd, &["init"]);
    assert!(second.status.success());
    assert!(
        stdout(&second).contains("nothing changed"),
        "{}",
        stdout(&second)
    );
    assert_eq!(std::fs::read(dd.join("master.key")).unwrap(), key_before);
    let list = sealsync(&dd, &["workspace", "list"]);
    assert_eq!(stdout(&list).lines().count(), 1, "{}", stdout(&list));
}

#[test]
fn refuses_a_keyfile_others_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["init"]).status.success());
    std::fs::set_permissions(
        dd.join("master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    for args in [&["init"][..], &["keys", "status"][..]] {
        let o = sealsync(&dd, args);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.starts_with("error: ") && err.contains("chmod 600"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn quickstart_imports_and_exports_the_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let o = sealsync(&dd, &["quickstart"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let samples = std::fs::read_dir(repo().join("examples/contacts"))
        .unwrap()
        .count();
    assert!(samples >= 50);
    assert!(out.contains(&format!("{samples} new")), "{out}");
    assert!(
        out.contains(&format!("Exported {samples} contacts")),
        "{out}"
    );
    let vcards = std::fs::read_dir(dd.join("out/vcards")).unwrap().count();
    assert_eq!(vcards, samples);
    let csv = std::fs::read_to_string(dd.join("out/contacts.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(reader.records().count(), samples);
    // The sync demo: a contact added to the phone folder reached the hub, the laptop folder and
    // the backup, and no note reached the backup.
    assert!(out.contains("added phone/quickstart-demo.vcf"), "{out}");
    let laptop = std::fs::read_dir(dd.join("demo/laptop"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "vcf")
        })
        .count();
    assert_eq!(laptop as u64, AFTER_QUICKSTART);
    let backup = std::fs::read_to_string(dd.join("demo/backup.csv")).unwrap();
    assert_eq!(backup.lines().count() as u64, AFTER_QUICKSTART + 1);
    assert!(backup.contains("Quinn") && !backup.contains("Added to the phone folder"));
    // Again: nothing new, honestly said.
    let again = sealsync(&dd, &["quickstart"]);
    assert!(
        stdout(&again).contains(&format!("0 new, 0 updated, {samples} unchanged")),
        "{}",
        stdout(&again)
    );
}

#[test]
fn import_reports_rejections_as_json_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["init"]).status.success());
    let broken = repo().join("tests/fixtures/vcard/broken.vcf");
    let google = repo().join("tests/fixtures/csv/google.csv");
    let o = sealsync(
        &dd,
        &[
            "import",
            broken.to_str().unwrap(),
            google.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v["imported"].as_u64().unwrap() >= 3 + 5, "{v}");
    let rejected = v["rejected"].as_array().unwrap();
    assert!(
        rejected
            .iter()
            .any(|r| r["line"] == 8 && r["source"].as_str().unwrap().ends_with("broken.vcf")),
        "{v}"
    );
    for r in rejected {
        let e = r["error"].as_str().unwrap();
        assert!(!e.contains("Alice") && !e.contains("@example"), "{e}");
    }
    let found = sealsync(&dd, &["contacts", "find", "--email", "ALICE@example.com"]);
    assert!(found.status.success(), "{}", stderr(&found));
    assert!(
        stdout(&found).contains("UID:broken-ok-1"),
        "{}",
        stdout(&found)
    );
}

/// A folder of one-card files is imported as one stream of batches: a UID given by two files
/// is one contact (counted once) holding the later file's card, and a bad file is reported
/// while the rest goes in.
#[test]
fn importing_a_folder_shares_batches_across_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["init"]).status.success());
    let folder = tmp.path().join("cards");
    std::fs::create_dir(&folder).unwrap();
    let card = |uid: &str, note: &str| {
        format!(
            "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:{uid}\r\nFN:Person {uid}\r\nNOTE:{note}\r\nEND:VCARD\r\n"
        )
    };
    for n in 0..30 {
        std::fs::write(
            folder.join(format!("c{n:03}.vcf")),
            card(&format!("u{n}"), "first"),
        )
        .unwrap();
    }
    std::fs::write(folder.join("c500.vcf"), card("u7", "second")).unwrap();
    std::fs::write(folder.join("c501.vcf"), "not a vCard at all\n").unwrap();
    let o = sealsync(&dd, &["import", folder.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["imported"].as_u64(), v["updated"].as_u64()),
        (Some(30), Some(0)),
        "{v}"
    );
    assert_eq!(v["rejected"].as_array().unwrap().len(), 1, "{v}");
    let out = tmp.path().join("all.vcf");
    let e = sealsync(
        &dd,
        &[
            "export",
            "--format",
            "vcard4",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(e.status.success(), "{}", stderr(&e));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.matches("BEGIN:VCARD").count(), 30);
    assert_eq!(text.matches("NOTE:second").count(), 1);
    let again = sealsync(&dd, &["import", folder.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&again).trim()).unwrap();
    assert_eq!(
        (v["imported"].as_u64(), v["updated"].as_u64()),
        (Some(0), Some(1)),
        "the earlier file still names u7 first: {v}"
    );
}

#[test]
fn export_formats_round_trip_through_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["quickstart"]).status.success());
    for (format, file) in [
        ("vcard3", "all.vcf"),
        ("jcard", "all.json"),
        ("vcard4", "all4.vcf"),
    ] {
        let path = tmp.path().join(file);
        let o = sealsync(
            &dd,
            &[
                "export",
                "--format",
                format,
                "--out",
                path.to_str().unwrap(),
                "--json",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["exported"], AFTER_QUICKSTART, "{v}");
        let other = tmp.path().join(format!("other-{format}"));
        assert!(sealsync(&other, &["init"]).status.success());
        let o = sealsync(&other, &["import", path.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["imported"], AFTER_QUICKSTART, "{format}: {v}");
        // Re-importing into the source workspace changes nothing: the formats are lossless.
        let o = sealsync(&dd, &["import", path.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["unchanged"], AFTER_QUICKSTART, "{format}: {v}");
    }
}

#[test]
fn config_errors_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let o = sealsync_env(&dd, &["init"], &[("SEALSYNC_DATABSE__URL", "x")]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with("error: invalid configuration") && err.contains("databse"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[keys]\nprovider = \"local\"\nunknown = 1\n").unwrap();
    let o = sealsync(&dd, &["--config", cfg.to_str().unwrap(), "init"]);
    assert!(stderr(&o).contains("unknown"), "{}", stderr(&o));
    let o = sealsync(
        &tmp.path().join("missing"),
        &["export", "--format", "csv", "--out", "x.csv"],
    );
    assert!(stderr(&o).contains("run `sealsync init`"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked") && !stderr(&o).contains("backtrace"));
}

#[test]
fn env_master_key_from_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let keyfile = tmp.path().join("kek.txt");
    std::fs::write(&keyfile, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let env = [
        ("SEALSYNC_KEYS__PROVIDER", "env"),
        ("SEALSYNC_MASTER_KEY_FILE", keyfile.to_str().unwrap()),
    ];
    let o = sealsync_env(&dd, &["quickstart"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dd.join("master.key").exists());
    let status = sealsync_env(&dd, &["keys", "status"], &env);
    assert!(
        stdout(&status).contains("SEALSYNC_MASTER_KEY"),
        "{}",
        stdout(&status)
    );
    // Without the key: a clear error naming the provider.
    let o = sealsync_env(
        &dd,
        &["keys", "status"],
        &[("SEALSYNC_KEYS__PROVIDER", "env")],
    );
    assert!(stderr(&o).contains("SEALSYNC_MASTER_KEY"), "{}", stderr(&o));
    let wrong = tmp.path().join("wrong.txt");
    std::fs::write(&wrong, "HwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let o = sealsync_env(
        &dd,
        &["export", "--format", "csv", "--out", "x.csv"],
        &[
            ("SEALSYNC_KEYS__PROVIDER", "env"),
            ("SEALSYNC_MASTER_KEY_FILE", wrong.to_str().unwrap()),
        ],
    );
    assert!(
        stderr(&o).contains("wrong master key") && stderr(&o).contains("env:1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn pg_quickstart_on_postgres() {
    let Ok(base) = std::env::var("SEALSYNC_TEST_DATABASE_URL") else {
        eprintln!("skipped: SEALSYNC_TEST_DATABASE_URL is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = rt
        .block_on(sealsync_store::testing::postgres_config())
        .unwrap()
        .unwrap();
    let url = secrecy::ExposeSecret::expose_secret(&config.database_url).to_owned();
    assert!(url.starts_with(base.rsplit_once('/').unwrap().0));
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let env = [("SEALSYNC_DATABASE__URL", url.as_str())];
    let o = sealsync_env(&dd, &["quickstart"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("55 new"), "{}", stdout(&o));
    assert!(
        !dd.join("sealsync.db").exists(),
        "PostgreSQL configured: no SQLite file"
    );
    let o = sealsync_env(&dd, &["init"], &env);
    assert!(stdout(&o).contains("nothing changed"), "{}", stdout(&o));
}

#[test]
fn keys_rotate_then_everything_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["quickstart"]).status.success());
    let o = sealsync(&dd, &["keys", "rotate", "--batch", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "{AFTER_QUICKSTART} records re-encrypted to data key v2"
        )),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("retired data keys v1"),
        "{}",
        stdout(&o)
    );
    let o = sealsync(&dd, &["keys", "rotate", "--kek"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The default workspace's data and index keys, and the installation's audit key.
    assert!(
        stdout(&o).contains("Re-wrapped 3 keys (workspace and installation keys) under local:2"),
        "{}",
        stdout(&o)
    );
    let keyfile = std::fs::read_to_string(dd.join("master.key")).unwrap();
    assert!(
        keyfile.contains("v2 ") && !keyfile.contains("v1 "),
        "old master key retired"
    );
    assert_eq!(mode(&dd.join("master.key")), 0o600);
    let status = sealsync(&dd, &["keys", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&status).trim()).unwrap();
    assert_eq!(
        v["workspaces"][0]["data_keys"],
        serde_json::json!([{"version": 2, "wrapped_by": "local:2", "records": AFTER_QUICKSTART}])
    );
    let out = tmp.path().join("after.vcf");
    let o = sealsync(
        &dd,
        &[
            "export",
            "--format",
            "vcard4",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["exported"], AFTER_QUICKSTART, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]));
    // Endpoint and link configurations (sealed too) moved with the contacts: links still run.
    let o = sealsync(&dd, &["sync", "--json"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["links"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["failed"], serde_json::json!([]));
}

#[cfg(feature = "aws-kms")]
#[test]
fn kms_quickstart_with_aws_kms() {
    use sealsync_crypto::kms_testing::Moto;
    let Some(moto) = Moto::start() else {
        eprintln!("skipped: SEALSYNC_TEST_MOTO_SERVER is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key_id = rt.block_on(moto.create_key()).unwrap();
    let endpoint = moto.endpoint.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let env = [
        ("SEALSYNC_KEYS__PROVIDER", "aws-kms"),
        ("SEALSYNC_KEYS__KMS_KEY_ID", key_id.as_str()),
        ("SEALSYNC_KEYS__KMS_REGION", "us-east-1"),
        ("SEALSYNC_KEYS__KMS_ENDPOINT", endpoint.as_str()),
        ("SEALSYNC_KEYS__KMS_ACCESS_KEY_ID", "testing"),
        ("SEALSYNC_KEYS__KMS_SECRET_ACCESS_KEY", "testing"),
    ];
    let o = sealsync_env(&dd, &["quickstart"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dd.join("master.key").exists(), "no local key with KMS");
    let status = sealsync_env(&dd, &["keys", "status"], &env);
    assert!(
        stdout(&status).contains(&format!("AWS KMS key {key_id}")),
        "{}",
        stdout(&status)
    );
    // KMS gone: a clear error, nothing written.
    drop(moto);
    let o = sealsync_env(
        &dd,
        &[
            "export",
            "--format",
            "csv",
            "--out",
            tmp.path().join("x.csv").to_str().unwrap(),
        ],
        &env,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("did not answer"), "{}", stderr(&o));
    assert!(!tmp.path().join("x.csv").exists());
}

// ---- sync ---------------------------------------------------------------------------------

fn card(uid: &str, name: &str, note: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:{uid}\r\nFN:{name}\r\nN:;{name};;;\r\nEMAIL:{uid}@example.org\r\nNOTE:{note}\r\nEND:VCARD\r\n"
    )
}

/// The apply file of the issue, as written.
const APPLY: &str = r#"
[[endpoint]]
name = "phone"
kind = "vdir"
path = "./phone"          # relative to the file

[[endpoint]]
name = "backup"
kind = "csv"
path = "./backup.csv"
preset = "google"

[[link]]
name = "phone"
endpoint = "phone"
direction = "both"
conflict = "newest"

[[link]]
name = "backup"
endpoint = "backup"
direction = "push"
drop = ["NOTE", "PHOTO"]
"#;

fn sync_setup(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["init"]).status.success());
    let phone = tmp.path().join("phone");
    std::fs::create_dir_all(&phone).unwrap();
    for i in 0..n {
        std::fs::write(
            phone.join(format!("c{i}.vcf")),
            card(&format!("c{i}"), &format!("Name{i}"), "a private note"),
        )
        .unwrap();
    }
    std::fs::write(tmp.path().join("sync.toml"), APPLY).unwrap();
    (tmp, dd)
}

#[test]
fn runs_are_listed_with_their_outcome() {
    let (tmp, dd) = sync_setup(3);
    let file = tmp.path().join("sync.toml");
    assert!(
        sealsync(&dd, &["apply", file.to_str().unwrap()])
            .status
            .success()
    );
    let none = sealsync(&dd, &["runs"]);
    assert!(none.status.success(), "{}", stderr(&none));
    assert_eq!(stdout(&none).trim(), "No runs recorded.");
    assert!(sealsync(&dd, &["sync"]).status.success());
    // The phone folder becomes a file: its link's next run fails, the other one runs.
    let phone = tmp.path().join("phone");
    std::fs::remove_dir_all(&phone).unwrap();
    std::fs::write(&phone, "not a folder").unwrap();
    assert!(!sealsync(&dd, &["sync", "phone"]).status.success());
    let o = sealsync(&dd, &["runs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields[1..3], ["phone", "failed"], "{}", lines[0]);
    assert!(lines[0].contains("error endpoint: "), "{}", lines[0]);
    assert!(
        lines[2].ends_with("3 created, 0 updated, 0 deleted, 0 unchanged, 0 conflicts, 0 rejected"),
        "{}",
        lines[2]
    );
    assert!(
        !lines[0].contains(phone.to_str().unwrap()),
        "no paths in the record"
    );
    let json = sealsync(&dd, &["runs", "--link", "phone", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let runs = v.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[1]["status"], "ok");
    assert_eq!(runs[1]["counts"]["hub_created"], 3);
    assert!(runs.iter().all(|r| r["ended_at"].is_i64()));
    let one = sealsync(&dd, &["runs", "-n", "1", "--link", "backup"]);
    assert_eq!(stdout(&one).lines().count(), 1);
    assert!(stdout(&one).contains("backup"), "{}", stdout(&one));
    let unknown = sealsync(&dd, &["runs", "--link", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no link named"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn apply_is_idempotent_and_sync_runs_every_link() {
    let (tmp, dd) = sync_setup(5);
    let file = tmp.path().join("sync.toml");
    let file = file.to_str().unwrap();
    let dry = sealsync(&dd, &["apply", file, "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("4 change(s) would be made"),
        "{}",
        stdout(&dry)
    );
    let o = sealsync(&dd, &["apply", file]);
    assert!(
        stdout(&o).contains("+ endpoint phone (create)"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("4 change(s) made"), "{}", stdout(&o));
    let again = sealsync(&dd, &["apply", file]);
    assert!(
        stdout(&again).contains("0 change(s) made"),
        "{}",
        stdout(&again)
    );

    let o = sealsync(&dd, &["sync", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let links = v["links"].as_array().unwrap();
    assert_eq!(links[0]["link"], "phone", "pulling links run first");
    assert_eq!(links[0]["counts"]["hub_created"], 5);
    assert_eq!(links[1]["link"], "backup");
    assert_eq!(links[1]["counts"]["created"], 5);
    let csv = std::fs::read_to_string(tmp.path().join("backup.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6);
    assert!(
        !csv.contains("private note"),
        "NOTE is dropped on the way to the backup"
    );

    // A dry run after an edit shows the plan and changes nothing.
    std::fs::write(
        tmp.path().join("phone/c1.vcf"),
        card("c1", "Renamed", "a private note"),
    )
    .unwrap();
    let o = sealsync(&dd, &["sync", "phone", "--dry-run"]);
    let out = stdout(&o);
    assert!(
        out.contains("~ hub") && out.contains("c1.vcf") && out.contains("1 hub updated"),
        "{out}"
    );
    assert!(
        !out.contains("Renamed"),
        "no contact data in the plan: {out}"
    );
    let o = sealsync(&dd, &["sync", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["links"][0]["counts"]["hub_updated"], 1);
    assert_eq!(v["links"][1]["counts"]["remote_updated"], 1);
    let o = sealsync(&dd, &["sync", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["links"][0]["counts"]["unchanged"], 5, "{v}");
    assert_eq!(v["links"][0]["counts"]["updated"], 0, "{v}");
}

#[test]
fn sync_refuses_mass_deletion_unless_told() {
    let (tmp, dd) = sync_setup(5);
    assert!(
        sealsync(
            &dd,
            &["apply", tmp.path().join("sync.toml").to_str().unwrap()]
        )
        .status
        .success()
    );
    assert!(sealsync(&dd, &["sync"]).status.success());
    for i in 0..3 {
        std::fs::remove_file(tmp.path().join(format!("phone/c{i}.vcf"))).unwrap();
    }
    let o = sealsync(&dd, &["sync", "phone"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--allow-mass-delete"), "{}", stderr(&o));
    let o = sealsync(&dd, &["sync", "--allow-mass-delete", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["links"][0]["counts"]["hub_deleted"], 3);
    assert_eq!(v["links"][1]["counts"]["remote_deleted"], 3);
}

#[test]
fn conflicts_wait_in_the_queue_until_resolved() {
    let (tmp, dd) = sync_setup(2);
    let manual = APPLY.replace("conflict = \"newest\"", "conflict = \"manual\"");
    std::fs::write(tmp.path().join("sync.toml"), manual).unwrap();
    assert!(
        sealsync(
            &dd,
            &["apply", tmp.path().join("sync.toml").to_str().unwrap()]
        )
        .status
        .success()
    );
    assert!(sealsync(&dd, &["sync"]).status.success());
    // The hub side changes through an import, the phone side in its file.
    let edited = tmp.path().join("edited.vcf");
    std::fs::write(&edited, card("c0", "Hub Edit", "a private note")).unwrap();
    assert!(
        sealsync(&dd, &["import", edited.to_str().unwrap()])
            .status
            .success()
    );
    std::fs::write(
        tmp.path().join("phone/c0.vcf"),
        card("c0", "Phone Edit", "a private note"),
    )
    .unwrap();
    let o = sealsync(&dd, &["sync", "phone", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["links"][0]["counts"]["conflicts"], 1, "{v}");
    let o = sealsync(&dd, &["conflicts", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(
        !stdout(&o).contains("Edit"),
        "no contact data in the queue listing"
    );
    let id = list[0]["id"].as_str().unwrap();
    let o = sealsync(&dd, &["conflicts", "resolve", id, "--take", "remote"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(sealsync(&dd, &["sync"]).status.success());
    let o = sealsync(&dd, &["contacts", "find", "--email", "c0@example.org"]);
    assert!(stdout(&o).contains("Phone Edit"), "{}", stdout(&o));
    let o = sealsync(&dd, &["conflicts", "list"]);
    assert!(
        stdout(&o).contains("No conflicts waiting"),
        "{}",
        stdout(&o)
    );
}

/// Everything a user would see after a sync: the phone folder, the backup file, the hub.
fn observed(tmp: &Path, dd: &Path) -> (Vec<(String, String)>, String, String) {
    let mut files: Vec<(String, String)> = std::fs::read_dir(tmp.join("phone"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".vcf"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    let mut csv: Vec<String> = std::fs::read_to_string(tmp.join("backup.csv"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    csv.sort();
    let export = tmp.join("hub.vcf");
    let _ = std::fs::remove_file(&export);
    assert!(
        sealsync(
            dd,
            &[
                "export",
                "--format",
                "vcard4",
                "--out",
                export.to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    let mut cards: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .split("END:VCARD")
        .map(|c| {
            let mut lines: Vec<&str> = c
                .lines()
                .filter(|l| !l.starts_with("REV") && !l.starts_with("PRODID"))
                .collect();
            lines.sort();
            lines.join("\n")
        })
        .collect();
    cards.sort();
    (files, csv.join("\n"), cards.join("\n---\n"))
}

#[test]
fn killed_at_any_step_the_same_command_again_converges() {
    let prepare = || {
        let (tmp, dd) = sync_setup(6);
        assert!(
            sealsync(
                &dd,
                &["apply", tmp.path().join("sync.toml").to_str().unwrap()]
            )
            .status
            .success()
        );
        assert!(sealsync(&dd, &["sync"]).status.success());
        // Changes on the phone side: an edit, a new card, a deletion.
        std::fs::write(tmp.path().join("phone/c1.vcf"), card("c1", "Edited", "x")).unwrap();
        std::fs::write(tmp.path().join("phone/new.vcf"), card("n1", "New", "y")).unwrap();
        std::fs::remove_file(tmp.path().join("phone/c2.vcf")).unwrap();
        (tmp, dd)
    };
    let (ref_tmp, ref_dd) = prepare();
    assert!(
        sealsync(&ref_dd, &["sync", "--batch", "2"])
            .status
            .success()
    );
    let reference = observed(ref_tmp.path(), &ref_dd);
    let mut kills = 0;
    for step in 1..60 {
        let (tmp, dd) = prepare();
        let step_s = step.to_string();
        let o = sealsync_env(
            &dd,
            &["sync", "--batch", "2"],
            &[("SEALSYNC_TEST_INTERRUPT_AT", &step_s)],
        );
        if o.status.success() {
            break;
        }
        kills += 1;
        let again = sealsync(&dd, &["sync", "--batch", "2"]);
        assert!(again.status.success(), "{}", stderr(&again));
        assert_eq!(
            observed(tmp.path(), &dd),
            reference,
            "killed at step {step}"
        );
    }
    assert!(kills >= 5, "only {kills} kill points");
}
