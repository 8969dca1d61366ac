//! `/v1` operations: endpoints and links (declared like an apply file's tables), runs started
//! and followed, conflicts decided, key status and the audit log. Stored configurations
//! (sealed) and event details are not shown.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealsync_audit::{Action, AuditEntry, ResourceKind, VerifyReport};
use sealsync_auth::Scope;
use sealsync_connector::credential::Credential;
use sealsync_engine::catalog::{EndpointDecl, LinkDecl};
use sealsync_engine::{
    CatalogError, ConflictPolicy, DeleteVsEdit, Deletions, Direction, Engine, RunOptions,
};
use sealsync_store::{RunRow, now_ms};
use sealsync_types::{ConflictId, RunId, WorkspaceId};
use serde::{Deserialize, Serialize};

use crate::auth::{Authed, event_on, require};
use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

pub(crate) fn ws_id(s: &str) -> Result<WorkspaceId, ApiError> {
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

/// The host names a workspace's connections may reach.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressIo {
    /// DNS names (`dav.example.com`) and `*.domain` patterns; `null`: any public host.
    hosts: Option<Vec<String>>,
}

/// `GET /v1/workspaces/{ws}/egress`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/egress", tag = "sync", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = EgressIo), crate::openapi::ApiErrors))]
pub async fn get_egress(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<EgressIo>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsRead).await?;
    Ok(Json(EgressIo {
        hosts: state.hub().store().egress_hosts(ws).await?,
    }))
}

/// `PUT /v1/workspaces/{ws}/egress`: sets the workspace's host allowlist. Endpoints already
/// declared outside it stop opening; new ones are refused.
#[utoipa::path(put, path = "/v1/workspaces/{ws}/egress", tag = "sync", params(("ws" = String, Path, description = "Workspace id")), request_body = EgressIo, responses((status = 200, body = EgressIo), crate::openapi::ApiErrors))]
pub async fn put_egress(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    body: ApiJson<EgressIo>,
) -> Result<Json<EgressIo>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let change = engine
        .set_egress_hosts(body.0.hosts, false)
        .await
        .map_err(catalog_error)?;
    if change.op != "unchanged" {
        state
            .audit(event_on(
                &p,
                ws,
                Action::EndpointChanged,
                src,
                ResourceKind::Workspace,
                &ws.to_string(),
            ))
            .await;
    }
    Ok(Json(EgressIo {
        hosts: engine.egress_hosts().await.map_err(catalog_error)?,
    }))
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

pub(crate) fn engine_for(
    state: &AppState,
    keys: std::sync::Arc<sealsync_crypto::WorkspaceKeys>,
) -> Engine {
    Engine::new(state.hub().clone(), keys, state.options().region.clone())
}

fn catalog_error(e: CatalogError) -> ApiError {
    match e {
        CatalogError::Invalid(m) => ApiError::unprocessable(m),
        CatalogError::NoEndpoint(name) => {
            ApiError::unprocessable(format!("no endpoint named {name:?} in this workspace"))
        }
        CatalogError::NoLink(_) | CatalogError::NoAccount(_) => ApiError::not_found(),
        CatalogError::InUse(_) => {
            ApiError::conflict("a link uses this endpoint; remove the link first")
        }
        CatalogError::Store(e) => e.into(),
    }
}

/// What a `PUT` of an endpoint or link did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeOut {
    /// `create`, `update` or `unchanged`.
    op: String,
    /// `endpoint` or `link`.
    what: String,
    name: String,
    id: String,
}

/// An endpoint as the API takes it. Through the API an endpoint is a folder of `.vcf` files
/// (`vdir`) or one CSV file (`csv`) kept below the server's files folder for the workspace;
/// endpoints that hold database credentials (`sql`) are declared on the server with
/// `sealsync apply`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    /// `vdir`, `csv`, `carddav`, `webhook` or `webhook-out`.
    kind: String,
    /// vdir, csv: a relative path (no `..`), inside the workspace's files folder.
    path: Option<String>,
    /// vdir: the vCard version written, `4.0` (default) or `3.0`; carddav: `3.0` (default) or
    /// `4.0`.
    version: Option<String>,
    /// csv: `google` (default) or `outlook`.
    preset: Option<String>,
    /// carddav: the address book's URL (https, on a public address; a server's root is
    /// discovered); webhook-out: the receiver's URL (https, on a public address).
    url: Option<String>,
    /// carddav: the account that signs in; webhook, webhook-out: the account (kind `api-key`)
    /// holding the shared signing secret.
    account: Option<String>,
    /// webhook: JSON field to target (`"mail": "EMAIL"`); none: the usual field names.
    fields: Option<std::collections::BTreeMap<String, String>>,
    /// webhook: the JSON field with the contact's id in the sending system (default `id`).
    id_field: Option<String>,
}

