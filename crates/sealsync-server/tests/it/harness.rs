//! `spawn_app`: the real server on 127.0.0.1:0 over TLS, a fresh SQLite (or PostgreSQL)
//! database, and a reqwest client that trusts only the test certificate.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use sealsync_auth::directory;
use sealsync_auth::{ScopeSet, TokenKeys};
use sealsync_crypto::LocalKeyfile;
use sealsync_server::{AppState, Running, ServerOptions, Transport};
use sealsync_store::{Hub, Store, StoreConfig};
use sealsync_types::{Role, UserId, WorkspaceId, WorkspaceName};
use secrecy::ExposeSecret;
use serde_json::Value;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub hub: Hub,
    pub state: AppState,
    /// The `default` workspace.
    pub ws: WorkspaceId,
    /// A second workspace, for cross-tenant checks.
    pub other_ws: WorkspaceId,
    running: Option<Running>,
    pub dir: tempfile::TempDir,
}

pub const ISSUER: &str = "https://sealsync.test";

pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServerOptions::default()).await
}

/// With `options` (a files folder in the test's directory is added when none is given).
pub async fn spawn_app_with(options: ServerOptions) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = sealsync_store::testing::sqlite_config(dir.path());
    spawn_with(dir, config, options).await
}

/// On PostgreSQL when `SEALSYNC_TEST_DATABASE_URL` is set.
pub async fn spawn_app_pg() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = sealsync_store::testing::postgres_config()
        .await
        .unwrap()
        .expect("SEALSYNC_TEST_DATABASE_URL is set for pg tests");
    spawn_with(dir, config, ServerOptions::default()).await
}

async fn spawn_with(
    dir: tempfile::TempDir,
    config: StoreConfig,
    mut options: ServerOptions,
) -> TestApp {
    let keyfile = LocalKeyfile::create(&dir.path().join("master.key")).unwrap();
    let store = Store::open(&config).await.unwrap();
    let hub = Hub::new(store, Arc::new(keyfile));
    let (ws, _) = hub
        .ensure_workspace(&WorkspaceName::default_workspace())
        .await
        .unwrap();
    let (other, _) = hub
        .ensure_workspace(&WorkspaceName::parse("other").unwrap())
        .await
        .unwrap();
    if options.files_root.is_none() {
        options.files_root = Some(dir.path().join("files"));
    }
    let state = AppState::with_options(hub.clone(), ISSUER.into(), options)
        .await
        .unwrap();
    let cert = sealsync_server::tls::self_signed().unwrap();
    let tls = sealsync_server::tls::config_from_pem(
        cert.cert_pem.as_bytes(),
        cert.key_pem.expose_secret().as_bytes(),
    )
    .unwrap();
    let app = sealsync_server::router(state.clone(), true);
    let running = sealsync_server::serve("127.0.0.1:0".parse().unwrap(), Transport::Tls(tls), app)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap()])
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        base: format!("https://localhost:{}", running.addr.port()),
        http,
        hub,
        state,
        ws: ws.id,
        other_ws: other.id,
        running: Some(running),
        dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self, ws: WorkspaceId, rest: &str) -> String {
        self.url(&format!("/v1/workspaces/{ws}{rest}"))
    }

    /// A user with `role` in `ws` and an API key holding `scopes` (unchecked against the role,
    /// so the policy is what is tested).
    pub async fn user_key(
        &self,
        ws: WorkspaceId,
        role: Role,
        scopes: ScopeSet,
    ) -> (UserId, String) {
        let email = format!("{}@example.test", uuid::Uuid::new_v4().simple());
        let user = directory::create_user(&self.hub, &email, None, Some((ws, role)))
            .await
            .unwrap();
        let (_, secret) = directory::create_api_key(&self.hub, ws, user.id, "test", &scopes, None)
            .await
            .unwrap();
        (user.id, secret.token.expose_secret().to_owned())
    }

    /// An owner's key with every scope.
    pub async fn owner_key(&self, ws: WorkspaceId) -> String {
        self.user_key(ws, Role::Owner, ScopeSet::all()).await.1
    }

    /// An OAuth client made through the API by an owner: (client_id, secret).
    pub async fn client(&self, ws: WorkspaceId, scopes: &[&str]) -> (String, String) {
        let key = self.owner_key(ws).await;
        let resp = self
            .http
            .post(self.ws_url(ws, "/clients"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"name": "etl", "scopes": scopes}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let v: Value = resp.json().await.unwrap();
        (
            v["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().unwrap().to_owned(),
        )
    }

    /// A token by the client-credentials grant.
    pub async fn token(&self, id: &str, secret: &str, scope: Option<&str>) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.http
            .post(self.url("/oauth/token"))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    pub async fn access_token(&self, ws: WorkspaceId, scopes: &[&str]) -> String {
        let (id, secret) = self.client(ws, scopes).await;
        let resp = self.token(&id, &secret, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    pub fn token_keys(&self) -> Arc<TokenKeys> {
        self.state.token_keys()
    }

    /// The audit log, opened as an auditor would.
    pub async fn audit_log(&self) -> sealsync_audit::AuditLog {
        let keys = self
            .hub
            .installation_keys(sealsync_store::KeyPurpose::Audit)
            .await
            .unwrap();
        let keys =
            sealsync_audit::AuditKeys::new(keys.into_iter().map(|(v, k, _)| (v, k))).unwrap();
        sealsync_audit::AuditLog::new(self.hub.store().clone(), keys)
    }

    /// Every entry of a chain, as JSON, after checking the chain is intact.
    pub async fn audit_entries(&self, chain: WorkspaceId) -> Vec<Value> {
        let log = self.audit_log().await;
        let report = log.verify(chain).await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        log.page(chain, None, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| serde_json::to_value(&e.event).unwrap())
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// Asserts the error envelope and code.
pub async fn assert_error(resp: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string());
}
