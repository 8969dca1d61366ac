//! `sealsync quickstart`: init, import the bundled samples, export them, say what to try next.

use std::io::BufReader;
use std::process::ExitCode;

use sealsync_contact::csv::{CsvLayout, CsvPreset};
use sealsync_contact::vcard::VcardVersion;
use sealsync_store::ImportOptions;
use sealsync_types::WorkspaceName;

use crate::cmd::export::{OutputFormat, export_file, export_vdir};
use crate::cmd::import::{CsvChoice, ImportOutcome, InputFormat, import_stream};
use crate::context::Context;

include!(concat!(env!("OUT_DIR"), "/samples.rs"));

pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let report = crate::cmd::init::ensure(ctx).await?;
    if report.created.is_empty() {
        println!(
            "Using the existing sealsync data in {}.",
            ctx.data_dir.display()
        );
    } else {
        println!("Initialised sealsync in {}.", ctx.data_dir.display());
    }
    let hub = ctx.hub().await?;
    let (_, keys) = hub
        .open_workspace(&WorkspaceName::default_workspace())
        .await?;
    let keys = std::sync::Arc::new(keys);
    let options = ImportOptions {
        default_region: ctx.default_region(),
    };
    let mut outcome = ImportOutcome::default();
    for (name, bytes) in SAMPLES {
        let source = format!("examples/contacts/{name}");
        import_stream(
            &hub,
            &keys,
            &source,
            InputFormat::Vcard,
            &CsvChoice::Detect,
            BufReader::new(*bytes),
            &options,
            &mut outcome,
        )
        .await?;
    }
    println!(
        "Imported {} sample contacts from {} files into the sealed hub: {} new, {} updated, {} unchanged, {} rejected.",
        outcome.imported + outcome.updated + outcome.unchanged,
        SAMPLES.len(),
        outcome.imported,
        outcome.updated,
        outcome.unchanged,
        outcome.rejected.len()
    );
    let out = ctx.data_dir.join("out");
    let csv_path = out.join("contacts.csv");
    let csv = export_file(
        &hub,
        &keys,
        &csv_path,
        OutputFormat::Csv,
        CsvLayout::preset(CsvPreset::Google),
    )
    .await?;
    let vdir = export_vdir(&hub, &keys, &out.join("vcards"), VcardVersion::V4).await?;
    hub.store().close().await;
    println!(
        "Exported {} contacts to {} (Google CSV layout).",
        csv.exported,
        csv_path.display()
    );
    println!(
        "Exported {} contacts to {}/ (one vCard 4.0 file each).",
        vdir.exported,
        out.join("vcards").display()
    );
    let failures = csv.errors.len() + vdir.errors.len();
    if failures > 0 {
        println!("{failures} contacts could not be opened; see `sealsync export` for details.");
    }
    let dd = ctx.data_dir.display();
    println!();
    println!(
        "The database under {dd} holds only ciphertext; the key is in {}.",
        ctx.keyfile_path().display()
    );
    println!("Try next:");
    println!("  sealsync --data-dir {dd} contacts find --email <an address from the CSV>");
    println!("  sealsync --data-dir {dd} import path/to/your-export.vcf");
    println!("  sealsync --data-dir {dd} export --format vcard3 --out contacts.vcf");
    println!("  sealsync --data-dir {dd} keys status");
    Ok(if outcome.rejected.is_empty() && failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_PARTIAL)
    })
}
