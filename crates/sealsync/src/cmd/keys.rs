//! `sealsync keys status|rotate|reencrypt`.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use sealsync_audit::{Action, ResourceKind};
use sealsync_crypto::LocalKeyfile;
use sealsync_store::{Hub, KeyPurpose, Workspace};

use crate::cmd::audit;
use crate::config::KeyProviderKind;
use crate::context::{Context, workspace_name};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Key provider, and per workspace its data-key versions and records sealed under each.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Rotate keys without downtime. By default every workspace gets a new data key and its
    /// records are re-encrypted to it; old versions are destroyed once no record uses them.
    Rotate {
        /// Rotate the master key instead: a new keyfile version re-wraps every workspace key
        /// (with keys.provider = "env": re-wrap under the newest `vN` line of the key).
        #[arg(long, conflicts_with = "workspace")]
        kek: bool,
        /// Rotate only this workspace's data key.
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        /// Records per transaction during re-encryption.
        #[arg(long, default_value_t = 500)]
        batch: u32,
    },
    /// Add a new token signing key; the previous one stays published until its tokens expire.
    RotateSigning,
    /// Finish moving records to the newest data key (after an interrupted rotation).
    Reencrypt {
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long, default_value_t = 500)]
        batch: u32,
    },
}

pub async fn run(ctx: &Context, command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Status { json } => status(ctx, json).await,
        KeysCommand::Rotate { kek: true, .. } => rotate_master_key(ctx).await,
        KeysCommand::RotateSigning => crate::cmd::identity::rotate_signing(ctx).await,
        KeysCommand::Rotate {
            kek: false,
            workspace,
            batch,
        } => {
            let hub = ctx.hub().await?;
            let targets = targets(&hub, workspace.as_deref()).await?;
            for ws in &targets {
                let v = hub.rotate_data_key(ws.id).await?;
                audit::record(
                    &hub,
                    audit::cli_event(
                        Some(ws.id),
                        Action::KeysRotated,
                        ResourceKind::Keys,
                        &format!("data.v{v}"),
                    )?,
                )
                .await?;
                println!(
                    "Workspace {}: new data key v{v}; new writes use it from now on.",
                    ws.name
                );
            }
            let code = reencrypt_all(&hub, &targets, batch).await?;
            hub.store().close().await;
            Ok(code)
        }
        KeysCommand::Reencrypt { workspace, batch } => {
            let hub = ctx.hub().await?;
            let targets = targets(&hub, workspace.as_deref()).await?;
            let code = reencrypt_all(&hub, &targets, batch).await?;
            hub.store().close().await;
            Ok(code)
        }
    }
}

async fn targets(hub: &Hub, name: Option<&str>) -> anyhow::Result<Vec<Workspace>> {
    match name {
        Some(n) => {
            let name = workspace_name(Some(n))?;
            match hub.store().workspace_by_name(&name).await? {
                Some(ws) => Ok(vec![ws]),
                None => bail!("no workspace named {name:?}"),
            }
        }
        None => Ok(hub.store().workspaces().await?),
    }
}

async fn reencrypt_all(hub: &Hub, targets: &[Workspace], batch: u32) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    for ws in targets {
        let keys = hub.workspace_keys(ws.id).await?;
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} records ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("re-encrypting {}", ws.name));
        let report = hub
            .reencrypt(&keys, batch, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
        bar.finish_and_clear();
        println!(
            "Workspace {}: {} records re-encrypted to data key v{} (and {} configurations, secrets and run event details).",
            ws.name,
            report.resealed,
            keys.current_version(),
            report.other_resealed
        );
        for f in &report.failed {
            eprintln!("  record {}: {}", f.id, f.error);
        }
        for f in &report.other_failed {
            eprintln!("  {f}");
        }
        if report.remaining > 0 {
            ok = false;
            println!(
                "  {} records remain under older keys; old keys are kept. Run `sealsync keys reencrypt` again.",
                report.remaining
            );
        } else {
            let retired = hub.retire_unused_data_keys(ws.id).await?;
            if !retired.is_empty() {
                let list: Vec<String> = retired.iter().map(|v| format!("v{v}")).collect();
                println!(
                    "  retired data keys {} (no record used them).",
                    list.join(", ")
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_PARTIAL)
    })
}

async fn rotate_master_key(ctx: &Context) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    if ctx.config.keys.provider == KeyProviderKind::Env {
        // The key lives outside sealsync: the operator adds the new `vN` line, sealsync re-wraps.
        let n = hub.rewrap_keys().await?;
        record_master_rotation(&hub).await?;
        println!(
            "Re-wrapped {n} keys (workspace and installation keys) under {}.",
            hub.provider().current_kek()
        );
        println!(
            "Master key versions still in use: {}. Others can be removed from SEALSYNC_MASTER_KEY.",
            hub.master_keys_in_use().await?.join(", ")
        );
        hub.store().close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let path = ctx.keyfile_path();
    let mut keyfile = LocalKeyfile::open(&path)?;
    let current = format!("local:{}", keyfile.versions().last().copied().unwrap_or(1));
    let in_use = hub.master_keys_in_use().await?;
    // After an interrupted rotation some keys still use an older master key: finish that
    // instead of adding yet another version.
    if in_use.iter().all(|k| *k == current) {
        let v = keyfile.add_version()?;
        println!("Added master key version {v} to {}.", path.display());
    }
    let hub = Hub::new(hub.store().clone(), Arc::new(LocalKeyfile::open(&path)?));
    let n = hub.rewrap_keys().await?;
    record_master_rotation(&hub).await?;
    println!(
        "Re-wrapped {n} keys (workspace and installation keys) under {}.",
        hub.provider().current_kek()
    );
    let retired = keyfile.retire_versions(&hub.master_keys_in_use().await?)?;
    if !retired.is_empty() {
        let list: Vec<String> = retired.iter().map(|v| format!("v{v}")).collect();
        println!(
            "Removed master key versions {} from the keyfile (nothing used them).",
            list.join(", ")
        );
    }
    println!("Back up the keyfile again: older backups of it no longer open current data.");
    hub.store().close().await;
    Ok(ExitCode::SUCCESS)
}

/// Records a master-key rotation in the installation chain, naming the new master key version
/// (`local:2`, `env:v3`): a version label, never key material.
async fn record_master_rotation(hub: &Hub) -> anyhow::Result<()> {
    let kek = hub.provider().current_kek();
    let id = format!("master.{kek}");
    let event = audit::cli_event(None, Action::KeysRotated, ResourceKind::Keys, &id)
        .or_else(|_| audit::cli_event(None, Action::KeysRotated, ResourceKind::Keys, "master"))?;
    audit::record(hub, event).await
}

async fn status(ctx: &Context, json: bool) -> anyhow::Result<ExitCode> {
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