/// `relative` below `root`, or why not: only plain names, no `..`, no absolute paths.
fn confined(root: &Path, relative: &str) -> Result<PathBuf, ApiError> {
    let p = Path::new(relative);
    let plain = !relative.is_empty()
        && relative.len() <= 255
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(ApiError::unprocessable(
            "path must be relative to the workspace's files folder, without '..'",
        ));
    }
    Ok(root.join(p))
}

/// `PUT /v1/workspaces/{ws}/endpoints/{name}`: creates or changes the endpoint `name`.
#[utoipa::path(put, path = "/v1/workspaces/{ws}/endpoints/{name}", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), ("name" = String, Path, description = "Endpoint name")), request_body = EndpointIn, responses((status = 200, body = ChangeOut), crate::openapi::ApiErrors))]
pub async fn put_endpoint(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    body: ApiJson<EndpointIn>,
) -> Result<Json<ChangeOut>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let body = body.0;
    let files = matches!(body.kind.as_str(), "vdir" | "csv");
    if !files && !matches!(body.kind.as_str(), "carddav" | "webhook" | "webhook-out") {
        return Err(ApiError::unprocessable(
            "kind must be vdir, csv, carddav, webhook or webhook-out; sql endpoints are declared on the server with `sealsync apply`",
        ));
    }
    let root = match &state.options().files_root {
        Some(r) => r.join(ws.to_string()),
        None if files => {
            return Err(ApiError::unprocessable(
                "this server keeps no files for API endpoints (start it with --files-root)",
            ));
        }
        None => PathBuf::new(),
    };
    let path = match (files, &body.path) {
        (true, Some(p)) => Some(confined(&root, p)?),
        (true, None) => return Err(ApiError::unprocessable("path is required")),
        (false, Some(_)) => {
            return Err(ApiError::unprocessable(format!(
                "a {} endpoint takes no path",
                body.kind
            )));
        }
        (false, None) => None,
    };
    // Over the API a CardDAV server or webhook receiver must be public: private and loopback
    // addresses are allowed only in apply files, by the operator (`allow`).
    let decl = EndpointDecl {
        name: name.clone(),
        kind: body.kind,
        path,
        version: body.version,
        preset: body.preset,
        map: None,
        url: body.url.map(secrecy::SecretString::from),
        account: body.account,
        allow: None,
        url_env: None,
        table: None,
        id_column: None,
        etag_column: None,
        columns: None,
        fields: body.fields,
        id_field: body.id_field,
    };
    let spec = decl.to_spec(&root).map_err(catalog_error)?;
    if files {
        create_private_dir(&root).map_err(|e| ApiError::internal(&e))?;
    }
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    if let Some(account) = spec.account() {
        let known = engine.accounts().await.map_err(catalog_error)?;
        if !known.iter().any(|a| a.name == account) {
            return Err(ApiError::unprocessable(format!(
                "no account named {account:?} in this workspace"
            )));
        }
    }
    let change = engine
        .put_endpoint(&name, &spec, false)
        .await
        .map_err(catalog_error)?;
    let id = engine
        .endpoints()
        .await
        .map_err(catalog_error)?
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.id.to_string())
        .unwrap_or_default();
    if change.op != "unchanged" {
        state.inner.hooks.forget();
        state
            .audit(event_on(
                &p,
                ws,
                Action::EndpointChanged,
                src,
                ResourceKind::Endpoint,
                &id,
            ))
            .await;
    }
    Ok(Json(ChangeOut {
        op: change.op.into(),
        what: change.what.into(),
        name,
        id,
    }))
}

