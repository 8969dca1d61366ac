//! The `sealsync` binary, run as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::Path;
use std::process::{Command, Output};

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
        assert_eq!(v["exported"], 55, "{v}");
        let other = tmp.path().join(format!("other-{format}"));
        assert!(sealsync(&other, &["init"]).status.success());
        let o = sealsync(&other, &["import", path.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["imported"], 55, "{format}: {v}");
        // Re-importing into the source workspace changes nothing: the formats are lossless.
        let o = sealsync(&dd, &["import", path.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["unchanged"], 55, "{format}: {v}");
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
        stdout(&o).contains("55 records re-encrypted to data key v2"),
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
    assert!(
        stdout(&o).contains("Re-wrapped 2 workspace keys under local:2"),
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
        serde_json::json!([{"version": 2, "wrapped_by": "local:2", "records": 55}])
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
    assert_eq!(v["exported"], 55, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]));
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
