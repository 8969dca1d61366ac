//! The sealsync HTTPS API: router, TLS, authentication and the outer protections.
//!
//! - [`router`]: every route behind one stack of layers — security headers (HSTS, no sniffing,
//!   no framing, no referrer, no caching by default), a request body limit, a timeout, request
//!   ids, request metrics, and `Authorization` marked sensitive so it is never logged.
//! - [`serve`]: TLS 1.2/1.3 (rustls on aws-lc-rs), or plain HTTP only on a loopback address and
//!   only when asked with `insecure_http_loopback`; graceful shutdown.
//! - Handlers parse, check the policy ([`auth::require`]) and call the store or the identity
//!   directory; they hold no business rules of their own.
//!
//! Never logs a request body, a query string, a credential or a contact field.

pub mod auth;
pub mod connect;
pub mod deliveries;
pub mod error;
pub mod grants;
pub mod hooks;
mod json;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod routes;
pub mod session;
pub mod sso;
pub mod state;
pub mod tls;
pub mod v1;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

pub use state::{AppState, ServerOptions};

/// Largest request body accepted (a vCard with a photo fits; a flood does not).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A request that takes longer than this is answered 408 and dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The full application: API routes, health, metrics and every protective layer.
pub fn router(state: AppState, tls: bool) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let mut app = routes::api()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .fallback(error::fallback)
        .with_state(state)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]));
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    if tls {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ));
    }
    app
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi::document())
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers and signing keys are loaded.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.hub().store().workspaces().await.is_ok();
    let keys = state.tokens().current().is_some();
    if db && keys {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    match &state.inner.metrics {
        Some(h) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

/// How the listener speaks.
#[derive(Debug)]
pub enum Transport {
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP; refused unless the address is loopback.
    InsecureHttpLoopback,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("plain HTTP is allowed only on a loopback address (127.0.0.1 or ::1), not {0}")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server: its address, and a handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub handle: axum_server::Handle<SocketAddr>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish (up to `grace`), then returns.
    pub async fn shutdown(self, grace: Duration) {
        self.handle.graceful_shutdown(Some(grace));
        let _ = self.task.await;
    }
}

/// Binds and starts serving; returns once the listener is up.
pub async fn serve(
    addr: SocketAddr,
    transport: Transport,
    app: Router,
) -> Result<Running, ServeError> {
    let listener = bind(addr, &transport)?;
    serve_on(listener, transport, app)
}

/// Binds the listening socket (so the caller learns the port before building the app).
/// Refuses plain HTTP off loopback.
pub fn bind(addr: SocketAddr, transport: &Transport) -> Result<std::net::TcpListener, ServeError> {
    if matches!(transport, Transport::InsecureHttpLoopback) && !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback(addr));
    }
    std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })
}

/// Serves on a bound listener.
pub fn serve_on(
    listener: std::net::TcpListener,
    transport: Transport,
    app: Router,
) -> Result<Running, ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    if matches!(transport, Transport::InsecureHttpLoopback) && !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback(addr));
    }
    let handle = axum_server::Handle::new();
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let task = match transport {
        Transport::Tls(config) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_config(config);
            let server = axum_server::tls_rustls::from_tcp_rustls(listener, tls)
                .map_err(|source| ServeError::Bind { addr, source })?
                .handle(handle.clone());
            tokio::spawn(server.serve(make))
        }
        Transport::InsecureHttpLoopback => {
            let server = axum_server::from_tcp(listener)
                .map_err(|source| ServeError::Bind { addr, source })?
                .handle(handle.clone());
            tokio::spawn(server.serve(make))
        }
    };
    Ok(Running { addr, handle, task })
}