/// The folder for a workspace's files, readable by the server's user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// `DELETE /v1/workspaces/{ws}/endpoints/{name}`: removes an endpoint no link uses (its files
/// stay).
#[utoipa::path(delete, path = "/v1/workspaces/{ws}/endpoints/{name}", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), ("name" = String, Path, description = "Endpoint name")), responses((status = 204, description = "Removed"), (status = 409, body = crate::openapi::ErrorEnvelope, description = "A link uses it"), crate::openapi::ApiErrors))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let id = engine
        .endpoints()
        .await
        .map_err(catalog_error)?
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.id)
        .ok_or_else(ApiError::not_found)?;
    engine.remove_endpoint(&name).await.map_err(|e| match e {
        CatalogError::NoEndpoint(_) => ApiError::not_found(),
        e => catalog_error(e),
    })?;
    state.inner.hooks.forget();
    state
        .audit(event_on(
            &p,
            ws,
            Action::EndpointChanged,
            src,
            ResourceKind::Endpoint,
            &id.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A link as the API takes it: the same settings as a `[[link]]` table of an apply file.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkIn {
    /// The endpoint's name.
    endpoint: String,
    /// `pull`, `push` or `both` (default).
    #[schema(value_type = Option<String>)]
    direction: Option<Direction>,
    /// `hub-wins`, `remote-wins`, `newest`, `keep-both` or `manual`.
    #[schema(value_type = Option<String>)]
    conflict: Option<ConflictPolicy>,
    /// What wins when one side deleted and the other edited: `edit` (default) or `delete`.
    #[schema(value_type = Option<String>)]
    delete_vs_edit: Option<DeleteVsEdit>,
    /// Whether deletions travel.
    #[schema(value_type = Option<String>)]
    deletions: Option<Deletions>,
    /// Properties dropped on the way out.
    #[serde(default)]
    drop: Vec<String>,
    /// Properties masked on the way out.
    #[serde(default)]
    mask: Vec<String>,
    /// Property renames.
    #[serde(default)]
    map: BTreeMap<String, String>,
    /// Source priority for single values when merging.
    priority: Option<i32>,
    /// The largest share of the link's contacts one run may delete (0–1, default 0.2).
    max_delete_share: Option<f64>,
}

/// `PUT /v1/workspaces/{ws}/links/{name}`: creates or changes the link `name`.
#[utoipa::path(put, path = "/v1/workspaces/{ws}/links/{name}", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), ("name" = String, Path, description = "Link name")), request_body = LinkIn, responses((status = 200, body = ChangeOut), crate::openapi::ApiErrors))]
pub async fn put_link(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    body: ApiJson<LinkIn>,
) -> Result<Json<ChangeOut>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let b = body.0;
    let decl = LinkDecl {
        name: name.clone(),
        endpoint: b.endpoint,
        direction: b.direction,
        conflict: b.conflict,
        delete_vs_edit: b.delete_vs_edit,
        deletions: b.deletions,
        drop: b.drop,
        mask: b.mask,
        map: b.map,
        priority: b.priority,
        max_delete_share: b.max_delete_share,
    };
    let spec = decl.to_spec().map_err(catalog_error)?;
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let change = engine
        .put_link(&name, &decl.endpoint, &spec, false)
        .await
        .map_err(catalog_error)?;
    let id = link_named(&engine, &name)
        .await?
        .map(|l| l.id.to_string())
        .unwrap_or_default();
    if change.op != "unchanged" {
        state
            .audit(event_on(
                &p,
                ws,
                Action::LinkChanged,
                src,
                ResourceKind::Link,
                &id,
            ))
            .await;
    }
    Ok(Json(ChangeOut {
        op: change.op.into(),
        what: change.what.into(),
        name,
        id,
    }))
}

async fn link_named(
    engine: &Engine,
    name: &str,
) -> Result<Option<sealsync_engine::Link>, ApiError> {
    Ok(engine
        .links()
        .await
        .map_err(catalog_error)?
        .into_iter()
        .find(|l| l.name == name))
}

/// `DELETE /v1/workspaces/{ws}/links/{name}`: removes a link and its sync state (contacts stay
/// in the hub and at the endpoint).
#[utoipa::path(delete, path = "/v1/workspaces/{ws}/links/{name}", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), ("name" = String, Path, description = "Link name")), responses((status = 204, description = "Removed"), crate::openapi::ApiErrors))]
pub async fn delete_link(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let id = link_named(&engine, &name)
        .await?
        .ok_or_else(ApiError::not_found)?
        .id;
    engine.remove_link(&name).await.map_err(catalog_error)?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::LinkChanged,
            src,
            ResourceKind::Link,
            &id.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Which link to run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunIn {
    /// The link's name.
    link: String,
    /// Go on even when the run would delete more than the link allows.
    #[serde(default)]
    allow_mass_delete: bool,
}

/// `POST /v1/workspaces/{ws}/runs`: starts a run of one link and answers at once (202) with
/// the run; its status moves from `queued` to `running` to `ok`, `partial` or `failed`
/// (`interrupted` when the process running it stopped first).
#[utoipa::path(post, path = "/v1/workspaces/{ws}/runs", tag = "sync", params(("ws" = String, Path, description = "Workspace id")), request_body = RunIn, responses((status = 202, body = RunOut, description = "Started; follow it at the Location"), crate::openapi::ApiErrors))]
pub async fn start_run(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws_s): ApiPath<String>,
    body: ApiJson<RunIn>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws_s)?;
    require(&state, &p, ws, Scope::RunsWrite).await?;
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let def = engine
        .link_defs()
        .await
        .map_err(catalog_error)?
        .into_iter()
        .find(|d| d.name == body.0.link)
        .ok_or_else(|| {
            ApiError::unprocessable(format!("no link named {:?} in this workspace", body.0.link))
        })?;
    let row = RunRow {
        id: RunId::new(),
        link: def.id,
        started_at: now_ms(),
        ended_at: None,
        status: "queued".into(),
        counts: "{}".into(),
    };
    state
        .hub()
        .store()
        .queue_run(ws, &row, &sealsync_engine::process_holder())
        .await?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::RunStarted,
            src,
            ResourceKind::Run,
            &row.id.to_string(),
        ))
        .await;
    let options = RunOptions {
        allow_mass_delete: body.0.allow_mass_delete,
        batch: sealsync_engine::DEFAULT_BATCH,
        ..RunOptions::default()
    };
    let (run_id, store) = (row.id, state.hub().store().clone());
    let mut failed = row.clone();
    let audit = state.clone();
    let who = p.clone();
    crate::state::background().spawn(async move {
        let result = engine
            .run_as(&def, &options, &|_, _| {}, Some(run_id))
            .await;
        if let Ok(report) = &result {
            for account in report.accounts_used() {
                audit
                    .audit(event_on(
                        &who,
                        ws,
                        Action::AccountUsed,
                        src,
                        ResourceKind::Account,
                        &account.to_string(),
                    ))
                    .await;
            }
        }
        if let Err(e) = result {
            // The details go to the server's log, which never holds contact fields; the run's
            // record says the kind. The engine records a run that failed once it held the
            // link; one that never got that far (another run holds the link) is still queued.
            tracing::warn!(link = %def.name, run = %run_id, error = %e, "A run started through the API failed.");
            let queued = match store.run(ws, run_id).await {
                Ok(row) => row.is_none_or(|r| r.status == "queued"),
                Err(_) => true,
            };
            if queued {
                failed.status = "failed".into();
                failed.ended_at = Some(now_ms());
                failed.counts = e.summary().to_string();
                if let Err(e) = store.put_run(ws, &failed).await {
                    tracing::error!(run = %run_id, error = %e, "A failed run could not be recorded.");
                }
            }
        }
    });
    let mut resp = (StatusCode::ACCEPTED, Json(run_out(row))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/workspaces/{ws}/runs/{run_id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// A decision on a conflict.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveIn {
    /// `hub` or `remote`: whose version wins on the link's next run.
    take: String,
}

/// `POST /v1/workspaces/{ws}/conflicts/{id}/resolve`: decides a conflict; the link's next run
/// applies it.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/conflicts/{id}/resolve", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Conflict id")), request_body = ResolveIn, responses((status = 204, description = "Decided"), crate::openapi::ApiErrors))]
pub async fn resolve_conflict(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
    body: ApiJson<ResolveIn>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::RunsWrite).await?;
    let id = ConflictId::parse(&id).map_err(|_| ApiError::not_found())?;
    let take = match body.0.take.as_str() {
        "hub" => "hub",
        "remote" => "remote",
        _ => return Err(ApiError::unprocessable("take must be hub or remote")),
    };
    if !state.hub().store().resolve_conflict(ws, id, take).await? {
        return Err(ApiError::not_found());
    }
    state
        .audit(event_on(
            &p,
            ws,
            Action::ConflictResolved,
            src,
            ResourceKind::Conflict,
            &id.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// An account as the API shows it: metadata and a masked hint, never the secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountOut {
    id: String,
    name: String,
    /// `basic`, `api-key`, `oauth-app` or `oauth`.
    kind: String,
    /// The user name's first letter, or an API key's last four characters.
    hint: String,
    created_at: i64,
    rotated_at: Option<i64>,
    /// `revoked` when the app refused the account's grant: its links stop until it is
    /// connected again.
    status: Option<String>,
}

impl From<sealsync_engine::accounts::AccountInfo> for AccountOut {
    fn from(a: sealsync_engine::accounts::AccountInfo) -> Self {
        Self {
            id: a.id.to_string(),
            name: a.name,
            kind: a.kind,
            hint: a.hint,
            created_at: a.created_at,
            rotated_at: a.rotated_at,
            status: a.status,
        }
    }
}

/// `GET /v1/workspaces/{ws}/accounts`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/accounts", tag = "accounts", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = Vec<AccountOut>), crate::openapi::ApiErrors))]
pub async fn list_accounts(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<AccountOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsRead).await?;
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let accounts = engine.accounts().await.map_err(catalog_error)?;
    Ok(Json(accounts.into_iter().map(AccountOut::from).collect()))
}

/// A credential, written once: `basic` takes `username` and `password`, `api-key` takes `key`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    kind: String,
    username: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<secrecy::SecretString>,
    #[schema(value_type = Option<String>, format = Password)]
    key: Option<secrecy::SecretString>,
}

