//! Connect: an external end user connects their own account, through a short-lived token.
//!
//! - `POST /v1/connect/tokens` (an API key or OAuth client of one workspace) makes a token for one
//!   `external_user_id`, valid 4 hours (or less, `expires_in`), naming the apps the user may
//!   connect (`basic`: username and password, `api-key`: a key) and, optionally, the web origins
//!   allowed to use it. The answer carries the token once, a Connect Link, and the account
//!   name each app will get (`<app>.<user tag>`).
//! - The token can do one thing: create or replace that user's account for one of its apps,
//!   through `POST /v1/connect/accounts` (JSON, `Authorization: Bearer sct_…`, from an allowed
//!   origin) or the hosted page the link opens (`GET /connect`, a plain form posting to
//!   `POST /connect`). It reads nothing: every other route refuses it.
//! - `DELETE /v1/connect/users/{external_user_id}` removes the user's tokens and accounts, the
//!   endpoints using those accounts with their links, and what was synced only through them.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use sealsync_audit::{
    Action, Actor, ActorKind, AuditEvent, Outcome, ReasonCode, Resource, ResourceKind,
};
use sealsync_auth::{ConnectTokenSecret, Scope, credential::hashes_equal};
use sealsync_connector::credential::Credential;
use sealsync_engine::Engine;
use sealsync_engine::connect::check_app;
use sealsync_store::{ConnectTokenRow, now_ms};
use sealsync_types::WorkspaceId;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::auth::{Authed, Source, event_on, require};
use crate::error::ApiError;
use crate::json::{ApiJson, ApiPath};
use crate::ops::engine_for;
use crate::state::AppState;

/// The longest a Connect token lives (seconds).
pub const CONNECT_TOKEN_SECS: i64 = 4 * 3600;

/// One app an end user may connect.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectApp {
    /// Part of the account name: letters, digits, `-`, `_`; at most 32.
    name: String,
    /// `basic` (username and password), `api-key`, or `oauth` (the user is sent through the
    /// external app's authorization).
    kind: String,
    /// What the hosted page calls it.
    label: Option<String>,
    /// oauth: the workspace's `oauth-app` account of the external app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oauth_app: Option<String>,
}

/// `POST /v1/connect/tokens` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectTokenIn {
    /// The end user, as the customer's system names them (kept only as a keyed hash).
    external_user_id: String,
    /// What the user may connect.
    apps: Vec<ConnectApp>,
    /// Web origins (`https://app.example.com`) allowed to use the token from a browser; none:
    /// any, and the hosted page may not be framed.
    allowed_origins: Option<Vec<String>>,
    /// Seconds until it expires: at most (and by default) 4 hours.
    expires_in: Option<i64>,
}

/// A new Connect token: shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectTokenOut {
    token: String,
    expires_at: i64,
    /// The hosted page for the end user.
    connect_link: String,
    /// The user's tag: their accounts are named `<app>.<tag>`.
    user_tag: String,
    /// App name to the account it creates.
    accounts: BTreeMap<String, String>,
}

/// What a valid token allows.
struct Grant {
    ws: WorkspaceId,
    id: String,
    user_tag: String,
    apps: Vec<ConnectApp>,
    origins: Vec<String>,
}

fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the Connect token is not valid: expired, removed or malformed",
    )
}

/// `scheme://host[:port]` of an origin, or why not.
fn origin(s: &str) -> Result<String, ApiError> {
    let u = reqwest::Url::parse(s)
        .map_err(|_| ApiError::unprocessable(format!("{s:?} is not an origin")))?;
    let plain = matches!(u.scheme(), "https" | "http")
        && u.host_str().is_some()
        && u.username().is_empty()
        && u.password().is_none()
        && matches!(u.path(), "" | "/")
        && u.query().is_none()
        && u.fragment().is_none();
    if !plain {
        return Err(ApiError::unprocessable(format!(
            "{s:?} is not an origin (scheme, host and port only)"
        )));
    }
    Ok(u.origin().ascii_serialization())
}

