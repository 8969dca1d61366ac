//! `sealsync contacts find`: lookups through the blind index.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use sealsync_contact::normalize::normalize_uid;
use sealsync_contact::vcard::{VcardVersion, to_vcard};
use sealsync_contact::{Email, Phone};
use sealsync_crypto::IndexKind;

use crate::context::{Context, workspace_name};

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Find contacts by email, phone or UID. Prints matching contacts as vCard 4.0 (or JSON).
    Find(FindArgs),
}

#[derive(Debug, Args)]
pub struct FindArgs {
    #[arg(long, group = "key")]
    pub email: Option<String>,
    #[arg(long, group = "key")]
    pub phone: Option<String>,
    #[arg(long, group = "key")]
    pub uid: Option<String>,
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
    /// Print ids and jCards as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Context, command: ContactsCommand) -> anyhow::Result<ExitCode> {
    let ContactsCommand::Find(args) = command;
    let (kind, key) = if let Some(e) = &args.email {
        let Some(e) = Email::parse(e) else {
            bail!("--email is not an email address")
        };
        (IndexKind::Email, e.as_str().to_owned())
    } else if let Some(p) = &args.phone {
        let Some(p) = Phone::parse(p, ctx.default_region().as_deref()) else {
            bail!(
                "--phone is not a valid phone number (set contacts.default_region for numbers without a country code)"
            )
        };
        (IndexKind::Phone, p.as_str().to_owned())
    } else if let Some(u) = &args.uid {
        let Some(u) = normalize_uid(u) else {
            bail!("--uid is empty")
        };
        (IndexKind::Uid, u)
    } else {
        bail!("give one of --email, --phone or --uid");
    };
    let hub = ctx.hub().await?;
    let (_, keys) = hub
        .open_workspace(&workspace_name(args.workspace.as_deref())?)
        .await?;
    let found = hub.find(&keys, kind, &key).await?;
    hub.store().close().await;
    if args.json {
        let items: Vec<_> = found
            .iter()
            .map(|(id, c)| serde_json::json!({"id": id.to_string(), "jcard": sealsync_contact::jcard::to_jcard(c)}))
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else if found.is_empty() {
        eprintln!("No contact matches.");
    } else {
        for (_, c) in &found {
            print!("{}", to_vcard(c, VcardVersion::V4));
        }
    }
    Ok(if found.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
