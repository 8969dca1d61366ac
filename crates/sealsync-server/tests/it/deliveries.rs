//! Webhook destinations through the API: a push link's changes reach a receiver on loopback,
//! signed with the shared secret and with a key the receiver finds in the server's JWKS;
//! a refused delivery is listed as dead and goes out again when replayed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::response::IntoResponse;
use base64::Engine as _;
use reqwest::StatusCode;
use sealsync_engine::inbox::webhook::{Signed, SigningSecret};
use sealsync_engine::outbox::webhook_id;
use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app};
use crate::sync_ops::{get, put, run};

const SECRET: &str = "whsec_c2VhbHN5bmMtd2ViaG9vay10ZXN0LXNlY3JldC0wMDE=";

struct Receiver {
    refuse: Mutex<bool>,
    /// The JWKS the server publishes, as the receiver fetched it.
    jwks: Mutex<Value>,
    /// Bodies taken, each with whether both signatures held.
    taken: Mutex<Vec<(Value, bool)>>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if *r.refuse.lock().unwrap() {
        return AxStatus::UNPROCESSABLE_ENTITY.into_response();
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let signed = Signed {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let hmac = SigningSecret::parse(SECRET)
        .unwrap()
        .verify(signed, &body, now)
        .is_ok();
    // The Ed25519 key is the JWKS entry the `webhook-key-id` header names.
    let kid = h("webhook-key-id").unwrap_or_default();
    let public = r.jwks.lock().unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid && k["crv"] == "Ed25519")
        .and_then(|k| k["x"].as_str())
        .and_then(|x| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .ok()
        });
    let ed25519 = public.is_some_and(|p| {
        sealsync_engine::outbox::webhook_out::verify_asymmetric(&p, signed, &body, now).is_ok()
    });
    let v: Value = serde_json::from_slice(&body).unwrap();
    r.taken.lock().unwrap().push((v, hmac && ed25519));
    AxStatus::NO_CONTENT.into_response()
}

async fn add_contact(app: &TestApp, key: &str, uid: &str, name: &str) {
    let card = format!("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:{uid}\r\nFN:{name}\r\nEND:VCARD\r\n");
    let resp = app
        .http
        .post(app.ws_url(app.ws, "/contacts"))
        .bearer_auth(key)
        .json(&json!({ "vcard": card }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn push_links_deliver_signed_webhooks_and_dead_ones_replay() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let _loop = sealsync_server::deliveries::spawn_delivery_loop(app.state.clone());
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = Arc::new(Receiver {
        refuse: Mutex::new(false),
        jwks: Mutex::new(jwks),
        taken: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = axum::Router::new()
        .route("/in", axum::routing::post(receive))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let status = put(
        &app,
        &key,
        "/accounts/crm-out",
        json!({"kind": "api-key", "key": SECRET}),
    )
    .await
    .status();
    assert_eq!(status, StatusCode::OK);
    // Over the API a loopback receiver is refused: no SSRF through a receiver URL.
    let url = format!("http://{addr}/in");
    let status = put(
        &app,
        &key,
        "/endpoints/crm",
        json!({"kind": "webhook-out", "url": url, "account": "crm-out"}),
    )
    .await
    .status();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A loopback receiver is the operator's to allow, in an apply file: as the operator does.
    let (_, keys) = app
        .hub
        .open_workspace(&sealsync_types::WorkspaceName::default_workspace())
        .await
        .unwrap();
    let engine = sealsync_engine::Engine::new(app.hub.clone(), Arc::new(keys), None);
    let spec = sealsync_engine::EndpointSpec::WebhookOut {
        url: url.clone(),
        account: "crm-out".into(),
        allow: vec![addr.to_string()],
    };
    engine.put_endpoint("crm", &spec, false).await.unwrap();
    for (direction, want) in [
        ("pull", StatusCode::UNPROCESSABLE_ENTITY),
        ("push", StatusCode::OK),
    ] {
        let status = put(
            &app,
            &key,
            "/links/crm",
            json!({"endpoint": "crm", "direction": direction}),
        )
        .await
        .status();
        assert_eq!(status, want, "{direction}");
    }

    add_contact(&app, &key, "u-1", "Ada Lovelace").await;
    run(&app, &key, "crm").await;
    let taken = r.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 1);
    assert!(taken[0].1, "HMAC and Ed25519 (from the JWKS) hold");
    assert_eq!(taken[0].0["contacts"][0][0], "vcard");
    assert!(taken[0].0.to_string().contains("Ada Lovelace"));

    // Refused: dead at once, listed without its contents.
    *r.refuse.lock().unwrap() = true;
    add_contact(&app, &key, "u-2", "Grace Hopper").await;
    run(&app, &key, "crm").await;
    let dead = get(&app, &key, "/deliveries?state=dead").await;
    let dead = dead.as_array().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["last_status"], 422);
    assert_eq!(dead[0]["attempts"], 1);
    let text = serde_json::to_string(&dead).unwrap();
    assert!(!text.contains("Grace") && !text.contains("u-2"), "{text}");
    let raw = (0..dead[0]["id"].as_str().unwrap().len() / 2)
        .map(|i| {
            u8::from_str_radix(&dead[0]["id"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect::<Vec<u8>>();
    assert_eq!(dead[0]["webhook_id"], webhook_id(&raw));

    // A bad id is refused; replaying brings it to the receiver, through the delivery loop.
    let resp = app
        .http
        .post(app.ws_url(app.ws, "/deliveries/replay"))
        .bearer_auth(&key)
        .json(&json!({"ids": ["nothex"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    *r.refuse.lock().unwrap() = false;
    let resp = app
        .http
        .post(app.ws_url(app.ws, "/deliveries/replay"))
        .bearer_auth(&key)
        .json(&json!({"ids": [dead[0]["id"]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["replayed"], 1);
    let got = until("the replayed delivery arrives", async || {
        let t = r.taken.lock().unwrap().clone();
        (t.len() == 2).then_some(t)
    })
    .await;
    assert!(got[1].1);
    assert!(got[1].0.to_string().contains("Grace Hopper"));
    let states = get(&app, &key, "/deliveries").await;
    assert!(
        states
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "delivered"),
        "{states}"
    );
    let audit = app.audit_entries(app.ws).await;
    assert!(
        audit.iter().any(|e| e["action"] == "deliveries.replayed"),
        "{audit:?}"
    );
}
