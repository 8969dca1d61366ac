//! Resolving a request's credential to a [`Principal`], and checking it against the policy.
//!
//! Every failure to authenticate answers the same 401, whatever the reason (expired, revoked,
//! forged, unknown); the reason goes to the log as a code only.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use sealsync_audit::{
    Action, Actor, ActorKind, AuditEvent, Outcome, ReasonCode, Resource, ResourceKind,
};
use sealsync_auth::credential::{hashes_equal, sha256};
use sealsync_auth::jwt::now_secs;
use sealsync_auth::{
    ApiKeySecret, ClientId, Denial, Principal, PrincipalKind, Scope, ScopeSet, authorize,
};
use sealsync_types::{Role, UserId, WorkspaceId};

use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated request's principal, and the address it came from.
#[derive(Debug, Clone)]
pub struct Authed(pub Principal, pub Option<IpAddr>);

/// The peer address of a request, when the listener recorded it.
pub fn source_of(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = source_of(parts);
        let Some(value) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            // No bearer credential: a web-console session cookie, if any.
            return match crate::session::cookie_value(&parts.headers) {
                Some(c) => match session(state, &c).await {
                    Ok(p) => Ok(Authed(p, source)),
                    Err(Reject::Invalid(reason)) => {
                        tracing::info!(reason, "A request was refused: invalid session.");
                        if !state.failure_allowed(source) {
                            return Err(ApiError::rate_limited());
                        }
                        Err(ApiError::unauthorized())
                    }
                    Err(Reject::Server(e)) => Err(e),
                },
                None => Err(ApiError::unauthorized()),
            };
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthorized)?
            .trim();
        let is_key = token.starts_with(ApiKeySecret::PREFIX);
        let result = if is_key {
            api_key(state, token, source).await
        } else {
            access_token(state, token).await
        };
        match result {
            Ok(p) => Ok(Authed(p, source)),
            Err(Reject::Invalid(reason)) => {
                if !state.failure_allowed(source) {
                    // Past its failure budget the address gets 429, without more audit entries.
                    return Err(ApiError::rate_limited());
                }
                tracing::info!(reason, "A request was refused: invalid credential.");
                metrics::counter!("sealsync_auth_rejected_total", "reason" => reason).increment(1);
                let action = if is_key {
                    Action::ApiKeyRejected
                } else {
                    Action::TokenRejected
                };
                let mut event = AuditEvent::new(None, Actor::anonymous(), action)
                    .with_outcome(Outcome::Denied, ReasonCode::parse(reason).ok());
                if let Some(ip) = source {
                    event = event.with_source(ip);
                }
                state.audit(event).await;
                Err(ApiError::unauthorized())
            }
            Err(Reject::Server(e)) => Err(e),
        }
    }
}

