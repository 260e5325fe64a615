//! `mailshift migrate`: arguments, secrets, and the embedded wiring (SQLite state file,
//! in-process queue) around the engine.

use crate::output;
use crate::progress::TerminalProgress;
use anyhow::Context;
use clap::Args;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{Connector, NoProgress, StateStore};
use mailshift_engine::worker::Shutdown;
use mailshift_engine::{MigrateOptions, migrate};
use mailshift_queue::MemoryQueue;
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
    #[command(flatten)]
    pub(crate) servers: crate::servers::Servers,
    /// State file (SQLite) with checkpoints; keep it to make the next run incremental
    #[arg(long, value_name = "FILE", default_value = "mailshift.db")]
    state: PathBuf,
    /// Folders copied in parallel; each uses one connection per server
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: u16,
    /// Messages per batch (one fetch and one MULTIAPPEND each)
    #[arg(long, value_name = "N", default_value_t = BatchLimits::default().max_messages, hide_short_help = true)]
    batch_messages: usize,
    /// UIDs listed at a time when looking for new messages
    #[arg(long, value_name = "N", default_value_t = BatchLimits::default().list_window, hide = true)]
    list_window: usize,
    /// Print a machine-readable summary on stdout instead of the table
    #[arg(long)]
    json: bool,
    /// When stderr is not a terminal (a log file, a pipe): print one progress line this
    /// often, e.g. 10s, 1m (on a terminal, bars move instead)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_progress_every)]
    progress_every: Duration,
    /// Never remove anything from the destination: messages expunged and folders deleted
    /// on the source stay; moves become copies
    #[arg(long)]
    no_delete: bool,
    /// Kept for compatibility: messages already on the destination (an earlier run with
    /// another state file, another tool's copy) are always recognised by content and
    /// never copied twice
    #[arg(long, hide = true)]
    adopt_existing: bool,
    /// After the MX switch (dual reception): copy only new arrivals from the old server;
    /// never delete, move or re-flag anything on the destination, where users now work,
    /// and never copy again what they deleted there. Use with --follow for the 48-72 h
    /// the old server still receives mail
    #[arg(long)]
    dual_reception: bool,
    /// Keep every message the new server refuses (too large, over quota) as
    /// DIR/FOLDER/UID.eml, byte for byte, so nothing is lost even when it cannot be copied
    #[arg(long, value_name = "DIR")]
    quarantine: Option<std::path::PathBuf>,
    /// Keep running incremental passes (new mail within seconds via IDLE on the source
    /// INBOX) until Ctrl-C
    #[arg(long)]
    follow: bool,
    /// With --follow: the longest wait between passes, e.g. 60s, 5m
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    interval: Duration,
    /// Also copy the mailbox's Sieve filters and vacation replies over ManageSieve (same
    /// users and passwords, port 4190 beside each IMAP server unless --from-sieve /
    /// --to-sieve say otherwise), and make the same script active
    #[arg(long)]
    sieve: bool,
    /// The old server's ManageSieve, e.g. sieve://alice@old.example:4190 (STARTTLS) or
    /// sieves://... (TLS)
    #[arg(long, value_name = "URL", requires = "sieve")]
    from_sieve: Option<String>,
    /// The new server's ManageSieve
    #[arg(long, value_name = "URL", requires = "sieve")]
    to_sieve: Option<String>,
}

/// `10s`, `1m`, or a fraction of a second (`0.5`, `500ms`).
fn parse_progress_every(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("`{s}` is not a duration: give e.g. 500ms, 10s or 1m"));
    }
    if let Ok(secs) = t.parse::<f64>()
        && secs.is_finite()
        && secs > 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    parse_duration(t).map_err(|_| format!("`{s}` is not a duration: give e.g. 500ms, 10s or 1m"))
}

