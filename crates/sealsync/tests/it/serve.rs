//! `sealsync serve` and the identity commands, run as an operator runs them, with a real
//! HTTPS client; and PyJWT verifying an issued token from outside.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{sealsync, stderr, stdout};

struct Server {
    child: Child,
    base: String,
    cert: std::path::PathBuf,
}

impl Server {
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealsync"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--tls-self-signed", "--listen", "127.0.0.1:0"])
            .env_remove("SEALSYNC_DATABASE__URL")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("server prints its address").unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            cert: data_dir.join("tls/self-signed.crt"),
        }
    }

    fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.cert).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap()
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    /// A failed test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An installation with an owner, an OAuth client and an API key: (client_id, secret, key).
fn set_up(dd: &Path) -> (String, String, String) {
    let init = sealsync(dd, &["init"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let add = sealsync(
        dd,
        &["user", "add", "Owner@Example.test", "--role", "owner"],
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let client = sealsync(
        dd,
        &[
            "client",
            "create",
            "--name",
            "etl",
            "--scopes",
            "contacts:read,contacts:write",
            "--json",
        ],
    );
    assert!(client.status.success(), "{}", stderr(&client));
    let c: Value = serde_json::from_str(&stdout(&client)).unwrap();
    let key = sealsync(
        dd,
        &[
            "apikey",
            "create",
            "--user",
            "owner@example.test",
            "--name",
            "ops",
            "--scopes",
            "contacts:read",
            "--json",
        ],
    );
    assert!(key.status.success(), "{}", stderr(&key));
    let k: Value = serde_json::from_str(&stdout(&key)).unwrap();
    (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
        k["key"].as_str().unwrap().to_owned(),
    )
}

async fn token(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> String {
    let resp = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn serve_with_cli_made_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let (id, secret, key) = set_up(&dd);

    // A scope beyond the user's role is refused; listings never show secrets.
    let viewer = sealsync(
        &dd,
        &["user", "add", "viewer@example.test", "--role", "viewer"],
    );
    assert!(viewer.status.success(), "{}", stderr(&viewer));
    let wide = sealsync(
        &dd,
        &[
            "apikey",
            "create",
            "--user",
            "viewer@example.test",
            "--name",
            "x",
            "--scopes",
            "contacts:write",
        ],
    );
    assert!(!wide.status.success());
    assert!(
        stderr(&wide).contains("needs the member role"),
        "{}",
        stderr(&wide)
    );
    let list = sealsync(&dd, &["client", "list"]);
    assert!(stdout(&list).contains(&id) && !stdout(&list).contains(&secret));
    let keys = sealsync(&dd, &["apikey", "list", "--user", "owner@example.test"]);
    assert!(keys.status.success() && !stdout(&keys).contains(&key));

    // Plain HTTP is refused off loopback.
    let plain = sealsync(
        &dd,
        &["serve", "--insecure-http-loopback", "--listen", "0.0.0.0:0"],
    );
    assert!(!plain.status.success());
    assert!(stderr(&plain).contains("loopback"));

    let listed = stdout(&sealsync(&dd, &["workspace", "list"]));
    let ws_id = listed
        .lines()
        .find(|l| l.starts_with("default\t"))
        .and_then(|l| l.split('\t').nth(1))
        .unwrap()
        .to_owned();
    let server = Server::start(&dd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = server.client();
        // The key holds contacts:read only: listing workspaces needs workspaces:read.
        let ws: Value = http
            .get(format!("{}/v1/workspaces", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ws, serde_json::json!([]));
        let ws_id = ws_id.clone();
        let t = token(&http, &server.base, &id, &secret).await;
        for cred in [&t, &key] {
            let resp = http
                .get(format!("{}/v1/workspaces/{ws_id}/contacts", server.base))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    });

    // Rotating the secret from the CLI takes effect on the running server.
    let rotated = sealsync(&dd, &["client", "rotate-secret", &id, "--json"]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let new_secret = serde_json::from_str::<Value>(&stdout(&rotated)).unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    rt.block_on(async {
        let http = server.client();
        let old = http
            .post(format!("{}/oauth/token", server.base))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(old.status(), 401);
        token(&http, &server.base, &id, &new_secret).await;
    });
    let status = server.stop();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");

    // Everything above is in the audit log, and the log verifies.
    let verify = sealsync(&dd, &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    let tail = sealsync(&dd, &["audit", "tail", "-n", "100"]);
    let tail = stdout(&tail);
    for action in [
        "client.created",
        "api_key.created",
        "token.issued",
        "client.secret_rotated",
    ] {
        assert!(tail.contains(action), "{action} missing: {tail}");
    }
    assert!(!tail.contains(&secret) && !tail.contains(&key));
}

/// PyJWT, knowing nothing of sealsync, verifies an issued token with the published JWKS.
#[test]
fn pyjwt_verifies_issued_token() {
    let python = std::env::var("SEALSYNC_TEST_PYTHON")
        .expect("SEALSYNC_TEST_PYTHON names a Python with PyJWT (scripts/test sets it)");
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    let (id, secret, _) = set_up(&dd);
    let server = Server::start(&dd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(async { token(&server.client(), &server.base, &id, &secret).await });
    let issuer = server.base.clone();
    let out = Command::new(python)
        .arg(super::repo().join("scripts/check_jwt.py"))
        .arg(format!("{}/.well-known/jwks.json", server.base))
        .arg(&server.cert)
        .arg(&t)
        .arg(&issuer)
        .output()
        .unwrap();
    server.stop();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified: aud exp iat iss jti scope sub ws")
    );
}

/// schemathesis fuzzes every documented operation from `/openapi.json` with an owner's key:
/// no 5xx, and every answer matches the documented status codes, content types and schemas.
#[test]
fn schemathesis_finds_no_errors() {
    let st = std::env::var("SEALSYNC_TEST_SCHEMATHESIS")
        .expect("SEALSYNC_TEST_SCHEMATHESIS names the st binary (scripts/test sets it)");
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    set_up(&dd);
    let all = "workspaces:read,members:read,members:write,apikeys:write,clients:read,clients:write,contacts:read,contacts:write,endpoints:read,endpoints:write,runs:read,runs:write,keys:read,audit:read";
    let key = sealsync(
        &dd,
        &[
            "apikey",
            "create",
            "--user",
            "owner@example.test",
            "--name",
            "fuzz",
            "--scopes",
            all,
        ],
    );
    assert!(key.status.success(), "{}", stderr(&key));
    let key = stdout(&key).trim().to_owned();
    let listed = stdout(&sealsync(&dd, &["workspace", "list"]));
    let ws = listed
        .lines()
        .find(|l| l.starts_with("default\t"))
        .and_then(|l| l.split('\t').nth(1))
        .unwrap()
        .to_owned();
    let config = tmp.path().join("schemathesis.toml");
    std::fs::write(&config, format!("[parameters]\nws = \"{ws}\"\n")).unwrap();
    let server = Server::start(&dd);
    let out = Command::new(st)
        .current_dir(tmp.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", server.base)])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .arg("--tls-verify")
        .arg(&server.cert)
        .args(["--max-examples", "25", "--generation-database", "none"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        // Revoking keys is covered elsewhere; here it would revoke the fuzzer's own key.
        .args(["--exclude-operation-id", "revoke_api_key"])
        // Runs are covered elsewhere; here a run of a fuzzed endpoint could reach out to a
        // host that is not on loopback.
        .args(["--exclude-operation-id", "start_run"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    server.stop();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only the OAuth endpoints (client authentication, not the key) may be all-401.
    if let Some(section) = report.split("Authentication failed").nth(1) {
        let listed = section.split("\u{1f4a1}").next().unwrap_or_default();
        assert!(
            !listed.contains("/v1/"),
            "the key stopped working: {report}"
        );
    }
}
