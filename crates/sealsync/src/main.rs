//! `sealsync`: the command-line interface.
//!
//! Parses arguments and configuration, sets up logging, and hands each subcommand to its module
//! in [`cmd`]. Errors reach the user as one line saying what went wrong and what to do, with a
//! non-zero exit code; never a backtrace or a `Debug` dump.

mod cmd;
mod config;
mod context;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keeps contact data in sync between the systems people keep it in, sealed the whole way:
/// encrypted at rest under rotating keys, matched without plaintext, never logged.
///
/// Start with `sealsync quickstart`: it creates a data directory, imports sample contacts into
/// the sealed hub and exports them again as CSV and vCards.
#[derive(Debug, Parser)]
#[command(name = "sealsync", version, max_term_width = 100)]
struct Cli {
    /// Data directory: database, keystore and master keyfile.
    /// [default: ./sealsync-data]
    #[arg(long, global = true, env = "SEALSYNC_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// TOML configuration file. Environment variables SEALSYNC_<KEY> (with `__` between
    /// levels, e.g. SEALSYNC_DATABASE__URL) override it; unknown keys are an error.
    #[arg(long, global = true, env = "SEALSYNC_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data directory, database, keystore, master keyfile and the `default`
    /// workspace. Safe to run again: it changes nothing that exists.
    Init,
    /// Init if needed, import the bundled sample contacts, export them as CSV and vCards, and
    /// show what to try next.
    Quickstart,
    /// Import contacts from vCard (.vcf), jCard (.json) or CSV files, or vdir folders.
    Import(cmd::import::ImportArgs),
    /// Export the workspace's contacts to a file, or a folder of .vcf files.
    Export(cmd::export::ExportArgs),
    /// Look contacts up by email, phone or UID through the blind index (no plaintext scan).
    #[command(subcommand)]
    Contacts(cmd::contacts::ContactsCommand),
    /// List, create or delete workspaces.
    #[command(subcommand)]
    Workspace(cmd::workspace::WorkspaceCommand),
    /// Key status and rotation: data-key versions, records per version, rotate, re-encrypt.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// External contact collections: vdir folders, CSV files and SQL tables.
    #[command(subcommand)]
    Endpoint(cmd::links::EndpointCommand),
    /// Links between endpoints and the hub: direction, conflict and deletion rules, transforms.
    #[command(subcommand)]
    Link(cmd::links::LinkCommand),
    /// Credentials for external systems (sealed, write-only): add, list, rotate, remove.
    #[command(subcommand)]
    Account(cmd::accounts::AccountCommand),
    /// Make the workspace's endpoints and links match a TOML file (idempotent).
    Apply(cmd::links::ApplyArgs),
    /// Run links: pull changes into the hub, push them out, by the links' rules.
    Sync(cmd::sync::SyncArgs),
    /// Conflicts waiting for a decision, and deciding them.
    #[command(subcommand)]
    Conflicts(cmd::sync::ConflictsCommand),
    /// Recorded runs, newest first: link, status (queued, running, ok, partial, failed,
    /// interrupted), start, duration and counts.
    Runs(cmd::sync::RunsArgs),
    /// Outgoing webhook deliveries: list them, replay dead ones, send what is due.
    #[command(subcommand)]
    Deliveries(cmd::sync::DeliveriesCommand),
    /// Serve the HTTPS API (TLS 1.2+; plain HTTP only on loopback when asked).
    Serve(cmd::serve::ServeArgs),
    /// Users: add one (with a role in a workspace), list a workspace's members.
    #[command(subcommand)]
    User(cmd::identity::UserCommand),
    /// Users' API keys: create (shown once), list, revoke.
    #[command(subcommand)]
    Apikey(cmd::identity::ApiKeyCommand),
    /// OAuth clients for programs (client-credentials grant): create, list, revoke,
    /// rotate-secret.
    #[command(subcommand)]
    Client(cmd::identity::ClientCommand),
    /// The audit log: verify its hash chains, show the newest entries.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
}

/// Exit code when some input was rejected but the rest was processed.
pub const EXIT_PARTIAL: u8 = 3;

/// Import, sync and the API allocate and free many small values per contact (parsed
/// properties, sealed rows, query arguments); mimalloc serves those with far less time in the
/// allocator than the system one.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`; the bindings name only some
/// options). A test checks it by the option's default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with mimalloc before it goes back to the system. Its default,
/// 1000 ms, kept what a large sync had freed long after: the peak of a 100k-contact initial
/// sync was 136–153 MB over identical runs, and 110–114 MB at 10 ms.
const PURGE_AFTER_MS: std::ffi::c_long = 10;

#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: `mi_option_set` only stores the value; mimalloc reads the option each time it
    // schedules a purge, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_AFTER_MS) }
}

fn main() -> ExitCode {
    tune_allocator();
    // A panic message may quote the data being processed: report where, never what.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error{at}; this is a bug in sealsync, please report it (no data was logged)"
        );
    }));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line: `what: why: why`.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = config::Config::load(cli.config.as_deref())?;
    init_logging(&config);
    let ctx = context::Context::new(config, cli.data_dir.as_deref());
    match cli.command {
        Command::Init => cmd::init::run(&ctx).await,
        Command::Quickstart => cmd::quickstart::run(&ctx).await,
        Command::Import(args) => cmd::import::run(&ctx, args).await,
        Command::Export(args) => cmd::export::run(&ctx, args).await,
        Command::Contacts(c) => cmd::contacts::run(&ctx, c).await,
        Command::Workspace(c) => cmd::workspace::run(&ctx, c).await,
        Command::Keys(c) => cmd::keys::run(&ctx, c).await,
        Command::Endpoint(c) => cmd::links::endpoint(&ctx, c).await,
        Command::Link(c) => cmd::links::link(&ctx, c).await,
        Command::Account(c) => cmd::accounts::run(&ctx, c).await,
        Command::Apply(a) => cmd::links::apply(&ctx, a).await,
        Command::Sync(a) => cmd::sync::sync(&ctx, a).await,
        Command::Conflicts(c) => cmd::sync::conflicts(&ctx, c).await,
        Command::Runs(a) => cmd::sync::runs(&ctx, a).await,
        Command::Deliveries(c) => cmd::sync::deliveries(&ctx, c).await,
        Command::Audit(c) => cmd::audit::run(&ctx, c).await,
        Command::Serve(a) => cmd::serve::run(&ctx, a).await,
        Command::User(c) => cmd::identity::user(&ctx, c).await,
        Command::Apikey(c) => cmd::identity::apikey(&ctx, c).await,
        Command::Client(c) => cmd::identity::client(&ctx, c).await,
    }
}

fn init_logging(config: &config::Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(config.log.level.as_deref().unwrap_or("warn"))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log.format.as_deref() == Some("json") {
        builder.json().try_init()
    } else {
        builder.without_time().try_init()
    };
}

#[cfg(test)]
mod tests {
    /// The option set at start is the purge delay: its default is the one mimalloc documents
    /// for it (unless the environment sets it).
    #[test]
    #[allow(unsafe_code)]
    fn the_option_set_at_start_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option's value.
        let value = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert_eq!(
            value,
            1000,
            "option {} is not the purge delay",
            super::PURGE_DELAY
        );
    }
}
