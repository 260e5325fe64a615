//! `mailshift batch ...`: what account managers do with a spreadsheet of mailboxes. The
//! work itself is in `mailshift_engine::batches`, shared with `mailshift serve`.

use crate::fleet::FleetDb;
use anyhow::Context;
use clap::{Args, Subcommand};
use mailshift_engine::batches::{self as ops, Action, ImportOptions, ScheduleChange};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BatchCommand {
    /// Register the mailboxes of a CSV file as a batch (bad rows are listed, good rows
    /// imported)
    #[command(long_about = "Register the mailboxes of a spreadsheet as a batch.\n\n\
        Three layouts are recognised:\n\
        - a CSV whose header names source_host, source_user, source_password, dest_host, \
        dest_user, dest_password, and optionally source_port, dest_port, tls (imaps or \
        starttls), folder_map (SRC=DST|SRC=DST), exclude (REGEX|REGEX) and \
        source_password_hash (the old server's {SCHEME}hash, carried to the new server by \
        `mailshift provision`);\n\
        - imapsync lines: host1;user1;password1;host2;user2;password2;\n\
        - Exchange lines without header: EmailAddress,UserName,Password, with \
        --source-host and --dest-host (the old server is logged into as UserName, the new \
        one as EmailAddress, both with Password).\n\n\
        Every row is checked on its own; bad rows are reported with their line number and \
        reason and nothing of them is stored; good rows are registered (or updated) with \
        their passwords sealed under MAILSHIFT_SECRET_KEY.\n\n\
        A new batch is a draft: nothing is copied until `mailshift batch start` (check \
        the credentials first with `mailshift batch verify`).\n\n\
        Exit status: 0 when every row was imported; 1 when some were rejected; 2 on bad \
        usage.")]
    Import(Box<ImportArgs>),
    /// Log in to both servers of every mailbox of a batch (nothing is copied) and say
    /// what stands in the way: refused logins, a destination quota too small
    #[command(long_about = "Check every mailbox of a batch before migrating it.\n\n\
        Logs in to both servers of each mailbox (read-only; nothing is copied) and \
        reports: login ok or refused (which side, the server's reason), the source's \
        folders, messages and bytes, the destination's quota against that size (a \
        warning when it will not fit), and the capabilities that matter (UIDPLUS, \
        CONDSTORE, MOVE, MULTIAPPEND).\n\n\
        Exit status: 0 when every mailbox is ready; 1 when one is not; 2 on bad usage.")]
    Verify(Box<VerifyArgs>),
    /// Set when a batch starts, how often it syncs, the switch date and when it ends
    #[command(
        long_about = "Set a batch's schedule (only the options given change).\n\n\
        The scheduler (`mailshift scheduler`) follows it: no pass before --start-at; an \
        incremental pass of each mailbox every --interval; at --complete-at each mailbox \
        gets one final pass and the batch is completed. --switch-at records the MX switch \
        agreed with the customer on the domain's cutover plan (see `mailshift plan`). \
        --concurrency caps how many of the batch's mailboxes copy at once, --per-host how \
        many of them per old server (connections per server are capped fleet-wide by \
        `mailshift host limit` besides).\n\n\
        Times are RFC 3339 with their UTC offset: 2026-12-05T06:00+01:00.\n\n\
        Example: mailshift batch schedule acme --start-at 2026-12-01T20:00+01:00 \
        --interval 4h --switch-at 2026-12-05T06:00+01:00 --complete-at \
        2026-12-08T06:00+01:00 --concurrency 20"
    )]
    Schedule(Box<ScheduleArgs>),
    /// Start a batch now (or at --at): its mailboxes get their first pass
    Start(Box<StartArgs>),
    /// Stop planning new passes for a batch (passes in flight finish)
    Pause(Box<NameArgs>),
    /// Resume a paused batch
    Resume(Box<NameArgs>),
    /// Retry the failed mailboxes of a batch at the scheduler's next round
    RetryFailed(Box<NameArgs>),
    /// Show a batch's mailboxes with their progress, or list the batches
    Status(Box<StatusArgs>),
    /// Compare both servers of every mailbox of a batch now and write a report (CSV or
    /// JSON) that proves what was copied
    #[command(long_about = "Compare both servers of every mailbox of a batch now \
        (read-only on both sides, independently of mailshift's own records) and write a \
        report per mailbox and per folder: source and destination message counts and \
        sizes, what is missing, extra or different, the verdict and the errors.\n\n\
        Exit status: 0 when every mailbox is in sync; 1 otherwise; 2 on bad usage.")]
    Report(Box<ReportArgs>),
    /// Remove a batch and its mailboxes from the fleet (nothing changes on the servers)
    #[command(long_about = "Remove a batch and its mailboxes from the fleet.\n\n\
        Nothing changes on either server: what was copied stays on the new one, and \
        what mailshift recorded of each copy stays in the database, so importing the \
        mailboxes again copies nothing twice. A running batch is refused (pause it \
        first), and so is one whose mailboxes are being copied (wait for their passes \
        to finish: mailshift batch status NAME).\n\n\
        Exit status: 0 when removed; 2 when refused or on bad usage.")]
    Delete(Box<NameArgs>),
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The batch
    name: String,
}

#[derive(Args)]
pub struct StartArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The batch
    name: String,
    /// Start at this time instead of now (RFC 3339 with offset)
    #[arg(long, value_name = "TIME", value_parser = parse_unix)]
    at: Option<i64>,
}

