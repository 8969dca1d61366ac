//! Shared server state: the hub, token keys, cached workspace keys, metrics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use sealsync_audit::{AuditEvent, AuditKeys, AuditLog};
use sealsync_auth::TokenKeys;
use sealsync_crypto::WorkspaceKeys;
use sealsync_store::{Hub, KeyPurpose, StoreError};
use sealsync_types::WorkspaceId;

/// How long unwrapped workspace keys are reused before asking the key provider again (so a
/// rotation or a deletion reaches a running server within this time).
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// Requests per second, per client address, on the OAuth endpoints (each may cost an argon2id
/// verification), with this burst.
const OAUTH_PER_SECOND: u32 = 5;
const OAUTH_BURST: u32 = 20;
/// Failed authentications per minute, per client address, before further attempts from it are
/// answered 429 without being checked.
const FAILURES_PER_MINUTE: u32 = 30;

/// Password logins per minute, per client address (each costs an argon2id verification).
const LOGINS_PER_MINUTE: u32 = 20;

type IpLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// How long a checked credential (and a member's role) is reused without asking the database
/// again. A revocation or role change made through this server takes effect at once (the
/// cache is emptied); one made by another process (the CLI, another server) within this time.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(2);
/// Entries held at most; the cache is emptied when full.
const AUTH_CACHE_MAX: usize = 10_000;

/// Recently checked credentials, by the SHA-256 of what was presented, and members' roles.
#[derive(Default)]
pub(crate) struct AuthCache {
    principals: HashMap<[u8; 32], (Instant, sealsync_auth::Principal)>,
    roles: HashMap<(WorkspaceId, sealsync_types::UserId), (Instant, Option<sealsync_types::Role>)>,
}

