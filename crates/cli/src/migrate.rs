//! `mailshift migrate`: arguments, secrets, and the embedded wiring (SQLite state file,
//! in-process queue) around the engine.

use crate::output;
use crate::progress::TerminalProgress;
use anyhow::{Context, bail};
use clap::Args;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::plan::BatchLimits;
use mailshift_engine::{MigrateOptions, migrate};
use mailshift_imap::{ImapConnector, ServerConfig, Side};
use mailshift_store::SeaStore;
use secrecy::SecretString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
        MAILSHIFT_FROM_PASSWORD=... MAILSHIFT_TO_PASSWORD=... \\\n  \
        mailshift migrate --from imap://alice@old.example --to imaps://alice@new.example\n\n  \
        mailshift migrate --from imaps://bob@old.example --from-password-file bob.old \\\n      \
        --to imaps://bob@new.example --to-password-file bob.new \\\n      \
        --map 'Sent Items=Sent' --exclude '^Trash$' --json")]
pub struct MigrateArgs {
    /// Old server: imap://USER@HOST[:PORT] (STARTTLS, port 143) or imaps://USER@HOST[:PORT] (TLS, port 993)
    #[arg(long, value_name = "URL")]
    from: String,
    /// New server, same form as --from
    #[arg(long, value_name = "URL")]
    to: String,
    /// File holding the old server's password (otherwise MAILSHIFT_FROM_PASSWORD)
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// File holding the new server's password (otherwise MAILSHIFT_TO_PASSWORD)
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// State file (SQLite) with checkpoints; keep it to make the next run incremental
    #[arg(long, value_name = "FILE", default_value = "mailshift.db")]
    state: PathBuf,
    /// Send a source folder (and its subfolders) elsewhere: 'SOURCE=DEST', each written
    /// with its own server's hierarchy delimiter. Repeatable
    #[arg(long = "map", value_name = "SRC=DST")]
    maps: Vec<String>,
    /// Skip source folders whose name matches this regular expression. Repeatable
    #[arg(long = "exclude", value_name = "REGEX")]
    excludes: Vec<String>,
    /// Allow logging in without TLS when a server offers no STARTTLS (trusted networks only)
    #[arg(long)]
    allow_plaintext: bool,
    /// Trust this CA certificate (PEM) for the old server, besides the system's
    #[arg(long, value_name = "FILE")]
    from_ca_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for the new server, besides the system's
    #[arg(long, value_name = "FILE")]
    to_ca_file: Option<PathBuf>,
    /// Folders copied in parallel; each uses one connection per server
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: u16,
    /// Seconds a connection or a single IMAP command may take
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    timeout: u64,
    /// Messages per batch (one fetch and one MULTIAPPEND each)
    #[arg(long, value_name = "N", default_value_t = BatchLimits::default().max_messages, hide_short_help = true)]
    batch_messages: usize,
    /// Print a machine-readable summary on stdout instead of the table
    #[arg(long)]
    json: bool,
}

fn password(
    file: &Option<PathBuf>,
    var: &str,
    side: &str,
    flag: &str,
) -> anyhow::Result<SecretString> {
    if let Some(path) = file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {side} password file {}", path.display()))?;
        let pw = raw.strip_suffix('\n').unwrap_or(&raw);
        let pw = pw.strip_suffix('\r').unwrap_or(pw);
        if pw.is_empty() {
            bail!("the {side} password file {} is empty", path.display());
        }
        return Ok(SecretString::from(pw.to_string()));
    }
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ => bail!("no password for the {side} server: pass {flag} FILE or set {var}"),
    }
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    crate::init_logging("warn");
    let source: Endpoint = args.from.parse().context("--from")?;
    let dest: Endpoint = args.to.parse().context("--to")?;
    let from_pw = password(
        &args.from_password_file,
        "MAILSHIFT_FROM_PASSWORD",
        "source",
        "--from-password-file",
    )?;
    let to_pw = password(
        &args.to_password_file,
        "MAILSHIFT_TO_PASSWORD",
        "destination",
        "--to-password-file",
    )?;
    let rules = FolderRules::new(&args.maps, &args.excludes)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let connector = ImapConnector {
        source: ServerConfig {
            endpoint: source.clone(),
            password: from_pw,
            side: Side::Source,
            allow_plaintext: args.allow_plaintext,
            ca_file: args.from_ca_file.clone(),
            timeout,
        },
        target: ServerConfig {
            endpoint: dest.clone(),
            password: to_pw,
            side: Side::Destination,
            allow_plaintext: args.allow_plaintext,
            ca_file: args.to_ca_file.clone(),
            timeout,
        },
    };
    let store = SeaStore::open_sqlite(&args.state)
        .await
        .with_context(|| format!("cannot open the state file {}", args.state.display()))?;
    let progress = Arc::new(TerminalProgress::new(!args.json));
    let opts = MigrateOptions {
        rules,
        connections: usize::from(args.connections),
        limits: BatchLimits {
            max_messages: args.batch_messages.max(1),
            ..BatchLimits::default()
        },
        ..MigrateOptions::default()
    };
    let summary = migrate(
        &source,
        &dest,
        Arc::new(connector),
        Arc::new(store),
        progress.clone(),
        opts,
    )
    .await;
    progress.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        output::print_summary(&summary);
    }
    Ok(if summary.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
