//! `/v1`: workspaces, members, API keys, OAuth clients and contacts.
//!
//! Every handler starts with [`require`] for its route's scope (the table in
//! [`crate::routes::ROUTES`]); a workspace the caller cannot see is a 404, as is any id that
//! is not in the workspace named by the path.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealsync_audit::{Action, ResourceKind};
use sealsync_auth::directory::{self, DirectoryError};
use sealsync_auth::jwt::now_secs;
use sealsync_auth::{ClientId, Scope, ScopeSet};
use sealsync_contact::jcard::{from_jcard, to_jcard};
use sealsync_contact::normalize::normalize_uid;
use sealsync_contact::vcard::read_all;
use sealsync_contact::{Contact, Email};
use sealsync_crypto::IndexKind;
use sealsync_store::Hub;
use sealsync_types::{ContactId, Role, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};

use crate::auth::{Authed, event, event_on, require, user_of};
use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

fn ws_id(s: &str) -> Result<WorkspaceId, ApiError> {
    WorkspaceId::parse(s).map_err(|_| ApiError::not_found())
}

fn dir_err(e: DirectoryError) -> ApiError {
    match e {
        DirectoryError::UserExists => ApiError::conflict("a user with that email already exists"),
        DirectoryError::BadEmail => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
            "not a valid email address",
        ),
        DirectoryError::BadScopes(m) | DirectoryError::ScopeNotAllowed(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_scope", m)
        }
        DirectoryError::BadName(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name", m)
        }
        DirectoryError::NotFound(_) | DirectoryError::BadClient => ApiError::not_found(),
        DirectoryError::Crypto => ApiError::internal(&"secret generation or hashing failed"),
        DirectoryError::Store(e) => e.into(),
    }
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

// ---- workspaces and members -------------------------------------------------------------------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkspaceOut {
    id: String,
    name: String,
    #[schema(value_type = Option<String>, example = "admin")]
    role: Option<Role>,
}

