//! `/v1` operations views: endpoints, links, runs and their events, conflicts, key status and
//! the audit log. Read-only here; configurations (sealed) and event details are not shown.

use axum::Json;
use axum::extract::State;
use sealsync_audit::{AuditEntry, VerifyReport};
use sealsync_auth::Scope;
use sealsync_types::{RunId, WorkspaceId};
use serde::{Deserialize, Serialize};

use crate::auth::{Authed, require};
use crate::error::ApiError;
use crate::json::{ApiPath, ApiQuery};
use crate::state::AppState;

fn ws_id(s: &str) -> Result<WorkspaceId, ApiError> {
    WorkspaceId::parse(s).map_err(|_| ApiError::not_found())
}

/// An endpoint: its configuration stays sealed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointOut {
    id: String,
    name: String,
    kind: String,
    created_at: i64,
}

/// `GET /v1/workspaces/{ws}/endpoints`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/endpoints", tag = "sync", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = Vec<EndpointOut>), crate::openapi::ApiErrors))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<EndpointOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsRead).await?;
    let rows = state.hub().store().endpoints(ws).await?;
    Ok(Json(
        rows.into_iter()
            .map(|e| EndpointOut {
                id: e.id.to_string(),
                name: e.name,
                kind: e.kind,
                created_at: e.created_at,
            })
            .collect(),
    ))
}

/// A link between an endpoint and the hub.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkOut {
    id: String,
    name: String,
    endpoint_id: String,
    created_at: i64,
}

/// `GET /v1/workspaces/{ws}/links`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/links", tag = "sync", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = Vec<LinkOut>), crate::openapi::ApiErrors))]
pub async fn list_links(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<LinkOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsRead).await?;
    let rows = state.hub().store().links(ws).await?;
    Ok(Json(
        rows.into_iter()
            .map(|l| LinkOut {
                id: l.id.to_string(),
                name: l.name,
                endpoint_id: l.endpoint.to_string(),
                created_at: l.created_at,
            })
            .collect(),
    ))
}

/// A run of a link, with its counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunOut {
    id: String,
    link_id: String,
    started_at: i64,
    ended_at: Option<i64>,
    status: String,
    /// created, updated, deleted, unchanged, conflicts, rejected, …
    counts: serde_json::Value,
}

fn run_out(r: sealsync_store::RunRow) -> RunOut {
    RunOut {
        id: r.id.to_string(),
        link_id: r.link.to_string(),
        started_at: r.started_at,
        ended_at: r.ended_at,
        status: r.status,
        counts: serde_json::from_str(&r.counts).unwrap_or(serde_json::Value::Null),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// At most this many (1–1000, default 100).
    limit: Option<u32>,
}

/// `GET /v1/workspaces/{ws}/runs`: newest first.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/runs", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), LimitQuery), responses((status = 200, body = Vec<RunOut>), crate::openapi::ApiErrors))]
pub async fn list_runs(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<RunOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::RunsRead).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.hub().store().runs(ws, limit).await?;
    Ok(Json(rows.into_iter().map(run_out).collect()))
}

async fn run_in(
    state: &AppState,
    ws: WorkspaceId,
    id: &str,
) -> Result<sealsync_store::RunRow, ApiError> {
    let id = RunId::parse(id).map_err(|_| ApiError::not_found())?;
    state
        .hub()
        .store()
        .run(ws, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// `GET /v1/workspaces/{ws}/runs/{id}`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/runs/{id}", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Run id")), responses((status = 200, body = RunOut), crate::openapi::ApiErrors))]
pub async fn get_run(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<Json<RunOut>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::RunsRead).await?;
    Ok(Json(run_out(run_in(&state, ws, &id).await?)))
}

/// One event of a run: the action and the contact it touched (details stay sealed).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventOut {
    seq: i64,
    action: String,
    contact_id: Option<String>,
    at: i64,
}

