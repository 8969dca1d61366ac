//! Web-console sessions: password login (with lockout) and logout.
//!
//! The session cookie is `HttpOnly; Secure; SameSite=Strict`, a fresh random value on every
//! login (a presented old session is ended), and only its SHA-256 is stored, so revocation is
//! server-side. A wrong password, an unknown user and a locked account get the same answer.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealsync_audit::{Action, Actor, ActorKind, AuditEvent, Outcome, ReasonCode};
use sealsync_auth::credential::sha256;
use sealsync_auth::directory::{self, LoginError, SESSION_SECS};
use sealsync_auth::jwt::now_secs;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::auth::Source;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "ss_session";

/// A login.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginIn {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// The TOTP code (or a recovery code) when the account has a second factor.
    totp: Option<String>,
}

/// Who is now signed in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionOut {
    user_id: String,
    expires_at: i64,
}

/// The session cookie's value in a request, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    named_cookie(headers, COOKIE)
}

/// The value of cookie `wanted` in a request, if any.
pub(crate) fn named_cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_owned())
}

pub(crate) fn user_event(
    user: Option<sealsync_types::UserId>,
    action: Action,
    src: Option<std::net::IpAddr>,
) -> AuditEvent {
    let actor = user
        .and_then(|u| Actor::new(ActorKind::User, &u.to_string()).ok())
        .unwrap_or_else(Actor::anonymous);
    let e = AuditEvent::new(None, actor, action);
    match src {
        Some(ip) => e.with_source(ip),
        None => e,
    }
}

/// `POST /v1/session`: sign in with email and password.
#[utoipa::path(post, path = "/v1/session", tag = "session", request_body = LoginIn, responses((status = 200, body = SessionOut, headers(("set-cookie" = String, description = "The session cookie"))), crate::openapi::ApiErrors), security(()))]
pub async fn login(
    State(state): State<AppState>,
    Source(src): Source,
    headers: HeaderMap,
    body: ApiJson<LoginIn>,
) -> Result<Response, ApiError> {
    if !state.login_allowed(src) {
        return Err(ApiError::rate_limited());
    }
    let outcome = directory::login(
        state.hub(),
        &body.0.email,
        &body.0.password,
        body.0.totp.as_deref(),
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let user = match outcome {
        Ok(u) => u,
        Err(e) => {
            let (user, action, reason) = match e {
                LoginError::Invalid { user } => (user, Action::LoginFailed, "bad_credentials"),
                LoginError::Locked {
                    user,
                    just_now: true,
                } => (Some(user), Action::LoginLockedOut, "too_many_failures"),
                LoginError::Locked { user, .. } => (Some(user), Action::LoginFailed, "locked"),
                LoginError::SecondFactorWrong { user } => {
                    (Some(user), Action::TotpFailed, "bad_second_factor")
                }
                LoginError::SecondFactorRequired { .. } => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "totp_required",
                        "send the code from your authenticator app (or a recovery code) as totp",
                    ));
                }
            };
            state
                .audit(
                    user_event(user, action, src)
                        .with_outcome(Outcome::Denied, ReasonCode::parse(reason).ok()),
                )
                .await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong email or password, or the account is locked for a while",
            ));
        }
    };
    start_session(&state, &headers, user.id, src).await
}

/// Signs `user` in: ends whatever session the browser held (rotation), makes a new one,
/// audits the login and answers with the session cookie.
pub(crate) async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    user: sealsync_types::UserId,
    src: Option<std::net::IpAddr>,
) -> Result<Response, ApiError> {
    if let Some(old) = cookie_value(headers) {
        state
            .hub()
            .store()
            .revoke_session(&sha256(old.as_bytes()), now_secs())
            .await?;
        state.forget_credentials();
    }
    let (token, row) = directory::create_session(state.hub(), user)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    state
        .audit(user_event(Some(user), Action::LoginSucceeded, src))
        .await;
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={SESSION_SECS}",
        token.expose_secret()
    );
    let mut resp = Json(SessionOut {
        user_id: user.to_string(),
        expires_at: row.expires_at,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `DELETE /v1/session`: sign out; the session ends on the server too.
#[utoipa::path(delete, path = "/v1/session", tag = "session", responses((status = 204, description = "Signed out")), security(()))]
pub async fn logout(
    State(state): State<AppState>,
    Source(src): Source,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(value) = cookie_value(&headers) {
        let hash = sha256(value.as_bytes());
        let user = state.hub().store().session(&hash).await?.map(|s| s.user_id);
        if state
            .hub()
            .store()
            .revoke_session(&hash, now_secs())
            .await?
        {
            state.forget_credentials();
            state.audit(user_event(user, Action::Logout, src)).await;
        }
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "ss_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(resp)
}

/// An enrolment started: add this to an authenticator app, then confirm with a code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TotpStart {
    /// `otpauth://totp/…` (render it as a QR code); shown once.
    otpauth_uri: String,
}

/// A code from the authenticator app.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TotpConfirm {
    code: String,
}

/// TOTP is on; keep these somewhere safe: each signs in once in place of a code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

fn me(p: &sealsync_auth::Principal) -> Result<sealsync_types::UserId, ApiError> {
    crate::auth::user_of(p).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only users have a second factor",
        )
    })
}

