//! Webhook destinations: the outbox as a connector, and its deliveries to a real receiver on
//! loopback that checks both signatures and applies what it gets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sealsync_connector::compliance::{self, Fidelity};
use sealsync_connector::credential::Credential;
use sealsync_connector::{Destination, Source};
use sealsync_connectors::webhook::{JsonMapping, Signed, SigningSecret, read_delivery};
use sealsync_connectors::webhook_out::{SignKey, verify_asymmetric};
use sealsync_engine::outbox::{Outbox, RETRY_WINDOW_MS, deliver_pending};
use sealsync_engine::{Direction, EndpointSpec, LinkSpec};
use sealsync_store::{DeliveryState, KeyPurpose, now_ms};
use sealsync_types::EndpointId;

use crate::harness::{World, pg_world, world};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Take,
    Busy(Option<u64>),
    Refuse,
}

struct Receiver {
    mode: Mutex<Mode>,
    public: Vec<u8>,
    kid: String,
    /// Every request, in arrival order: webhook-id and whether both signatures held.
    seen: Mutex<Vec<(String, bool)>>,
    /// What the receiver holds: UID to FN.
    held: Mutex<BTreeMap<String, String>>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let signed = Signed {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
    };
    let now = now_ms() / 1000;
    let secret = SigningSecret::parse(SECRET).unwrap();
    let valid = secret.verify(signed, &body, now).is_ok()
        && verify_asymmetric(&r.public, signed, &body, now).is_ok()
        && h("webhook-key-id") == Some(r.kid.as_str());
    r.seen
        .lock()
        .unwrap()
        .push((signed.id.unwrap_or_default().to_owned(), valid));
    match *r.mode.lock().unwrap() {
        Mode::Busy(after) => {
            let mut resp = StatusCode::SERVICE_UNAVAILABLE.into_response();
            if let Some(s) = after {
                resp.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            return resp;
        }
        Mode::Refuse => return StatusCode::BAD_REQUEST.into_response(),
        Mode::Take => {}
    }
    let mapping = JsonMapping::new(&BTreeMap::new(), None).unwrap();
    let d = read_delivery("application/json", &body, &mapping).unwrap();
    let mut held = r.held.lock().unwrap();
    for u in d.upserts {
        held.insert(
            u.id.as_str().to_owned(),
            u.contact.formatted_name().unwrap_or_default(),
        );
    }
    for id in d.deletes {
        held.remove(id.as_str());
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A receiver on loopback, and its URL.
async fn receiver(w: &World) -> (Arc<Receiver>, String) {
    let (_, seed) = w
        .engine
        .hub()
        .ensure_installation_key(KeyPurpose::Signing)
        .await
        .unwrap();
    let key = SignKey::from_seed(seed.expose(), sealsync_crypto::key_id).unwrap();
    let r = Arc::new(Receiver {
        mode: Mutex::new(Mode::Take),
        public: key.public().to_vec(),
        kid: key.kid().to_owned(),
        seen: Mutex::default(),
        held: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, format!("http://{addr}/hook"))
}

fn spec(url: &str) -> EndpointSpec {
    let port = url.rsplit(':').next().unwrap().trim_end_matches("/hook");
    EndpointSpec::WebhookOut {
        url: url.to_owned(),
        account: "hook-secret".into(),
        allow: vec![format!("127.0.0.1:{port}")],
    }
}

async fn outbox_to(w: &World, url: &str) -> Outbox {
    let credential = Credential::ApiKey {
        key: SECRET.to_owned().into(),
    };
    let sender = w
        .engine
        .webhook_sender(&spec(url), &credential)
        .await
        .unwrap();
    Outbox::new(
        w.engine.hub().store().clone(),
        Arc::new(keys_of(w).await),
        EndpointId::new(),
        Some(Arc::new(sender)),
    )
}

async fn keys_of(w: &World) -> sealsync_crypto::WorkspaceKeys {
    let name = sealsync_types::WorkspaceName::default_workspace();
    w.engine.hub().open_workspace(&name).await.unwrap().1
}

fn contact(uid: &str, name: &str) -> sealsync_contact::Contact {
    let mut c = sealsync_contact::Contact::new();
    c.push(sealsync_contact::Property::text("UID", uid));
    c.push(sealsync_contact::Property::text("FN", name));
    c
}

async fn compliance_on(w: &World) {
    let store = w.engine.hub().store().clone();
    let keys = Arc::new(keys_of(w).await);
    let endpoint = EndpointId::new();
    compliance::run(
        || {
            let (store, keys) = (store.clone(), keys.clone());
            async move { Ok(Outbox::new(store, keys, endpoint, None)) }
        },
        Fidelity::Full,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_outbox_passes_the_compliance_suite() {
    compliance_on(&world().await).await;
}

#[tokio::test]
async fn pg_the_outbox_passes_the_compliance_suite() {
    let Some(w) = pg_world().await else { return };
    compliance_on(&w).await;
}

async fn signed_and_in_order(w: &World) {
    let (r, url) = receiver(w).await;
    let out = outbox_to(w, &url).await;
    let mut metas = Vec::new();
    for (uid, name) in [("u1", "Ada"), ("u2", "Grace"), ("u3", "Zoë")] {
        metas.push(out.create(&contact(uid, name)).await.unwrap());
    }
    let changed = out
        .update(&metas[0].id, &metas[0].etag, &contact("u1", "Ada Lovelace"))
        .await
        .unwrap();
    out.delete(&metas[1].id, &metas[1].etag).await.unwrap();
    out.flush().await.unwrap();

    let seen = r.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "one delivery per change");
    assert!(
        seen.iter().all(|(_, valid)| *valid),
        "HMAC and Ed25519 hold"
    );
    let ids: std::collections::HashSet<_> = seen.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 5, "each change has its own webhook-id");
    let held = r.held.lock().unwrap().clone();
    let want: BTreeMap<String, String> = [("u1", "Ada Lovelace"), ("u3", "Zoë")]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    assert_eq!(
        held, want,
        "applied in order, the receiver holds what the outbox lists"
    );
    assert_eq!(out.list().await.unwrap().items.len(), 2);

    // The same change written again (a run repeated after a crash) is not delivered again;
    // a stale etag is a conflict, never a blind overwrite.
    out.update(&metas[0].id, &metas[0].etag, &contact("u1", "Ada Lovelace"))
        .await
        .unwrap_err();
    out.delete(&metas[2].id, &changed.etag).await.unwrap_err();
    out.create(&contact("u3", "Zoë")).await.unwrap();
    out.flush().await.unwrap();
    assert_eq!(r.seen.lock().unwrap().len(), 5);
    let ws = keys_of(w).await.workspace();
    let store = w.engine.hub().store();
    assert!(
        store
            .deliveries(ws, Some(DeliveryState::Pending), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .deliveries(ws, Some(DeliveryState::Delivered), 100)
            .await
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn deliveries_are_signed_ordered_and_make_the_receiver_whole() {
    signed_and_in_order(&world().await).await;
}

#[tokio::test]
async fn pg_deliveries_are_signed_ordered_and_make_the_receiver_whole() {
    let Some(w) = pg_world().await else { return };
    signed_and_in_order(&w).await;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_dead_then_replayed() {
    let w = world().await;
    let (r, url) = receiver(&w).await;
    let out = outbox_to(&w, &url).await;
    let keys = keys_of(&w).await;
    let ws = keys.workspace();
    let store = w.engine.hub().store().clone();
    let pending = |s: DeliveryState| {
        let store = store.clone();
        async move { store.deliveries(ws, Some(s), 100).await.unwrap() }
    };

    // Busy, asking for 60 s: the first delivery waits that long, the second behind it.
    *r.mode.lock().unwrap() = Mode::Busy(Some(60));
    out.create(&contact("a", "A")).await.unwrap();
    out.create(&contact("b", "B")).await.unwrap();
    let t0 = now_ms();
    out.flush().await.unwrap();
    assert_eq!(
        r.seen.lock().unwrap().len(),
        1,
        "the second waits behind the first"
    );
    let waiting = pending(DeliveryState::Pending).await;
    assert_eq!(waiting.len(), 2);
    let first = waiting.iter().find(|d| d.attempts == 1).unwrap();
    assert_eq!(first.last_status, Some(503));
    assert!(first.next_at >= t0 + 59_000 && first.next_at <= now_ms() + 61_000);

    // Not due yet: nothing is sent. Once due, and the receiver is back, both go, in order.
    let sender = w
        .engine
        .webhook_sender(
            &spec(&url),
            &Credential::ApiKey {
                key: SECRET.to_owned().into(),
            },
        )
        .await
        .unwrap();
    let endpoint_of = first.endpoint;
    let report = deliver_pending(&store, &keys, endpoint_of, &sender, now_ms())
        .await
        .unwrap();
    assert_eq!(report.delivered + report.retrying, 0);
    *r.mode.lock().unwrap() = Mode::Take;
    let report = deliver_pending(&store, &keys, endpoint_of, &sender, now_ms() + 61_000)
        .await
        .unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(r.held.lock().unwrap().len(), 2);

    // Failing for a whole day: dead, kept, and replayed with a new day once the receiver is back.
    *r.mode.lock().unwrap() = Mode::Busy(None);
    out.create(&contact("c", "C")).await.unwrap();
    out.flush().await.unwrap();
    let report = deliver_pending(
        &store,
        &keys,
        endpoint_of,
        &sender,
        now_ms() + RETRY_WINDOW_MS + 1,
    )
    .await
    .unwrap();
    assert_eq!(report.dead, 1);
    let dead = pending(DeliveryState::Dead).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].last_error.as_deref().unwrap().contains("24 hours"));
    *r.mode.lock().unwrap() = Mode::Take;
    assert_eq!(store.replay_deliveries(ws, None).await.unwrap(), 1);
    let report = deliver_pending(&store, &keys, endpoint_of, &sender, now_ms())
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    assert!(r.held.lock().unwrap().contains_key("c"));

    // Refused outright (400): dead at once, no retries.
    *r.mode.lock().unwrap() = Mode::Refuse;
    out.create(&contact("d", "D")).await.unwrap();
    out.flush().await.unwrap();
    let dead = pending(DeliveryState::Dead).await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].last_status), (1, Some(400)));
    assert!(pending(DeliveryState::Pending).await.is_empty());
}

#[tokio::test]
async fn a_push_link_sends_its_changes_and_only_pushes() {
    let w = world().await;
    let (r, url) = receiver(&w).await;
    let phone = w
        .vdir_link(
            "phone",
            LinkSpec {
                direction: Direction::Pull,
                ..LinkSpec::default()
            },
        )
        .await;
    for (uid, name) in [("p1", "Ada"), ("p2", "Grace")] {
        std::fs::write(
            phone.join(format!("{uid}.vcf")),
            format!("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:{uid}\r\nFN:{name}\r\nEND:VCARD\r\n"),
        )
        .unwrap();
    }
    w.engine
        .put_account(
            "hook-secret",
            &Credential::ApiKey {
                key: SECRET.to_owned().into(),
            },
        )
        .await
        .unwrap();
    w.engine
        .put_endpoint("crm", &spec(&url), false)
        .await
        .unwrap();
    let both = LinkSpec {
        direction: Direction::Both,
        ..LinkSpec::default()
    };
    let refused = w
        .engine
        .put_link("crm", "crm", &both, false)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("push"), "{refused}");
    let push = LinkSpec {
        direction: Direction::Push,
        ..LinkSpec::default()
    };
    w.engine.put_link("crm", "crm", &push, false).await.unwrap();

    w.sync("phone").await;
    let report = w.sync("crm").await;
    assert_eq!(report.counts.created, 2);
    let held = r.held.lock().unwrap().clone();
    assert_eq!(held.get("p1").map(String::as_str), Some("Ada"));
    assert_eq!(held.get("p2").map(String::as_str), Some("Grace"));

    // An edit goes out once; a no-op run sends nothing.
    std::fs::write(
        phone.join("p1.vcf"),
        "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:p1\r\nFN:Ada Lovelace\r\nEND:VCARD\r\n",
    )
    .unwrap();
    w.sync("phone").await;
    w.sync("crm").await;
    w.sync("crm").await;
    assert_eq!(r.seen.lock().unwrap().len(), 3);
    assert_eq!(
        r.held.lock().unwrap().get("p1").map(String::as_str),
        Some("Ada Lovelace")
    );
    // The server's loop would send what is due; here the engine does, under the link's claim.
    let endpoint = w.def("crm").await.endpoint_id;
    let report = w.engine.deliver(endpoint, now_ms()).await.unwrap();
    assert_eq!(report.delivered, 0);
}
