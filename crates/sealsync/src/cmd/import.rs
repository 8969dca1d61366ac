//! `sealsync import`: vCard, jCard and CSV files or vdir folders into the sealed hub.
//!
//! Input is streamed and imported in batches; a bad card or row is reported with its source and
//! line and the rest goes on.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use sealsync_contact::Contact;
use sealsync_contact::csv::{CsvLayout, CsvPreset, CsvReader};
use sealsync_contact::jcard::from_jcard_str;
use sealsync_contact::vcard::VcardReader;
use sealsync_crypto::WorkspaceKeys;
use sealsync_store::{Hub, ImportCounts, ImportItem, ImportOptions, ImportSession};
use serde::Serialize;

use crate::context::{Context, workspace_name};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files (.vcf, .json, .csv) or folders of .vcf files (vdirs).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Workspace to import into.
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
    /// Input format; by default taken from each file's extension.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    #[command(flatten)]
    pub csv: crate::cmd::CsvArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    Vcard,
    Jcard,
    Csv,
}

/// One rejected card, row or file.
#[derive(Debug, Serialize)]
pub struct RejectedItem {
    pub source: String,
    pub line: u64,
    pub error: String,
}

/// What an import did, as printed by `--json`.
#[derive(Debug, Default, Serialize)]
pub struct ImportOutcome {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: Vec<RejectedItem>,
}

impl ImportOutcome {
    fn add(&mut self, c: ImportCounts) {
        self.imported += c.imported;
        self.updated += c.updated;
        self.unchanged += c.unchanged;
    }
}

/// How CSV input is laid out.
#[derive(Debug, Clone)]
pub enum CsvChoice {
    Detect,
    Layout(CsvLayout),
}

const BATCH: usize = 2_000;

pub async fn run(ctx: &Context, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    let (ws, keys) = hub
        .open_workspace(&workspace_name(args.workspace.as_deref())?)
        .await?;
    let keys = Arc::new(keys);
    let csv = match args.csv.layout()? {
        Some(layout) => CsvChoice::Layout(layout),
        None => CsvChoice::Detect,
    };
    let options = ImportOptions {
        default_region: ctx.default_region(),
    };
    let mut outcome = ImportOutcome::default();
    let mut pipeline = Pipeline::new(&hub, &keys, &options);
    for path in &args.paths {
        for (file, format) in expand(path, args.format, &mut outcome)? {
            let source = file.display().to_string();
            let reader = match std::fs::File::open(&file) {
                Ok(f) => BufReader::with_capacity(1 << 16, f),
                Err(e) => {
                    outcome.rejected.push(RejectedItem {
                        source,
                        line: 0,
                        error: format!("cannot open: {}", e.kind()),
                    });
                    continue;
                }
            };
            import_stream(&mut pipeline, &source, format, &csv, reader, &mut outcome).await?;
        }
    }
    pipeline.finish(&mut outcome).await?;
    hub.store().close().await;
    tracing::info!(workspace = %ws.name, imported = outcome.imported, updated = outcome.updated, "Import finished.");
    report(&outcome, args.json)?;
    Ok(if outcome.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_PARTIAL)
    })
}

/// Prints the outcome as a summary or as JSON.
pub fn report(outcome: &ImportOutcome, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(outcome)?);
        return Ok(());
    }
    println!(
        "Imported {} new, {} updated, {} unchanged, {} rejected.",
        outcome.imported,
        outcome.updated,
        outcome.unchanged,
        outcome.rejected.len()
    );
    for r in &outcome.rejected {
        eprintln!("  rejected: {}:{}: {}", r.source, r.line, r.error);
    }
    Ok(())
}

