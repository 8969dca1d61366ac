//! Webhook sources over real HTTPS: signed deliveries kept once, durably, then synced into the
//! hub by the endpoint's pull link; unsigned, stale, forged or repeated ones change nothing.

use std::time::Duration;

use reqwest::StatusCode;
use sealsync_engine::inbox::webhook::SigningSecret;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error, spawn_app};

const SECRET: &str = "whsec_c2VhbHN5bmMtd2ViaG9vay10ZXN0LXNlY3JldC0wMDE=";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn put(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.http
        .put(app.ws_url(app.ws, path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A webhook endpoint `crm` with its secret account and a pull link; its id.
async fn webhook_endpoint(app: &TestApp, key: &str) -> String {
    let resp = put(
        app,
        key,
        "/accounts/crm-hook",
        json!({"kind": "api-key", "key": SECRET}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = put(
        app,
        key,
        "/endpoints/crm",
        json!({"kind": "webhook", "account": "crm-hook"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // It only delivers: a link that would write to it is refused.
    let resp = put(
        app,
        key,
        "/links/crm",
        json!({"endpoint": "crm", "direction": "both"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = put(
        app,
        key,
        "/links/crm",
        json!({"endpoint": "crm", "direction": "pull"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    id
}

/// Sends `body` to the endpoint, signed by `secret` as delivery `id` at `at`.
async fn deliver(
    app: &TestApp,
    endpoint: &str,
    secret: &str,
    id: &str,
    at: i64,
    content_type: &str,
    body: &str,
) -> reqwest::Response {
    let signature = SigningSecret::parse(secret)
        .unwrap()
        .sign(id, at, body.as_bytes());
    app.http
        .post(app.url(&format!("/v1/hooks/{endpoint}")))
        .header("content-type", content_type)
        .header("webhook-id", id)
        .header("webhook-timestamp", at.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// The hub's contacts' names, once `ready` holds for them (the link runs in the background).
async fn hub_names(app: &TestApp, key: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..200 {
        let resp = app
            .http
            .get(app.ws_url(app.ws, "/contacts"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        names = v["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| {
                c["jcard"][1]
                    .as_array()?
                    .iter()
                    .find(|p| p[0] == "fn")
                    .and_then(|p| p[3].as_str())
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        if ready(&names) {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the hub never got there: {names:?}");
}

#[tokio::test]
async fn signed_deliveries_are_kept_once_and_reach_the_hub() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let endpoint = webhook_endpoint(&app, &key).await;
    let contacts: Vec<Value> = (1..=6)
        .map(|i| json!({"id": format!("crm-{i}"), "name": format!("Person {i}"), "email": format!("p{i}@example.org")}))
        .collect();
    let body = json!({"contacts": contacts}).to_string();
    let t = now();
    let resp = deliver(
        &app,
        &endpoint,
        SECRET,
        "msg-1",
        t,
        "application/json",
        &body,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(resp.headers().get("idempotent-replayed").is_none());
    let first: Value = resp.json().await.unwrap();
    assert_eq!(first["accepted"], 6);
    assert_eq!(first["rejected"], json!([]));

    // The same delivery again: the same answer, marked as a replay, nothing changed.
    let resp = deliver(
        &app,
        &endpoint,
        SECRET,
        "msg-1",
        t,
        "application/json",
        &body,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    assert_eq!(resp.json::<Value>().await.unwrap(), first);

    let names = hub_names(&app, &key, |n| n.len() == 6).await;
    assert_eq!(names[0], "Person 1");

    // An edit, a deletion and a bad item in one delivery; then an older delivery that would
    // undo the edit, which must lose.
    let body = json!({
        "contacts": [{"id": "crm-2", "name": "Person Two", "email": "p2@example.org"}, {"name": "no id"}],
        "deleted": ["crm-6"],
    })
    .to_string();
    let resp = deliver(
        &app,
        &endpoint,
        SECRET,
        "msg-2",
        t + 1,
        "application/json",
        &body,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["accepted"].clone(), v["deleted"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(v["rejected"][0]["index"], 1);
    assert!(!v.to_string().contains("no id"), "{v}");
    let stale = json!([{"id": "crm-2", "name": "Person 2 (stale)"}]).to_string();
    let resp = deliver(
        &app,
        &endpoint,
        SECRET,
        "msg-0",
        t - 60,
        "application/json",
        &stale,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let names = hub_names(&app, &key, |n| {
        n.len() == 5 && n.iter().any(|x| x == "Person Two")
    })
    .await;
    assert!(
        !names.iter().any(|n| n.contains("stale") || n == "Person 6"),
        "{names:?}"
    );

    // jCard works too.
    let jcard = json!([
        "vcard",
        [
            ["uid", {}, "text", "jc-7"],
            ["fn", {}, "text", "Person Seven"]
        ]
    ])
    .to_string();
    let resp = deliver(
        &app,
        &endpoint,
        SECRET,
        "msg-3",
        now(),
        "application/vcard+json",
        &jcard,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    hub_names(&app, &key, |n| n.iter().any(|x| x == "Person Seven")).await;

    // The secret and the contents are nowhere in the audit log.
    let audit = serde_json::to_string(&app.audit_entries(app.ws).await).unwrap();
    assert!(
        !audit.contains("c2VhbHN5bmMtd2ViaG9vay") && !audit.contains("Person"),
        "{audit}"
    );
    app.stop().await;
}

#[tokio::test]
async fn unsigned_stale_forged_or_misaddressed_deliveries_are_refused() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let endpoint = webhook_endpoint(&app, &key).await;
    let body = json!([{"id": "x-1", "name": "Mallory"}]).to_string();
    let t = now();

    // No signature at all.
    let resp = app
        .http
        .post(app.url(&format!("/v1/hooks/{endpoint}")))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Another secret; too old; too far ahead; the body changed after signing.
    let other = "whsec_b3RoZXItc2VjcmV0LW9mLWVub3VnaC1sZW5ndGgtMDE=";
    let resp = deliver(&app, &endpoint, other, "m-1", t, "application/json", &body).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = deliver(
        &app,
        &endpoint,
        SECRET,
        "m-2",
        t - 301,
        "application/json",
        &body,
    )
    .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = deliver(
        &app,
        &endpoint,
        SECRET,
        "m-3",
        t + 301,
        "application/json",
        &body,
    )
    .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let signature = SigningSecret::parse(SECRET)
        .unwrap()
        .sign("m-4", t, body.as_bytes());
    let resp = app
        .http
        .post(app.url(&format!("/v1/hooks/{endpoint}")))
        .header("content-type", "application/json")
        .header("webhook-id", "m-4")
        .header("webhook-timestamp", t.to_string())
        .header("webhook-signature", signature)
        .body(body.replace("Mallory", "Mallory2"))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Signed, but not a body this endpoint reads.
    let resp = deliver(&app, &endpoint, SECRET, "m-5", t, "text/vcard", &body).await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = deliver(
        &app,
        &endpoint,
        SECRET,
        "m-6",
        t,
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // No such endpoint, and an endpoint that is not a webhook.
    let resp = deliver(
        &app,
        "00000000-0000-4000-8000-000000000000",
        SECRET,
        "m-7",
        t,
        "application/json",
        &body,
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    let resp = deliver(
        &app,
        "not-an-id",
        SECRET,
        "m-8",
        t,
        "application/json",
        &body,
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;

    // Nothing was kept, and each refusal is in the audit log without the body.
    let kept = app
        .hub
        .store()
        .hook_listing(app.ws, endpoint.parse().unwrap())
        .await
        .unwrap();
    assert!(kept.is_empty());
    let mut audit = Vec::new();
    for _ in 0..50 {
        audit = app.audit_entries(app.ws).await;
        if audit
            .iter()
            .filter(|e| e["action"] == "hook.rejected")
            .count()
            >= 5
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rejected = audit
        .iter()
        .filter(|e| e["action"] == "hook.rejected")
        .count();
    assert_eq!(rejected, 5, "{audit:?}");
    assert!(!serde_json::to_string(&audit).unwrap().contains("Mallory"));
    app.stop().await;
}

/// Sends contacts to a webhook endpoint as its sender would: signed jCard deliveries, each with
/// its own delivery id, the items told apart by UID.
struct Sender<'a> {
    app: &'a TestApp,
    endpoint: String,
    sent: std::sync::Mutex<(u64, std::collections::HashMap<String, String>)>,
}

impl Sender<'_> {
    async fn send(&self, body: Value) -> Result<(), String> {
        let id = {
            let mut s = self.sent.lock().unwrap();
            s.0 += 1;
            format!("compliance-{}", s.0)
        };
        // Deliveries in the same second: the later one still replaces the earlier.
        let resp = deliver(
            self.app,
            &self.endpoint,
            SECRET,
            &id,
            now(),
            "application/json",
            &body.to_string(),
        )
        .await;
        if resp.status() == StatusCode::ACCEPTED {
            Ok(())
        } else {
            Err(format!("the delivery was answered {}", resp.status()))
        }
    }
}

#[async_trait::async_trait]
impl sealsync_connector::compliance::Feeder for Sender<'_> {
    async fn put(&self, key: &str, contact: &sealsync_contact::Contact) -> Result<(), String> {
        let uid = contact.uid().ok_or("a sample without a UID")?;
        self.sent.lock().unwrap().1.insert(key.to_owned(), uid);
        self.send(json!({"contacts": [sealsync_contact::jcard::to_jcard(contact)]}))
            .await
    }

    async fn remove(&self, key: &str) -> Result<(), String> {
        let uid = self
            .sent
            .lock()
            .unwrap()
            .1
            .get(key)
            .cloned()
            .ok_or("never sent")?;
        self.send(json!({"deleted": [uid]})).await
    }
}

#[tokio::test]
async fn the_webhook_source_passes_the_compliance_suite() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let endpoint = webhook_endpoint(&app, &key).await;
    let keys = std::sync::Arc::new(app.hub.workspace_keys(app.ws).await.unwrap());
    let sender = Sender {
        app: &app,
        endpoint: endpoint.clone(),
        sent: Default::default(),
    };
    let id: sealsync_types::EndpointId = endpoint.parse().unwrap();
    sealsync_connector::compliance::run_source(
        || {
            let inbox =
                sealsync_engine::inbox::Inbox::new(app.hub.store().clone(), keys.clone(), id);
            async move { Ok(inbox) }
        },
        &sender,
        sealsync_connector::compliance::Fidelity::Full,
    )
    .await
    .unwrap();
    app.stop().await;
}
