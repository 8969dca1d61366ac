//! `POST /v1/hooks/{endpoint}`: contacts delivered by signed webhooks (Standard Webhooks
//! headers, see [`sealsync_connectors::webhook`]).
//!
//! - The endpoint's id is the address; its account holds the shared signing secret. A delivery
//!   whose signature does not match, or whose time is more than 5 minutes away, is refused
//!   (and audited) before its body is read.
//! - The answer comes only once the delivery is durable: deliveries go to one writer task that
//!   commits whatever has queued up in one transaction (group commit), then answers each.
//! - `webhook-id` is the idempotency key: a repeat within 24 hours changes nothing and gets the
//!   first answer again, with `Idempotent-Replayed: true`.
//! - Then the endpoint's pull links run (once for whatever arrived meanwhile), taking the
//!   deliveries into the hub like any other sync.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealsync_audit::{Actor, AuditEvent, Outcome, ReasonCode, Resource, ResourceKind};
use sealsync_connector::credential::Credential;
use sealsync_crypto::WorkspaceKeys;
use sealsync_engine::inbox::delivery_rows;
use sealsync_engine::inbox::webhook::{
    ID_HEADER, JsonMapping, Rejected, SIGNATURE_HEADER, Signed, SigningSecret, TIMESTAMP_HEADER,
    WebhookError, read_delivery,
};
use sealsync_engine::{EndpointSpec, RunError, RunOptions};
use sealsync_store::{HookDelivery, HookOutcome, Store};
use sealsync_types::{EndpointId, WorkspaceId};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Source;
use crate::error::ApiError;
use crate::json::ApiPath;
use crate::ops::engine_for;
use crate::state::AppState;

/// How long a resolved endpoint (workspace, keys, secret, mapping) is reused.
const ENDPOINT_TTL: Duration = Duration::from_secs(30);
/// Deliveries committed together at most.
const GROUP_MAX: usize = 512;
/// How long a link run waits for more deliveries before it starts.
const RUN_DELAY: Duration = Duration::from_secs(2);

/// A webhook endpoint, ready to check deliveries.
struct HookEndpoint {
    ws: WorkspaceId,
    keys: Arc<WorkspaceKeys>,
    secret: SigningSecret,
    mapping: JsonMapping,
}

type Reply = oneshot::Sender<Result<HookOutcome, ()>>;

/// The server's webhook machinery.
#[derive(Default)]
pub(crate) struct Hooks {
    endpoints: Mutex<HashMap<EndpointId, (Instant, Arc<HookEndpoint>)>>,
    writer: OnceLock<mpsc::Sender<(HookDelivery, Reply)>>,
    scheduled: Mutex<HashSet<EndpointId>>,
}

impl Hooks {
    /// Forgets resolved endpoints, so that a changed secret or mapping applies at once.
    pub(crate) fn forget(&self) {
        if let Ok(mut m) = self.endpoints.lock() {
            m.clear();
        }
    }

    fn writer(&self, store: &Store) -> mpsc::Sender<(HookDelivery, Reply)> {
        self.writer
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel(4096);
                tokio::spawn(write_groups(store.clone(), rx));
                tx
            })
            .clone()
    }
}

/// Commits queued deliveries in groups; answers each once its group is durable.
async fn write_groups(store: Store, mut rx: mpsc::Receiver<(HookDelivery, Reply)>) {
    let mut pruned = Instant::now();
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (deliveries, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        match store.store_deliveries(&deliveries).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, deliveries = deliveries.len(), "Webhook deliveries could not be stored.");
                for reply in replies {
                    let _ = reply.send(Err(()));
                }
            }
        }
        if pruned.elapsed() > Duration::from_secs(600) {
            pruned = Instant::now();
            if let Err(e) = store.prune_hook_receipts().await {
                tracing::warn!(error = %e, "Old webhook delivery ids and deletions could not be pruned.");
            }
        }
    }
}

/// The answer to a delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryOut {
    /// Contacts taken.
    accepted: usize,
    /// Deletions taken.
    deleted: usize,
    /// Items not taken, by index (contacts first, then deletions), with why.
    #[schema(value_type = Vec<Object>)]
    rejected: Vec<Rejected>,
}

