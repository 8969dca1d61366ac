//! One module per subcommand, and the arguments several share.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use sealsync_contact::csv::{CsvLayout, CsvPreset};

pub mod accounts;
pub mod audit;
pub mod contacts;
pub mod export;
pub mod identity;
pub mod import;
pub mod init;
pub mod keys;
pub mod links;
pub mod quickstart;
pub mod serve;
pub mod sync;
pub mod workspace;

/// How CSV columns are laid out: a preset or a mapping file.
#[derive(Debug, Args)]
pub struct CsvArgs {
    /// CSV layout: google or outlook (import recognises both from the header row; export
    /// defaults to google).
    #[arg(long, value_name = "PRESET", value_parser = parse_preset)]
    pub csv_preset: Option<CsvPreset>,
    /// CSV column mapping file (TOML: `delimiter`, `[columns] "Header" = "TEL;TYPE=cell"`).
    #[arg(long, value_name = "FILE", conflicts_with = "csv_preset")]
    pub csv_map: Option<PathBuf>,
}

fn parse_preset(s: &str) -> Result<CsvPreset, String> {
    s.parse()
}

impl CsvArgs {
    /// The layout asked for, if any.
    pub fn layout(&self) -> anyhow::Result<Option<CsvLayout>> {
        match (&self.csv_preset, &self.csv_map) {
            (Some(p), _) => Ok(Some(CsvLayout::preset(*p))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read CSV mapping {}", path.display()))?;
                let layout = CsvLayout::from_mapping_toml(&text)
                    .with_context(|| format!("in {}", path.display()))?;
                Ok(Some(layout))
            }
            (None, None) => Ok(None),
        }
    }
}
