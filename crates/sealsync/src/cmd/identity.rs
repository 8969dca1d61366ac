//! `sealsync user add`, `sealsync apikey create|list|revoke`, `sealsync client
//! create|list|revoke|rotate-secret`, and `sealsync keys rotate-signing`.
//!
//! A new secret (API key, client secret) is printed once, on standard output, and never again;
//! listings show ids and metadata only. Every change is audited.

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use sealsync_audit::{Action, ResourceKind};
use sealsync_auth::directory;
use sealsync_auth::jwt::now_secs;
use sealsync_auth::{ClientId, KeyId, ScopeSet, TokenKeys};
use sealsync_store::{Hub, KeyPurpose};
use sealsync_types::{Role, UserId, WorkspaceId};
use secrecy::{ExposeSecret as _, SecretString};

use crate::cmd::audit;
use crate::context::{Context, workspace_name};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user, optionally as a member of a workspace. With --password-stdin the password
    /// is read from standard input (first line); without it the user signs in by single
    /// sign-on or gets a password later.
    Add {
        email: String,
        /// Role in the workspace: owner, admin, member or viewer.
        #[arg(long, default_value = "member")]
        role: Role,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Users of a workspace and their roles.
    List {
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Make an API key for a user in a workspace; the key is printed once.
    Create {
        /// The user the key acts as (email).
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. contacts:read,contacts:write; each must be within the
        /// user's role.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Days until the key expires.
        #[arg(long, value_name = "DAYS")]
        expires_days: Option<u32>,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A user's keys in a workspace: id, name, scopes, created, expiry, last use.
    List {
        #[arg(long)]
        user: String,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (as listed).
    Revoke {
        id: String,
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Make an OAuth client (client-credentials grant); its id and secret are printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated scopes the client may ask for.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The workspace's clients.
    List {
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client and every token it holds.
    Revoke { client_id: String },
    /// Give a client a new secret (printed once); the old one stops working at once.
    RotateSecret {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
}

async fn ws_of(hub: &Hub, name: Option<&str>) -> anyhow::Result<WorkspaceId> {
    let name = workspace_name(name)?;
    Ok(hub
        .store()
        .workspace_by_name(&name)
        .await?
        .with_context(|| format!("no workspace named {name:?}"))?
        .id)
}

async fn user_by_email(hub: &Hub, email: &str) -> anyhow::Result<UserId> {
    let email = directory::normalize_login(email)?;
    Ok(hub
        .store()
        .user_by_email(&email)
        .await?
        .context("no user with that email; add one with `sealsync user add`")?
        .id)
}

fn scopes(list: &[String]) -> anyhow::Result<ScopeSet> {
    ScopeSet::parse(&list.join(" ")).map_err(|e| anyhow::anyhow!("{e}"))
}

fn when(t: Option<i64>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
}

pub async fn user(ctx: &Context, command: UserCommand) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    match command {
        UserCommand::Add {
            email,
            role,
            workspace,
            password_stdin,
        } => {
            let ws = ws_of(&hub, workspace.as_deref()).await?;
            let password = if password_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the password from standard input")?;
                let line = text.lines().next().unwrap_or_default().to_owned();
                if line.chars().count() < 12 {
                    bail!("the password must be at least 12 characters");
                }
                Some(SecretString::from(line))
            } else {
                if std::io::stdin().is_terminal() {
                    eprintln!(
                        "No password set (use --password-stdin to set one); the user can sign in by single sign-on."
                    );
                }
                None
            };
            let user = directory::create_user(&hub, &email, password, Some((ws, role))).await?;
            audit::record(
                &hub,
                audit::cli_event(
                    None,
                    Action::UserCreated,
                    ResourceKind::User,
                    &user.id.to_string(),
                )?,
            )
            .await?;
            audit::record(
                &hub,
                audit::cli_event(
                    Some(ws),
                    Action::MemberAdded,
                    ResourceKind::Member,
                    &user.id.to_string(),
                )?,
            )
            .await?;
            println!(
                "Added user {} ({}) as {}.",
                user.email,
                user.id,
                role.as_str()
            );
        }
        UserCommand::List { workspace } => {
            let ws = ws_of(&hub, workspace.as_deref()).await?;
            for (id, role, email) in hub.store().members(ws).await? {
                println!("{email}\t{}\t{id}", role.as_str());
            }
        }
    }
    hub.store().close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn apikey(ctx: &Context, command: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    match command {
        ApiKeyCommand::Create {
            user,
            name,
            scopes: list,
            expires_days,
            workspace,
            json,
        } => {
            let ws = ws_of(&hub, workspace.as_deref()).await?;
            let user = user_by_email(&hub, &user).await?;
            let role = hub
                .store()
                .member_role(ws, user)
                .await?
                .context("that user is not a member of the workspace")?;
            let scopes = scopes(&list)?;
            directory::check_key_scopes(&scopes, role)?;
            let expires = expires_days.map(|d| now_secs() + i64::from(d.clamp(1, 3650)) * 86_400);
            let (row, secret) =
                directory::create_api_key(&hub, ws, user, &name, &scopes, expires).await?;
            audit::record(
                &hub,
                audit::cli_event(
                    Some(ws),
                    Action::ApiKeyCreated,
                    ResourceKind::ApiKey,
                    &secret.id.to_string(),
                )?,
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": secret.id.to_string(),
                        "key": secret.token.expose_secret(),
                        "scopes": row.scopes,
                        "expires_at": row.expires_at,
                    })
                );
            } else {
                println!("{}", secret.token.expose_secret());
                eprintln!(
                    "API key {} created. It is shown only now: store it in a secret manager.",
                    secret.id
                );
            }
        }
        ApiKeyCommand::List {
            user,
            workspace,
            json,
        } => {
            let ws = ws_of(&hub, workspace.as_deref()).await?;
            let user = user_by_email(&hub, &user).await?;
            let rows = hub.store().api_keys_of(ws, user).await?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "id": KeyId::from_bytes(r.id).to_string(),
                            "name": r.name,
                            "scopes": r.scopes,
                            "created_at": r.created_at,
                            "expires_at": r.expires_at,
                            "last_used_at": r.last_used_at,
                            "revoked": r.revoked_at.is_some(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for r in rows {
                    let state = if r.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}\t{}\t{state}\tcreated {}\texpires {}\tlast used {}",
                        KeyId::from_bytes(r.id),
                        r.name,
                        r.scopes,
                        r.created_at,
                        when(r.expires_at),
                        when(r.last_used_at)
                    );
                }
            }
        }
        ApiKeyCommand::Revoke { id, user } => {
            let user = user_by_email(&hub, &user).await?;
            let id = KeyId::parse(&id).map_err(|_| anyhow::anyhow!("not an API key id"))?;
            let row = hub.store().api_key(id.as_bytes()).await?;
            if !hub
                .store()
                .revoke_api_key(user, id.as_bytes(), now_secs())
                .await?
            {
                bail!("that user has no active key with that id");
            }
            let ws = row.map(|r| r.workspace_id);
            audit::record(
                &hub,
                audit::cli_event(
                    ws,
                    Action::ApiKeyRevoked,
                    ResourceKind::ApiKey,
                    &id.to_string(),
                )?,
            )
            .await?;
            println!("Revoked API key {id}.");
        }
    }
    hub.store().close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn client(ctx: &Context, command: ClientCommand) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    match command {
        ClientCommand::Create {
            name,
            scopes: list,
            workspace,
            json,
        } => {
            let ws = ws_of(&hub, workspace.as_deref()).await?;
            let keys = hub.workspace_keys(ws).await?;
            let (row, creds) =
                directory::create_client(&hub, &keys, &name, &scopes(&list)?).await?;
            audit::record(
                &hub,
                audit::cli_event(
                    Some(ws),
                    Action::ClientCreated,
                    ResourceKind::Client,
                    &creds.client_id.to_string(),
                )?,
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "client_id": creds.client_id.to_string(),
                        "client_secret": creds.secret.expose_secret(),
                        "scopes": row.scopes,
                    })
                );
            } else {
                println!("client_id:     {}", creds.client_id);
                println!("client_secret: {}", creds.secret.expose_secret());
                eprintln!("The secret is shown only now: store it in a secret manager.");
            }
        }
        ClientCommand::List { workspace, json } => {
            let ws = ws_of(&hub, workspace.as_deref()).await?;
            let rows = hub.store().clients(ws).await?;
            let id = |r: &sealsync_store::ClientRow| {
                ClientId {
                    workspace: ws,
                    id: r.id,
                }
                .to_string()
            };
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "client_id": id(r),
                            "name": r.name,
                            "scopes": r.scopes,
                            "created_at": r.created_at,
                            "secret_rotated_at": r.secret_rotated_at,
                            "revoked": r.revoked_at.is_some(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for r in &rows {
                    let state = if r.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!("{}\t{}\t{}\t{state}", id(r), r.name, r.scopes);
                }
            }
        }
        ClientCommand::Revoke { client_id } => {
            let c = ClientId::parse(&client_id).map_err(|_| anyhow::anyhow!("not a client id"))?;
            if !hub
                .store()
                .revoke_client(c.workspace, &c.id, now_secs())
                .await?
            {
                bail!("no active client with that id");
            }
            audit::record(
                &hub,
                audit::cli_event(
                    Some(c.workspace),
                    Action::ClientRevoked,
                    ResourceKind::Client,
                    &c.to_string(),
                )?,
            )
            .await?;
            println!("Revoked client {c} and its tokens.");
        }
        ClientCommand::RotateSecret { client_id, json } => {
            let c = ClientId::parse(&client_id).map_err(|_| anyhow::anyhow!("not a client id"))?;
            let keys = hub
                .workspace_keys(c.workspace)
                .await
                .map_err(|_| anyhow::anyhow!("no active client with that id"))?;
            let secret = directory::rotate_client_secret(&hub, &keys, &c)
                .await
                .map_err(|_| anyhow::anyhow!("no active client with that id"))?;
            audit::record(
                &hub,
                audit::cli_event(
                    Some(c.workspace),
                    Action::ClientSecretRotated,
                    ResourceKind::Client,
                    &c.to_string(),
                )?,
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"client_id": c.to_string(), "client_secret": secret.expose_secret()})
                );
            } else {
                println!("client_secret: {}", secret.expose_secret());
                eprintln!("The old secret no longer works. The new one is shown only now.");
            }
        }
    }
    hub.store().close().await;
    Ok(ExitCode::SUCCESS)
}