/// A path as files to read: a folder gives its `.vcf` files.
fn expand(
    path: &Path,
    forced: Option<InputFormat>,
    outcome: &mut ImportOutcome,
) -> anyhow::Result<Vec<(PathBuf, InputFormat)>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read folder {}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|e| {
                        e.eq_ignore_ascii_case("vcf") || e.eq_ignore_ascii_case("vcard")
                    })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            outcome.rejected.push(RejectedItem {
                source: path.display().to_string(),
                line: 0,
                error: "folder holds no .vcf files".into(),
            });
        }
        return Ok(files
            .into_iter()
            .map(|f| (f, forced.unwrap_or(InputFormat::Vcard)))
            .collect());
    }
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let format = match forced {
        Some(f) => f,
        None => match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("vcf" | "vcard") => InputFormat::Vcard,
            Some("json" | "jcard") => InputFormat::Jcard,
            Some("csv") => InputFormat::Csv,
            _ => bail!(
                "cannot tell the format of {} from its name; pass --format vcard|jcard|csv",
                path.display()
            ),
        },
    };
    Ok(vec![(path.to_owned(), format)])
}

/// Imports one stream into `pipeline`: contacts of many streams (a folder of one-card files)
/// share batches and transactions.
pub async fn import_stream<R: BufRead>(
    pipeline: &mut Pipeline,
    source: &str,
    format: InputFormat,
    csv: &CsvChoice,
    mut reader: R,
    outcome: &mut ImportOutcome,
) -> anyhow::Result<()> {
    let reject = |outcome: &mut ImportOutcome, line: u64, error: String| {
        outcome.rejected.push(RejectedItem {
            source: source.to_owned(),
            line,
            error,
        });
    };
    match format {
        InputFormat::Vcard => {
            for item in VcardReader::new(reader) {
                match item {
                    Ok(card) => {
                        for w in &card.warnings {
                            tracing::warn!(
                                source,
                                line = card.line,
                                "Card accepted with a warning: {w}."
                            );
                        }
                        pipeline.add(card.contact, outcome).await?;
                    }
                    Err(r) => reject(outcome, r.line, r.reason),
                }
            }
        }
        InputFormat::Jcard => {
            let mut text = String::new();
            if let Err(e) = reader.read_to_string(&mut text) {
                reject(outcome, 0, format!("cannot read: {}", e.kind()));
                return Ok(());
            }
            match from_jcard_str(&text) {
                Ok(contacts) => {
                    for contact in contacts {
                        pipeline.add(contact, outcome).await?;
                    }
                }
                Err(e) => reject(outcome, 0, e.to_string()),
            }
        }
        InputFormat::Csv => {
            let layout = match csv {
                CsvChoice::Layout(l) => l.clone(),
                CsvChoice::Detect => {
                    let head = reader.fill_buf().context("cannot read CSV")?;
                    let first_line = String::from_utf8_lossy(
                        head.split(|&b| b == b'\n').next().unwrap_or_default(),
                    )
                    .into_owned();
                    match detect_csv(&first_line) {
                        Some(p) => CsvLayout::preset(p),
                        None => {
                            reject(outcome, 1, "unknown CSV layout; pass --csv-preset google|outlook or --csv-map FILE".into());
                            return Ok(());
                        }
                    }
                }
            };
            let rows = match CsvReader::new(reader, layout) {
                Ok(r) => r,
                Err(e) => {
                    reject(outcome, 1, e.to_string());
                    return Ok(());
                }
            };
            for row in rows {
                match row {
                    Ok((_, contact)) => pipeline.add(contact, outcome).await?,
                    Err(r) => reject(outcome, r.line, r.reason),
                }
            }
        }
    }
    Ok(())
}

/// Imports batches one behind the reader: while the hub matches, seals and writes one batch on
/// another worker, this task parses and hashes (blind indexes, content hash) the next, and
/// while the batches hold mostly new contacts, seals them ahead as new ones. One
/// batch in flight at a time, in order, so a contact repeated in a later batch sees the
/// earlier one. Sealed rows are written every [`WRITE_EVERY`] contacts into the session's open
/// transaction, which the hub commits every so many rows; [`Pipeline::finish`] commits the
/// rest.
pub struct Pipeline {
    hub: Hub,
    keys: Arc<WorkspaceKeys>,
    region: Option<String>,
    batch: Vec<Contact>,
    session: Option<ImportSession>,
    inflight: Option<tokio::task::JoinHandle<SessionStep>>,
    /// Whether the last batch whose counts came back was mostly new contacts: then the next
    /// is sealed ahead here, leaving the worker only lookups and writes. A re-import of
    /// unchanged contacts would throw that work away.
    seal_ahead: bool,
    /// The last batch back from the worker, dropped here once the next is under way.
    spent: Vec<ImportItem>,
}

