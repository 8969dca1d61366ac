//! `sealsync audit verify|tail`, and [`record`], through which other commands append to the
//! audit log.
//!
//! Chains are shown by workspace name; the installation chain (logins, user administration,
//! workspace creation and deletion) as `installation`, and the chain of a deleted workspace by
//! its id. Output names entries by chain and position only, never by content beyond the ids the
//! entries themselves hold.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use sealsync_audit::{
    Action, Actor, Anchor, AuditEntry, AuditEvent, AuditKeys, AuditLog, Resource, ResourceKind,
};
use sealsync_store::{Hub, KeyPurpose};
use sealsync_types::WorkspaceId;
use serde::{Deserialize, Serialize};

use crate::context::{Context, workspace_name};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check audit chains: every entry's MAC, the links between entries, and each chain's head.
    /// Exits 1 and lists the problems, one per line, when anything was edited, removed or moved.
    Verify {
        /// Check only this workspace's chain. [default: every chain]
        #[arg(long, value_name = "W", conflicts_with = "all")]
        workspace: Option<String>,
        /// Check every chain, the installation's included (the default).
        #[arg(long)]
        all: bool,
        /// Also check each chain against the anchors an earlier run kept in FILE (its newest
        /// entry then is still there, unchanged), and keep this run's anchors there when every
        /// check passed. A log put back to an older copy verifies on its own: keep FILE away
        /// from the database and its backups (another machine, write-once storage).
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show the newest entries of one chain, oldest first: time (UTC), position, actor, action,
    /// resource, outcome, source.
    Tail {
        /// The workspace whose chain to show. [default: default]
        #[arg(long, value_name = "W", conflicts_with = "installation")]
        workspace: Option<String>,
        /// Show the installation chain: logins, user administration, workspaces created and
        /// deleted.
        #[arg(long)]
        installation: bool,
        /// How many entries.
        #[arg(short = 'n', default_value_t = 20)]
        n: u32,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    let code = match command {
        AuditCommand::Verify {
            workspace,
            anchor,
            json,
            ..
        } => verify(&hub, workspace.as_deref(), anchor.as_deref(), json).await,
        AuditCommand::Tail {
            workspace,
            installation,
            n,
            json,
        } => tail(&hub, workspace.as_deref(), installation, n, json).await,
    };
    hub.store().close().await;
    code
}

/// Appends `event` to the audit log, making the audit key on first use. A command whose action
/// cannot be audited reports an error: an unrecorded change is what the log exists to prevent.
pub async fn record(hub: &Hub, event: AuditEvent) -> anyhow::Result<()> {
    hub.ensure_installation_key(KeyPurpose::Audit)
        .await
        .context("cannot get the audit key")?;
    let log = open_log(hub)
        .await?
        .context("the audit key is missing from the keystore")?;
    log.append(event)
        .await
        .context("the action was done, but its audit entry could not be written")?;
    Ok(())
}

/// Records that the command line opened an account's secret.
pub async fn account_used(
    engine: &sealsync_engine::Engine,
    account: sealsync_types::AccountId,
) -> anyhow::Result<()> {
    record(
        engine.hub(),
        cli_event(
            Some(engine.keys().workspace()),
            Action::AccountUsed,
            ResourceKind::Account,
            &account.to_string(),
        )?,
    )
    .await
}

/// An event done by the command line itself (actor `system:cli`), on `resource`.
pub fn cli_event(
    workspace: Option<WorkspaceId>,
    action: Action,
    kind: ResourceKind,
    id: &str,
) -> anyhow::Result<AuditEvent> {
    Ok(AuditEvent::new(workspace, Actor::system("cli")?, action)
        .with_resource(Resource::new(kind, id)?))
}

/// The audit log with every version of its key, or `None` when no key was ever made (and so
/// nothing was ever audited).
async fn open_log(hub: &Hub) -> anyhow::Result<Option<AuditLog>> {
    let keys = hub
        .installation_keys(KeyPurpose::Audit)
        .await
        .context("cannot read the audit keys")?;
    if keys.is_empty() {
        return Ok(None);
    }
    let keys = AuditKeys::new(keys.into_iter().map(|(v, k, _)| (v, k)))?;
    Ok(Some(AuditLog::new(hub.store().clone(), keys)))
}

/// Chain ids to names: workspace names, `installation` for the nil id.
async fn chain_names(hub: &Hub) -> anyhow::Result<HashMap<WorkspaceId, String>> {
    let mut names: HashMap<WorkspaceId, String> = hub
        .store()
        .workspaces()
        .await?
        .into_iter()
        .map(|w| (w.id, w.name.to_string()))
        .collect();
    names.insert(WorkspaceId::NIL, "installation".to_owned());
    Ok(names)
}

fn chain_name(names: &HashMap<WorkspaceId, String>, id: WorkspaceId) -> String {
    names
        .get(&id)
        .cloned()
        .unwrap_or_else(|| format!("{id} (deleted workspace)"))
}

/// The anchors file: each chain's anchor by chain id.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Anchors {
    chains: BTreeMap<String, Anchor>,
}

