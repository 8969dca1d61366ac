//! `sealsync export`: the workspace's contacts out of the sealed hub, as vCard 4.0 / 3.0,
//! jCard or CSV, into one file or a vdir (one `.vcf` per contact). Files are written atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use sealsync_contact::csv::{CsvLayout, CsvPreset, CsvWriter};
use sealsync_contact::jcard::to_jcard;
use sealsync_contact::vcard::{VcardVersion, to_vcard};
use sealsync_crypto::WorkspaceKeys;
use sealsync_store::{Hub, RecordError, StoreError};
use serde::Serialize;

use crate::context::{Context, workspace_name};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output file, or folder for one .vcf per contact (an existing folder, or a path ending
    /// in `/`).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Workspace to export.
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub csv: crate::cmd::CsvArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Vcard4,
    Vcard3,
    Jcard,
    Csv,
}

/// What an export did.
#[derive(Debug, Default, Serialize)]
pub struct ExportOutcome {
    pub exported: u64,
    /// CSV only: values that had no column in the layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_values: Option<u64>,
    pub errors: Vec<ExportError>,
}

#[derive(Debug, Serialize)]
pub struct ExportError {
    pub contact: String,
    pub error: String,
}

pub async fn run(ctx: &Context, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let hub = ctx.hub().await?;
    let (_, keys) = hub
        .open_workspace(&workspace_name(args.workspace.as_deref())?)
        .await?;
    let layout = args
        .csv
        .layout()?
        .unwrap_or_else(|| CsvLayout::preset(CsvPreset::Google));
    let as_dir = args.out.is_dir() || args.out.to_string_lossy().ends_with('/');
    let outcome = if as_dir {
        let version = match args.format {
            OutputFormat::Vcard4 => VcardVersion::V4,
            OutputFormat::Vcard3 => VcardVersion::V3,
            _ => anyhow::bail!(
                "a folder export writes one .vcf per contact: use --format vcard4 or vcard3"
            ),
        };
        export_vdir(&hub, &keys, &args.out, version).await?
    } else {
        export_file(&hub, &keys, &args.out, args.format, layout).await?
    };
    hub.store().close().await;
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        println!(
            "Exported {} contacts to {}.",
            outcome.exported,
            args.out.display()
        );
        if let Some(n) = outcome.dropped_values.filter(|n| *n > 0) {
            println!(
                "  {n} values had no column in the CSV layout and were left out (export as vCard to keep everything)."
            );
        }
        for e in &outcome.errors {
            eprintln!("  failed: contact {}: {}", e.contact, e.error);
        }
    }
    Ok(if outcome.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_PARTIAL)
    })
}

fn record_errors(errors: Vec<RecordError>) -> Vec<ExportError> {
    errors
        .into_iter()
        .map(|e| ExportError {
            contact: e.id.to_string(),
            error: e.error,
        })
        .collect()
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Other(format!("write failed: {e}"))
}

/// One `.vcf` per contact, named by contact id (never by anything personal).
pub async fn export_vdir(
    hub: &Hub,
    keys: &WorkspaceKeys,
    dir: &Path,
    version: VcardVersion,
) -> anyhow::Result<ExportOutcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut exported = 0;
    let write = |name: String, text: &str| -> Result<(), StoreError> {
        write_atomically(&dir.join(name), text.as_bytes()).map_err(io)
    };
    let errors = match version {
        VcardVersion::V4 => {
            hub.for_each_vcard(keys, |id, text| {
                exported += 1;
                write(format!("{id}.vcf"), text)
            })
            .await?
        }
        VcardVersion::V3 => {
            hub.for_each_contact(keys, |id, c| {
                exported += 1;
                write(format!("{id}.vcf"), &to_vcard(&c, version))
            })
            .await?
        }
    };
    Ok(ExportOutcome {
        exported,
        dropped_values: None,
        errors: record_errors(errors),
    })
}

/// All contacts into one file.
pub async fn export_file(
    hub: &Hub,
    keys: &WorkspaceKeys,
    path: &Path,
    format: OutputFormat,
    layout: CsvLayout,
) -> anyhow::Result<ExportOutcome> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = temp_path(path);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut exported = 0u64;
    let mut dropped = None;
    let result = match format {
        OutputFormat::Vcard4 => {
            hub.for_each_vcard(keys, |_, text| {
                exported += 1;
                out.write_all(text.as_bytes()).map_err(io)
            })
            .await
        }
        OutputFormat::Vcard3 => {
            hub.for_each_contact(keys, |_, c| {
                exported += 1;
                out.write_all(to_vcard(&c, VcardVersion::V3).as_bytes())
                    .map_err(io)
            })
            .await
        }
        OutputFormat::Jcard => {
            let mut first = true;
            let r = hub
                .for_each_contact(keys, |_, c| {
                    exported += 1;
                    out.write_all(if first { b"[\n" } else { b",\n" })
                        .map_err(io)?;
                    first = false;
                    serde_json::to_writer(&mut out, &to_jcard(&c))
                        .map_err(|e| StoreError::Other(e.to_string()))
                })
                .await;
            let close: &[u8] = if first { b"[]\n" } else { b"\n]\n" };
            out.write_all(close)?;
            r
        }
        OutputFormat::Csv => {
            let mut writer = CsvWriter::new(&mut out, layout)?;
            let r = hub
                .for_each_contact(keys, |_, c| {
                    exported += 1;
                    writer
                        .write(&c)
                        .map_err(|e| StoreError::Other(e.to_string()))
                })
                .await;
            dropped = Some(writer.dropped_values);
            writer.finish()?;
            r
        }
    };
    let errors = match result {
        Ok(e) => e,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(ExportOutcome {
        exported,
        dropped_values: dropped,
        errors: record_errors(errors),
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.sealsync-tmp"))
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