/// `GET /v1/workspaces`: the workspaces the caller can see.
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces", responses((status = 200, body = Vec<WorkspaceOut>), crate::openapi::ApiErrors))]
pub async fn list_workspaces(
    State(state): State<AppState>,
    Authed(p, _): Authed,
) -> Result<Json<Vec<WorkspaceOut>>, ApiError> {
    let store = state.hub().store();
    // Only the workspaces the caller belongs to are candidates (not a denial per workspace of
    // the installation, which would fill the audit log).
    let memberships = match user_of(&p) {
        Some(u) => store.memberships_of(u).await?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for ws in store.workspaces().await? {
        if p.workspace.is_some_and(|w| w != ws.id) {
            continue;
        }
        let role = memberships.iter().find(|m| m.0 == ws.id).map(|m| m.1);
        if sealsync_auth::authorize(&p, ws.id, role, Scope::WorkspacesRead).is_err() {
            continue;
        }
        out.push(WorkspaceOut {
            id: ws.id.to_string(),
            name: ws.name.to_string(),
            role,
        });
    }
    Ok(Json(out))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberOut {
    user_id: String,
    email: String,
    #[schema(value_type = String, example = "member")]
    role: Role,
}

/// `GET /v1/workspaces/{ws}/members`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/members", tag = "members", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = Vec<MemberOut>), crate::openapi::ApiErrors))]
pub async fn list_members(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<MemberOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::MembersRead).await?;
    let members = state.hub().store().members(ws).await?;
    Ok(Json(
        members
            .into_iter()
            .map(|(u, role, email)| MemberOut {
                user_id: u.to_string(),
                email,
                role,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RoleIn {
    /// owner, admin, member or viewer.
    #[schema(value_type = String, example = "member")]
    role: Role,
}

/// `PUT /v1/workspaces/{ws}/members/{user}`: add a member or change a role. Only an owner
/// grants or takes away `owner`; the last owner cannot be demoted.
#[utoipa::path(put, path = "/v1/workspaces/{ws}/members/{user}", tag = "members", params(("ws" = String, Path, description = "Workspace id"), ("user" = String, Path, description = "User id")), request_body = RoleIn, responses((status = 204, description = "Role set"), (status = 409, body = crate::openapi::ErrorEnvelope), crate::openapi::ApiErrors))]
pub async fn put_member(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, user)): ApiPath<(String, String)>,
    body: ApiJson<RoleIn>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    let my_role = require(&state, &p, ws, Scope::MembersWrite).await?;
    let user = UserId::parse(&user).map_err(|_| ApiError::not_found())?;
    let store = state.hub().store();
    if store.user_by_id(user).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let current = store.member_role(ws, user).await?;
    let touches_owner = body.0.role == Role::Owner || current == Some(Role::Owner);
    if touches_owner && my_role != Some(Role::Owner) {
        return Err(ApiError::forbidden());
    }
    if current == Some(Role::Owner) && body.0.role != Role::Owner {
        let owners = store
            .members(ws)
            .await?
            .iter()
            .filter(|m| m.1 == Role::Owner)
            .count();
        if owners <= 1 {
            return Err(ApiError::conflict("a workspace keeps at least one owner"));
        }
    }
    store.put_member(ws, user, body.0.role, now_secs()).await?;
    state.forget_credentials();
    let action = if current.is_some() {
        Action::RoleChanged
    } else {
        Action::MemberAdded
    };
    state
        .audit(event_on(
            &p,
            ws,
            action,
            src,
            ResourceKind::Member,
            &user.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- API keys ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyIn {
    name: String,
    scopes: Vec<String>,
    /// Lifetime in days; none for a key that does not expire.
    expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyOut {
    id: String,
    name: String,
    scopes: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked: bool,
    /// Only in the answer that creates the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

fn key_out(r: sealsync_store::ApiKeyRow, key: Option<String>) -> ApiKeyOut {
    ApiKeyOut {
        id: sealsync_auth::KeyId::from_bytes(r.id).to_string(),
        name: r.name,
        scopes: r.scopes,
        created_at: r.created_at,
        expires_at: r.expires_at,
        last_used_at: r.last_used_at,
        revoked: r.revoked_at.is_some(),
        key,
    }
}

fn acting_user(p: &sealsync_auth::Principal) -> Result<UserId, ApiError> {
    user_of(p).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only users hold API keys",
        )
    })
}

/// `POST /v1/workspaces/{ws}/apikeys`: a key for the caller, shown once.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/apikeys", tag = "apikeys", params(("ws" = String, Path, description = "Workspace id")), request_body = ApiKeyIn, responses((status = 201, body = ApiKeyOut, description = "The key, shown this once"), crate::openapi::ApiErrors))]
pub async fn create_api_key(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    body: ApiJson<ApiKeyIn>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws)?;
    let role = require(&state, &p, ws, Scope::ApiKeysWrite).await?;
    let user = acting_user(&p)?;
    let scopes = ScopeSet::parse(&body.0.scopes.join(" "))
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_scope", m))?;
    // A key never exceeds its maker: not its role, not the scopes of the key used to make it.
    if let Some(s) = scopes.iter().find(|s| !p.scopes.contains(*s)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_scope",
            format!("scope {s} is not held by the credential making the key"),
        ));
    }
    directory::check_key_scopes(&scopes, role.unwrap_or(Role::Viewer)).map_err(dir_err)?;
    let expires_at = body
        .0
        .expires_in_days
        .map(|d| now_secs() + i64::from(d.clamp(1, 3650)) * 86_400);
    let (row, secret) =
        directory::create_api_key(state.hub(), ws, user, &body.0.name, &scopes, expires_at)
            .await
            .map_err(dir_err)?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::ApiKeyCreated,
            src,
            ResourceKind::ApiKey,
            &secret.id.to_string(),
        ))
        .await;
    let key = secrecy::ExposeSecret::expose_secret(&secret.token).to_owned();
    Ok(no_store(
        (StatusCode::CREATED, Json(key_out(row, Some(key)))).into_response(),
    ))
}

/// `GET /v1/workspaces/{ws}/apikeys`: the caller's keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/workspaces/{ws}/apikeys", tag = "apikeys", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = Vec<ApiKeyOut>), crate::openapi::ApiErrors))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<ApiKeyOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::WorkspacesRead).await?;
    let user = acting_user(&p)?;
    let rows = state.hub().store().api_keys_of(ws, user).await?;
    Ok(Json(rows.into_iter().map(|r| key_out(r, None)).collect()))
}

