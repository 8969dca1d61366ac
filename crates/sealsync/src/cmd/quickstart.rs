//! `sealsync quickstart`: init, import the bundled samples, export them, say what to try next.

use std::io::BufReader;
use std::process::ExitCode;

use sealsync_contact::csv::{CsvLayout, CsvPreset};
use sealsync_contact::vcard::VcardVersion;
use sealsync_store::ImportOptions;
use sealsync_types::WorkspaceName;

use sealsync_engine::{
    ConflictPolicy, Direction, EndpointSpec, Engine, LinkSpec, RunOptions, RunReport,
};

use crate::cmd::export::{OutputFormat, export_file, export_vdir};
use crate::cmd::import::{CsvChoice, ImportOutcome, InputFormat, Pipeline, import_stream};
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
    let mut pipeline = Pipeline::new(&hub, &keys, &options);
    for (name, bytes) in SAMPLES {
        let source = format!("examples/contacts/{name}");
        import_stream(
            &mut pipeline,
            &source,
            InputFormat::Vcard,
            &CsvChoice::Detect,
            BufReader::new(*bytes),
            &mut outcome,
        )
        .await?;
    }
    pipeline.finish(&mut outcome).await?;
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
    let demo = demo(
        ctx,
        Engine::new(hub.clone(), keys.clone(), ctx.default_region()),
    )
    .await?;
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
    print!("{demo}");
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
    println!("  edit a file in {dd}/demo/laptop/, then: sealsync --data-dir {dd} sync --dry-run");
    Ok(if outcome.rejected.is_empty() && failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_PARTIAL)
    })
}

/// Two-way links with two vCard folders and a one-way CSV backup, run once; then one contact is
/// edited in the first folder and synced again, so the edit shows up in the other places.
async fn demo(ctx: &Context, engine: Engine) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let root = ctx.data_dir.join("demo");
    let (phone, laptop, backup) = (
        root.join("phone"),
        root.join("laptop"),
        root.join("backup.csv"),
    );
    let two_way = LinkSpec {
        direction: Direction::Both,
        conflict: ConflictPolicy::Newest,
        ..LinkSpec::default()
    };
    for (name, path) in [("phone", &phone), ("laptop", &laptop)] {
        let spec = EndpointSpec::Vdir {
            path: path.clone(),
            version: None,
        };
        engine.put_endpoint(name, &spec, false).await?;
        engine.put_link(name, name, &two_way, false).await?;
    }
    let csv = EndpointSpec::Csv {
        path: backup.clone(),
        preset: Some("google".into()),
        map: None,
    };
    engine.put_endpoint("backup", &csv, false).await?;
    let one_way = LinkSpec {
        direction: Direction::Push,
        drop: vec!["NOTE".into(), "PHOTO".into()],
        ..LinkSpec::default()
    };
    engine.put_link("backup", "backup", &one_way, false).await?;

    let mut out = String::new();
    let _ = writeln!(out, "\nSync demo in {}:", root.display());
    let _ = writeln!(
        out,
        "  links phone and laptop (vCard folders, two-way, newest wins), backup (Google CSV, one-way, NOTE and PHOTO dropped)"
    );
    for r in sync_all(&engine).await? {
        let _ = writeln!(out, "  {}", summary(&r));
    }
    // A contact added on one side travels through the hub to the others.
    let added = phone.join("quickstart-demo.vcf");
    if !added.exists() {
        std::fs::write(&added, DEMO_CARD)?;
        let _ = writeln!(out, "  added phone/quickstart-demo.vcf; synced again:");
        for r in sync_all(&engine).await? {
            let _ = writeln!(out, "  {}", summary(&r));
        }
        let _ = writeln!(
            out,
            "  the new contact is now in the hub, in laptop/ and in backup.csv"
        );
    }
    Ok(out)
}

async fn sync_all(engine: &Engine) -> anyhow::Result<Vec<RunReport>> {
    let options = RunOptions {
        batch: sealsync_engine::DEFAULT_BATCH,
        ..RunOptions::default()
    };
    let defs: Vec<_> = engine
        .link_defs()
        .await?
        .into_iter()
        .filter(|d| ["phone", "laptop", "backup"].contains(&d.name.as_str()))
        .collect();
    let mut reports = Vec::new();
    for (_, r) in engine.run_all(&defs, &options, &|_, _, _| {}).await {
        reports.push(r?);
    }
    Ok(reports)
}

/// A made-up person the demo adds to the phone folder.
const DEMO_CARD: &str = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:5e1a5c0d-0000-4000-8000-000000000001\r\nFN:Quinn Quickstart\r\nN:Quickstart;Quinn;;;\r\nEMAIL;TYPE=work:quinn@example.invalid\r\nNOTE:Added to the phone folder by sealsync quickstart.\r\nEND:VCARD\r\n";

fn summary(r: &RunReport) -> String {
    let c = &r.counts;
    format!(
        "{:<7} hub: {} new, {} updated; folder/file: {} new, {} updated; {} unchanged",
        r.link, c.hub_created, c.hub_updated, c.remote_created, c.remote_updated, c.unchanged
    )
}
