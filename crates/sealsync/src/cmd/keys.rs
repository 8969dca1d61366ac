//! `sealsync keys status`.

use std::process::ExitCode;

use clap::Subcommand;
use sealsync_store::KeyPurpose;

use crate::context::Context;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Key provider, and per workspace its data-key versions and records sealed under each.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let KeysCommand::Status { json } = command;
    let hub = ctx.hub().await?;
    let mut report = Vec::new();
    for ws in hub.store().workspaces().await? {
        let keys = hub.store().keys_of(ws.id).await?;
        let counts = hub.store().contacts_per_key_version(ws.id).await?;
        let versions: Vec<_> = keys
            .iter()
            .filter(|k| k.purpose == KeyPurpose::Data)
            .map(|k| {
                let records = counts.iter().find(|(v, _)| *v == k.version).map(|(_, n)| *n).unwrap_or(0);
                serde_json::json!({"version": k.version, "wrapped_by": k.wrapped.kek, "records": records})
            })
            .collect();
        report.push(serde_json::json!({"workspace": ws.name.as_str(), "data_keys": versions}));
    }
    let provider = hub.provider().describe();
    let current = hub.provider().current_kek();
    hub.store().close().await;
    if json {
        println!(
            "{}",
            serde_json::json!({"provider": provider, "current_master_key": current, "workspaces": report})
        );
    } else {
        println!("Master key: {provider} (current version {current})");
        for ws in &report {
            println!(
                "Workspace {}:",
                ws["workspace"].as_str().unwrap_or_default()
            );
            for v in ws["data_keys"].as_array().into_iter().flatten() {
                println!(
                    "  data key v{}: {} records (wrapped by {})",
                    v["version"],
                    v["records"],
                    v["wrapped_by"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
