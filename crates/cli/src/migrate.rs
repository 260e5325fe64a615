//! `mailshift migrate`: arguments, secrets, and the embedded wiring (SQLite state file,
//! in-process queue) around the engine.

use crate::output;
use crate::progress::TerminalProgress;
use anyhow::{Context, bail};
use clap::Args;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{Connector, NoProgress, StateStore};
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
    /// Never remove anything from the destination: messages expunged and folders deleted
    /// on the source stay; moves become copies
    #[arg(long)]
    no_delete: bool,
    /// Before copying a folder the first time, recognise messages already on the
    /// destination (from another tool or an earlier manual copy) by their full content
    /// and don't copy them again
    #[arg(long)]
    adopt_existing: bool,
    /// Keep running incremental passes (new mail within seconds via IDLE on the source
    /// INBOX) until Ctrl-C
    #[arg(long)]
    follow: bool,
    /// With --follow: the longest wait between passes, e.g. 60s, 5m
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    interval: Duration,
}

/// `90`, `90s`, `5m`, `2h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; write e.g. 30s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("'{s}': unknown unit '{unit}'; use s, m or h")),
    };
    if secs == 0 {
        return Err("the interval must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

pub(crate) fn password(
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
    let mut opts = MigrateOptions {
        rules,
        connections: usize::from(args.connections),
        limits: BatchLimits {
            max_messages: args.batch_messages.max(1),
            ..BatchLimits::default()
        },
        ..MigrateOptions::default()
    };
    let connector: Arc<dyn Connector> = Arc::new(connector);
    let store: Arc<dyn StateStore> = Arc::new(store);
    opts.delete = !args.no_delete;
    opts.adopt_existing = args.adopt_existing;
    if args.follow {
        return follow(&args, &source, &dest, connector, store, opts).await;
    }
    let summary = migrate(&source, &dest, connector, store, progress.clone(), opts).await;
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

/// `--follow`: incremental passes until Ctrl-C, woken early by new mail in the source
/// INBOX (IDLE).
async fn follow(
    args: &MigrateArgs,
    source: &Endpoint,
    dest: &Endpoint,
    connector: Arc<dyn Connector>,
    store: Arc<dyn StateStore>,
    opts: MigrateOptions,
) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(tokio::sync::Notify::new());
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("mailshift: stopping after the current pass (Ctrl-C again to abort)");
                stop.notify_waiters();
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            }
        });
    }
    let mut pass = 0u64;
    let mut last_complete;
    loop {
        pass += 1;
        let summary = migrate(
            source,
            dest,
            connector.clone(),
            store.clone(),
            Arc::new(NoProgress),
            opts.clone(),
        )
        .await;
        last_complete = summary.is_complete();
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            if !last_complete || pass == 1 {
                output::print_summary(&summary);
            }
            eprintln!("{}", output::pass_line(pass, &summary));
        }
        let waited = tokio::select! {
            _ = stop.notified() => None,
            r = wait_for_mail(&*connector, args.interval) => Some(r),
        };
        match waited {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e.message, "waiting for new mail failed; polling instead");
                tokio::select! {
                    _ = stop.notified() => break,
                    _ = tokio::time::sleep(args.interval) => {}
                }
            }
            Some(Ok(())) => {}
        }
    }
    Ok(if last_complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Returns when the source INBOX may have new mail or `interval` passed.
async fn wait_for_mail(
    connector: &dyn Connector,
    interval: Duration,
) -> mailshift_core::Result<()> {
    let mut src = connector.source().await?;
    src.examine("INBOX").await?;
    src.wait_for_change(interval).await?;
    Ok(())
}
