//! `sealsync serve`: the HTTPS API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use sealsync_server::sso::OidcOptions;
use sealsync_server::{AppState, ServerOptions, Transport, tls};
use secrecy::ExposeSecret as _;

use crate::cmd::identity::retire_signing_keys;
use crate::context::Context;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
    listen: SocketAddr,
    /// PEM certificate chain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Use (and on first start, make) a self-signed certificate for localhost, kept in the
    /// data directory. For trying sealsync out; clients must trust that certificate.
    #[arg(long, conflicts_with_all = ["tls_cert", "insecure_http_loopback"])]
    tls_self_signed: bool,
    /// Serve plain HTTP. Refused unless the address is loopback; never for production.
    #[arg(long, conflicts_with_all = ["tls_cert"])]
    insecure_http_loopback: bool,
    /// Public base URL, used as the token issuer (default: https://<listen address>).
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Where endpoints created through the API keep their files, one folder per workspace
    /// (default: the data directory's `files` folder).
    #[arg(long, value_name = "DIR")]
    files_root: Option<PathBuf>,
    /// Single sign-on: the OpenID provider's issuer URL (https). Users sign in at
    /// /v1/sso/login; the provider must allow the redirect URL <issuer>/v1/sso/callback.
    #[arg(long, value_name = "URL", requires = "oidc_client_id")]
    oidc_issuer: Option<String>,
    /// Single sign-on: this server's client id at the provider.
    #[arg(long, value_name = "ID", requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// Single sign-on: a file holding the client secret (or set SEALSYNC_OIDC_CLIENT_SECRET).
    #[arg(long, value_name = "FILE", requires = "oidc_issuer")]
    oidc_client_secret_file: Option<PathBuf>,
}

/// The SSO settings, with the client secret from a file or the environment.
fn oidc_options(args: &ServeArgs, issuer: &str) -> anyhow::Result<Option<OidcOptions>> {
    let (Some(oidc_issuer), Some(client_id)) = (&args.oidc_issuer, &args.oidc_client_id) else {
        return Ok(None);
    };
    let secret = match &args.oidc_client_secret_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the SSO client secret from {}", f.display()))?
            .trim()
            .to_owned(),
        None => std::env::var("SEALSYNC_OIDC_CLIENT_SECRET").map_err(|_| {
            anyhow::anyhow!(
                "single sign-on needs the client secret: --oidc-client-secret-file FILE or SEALSYNC_OIDC_CLIENT_SECRET"
            )
        })?,
    };
    Ok(Some(OidcOptions {
        issuer: oidc_issuer.clone(),
        client_id: client_id.clone(),
        client_secret: secret.into(),
        redirect_url: format!("{}/v1/sso/callback", issuer.trim_end_matches('/')),
    }))
}

pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let transport = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Transport::Tls(tls::config_from_files(cert, key)?),
        _ if args.tls_self_signed => Transport::Tls(self_signed(&ctx.data_dir)?),
        _ if args.insecure_http_loopback => {
            if !args.listen.ip().is_loopback() {
                bail!(
                    "--insecure-http-loopback needs a loopback address (127.0.0.1 or ::1), not {}",
                    args.listen
                );
            }
            Transport::InsecureHttpLoopback
        }
        _ => bail!(
            "choose how to serve: --tls-cert FILE --tls-key FILE, or --tls-self-signed (or, on loopback only, --insecure-http-loopback)"
        ),
    };
    let scheme = if matches!(transport, Transport::Tls(_)) {
        "https"
    } else {
        "http"
    };
    let hub = ctx.hub().await?;
    let retired = retire_signing_keys(&hub).await?;
    if !retired.is_empty() {
        tracing::info!(
            ?retired,
            "Destroyed signing keys whose tokens have all expired."
        );
    }
    let listener = sealsync_server::bind(args.listen, &transport)?;
    let bound = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{bound}"));
    let options = ServerOptions {
        files_root: Some(
            args.files_root
                .clone()
                .unwrap_or_else(|| ctx.data_dir.join("files")),
        ),
        region: ctx.default_region(),
        oidc: oidc_options(&args, &issuer)?,
    };
    let state = AppState::with_options(hub.clone(), issuer.clone(), options)
        .await
        .context("cannot prepare the server")?;
    let tls_on = matches!(transport, Transport::Tls(_));
    // A signing key added by `sealsync keys rotate-signing` is picked up within a minute.
    let reloader = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = state.reload_token_keys().await {
                    tracing::warn!(error = %e, "Could not reload the token signing keys.");
                }
            }
        })
    };
    // Outgoing webhook deliveries: sent when due, retried for a day.
    let deliveries = sealsync_server::deliveries::spawn_delivery_loop(state.clone());
    let app = sealsync_server::router(state, tls_on);
    let running = sealsync_server::serve_on(listener, transport, app)?;
    eprintln!(
        "sealsync API listening on {scheme}://{} (issuer {issuer}); Ctrl-C stops it.",
        running.addr
    );
    shutdown_signal().await;
    eprintln!("Stopping: finishing requests in flight (up to 10 s).");
    running.shutdown(Duration::from_secs(10)).await;
    reloader.abort();
    deliveries.abort();
    hub.store().close().await;
    Ok(ExitCode::SUCCESS)
}

/// The self-signed certificate in `DIR/tls/`, made on first use (key file 0600).
fn self_signed(data_dir: &Path) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    let dir = data_dir.join("tls");
    let cert = dir.join("self-signed.crt");
    let key = dir.join("self-signed.key");
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let made = tls::self_signed()?;
        write_private(&key, made.key_pem.expose_secret().as_bytes())?;
        std::fs::write(&cert, made.cert_pem.as_bytes())
            .with_context(|| format!("cannot write {}", cert.display()))?;
        eprintln!(
            "Made a self-signed certificate: {} (trust it in your client).",
            cert.display()
        );
    }
    Ok(tls::config_from_files(&cert, &key)?)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