fn refused(
    state: &AppState,
    ws: WorkspaceId,
    endpoint: EndpointId,
    src: Source,
    why: &WebhookError,
) {
    let reason = match why {
        WebhookError::Missing(_) => "missing_header",
        WebhookError::BadId => "bad_id",
        WebhookError::BadTimestamp => "bad_timestamp",
        WebhookError::Expired => "expired",
        _ => "bad_signature",
    };
    let mut e = AuditEvent::new(
        Some(ws),
        Actor::anonymous(),
        sealsync_audit::Action::HookRejected,
    )
    .with_outcome(Outcome::Denied, ReasonCode::parse(reason).ok());
    if let Ok(r) = Resource::new(ResourceKind::Endpoint, &endpoint.to_string()) {
        e = e.with_resource(r);
    }
    if let Some(ip) = src.0 {
        e = e.with_source(ip);
    }
    let state = state.clone();
    tokio::spawn(async move { state.audit(e).await });
}

/// `POST /v1/hooks/{endpoint}`: takes a signed delivery of contacts.
#[utoipa::path(post, path = "/v1/hooks/{endpoint}", tag = "sync",
    params(
        ("endpoint" = String, Path, description = "The webhook endpoint's id"),
        ("webhook-id" = String, Header, description = "Unique per delivery; a repeat changes nothing"),
        ("webhook-timestamp" = i64, Header, description = "Unix seconds; at most 5 minutes from now"),
        ("webhook-signature" = String, Header, description = "`v1,<base64 HMAC-SHA256 over id.timestamp.body>`, space-separated"),
    ),
    request_body(content = Object, content_type = "application/json", description = "A contact object, a list, or {\"contacts\": [...], \"deleted\": [ids]}; or application/vcard+json (jCards)"),
    responses(
        (status = 202, body = DeliveryOut, description = "Durably kept"),
        (status = 503, body = crate::openapi::ErrorEnvelope, description = "Not kept; send again"),
        crate::openapi::ApiErrors,
    ),
    security(()))]
