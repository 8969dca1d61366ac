//! Outgoing webhook deliveries: the loop that sends what is due, and the routes that list them
//! and replay dead ones. Bodies are never shown: a delivery is its id, endpoint, state,
//! attempts, times and what kind of failure it last met.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use sealsync_audit::{Action, Actor, AuditEvent, Resource, ResourceKind};
use sealsync_auth::Scope;
use sealsync_engine::RunError;
use sealsync_engine::outbox::parse_delivery_id;
use sealsync_store::{DeliveryRow, DeliveryState, now_ms};
use sealsync_types::WorkspaceId;
use serde::{Deserialize, Serialize};

use crate::auth::{Authed, event_on, require};
use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath, ApiQuery};
use crate::ops::{engine_for, ws_id};
use crate::state::AppState;

/// How often the loop looks for due deliveries.
pub const DELIVERY_TICK: Duration = Duration::from_secs(2);
/// Delivered deliveries are forgotten after this long (milliseconds).
const KEEP_DELIVERED_MS: i64 = 7 * 24 * 3600 * 1000;

/// Sends due deliveries of every workspace, every [`DELIVERY_TICK`], until the task is dropped.
pub fn spawn_delivery_loop(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(DELIVERY_TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruned_at = 0;
        loop {
            every.tick().await;
            deliver_due(&state).await;
            let now = now_ms();
            if now - pruned_at > 3600 * 1000 {
                pruned_at = now;
                if let Err(e) = state
                    .hub()
                    .store()
                    .prune_delivered(now - KEEP_DELIVERED_MS)
                    .await
                {
                    tracing::warn!(error = %e, "Delivered webhook deliveries could not be pruned.");
                }
            }
        }
    })
}

/// One pass: every endpoint with a delivery due now.
pub async fn deliver_due(state: &AppState) {
    let now = now_ms();
    let due = match state.hub().store().due_delivery_endpoints(now).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "Due webhook deliveries could not be listed.");
            return;
        }
    };
    for (ws, endpoint) in due {
        let keys = match state.workspace_keys(ws).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(workspace = %ws, error = %e, "A workspace's keys could not be opened for its deliveries.");
                continue;
            }
        };
        match engine_for(state, keys).deliver(endpoint, now).await {
            Ok(report) => {
                if let Some(account) = report.account {
                    audit_use(state, ws, &account.to_string()).await;
                }
            }
            Err(RunError::Busy { .. }) => {}
            Err(e) => {
                tracing::warn!(workspace = %ws, endpoint = %endpoint, error = %e, "Webhook deliveries could not be sent.");
            }
        }
    }
}

/// The delivery loop opened an account's secret to sign with.
async fn audit_use(state: &AppState, ws: WorkspaceId, account: &str) {
    let Ok(actor) = Actor::system("deliveries") else {
        return;
    };
    let mut e = AuditEvent::new(Some(ws), actor, Action::AccountUsed);
    if let Ok(r) = Resource::new(ResourceKind::Account, account) {
        e = e.with_resource(r);
    }
    state.audit(e).await;
}

/// One outgoing delivery (its body is never shown).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryOut {
    id: String,
    /// The `webhook-id` the receiver sees.
    webhook_id: String,
    endpoint_id: String,
    /// `pending`, `delivered` or `dead`.
    state: String,
    attempts: i64,
    /// When its 24 hours of retries started (queued or replayed), ms since the epoch.
    created_at: i64,
    /// When it is tried next (pending).
    next_at: i64,
    last_status: Option<i64>,
    last_error: Option<String>,
    updated_at: i64,
}

fn delivery_out(d: DeliveryRow) -> DeliveryOut {
    DeliveryOut {
        webhook_id: sealsync_engine::outbox::webhook_id(&d.id),
        id: hex::encode(&d.id),
        endpoint_id: d.endpoint.to_string(),
        state: d.state.as_str().to_owned(),
        attempts: d.attempts,
        created_at: d.created_at,
        next_at: d.next_at,
        last_status: d.last_status,
        last_error: d.last_error,
        updated_at: d.updated_at,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `dead`; all when absent.
    state: Option<String>,
    /// At most this many (1–1000, default 100).
    limit: Option<u32>,
}

/// `GET /v1/workspaces/{ws}/deliveries`: outgoing webhook deliveries, latest first.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/deliveries", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), DeliveriesQuery), responses((status = 200, body = Vec<DeliveryOut>), crate::openapi::ApiErrors))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Vec<DeliveryOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::RunsRead).await?;
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            DeliveryState::parse(s)
                .ok_or_else(|| ApiError::bad_request("state must be pending, delivered or dead"))?,
        ),
    };
    let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
    let rows = state.hub().store().deliveries(ws, filter, limit).await?;
    Ok(Json(rows.into_iter().map(delivery_out).collect()))
}

/// Which dead deliveries to replay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayIn {
    /// Delivery ids; absent: every dead delivery of the workspace.
    ids: Option<Vec<String>>,
}

/// How many were put back in line.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayOut {
    replayed: u64,
}

/// `POST /v1/workspaces/{ws}/deliveries/replay`: dead deliveries go out again, each with a new
/// 24 hours of retries.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/deliveries/replay", tag = "sync", params(("ws" = String, Path, description = "Workspace id")), request_body = ReplayIn, responses((status = 200, body = ReplayOut), crate::openapi::ApiErrors))]
pub async fn replay_deliveries(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    body: ApiJson<ReplayIn>,
) -> Result<Json<ReplayOut>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::RunsWrite).await?;
    let ids = match &body.0.ids {
        None => None,
        Some(ids) => Some(
            ids.iter()
                .map(|i| {
                    parse_delivery_id(i)
                        .ok_or_else(|| ApiError::bad_request("a delivery id is 64 hex characters"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let replayed = state
        .hub()
        .store()
        .replay_deliveries(ws, ids.as_deref())
        .await?;
    if replayed > 0 {
        state
            .audit(event_on(
                &p,
                ws,
                Action::DeliveriesReplayed,
                src,
                ResourceKind::Workspace,
                &ws.to_string(),
            ))
            .await;
        // Due at once: send now rather than at the next tick.
        let state = state.clone();
        tokio::spawn(async move { deliver_due(&state).await });
    }
    Ok(Json(ReplayOut { replayed }))
}
