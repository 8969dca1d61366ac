//! `sealsync account`: credentials for external systems, written once, never shown again.
//! Secrets come from standard input (or, in an apply file, from the environment or a file).

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use sealsync_audit::{Action, ResourceKind};
use sealsync_connector::credential::Credential;
use sealsync_engine::Engine;
use sealsync_types::AccountId;
use secrecy::SecretString;

use crate::cmd::audit::{cli_event, record};
use crate::cmd::links::engine;
use crate::context::Context;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccountKind {
    /// A user name and password (the password from standard input).
    Basic,
    /// An API key or token (from standard input).
    ApiKey,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add an account; its secret is read from standard input.
    Add {
        name: String,
        #[arg(long, value_enum)]
        kind: AccountKind,
        /// For `basic`.
        #[arg(long)]
        username: Option<String>,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
    /// List accounts: names, kinds and masked hints, never secrets.
    List {
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Give an account a new secret (from standard input); a new user name with --username.
    Rotate {
        name: String,
        #[arg(long)]
        username: Option<String>,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
    /// Delete an account and its secret.
    Remove {
        name: String,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
}

/// A secret from standard input: one line, or everything (without the final newline).
fn secret_from_stdin() -> anyhow::Result<SecretString> {
    let mut text = String::new();
    std::io::stdin()
        .take(16 * 1024)
        .read_to_string(&mut text)
        .context("cannot read the secret from standard input")?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        bail!(
            "no secret on standard input: pipe it in, e.g. `sealsync account add … < secret.txt`"
        );
    }
    Ok(SecretString::from(secret.to_owned()))
}

/// Audits a change to an account (made by the CLI).
pub(crate) async fn audit_change(engine: &Engine, id: AccountId) -> anyhow::Result<()> {
    record(
        engine.hub(),
        cli_event(
            Some(engine.keys().workspace()),
            Action::AccountChanged,
            ResourceKind::Account,
            &id.to_string(),
        )?,
    )
    .await
}

pub async fn run(ctx: &Context, cmd: AccountCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AccountCommand::Add {
            name,
            kind,
            username,
            workspace,
        } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            if engine.accounts().await?.iter().any(|a| a.name == name) {
                bail!(
                    "account {name:?} exists; give it a new secret with `sealsync account rotate {name}`"
                );
            }
            let credential = match (kind, username) {
                (AccountKind::Basic, Some(username)) => Credential::Basic {
                    username,
                    password: secret_from_stdin()?,
                },
                (AccountKind::Basic, None) => bail!("a basic account needs --username"),
                (AccountKind::ApiKey, None) => Credential::ApiKey {
                    key: secret_from_stdin()?,
                },
                (AccountKind::ApiKey, Some(_)) => bail!("an api-key account takes no --username"),
            };
            let (_, id) = engine.put_account(&name, &credential).await?;
            audit_change(&engine, id).await?;
            println!(
                "Added account {name} ({}); its secret is sealed and will not be shown.",
                credential.kind()
            );
        }
        AccountCommand::List { workspace, json } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let accounts = engine.accounts().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&accounts)?);
            } else if accounts.is_empty() {
                println!("No accounts.");
            } else {
                for a in &accounts {
                    let status = a
                        .status
                        .as_deref()
                        .map(|s| format!("\t{s}: connect it again"))
                        .unwrap_or_default();
                    println!("{}\t{}\t{}{status}", a.name, a.kind, a.hint);
                }
            }
        }
        AccountCommand::Rotate {
            name,
            username,
            workspace,
        } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let (_, old) = engine.open_account(&name).await?;
            let credential = match old {
                Credential::Basic { username: was, .. } => Credential::Basic {
                    username: username.unwrap_or(was),
                    password: secret_from_stdin()?,
                },
                Credential::ApiKey { .. } => {
                    if username.is_some() {
                        bail!("an api-key account takes no --username");
                    }
                    Credential::ApiKey {
                        key: secret_from_stdin()?,
                    }
                }
                Credential::OAuthApp(mut app) => {
                    if username.is_some() {
                        bail!("an oauth-app account takes no --username");
                    }
                    app.client_secret = secret_from_stdin()?;
                    Credential::OAuthApp(app)
                }
                Credential::OAuth(_) => bail!(
                    "an oauth account gets new tokens by being connected again (POST …/accounts/{name}/authorize, or a Connect link)"
                ),
            };
            let (_, id) = engine.put_account(&name, &credential).await?;
            audit_change(&engine, id).await?;
            println!("Account {name} has a new secret.");
        }
        AccountCommand::Remove { name, workspace } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let id = engine.remove_account(&name).await?;
            audit_change(&engine, id).await?;
            println!("Removed account {name}; its secret is gone.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
