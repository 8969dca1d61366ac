//! Endpoints, links, runs and conflicts through the API: declared, run, decided.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error, spawn_app};

const ALICE: &str = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:5a1ce000-0000-4000-8000-000000000001\r\nFN:Alice Example\r\nEMAIL:alice@example.com\r\nEND:VCARD\r\n";

pub(crate) async fn put(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.http
        .put(app.ws_url(app.ws, path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    let resp = app
        .http
        .get(app.ws_url(app.ws, path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    resp.json().await.unwrap()
}

/// Starts a run of `link` and waits until it is no longer queued or running.
pub(crate) async fn run(app: &TestApp, key: &str, link: &str) -> Value {
    let resp = app
        .http
        .post(app.ws_url(app.ws, "/runs"))
        .bearer_auth(key)
        .json(&json!({"link": link}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let started: Value = resp.json().await.unwrap();
    assert_eq!(started["status"], "queued");
    assert!(location.ends_with(started["id"].as_str().unwrap()));
    for _ in 0..300 {
        let resp = app
            .http
            .get(app.url(&location))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        if v["status"] != "queued" && v["status"] != "running" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the run did not finish");
}

#[tokio::test]
async fn endpoints_and_links_are_declared_run_and_removed() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let folder = app
        .dir
        .path()
        .join("files")
        .join(app.ws.to_string())
        .join("phone");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("alice.vcf"), ALICE).unwrap();

    let resp = put(
        &app,
        &key,
        "/endpoints/phone",
        json!({"kind": "vdir", "path": "phone"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["op"], "create");
    let again = put(
        &app,
        &key,
        "/endpoints/phone",
        json!({"kind": "vdir", "path": "phone"}),
    )
    .await;
    assert_eq!(again.json::<Value>().await.unwrap()["op"], "unchanged");
    let resp = put(
        &app,
        &key,
        "/links/phone",
        json!({"endpoint": "phone", "direction": "both", "conflict": "manual"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["op"], "create");
    assert_eq!(get(&app, &key, "/endpoints").await[0]["kind"], "vdir");
    assert_eq!(get(&app, &key, "/links").await[0]["name"], "phone");

    let done = run(&app, &key, "phone").await;
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["counts"]["created"], 1, "{done}");
    let contacts = get(&app, &key, "/contacts").await;
    assert_eq!(
        contacts["contacts"].as_array().unwrap().len(),
        1,
        "{contacts}"
    );

    // Both sides change: the manual policy queues the conflict; a decision applies it.
    let id = contacts["contacts"][0]["id"].as_str().unwrap().to_owned();
    let resp = app
        .http
        .get(app.ws_url(app.ws, &format!("/contacts/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let hub_edit = ALICE.replace("FN:Alice Example", "FN:Alice Hub");
    let resp = app
        .http
        .put(app.ws_url(app.ws, &format!("/contacts/{id}")))
        .bearer_auth(&key)
        .header("if-match", etag)
        .json(&json!({"vcard": hub_edit}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        folder.join("alice.vcf"),
        ALICE.replace("FN:Alice Example", "FN:Alice Phone"),
    )
    .unwrap();
    let done = run(&app, &key, "phone").await;
    assert_eq!(done["counts"]["conflicts"], 1, "{done}");
    let conflicts = get(&app, &key, "/conflicts").await;
    let conflict = conflicts[0]["id"].as_str().unwrap().to_owned();
    let resolve = |take: &'static str| {
        app.http
            .post(app.ws_url(app.ws, &format!("/conflicts/{conflict}/resolve")))
            .bearer_auth(&key)
            .json(&json!({"take": take}))
            .send()
    };
    assert_error(
        resolve("both").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_eq!(
        resolve("remote").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let done = run(&app, &key, "phone").await;
    assert_eq!(done["status"], "ok", "{done}");
    let resp = app
        .http
        .get(app.ws_url(app.ws, &format!("/contacts/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(v["jcard"].to_string().contains("Alice Phone"), "{v}");
    assert_eq!(get(&app, &key, "/conflicts").await, json!([]));

    // An endpoint in use stays; then the link, then the endpoint go.
    let del = |path: &'static str| {
        app.http
            .delete(app.ws_url(app.ws, path))
            .bearer_auth(&key)
            .send()
    };
    assert_error(
        del("/endpoints/phone").await.unwrap(),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(
        del("/links/phone").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        del("/endpoints/phone").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        del("/links/phone").await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(get(&app, &key, "/endpoints").await, json!([]));
    assert!(folder.join("alice.vcf").exists(), "the files stay");

    let audit = get(&app, &key, "/audit?limit=1000").await.to_string();
    for action in [
        "endpoint.changed",
        "link.changed",
        "run.started",
        "conflict.resolved",
    ] {
        assert!(audit.contains(action), "{action} audited");
    }
    app.stop().await;
}

#[tokio::test]
async fn endpoints_stay_inside_the_workspace_folder() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    for body in [
        json!({"kind": "vdir", "path": "../other"}),
        json!({"kind": "vdir", "path": "a/../../b"}),
        json!({"kind": "vdir", "path": "/etc"}),
        json!({"kind": "csv", "path": ""}),
        json!({"kind": "sql", "path": "x"}),
        json!({"kind": "vdir", "path": "ok", "version": "2.1"}),
    ] {
        let resp = put(&app, &key, "/endpoints/bad", body.clone()).await;
        assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    }
    // Fields of other kinds (a database URL, a mapping file) are not accepted at all.
    let resp = put(
        &app,
        &key,
        "/endpoints/bad",
        json!({"kind": "csv", "path": "x.csv", "map": "/etc/passwd"}),
    )
    .await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let resp = put(
        &app,
        &key,
        "/endpoints/bad name",
        json!({"kind": "vdir", "path": "x"}),
    )
    .await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let resp = put(&app, &key, "/links/l", json!({"endpoint": "nope"})).await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert_eq!(get(&app, &key, "/endpoints").await, json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_run_that_cannot_read_its_endpoint_is_recorded_as_failed() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    // A CSV endpoint whose path is a folder cannot be read.
    let folder = app
        .dir
        .path()
        .join("files")
        .join(app.ws.to_string())
        .join("gone");
    std::fs::create_dir_all(&folder).unwrap();
    let resp = put(
        &app,
        &key,
        "/endpoints/gone",
        json!({"kind": "csv", "path": "gone"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = put(&app, &key, "/links/gone", json!({"endpoint": "gone"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let done = run(&app, &key, "gone").await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["counts"]["error"], "endpoint", "{done}");
    assert!(done["ended_at"].is_i64());
    let resp = app
        .http
        .post(app.ws_url(app.ws, "/runs"))
        .bearer_auth(&key)
        .json(&json!({"link": "nope"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    app.stop().await;
}

/// Every file under `dir` (database, WAL, keystore), as bytes.
pub fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    out
}

#[tokio::test]
async fn account_secrets_are_write_only() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let password = "correct-horse-battery-staple-7";
    let resp = put(
        &app,
        &key,
        "/accounts/radicale",
        json!({"kind": "basic", "username": "annika", "password": password}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains(password) && !text.contains("annika"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["hint"], "user a…, password set");
    assert!(v["rotated_at"].is_null());

    let listed = get(&app, &key, "/accounts").await;
    assert_eq!(listed[0]["name"], "radicale");
    assert_eq!(listed[0]["kind"], "basic");
    let text = listed.to_string();
    assert!(
        !text.contains(password) && !text.contains("annika"),
        "{text}"
    );

    // A new secret: the old one is replaced, nothing is shown.
    let resp = put(
        &app,
        &key,
        "/accounts/radicale",
        json!({"kind": "basic", "username": "annika", "password": "another-long-password-8"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.json::<Value>().await.unwrap()["rotated_at"].is_i64());
    let key_secret = "sk_live_0123456789abcdefWXYZ";
    let resp = put(
        &app,
        &key,
        "/accounts/crm",
        json!({"kind": "api-key", "key": key_secret}),
    )
    .await;
    assert_eq!(resp.json::<Value>().await.unwrap()["hint"], "key …WXYZ");

    for body in [
        json!({"kind": "basic", "username": "u"}),
        json!({"kind": "api-key", "key": "k", "username": "u"}),
        json!({"kind": "oauth", "key": "k"}),
        json!({"kind": "basic", "username": "", "password": "p"}),
    ] {
        let resp = put(&app, &key, "/accounts/bad", body).await;
        assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    }
    let resp = put(
        &app,
        &key,
        "/accounts/bad",
        json!({"kind": "basic", "secret": password}),
    )
    .await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

    // Not in the database files, not in the audit log.
    let bytes = all_bytes(app.dir.path());
    for secret in [password, "another-long-password-8", key_secret, "annika"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} found in the database files"
        );
    }
    let audit = serde_json::to_string(&app.audit_entries(app.ws).await).unwrap();
    assert_eq!(audit.matches("account.changed").count(), 3, "{audit}");
    assert!(!audit.contains("annika") && !audit.contains(password));

    let del = app
        .http
        .delete(app.ws_url(app.ws, "/accounts/radicale"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let del = app
        .http
        .delete(app.ws_url(app.ws, "/accounts/radicale"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_error(del, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        get(&app, &key, "/accounts").await.as_array().unwrap().len(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn carddav_endpoints_over_the_api_reach_public_servers_only() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/dav/",
        "https://127.0.0.1:5232/u/book/",
        "https://[::1]/dav/",
        "http://dav.example.com/u/book/",
        "https://u:p@dav.example.com/u/book/",
    ] {
        let resp = put(
            &app,
            &key,
            "/endpoints/book",
            json!({"kind": "carddav", "url": url}),
        )
        .await;
        assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    }
    let resp = put(
        &app,
        &key,
        "/endpoints/book",
        json!({"kind": "carddav", "url": "https://dav.example.com/u/book/", "account": "nope"}),
    )
    .await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let resp = put(
        &app,
        &key,
        "/accounts/dav",
        json!({"kind": "basic", "username": "u", "password": "a-long-password-1"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = put(
        &app,
        &key,
        "/endpoints/book",
        json!({"kind": "carddav", "url": "https://dav.example.com/u/book/", "account": "dav"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(get(&app, &key, "/endpoints").await[0]["kind"], "carddav");
    let resp = put(
        &app,
        &key,
        "/endpoints/book2",
        json!({"kind": "carddav", "url": "https://dav.example.com/", "path": "x"}),
    )
    .await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    app.stop().await;
}

#[tokio::test]
async fn a_workspace_host_allowlist_bounds_where_endpoints_connect() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    assert_eq!(get(&app, &key, "/egress").await, json!({"hosts": null}));
    let resp = put(
        &app,
        &key,
        "/accounts/dav",
        json!({"kind": "basic", "username": "ann", "password": "pw-for-the-allowlist-test"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let carddav = |url: &str| json!({"kind": "carddav", "url": url, "account": "dav"});
    let resp = put(
        &app,
        &key,
        "/endpoints/book",
        carddav("https://dav.example.com/ann/"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = put(
        &app,
        &key,
        "/links/book",
        json!({"endpoint": "book", "direction": "push"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = put(
        &app,
        &key,
        "/egress",
        json!({"hosts": ["*.Example.org", "dav.partner.test"]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"hosts": ["*.example.org", "dav.partner.test"]})
    );
    // New endpoints outside the list are refused; inside it, taken.
    let resp = put(
        &app,
        &key,
        "/endpoints/other",
        carddav("https://dav.example.com/x/"),
    )
    .await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let resp = put(
        &app,
        &key,
        "/endpoints/inside",
        carddav("https://dav.example.org/x/"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // An endpoint declared before no longer opens: the run fails before any connection.
    let done = run(&app, &key, "book").await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["counts"].to_string().contains("endpoint"), "{done}");
    // Bad patterns are refused; null lifts the list.
    let resp = put(&app, &key, "/egress", json!({"hosts": ["not a host!"]})).await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let resp = put(&app, &key, "/egress", json!({"hosts": null})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = put(
        &app,
        &key,
        "/endpoints/other",
        carddav("https://dav.example.com/x/"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    app.stop().await;
}
