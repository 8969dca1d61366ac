//! `sealsync account` and `[[account]]` in apply files: secrets in, never out.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::{sealsync, sealsync_env, stderr, stdout};

fn with_stdin(dd: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealsync"))
        .arg("--data-dir")
        .arg(dd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(bytes_under(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    out
}

#[test]
fn accounts_are_written_once_and_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["init"]).status.success());
    let pw = "first-password-for-dav-1";
    let o = with_stdin(
        &dd,
        &[
            "account",
            "add",
            "dav",
            "--kind",
            "basic",
            "--username",
            "annika",
        ],
        &format!("{pw}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sealsync(&dd, &["account", "list"]);
    assert_eq!(stdout(&o).trim(), "dav\tbasic\tuser a…, password set");
    let o = with_stdin(
        &dd,
        &["account", "rotate", "dav"],
        "second-password-for-dav-2",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sealsync(&dd, &["account", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v[0]["rotated_at"].is_i64(), "{v}");
    // No secret on standard input: refused, nothing stored.
    let o = with_stdin(&dd, &["account", "add", "crm", "--kind", "api-key"], "");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no secret on standard input"),
        "{}",
        stderr(&o)
    );

    // Declared in an apply file, the secret from the environment: idempotent.
    let file = tmp.path().join("sync.toml");
    std::fs::write(
        &file,
        "[[account]]\nname = \"crm\"\nkind = \"api-key\"\nkey_env = \"CRM_KEY\"\n",
    )
    .unwrap();
    let apply =
        |key: &str| sealsync_env(&dd, &["apply", file.to_str().unwrap()], &[("CRM_KEY", key)]);
    let o = apply("crm-key-0123456789-ABCD");
    assert!(
        stdout(&o).contains("+ account crm (create)"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = apply("crm-key-0123456789-ABCD");
    assert!(
        stdout(&o).contains("= account crm (unchanged)"),
        "{}",
        stdout(&o)
    );
    let o = apply("crm-key-0123456789-EFGH");
    assert!(
        stdout(&o).contains("~ account crm (update)"),
        "{}",
        stdout(&o)
    );
    let o = sealsync(&dd, &["account", "list"]);
    assert!(
        stdout(&o).contains("crm\tapi-key\tkey …EFGH"),
        "{}",
        stdout(&o)
    );

    // A secret written inline is refused, and the error does not repeat it.
    std::fs::write(
        &file,
        "[[account]]\nname = \"x\"\nkind = \"basic\"\nusername = \"u\"\npassword = \"inline-secret-value-9\"\n",
    )
    .unwrap();
    let o = sealsync(&dd, &["apply", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sync.toml:5"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("inline-secret-value-9"),
        "{}",
        stderr(&o)
    );

    let bytes = bytes_under(&dd);
    for secret in [
        pw,
        "second-password-for-dav-2",
        "crm-key-0123456789-ABCD",
        "crm-key-0123456789-EFGH",
        "annika",
    ] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the data directory"
        );
    }
    let o = sealsync(&dd, &["audit", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sealsync(&dd, &["account", "remove", "dav"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sealsync(&dd, &["account", "list"]);
    assert_eq!(stdout(&o).trim().lines().count(), 1, "{}", stdout(&o));
}

#[test]
fn webhook_destinations_queue_changes_and_retry_a_receiver_that_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["init"]).status.success());
    let phone = tmp.path().join("phone");
    std::fs::create_dir_all(&phone).unwrap();
    std::fs::write(
        phone.join("a.vcf"),
        "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:a\r\nFN:Ada Lovelace\r\nEND:VCARD\r\n",
    )
    .unwrap();
    // A loopback port nobody listens on: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = tmp.path().join("sync.toml");
    std::fs::write(
        &file,
        format!(
            "[[account]]\nname = \"out\"\nkind = \"api-key\"\nkey_env = \"HOOK_SECRET\"\n\n\
             [[endpoint]]\nname = \"phone\"\nkind = \"vdir\"\npath = \"./phone\"\n\n\
             [[endpoint]]\nname = \"crm\"\nkind = \"webhook-out\"\nurl = \"http://127.0.0.1:{port}/in\"\n\
             account = \"out\"\nallow = [\"127.0.0.1:{port}\"]\n\n\
             [[link]]\nname = \"phone\"\nendpoint = \"phone\"\ndirection = \"pull\"\n\n\
             [[link]]\nname = \"crm\"\nendpoint = \"crm\"\ndirection = \"push\"\n"
        ),
    )
    .unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let o = sealsync_env(
        &dd,
        &["apply", file.to_str().unwrap()],
        &[("HOOK_SECRET", secret)],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // The run succeeds: the change is kept, and its delivery waits for the receiver.
    let o = sealsync(&dd, &["sync"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = sealsync(&dd, &["deliveries", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "pending");
    assert_eq!(listed[0]["attempts"], 1);
    assert_eq!(listed[0]["last_error"], "could not connect");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("Ada") && !text.contains(secret));

    // Not due yet: nothing is sent; a dead delivery's id that is not one is refused.
    let o = sealsync(&dd, &["deliveries", "retry"]);
    assert!(
        stdout(&o).contains("Delivered 0, to retry later 0, dead 0"),
        "{}",
        stdout(&o)
    );
    let o = sealsync(&dd, &["deliveries", "replay", "xyz"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a delivery id"), "{}", stderr(&o));
    let o = sealsync(&dd, &["deliveries", "replay", "--all"]);
    assert!(stdout(&o).contains("0 dead deliveries"), "{}", stdout(&o));
    // The body is sealed in the store: neither the contact nor the secret is readable there.
    let raw = bytes_under(&dd);
    assert!(!raw.windows(12).any(|w| w == b"Ada Lovelace"));
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

#[test]
fn oauth_apps_are_declared_with_their_secret_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["init"]).status.success());
    let file = tmp.path().join("sync.toml");
    let decl = "[[account]]\nname = \"crm-app\"\nkind = \"oauth-app\"\nclient_id = \"crm-client\"\n\
                client_secret_env = \"CRM_CLIENT_SECRET\"\nauthorize_url = \"https://id.example.com/auth\"\n\
                token_url = \"https://id.example.com/token\"\nscopes = [\"contacts\", \"offline_access\"]\n";
    std::fs::write(&file, decl).unwrap();
    let secret = "crm-client-secret-0123456789-XYZ";
    let apply = || {
        sealsync_env(
            &dd,
            &["apply", file.to_str().unwrap()],
            &[("CRM_CLIENT_SECRET", secret)],
        )
    };
    let o = apply();
    assert!(
        stdout(&o).contains("+ account crm-app (create)"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&apply()).contains("= account crm-app (unchanged)"));
    let o = sealsync(&dd, &["account", "list"]);
    assert!(
        stdout(&o).contains("crm-app\toauth-app\tclient crm-…, secret set"),
        "{}",
        stdout(&o)
    );
    assert!(
        !bytes_under(&dd)
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
    );

    // Fields of another kind are refused, naming them; so is an inline secret.
    std::fs::write(&file, format!("{decl}username = \"u\"\n")).unwrap();
    let o = apply();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("oauth-app account takes"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        &file,
        "[[account]]\nname = \"k\"\nkind = \"api-key\"\nkey_env = \"CRM_CLIENT_SECRET\"\ntoken_url = \"https://x/t\"\n",
    )
    .unwrap();
    let o = apply();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("belong to oauth-app accounts"),
        "{}",
        stderr(&o)
    );
}
