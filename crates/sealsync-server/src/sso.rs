//! Single sign-on with OpenID Connect: the authorization code flow with PKCE (S256), `state`
//! bound to the browser by a cookie, and a `nonce` checked in the ID token.
//!
//! An account at the identity provider signs in as the sealsync user it was bound to on its
//! first login. That first binding needs a user with the same email, verified by the provider
//! (`email_verified: true`): single sign-on never creates users, an owner invites them. The
//! binding is kept as SHA-256 over issuer and subject, so a later change of email at the
//! provider changes nothing here. Second factors are the provider's business: local TOTP
//! applies to password logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};
use sealsync_audit::{Action, Outcome, ReasonCode};
use sealsync_auth::credential::{hashes_equal, sha256};
use sealsync_auth::directory::normalize_login;
use sealsync_auth::jwt::now_secs;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::auth::Source;
use crate::error::ApiError;
use crate::session::{named_cookie, start_session, user_event};
use crate::state::AppState;

/// The cookie that binds a login in progress to the browser that started it.
const STATE_COOKIE: &str = "ss_sso";
/// How long a started login may take at the provider.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// Logins in progress held at once; more are refused until some finish or expire.
const PENDING_MAX: usize = 10_000;
/// How long the provider's metadata and keys are reused.
const METADATA_FOR: Duration = Duration::from_secs(3600);

/// An OpenID provider to sign in with.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    /// The provider's issuer URL: `https://…`, or `http://` on a loopback address.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Where the provider sends the browser back: `{public base URL}/v1/sso/callback`.
    pub redirect_url: String,
}

/// Why single sign-on could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SsoConfigError {
    #[error("OpenID issuer {0:?} is not a URL")]
    Issuer(String),
    #[error(
        "OpenID issuer {0:?} must use https (plain http only on a loopback address, for testing)"
    )]
    Insecure(String),
    #[error("SSO redirect URL {0:?} is not a URL")]
    Redirect(String),
    #[error("cannot build the HTTP client for the OpenID provider: {0}")]
    Client(String),
}

struct Pending {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    at: Instant,
}

/// A client built from discovered metadata: authorization endpoint set, token and userinfo
/// endpoints as the provider announced them.
type RelyingParty = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Single sign-on against one provider.
pub(crate) struct Sso {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: SecretString,
    redirect: RedirectUrl,
    http: Http,
    metadata: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Sso {
    pub(crate) fn new(o: OidcOptions) -> Result<Self, SsoConfigError> {
        let issuer = IssuerUrl::new(o.issuer.clone())
            .map_err(|_| SsoConfigError::Issuer(o.issuer.clone()))?;
        let url = issuer.url();
        let loopback = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(SsoConfigError::Insecure(o.issuer)),
        }
        let redirect = RedirectUrl::new(o.redirect_url.clone())
            .map_err(|_| SsoConfigError::Redirect(o.redirect_url.clone()))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .https_only(!loopback)
            .build()
            .map_err(|e| SsoConfigError::Client(e.to_string()))?;
        Ok(Self {
            issuer,
            client_id: ClientId::new(o.client_id),
            client_secret: o.client_secret,
            redirect,
            http: Http(http),
            metadata: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The provider's metadata (and signing keys), fetched again after an hour.
    async fn metadata(&self) -> Result<CoreProviderMetadata, ApiError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, md)) = cached.as_ref()
            && at.elapsed() < METADATA_FOR
        {
            return Ok(md.clone());
        }
        let md = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "The OpenID provider could not be discovered.");
                unavailable()
            })?;
        *cached = Some((Instant::now(), md.clone()));
        Ok(md)
    }

    /// The relying-party client for the provider, with our redirect URL.
    async fn client(&self) -> Result<RelyingParty, ApiError> {
        Ok(CoreClient::from_provider_metadata(
            self.metadata().await?,
            self.client_id.clone(),
            Some(ClientSecret::new(
                self.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    fn remember(&self, state: String, p: Pending) -> Result<(), ApiError> {
        let mut pending = self.pending.lock().map_err(|_| unavailable())?;
        pending.retain(|_, p| p.at.elapsed() < PENDING_FOR);
        if pending.len() >= PENDING_MAX {
            return Err(ApiError::rate_limited());
        }
        pending.insert(state, p);
        Ok(())
    }

    fn take(&self, state: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().ok()?;
        pending
            .remove(state)
            .filter(|p| p.at.elapsed() < PENDING_FOR)
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "sso_unavailable",
        "the identity provider cannot be reached; try again later",
    )
}

fn sso_failed() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "sso_failed",
        "single sign-on did not complete; start again",
    )
}

fn sso_of(state: &AppState) -> Result<&Sso, ApiError> {
    state.inner.sso.as_ref().ok_or_else(ApiError::not_found)
}

/// `GET /v1/sso/login`: sends the browser to the identity provider.
#[utoipa::path(get, path = "/v1/sso/login", tag = "session", responses((status = 303, description = "To the identity provider", headers(("location" = String), ("set-cookie" = String, description = "Binds the login to this browser"))), crate::openapi::ApiErrors), security(()))]
pub async fn login(
    State(state): State<AppState>,
    Source(src): Source,
) -> Result<Response, ApiError> {
    let sso = sso_of(&state)?;
    if !state.login_allowed(src) {
        return Err(ApiError::rate_limited());
    }
    let client = sso.client().await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    sso.remember(
        csrf.secret().clone(),
        Pending {
            verifier,
            nonce,
            at: Instant::now(),
        },
    )?;
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(url.as_str()).map_err(|e| ApiError::internal(&e))?,
    );
    // Lax: the provider's redirect back is a cross-site top-level navigation.
    let cookie = format!(
        "{STATE_COOKIE}={}; Path=/v1/sso; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
        csrf.secret(),
        PENDING_FOR.as_secs()
    );
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(&e))?,
    );
    Ok(resp)
}