/// `POST /v1/me/totp`: start TOTP enrolment for the signed-in user.
#[utoipa::path(post, path = "/v1/me/totp", tag = "session", responses((status = 200, body = TotpStart), (status = 409, body = crate::openapi::ErrorEnvelope, description = "TOTP is already on"), crate::openapi::ApiErrors))]
pub async fn totp_begin(
    State(state): State<AppState>,
    crate::auth::Authed(p, _): crate::auth::Authed,
) -> Result<Response, ApiError> {
    let user = me(&p)?;
    let row = state
        .hub()
        .store()
        .user_by_id(user)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let uri = directory::begin_totp(state.hub(), &row)
        .await
        .map_err(|e| match e {
            directory::DirectoryError::BadName(m) => ApiError::conflict(m),
            other => ApiError::internal(&other),
        })?;
    let mut resp = Json(TotpStart {
        otpauth_uri: uri.expose_secret().to_owned(),
    })
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /v1/me/totp/confirm`: finish enrolment with a current code.
#[utoipa::path(post, path = "/v1/me/totp/confirm", tag = "session", request_body = TotpConfirm, responses((status = 200, body = RecoveryCodes), crate::openapi::ApiErrors))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    crate::auth::Authed(p, src): crate::auth::Authed,
    body: ApiJson<TotpConfirm>,
) -> Result<Response, ApiError> {
    let user = me(&p)?;
    let codes = directory::confirm_totp(state.hub(), user, &body.0.code)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_code",
                "that code is not valid for the pending enrolment",
            )
        })?;
    state
        .audit(user_event(Some(user), Action::TotpEnrolled, src))
        .await;
    let mut resp = Json(RecoveryCodes {
        recovery_codes: codes,
    })
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// An invitation being accepted.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AcceptIn {
    invite_token: String,
    /// The new user's password (at least 12 characters); ignored for an existing user.
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<SecretString>,
}

/// The membership the invitation gave.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptOut {
    user_id: String,
    workspace_id: String,
    #[schema(value_type = String)]
    role: sealsync_types::Role,
}

/// `POST /v1/invites/accept`: join a workspace by invitation (once, before it expires).
#[utoipa::path(post, path = "/v1/invites/accept", tag = "members", request_body = AcceptIn, responses((status = 200, body = AcceptOut), crate::openapi::ApiErrors), security(()))]
pub async fn accept_invite(
    State(state): State<AppState>,
    Source(src): Source,
    body: ApiJson<AcceptIn>,
) -> Result<Json<AcceptOut>, ApiError> {
    if !state.login_allowed(src) {
        return Err(ApiError::rate_limited());
    }
    if body
        .0
        .password
        .as_ref()
        .is_some_and(|p| p.expose_secret().chars().count() < 12)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            "a password has at least 12 characters",
        ));
    }
    let accepted = directory::accept_invite(state.hub(), &body.0.invite_token, body.0.password)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let Some((user, ws, role)) = accepted else {
        return Err(ApiError::not_found());
    };
    state.forget_credentials();
    let actor =
        Actor::new(ActorKind::User, &user.id.to_string()).unwrap_or_else(|_| Actor::anonymous());
    let mut e = AuditEvent::new(Some(ws), actor, Action::InviteAccepted);
    if let Some(ip) = src {
        e = e.with_source(ip);
    }
    state.audit(e).await;
    Ok(Json(AcceptOut {
        user_id: user.id.to_string(),
        workspace_id: ws.to_string(),
        role,
    }))
}