/// `POST /v1/connect/tokens`: a Connect token for one end user.
#[utoipa::path(post, path = "/v1/connect/tokens", tag = "connect", request_body = ConnectTokenIn, responses((status = 201, body = ConnectTokenOut), crate::openapi::ApiErrors))]
pub async fn create_token(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    body: ApiJson<ConnectTokenIn>,
) -> Result<Response, ApiError> {
    let ws = p.workspace.ok_or_else(|| {
        ApiError::unprocessable(
            "Connect tokens are made by an API key or OAuth client bound to one workspace",
        )
    })?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let b = body.0;
    let user = b.external_user_id.trim();
    if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "external_user_id must be 1 to 256 characters without control characters",
        ));
    }
    if b.apps.is_empty() || b.apps.len() > 20 {
        return Err(ApiError::unprocessable("name 1 to 20 apps"));
    }
    for a in &b.apps {
        check_app(&a.name).map_err(|e| ApiError::unprocessable(e.to_string()))?;
        match (a.kind.as_str(), &a.oauth_app) {
            ("basic" | "api-key", None) => {}
            ("oauth", Some(app)) => {
                let engine = engine_for(&state, state.workspace_keys(ws).await?);
                let fits = engine
                    .accounts()
                    .await
                    .map_err(|e| ApiError::internal(&e))?
                    .iter()
                    .any(|x| &x.name == app && x.kind == "oauth-app");
                if !fits {
                    return Err(ApiError::unprocessable(format!(
                        "app {:?}: no oauth-app account named {app:?} in this workspace",
                        a.name
                    )));
                }
            }
            _ => {
                return Err(ApiError::unprocessable(format!(
                    "app {:?}: kind must be basic, api-key, or oauth with oauth_app",
                    a.name
                )));
            }
        }
        if a.label.as_ref().is_some_and(|l| l.len() > 80) {
            return Err(ApiError::unprocessable(
                "an app's label is at most 80 characters",
            ));
        }
        if b.apps.iter().filter(|x| x.name == a.name).count() > 1 {
            return Err(ApiError::unprocessable(format!(
                "app {:?} is named twice",
                a.name
            )));
        }
    }
    let origins = b
        .allowed_origins
        .unwrap_or_default()
        .iter()
        .map(|o| origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    let life = b.expires_in.unwrap_or(CONNECT_TOKEN_SECS);
    if !(1..=CONNECT_TOKEN_SECS).contains(&life) {
        return Err(ApiError::unprocessable(
            "expires_in must be 1 to 14400 seconds",
        ));
    }
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let tag = engine.connect_user_tag(user);
    let secret = ConnectTokenSecret::generate(ws).map_err(|e| ApiError::internal(&e))?;
    let now = now_ms() / 1000;
    let row = ConnectTokenRow {
        id: *secret.id.as_bytes(),
        hash: secret.hash,
        user_tag: tag.clone(),
        apps: serde_json::to_string(&b.apps).map_err(|e| ApiError::internal(&e))?,
        origins: serde_json::to_string(&origins).map_err(|e| ApiError::internal(&e))?,
        created_at: now,
        expires_at: now + life,
    };
    state.hub().store().put_connect_token(ws, &row).await?;
    state
        .audit(event_on(
            &p,
            ws,
            Action::ConnectTokenCreated,
            src,
            ResourceKind::ConnectUser,
            &tag,
        ))
        .await;
    let token = secret.token.expose_secret().to_owned();
    let out = ConnectTokenOut {
        connect_link: format!(
            "{}/connect?token={token}",
            state.token_keys().issuer().trim_end_matches('/')
        ),
        token,
        expires_at: row.expires_at,
        accounts: b
            .apps
            .iter()
            .map(|a| (a.name.clone(), Engine::connect_account_name(&a.name, &tag)))
            .collect(),
        user_tag: tag,
    };
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// The grant of a presented token, or 401.
async fn grant(state: &AppState, presented: &str) -> Result<Grant, ApiError> {
    let (ws, id, hash) = ConnectTokenSecret::parse(presented).map_err(|_| invalid_token())?;
    let row = state
        .hub()
        .store()
        .connect_token(ws, id.as_bytes())
        .await?
        .ok_or_else(invalid_token)?;
    if !hashes_equal(&row.hash, &hash) || row.expires_at <= now_ms() / 1000 {
        return Err(invalid_token());
    }
    Ok(Grant {
        ws,
        id: id.to_string(),
        user_tag: row.user_tag,
        apps: serde_json::from_str(&row.apps).map_err(|e| ApiError::internal(&e))?,
        origins: serde_json::from_str(&row.origins).map_err(|e| ApiError::internal(&e))?,
    })
}

/// Creates (or replaces) the granted user's account for `app`.
async fn connect_account(
    state: &AppState,
    g: &Grant,
    app: &str,
    credential: Credential,
    src: Option<std::net::IpAddr>,
) -> Result<(String, String), ApiError> {
    let a =
        g.apps.iter().find(|a| a.name == app).ok_or_else(|| {
            ApiError::unprocessable(format!("this token does not offer app {app:?}"))
        })?;
    let fits = matches!(
        (&credential, a.kind.as_str()),
        (Credential::Basic { .. }, "basic") | (Credential::ApiKey { .. }, "api-key")
    );
    if !fits {
        return Err(ApiError::unprocessable(format!(
            "app {app:?} takes {}",
            match a.kind.as_str() {
                "basic" => "a username and password",
                "api-key" => "a key",
                _ => "no secret: it connects through the app's authorization (the hosted page)",
            }
        )));
    }
    let engine = engine_for(state, state.workspace_keys(g.ws).await?);
    let name = Engine::connect_account_name(app, &g.user_tag);
    let (_, id) = engine
        .put_account(&name, &credential)
        .await
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    state.inner.hooks.forget();
    let mut e = AuditEvent::new(
        Some(g.ws),
        Actor::new(ActorKind::ConnectToken, &g.id).unwrap_or_else(|_| Actor::anonymous()),
        Action::AccountChanged,
    );
    if let Ok(r) = Resource::new(ResourceKind::Account, &id.to_string()) {
        e = e.with_resource(r);
    }
    if let Some(ip) = src {
        e = e.with_source(ip);
    }
    state.audit(e).await;
    Ok((name, a.label.clone().unwrap_or_else(|| a.name.clone())))
}

/// `POST /v1/connect/accounts` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectAccountIn {
    app: String,
    /// When given, must be the token's user.
    external_user_id: Option<String>,
    username: Option<String>,
    #[schema(value_type = Option<String>)]
    password: Option<SecretString>,
    #[schema(value_type = Option<String>)]
    key: Option<SecretString>,
}