/// Adds a token signing key; the previous one keeps verifying (and stays in the JWKS) until
/// its tokens have expired, then is destroyed by the next rotation or server start.
pub async fn rotate_signing(ctx: &Context) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    hub.ensure_installation_key(KeyPurpose::Signing).await?;
    let (v, _) = hub.add_installation_key(KeyPurpose::Signing).await?;
    let retired = retire_signing_keys(&hub).await?;
    audit::record(
        &hub,
        audit::cli_event(
            None,
            Action::SigningKeyRotated,
            ResourceKind::SigningKey,
            &format!("v{v}"),
        )?,
    )
    .await?;
    println!(
        "New token signing key v{v}. Running servers sign with it within a minute; older keys stay published until their tokens expire."
    );
    if !retired.is_empty() {
        println!("Destroyed signing keys no longer needed: {retired:?}");
    }
    hub.store().close().await;
    Ok(ExitCode::SUCCESS)
}

/// Destroys signing keys whose every token has expired.
pub async fn retire_signing_keys(hub: &Hub) -> anyhow::Result<Vec<u32>> {
    let seeds = hub.installation_keys(KeyPurpose::Signing).await?;
    let keys = TokenKeys::from_seeds("-", seeds)?;
    let retired = keys.retirable(now_secs());
    for v in &retired {
        hub.retire_installation_key(KeyPurpose::Signing, *v).await?;
    }
    Ok(retired)
}
