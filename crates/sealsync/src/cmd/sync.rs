//! `sealsync sync`, `sealsync conflicts` and `sealsync runs`: running links and what they left.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sealsync_engine::plan::Action;
use sealsync_engine::{RunError, RunOptions, RunReport};
use sealsync_types::ConflictId;
use std::io::IsTerminal as _;

use crate::cmd::links::engine;
use crate::context::Context;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Links to run; all of the workspace's when none is named (pulling links first).
    pub links: Vec<String>,
    /// Print the plan of each link; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on even when a run would delete more than the link allows.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Print per-link counts as JSON.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
    /// Actions per transaction.
    #[arg(long, default_value_t = sealsync_engine::DEFAULT_BATCH, hide = true)]
    pub batch: usize,
}

pub async fn sync(ctx: &Context, a: SyncArgs) -> anyhow::Result<ExitCode> {
    let engine = engine(ctx, a.workspace.as_deref()).await?;
    let defs = engine.link_defs().await?;
    if defs.is_empty() {
        bail!(
            "the workspace has no links: declare some with `sealsync apply FILE` or `sealsync link add`"
        );
    }
    let chosen: Vec<_> = if a.links.is_empty() {
        defs
    } else {
        for name in &a.links {
            if !defs.iter().any(|d| &d.name == name) {
                bail!("no link named {name:?}; list them with `sealsync link list`");
            }
        }
        defs.into_iter()
            .filter(|d| a.links.contains(&d.name))
            .collect()
    };
    // The test suite's crash hook: stop as if killed at the N-th step.
    let interrupt_at = std::env::var("SEALSYNC_TEST_INTERRUPT_AT")
        .ok()
        .and_then(|v| v.parse().ok());
    let options = RunOptions {
        dry_run: a.dry_run,
        allow_mass_delete: a.allow_mass_delete,
        batch: a.batch,
        interrupt_at,
    };
    let tty = std::io::stderr().is_terminal() && !a.json;
    let bar = tty.then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    let progress = |link: &str, done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_prefix(link.to_owned());
            b.set_length(total);
            b.set_position(done);
        }
    };
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (name, result) in engine.run_all(&chosen, &options, &progress).await {
        match result {
            Ok(report) => {
                for account in report.accounts_used() {
                    crate::cmd::audit::account_used(&engine, account).await?;
                }
                reports.push(report);
            }
            Err(RunError::Interrupted(n)) => {
                // As abrupt as a kill: no cleanup, nothing more written.
                eprintln!("interrupted at step {n} (test hook)");
                std::process::abort();
            }
            Err(e) => {
                eprintln!("error: {e}");
                failures.push((name, e.to_string()));
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    engine.hub().store().close().await;
    if a.json {
        let v = serde_json::json!({
            "links": reports.iter().map(|r| serde_json::json!({
                "link": r.link,
                "run": r.run,
                "dry_run": a.dry_run,
                "counts": r.counts,
                "errors": r.errors,
                "plan": r.plan.as_ref().map(|p| plan_json(r, p)),
            })).collect::<Vec<_>>(),
            "failed": failures.iter().map(|(l, e)| serde_json::json!({"link": l, "error": e})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &reports {
            match &r.plan {
                Some(p) => print_plan(r, p),
                None => print_report(r),
            }
        }
    }
    let partial = reports
        .iter()
        .any(|r| !r.errors.is_empty() || r.counts.rejected > 0);
    Ok(if !failures.is_empty() {
        ExitCode::FAILURE
    } else if partial {
        ExitCode::from(crate::EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &RunReport) {
    let c = &r.counts;
    println!(
        "{}: hub {} created, {} updated, {} deleted; endpoint {} created, {} updated, {} deleted; {} unchanged, {} conflicts, {} rejected.",
        r.link,
        c.hub_created,
        c.hub_updated,
        c.hub_deleted,
        c.remote_created,
        c.remote_updated,
        c.remote_deleted,
        c.unchanged,
        c.conflicts,
        c.rejected
    );
    for e in r.errors.iter().take(20) {
        let at = e
            .remote
            .clone()
            .or(e.contact.map(|c| format!("contact {c}")))
            .unwrap_or_default();
        println!("  ! {at}: {}", e.error);
    }
    if r.errors.len() > 20 {
        println!("  … and {} more", r.errors.len() - 20);
    }
}

/// One line per action: a readable diff of what the run would do.
fn describe(r: &RunReport, a: &Action) -> (String, &'static str) {
    let remote = |i: &usize| {
        r.listed
            .get(*i)
            .map(|l| l.meta.id.to_string())
            .unwrap_or_default()
    };
    match a {
        Action::PullCreate { remote: i } => (
            format!("+ hub       new contact from {}", remote(i)),
            "hub_created",
        ),
        Action::PullMerge { remote: i, contact } => (
            format!("~ hub       merge {} into {contact}", remote(i)),
            "hub_updated",
        ),
        Action::Adopt { remote: i, contact } => (
            format!("= link      {} is {contact}", remote(i)),
            "unchanged",
        ),
        Action::PullUpdate {
            remote: i, contact, ..
        } => (
            format!("~ hub       {contact} from {}", remote(i)),
            "hub_updated",
        ),
        Action::PullDelete { contact, .. } => (
            format!("- hub       {contact} (gone from the endpoint)"),
            "hub_deleted",
        ),
        Action::PushCreate { contact, .. } => (format!("+ endpoint  {contact}"), "remote_created"),
        Action::PushUpdate {
            remote: i, contact, ..
        } => (
            format!("~ endpoint  {} from {contact}", remote(i)),
            "remote_updated",
        ),
        Action::PushDelete { remote: i, contact } => (
            format!("- endpoint  {} ({contact} deleted in the hub)", remote(i)),
            "remote_deleted",
        ),
        Action::Refresh { remote: i, .. } => (
            format!("= link      {} (already equal)", remote(i)),
            "unchanged",
        ),
        Action::Forget { contact, .. } => (format!("- link      {contact} unlinked"), "unchanged"),
        Action::KeepBoth { remote: i, contact } => (
            format!("! conflict  {contact} / {}: keep both", remote(i)),
            "conflicts",
        ),
        Action::Queue { contact, kind } => (
            format!("! conflict  {contact}: {} (queued)", kind.as_str()),
            "conflicts",
        ),
        Action::Skip { remote: i, reason } => {
            (format!("? skip      {}: {reason}", remote(i)), "rejected")
        }
    }
}

fn plan_json(r: &RunReport, p: &sealsync_engine::Plan) -> serde_json::Value {
    serde_json::json!({
        "actions": p.actions.iter().map(|a| describe(r, a).0).collect::<Vec<_>>(),
        "unchanged": p.unchanged,
    })
}

fn print_plan(r: &RunReport, p: &sealsync_engine::Plan) {
    println!("{} (dry run, nothing changed):", r.link);
    let mut counts = std::collections::BTreeMap::new();
    for a in &p.actions {
        let (line, what) = describe(r, a);
        *counts.entry(what).or_insert(0u64) += 1;
        if what != "unchanged" {
            println!("  {line}");
        }
    }
    *counts.entry("unchanged").or_insert(0) += p.unchanged;
    let summary: Vec<String> = counts
        .iter()
        .map(|(k, v)| format!("{v} {}", k.replace('_', " ")))
        .collect();
    println!("  {}", summary.join(", "));
}

#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// Conflicts waiting for a decision.
    List {
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Decide a conflict; the link's next run applies the decision.
    Resolve {
        id: String,
        /// Which version wins.
        #[arg(long, value_enum)]
        take: Take,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Take {
    Hub,
    Remote,
}

pub async fn conflicts(ctx: &Context, cmd: ConflictsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConflictsCommand::List { workspace, json } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let ws = engine.keys().workspace();
            let links = engine.links().await?;
            let rows = engine.hub().store().conflicts(ws).await?;
            let name = |id| {
                links
                    .iter()
                    .find(|l| l.id == id)
                    .map(|l| l.name.clone())
                    .unwrap_or_default()
            };
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "id": c.id, "link": name(c.link), "contact": c.contact, "kind": c.kind,
                            "resolution": c.resolution, "created_at": c.created_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if rows.is_empty() {
                println!("No conflicts waiting.");
            } else {
                for c in &rows {
                    println!(
                        "{}  link {}  contact {}  {}{}",
                        c.id,
                        name(c.link),
                        c.contact,
                        c.kind,
                        c.resolution
                            .as_deref()
                            .map(|r| format!("  (decided: {r}, applied on the next run)"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        ConflictsCommand::Resolve {
            id,
            take,
            workspace,
        } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let id = ConflictId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let which = match take {
                Take::Hub => "hub",
                Take::Remote => "remote",
            };
            if !engine
                .hub()
                .store()
                .resolve_conflict(engine.keys().workspace(), id, which)
                .await?
            {
                bail!("no conflict {id}; list them with `sealsync conflicts list`");
            }
            println!(
                "Conflict {id}: the {which} version wins on the link's next run (`sealsync sync`)."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Outgoing webhook deliveries, latest first (never their contents).
    List {
        /// Only `pending`, `delivered` or `dead` ones.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send dead deliveries again (each gets another 24 hours of retries).
    Replay {
        /// Delivery ids, as listed.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead delivery of the workspace.
        #[arg(long)]
        all: bool,
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
    /// Send every delivery that is due now (the server does this on its own).
    Retry {
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
}

pub async fn deliveries(ctx: &Context, cmd: DeliveriesCommand) -> anyhow::Result<ExitCode> {
    use sealsync_engine::outbox::parse_delivery_id;
    use sealsync_store::DeliveryState;
    match cmd {
        DeliveriesCommand::List {
            state,
            workspace,
            json,
        } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let filter = match state.as_deref() {
                None => None,
                Some(s) => Some(
                    DeliveryState::parse(s)
                        .ok_or_else(|| anyhow::anyhow!("--state is pending, delivered or dead"))?,
                ),
            };
            let rows = engine
                .hub()
                .store()
                .deliveries(engine.keys().workspace(), filter, 1000)
                .await?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "id": hex::encode(&d.id), "webhook_id": sealsync_engine::outbox::webhook_id(&d.id),
                            "endpoint_id": d.endpoint.to_string(), "state": d.state.as_str(),
                            "attempts": d.attempts, "created_at": d.created_at, "next_at": d.next_at,
                            "last_status": d.last_status, "last_error": d.last_error,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if rows.is_empty() {
                println!("No webhook deliveries.");
            } else {
                for d in &rows {
                    println!(
                        "{}  {:<9}  {} attempt(s)  {}",
                        hex::encode(&d.id),
                        d.state.as_str(),
                        d.attempts,
                        d.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        DeliveriesCommand::Replay {
            ids,
            all,
            workspace,
        } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let ws = engine.keys().workspace();
            let ids = if all {
                None
            } else {
                Some(
                    ids.iter()
                        .map(|i| {
                            parse_delivery_id(i).ok_or_else(|| {
                                anyhow::anyhow!("{i:?} is not a delivery id (64 hex characters)")
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
            };
            let n = engine
                .hub()
                .store()
                .replay_deliveries(ws, ids.as_deref())
                .await?;
            if n > 0 {
                crate::cmd::audit::record(
                    engine.hub(),
                    crate::cmd::audit::cli_event(
                        Some(ws),
                        sealsync_audit::Action::DeliveriesReplayed,
                        sealsync_audit::ResourceKind::Workspace,
                        &ws.to_string(),
                    )?,
                )
                .await?;
            }
            println!(
                "{n} dead deliveries put back in line: the server sends them within seconds, or run `sealsync deliveries retry`."
            );
        }
        DeliveriesCommand::Retry { workspace } => {
            let engine = engine(ctx, workspace.as_deref()).await?;
            let ws = engine.keys().workspace();
            let now = sealsync_store::now_ms();
            let mut total = sealsync_engine::outbox::DeliveryReport::default();
            for (w, endpoint) in engine.hub().store().due_delivery_endpoints(now).await? {
                if w != ws {
                    continue;
                }
                let report = engine.deliver(endpoint, now).await?;
                if let Some(account) = report.account {
                    crate::cmd::audit::account_used(&engine, account).await?;
                }
                total.delivered += report.delivered;
                total.retrying += report.retrying;
                total.dead += report.dead;
            }
            println!(
                "Delivered {}, to retry later {}, dead {}.",
                total.delivered, total.retrying, total.dead
            );
            if total.retrying + total.dead > 0 {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this link's runs.
    #[arg(long, value_name = "LINK")]
    pub link: Option<String>,
    /// How many runs, newest first.
    #[arg(short = 'n', default_value_t = 20)]
    pub n: u32,
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `sealsync runs`: the recorded runs, newest first: id, link, status, start, end and counts
/// (a failed run's counts say the kind of error). Never contact data.
pub async fn runs(ctx: &Context, args: RunsArgs) -> anyhow::Result<ExitCode> {
    let engine = engine(ctx, args.workspace.as_deref()).await?;
    let names: std::collections::HashMap<_, _> = engine
        .link_defs()
        .await?
        .into_iter()
        .map(|d| (d.id, d.name))
        .collect();
    let only = match &args.link {
        Some(name) => Some(
            names
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(id, _)| *id)
                .ok_or_else(|| anyhow::anyhow!("no link named {name:?} in this workspace"))?,
        ),
        None => None,
    };
    let store = engine.hub().store();
    let ws = engine.keys().workspace();
    let rows = match only {
        Some(link) => store.link_runs(ws, link, args.n).await?,
        None => store.runs(ws, args.n).await?,
    };
    let link_name = |r: &sealsync_store::RunRow| {
        names
            .get(&r.link)
            .cloned()
            .unwrap_or_else(|| format!("{} (removed link)", r.link))
    };
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id.to_string(), "link": link_name(r), "link_id": r.link.to_string(),
                    "status": r.status, "started_at": r.started_at, "ended_at": r.ended_at,
                    "counts": serde_json::from_str::<serde_json::Value>(&r.counts).unwrap_or_default(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if rows.is_empty() {
        println!("No runs recorded.");
    } else {
        for r in &rows {
            let took = r
                .ended_at
                .map(|end| format!("{:.1} s", (end - r.started_at) as f64 / 1000.0))
                .unwrap_or_else(|| "-".into());
            let counts: serde_json::Value = serde_json::from_str(&r.counts).unwrap_or_default();
            let summary = match counts["error"].as_str() {
                Some(kind) => format!(
                    "error {kind}: {}",
                    counts["message"].as_str().unwrap_or_default()
                ),
                None if counts.as_object().is_some_and(|o| o.is_empty()) => String::new(),
                None => [
                    "created",
                    "updated",
                    "deleted",
                    "unchanged",
                    "conflicts",
                    "rejected",
                ]
                .iter()
                .map(|k| format!("{} {k}", counts[*k].as_u64().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", "),
            };
            println!(
                "{}  {:<12}  {:<11}  {}  {:>8}  {summary}",
                r.id,
                link_name(r),
                r.status,
                crate::cmd::audit::rfc3339(r.started_at),
                took,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