pub async fn deliver(
    State(state): State<AppState>,
    src: Source,
    ApiPath(endpoint): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let endpoint: EndpointId = endpoint.parse().map_err(|_| ApiError::not_found())?;
    let ep = resolve(&state, endpoint).await?;
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = Signed {
        id: text(ID_HEADER),
        timestamp: text(TIMESTAMP_HEADER),
        signature: text(SIGNATURE_HEADER),
    };
    let now = sealsync_store::now_ms() / 1000;
    let (delivery_id, sent) = match ep.secret.verify(signed, &body, now) {
        Ok(v) => v,
        Err(e) => {
            refused(&state, ep.ws, endpoint, src, &e);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                e.to_string(),
            ));
        }
    };
    let content_type = text(header::CONTENT_TYPE.as_str()).unwrap_or_default();
    let delivery = read_delivery(content_type, &body, &ep.mapping).map_err(|e| match e {
        WebhookError::Body(m) if m.contains("content type") => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            m,
        ),
        other => ApiError::bad_request(other.to_string()),
    })?;
    let answer = DeliveryOut {
        accepted: delivery.upserts.len(),
        deleted: delivery.deletes.len(),
        rejected: delivery.rejected.clone(),
    };
    let answer = serde_json::to_string(&answer).map_err(|e| ApiError::internal(&e))?;
    let rows = delivery_rows(
        &ep.keys,
        endpoint,
        delivery_id,
        sent.saturating_mul(1000),
        &delivery,
        answer.clone(),
    )
    .map_err(|e| ApiError::internal(&e))?;
    let changes = !rows.items.is_empty();
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the delivery could not be kept; send it again",
        )
    };
    state
        .inner
        .hooks
        .writer(state.hub().store())
        .send((rows, tx))
        .await
        .map_err(|_| unavailable())?;
    let outcome = rx
        .await
        .map_err(|_| unavailable())?
        .map_err(|_| unavailable())?;
    let (body, replayed) = match outcome {
        HookOutcome::Stored => {
            if changes {
                schedule_runs(&state, ep.ws, ep.keys.clone(), endpoint);
            }
            (answer, false)
        }
        HookOutcome::Repeated(earlier) => (earlier, true),
    };
    let mut resp = (
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// The webhook endpoint `id`, from the cache or the store. Not one: 404.
async fn resolve(state: &AppState, id: EndpointId) -> Result<Arc<HookEndpoint>, ApiError> {
    let hooks = &state.inner.hooks;
    if let Ok(m) = hooks.endpoints.lock()
        && let Some((at, ep)) = m.get(&id)
        && at.elapsed() < ENDPOINT_TTL
    {
        return Ok(ep.clone());
    }
    let store = state.hub().store();
    let ws = store
        .endpoint_workspace(id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(ApiError::not_found)?;
    let keys = state
        .workspace_keys(ws)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let engine = engine_for(state, keys.clone());
    let endpoint = engine
        .endpoints()
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(ApiError::not_found)?;
    let EndpointSpec::Webhook { account, .. } = &endpoint.spec else {
        return Err(ApiError::not_found());
    };
    let unusable = |why: &str| {
        tracing::warn!(endpoint = %id, why, "A webhook endpoint's signing secret is not usable.");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this endpoint's signing secret is not usable; its owner must fix the account",
        )
    };
    let (account_id, credential) = engine
        .open_account(account)
        .await
        .map_err(|_| unusable("the account is missing"))?;
    let secret = match &credential {
        Credential::ApiKey { key } => SigningSecret::parse(key.expose_secret())
            .map_err(|_| unusable("not a signing secret"))?,
        _ => return Err(unusable("the account is not of kind api-key")),
    };
    drop(credential);
    let mapping = endpoint
        .spec
        .json_mapping()
        .map_err(|_| unusable("the field mapping is not valid"))?;
    let mut used = AuditEvent::new(
        Some(ws),
        Actor::system("webhook").unwrap_or_else(|_| Actor::anonymous()),
        sealsync_audit::Action::AccountUsed,
    );
    if let Ok(r) = Resource::new(ResourceKind::Account, &account_id.to_string()) {
        used = used.with_resource(r);
    }
    state.audit(used).await;
    let ep = Arc::new(HookEndpoint {
        ws,
        keys,
        secret,
        mapping,
    });
    if let Ok(mut m) = hooks.endpoints.lock() {
        m.insert(id, (Instant::now(), ep.clone()));
    }
    Ok(ep)
}

/// Runs the endpoint's pull links soon, once for everything that arrives until then.
fn schedule_runs(
    state: &AppState,
    ws: WorkspaceId,
    keys: Arc<WorkspaceKeys>,
    endpoint: EndpointId,
) {
    let fresh = state
        .inner
        .hooks
        .scheduled
        .lock()
        .map(|mut s| s.insert(endpoint))
        .unwrap_or(false);
    if !fresh {
        return;
    }
    let state = state.clone();
    crate::state::background().spawn(async move {
        tokio::time::sleep(RUN_DELAY).await;
        if let Ok(mut s) = state.inner.hooks.scheduled.lock() {
            s.remove(&endpoint);
        }
        let engine = engine_for(&state, keys);
        let defs = match engine.link_defs().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(endpoint = %endpoint, error = %e, "The links of a webhook endpoint could not be read.");
                return;
            }
        };
        // Small batches: each commits quickly, so deliveries waiting to be kept wait little.
        let options = RunOptions {
            batch: 100,
            ..RunOptions::default()
        };
        for def in defs.iter().filter(|d| d.endpoint_id == endpoint) {
            // Another run of the link (from this or another server) may be going on: wait
            // for it, since it may have listed before this delivery was kept.
            for _ in 0..120 {
                match engine.run(def, &options, &|_, _| {}).await {
                    Err(RunError::Busy { .. }) => {
                        tokio::time::sleep(Duration::from_millis(500)).await
                    }
                    Err(e) => {
                        tracing::warn!(link = %def.name, workspace = %ws, error = %e, "A webhook link run failed.");
                        break;
                    }
                    Ok(_) => break,
                }
            }
        }
    });
}