impl std::fmt::Debug for AccountIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountIn")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// `PUT /v1/workspaces/{ws}/accounts/{name}`: creates the account or gives it a new secret. The
/// answer, like every other, shows only metadata.
#[utoipa::path(put, path = "/v1/workspaces/{ws}/accounts/{name}", tag = "accounts", params(("ws" = String, Path, description = "Workspace id"), ("name" = String, Path, description = "Account name")), request_body = AccountIn, responses((status = 200, body = AccountOut), crate::openapi::ApiErrors))]
pub async fn put_account(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    body: ApiJson<AccountIn>,
) -> Result<Json<AccountOut>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let b = body.0;
    let credential = match (b.kind.as_str(), b.username, b.password, b.key) {
        ("basic", Some(username), Some(password), None) => Credential::Basic { username, password },
        ("api-key", None, None, Some(key)) => Credential::ApiKey { key },
        _ => {
            return Err(ApiError::unprocessable(
                "kind basic takes username and password; kind api-key takes key",
            ));
        }
    };
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let (_, id) = engine
        .put_account(&name, &credential)
        .await
        .map_err(catalog_error)?;
    state.inner.hooks.forget();
    state
        .audit(event_on(
            &p,
            ws,
            Action::AccountChanged,
            src,
            ResourceKind::Account,
            &id.to_string(),
        ))
        .await;
    let info = engine
        .accounts()
        .await
        .map_err(catalog_error)?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(info.into()))
}

/// `DELETE /v1/workspaces/{ws}/accounts/{name}`: the account and its secret are gone.
#[utoipa::path(delete, path = "/v1/workspaces/{ws}/accounts/{name}", tag = "accounts", params(("ws" = String, Path, description = "Workspace id"), ("name" = String, Path, description = "Account name")), responses((status = 204, description = "Removed"), crate::openapi::ApiErrors))]
pub async fn delete_account(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let id = engine.remove_account(&name).await.map_err(catalog_error)?;
    state.inner.hooks.forget();
    state
        .audit(event_on(
            &p,
            ws,
            Action::AccountChanged,
            src,
            ResourceKind::Account,
            &id.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