/// A connected account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectAccountOut {
    app: String,
    account: String,
}

fn credential_of(
    username: Option<String>,
    password: Option<SecretString>,
    key: Option<SecretString>,
) -> Result<Credential, ApiError> {
    match (username, password, key) {
        (Some(username), Some(password), None) if !username.is_empty() => {
            Ok(Credential::Basic { username, password })
        }
        (None, None, Some(key)) => Ok(Credential::ApiKey { key }),
        _ => Err(ApiError::unprocessable(
            "give username and password, or key",
        )),
    }
}

/// `POST /v1/connect/accounts`: the token's user connects an account (from a browser, only from
/// an allowed origin).
#[utoipa::path(post, path = "/v1/connect/accounts", tag = "connect", request_body = ConnectAccountIn, responses((status = 201, body = ConnectAccountOut), crate::openapi::ApiErrors), security(()))]
pub async fn connect_via_api(
    State(state): State<AppState>,
    src: Source,
    headers: HeaderMap,
    body: ApiJson<ConnectAccountIn>,
) -> Result<Response, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(invalid_token)?;
    let g = grant(&state, presented.trim()).await?;
    let denied = |reason: &str| {
        let mut e = AuditEvent::new(
            Some(g.ws),
            Actor::new(ActorKind::ConnectToken, &g.id).unwrap_or_else(|_| Actor::anonymous()),
            Action::AccessDenied,
        )
        .with_outcome(Outcome::Denied, ReasonCode::parse(reason).ok());
        if let Some(ip) = src.0 {
            e = e.with_source(ip);
        }
        e
    };
    if let Some(o) = headers.get(header::ORIGIN) {
        let o = o.to_str().unwrap_or_default();
        if !g.origins.is_empty() && !g.origins.iter().any(|a| a == o) {
            state.audit(denied("origin_not_allowed")).await;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this Connect token may not be used from this origin",
            ));
        }
    } else if !g.origins.is_empty() {
        state.audit(denied("origin_missing")).await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this Connect token is used from its allowed origins only",
        ));
    }
    let b = body.0;
    if let Some(user) = &b.external_user_id {
        let engine = engine_for(&state, state.workspace_keys(g.ws).await?);
        if engine.connect_user_tag(user.trim()) != g.user_tag {
            state.audit(denied("wrong_user")).await;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this Connect token is for another user",
            ));
        }
    }
    let credential = credential_of(b.username, b.password, b.key)?;
    let (account, _) = connect_account(&state, &g, &b.app, credential, src.0).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ConnectAccountOut {
            app: b.app,
            account,
        }),
    )
        .into_response())
}