type SessionStep = (
    ImportSession,
    Result<ImportCounts, sealsync_store::StoreError>,
    Vec<ImportItem>,
);

/// Contacts held in memory before they are written. Rows are written after every parsed batch
/// (holding more costs memory: on the 100k-contact benchmark, 4,000 and more pushed peak RSS
/// over the 150 MB budget), and only the rows a batch leaves unwritten (when it had fewer new
/// or changed contacts) wait for the next.
const WRITE_EVERY: usize = BATCH;

impl Pipeline {
    pub fn new(hub: &Hub, keys: &Arc<WorkspaceKeys>, options: &ImportOptions) -> Self {
        Self {
            hub: hub.clone(),
            keys: keys.clone(),
            region: options.default_region.clone(),
            batch: Vec::with_capacity(BATCH),
            session: Some(ImportSession::new(keys.workspace(), options.clone())),
            inflight: None,
            seal_ahead: true,
            spent: Vec::new(),
        }
    }

    async fn add(&mut self, contact: Contact, outcome: &mut ImportOutcome) -> anyhow::Result<()> {
        self.batch.push(contact);
        if self.batch.len() >= BATCH {
            self.push(outcome).await?;
        }
        Ok(())
    }

    async fn push(&mut self, outcome: &mut ImportOutcome) -> anyhow::Result<()> {
        let prepared = std::mem::take(&mut self.batch)
            .into_iter()
            .map(|c| Hub::prepare(&self.keys, c, self.region.as_deref()));
        let mut items: Vec<ImportItem> = if self.seal_ahead {
            prepared
                .map(|p| ImportItem::sealed_as_new(&self.keys, p))
                .collect::<Result<_, _>>()?
        } else {
            prepared.map(ImportItem::from).collect()
        };
        self.drain(outcome).await?;
        let Some(mut session) = self.session.take() else {
            bail!("import session lost");
        };
        let (hub, keys) = (self.hub.clone(), self.keys.clone());
        self.inflight = Some(tokio::spawn(async move {
            let counts = match hub.import_prepared(&keys, &mut session, &mut items).await {
                Ok(c) if session.pending() >= WRITE_EVERY => {
                    hub.write_import(&mut session).await.map(|()| c)
                }
                other => other,
            };
            // Dropped on the reading task, which made them and has time to spare.
            (session, counts, items)
        }));
        self.spent = Vec::new();
        Ok(())
    }

    async fn drain(&mut self, outcome: &mut ImportOutcome) -> anyhow::Result<()> {
        if let Some(task) = self.inflight.take() {
            let (session, counts, spent) = task
                .await
                .map_err(|e| anyhow::anyhow!("import task failed: {e}"))?;
            self.session = Some(session);
            self.spent = spent;
            let counts = counts?;
            self.seal_ahead = counts.imported >= counts.updated + counts.unchanged;
            outcome.add(counts);
        }
        Ok(())
    }

    /// Imports what is left and commits everything.
    pub async fn finish(mut self, outcome: &mut ImportOutcome) -> anyhow::Result<()> {
        if !self.batch.is_empty() {
            self.push(outcome).await?;
        }
        self.drain(outcome).await?;
        if let Some(session) = self.session.as_mut() {
            self.hub.flush_import(session).await?;
        }
        Ok(())
    }
}

/// Google and Outlook exports by a column only each of them has.
fn detect_csv(header: &str) -> Option<CsvPreset> {
    let h = header.to_ascii_lowercase();
    if h.contains("e-mail 1 - value") || h.contains("given name") && h.contains("group membership")
    {
        Some(CsvPreset::Google)
    } else if h.contains("e-mail address") {
        Some(CsvPreset::Outlook)
    } else {
        None
    }
}