/// `DELETE /v1/workspaces/{ws}/apikeys/{id}`: revoke one of the caller's keys.
#[utoipa::path(delete, path = "/v1/workspaces/{ws}/apikeys/{id}", tag = "apikeys", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "API key id")), responses((status = 204, description = "Revoked"), crate::openapi::ApiErrors))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ApiKeysWrite).await?;
    let user = acting_user(&p)?;
    let id = directory::parse_key_id(&id).map_err(dir_err)?;
    let store = state.hub().store();
    match store.api_key(id.as_bytes()).await? {
        Some(k) if k.workspace_id == ws && k.user_id == user => {}
        _ => return Err(ApiError::not_found()),
    }
    store
        .revoke_api_key(user, id.as_bytes(), now_secs())
        .await?;
    state.forget_credentials();
    state
        .audit(event_on(
            &p,
            ws,
            Action::ApiKeyRevoked,
            src,
            ResourceKind::ApiKey,
            &id.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- OAuth clients ----------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ClientIn {
    name: String,
    scopes: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientOut {
    client_id: String,
    name: String,
    scopes: String,
    created_at: i64,
    secret_rotated_at: i64,
    revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

fn client_out(ws: WorkspaceId, r: sealsync_store::ClientRow, secret: Option<String>) -> ClientOut {
    ClientOut {
        client_id: ClientId {
            workspace: ws,
            id: r.id,
        }
        .to_string(),
        name: r.name,
        scopes: r.scopes,
        created_at: r.created_at,
        secret_rotated_at: r.secret_rotated_at,
        revoked: r.revoked_at.is_some(),
        client_secret: secret,
    }
}

fn client_in_ws(ws: WorkspaceId, id: &str) -> Result<ClientId, ApiError> {
    let c = ClientId::parse(id).map_err(|_| ApiError::not_found())?;
    if c.workspace != ws {
        return Err(ApiError::not_found());
    }
    Ok(c)
}

/// `POST /v1/workspaces/{ws}/clients`: a client; its secret is shown once.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/clients", tag = "clients", params(("ws" = String, Path, description = "Workspace id")), request_body = ClientIn, responses((status = 201, body = ClientOut, description = "The client and its secret, shown this once"), crate::openapi::ApiErrors))]
pub async fn create_client(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    body: ApiJson<ClientIn>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ClientsWrite).await?;
    let scopes = ScopeSet::parse(&body.0.scopes.join(" "))
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_scope", m))?;
    let keys = state.workspace_keys(ws).await?;
    let (row, creds) = directory::create_client(state.hub(), &keys, &body.0.name, &scopes)
        .await
        .map_err(dir_err)?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::ClientCreated,
            src,
            ResourceKind::Client,
            &creds.client_id.to_string(),
        ))
        .await;
    let secret = secrecy::ExposeSecret::expose_secret(&creds.secret).to_owned();
    Ok(no_store(
        (StatusCode::CREATED, Json(client_out(ws, row, Some(secret)))).into_response(),
    ))
}

/// `GET /v1/workspaces/{ws}/clients`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/clients", tag = "clients", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, body = Vec<ClientOut>), crate::openapi::ApiErrors))]
pub async fn list_clients(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Vec<ClientOut>>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ClientsRead).await?;
    let rows = state.hub().store().clients(ws).await?;
    Ok(Json(
        rows.into_iter().map(|r| client_out(ws, r, None)).collect(),
    ))
}