/// `DELETE /v1/connect/users/{external_user_id}`: the user's tokens, accounts, the endpoints and
/// links that used them, and what came only through those.
#[utoipa::path(delete, path = "/v1/connect/users/{external_user_id}", tag = "connect", params(("external_user_id" = String, Path, description = "The end user, as the customer's system names them")), responses((status = 200, body = Object, description = "What was removed, by kind"), crate::openapi::ApiErrors))]
pub async fn remove_user(
    State(state): State<AppState>,
    Authed(p, src): Authed,
    ApiPath(user): ApiPath<String>,
) -> Result<Response, ApiError> {
    let ws = p.workspace.ok_or_else(|| {
        ApiError::unprocessable(
            "Connect users are removed by an API key or OAuth client bound to one workspace",
        )
    })?;
    require(&state, &p, ws, Scope::EndpointsWrite).await?;
    let engine = engine_for(&state, state.workspace_keys(ws).await?);
    let removed = engine
        .remove_connect_user(user.trim())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    state.inner.hooks.forget();
    state
        .audit(event_on(
            &p,
            ws,
            Action::ConnectUserRemoved,
            src,
            ResourceKind::ConnectUser,
            &engine.connect_user_tag(user.trim()),
        ))
        .await;
    Ok(axum::Json(removed).into_response())
}

// ---- the hosted page --------------------------------------------------------------------------

/// Text for HTML.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page with the Connect headers: never cached, never referred, framed only by the token's
/// origins.
fn page(status: StatusCode, body: String, origins: &[String]) -> Response {
    let frames = if origins.is_empty() {
        "'none'".to_owned()
    } else {
        origins.join(" ")
    };
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors {frames}"
    );
    let mut resp = (
        status,
        Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Connect an account</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}form{{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}}label{{display:block;margin:.5rem 0}}input{{width:100%;padding:.4rem}}button{{padding:.5rem 1rem}}</style></head><body>{body}</body></html>"
        )),
    )
        .into_response();
    let h = resp.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert("content-security-policy", v);
    }
    resp
}

fn expired_page() -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "<h1>This link cannot be used</h1><p>It has expired or was withdrawn. Ask for a new one.</p>".into(),
        &[],
    )
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    token: Option<SecretString>,
}