fn read_anchors(path: &Path) -> anyhow::Result<Anchors> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not an anchors file written by `sealsync audit verify --anchor`",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Anchors::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the anchors file at once, so that a crash leaves the old anchors or the new ones.
fn write_anchors(path: &Path, anchors: &Anchors) -> anyhow::Result<()> {
    let text = serde_json::to_vec_pretty(anchors)?;
    crate::cmd::export::write_atomically(path, &text)
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn verify(
    hub: &Hub,
    workspace: Option<&str>,
    anchor_file: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let names = chain_names(hub).await?;
    let mut anchors = match anchor_file {
        Some(path) => Some(read_anchors(path)?),
        None => None,
    };
    let Some(log) = open_log(hub).await? else {
        if let Some(a) = anchors.as_ref().filter(|a| !a.chains.is_empty()) {
            bail!(
                "the anchors file names {} audit chains, but this installation has no audit key: \
                 the log was removed or this is another installation",
                a.chains.len()
            );
        }
        if json {
            println!("{}", serde_json::json!({"ok": true, "chains": []}));
        } else {
            println!("No audit entries yet (no audit key has been made).");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut chains = match workspace {
        Some(w) => vec![workspace_id(hub, w).await?],
        None => log.chains().await?,
    };
    // A chain anchored before and gone now was removed whole: checked like the others.
    if let (None, Some(a)) = (workspace, &anchors) {
        for id in a.chains.keys() {
            let id = WorkspaceId::parse(id).map_err(|_| {
                anyhow::anyhow!("the anchors file names a chain {id:?} that is not an id")
            })?;
            if !chains.contains(&id) {
                chains.push(id);
            }
        }
    }
    let mut ok = true;
    let mut out = Vec::new();
    for &chain in &chains {
        let name = chain_name(&names, chain);
        let mut report = log.verify(chain).await?;
        if let Some(earlier) = anchors
            .as_ref()
            .and_then(|a| a.chains.get(&chain.to_string()))
            && let Some(problem) = log.check_anchor(chain, earlier).await?
        {
            report.problems.push(problem);
        }
        ok &= report.is_ok();
        if json {
            let problems: Vec<_> = report
                .problems
                .iter()
                .map(|p| {
                    let mut v = serde_json::to_value(p).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("message".into(), p.to_string().into());
                    }
                    v
                })
                .collect();
            out.push(serde_json::json!({
                "chain": name,
                "id": chain.to_string(),
                "entries_checked": report.entries_checked,
                "ok": report.is_ok(),
                "problems": problems,
            }));
        } else if report.is_ok() {
            println!(
                "Audit chain {name}: {} entries, intact.",
                report.entries_checked
            );
        } else {
            println!(
                "Audit chain {name}: {} entries, {} problems:",
                report.entries_checked,
                report.problems.len()
            );
            for p in &report.problems {
                println!("  {name}: {p}");
            }
        }
    }
    // The new anchors are kept only when everything held: a failed check keeps the old ones
    // as the evidence.
    let mut anchored = serde_json::Value::Null;
    if let (Some(path), Some(a), true) = (anchor_file, anchors.as_mut(), ok) {
        for &chain in &chains {
            if let Some(now) = log.anchor(chain).await? {
                a.chains.insert(chain.to_string(), now);
            }
        }
        write_anchors(path, a)?;
        anchored = path.display().to_string().into();
        if !json {
            println!(
                "Anchors of {} chains kept in {}.",
                a.chains.len(),
                path.display()
            );
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": ok, "chains": out, "anchored": anchored})
        );
    } else if out.is_empty() && ok && workspace.is_none() {
        println!("No audit entries yet.");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn tail(
    hub: &Hub,
    workspace: Option<&str>,
    installation: bool,
    n: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let chain = if installation {
        WorkspaceId::NIL
    } else {
        workspace_id(hub, workspace.unwrap_or("default")).await?
    };
    let entries = match open_log(hub).await? {
        Some(log) => log.tail(chain, n).await?,
        None => Vec::new(),
    };
    if json {
        let list: Vec<_> = entries.iter().map(entry_json).collect();
        println!(
            "{}",
            serde_json::json!({"chain": chain.to_string(), "entries": list})
        );
    } else {
        for e in &entries {
            println!("{}", entry_line(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn workspace_id(hub: &Hub, name: &str) -> anyhow::Result<WorkspaceId> {
    let name = workspace_name(Some(name))?;
    match hub.store().workspace_by_name(&name).await? {
        Some(ws) => Ok(ws.id),
        None => bail!("no workspace named {name:?}"),
    }
}

/// `2024-05-01T12:00:00.000Z  7  user:u1  contact.read  contact:…  success  192.0.2.1`
fn entry_line(e: &AuditEntry) -> String {
    let ev = &e.event;
    let outcome = match &ev.reason {
        Some(r) => format!("{}({r})", ev.outcome.as_str()),
        None => ev.outcome.as_str().to_owned(),
    };
    format!(
        "{}  {}  {}  {}  {}  {}  {}",
        rfc3339(e.at_ms),
        e.seq,
        ev.actor,
        ev.action,
        ev.resource
            .as_ref()
            .map_or_else(|| "-".to_owned(), |r| r.to_string()),
        outcome,
        ev.source.map_or_else(|| "-".to_owned(), |s| s.to_string()),
    )
}

fn entry_json(e: &AuditEntry) -> serde_json::Value {
    let ev = &e.event;
    serde_json::json!({
        "seq": e.seq,
        "at": rfc3339(e.at_ms),
        "key_version": e.key_version,
        "actor": ev.actor,
        "action": ev.action,
        "resource": ev.resource,
        "outcome": ev.outcome,
        "reason": ev.reason,
        "source": ev.source,
    })
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds, e.g.
/// `2024-05-01T12:00:00.123Z` (proleptic Gregorian calendar; Howard Hinnant's `civil_from_days`).
pub(crate) fn rfc3339(at_ms: i64) -> String {
    let secs = at_ms.div_euclid(1000);
    let ms = at_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