#[derive(Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The batch
    name: String,
    /// No pass before this time
    #[arg(long, value_name = "TIME", value_parser = parse_unix)]
    start_at: Option<i64>,
    /// Time between incremental passes of each mailbox: 90s, 15m, 4h, 1d
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    interval: Option<u64>,
    /// The MX switch agreed with the customer (recorded on the domain's cutover)
    #[arg(long, value_name = "TIME", value_parser = parse_unix)]
    switch_at: Option<i64>,
    /// Final pass of every mailbox at this time, then the batch is completed
    #[arg(long, value_name = "TIME", value_parser = parse_unix)]
    complete_at: Option<i64>,
    /// Mailboxes of this batch copying at once
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Mailboxes of this batch copying at once from one old server (host:port)
    #[arg(long, value_name = "N")]
    per_host: Option<u32>,
    /// The mail domain of the batch (for --switch-at)
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The batch (all batches when omitted)
    name: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The batch
    name: String,
    #[arg(long, value_enum, default_value = "csv")]
    format: ReportFormat,
    /// Write the report to this file instead of standard output
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Compare full-content hashes (downloads every message of both sides) instead of
    /// header fingerprints and sizes
    #[arg(long)]
    deep: bool,
    /// Seconds a connection or a single IMAP command may take
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The batch to check
    name: String,
    /// Seconds a connection or a single IMAP command may take
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The CSV file
    file: PathBuf,
    /// The batch the mailboxes join
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The mail domain whose cutover these mailboxes follow (default: each destination
    /// user's domain)
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Old server for layouts that do not name it (Exchange's)
    #[arg(long, value_name = "HOST")]
    source_host: Option<String>,
    /// New server for layouts that do not name it
    #[arg(long, value_name = "HOST")]
    dest_host: Option<String>,
    #[arg(long, value_name = "PORT")]
    source_port: Option<u16>,
    #[arg(long, value_name = "PORT")]
    dest_port: Option<u16>,
    /// Rows without a tls column use STARTTLS (port 143) instead of implicit TLS (993)
    #[arg(long)]
    starttls: bool,
    /// Allow plain-text logins where a server offers no STARTTLS (trusted networks only)
    #[arg(long)]
    allow_plaintext: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

fn parse_unix(s: &str) -> Result<i64, String> {
    crate::dns::parse_time(s).map(|t| t.timestamp())
}

fn parse_interval(s: &str) -> Result<u64, String> {
    mailshift_core::batch::parse_interval(s)
}

pub async fn batch(cmd: BatchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BatchCommand::Import(a) => import(*a).await,
        BatchCommand::Verify(a) => verify(*a).await,
        BatchCommand::Schedule(a) => schedule(*a).await,
        BatchCommand::Start(a) => act(&a.db, &a.name, Action::Start, a.at).await,
        BatchCommand::Pause(a) => act(&a.db, &a.name, Action::Pause, None).await,
        BatchCommand::Resume(a) => act(&a.db, &a.name, Action::Resume, None).await,
        BatchCommand::RetryFailed(a) => act(&a.db, &a.name, Action::RetryFailed, None).await,
        BatchCommand::Status(a) => status(*a).await,
        BatchCommand::Report(a) => report(*a).await,
        BatchCommand::Delete(a) => delete(*a).await,
    }
}

async fn delete(a: NameArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open(false).await?;
    let n = ops::delete_batch(&*store, &a.name).await?;
    eprintln!(
        "batch '{}' removed with its {n} mailbox(es); nothing changed on the servers",
        crate::output::terminal_safe(&a.name)
    );
    Ok(ExitCode::SUCCESS)
}

async fn act(
    db: &FleetDb,
    name: &str,
    action: Action,
    at: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let store = db.open(false).await?;
    let (_, said) = ops::act(&*store, name, action, at).await?;
    eprintln!("{said}");
    Ok(ExitCode::SUCCESS)
}

async fn schedule(a: ScheduleArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open(false).await?;
    let change = ScheduleChange {
        start_at: a.start_at,
        interval_secs: a.interval,
        switch_at: a.switch_at,
        complete_at: a.complete_at,
        concurrency: a.concurrency,
        host_concurrency: a.per_host,
        domain: a.domain,
    };
    let b = ops::schedule(&*store, &a.name, &change).await?;
    let opt = |t: Option<i64>| t.map(ops::stamp).unwrap_or_else(|| "-".into());
    eprintln!(
        "batch '{}' ({}): start {}, every {}, switch {}, complete {}, {} at once, {} per old server",
        b.name,
        b.display_state(ops::now()),
        opt(b.start_at),
        b.interval_secs
            .map(|s| format!("{s} s"))
            .unwrap_or_else(|| "scheduler's interval".into()),
        opt(b.switch_at),
        opt(b.complete_at),
        b.concurrency
            .map(|c| c.to_string())
            .unwrap_or_else(|| "all".into()),
        b.host_concurrency
            .map(|c| c.to_string())
            .unwrap_or_else(|| "all".into()),
    );
    if b.state == mailshift_core::batch::BatchState::Draft {
        eprintln!(
            "it is still a draft: `mailshift batch start {}` starts it",
            b.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open(false).await?;
    let names = match a.name {
        Some(n) => vec![n],
        None => ops::batch_names(&*store).await?,
    };
    let mut views = Vec::new();
    for n in &names {
        views.push(ops::batch_view(&*store, n, ops::Page::ALL).await?);
    }
    if a.json {
        crate::json::print(
            crate::json::BATCH_STATUS,
            serde_json::json!({ "batches": views }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    for v in &views {
        let t = &v.totals;
        println!(
            "batch {} ({}): {} mailbox(es), {} synced, {} syncing, {} failed, {} pending; {} message(s) copied{}",
            v.name,
            v.state,
            t.mailboxes,
            t.synced,
            t.syncing,
            t.failed,
            t.pending,
            t.messages_copied,
            t.percent.map(|p| format!(" ({p}%)")).unwrap_or_default()
        );
        for m in &v.mailboxes {
            let line = format!(
                "  {:<40} {:<8} {:>9} {:>6}  {}",
                m.source,
                m.status,
                m.progress.messages_copied,
                m.progress
                    .percent
                    .map(|p| format!("{p}%"))
                    .unwrap_or_else(|| "-".into()),
                m.last_error.as_deref().unwrap_or("")
            );
            println!("{}", crate::output::terminal_safe(&line));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open(true).await?;
    let r = ops::report(
        &*store,
        &*crate::fleet::connectors(&store, a.timeout, None),
        &a.name,
        a.deep,
    )
    .await?;
    let text = match a.format {
        ReportFormat::Csv => ops::report_csv(&r)?,
        ReportFormat::Json => {
            serde_json::to_string_pretty(&crate::json::tagged(crate::json::BATCH_REPORT, &r)?)?
                + "\n"
        }
    };
    match &a.output {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{text}"),
    }
    let synced = r
        .mailboxes
        .iter()
        .filter(|m| m.verdict == "in-sync")
        .count();
    eprintln!(
        "batch '{}': {synced} of {} mailbox(es) in sync",
        r.batch,
        r.mailboxes.len()
    );
    Ok(if r.in_sync {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open(true).await?;
    let rows = ops::verify_batch(
        &*store,
        &*crate::fleet::connectors(&store, a.timeout, None),
        &a.name,
    )
    .await?;
    let ready = rows.iter().filter(|r| r.ready).count();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"batch": a.name, "mailboxes": rows}))?
        );
    } else {
        for r in &rows {
            let mark = if r.ready { "ok  " } else { "FAIL" };
            let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            println!(
                "{mark} {}  login {}/{}  {} folder(s), {} message(s), {} KiB",
                crate::output::terminal_safe(&r.source),
                ops::Login::text(r.source_login),
                ops::Login::text(r.dest_login),
                n(r.source_folders),
                n(r.source_messages),
                n(r.source_bytes.map(|b| b / 1024))
            );
            for p in &r.problems {
                println!("       problem: {}", crate::output::terminal_safe(p));
            }
            for w in &r.warnings {
                println!("       warning: {}", crate::output::terminal_safe(w));
            }
        }
        println!("\n{ready} of {} mailbox(es) ready", rows.len());
    }
    Ok(if ready == rows.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let store = a.db.open(true).await?;
    let o = ImportOptions {
        domain: a.domain.clone(),
        source_host: a.source_host.clone(),
        dest_host: a.dest_host.clone(),
        source_port: a.source_port,
        dest_port: a.dest_port,
        starttls: a.starttls,
        allow_plaintext: a.allow_plaintext,
    };
    // A bar on a terminal (nothing in logs and pipes): 100,000 rows take a while.
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("importing {pos}/{len} rows {wide_bar} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let out = ops::import_csv(&*store, &a.name, &bytes, &o, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .await;
    bar.finish_and_clear();
    let out = out?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "imported {} mailbox(es) into batch '{}' from {}",
            out.imported.len(),
            a.name,
            a.file.display()
        );
        if !out.rejected.is_empty() {
            println!(
                "{} row(s) rejected (fix them and import the file again):",
                out.rejected.len()
            );
            for e in &out.rejected {
                println!("  line {}: {}", e.line, e.reason);
            }
        }
    }
    Ok(if out.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