/// `90`, `90s`, `5m`, `2h`, `3d` (see `core::batch::parse_interval`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    mailshift_core::batch::parse_interval(s).map(Duration::from_secs)
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let (source, dest, rules, connector) = args.servers.connect()?;
    if mailshift_core::account::same_address(&source, &dest) {
        return Err(crate::exit::Failure::usage(format!(
            "--from and --to name the same account ({source}); mailshift only reads the old \
             server and will not copy a mailbox into itself"
        ))
        .into());
    }
    crate::lock::prepare_state_file(&args.state)?;
    let _lock = crate::lock::RunLock::acquire(&args.state, &source, &dest)?;
    let store = mailshift_store::open_state_file(&args.state)
        .await
        .with_context(|| format!("cannot open the state file {}", args.state.display()))?;
    let progress = Arc::new(
        TerminalProgress::new(!args.json)
            .with_quarantine(args.quarantine.clone())
            .with_lines_every(args.progress_every),
    );
    let mut opts = MigrateOptions {
        rules,
        connections: usize::from(args.connections),
        limits: BatchLimits {
            max_messages: args.batch_messages.max(1),
            list_window: args.list_window.max(1),
            max_message_bytes: args.servers.max_message_size,
            ..BatchLimits::default()
        },
        ..MigrateOptions::default()
    };
    let sieve_connector = args.sieve.then(|| connector.clone());
    let connector: Arc<dyn Connector> = Arc::new(connector);
    let store: Arc<dyn StateStore> = store;
    opts.delete = !args.no_delete;
    opts.dual_reception = args.dual_reception;
    // First Ctrl-C: finish the batches in flight, checkpoint, stop. Second: abort.
    let stop = Arc::new(Shutdown::default());
    opts.stop = Some(stop.clone());
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nmailshift: stopping after the batches in flight (Ctrl-C again to abort)");
            stop.request();
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        }
    });
    if args.follow {
        return follow(&args, &source, &dest, connector, store, opts).await;
    }
    let summary = migrate(
        &source,
        &dest,
        connector,
        store,
        progress.clone(),
        Arc::new(MemoryQueue::new()),
        opts,
    )
    .await;
    progress.finish();
    // The filters once the mail is there: a filter that files into a folder finds it.
    let sieve = match &sieve_connector {
        Some(c) if !summary.folders.is_empty() => Some(
            crate::sieve::copy(
                c,
                args.from_sieve.as_deref(),
                args.to_sieve.as_deref(),
                &args.state,
            )
            .await,
        ),
        _ => None,
    };
    let mut status = summary_status(&summary);
    if args.json {
        let mut v = serde_json::to_value(&summary)?;
        match &sieve {
            Some(Ok(r)) => v["sieve"] = serde_json::to_value(r)?,
            Some(Err(e)) => v["sieve"] = serde_json::json!({ "error": format!("{e:#}") }),
            None => {}
        }
        crate::json::print(crate::json::MIGRATE, &v)?;
    } else {
        output::print_summary(&summary);
        match &sieve {
            Some(Ok(r)) => print!("{}", crate::sieve::render(r)),
            Some(Err(e)) => eprintln!("\nSieve filters NOT COPIED: {e:#}"),
            None => {}
        }
    }
    let sieve_complete = match &sieve {
        Some(Ok(r)) => r.is_complete(),
        Some(Err(_)) => false,
        None => true,
    };
    if status == crate::exit::OK && !sieve_complete {
        status = crate::exit::INCOMPLETE;
    }
    Ok(ExitCode::from(status))
}

/// The exit status of a run (see `crate::exit`).
pub(crate) fn summary_status(s: &mailshift_core::report::MigrationSummary) -> u8 {
    use mailshift_core::report::FolderStatus;
    if s.is_complete() {
        crate::exit::OK
    } else if s
        .folders
        .iter()
        .any(|f| f.status == FolderStatus::Interrupted)
        || s.errors.iter().any(|e| e.kind == "interrupted")
    {
        crate::exit::INTERRUPTED
    } else if s.folders.is_empty() && !s.errors.is_empty() {
        crate::exit::for_start_errors(s.errors.iter().map(|e| e.kind.as_str()))
    } else {
        crate::exit::INCOMPLETE
    }
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
    let stop = opts.stop.clone().unwrap_or_default();
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
            Arc::new(MemoryQueue::new()),
            opts.clone(),
        )
        .await;
        last_complete = summary.is_complete();
        if stop.requested() {
            if args.json {
                crate::json::print_line(crate::json::MIGRATE, &summary)?;
            } else {
                output::print_summary(&summary);
            }
            break;
        }
        if args.json {
            crate::json::print_line(crate::json::MIGRATE, &summary)?;
        } else {
            if !last_complete || pass == 1 {
                output::print_summary(&summary);
            }
            eprintln!("{}", output::pass_line(pass, &summary));
        }
        let waited = tokio::select! {
            _ = stop.wait() => None,
            r = wait_for_mail(&*connector, args.interval) => Some(r),
        };
        match waited {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e.message, "waiting for new mail failed; polling instead");
                tokio::select! {
                    _ = stop.wait() => break,
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
