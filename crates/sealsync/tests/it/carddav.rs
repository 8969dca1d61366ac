//! Two-way sync with a real Radicale on loopback: the account from the environment, edits on
//! each side, a conflict decided by hand, a delete; the password nowhere in the data.

use sealsync_connector::{Destination, Source};
use sealsync_connectors::carddav::CardDav;
use sealsync_connectors::testing::{PASSWORD, USER, ann, loopback, radicale};
use sealsync_contact::vcard::read_all;

use crate::{card, sealsync, sealsync_env, stderr, stdout};

fn sync_json(dd: &std::path::Path) -> serde_json::Value {
    let o = sealsync_env(dd, &["sync", "--json"], &[("DAV_PASSWORD", PASSWORD)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn contact(text: &str) -> sealsync_contact::Contact {
    read_all(text.as_bytes()).0.remove(0).contact
}

#[test]
fn dav_two_way_sync_with_radicale() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = radicale();
    let url = format!("http://127.0.0.1:{}/{USER}/book/", server.port);
    let dav = CardDav::open(&url, Some(&ann()), loopback(server.port), None).unwrap();
    rt.block_on(dav.create_address_book()).unwrap();
    for uid in ["d0", "d1"] {
        rt.block_on(dav.create(&contact(&card(
            uid,
            &format!("Dav {uid}"),
            "from the server",
        ))))
        .unwrap();
    }

    let tmp = tempfile::tempdir().unwrap();
    let dd = tmp.path().join("data");
    assert!(sealsync(&dd, &["init"]).status.success());
    let apply = format!(
        r#"
[[account]]
name = "radicale"
kind = "basic"
username = "{USER}"
password_env = "DAV_PASSWORD"

[[endpoint]]
name = "book"
kind = "carddav"
url = "{url}"
account = "radicale"
allow = ["127.0.0.1:{port}"]

[[link]]
name = "book"
endpoint = "book"
direction = "both"
conflict = "manual"
max_delete_share = 0.5
"#,
        port = server.port
    );
    let file = tmp.path().join("sync.toml");
    std::fs::write(&file, apply).unwrap();
    let o = sealsync_env(
        &dd,
        &["apply", file.to_str().unwrap()],
        &[("DAV_PASSWORD", PASSWORD)],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // Pull what the server has.
    let v = sync_json(&dd);
    assert_eq!(v["links"][0]["counts"]["hub_created"], 2, "{v}");
    // A contact made in the hub goes to the server.
    let new = tmp.path().join("new.vcf");
    std::fs::write(&new, card("h0", "Hub Made", "from the hub")).unwrap();
    assert!(
        sealsync(&dd, &["import", new.to_str().unwrap()])
            .status
            .success()
    );
    let v = sync_json(&dd);
    assert_eq!(v["links"][0]["counts"]["remote_created"], 1, "{v}");
    let listed = rt.block_on(dav.list()).unwrap().items;
    assert_eq!(listed.len(), 3);
    // The no-op run changes nothing.
    let v = sync_json(&dd);
    assert_eq!(v["links"][0]["counts"]["unchanged"], 3, "{v}");

    // Edited on the server directly: the hub follows.
    let d0 = listed
        .iter()
        .find(|i| i.id.as_str().ends_with("d0.vcf"))
        .unwrap()
        .clone();
    let edited = rt
        .block_on(dav.update(&d0.id, &d0.etag, &contact(&card("d0", "Server Edit", "x"))))
        .unwrap();
    let v = sync_json(&dd);
    assert_eq!(v["links"][0]["counts"]["hub_updated"], 1, "{v}");
    let o = sealsync(&dd, &["contacts", "find", "--email", "d0@example.org"]);
    assert!(stdout(&o).contains("Server Edit"), "{}", stdout(&o));

    // Both sides change: the conflict waits; the server's version is chosen.
    let hub_edit = tmp.path().join("hub-edit.vcf");
    std::fs::write(&hub_edit, card("d0", "Hub Edit", "x")).unwrap();
    assert!(
        sealsync(&dd, &["import", hub_edit.to_str().unwrap()])
            .status
            .success()
    );
    rt.block_on(dav.update(
        &d0.id,
        &edited.etag,
        &contact(&card("d0", "Server Again", "x")),
    ))
    .unwrap();
    let v = sync_json(&dd);
    assert_eq!(v["links"][0]["counts"]["conflicts"], 1, "{v}");
    let o = sealsync(&dd, &["conflicts", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap();
    assert!(
        sealsync(&dd, &["conflicts", "resolve", id, "--take", "remote"])
            .status
            .success()
    );
    sync_json(&dd);
    let o = sealsync(&dd, &["contacts", "find", "--email", "d0@example.org"]);
    assert!(stdout(&o).contains("Server Again"), "{}", stdout(&o));

    // Deleted on the server: gone from the hub too (the link propagates deletions).
    let d1 = rt
        .block_on(dav.list())
        .unwrap()
        .items
        .into_iter()
        .find(|i| i.id.as_str().ends_with("d1.vcf"))
        .unwrap();
    rt.block_on(dav.delete(&d1.id, &d1.etag)).unwrap();
    let v = sync_json(&dd);
    assert_eq!(v["links"][0]["counts"]["hub_deleted"], 1, "{v}");

    // A wrong password (rotated in by a new apply) stops the link with a clear error.
    let rotate = sealsync_env(
        &dd,
        &["apply", file.to_str().unwrap()],
        &[("DAV_PASSWORD", "not-the-password")],
    );
    assert!(
        stdout(&rotate).contains("~ account radicale (update)"),
        "{}",
        stdout(&rotate)
    );
    let o = sealsync(&dd, &["sync", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("refused the account's credentials"),
        "{v}"
    );

    // The password is in no file of the data directory; its uses are audited.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dd).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            bytes.extend(std::fs::read(p).unwrap());
        }
    }
    assert!(
        !bytes
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes())
    );
    let o = sealsync(&dd, &["audit", "tail", "-n", "100"]);
    assert!(stdout(&o).contains("account.used"), "{}", stdout(&o));
}
