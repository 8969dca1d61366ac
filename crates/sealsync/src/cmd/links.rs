//! `sealsync endpoint`, `sealsync link` and `sealsync apply`: what is synced with what.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use sealsync_engine::catalog::ApplyFile;
use sealsync_engine::{
    Change, ConflictPolicy, DeleteVsEdit, Deletions, Direction, EndpointSpec, Engine, LinkSpec,
};

use crate::context::{Context, workspace_name};

/// The sync engine of a workspace (`default` when not named).
pub async fn engine(ctx: &Context, workspace: Option<&str>) -> anyhow::Result<Engine> {
    let hub = ctx.hub().await?;
    let (_, keys) = hub.open_workspace(&workspace_name(workspace)?).await?;
    Ok(Engine::new(hub, Arc::new(keys), ctx.default_region()))
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Add (or change) an endpoint: a vdir folder, a CSV file or a SQL table.
    Add(Box<EndpointAdd>),
    /// List endpoints.
    List {
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint no link uses.
    Remove {
        name: String,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EndpointKind {
    Vdir,
    Csv,
    Sql,
}

#[derive(Debug, Args)]
pub struct EndpointAdd {
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: EndpointKind,
    /// The folder (vdir) or file (csv).
    #[arg(long, required_if_eq_any = [("kind", "vdir"), ("kind", "csv")])]
    pub path: Option<PathBuf>,
    /// vCard version of written files (vdir): 4.0 or 3.0.
    #[arg(long)]
    pub version: Option<String>,
    /// CSV layout preset: google or outlook.
    #[arg(long)]
    pub preset: Option<String>,
    /// CSV column mapping file.
    #[arg(long)]
    pub map: Option<PathBuf>,
    /// SQL: the environment variable holding the database URL (`sqlite:…` or `postgres://…`),
    /// read at each sync; the URL itself is never taken on the command line.
    #[arg(long, value_name = "VAR", required_if_eq("kind", "sql"))]
    pub url_env: Option<String>,
    /// SQL: the table, `name` or `schema.name`.
    #[arg(long, value_name = "T", required_if_eq("kind", "sql"))]
    pub table: Option<String>,
    /// SQL: the text primary key column.
    #[arg(long, value_name = "C", required_if_eq("kind", "sql"))]
    pub id_column: Option<String>,
    /// SQL: a version or time column your application moves on every change.
    #[arg(long, value_name = "C")]
    pub etag_column: Option<String>,
    /// SQL: what a column holds, `TARGET=column` (FN=full_name, N:given=first_name,
    /// EMAIL=email, TEL;TYPE=cell=mobile); repeat for each column.
    #[arg(
        long = "column",
        value_name = "TARGET=C",
        required_if_eq("kind", "sql")
    )]
    pub columns: Vec<String>,
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Add (or change) a link between an endpoint and the hub.
    Add(LinkAdd),
    /// List links.
    List {
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a link and its sync state (contacts stay in the hub and on the endpoint).
    Remove {
        name: String,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct LinkAdd {
    pub name: String,
    #[arg(long)]
    pub endpoint: String,
    /// pull (endpoint → hub), push (hub → endpoint) or both.
    #[arg(long, value_enum, default_value = "both")]
    pub direction: DirectionArg,
    /// When both sides changed: hub-wins, remote-wins, newest, keep-both or manual.
    #[arg(long, value_enum, default_value = "manual")]
    pub conflict: ConflictArg,
    /// When one side deleted what the other edited.
    #[arg(long, value_enum, default_value = "edit-wins")]
    pub delete_vs_edit: DeleteVsEditArg,
    /// Whether deletes travel over the link: propagate or keep.
    #[arg(long, value_enum, default_value = "propagate")]
    pub deletions: DeletionsArg,
    /// Properties never written to the endpoint (comma-separated, e.g. NOTE,PHOTO).
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// Properties written masked.
    #[arg(long, value_delimiter = ',')]
    pub mask: Vec<String>,
    /// Source priority when merging into a matched contact (higher wins; the hub is 0).
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Largest share of the link's contacts one run may delete (0 to 1).
    #[arg(long, default_value_t = 0.2)]
    pub max_delete_share: f64,
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
}

macro_rules! arg_enum {
    ($arg:ident => $ty:ty { $($v:ident),* }) => {
        #[derive(Debug, Clone, Copy, ValueEnum)]
        pub enum $arg { $($v),* }
        impl From<$arg> for $ty {
            fn from(a: $arg) -> Self {
                match a { $($arg::$v => <$ty>::$v),* }
            }
        }
    };
}
arg_enum!(DirectionArg => Direction { Pull, Push, Both });
arg_enum!(ConflictArg => ConflictPolicy { HubWins, RemoteWins, Newest, KeepBoth, Manual });
arg_enum!(DeleteVsEditArg => DeleteVsEdit { EditWins, DeleteWins });
arg_enum!(DeletionsArg => Deletions { Propagate, Keep });

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The declaration file (TOML with [[endpoint]] and [[link]] tables).
    pub file: PathBuf,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn print_changes(changes: &[Change], json: bool, dry_run: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(changes)?);
        return Ok(());
    }
    for c in changes {
        let mark = match c.op {
            "create" => "+",
            "update" => "~",
            "remove" => "-",
            _ => "=",
        };
        println!("{mark} {} {} ({})", c.what, c.name, c.op);
    }
    let n = changes.iter().filter(|c| c.op != "unchanged").count();
    if dry_run {
        println!("{n} change(s) would be made (dry run: nothing changed).");
    } else {
        println!("{n} change(s) made.");
    }
    Ok(())
}

pub async fn endpoint(ctx: &Context, cmd: EndpointCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EndpointCommand::Add(a) => {
            let a = *a;
            let engine = engine(ctx, a.workspace.as_deref()).await?;
            let base = std::env::current_dir().context("cannot read the current folder")?;
            let path = || {
                a.path
                    .as_ref()
                    .map(|p| base.join(p))
                    .context("--path is required for this kind")
            };
            let sql_only = a.url_env.is_some()
                || a.table.is_some()
                || a.id_column.is_some()
                || a.etag_column.is_some()
                || !a.columns.is_empty();
            let spec = match a.kind {
                EndpointKind::Sql => {
                    if a.path.is_some()
                        || a.version.is_some()
                        || a.preset.is_some()
                        || a.map.is_some()
                    {
                        anyhow::bail!(
                            "--path, --version, --preset and --map are not for sql endpoints"
                        );
                    }
                    EndpointSpec::Sql {
                        url: None,
                        url_env: a.url_env,
                        table: a.table.context("--table is required for sql")?,
                        id_column: a.id_column.context("--id-column is required for sql")?,
                        etag_column: a.etag_column,
                        columns: a.columns,
                    }
                }
                _ if sql_only => anyhow::bail!(
                    "--url-env, --table, --id-column, --etag-column and --column are for sql endpoints"
                ),
                EndpointKind::Vdir => EndpointSpec::Vdir {
                    path: path()?,
                    version: a.version,
                },
                EndpointKind::Csv => EndpointSpec::Csv {
                    path: path()?,
                    preset: a.preset,
                    map: a.map.map(|m| base.join(m)),
                },
            };
            let change = engine.put_endpoint(&a.name, &spec, false).await?;
            print_changes(&[change], false, false)?;
        }
        EndpointCommand::List { workspace, json } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let list = engine.endpoints().await?;
            if json {
                let mut v = Vec::new();
                for e in &list {
                    let mut spec = serde_json::to_value(&e.spec)?;
                    // A stored database URL may hold a password.
                    if let Some(url) = spec.get_mut("url") {
                        *url = serde_json::Value::from("[REDACTED]");
                    }
                    v.push(serde_json::json!({ "id": e.id, "name": e.name, "spec": spec }));
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for e in &list {
                    let where_ = match &e.spec {
                        EndpointSpec::Vdir { path, .. } | EndpointSpec::Csv { path, .. } => {
                            path.display().to_string()
                        }
                        EndpointSpec::Carddav { url, account, .. } => match account {
                            Some(a) => format!("{url} (account {a})"),
                            None => url.clone(),
                        },
                        EndpointSpec::Sql { url_env, table, .. } => match url_env {
                            Some(var) => format!("table {table} (database URL in ${var})"),
                            None => format!("table {table} (database URL stored sealed)"),
                        },
                        EndpointSpec::Webhook { account, .. } => {
                            format!("POST /v1/hooks/{} (signed with account {account})", e.id)
                        }
                        EndpointSpec::WebhookOut { account, .. } => {
                            format!("signed webhooks to a receiver (account {account})")
                        }
                    };
                    println!("{:<20} {:<5} {}", e.name, e.spec.kind(), where_);
                }
                if list.is_empty() {
                    println!(
                        "No endpoints yet: add one with `sealsync endpoint add` or `sealsync apply FILE`."
                    );
                }
            }
        }
        EndpointCommand::Remove { name, workspace } => {
            engine(ctx, workspace.as_deref())
                .await?
                .remove_endpoint(&name)
                .await?;
            println!("Removed endpoint {name}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn link(ctx: &Context, cmd: LinkCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LinkCommand::Add(a) => {
            let engine = engine(ctx, a.workspace.as_deref()).await?;
            let spec = LinkSpec {
                direction: a.direction.into(),
                conflict: a.conflict.into(),
                delete_vs_edit: a.delete_vs_edit.into(),
                deletions: a.deletions.into(),
                drop: a.drop,
                mask: a.mask,
                map: Default::default(),
                priority: a.priority,
                max_delete_share: a.max_delete_share,
            };
            let change = engine.put_link(&a.name, &a.endpoint, &spec, false).await?;
            print_changes(&[change], false, false)?;
        }
        LinkCommand::List { workspace, json } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let defs = engine.link_defs().await?;
            if json {
                let v: Vec<_> = defs
                    .iter()
                    .map(|l| serde_json::json!({ "id": l.id, "name": l.name, "endpoint": l.endpoint_name, "spec": l.spec }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for l in &defs {
                    println!(
                        "{:<20} {:<20} {:<5} conflict={}",
                        l.name,
                        l.endpoint_name,
                        serde_json::to_value(l.spec.direction)?
                            .as_str()
                            .unwrap_or(""),
                        serde_json::to_value(l.spec.conflict)?
                            .as_str()
                            .unwrap_or(""),
                    );
                }
                if defs.is_empty() {
                    println!(
                        "No links yet: add one with `sealsync link add` or `sealsync apply FILE`."
                    );
                }
            }
        }
        LinkCommand::Remove { name, workspace } => {
            engine(ctx, workspace.as_deref())
                .await?
                .remove_link(&name)
                .await?;
            println!(
                "Removed link {name} and its sync state; contacts stay in the hub and on the endpoint."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn apply(ctx: &Context, a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    // toml's own message quotes the offending line, which may hold a secret: say where, not what.
    let file: ApplyFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text.get(..s.start).unwrap_or(&text).matches('\n').count() + 1)
            .unwrap_or(0);
        anyhow::anyhow!("{}:{line}: {}", a.file.display(), e.message())
    })?;
    let base = std::path::absolute(&a.file)
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_default();
    let engine = engine(ctx, a.workspace.as_deref()).await?;
    let changes = engine.apply(&file, &base, a.dry_run).await?;
    if !a.dry_run {
        let accounts = engine.accounts().await?;
        for c in changes
            .iter()
            .filter(|c| c.what == "account" && c.op != "unchanged")
        {
            if let Some(acc) = accounts.iter().find(|acc| acc.name == c.name) {
                crate::cmd::accounts::audit_change(&engine, acc.id).await?;
            }
        }
    }
    print_changes(&changes, a.json, a.dry_run)?;
    Ok(ExitCode::SUCCESS)
}
