//! Resolving a request's credential to a [`Principal`], and checking it against the policy.
//!
//! Every failure to authenticate answers the same 401, whatever the reason (expired, revoked,
//! forged, unknown); the reason goes to the log as a code only.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sealsync_auth::credential::{hashes_equal, sha256};
use sealsync_auth::jwt::now_secs;
use sealsync_auth::{
    ApiKeySecret, ClientId, Denial, Principal, PrincipalKind, Scope, ScopeSet, authorize,
};
use sealsync_types::{Role, UserId, WorkspaceId};

use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated request's principal.
#[derive(Debug, Clone)]
pub struct Authed(pub Principal);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthorized)?
            .trim();
        let result = if token.starts_with(ApiKeySecret::PREFIX) {
            api_key(state, token).await
        } else {
            access_token(state, token).await
        };
        match result {
            Ok(p) => Ok(Authed(p)),
            Err(Reject::Invalid(reason)) => {
                tracing::info!(reason, "A request was refused: invalid credential.");
                metrics::counter!("sealsync_auth_rejected_total", "reason" => reason).increment(1);
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

async fn api_key(state: &AppState, token: &str) -> Result<Principal, Reject> {
    let (id, hash) = ApiKeySecret::parse(token).map_err(|_| Reject::Invalid("malformed_key"))?;
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
    store.touch_api_key(id.as_bytes(), now).await?;
    let scopes = ScopeSet::parse(&row.scopes).map_err(|_| Reject::Invalid("bad_scopes"))?;
    Ok(Principal {
        kind: PrincipalKind::ApiKey,
        id: id.to_string(),
        user: Some(uuid::Uuid::from_bytes(*row.user_id.as_bytes())),
        workspace: Some(row.workspace_id),
        scopes,
    })
}

async fn access_token(state: &AppState, token: &str) -> Result<Principal, Reject> {
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
    Ok(Principal {
        kind: PrincipalKind::OAuthClient,
        id: claims.sub,
        user: None,
        workspace: Some(client.workspace),
        scopes,
    })
}

/// The acting user, when the principal is one.
pub fn user_of(p: &Principal) -> Option<UserId> {
    p.user.map(|u| UserId::from_bytes(*u.as_bytes()))
}

/// Checks `scope` in workspace `ws` for `p`; gives the user's role there when it has one.
pub async fn require(
    state: &AppState,
    p: &Principal,
    ws: WorkspaceId,
    scope: Scope,
) -> Result<Option<Role>, ApiError> {
    let role = match user_of(p) {
        Some(u) => state.hub().store().member_role(ws, u).await?,
        None => None,
    };
    authorize(p, ws, role, scope).map_err(|d| match d {
        Denial::NotFound => ApiError::not_found(),
        Denial::Role => ApiError::forbidden(),
        Denial::Scope => ApiError::insufficient_scope(),
    })?;
    Ok(role)
}