/// `GET /v1/workspaces/{ws}/runs/{id}/events`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/runs/{id}/events", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Run id")), responses((status = 200, body = Vec<EventOut>), crate::openapi::ApiErrors))]
pub async fn run_events(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<Json<Vec<EventOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::RunsRead).await?;
    let run = run_in(&state, ws, &id).await?;
    let events = state.hub().store().run_events(ws, run.id).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| EventOut {
                seq: e.seq,
                action: e.action,
                contact_id: e.contact.map(|c| c.to_string()),
                at: e.at,
            })
            .collect(),
    ))
}

/// A conflict waiting for (or given) a decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConflictOut {
    id: String,
    link_id: String,
    contact_id: String,
    /// `both-changed`, `deleted-remotely` or `deleted-in-hub`.
    kind: String,
    /// `hub` or `remote` once decided.
    resolution: Option<String>,
    created_at: i64,
}

/// `GET /v1/workspaces/{ws}/conflicts`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/conflicts", tag = "sync", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = Vec<ConflictOut>), crate::openapi::ApiErrors))]
pub async fn list_conflicts(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<ConflictOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::RunsRead).await?;
    let rows = state.hub().store().conflicts(ws).await?;
    Ok(Json(
        rows.into_iter()
            .map(|c| ConflictOut {
                id: c.id.to_string(),
                link_id: c.link.to_string(),
                contact_id: c.contact.to_string(),
                kind: c.kind,
                resolution: c.resolution,
                created_at: c.created_at,
            })
            .collect(),
    ))
}

/// Data-key versions and the records sealed under each.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeysOut {
    /// The version new writes use.
    current: u32,
    versions: Vec<KeyVersionOut>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyVersionOut {
    version: u32,
    records: i64,
}

/// `GET /v1/workspaces/{ws}/keys`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/keys", tag = "keys", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = KeysOut), crate::openapi::ApiErrors))]
pub async fn keys_status(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<KeysOut>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::KeysRead).await?;
    let keys = state.workspace_keys(ws).await?;
    let counts = state.hub().store().contacts_per_key_version(ws).await?;
    let versions = keys
        .versions()
        .map(|v| KeyVersionOut {
            version: v,
            records: counts.iter().find(|c| c.0 == v).map(|c| c.1).unwrap_or(0),
        })
        .collect();
    Ok(Json(KeysOut {
        current: keys.current_version(),
        versions,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this sequence number.
    after: Option<u64>,
    /// At most this many (1–1000, default 100).
    limit: Option<u32>,
}

/// An audit entry as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditOut {
    seq: u64,
    at_ms: i64,
    /// Who, what, which resource, from where, with which outcome.
    event: serde_json::Value,
}

fn audit_out(e: AuditEntry) -> AuditOut {
    AuditOut {
        seq: e.seq,
        at_ms: e.at_ms,
        event: serde_json::to_value(&e.event).unwrap_or(serde_json::Value::Null),
    }
}

/// `GET /v1/workspaces/{ws}/audit`: the workspace's audit chain, oldest first, by page.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/audit", tag = "audit", params(("ws" = String, Path, description = "Workspace id"), AuditQuery), responses((status = 200, body = Vec<AuditOut>), crate::openapi::ApiErrors))]
pub async fn audit_page(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::AuditRead).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state
        .inner
        .audit
        .page(ws, q.after, limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(entries.into_iter().map(audit_out).collect()))
}

/// The result of checking a chain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyOut {
    ok: bool,
    entries_checked: u64,
    /// Each problem in plain words: which entry, and what is wrong with it.
    problems: Vec<String>,
}

/// `GET /v1/workspaces/{ws}/audit/verify`: checks the workspace's chain.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/audit/verify", tag = "audit", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = VerifyOut), crate::openapi::ApiErrors))]
pub async fn audit_verify(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<VerifyOut>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::AuditRead).await?;
    let report: VerifyReport = state
        .inner
        .audit
        .verify(ws)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(VerifyOut {
        ok: report.is_ok(),
        entries_checked: report.entries_checked,
        problems: report.problems.iter().map(ToString::to_string).collect(),
    }))
}
