//! OAuth 2.0 for programs: client-credentials tokens (RFC 6749 §4.4), revocation (RFC 7009),
//! introspection (RFC 7662), and the JWKS. Errors here use OAuth's own format.

use axum::Json;
use axum::extract::State;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sealsync_audit::{Action, Actor, ActorKind, AuditEvent, Outcome, ReasonCode};
use sealsync_auth::ClientId;
use sealsync_auth::credential::sha256;
use sealsync_auth::directory::{self, DirectoryError};
use sealsync_store::ClientRow;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::auth::Source;
use crate::state::AppState;

/// An OAuth event: the client acts on its own workspace's chain; an unauthenticated attempt is
/// recorded in the installation chain.
fn oauth_event(
    client: Option<&ClientId>,
    action: Action,
    source: Option<std::net::IpAddr>,
) -> AuditEvent {
    let actor = client
        .and_then(|c| Actor::new(ActorKind::OAuthClient, &c.to_string()).ok())
        .unwrap_or_else(Actor::anonymous);
    let e = AuditEvent::new(client.map(|c| c.workspace), actor, action);
    match source {
        Some(ip) => e.with_source(ip),
        None => e,
    }
}

/// The form of `POST /oauth/token`.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    scope: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
}

/// An OAuth error answer (`{"error": "invalid_client", "error_description": "…"}`).
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }
}

impl From<DirectoryError> for OAuthError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::BadClient | DirectoryError::NotFound(_) => Self::invalid_client(),
            DirectoryError::ScopeNotAllowed(s) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope not allowed: {s}"),
            ),
            other => {
                tracing::error!(error = %other, "A token request failed on the server side.");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the server could not complete the request",
                )
            }
        }
    }
}

impl OAuthError {
    fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many requests from this address; wait and retry",
        )
    }
}

/// Refuses an address over its OAuth request rate.
fn limit(state: &AppState, source: Option<std::net::IpAddr>) -> Result<(), OAuthError> {
    if state.oauth_allowed(source) {
        Ok(())
    } else {
        Err(OAuthError::rate_limited())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(serde_json::json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sealsync\""),
            );
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Client credentials from HTTP Basic (preferred by RFC 6749) or the form.
fn client_credentials(
    headers: &HeaderMap,
    form_id: Option<String>,
    form_secret: Option<SecretString>,
) -> Result<(ClientId, SecretString), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let (id, secret) = match (basic, form_id, form_secret) {
        (Some(pair), None, None) => {
            let (id, secret) = pair
                .split_once(':')
                .ok_or_else(OAuthError::invalid_client)?;
            (id.to_owned(), SecretString::from(secret.to_owned()))
        }
        (None, Some(id), Some(secret)) => (id, secret),
        _ => return Err(OAuthError::invalid_client()),
    };
    let id = ClientId::parse(&id).map_err(|_| OAuthError::invalid_client())?;
    Ok((id, secret))
}

async fn authenticated_client(
    state: &AppState,
    id: &ClientId,
    secret: &SecretString,
    source: Option<std::net::IpAddr>,
) -> Result<ClientRow, OAuthError> {
    // An unknown workspace still costs a verification (inside authenticate_client).
    let keys = state.workspace_keys(id.workspace).await.ok();
    match directory::authenticate_client(state.hub(), keys.as_deref(), id, secret).await {
        Ok(row) => Ok(row),
        Err(e) => {
            if matches!(e, DirectoryError::BadClient) {
                // Recorded where the client would live only if that workspace exists.
                let known = keys.is_some().then_some(id);
                state
                    .audit(
                        oauth_event(known, Action::TokenRejected, source).with_outcome(
                            Outcome::Denied,
                            ReasonCode::parse("invalid_client").ok(),
                        ),
                    )
                    .await;
            }
            Err(e.into())
        }
    }
}

/// `POST /oauth/token`: the client-credentials grant.
#[utoipa::path(post, path = "/oauth/token", tag = "oauth", request_body(content = TokenRequestDoc, content_type = "application/x-www-form-urlencoded"), responses((status = 200, body = TokenResponse), crate::openapi::OAuthErrors), security((), ("client" = [])))]
pub async fn token(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    OAuthForm(req): OAuthForm<TokenRequest>,
) -> Result<Response, OAuthError> {
    limit(&state, source)?;
    if req.grant_type.as_deref() != Some("client_credentials") {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        ));
    }
    let (id, secret) = client_credentials(&headers, req.client_id, req.client_secret)?;
    let client = authenticated_client(&state, &id, &secret, source).await?;
    let tokens = state.tokens();
    let (token, claims) =
        directory::issue_token(state.hub(), &tokens, &id, &client, req.scope.as_deref()).await?;
    state
        .audit(oauth_event(Some(&id), Action::TokenIssued, source))
        .await;
    let mut resp = Json(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        scope: claims.scope,
    })
    .into_response();
    no_store(&mut resp);
    Ok(resp)
}

