//! OAuth connect: sending someone through an external app's authorization (code flow with
//! PKCE and `state`) and keeping the grant as an `oauth` account.
//!
//! - `POST /v1/workspaces/{ws}/accounts/{name}/authorize` with `{"app": "<oauth-app account>"}`
//!   answers the URL to send the person to; the Connect page starts the same flow for an end
//!   user's app of kind `oauth` (`GET /connect/oauth`).
//! - `GET /v1/oauth/callback` takes the app's answer: the `state` names one flow started here in
//!   the last 10 minutes, used once; the code is exchanged with the flow's PKCE verifier, and
//!   the tokens are kept, sealed, as the account.
//!
//! Flows in progress are held in memory only (the verifier never reaches a disk), like single
//! sign-on logins: a flow started on one server is finished on the same one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use sealsync_audit::{Action, Actor, AuditEvent, Resource, ResourceKind};
use sealsync_auth::Scope;
use sealsync_engine::catalog::check_name;
use sealsync_types::WorkspaceId;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::auth::{Authed, require};
use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath};
use crate::ops::engine_for;
use crate::state::AppState;

/// How long a started flow may take at the app.
const FLOW_FOR: Duration = Duration::from_secs(600);
/// Flows held at once; more are refused until some finish or expire.
const FLOWS_MAX: usize = 10_000;

/// One authorization in progress.
struct Flow {
    ws: WorkspaceId,
    account: String,
    app: String,
    verifier: SecretString,
    started: Instant,
    /// Who started it, for the audit entry of the account it makes.
    actor: Actor,
}

/// The flows in progress, by `state`.
#[derive(Default)]
pub(crate) struct Flows(Mutex<HashMap<String, Flow>>);

/// The callback URL apps send people back to.
pub fn callback_url(state: &AppState) -> String {
    format!(
        "{}/v1/oauth/callback",
        state.token_keys().issuer().trim_end_matches('/')
    )
}

/// Starts a flow that will keep its grant as `account`: the URL to send the person to.
pub(crate) async fn start(
    state: &AppState,
    ws: WorkspaceId,
    account: &str,
    app: &str,
    actor: Actor,
) -> Result<String, ApiError> {
    check_name(account).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let engine = engine_for(state, state.workspace_keys(ws).await?);
    let client = engine
        .oauth_client(app, Some(&callback_url(state)))
        .await
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let mut raw = [0u8; 32];
    sealsync_crypto::random_bytes(&mut raw).map_err(|e| ApiError::internal(&e))?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let authorization = client.authorize(&key);
    let mut flows = state
        .inner
        .grants
        .0
        .lock()
        .map_err(|_| ApiError::internal(&"the flows lock is poisoned"))?;
    flows.retain(|_, f| f.started.elapsed() < FLOW_FOR);
    if flows.len() >= FLOWS_MAX {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many authorizations in progress; try again in a few minutes",
        ));
    }
    flows.insert(
        key,
        Flow {
            ws,
            account: account.to_owned(),
            app: app.to_owned(),
            verifier: authorization.verifier,
            started: Instant::now(),
            actor,
        },
    );
    Ok(authorization.url)
}

/// Which app to authorize with.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeIn {
    /// The `oauth-app` account of the external app.
    app: String,
}

/// Where to send the person.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthorizeOut {
    authorize_url: String,
    /// Seconds the flow may take.
    expires_in: u64,
}

/// `POST /v1/workspaces/{ws}/accounts/{name}/authorize`: starts connecting the `oauth` account
/// `name` through `app`. Send the person to `authorize_url`; the account exists once they come
/// back to the callback.
#[utoipa::path(post, path = "/v1/workspaces/{ws}/accounts/{name}/authorize", tag = "sync", params(("ws" = String, Path, description = "Workspace id"), ("name" = String, Path, description = "Account name")), request_body = AuthorizeIn, responses((status = 200, body = AuthorizeOut), crate::openapi::ApiErrors))]
pub async fn authorize(
    State(state): State<AppState>,
    Authed(p, _): Authed,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    body: ApiJson<AuthorizeIn>,
) -> Result<Json<AuthorizeOut>, ApiError> {
    let ws = crate::ops::ws_id(&ws)?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let actor = crate::auth::actor(&p);
    let url = start(&state, ws, &name, &body.0.app, actor).await?;
    Ok(Json(AuthorizeOut {
        authorize_url: url,
        expires_in: FLOW_FOR.as_secs(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<SecretString>,
    error: Option<String>,
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let mut resp = (
        status,
        Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{}</p></body></html>",
            crate::connect::esc(text)
        )),
    )
        .into_response();
    let h = resp.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "default-src 'none'"),
    ] {
        h.insert(name, axum::http::HeaderValue::from_static(value));
    }
    resp
}

/// `GET /v1/oauth/callback`: the app sends the person back here.
pub async fn callback(State(state): State<AppState>, Query(q): Query<CallbackQuery>) -> Response {
    let flow = q.state.as_deref().and_then(|key| {
        let mut flows = state.inner.grants.0.lock().ok()?;
        flows.remove(key)
    });
    let Some(flow) = flow.filter(|f| f.started.elapsed() < FLOW_FOR) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "This authorization is unknown, was used already or took too long. Start again.",
        );
    };
    if let Some(error) = q.error {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return page(
            StatusCode::OK,
            "Not connected",
            &format!("The app did not grant access ({error})."),
        );
    }
    let Some(code) = q.code else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "The app sent no authorization code.",
        );
    };
    let keys = match state.workspace_keys(flow.ws).await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "The keys of a workspace could not be opened for an OAuth callback.");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not connected",
                "Try again later.",
            );
        }
    };
    let engine = engine_for(&state, keys);
    let kept = async {
        let client = engine
            .oauth_client(&flow.app, Some(&callback_url(&state)))
            .await
            .map_err(|e| e.to_string())?;
        let tokens = client
            .exchange(secrecy::ExposeSecret::expose_secret(&code), &flow.verifier)
            .await
            .map_err(|e| e.to_string())?;
        engine
            .keep_grant(&flow.account, &flow.app, tokens, None)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match kept {
        Ok(id) => {
            // The app's client secret was used for the exchange; the grant's account changed.
            let app_id = engine
                .accounts()
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|a| a.name == flow.app))
                .map(|a| a.id);
            let events = app_id
                .map(|a| (Action::AccountUsed, a))
                .into_iter()
                .chain([(Action::AccountChanged, id)]);
            for (action, account) in events {
                let mut e = AuditEvent::new(Some(flow.ws), flow.actor.clone(), action);
                if let Ok(r) = Resource::new(ResourceKind::Account, &account.to_string()) {
                    e = e.with_resource(r);
                }
                state.audit(e).await;
            }
            state.inner.hooks.forget();
            page(
                StatusCode::OK,
                "Connected",
                "The account is connected. You can close this window.",
            )
        }
        Err(why) => {
            tracing::warn!(error = %why, "An OAuth authorization could not be finished.");
            page(
                StatusCode::BAD_GATEWAY,
                "Not connected",
                "The app's answer could not be used. Start again.",
            )
        }
    }
}