/// How a server is set up beyond its database and issuer.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Where endpoints created through the API keep their files: one folder per workspace
    /// below this one, and nothing outside it. `None`: the API creates no file endpoints.
    pub files_root: Option<PathBuf>,
    /// The region assumed for phone numbers written without a country code.
    pub region: Option<String>,
    /// Single sign-on with this OpenID provider.
    pub oidc: Option<crate::sso::OidcOptions>,
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub hub: Hub,
    pub tokens: RwLock<Arc<TokenKeys>>,
    pub keys: Mutex<HashMap<WorkspaceId, (Instant, Arc<WorkspaceKeys>)>>,
    pub metrics: Option<PrometheusHandle>,
    pub audit: AuditLog,
    pub oauth_limit: IpLimiter,
    pub failure_limit: IpLimiter,
    pub login_limit: IpLimiter,
    pub options: ServerOptions,
    pub sso: Option<crate::sso::Sso>,
    pub auth_cache: Mutex<AuthCache>,
    pub hooks: crate::hooks::Hooks,
    pub grants: crate::grants::Flows,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// State for a server over `hub`, issuing tokens as `issuer` (its public base URL).
    /// Makes the first signing key when there is none.
    pub async fn new(hub: Hub, issuer: String) -> Result<Self, StoreError> {
        Self::with_options(hub, issuer, ServerOptions::default()).await
    }

    /// [`AppState::new`] with `options`.
    pub async fn with_options(
        hub: Hub,
        issuer: String,
        options: ServerOptions,
    ) -> Result<Self, StoreError> {
        let tokens = load_token_keys(&hub, &issuer).await?;
        hub.ensure_installation_key(KeyPurpose::Audit).await?;
        let audit_keys = hub.installation_keys(KeyPurpose::Audit).await?;
        let audit_keys = AuditKeys::new(audit_keys.into_iter().map(|(v, k, _)| (v, k)))
            .map_err(|e| StoreError::Other(format!("audit keys: {e}")))?;
        let audit = AuditLog::new(hub.store().clone(), audit_keys);
        let sso = match options.oidc.clone() {
            Some(o) => Some(crate::sso::Sso::new(o).map_err(|e| StoreError::Other(e.to_string()))?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                oauth_limit: governor::RateLimiter::keyed(
                    governor::Quota::per_second(nonzero(OAUTH_PER_SECOND))
                        .allow_burst(nonzero(OAUTH_BURST)),
                ),
                failure_limit: governor::RateLimiter::keyed(governor::Quota::per_minute(nonzero(
                    FAILURES_PER_MINUTE,
                ))),
                login_limit: governor::RateLimiter::keyed(governor::Quota::per_minute(nonzero(
                    LOGINS_PER_MINUTE,
                ))),
                audit,
                hub,
                tokens: RwLock::new(Arc::new(tokens)),
                keys: Mutex::new(HashMap::new()),
                metrics: crate::metrics::handle(),
                options,
                sso,
                auth_cache: Mutex::new(AuthCache::default()),
                hooks: crate::hooks::Hooks::default(),
                grants: crate::grants::Flows::default(),
            }),
        })
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    /// Appends an audit entry. The action it records has already happened, so a failure is
    /// logged and counted (and alerts should watch that counter) rather than undoing it.
    pub async fn audit(&self, event: AuditEvent) {
        if let Err(e) = self.inner.audit.append(event).await {
            tracing::error!(error = %e, "An audit entry could not be written.");
            metrics::counter!("sealsync_audit_failures_total").increment(1);
        }
    }

    /// Whether `ip` may make another OAuth request now.
    pub(crate) fn oauth_allowed(&self, ip: Option<std::net::IpAddr>) -> bool {
        ip.is_none_or(|ip| self.inner.oauth_limit.check_key(&ip).is_ok())
    }

    /// Counts a failed authentication from `ip`; `false` once it has failed too often.
    pub(crate) fn failure_allowed(&self, ip: Option<std::net::IpAddr>) -> bool {
        ip.is_none_or(|ip| self.inner.failure_limit.check_key(&ip).is_ok())
    }

    /// Whether `ip` may try another password login now.
    pub(crate) fn login_allowed(&self, ip: Option<std::net::IpAddr>) -> bool {
        ip.is_none_or(|ip| self.inner.login_limit.check_key(&ip).is_ok())
    }

    /// The signing keys in use.
    pub fn token_keys(&self) -> Arc<TokenKeys> {
        self.tokens()
    }

    pub(crate) fn tokens(&self) -> Arc<TokenKeys> {
        match self.inner.tokens.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads signing keys from the keystore (after a rotation by the CLI).
    pub async fn reload_token_keys(&self) -> Result<(), StoreError> {
        let issuer = self.tokens().issuer().to_owned();
        let fresh = Arc::new(load_token_keys(&self.inner.hub, &issuer).await?);
        match self.inner.tokens.write() {
            Ok(mut t) => *t = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// A credential checked within the last moments (and still within its own lifetime).
    pub(crate) fn cached_principal(
        &self,
        presented: &[u8; 32],
    ) -> Option<sealsync_auth::Principal> {
        let cache = self.inner.auth_cache.lock().ok()?;
        let (until, p) = cache.principals.get(presented)?;
        (Instant::now() < *until).then(|| p.clone())
    }

    /// Remembers a checked credential until `valid_for` ends (at most the cache's lifetime).
    pub(crate) fn cache_principal(
        &self,
        presented: [u8; 32],
        p: &sealsync_auth::Principal,
        valid_for: Duration,
    ) {
        if let Ok(mut cache) = self.inner.auth_cache.lock() {
            if cache.principals.len() >= AUTH_CACHE_MAX {
                cache.principals.clear();
            }
            let until = Instant::now() + valid_for.min(AUTH_CACHE_TTL);
            cache.principals.insert(presented, (until, p.clone()));
        }
    }

    /// A member's role, from the cache when fresh.
    pub(crate) async fn member_role(
        &self,
        ws: WorkspaceId,
        user: sealsync_types::UserId,
    ) -> Result<Option<sealsync_types::Role>, StoreError> {
        if let Ok(cache) = self.inner.auth_cache.lock()
            && let Some((until, role)) = cache.roles.get(&(ws, user))
            && Instant::now() < *until
        {
            return Ok(*role);
        }
        let role = self.inner.hub.store().member_role(ws, user).await?;
        if let Ok(mut cache) = self.inner.auth_cache.lock() {
            if cache.roles.len() >= AUTH_CACHE_MAX {
                cache.roles.clear();
            }
            cache
                .roles
                .insert((ws, user), (Instant::now() + AUTH_CACHE_TTL, role));
        }
        Ok(role)
    }

    /// Forgets every cached credential and role: after a revocation, a sign-out or a change
    /// of membership.
    pub(crate) fn forget_credentials(&self) {
        if let Ok(mut cache) = self.inner.auth_cache.lock() {
            cache.principals.clear();
            cache.roles.clear();
        }
    }

    /// Drops a workspace's cached keys (after it is deleted).
    pub(crate) fn forget_workspace_keys(&self, ws: WorkspaceId) {
        if let Ok(mut cache) = self.inner.keys.lock() {
            cache.remove(&ws);
        }
    }

    /// The workspace's unwrapped keys, from the cache when fresh.
    pub(crate) async fn workspace_keys(
        &self,
        ws: WorkspaceId,
    ) -> Result<Arc<WorkspaceKeys>, StoreError> {
        if let Ok(cache) = self.inner.keys.lock()
            && let Some((at, keys)) = cache.get(&ws)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(keys.clone());
        }
        let keys = Arc::new(self.inner.hub.workspace_keys(ws).await?);
        if let Ok(mut cache) = self.inner.keys.lock() {
            cache.insert(ws, (Instant::now(), keys.clone()));
        }
        Ok(keys)
    }
}

/// The installation's signing keys; the first one is made on first use.
pub async fn load_token_keys(hub: &Hub, issuer: &str) -> Result<TokenKeys, StoreError> {
    hub.ensure_installation_key(KeyPurpose::Signing).await?;
    let seeds = hub.installation_keys(KeyPurpose::Signing).await?;
    TokenKeys::from_seeds(issuer, seeds)
        .map_err(|e| StoreError::Other(format!("token signing keys: {e}")))
}

fn nonzero(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN)
}

/// Where sync runs go: a runtime of their own, on its own thread. A run has long stretches of
/// work between awaits (listing, matching, planning thousands of items); on the request
/// runtime it would hold a worker and stall the requests queued on it, here the system
/// scheduler shares the cores between them.
pub(crate) fn background() -> tokio::runtime::Handle {
    static RUNS: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    let runtime = RUNS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sealsync-runs")
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "No runtime for sync runs: they share the request runtime."))
            .ok()
    });
    match runtime {
        Some(rt) => rt.handle().clone(),
        None => tokio::runtime::Handle::current(),
    }
}