/// The form of revocation and introspection requests.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    token: Option<SecretString>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
}

/// `POST /oauth/revoke` (RFC 7009): a client revokes one of its tokens. Answers 200 whether or
/// not the token was known, so it tells nothing.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth", request_body(content = TokenFormDoc, content_type = "application/x-www-form-urlencoded"), responses((status = 200, description = "Revoked, or unknown"), crate::openapi::OAuthErrors), security((), ("client" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    OAuthForm(req): OAuthForm<TokenForm>,
) -> Result<Response, OAuthError> {
    limit(&state, source)?;
    let (id, secret) = client_credentials(&headers, req.client_id, req.client_secret)?;
    authenticated_client(&state, &id, &secret, source).await?;
    if let Some(token) = req.token
        && let Ok(claims) = state
            .tokens()
            .verify(secrecy::ExposeSecret::expose_secret(&token))
        && claims.sub == id.to_string()
    {
        state
            .hub()
            .store()
            .revoke_token(
                id.workspace,
                &sha256(claims.jti.as_bytes()),
                sealsync_auth::jwt::now_secs(),
            )
            .await
            .map_err(|e| OAuthError::from(DirectoryError::Store(e)))?;
        state.forget_credentials();
        state
            .audit(oauth_event(Some(&id), Action::TokenRevoked, source))
            .await;
    }
    Ok(StatusCode::OK.into_response())
}

/// `POST /oauth/introspect` (RFC 7662): a client asks whether a token of its workspace is
/// active. Anything not active answers `{"active": false}` and nothing more.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth", request_body(content = TokenFormDoc, content_type = "application/x-www-form-urlencoded"), responses((status = 200, body = Object, description = "`{\"active\": false}`, or the active token's claims"), crate::openapi::OAuthErrors), security((), ("client" = [])))]
pub async fn introspect(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    OAuthForm(req): OAuthForm<TokenForm>,
) -> Result<Response, OAuthError> {
    limit(&state, source)?;
    let (id, secret) = client_credentials(&headers, req.client_id, req.client_secret)?;
    authenticated_client(&state, &id, &secret, source).await?;
    state
        .audit(oauth_event(Some(&id), Action::TokenIntrospected, source))
        .await;
    let inactive = || Json(serde_json::json!({"active": false})).into_response();
    let Some(token) = req.token else {
        return Ok(inactive());
    };
    let Ok(claims) = state
        .tokens()
        .verify(secrecy::ExposeSecret::expose_secret(&token))
    else {
        return Ok(inactive());
    };
    if claims.ws != id.workspace.to_string() {
        return Ok(inactive());
    }
    let row = state
        .hub()
        .store()
        .token(id.workspace, &sha256(claims.jti.as_bytes()))
        .await
        .map_err(|e| OAuthError::from(DirectoryError::Store(e)))?;
    if row.is_none_or(|r| r.revoked_at.is_some()) {
        return Ok(inactive());
    }
    let mut resp = Json(serde_json::json!({
        "active": true,
        "scope": claims.scope,
        "client_id": claims.sub,
        "sub": claims.sub,
        "token_type": "Bearer",
        "exp": claims.exp,
        "iat": claims.iat,
        "iss": claims.iss,
        "aud": claims.aud,
        "jti": claims.jti,
    }))
    .into_response();
    no_store(&mut resp);
    Ok(resp)
}

/// `GET /.well-known/jwks.json`.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth", responses((status = 200, body = Object, description = "The public keys that verify access tokens")), security(()))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut resp = Json(state.tokens().jwks()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The form of `POST /oauth/token` (as documented).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenRequestDoc {
    /// Always `client_credentials`.
    grant_type: String,
    /// Or send the client id and secret with HTTP Basic.
    client_id: Option<String>,
    client_secret: Option<String>,
    /// Space-separated scopes; all of the client's when absent.
    scope: Option<String>,
}

/// The form of `POST /oauth/revoke` and `POST /oauth/introspect` (as documented).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenFormDoc {
    token: String,
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// A form body; anything else is an OAuth `invalid_request`.
#[derive(Debug)]
pub struct OAuthForm<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for OAuthForm<T> {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OAuthError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| OAuthForm(f.0))
            .map_err(|_| {
                OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "send an application/x-www-form-urlencoded body with the documented fields",
                )
            })
    }
}