/// `DELETE /v1/workspaces/{ws}/clients/{client_id}`: revoke the client and its tokens.
#[utoipa::path(delete, path = "/v1/workspaces/{ws}/clients/{id}", tag = "clients", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Client id (ssc_…)")), responses((status = 204, description = "Revoked with its tokens"), crate::openapi::ApiErrors))]
pub async fn revoke_client(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ClientsWrite).await?;
    let c = client_in_ws(ws, &id)?;
    if !state
        .hub()
        .store()
        .revoke_client(ws, &c.id, now_secs())
        .await?
    {
        return Err(ApiError::not_found());
    }
    state.forget_credentials();
    state
        .audit(event_on(
            &p,
            ws,
            Action::ClientRevoked,
            src,
            ResourceKind::Client,
            &c.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/workspaces/{ws}/clients/{client_id}/secret`: a new secret, shown once.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/clients/{id}/secret", tag = "clients", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Client id (ssc_…)")), responses((status = 200, body = SecretOut, description = "The new secret, shown this once"), crate::openapi::ApiErrors))]
pub async fn rotate_client_secret(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ClientsWrite).await?;
    let c = client_in_ws(ws, &id)?;
    let keys = state.workspace_keys(ws).await?;
    let secret = directory::rotate_client_secret(state.hub(), &keys, &c)
        .await
        .map_err(dir_err)?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::ClientSecretRotated,
            src,
            ResourceKind::Client,
            &c.to_string(),
        ))
        .await;
    Ok(no_store(
        Json(SecretOut {
            client_id: c.to_string(),
            client_secret: secrecy::ExposeSecret::expose_secret(&secret).to_owned(),
        })
        .into_response(),
    ))
}

// ---- contacts ---------------------------------------------------------------------------------

/// A contact as the API shows it: jCard (RFC 7095) plus its id and version (the ETag).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactOut {
    id: String,
    version: i64,
    updated_at: i64,
    jcard: serde_json::Value,
}

/// A contact as sent: jCard, or vCard text.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ContactIn {
    jcard: Option<serde_json::Value>,
    vcard: Option<String>,
}

fn parse_contact(body: ContactIn) -> Result<Contact, ApiError> {
    let invalid = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_contact", m);
    match (body.jcard, body.vcard) {
        (Some(j), None) => from_jcard(&j).map_err(|_| invalid("the jcard is not a valid jCard")),
        (None, Some(v)) => {
            let (mut cards, rejected) = read_all(v.as_bytes());
            if !rejected.is_empty() || cards.len() != 1 {
                return Err(invalid("the vcard must hold exactly one valid vCard"));
            }
            Ok(cards.remove(0).contact)
        }
        _ => Err(invalid("send exactly one of jcard or vcard")),
    }
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn contact_response(
    status: StatusCode,
    id: ContactId,
    version: i64,
    at: i64,
    c: &Contact,
) -> Response {
    let mut resp = (
        status,
        Json(ContactOut {
            id: id.to_string(),
            version,
            updated_at: at,
            jcard: to_jcard(c),
        }),
    )
        .into_response();
    resp.headers_mut().insert(header::ETAG, etag(version));
    no_store(resp)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    after: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactPage {
    contacts: Vec<ContactOut>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<String>,
}

/// `GET /v1/workspaces/{ws}/contacts?after=&limit=`: a page of contacts in id order.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/contacts", tag = "contacts", params(("ws" = String, Path, description = "Workspace id"), PageQuery), responses((status = 200, body = ContactPage), crate::openapi::ApiErrors))]
pub async fn list_contacts(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<ContactPage>, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ContactsRead).await?;
    let after = match q.after.as_deref() {
        Some(a) => Some(
            ContactId::parse(a).map_err(|_| ApiError::bad_request("after is not a contact id"))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let keys = state.workspace_keys(ws).await?;
    let rows = state.hub().store().contacts_page(ws, after, limit).await?;
    let full = rows.len() == limit as usize;
    let next = if full {
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let mut unreadable = 0;
    let contacts: Vec<ContactOut> = rows
        .iter()
        .filter_map(|r| match Hub::open_row(&keys, r) {
            Ok(c) => c.map(|c| ContactOut {
                id: r.id.to_string(),
                version: r.version,
                updated_at: r.updated_at,
                jcard: to_jcard(&c),
            }),
            Err(_) => {
                unreadable += 1;
                None
            }
        })
        .collect();
    if unreadable > 0 {
        tracing::warn!(
            count = unreadable,
            "Some contacts could not be opened for a listing."
        );
    }
    state
        .audit(event(&p, ws, Action::ContactsExported, src))
        .await;
    Ok(Json(ContactPage { contacts, next }))
}

async fn load_contact(
    state: &AppState,
    ws: WorkspaceId,
    id: ContactId,
) -> Result<(sealsync_store::ContactRow, Contact), ApiError> {
    let keys = state.workspace_keys(ws).await?;
    let row = state
        .hub()
        .store()
        .contacts_by_id(ws, &[id])
        .await?
        .into_iter()
        .next()
        .filter(|r| r.body.is_some())
        .ok_or_else(ApiError::not_found)?;
    let c = Hub::open_row(&keys, &row)
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "integrity",
                "the stored contact failed its integrity check",
            )
        })?
        .ok_or_else(ApiError::not_found)?;
    Ok((row, c))
}

fn contact_id(s: &str) -> Result<ContactId, ApiError> {
    ContactId::parse(s).map_err(|_| ApiError::not_found())
}

/// `GET /v1/workspaces/{ws}/contacts/{id}`.
#[utoipa::path(get, path = "/v1/workspaces/{ws}/contacts/{id}", tag = "contacts", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Contact id")), responses((status = 200, body = ContactOut, headers(("etag" = String, description = "The contact version, for If-Match"))), (status = 500, body = crate::openapi::ErrorEnvelope, description = "The stored contact failed its integrity check"), crate::openapi::ApiErrors))]
pub async fn get_contact(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ContactsRead).await?;
    let id = contact_id(&id)?;
    let (row, c) = load_contact(&state, ws, id).await?;
    Ok(contact_response(
        StatusCode::OK,
        id,
        row.version,
        row.updated_at,
        &c,
    ))
}

/// Seals and writes a contact at `version`; an update (`expected` = the version it replaces)
/// only succeeds if nobody changed the contact in between.
async fn write_contact(
    state: &AppState,
    ws: WorkspaceId,
    id: ContactId,
    version: i64,
    expected: Option<i64>,
    contact: Contact,
) -> Result<(i64, Contact), ApiError> {
    let keys = state.workspace_keys(ws).await?;
    let prepared = Hub::prepare(&keys, contact, state.options().region.as_deref());
    let at = now_secs();
    let row = Hub::seal_row(&keys, id, version, &prepared, at)?;
    let store = state.hub().store();
    match expected {
        None => store.write_contacts(ws, &[row]).await?,
        Some(v) => {
            if !store.write_contact_if_version(ws, &row, v).await? {
                return Err(ApiError::precondition_failed());
            }
        }
    }
    Ok((at, prepared.contact))
}

/// `POST /v1/workspaces/{ws}/contacts`.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/contacts", tag = "contacts", params(("ws" = String, Path, description = "Workspace id")), request_body = ContactIn, responses((status = 201, body = ContactOut), crate::openapi::ApiErrors))]
pub async fn create_contact(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    body: ApiJson<ContactIn>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ContactsWrite).await?;
    let contact = parse_contact(body.0)?;
    let id = ContactId::new();
    let (at, c) = write_contact(&state, ws, id, 1, None, contact).await?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::ContactCreated,
            src,
            ResourceKind::Contact,
            &id.to_string(),
        ))
        .await;
    Ok(contact_response(StatusCode::CREATED, id, 1, at, &c))
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| ApiError::bad_request("If-Match is not valid"))?;
    if s.trim() == "*" {
        return Ok(None);
    }
    s.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| ApiError::precondition_failed())
}

/// `PUT /v1/workspaces/{ws}/contacts/{id}`: replace a contact. `If-Match` with the ETag is
/// required, so no update is based on a version the caller did not see.
#[utoipa::path(put, path = "/v1/workspaces/{ws}/contacts/{id}", tag = "contacts", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Contact id"), ("If-Match" = String, Header, description = "The ETag the update is based on")), request_body = ContactIn, responses((status = 200, body = ContactOut), (status = 412, body = crate::openapi::ErrorEnvelope, description = "Changed since that version"), (status = 428, body = crate::openapi::ErrorEnvelope, description = "If-Match missing"), (status = 500, body = crate::openapi::ErrorEnvelope, description = "The stored contact failed its integrity check"), crate::openapi::ApiErrors))]
pub async fn update_contact(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: ApiJson<ContactIn>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ContactsWrite).await?;
    let id = contact_id(&id)?;
    let expected = if_match(&headers)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "send If-Match with the contact's ETag",
        )
    })?;
    let contact = parse_contact(body.0)?;
    let (row, _) = load_contact(&state, ws, id).await?;
    if row.version != expected {
        return Err(ApiError::precondition_failed());
    }
    let version = row.version + 1;
    let (at, c) = write_contact(&state, ws, id, version, Some(row.version), contact).await?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::ContactUpdated,
            src,
            ResourceKind::Contact,
            &id.to_string(),
        ))
        .await;
    Ok(contact_response(StatusCode::OK, id, version, at, &c))
}

/// `DELETE /v1/workspaces/{ws}/contacts/{id}` (`If-Match` optional).
#[utoipa::path(delete, path = "/v1/workspaces/{ws}/contacts/{id}", tag = "contacts", params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Contact id")), responses((status = 204, description = "Deleted"), (status = 412, body = crate::openapi::ErrorEnvelope), crate::openapi::ApiErrors))]
pub async fn delete_contact(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ContactsWrite).await?;
    let id = contact_id(&id)?;
    let row = state
        .hub()
        .store()
        .contacts_by_id(ws, &[id])
        .await?
        .into_iter()
        .next()
        .filter(|r| r.body.is_some())
        .ok_or_else(ApiError::not_found)?;
    if let Some(expected) = if_match(&headers)?
        && expected != row.version
    {
        return Err(ApiError::precondition_failed());
    }
    let tomb = Hub::tombstone(id, row.version + 1, now_secs());
    state.hub().store().write_contacts(ws, &[tomb]).await?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::ContactDeleted,
            src,
            ResourceKind::Contact,
            &id.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FindIn {
    email: Option<String>,
    uid: Option<String>,
}

/// `POST /v1/workspaces/{ws}/contacts/find`: look up by email or UID through the blind index.
/// A POST, so the address never appears in a URL or an access log.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/contacts/find", tag = "contacts", params(("ws" = String, Path, description = "Workspace id")), request_body = FindIn, responses((status = 200, body = FoundContacts), crate::openapi::ApiErrors))]
pub async fn find_contacts(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    body: ApiJson<FindIn>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::ContactsRead).await?;
    let (kind, value) = match (body.0.email, body.0.uid) {
        (Some(e), None) => (
            IndexKind::Email,
            Email::parse(&e)
                .map(|e| e.as_str().to_owned())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_email",
                        "not a valid email address",
                    )
                })?,
        ),
        (None, Some(u)) => (
            IndexKind::Uid,
            normalize_uid(&u).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_uid",
                    "not a valid UID",
                )
            })?,
        ),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "send exactly one of email or uid",
            ));
        }
    };
    let keys = state.workspace_keys(ws).await?;
    let found = state.hub().find(&keys, kind, &value).await?;
    let ids: Vec<ContactId> = found.iter().map(|(id, _)| *id).collect();
    let rows = state.hub().store().contacts_by_id(ws, &ids).await?;
    let contacts: Vec<ContactOut> = found
        .into_iter()
        .filter_map(|(id, c)| {
            rows.iter().find(|r| r.id == id).map(|r| ContactOut {
                id: id.to_string(),
                version: r.version,
                updated_at: r.updated_at,
                jcard: to_jcard(&c),
            })
        })
        .collect();
    state.audit(event(&p, ws, Action::ContactRead, src)).await;
    Ok(no_store(Json(FoundContacts { contacts }).into_response()))
}

/// A new client secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretOut {
    client_id: String,
    client_secret: String,
}

/// Contacts found through the blind index.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FoundContacts {
    contacts: Vec<ContactOut>,
}

/// `DELETE /v1/workspaces/{ws}/members/{user}`: remove a member. Only an owner removes an
/// owner; the last owner stays.
#[utoipa::path(delete, path = "/v1/workspaces/{ws}/members/{user}", tag = "members", params(("ws" = String, Path, description = "Workspace id"), ("user" = String, Path, description = "User id")), responses((status = 204, description = "Removed"), (status = 409, body = crate::openapi::ErrorEnvelope), crate::openapi::ApiErrors))]
pub async fn remove_member(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath((ws, user)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    let my_role = require(&state, &p, ws, Scope::MembersWrite).await?;
    let user = UserId::parse(&user).map_err(|_| ApiError::not_found())?;
    let store = state.hub().store();
    let current = store
        .member_role(ws, user)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if current == Role::Owner {
        if my_role != Some(Role::Owner) {
            return Err(ApiError::forbidden());
        }
        let owners = store
            .members(ws)
            .await?
            .iter()
            .filter(|m| m.1 == Role::Owner)
            .count();
        if owners <= 1 {
            return Err(ApiError::conflict("a workspace keeps at least one owner"));
        }
    }
    store.remove_member(ws, user).await?;
    state.forget_credentials();
    state
        .audit(event_on(
            &p,
            ws,
            Action::MemberRemoved,
            src,
            ResourceKind::Member,
            &user.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// An invitation to make.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InviteIn {
    email: String,
    /// owner, admin, member or viewer.
    #[schema(value_type = String, example = "member")]
    role: Role,
}

/// A new invitation: send the token to the person; it is shown only now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InviteOut {
    invite_token: String,
    expires_at: i64,
}

/// `POST /v1/workspaces/{ws}/invites`: invite someone by email with a role (only an owner
/// invites an owner).
#[utoipa::path(post, path = "/v1/workspaces/{ws}/invites", tag = "members", params(("ws" = String, Path, description = "Workspace id")), request_body = InviteIn, responses((status = 201, body = InviteOut), crate::openapi::ApiErrors))]
pub async fn create_invite(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    body: ApiJson<InviteIn>,
) -> Result<Response, ApiError> {
    let ws = ws_id(&ws)?;
    let my_role = require(&state, &p, ws, Scope::MembersWrite).await?;
    if body.0.role == Role::Owner && my_role != Some(Role::Owner) {
        return Err(ApiError::forbidden());
    }
    let (token, expires_at) = directory::create_invite(state.hub(), ws, &body.0.email, body.0.role)
        .await
        .map_err(dir_err)?;
    state.audit(event(&p, ws, Action::InviteCreated, src)).await;
    Ok(no_store(
        (
            StatusCode::CREATED,
            Json(InviteOut {
                invite_token: secrecy::ExposeSecret::expose_secret(&token).to_owned(),
                expires_at,
            }),
        )
            .into_response(),
    ))
}

/// A workspace to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceIn {
    /// A slug: lower-case letters, digits, `-` and `_`.
    name: String,
}

/// `POST /v1/workspaces`: a signed-in user creates a workspace and becomes its owner.
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = WorkspaceIn, responses((status = 201, body = WorkspaceOut), (status = 409, body = crate::openapi::ErrorEnvelope), crate::openapi::ApiErrors))]
pub async fn create_workspace(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    body: ApiJson<WorkspaceIn>,
) -> Result<Response, ApiError> {
    if p.kind != sealsync_auth::PrincipalKind::Session {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "workspaces are created by a signed-in user",
        ));
    }
    let user = acting_user(&p)?;
    let name = sealsync_types::WorkspaceName::parse(&body.0.name).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "a workspace name is 1 to 63 lower-case letters, digits, - or _",
        )
    })?;
    if state
        .hub()
        .store()
        .workspace_by_name(&name)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict("a workspace with that name exists"));
    }
    let (ws, created) = state.hub().ensure_workspace(&name).await?;
    if !created {
        return Err(ApiError::conflict("a workspace with that name exists"));
    }
    state
        .hub()
        .store()
        .put_member(ws.id, user, Role::Owner, now_secs())
        .await?;
    state
        .audit(event_on(
            &p,
            ws.id,
            Action::WorkspaceCreated,
            src,
            ResourceKind::Workspace,
            &ws.id.to_string(),
        ))
        .await;
    Ok((
        StatusCode::CREATED,
        Json(WorkspaceOut {
            id: ws.id.to_string(),
            name: ws.name.to_string(),
            role: Some(Role::Owner),
        }),
    )
        .into_response())
}

/// Confirmation of a workspace deletion.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DeleteWorkspaceIn {
    /// The workspace's name, typed again.
    confirm: String,
}

/// `DELETE /v1/workspaces/{ws}`: destroys the workspace's keys (its data becomes unreadable
/// everywhere, backups included), then its data. Owners only; the body repeats the name. The
/// audit chain stays.
#[utoipa::path(delete, path = "/v1/workspaces/{ws}", tag = "workspaces", params(("ws" = String, Path, description = "Workspace id")), request_body = DeleteWorkspaceIn, responses((status = 204, description = "Deleted"), crate::openapi::ApiErrors))]
pub async fn delete_workspace(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(ws): ApiPath<String>,
    body: ApiJson<DeleteWorkspaceIn>,
) -> Result<StatusCode, ApiError> {
    let ws = ws_id(&ws)?;
    require(&state, &p, ws, Scope::WorkspacesWrite).await?;
    let store = state.hub().store();
    let found = store
        .workspaces()
        .await?
        .into_iter()
        .find(|w| w.id == ws)
        .ok_or_else(ApiError::not_found)?;
    if body.0.confirm != found.name.as_str() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_confirmed",
            "confirm must be the workspace's name; nothing was deleted",
        ));
    }
    store.delete_workspace(ws).await?;
    state.forget_credentials();
    state.forget_workspace_keys(ws);
    state
        .audit(event_on(
            &p,
            ws,
            Action::WorkspaceDeleted,
            src,
            ResourceKind::Workspace,
            &ws.to_string(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