enum Reject {
    Invalid(&'static str),
    Server(ApiError),
}

impl From<sealsync_store::StoreError> for Reject {
    fn from(e: sealsync_store::StoreError) -> Self {
        Reject::Server(e.into())
    }
}

async fn api_key(
    state: &AppState,
    token: &str,
    source: Option<IpAddr>,
) -> Result<Principal, Reject> {
    let (id, hash) = ApiKeySecret::parse(token).map_err(|_| Reject::Invalid("malformed_key"))?;
    let presented = sha256(token.as_bytes());
    if let Some(p) = state.cached_principal(&presented) {
        return Ok(p);
    }
    let store = state.hub().store();
    let row = store
        .api_key(id.as_bytes())
        .await?
        .ok_or(Reject::Invalid("unknown_key"))?;
    if !hashes_equal(&row.key_hash, &hash) {
        return Err(Reject::Invalid("bad_key"));
    }
    let now = now_secs();
    if row.revoked_at.is_some() {
        return Err(Reject::Invalid("revoked_key"));
    }
    if row.expires_at.is_some_and(|e| e <= now) {
        return Err(Reject::Invalid("expired_key"));
    }
    let scopes = ScopeSet::parse(&row.scopes).map_err(|_| Reject::Invalid("bad_scopes"))?;
    let p = Principal {
        kind: PrincipalKind::ApiKey,
        id: id.to_string(),
        user: Some(uuid::Uuid::from_bytes(*row.user_id.as_bytes())),
        workspace: Some(row.workspace_id),
        scopes,
    };
    // A key's use is recorded (and audited) at most once a minute, so reads stay cheap.
    let stale = row.last_used_at.is_none_or(|t| t < now - 60);
    if stale && store.touch_api_key(id.as_bytes(), now).await? {
        state
            .audit(event(&p, row.workspace_id, Action::ApiKeyUsed, source))
            .await;
    }
    state.cache_principal(presented, &p, remaining(row.expires_at, now));
    Ok(p)
}

async fn session(state: &AppState, cookie: &str) -> Result<Principal, Reject> {
    if cookie.len() != 43 {
        return Err(Reject::Invalid("malformed_session"));
    }
    let presented = sha256(cookie.as_bytes());
    if let Some(p) = state.cached_principal(&presented) {
        return Ok(p);
    }
    let row = state
        .hub()
        .store()
        .session(&presented)
        .await?
        .ok_or(Reject::Invalid("unknown_session"))?;
    if row.revoked_at.is_some() {
        return Err(Reject::Invalid("ended_session"));
    }
    if row.expires_at <= now_secs() {
        return Err(Reject::Invalid("expired_session"));
    }
    let p = Principal {
        kind: PrincipalKind::Session,
        id: row.user_id.to_string(),
        user: Some(uuid::Uuid::from_bytes(*row.user_id.as_bytes())),
        workspace: None,
        scopes: ScopeSet::all(),
    };
    state.cache_principal(presented, &p, remaining(Some(row.expires_at), now_secs()));
    Ok(p)
}

/// How much longer a credential ending at `end` (if ever) is valid.
fn remaining(end: Option<i64>, now: i64) -> std::time::Duration {
    match end {
        Some(e) => std::time::Duration::from_secs(u64::try_from(e - now).unwrap_or(0)),
        None => std::time::Duration::MAX,
    }
}

async fn access_token(state: &AppState, token: &str) -> Result<Principal, Reject> {
    // The same bytes, checked (signature included) moments ago.
    let presented = sha256(token.as_bytes());
    if let Some(p) = state.cached_principal(&presented) {
        return Ok(p);
    }
    let claims = state
        .tokens()
        .verify(token)
        .map_err(|e| Reject::Invalid(e.code()))?;
    let client = ClientId::parse(&claims.sub).map_err(|_| Reject::Invalid("bad_subject"))?;
    if client.workspace.to_string() != claims.ws {
        return Err(Reject::Invalid("bad_workspace"));
    }
    let row = state
        .hub()
        .store()
        .token(client.workspace, &sha256(claims.jti.as_bytes()))
        .await?
        .ok_or(Reject::Invalid("unknown_token"))?;
    if row.revoked_at.is_some() {
        return Err(Reject::Invalid("revoked_token"));
    }
    let scopes = ScopeSet::parse(&claims.scope).map_err(|_| Reject::Invalid("bad_scopes"))?;
    let p = Principal {
        kind: PrincipalKind::OAuthClient,
        id: claims.sub,
        user: None,
        workspace: Some(client.workspace),
        scopes,
    };
    state.cache_principal(presented, &p, remaining(Some(claims.exp), now_secs()));
    Ok(p)
}

/// The acting user, when the principal is one.
pub fn user_of(p: &Principal) -> Option<UserId> {
    p.user.map(|u| UserId::from_bytes(*u.as_bytes()))
}

/// Checks `scope` in workspace `ws` for `p`; gives the user's role there when it has one.
/// A refusal is audited in the principal's own workspace.
pub async fn require(
    state: &AppState,
    p: &Principal,
    ws: WorkspaceId,
    scope: Scope,
) -> Result<Option<Role>, ApiError> {
    let role = match user_of(p) {
        Some(u) => state.member_role(ws, u).await?,
        None => None,
    };
    if let Err(d) = authorize(p, ws, role, scope) {
        let reason = match d {
            Denial::NotFound => "not_visible",
            Denial::Role => "role",
            Denial::Scope => "scope",
        };
        let home = p.workspace.unwrap_or(WorkspaceId::NIL);
        let mut e = event(p, home, Action::AccessDenied, None)
            .with_outcome(Outcome::Denied, ReasonCode::parse(reason).ok());
        if let Ok(r) = Resource::new(ResourceKind::Workspace, &ws.to_string()) {
            e = e.with_resource(r);
        }
        state.audit(e).await;
        return Err(match d {
            Denial::NotFound => ApiError::not_found(),
            Denial::Role => ApiError::forbidden(),
            Denial::Scope => ApiError::insufficient_scope(),
        });
    }
    Ok(role)
}

/// The audit actor for a principal.
pub fn actor(p: &Principal) -> Actor {
    let kind = match p.kind {
        PrincipalKind::ApiKey => ActorKind::ApiKey,
        PrincipalKind::OAuthClient => ActorKind::OAuthClient,
        PrincipalKind::Session => ActorKind::User,
    };
    Actor::new(kind, &p.id).unwrap_or_else(|_| Actor::anonymous())
}

/// A successful action by `p` in `ws`, from `source`.
pub fn event(p: &Principal, ws: WorkspaceId, action: Action, source: Option<IpAddr>) -> AuditEvent {
    let chain = (ws != WorkspaceId::NIL).then_some(ws);
    let e = AuditEvent::new(chain, actor(p), action);
    match source {
        Some(ip) => e.with_source(ip),
        None => e,
    }
}

/// `event` on a resource.
pub fn event_on(
    p: &Principal,
    ws: WorkspaceId,
    action: Action,
    source: Option<IpAddr>,
    kind: ResourceKind,
    id: &str,
) -> AuditEvent {
    let e = event(p, ws, action, source);
    match Resource::new(kind, id) {
        Ok(r) => e.with_resource(r),
        Err(_) => e,
    }
}

/// The peer address of a request, for handlers without a principal (OAuth endpoints).
#[derive(Debug, Clone, Copy)]
pub struct Source(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(source_of(parts)))
    }
}