/// `GET /connect?token=sct_…`: the hosted page: one form per app.
pub async fn show_page(State(state): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    let Some(token) = q.token else {
        return expired_page();
    };
    let token = token.expose_secret();
    let Ok(g) = grant(&state, token).await else {
        return expired_page();
    };
    let mut body = String::from("<h1>Connect an account</h1>");
    for a in &g.apps {
        let label = esc(a.label.as_deref().unwrap_or(&a.name));
        if a.kind == "oauth" {
            // A link, not a form: the app's page is another origin, which `form-action`
            // would not let a form's redirect reach.
            body.push_str(&format!(
                "<form><h2>{label}</h2><p><a href=\"/connect/oauth?token={}&amp;app={}\">Connect {label}</a></p></form>",
                esc(token),
                esc(&a.name),
            ));
            continue;
        }
        let fields = if a.kind == "basic" {
            "<label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>"
        } else {
            "<label>API key <input name=\"key\" type=\"password\" autocomplete=\"off\" required></label>"
        };
        body.push_str(&format!(
            "<form method=\"post\" action=\"/connect\"><h2>{label}</h2>\
             <input type=\"hidden\" name=\"token\" value=\"{}\"><input type=\"hidden\" name=\"app\" value=\"{}\">\
             {fields}<button type=\"submit\">Connect {label}</button></form>",
            esc(token),
            esc(&a.name),
        ));
    }
    page(StatusCode::OK, body, &g.origins)
}

#[derive(Debug, Deserialize)]
pub struct OAuthQuery {
    token: Option<SecretString>,
    app: Option<String>,
}

/// `GET /connect/oauth?token=sct_…&app=NAME`: sends the end user to the app's authorization;
/// the grant becomes their account `<app>.<user tag>`.
pub async fn start_oauth(State(state): State<AppState>, Query(q): Query<OAuthQuery>) -> Response {
    let (Some(token), Some(app)) = (q.token, q.app) else {
        return expired_page();
    };
    let Ok(g) = grant(&state, token.expose_secret()).await else {
        return expired_page();
    };
    let Some(oauth_app) = g
        .apps
        .iter()
        .find(|a| a.name == app && a.kind == "oauth")
        .and_then(|a| a.oauth_app.clone())
    else {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "<h1>Not connected</h1><p>This link does not offer that app.</p>".into(),
            &g.origins,
        );
    };
    let actor = Actor::new(ActorKind::ConnectToken, &g.id).unwrap_or_else(|_| Actor::anonymous());
    let account = Engine::connect_account_name(&app, &g.user_tag);
    match crate::grants::start(&state, g.ws, &account, &oauth_app, actor).await {
        Ok(url) => match HeaderValue::from_str(&url) {
            Ok(location) => {
                let mut resp = StatusCode::SEE_OTHER.into_response();
                resp.headers_mut().insert(header::LOCATION, location);
                resp.headers_mut()
                    .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
                resp.headers_mut()
                    .insert("cache-control", HeaderValue::from_static("no-store"));
                resp
            }
            Err(_) => expired_page(),
        },
        Err(e) => page(
            e.status,
            format!("<h1>Not connected</h1><p>{}</p>", esc(&e.message)),
            &g.origins,
        ),
    }
}

#[derive(Debug, Deserialize)]
pub struct PageForm {
    token: SecretString,
    app: String,
    username: Option<String>,
    password: Option<SecretString>,
    key: Option<SecretString>,
}

/// `POST /connect`: the hosted form, posted from the page itself.
pub async fn submit_page(
    State(state): State<AppState>,
    src: Source,
    headers: HeaderMap,
    Form(f): Form<PageForm>,
) -> Response {
    let Ok(g) = grant(&state, f.token.expose_secret()).await else {
        return expired_page();
    };
    // The form is posted from this server's own page: any other origin is a forgery.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let same = |o: &str| o == format!("https://{host}") || o == format!("http://{host}");
    if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !same(o)
    {
        return page(
            StatusCode::FORBIDDEN,
            "<h1>Not sent from this page</h1>".into(),
            &g.origins,
        );
    }
    let empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let password = f.password.filter(|p| !p.expose_secret().is_empty());
    let key = f.key.filter(|k| !k.expose_secret().is_empty());
    let outcome = match credential_of(empty(f.username), password, key) {
        Ok(c) => connect_account(&state, &g, &f.app, c, src.0).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok((_, label)) => page(
            StatusCode::OK,
            format!(
                "<h1>Connected</h1><p>{} is connected. You can close this window.</p>",
                esc(&label)
            ),
            &g.origins,
        ),
        Err(e) => page(
            e.status,
            format!("<h1>Not connected</h1><p>{}</p>", esc(&e.message)),
            &g.origins,
        ),
    }
}