/// What the provider sends back.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// The provider's issuer (RFC 9207), checked when present.
    iss: Option<String>,
    /// Set when the provider refused (for example `access_denied`).
    error: Option<String>,
}

/// `GET /v1/sso/callback`: the provider sends the browser back here; on success the answer
/// carries a new session cookie.
#[utoipa::path(get, path = "/v1/sso/callback", tag = "session", params(CallbackQuery), responses((status = 200, body = crate::session::SessionOut, headers(("set-cookie" = String, description = "The session cookie"))), crate::openapi::ApiErrors), security(()))]
pub async fn callback(
    State(state): State<AppState>,
    Source(src): Source,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let sso = sso_of(&state)?;
    let Ok(Query(q)) = query else {
        return Err(ApiError::bad_request(
            "the callback's query is not readable",
        ));
    };
    let deny = |reason: &'static str| {
        let state = state.clone();
        async move {
            state
                .audit(
                    user_event(None, Action::LoginFailed, src)
                        .with_outcome(Outcome::Denied, ReasonCode::parse(reason).ok()),
                )
                .await;
            sso_failed()
        }
    };
    // The login must have been started by this browser, here, recently.
    let (Some(given), Some(cookie)) = (q.state.as_deref(), named_cookie(&headers, STATE_COOKIE))
    else {
        return Err(deny("sso_state").await);
    };
    if !hashes_equal(&sha256(given.as_bytes()), &sha256(cookie.as_bytes())) {
        return Err(deny("sso_state").await);
    }
    let Some(pending) = sso.take(given) else {
        return Err(deny("sso_state").await);
    };
    if q.error.is_some() {
        return Err(deny("sso_denied").await);
    }
    if q.iss
        .as_deref()
        .is_some_and(|iss| iss != sso.issuer.as_str())
    {
        return Err(deny("sso_issuer").await);
    }
    let Some(code) = q.code else {
        return Err(deny("sso_denied").await);
    };
    let client = sso.client().await?;
    let exchanged = match client.exchange_code(AuthorizationCode::new(code)) {
        Ok(req) => {
            req.set_pkce_verifier(pending.verifier)
                .request_async(&sso.http)
                .await
        }
        Err(_) => return Err(deny("sso_token").await),
    };
    let tokens = match exchanged {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "The OpenID provider refused the code exchange.");
            return Err(deny("sso_token").await);
        }
    };
    let Some(id_token) = tokens.id_token() else {
        return Err(deny("sso_token").await);
    };
    let verifier = client.id_token_verifier();
    let claims = match id_token.claims(&verifier, &pending.nonce) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "An ID token failed verification.");
            return Err(deny("sso_token").await);
        }
    };
    let account =
        sha256(format!("{}\u{1f}{}", sso.issuer.as_str(), claims.subject().as_str()).as_bytes());
    let store = state.hub().store();
    let now = now_secs();
    let user = match store.sso_login(&account, now).await? {
        Some(u) => store.user_by_id(u).await?,
        None => {
            // First login: bind to the user with this email, if the provider vouches for it.
            let email = claims
                .email()
                .filter(|_| claims.email_verified() == Some(true))
                .and_then(|e| normalize_login(e.as_str()).ok());
            let Some(email) = email else {
                return Err(deny("sso_unknown").await);
            };
            let user = store.user_by_email(&email).await?;
            if let Some(u) = &user
                && u.disabled_at.is_none()
            {
                store.bind_sso(&account, u.id, now).await?;
            }
            user
        }
    };
    let Some(user) = user.filter(|u| u.disabled_at.is_none()) else {
        return Err(deny("sso_unknown").await);
    };
    let mut resp = start_session(&state, &headers, user.id, src).await?;
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "ss_sso=; Path=/v1/sso; HttpOnly; Secure; SameSite=Lax; Max-Age=0",
        ),
    );
    Ok(resp)
}

/// The provider is called through our own reqwest client (rustls on aws-lc-rs, no redirects,
/// a timeout).
struct Http(reqwest::Client);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = reqwest::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let resp = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut out = HttpResponse::new(Vec::new());
            *out.status_mut() = resp.status();
            *out.headers_mut() = resp.headers().clone();
            *out.body_mut() = resp.bytes().await?.to_vec();
            Ok(out)
        })
    }
}
