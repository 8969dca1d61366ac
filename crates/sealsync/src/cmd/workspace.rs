//! `sealsync workspace list|create|delete`.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use sealsync_audit::{Action, ResourceKind};

use crate::cmd::audit;
use crate::context::{Context, workspace_name};

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// List workspaces.
    List,
    /// Create a workspace with its own keys.
    Create { name: String },
    /// Delete a workspace: destroys its keys first, so its data becomes unreadable everywhere,
    /// backups included, then removes its rows.
    Delete {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(ctx: &Context, command: WorkspaceCommand) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    match command {
        WorkspaceCommand::List => {
            for ws in hub.store().workspaces().await? {
                println!("{}\t{}", ws.name, ws.id);
            }
        }
        WorkspaceCommand::Create { name } => {
            let name = workspace_name(Some(&name))?;
            let (ws, created) = hub.ensure_workspace(&name).await?;
            if created {
                audit::record(
                    &hub,
                    audit::cli_event(
                        None,
                        Action::WorkspaceCreated,
                        ResourceKind::Workspace,
                        &ws.id.to_string(),
                    )?,
                )
                .await?;
                println!("Created workspace {} ({}).", ws.name, ws.id);
            } else {
                println!("Workspace {} already exists; nothing changed.", ws.name);
            }
        }
        WorkspaceCommand::Delete { name, yes } => {
            let name = workspace_name(Some(&name))?;
            let Some(ws) = hub.store().workspace_by_name(&name).await? else {
                bail!("no workspace named {name:?}")
            };
            if !yes {
                eprintln!(
                    "Deleting workspace {name} destroys its encryption keys. Its contacts become unreadable \
                     everywhere, in every backup, and cannot be recovered."
                );
                eprintln!("Type the workspace name to confirm:");
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                if line.trim() != name.as_str() {
                    bail!("not confirmed; nothing was deleted");
                }
            }
            hub.store().delete_workspace(ws.id).await?;
            audit::record(
                &hub,
                audit::cli_event(
                    None,
                    Action::WorkspaceDeleted,
                    ResourceKind::Workspace,
                    &ws.id.to_string(),
                )?,
            )
            .await?;
            println!("Deleted workspace {name}: its keys are destroyed and its data removed.");
        }
    }
    hub.store().close().await;
    Ok(ExitCode::SUCCESS)
}
