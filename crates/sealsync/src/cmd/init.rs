//! `sealsync init`: data directory (0700), database, keystore, master keyfile (0600) and the
//! `default` workspace. Idempotent.

use std::process::ExitCode;

use anyhow::Context as _;
use sealsync_audit::{Action, ResourceKind};
use sealsync_store::{KeyPurpose, Store};
use sealsync_types::WorkspaceName;

use crate::cmd::audit;
use crate::context::Context;

/// What `init` did.
#[derive(Debug, Default)]
pub struct InitReport {
    pub created: Vec<String>,
}

pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let report = ensure(ctx).await?;
    if report.created.is_empty() {
        println!(
            "sealsync is already initialised in {}; nothing changed.",
            ctx.data_dir.display()
        );
    } else {
        println!("Initialised sealsync in {}:", ctx.data_dir.display());
        for item in &report.created {
            println!("  created {item}");
        }
        if ctx.uses_embedded_database() && ctx.config.keys.keyfile.is_none() {
            println!(
                "Back up {} apart from the data: without it nothing stored can be read.",
                ctx.keyfile_path().display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates whatever is missing; reports what it created.
pub async fn ensure(ctx: &Context) -> anyhow::Result<InitReport> {
    let mut report = InitReport::default();
    if !ctx.data_dir.exists() {
        create_private_dir(&ctx.data_dir)?;
        report.created.push(format!(
            "data directory {} (mode 0700)",
            ctx.data_dir.display()
        ));
    }
    let (provider, new_key) = ctx.provider(true).await?;
    if new_key {
        report.created.push(format!(
            "master keyfile {} (mode 0600)",
            ctx.keyfile_path().display()
        ));
    }
    let embedded = ctx.uses_embedded_database();
    let db_existed = ctx.data_dir.join("sealsync.db").exists();
    let store = Store::open(&ctx.store_config(true))
        .await
        .context("cannot open the database")?;
    if embedded && !db_existed {
        for file in ["sealsync.db", "keystore.db"] {
            make_private(&ctx.data_dir.join(file))?;
        }
        report.created.push(format!(
            "database {} and keystore {}",
            ctx.data_dir.join("sealsync.db").display(),
            ctx.data_dir.join("keystore.db").display()
        ));
    }
    let hub = sealsync_store::Hub::new(store, provider);
    if hub.installation_keys(KeyPurpose::Audit).await?.is_empty() {
        hub.ensure_installation_key(KeyPurpose::Audit).await?;
        report.created.push("audit log key".to_owned());
    }
    let (ws, created) = hub
        .ensure_workspace(&WorkspaceName::default_workspace())
        .await?;
    if created {
        report.created.push(format!(
            "workspace {} with its data and index keys",
            ws.name
        ));
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
    }
    hub.store().close().await;
    Ok(report)
}

fn make_private(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict permissions of {}", path.display()))
}

fn create_private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create data directory {}", path.display()))
}
