//! Fleet mode's commands: `db`, `mailbox add`, `status`, `scheduler`, `worker`. State in
//! PostgreSQL, jobs on RabbitMQ; the same engine as `migrate`.

use crate::servers::password;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{
    Connectors, JobQueue, MailboxCredentials, MailboxOptions, MailboxStore, NoProgress, StateStore,
};
use mailshift_core::time;
use mailshift_dns::observer::DnsObserver;
use mailshift_engine::fleet::Cutovers;
use mailshift_engine::fleet::Scheduler;
use mailshift_engine::lifecycle::Shutdown;
use mailshift_engine::limits::{LimitedConnectors, Limits};
use mailshift_engine::worker::{Leases, Worker};
use mailshift_imap::FleetConnectors;
use mailshift_store::SecretKey;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The fleet's database, as the ports the engine and the front ends use.
pub(crate) type Store = Arc<dyn mailshift_core::ports::FleetStore>;

/// Where the fleet keeps its state and its key.
#[derive(Args, Clone)]
pub(crate) struct FleetDb {
    /// PostgreSQL URL of the fleet's database
    #[arg(
        long,
        env = "MAILSHIFT_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database: String,
    /// Do not apply schema migrations at start (see `mailshift db migrate`)
    #[arg(long)]
    no_migrate: bool,
    /// File holding the credentials key (otherwise MAILSHIFT_SECRET_KEY)
    #[arg(long, value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
}

impl FleetDb {
    pub(crate) async fn open(&self, need_key: bool) -> anyhow::Result<Store> {
        let key = self.key()?;
        if key.is_none() && need_key {
            return Err(mailshift_store::SecretError::Missing.into());
        }
        Ok(mailshift_store::open_fleet(&self.database, !self.no_migrate, key).await?)
    }

    /// The credentials key, from `--secret-key-file` or MAILSHIFT_SECRET_KEY, if given.
    pub(crate) fn key(&self) -> anyhow::Result<Option<SecretKey>> {
        let key = match &self.secret_key_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the key file {}", f.display()))?,
            ),
            None => std::env::var("MAILSHIFT_SECRET_KEY").ok(),
        };
        Ok(match key {
            Some(k) => Some(SecretKey::from_base64(&k)?),
            None => None,
        })
    }
}

#[derive(Subcommand)]
pub enum DbCommand {
    /// Apply the schema migrations to the fleet's database
    Migrate {
        #[arg(
            long,
            env = "MAILSHIFT_DATABASE_URL",
            hide_env_values = true,
            value_name = "URL"
        )]
        database: String,
    },
    /// Print a new random credentials key (base64) for MAILSHIFT_SECRET_KEY
    NewKey,
}

pub async fn db(cmd: DbCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DbCommand::Migrate { database } => {
            mailshift_store::open_fleet(&database, true, None).await?;
            eprintln!("database schema is up to date");
        }
        DbCommand::NewKey => println!("{}", SecretKey::generate()),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum MailboxCommand {
    /// Register a mailbox for migration (its first pass runs at the next scheduler round)
    Add(Box<MailboxAdd>),
    /// Remove a mailbox from the fleet (nothing changes on its servers)
    #[command(long_about = "Remove a mailbox from the fleet.\n\n\
        Nothing changes on either server, and what mailshift recorded of the copy stays, \
        so registering the mailbox again copies nothing twice. A mailbox whose pass is \
        being copied is refused unless --force.\n\n\
        MAILBOX is its id, its source or destination URL, or a login of either side \
        (ann@example.com), as `mailshift status` shows them.")]
    Remove(Box<MailboxRemove>),
    /// Replace the password mailshift uses for one server of a mailbox (after a refused
    /// login); a failed mailbox is retried at the next round
    #[command(
        long_about = "Replace the password mailshift uses for one server of a \
        mailbox, e.g. after `batch verify` or a pass reported a refused login.\n\n\
        The password is read from --password-file or MAILSHIFT_PASSWORD, never from the \
        command line, and sealed under MAILSHIFT_SECRET_KEY. A mailbox that failed is \
        retried at the scheduler's next round.\n\n\
        MAILBOX is its id, its source or destination URL, or a login of either side."
    )]
    SetPassword(Box<MailboxSetPassword>),
}

#[derive(Args)]
pub struct MailboxRemove {
    #[command(flatten)]
    db: FleetDb,
    /// The mailbox: id, source or destination URL, or login
    mailbox: String,
    /// Remove it even while a pass of it is being copied (the pass is dropped)
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct MailboxSetPassword {
    #[command(flatten)]
    db: FleetDb,
    /// The mailbox: id, source or destination URL, or login
    mailbox: String,
    /// Which server's password: source (the old server) or dest (the new one)
    #[arg(long, value_enum, value_name = "SIDE")]
    side: CliSide,
    /// File holding the new password (otherwise MAILSHIFT_PASSWORD)
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliSide {
    /// The old server
    Source,
    /// The new server
    Dest,
}

#[derive(Args)]
pub struct MailboxAdd {
    #[command(flatten)]
    db: FleetDb,
    /// Old server: imap://USER@HOST[:PORT] or imaps://USER@HOST[:PORT]
    #[arg(long, value_name = "URL")]
    from: String,
    /// New server, same form
    #[arg(long, value_name = "URL")]
    to: String,
    /// File holding the old server's password (otherwise MAILSHIFT_FROM_PASSWORD)
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// File holding the new server's password (otherwise MAILSHIFT_TO_PASSWORD)
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// Group mailboxes into a named batch
    #[arg(long, value_name = "NAME")]
    batch: Option<String>,
    #[arg(long = "map", value_name = "SRC=DST")]
    maps: Vec<String>,
    #[arg(long = "exclude", value_name = "REGEX")]
    excludes: Vec<String>,
    #[arg(long)]
    allow_plaintext: bool,
    /// Never remove anything from the destination
    #[arg(long)]
    no_delete: bool,
    /// The mail domain whose cutover (`mailshift plan`) this mailbox follows; default:
    /// the domain of the destination user (alice@example.com -> example.com)
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
}

pub async fn mailbox(cmd: MailboxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MailboxCommand::Add(a) => mailbox_add(*a).await,
        MailboxCommand::Remove(a) => {
            let store = a.db.open(false).await?;
            let m = mailshift_engine::batches::remove_mailbox(&*store, &a.mailbox, a.force).await?;
            eprintln!(
                "mailbox {} -> {} removed from the fleet; nothing changed on its servers",
                crate::output::terminal_safe(&m.source),
                crate::output::terminal_safe(&m.dest)
            );
            Ok(ExitCode::SUCCESS)
        }
        MailboxCommand::SetPassword(a) => {
            let (side, what) = match a.side {
                CliSide::Source => (mailshift_core::ports::Side::Source, "source"),
                CliSide::Dest => (mailshift_core::ports::Side::Dest, "destination"),
            };
            let pw = password(
                &a.password_file,
                "MAILSHIFT_PASSWORD",
                what,
                "--password-file",
            )?;
            let store = a.db.open(true).await?;
            let (_, said) =
                mailshift_engine::batches::set_password(&*store, &a.mailbox, side, &pw).await?;
            eprintln!("{}", crate::output::terminal_safe(&said));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn mailbox_add(a: MailboxAdd) -> anyhow::Result<ExitCode> {
    let source: Endpoint = a.from.parse().context("--from")?;
    let dest: Endpoint = a.to.parse().context("--to")?;
    if mailshift_core::account::same_address(&source, &dest) {
        return Err(crate::exit::Failure::usage(format!(
            "--from and --to name the same account ({source}); mailshift only reads the old \
             server and will not copy a mailbox into itself"
        ))
        .into());
    }
    // Validate the folder rules now rather than at the first pass.
    mailshift_core::folder::FolderRules::new(&a.maps, &a.excludes)?;
    let creds = MailboxCredentials {
        source_password: password(
            &a.from_password_file,
            "MAILSHIFT_FROM_PASSWORD",
            "source",
            "--from-password-file",
        )?,
        dest_password: password(
            &a.to_password_file,
            "MAILSHIFT_TO_PASSWORD",
            "destination",
            "--to-password-file",
        )?,
    };
    let store = a.db.open(true).await?;
    let options = MailboxOptions {
        maps: a.maps.clone(),
        excludes: a.excludes.clone(),
        allow_plaintext: a.allow_plaintext,
        delete: !a.no_delete,
        adopt_existing: false,
        domain: a
            .domain
            .clone()
            .or_else(|| dest.user.rsplit_once('@').map(|(_, d)| d.to_string()))
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
    };
    let m = store
        .add_mailbox(&source, &dest, a.batch.as_deref(), &options, &creds)
        .await?;
    eprintln!("registered mailbox {} -> {} ({})", m.source, m.dest, m.id);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    db: FleetDb,
    #[arg(long, value_name = "NAME")]
    batch: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open(false).await?;
    // Aggregates from SQL (counts and sums per mailbox), not the message rows: the same
    // memory for 100 messages or 100 million.
    let totals = store.copied_totals(a.batch.as_deref()).await?;
    let dead = store.dead_jobs(a.batch.as_deref()).await?;
    let mut rows = Vec::new();
    for m in store.mailboxes(a.batch.as_deref()).await? {
        let folders = store.folders(m.migration_id).await?;
        let mut refused = 0usize;
        for f in &folders {
            refused += store.failed(f.id).await?.len();
        }
        let (messages, bytes) = totals.get(&m.migration_id).copied().unwrap_or((0, 0));
        rows.push(serde_json::json!({
            "id": m.id,
            "batch": m.batch,
            "source": m.source,
            "dest": m.dest,
            "status": m.status,
            "folders": folders.len(),
            "messages_copied": messages,
            "bytes_copied": bytes,
            "messages_refused": refused,
            "dead_jobs": dead.get(&m.migration_id).copied().unwrap_or(0),
            "last_error": m.last_error,
            "warning": m.warning,
            "last_pass_at": m.last_pass_at.map(time::rfc3339),
            "next_pass_at": m.next_pass_at.map(time::rfc3339),
        }));
    }
    let mut out = String::new();
    if a.json {
        let domains: Vec<_> = store
            .domains()
            .await?
            .into_iter()
            .map(|d| {
                serde_json::json!({
                    "domain": d.config.name,
                    "phase": d.phase.as_str(),
                    "phase_since": time::rfc3339(d.phase_since),
                })
            })
            .collect();
        let doc = crate::json::tagged(
            crate::json::STATUS,
            serde_json::json!({ "domains": domains, "mailboxes": rows }),
        )?;
        out.push_str(&serde_json::to_string_pretty(&doc)?);
        out.push('\n');
    } else {
        use crate::output::{Align::*, table, thousands};
        let domains = store.domains().await?;
        if !domains.is_empty() {
            let rows: Vec<Vec<String>> = domains
                .iter()
                .map(|d| {
                    vec![
                        d.config.name.clone(),
                        d.phase.as_str().to_string(),
                        unix_text(d.phase_since),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[("domain", Left), ("phase", Left), ("since", Left)],
                &rows,
            ));
            out.push('\n');
        }
        let mut dead_total = 0;
        let n = |v: &serde_json::Value| thousands(v.as_u64().unwrap_or(0));
        let lines: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                dead_total += r["dead_jobs"].as_u64().unwrap_or(0);
                let note = r["last_error"]
                    .as_str()
                    .or_else(|| r["warning"].as_str())
                    .unwrap_or("");
                vec![
                    r["source"].as_str().unwrap_or("").to_string(),
                    r["status"].as_str().unwrap_or("").to_string(),
                    n(&r["folders"]),
                    n(&r["messages_copied"]),
                    n(&r["messages_refused"]),
                    n(&r["dead_jobs"]),
                    note.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("mailbox (source)", Left),
                ("status", Left),
                ("folders", Right),
                ("copied", Right),
                ("refused", Right),
                ("dead", Right),
                ("error", Left),
            ],
            &lines,
        ));
        if dead_total > 0 {
            out.push_str(&format!(
                "\n{dead_total} job(s) ended in the dead-letter queue: fix the cause shown \
                 above, then `mailshift jobs retry-dead` puts them back to work\n"
            ));
        }
    }
    print_quietly(&out)
}

/// Writes to stdout; a reader that went away (`status | head`) ends the command quietly.
fn print_quietly(text: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(crate::output::terminal_safe(text).as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Put the jobs of the dead-letter queue back to work
    #[command(long_about = "Put the jobs of the dead-letter queue back to work.\n\n\
        A folder job that kept failing (past its attempts, or past --retry-for for an \
        outage) ends in the queue NAME.dead and its mailbox shows it under `dead` in \
        `mailshift status`. Once the cause is fixed (a password, a quota, a server back \
        up), this moves every dead job back to the job queue with its attempts and retry \
        budget reset, and marks it unfinished again so its mailbox waits for it. \
        Nothing is copied twice: workers skip what the checkpoints say is done.")]
    RetryDead {
        #[command(flatten)]
        db: FleetDb,
        #[command(flatten)]
        queue: FleetQueue,
    },
}

pub async fn jobs(cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    let JobsCommand::RetryDead { db, queue } = cmd;
    let store = db.open(false).await?;
    let q = mailshift_queue::AmqpQueue::publisher(&queue.amqp, &queue.queue).await?;
    let moved = q
        .retry_dead(|job| {
            let store = store.clone();
            async move {
                if !store.reopen_job(job.id).await? {
                    tracing::info!(job = %job.id, "a dead job unknown to the database: published again anyway");
                }
                Ok(())
            }
        })
        .await?;
    match moved.len() {
        0 => eprintln!("the dead-letter queue {}.dead is empty", queue.queue),
        n => eprintln!(
            "{n} job(s) back in {} with their retries reset",
            queue.queue
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn unix_text(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

#[derive(Subcommand)]
pub enum DomainCommand {
    /// Where every domain's cutover stands: phase, switch, dual reception, report
    Status(Box<DomainStatusArgs>),
}

#[derive(Args)]
pub struct DomainStatusArgs {
    #[command(flatten)]
    db: FleetDb,
    #[arg(long)]
    json: bool,
}

pub async fn domain(cmd: DomainCommand) -> anyhow::Result<ExitCode> {
    let DomainCommand::Status(a) = cmd;
    let store = a.db.open(false).await?;
    let mailboxes = store.mailboxes(None).await?;
    let mut rows = Vec::new();
    for d in store.domains().await? {
        let members = mailboxes
            .iter()
            .filter(|m| m.options.domain.as_deref() == Some(d.config.name.as_str()))
            .count();
        rows.push(serde_json::json!({
            "domain": d.config.name,
            "phase": d.phase.as_str(),
            "phase_since": time::rfc3339(d.phase_since),
            "switched_at": d.switched_at.map(time::rfc3339),
            "dual_reception_until": d.dual_reception_until().map(time::rfc3339),
            "final_pass_at": d.final_pass_at.map(time::rfc3339),
            "mailboxes": members,
            "new_mx": d.config.new_mx,
            "switch_at": d.config.switch_at.as_deref().map(|t| time::parse(t).map(time::rfc3339).unwrap_or_else(|| t.to_string())),
            "report": d.report.as_deref().and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()),
        }));
    }
    if a.json {
        crate::json::print(
            crate::json::DOMAIN_STATUS,
            serde_json::json!({ "domains": rows }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "no domain cutover recorded: `mailshift plan DOMAIN --switch-at ... --database URL` records one"
        );
    }
    for r in &rows {
        println!(
            "{}  {}  since {}  ({} mailbox(es))",
            r["domain"].as_str().unwrap_or(""),
            r["phase"].as_str().unwrap_or(""),
            r["phase_since"]
                .as_str()
                .and_then(time::parse)
                .map(unix_text)
                .unwrap_or_default(),
            r["mailboxes"]
        );
        if let Some(t) = r["switched_at"].as_str().and_then(time::parse) {
            println!("  MX switch observed {}", unix_text(t));
        }
        if let Some(t) = r["dual_reception_until"].as_str().and_then(time::parse) {
            println!("  dual reception until {}", unix_text(t));
        }
        if !r["report"].is_null() {
            println!("  decommission report: {}", r["report"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where jobs go.
#[derive(Args, Clone)]
pub struct FleetQueue {
    /// RabbitMQ URL
    #[arg(
        long,
        env = "MAILSHIFT_AMQP_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    amqp: String,
    /// Queue name (several fleets can share a broker)
    #[arg(long, default_value = "mailshift.jobs", value_name = "NAME")]
    queue: String,
}

#[derive(Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    db: FleetDb,
    #[command(flatten)]
    queue: FleetQueue,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464)
    #[arg(long, env = "MAILSHIFT_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Time between incremental passes of a mailbox, in seconds
    #[arg(long, default_value_t = 4 * 3600, value_name = "SECS")]
    interval: u64,
    /// Plan one round (every mailbox, due or not, unless its batch holds it) and exit
    #[arg(long)]
    once: bool,
    /// Seconds between scheduling rounds (how soon a due pass, a started batch or a
    /// retry is picked up)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    tick: u64,
    /// Split a folder's first copy into UID-range jobs of this many messages when it is
    /// bigger, so several workers share it (0: never split)
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    split_above: usize,
    /// Seconds an IMAP command may take
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
    /// Mailboxes planned at once (each logs in to both its servers)
    #[arg(long, default_value_t = 16, value_name = "N")]
    plan_parallel: usize,
    /// Mailboxes planned at once per old server
    #[arg(long, default_value_t = 4, value_name = "N")]
    plan_per_host: usize,
    /// Publish again a job that no queue holds and no worker runs this many seconds
    /// after it was published (an outage lost it); looked for only while the queue is
    /// empty
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub requeue_lost_after: u64,
    /// Seconds a planning lease lasts without renewal (how soon another scheduler plans
    /// a killed one's mailboxes); for tests
    #[arg(long, default_value_t = 60, value_name = "SECS", hide = true)]
    pub planning_lease: u64,
}

/// The fleet's connectors: credentials from the store, every session inside a
/// fleet-wide connection slot of its server (`mailshift host limit`).
pub(crate) fn connectors(
    store: &Store,
    timeout: u64,
    stop: Option<Arc<Shutdown>>,
) -> Arc<dyn Connectors> {
    let inner = Arc::new(FleetConnectors {
        store: store.clone(),
        timeout: Duration::from_secs(timeout.max(1)),
        ca_file: std::env::var_os("MAILSHIFT_CA_FILE").map(PathBuf::from),
        pauses: Arc::new(mailshift_core::ports::HostPauses::default()),
        max_literal: mailshift_core::plan::DEFAULT_MAX_MESSAGE_BYTES,
    });
    Arc::new(LimitedConnectors {
        inner,
        limits: Arc::new(Limits {
            slots: store.clone(),
            owner: process_name(),
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(600),
            stop,
        }),
    })
}

fn process_name() -> String {
    format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "mailshift".into()),
        std::process::id()
    )
}

#[derive(Subcommand)]
pub enum HostCommand {
    /// Cap the connections all workers together open to one server
    Limit {
        #[command(flatten)]
        db: FleetDb,
        /// The server as HOST:PORT (as in the mailbox URLs, e.g. old.example:993)
        host: String,
        /// Maximum simultaneous connections
        #[arg(required_unless_present = "remove")]
        max: Option<u32>,
        /// Also cap the messages per second all workers together move to or from it
        /// (shared evenly by its connections)
        #[arg(long, value_name = "N")]
        messages_per_sec: Option<u32>,
        /// Remove the limit
        #[arg(long)]
        remove: bool,
    },
}

pub async fn host(cmd: HostCommand) -> anyhow::Result<ExitCode> {
    let HostCommand::Limit {
        db,
        host,
        max,
        messages_per_sec,
        remove,
    } = cmd;
    if !host.contains(':') {
        bail!("write the server as HOST:PORT, e.g. {host}:993");
    }
    let store = db.open(false).await?;
    let max = if remove { None } else { max };
    if max == Some(0) {
        bail!("a limit of 0 connections would stop every migration from {host}; use at least 1");
    }
    store.set_host_limit(&host, max, messages_per_sec).await?;
    match max {
        Some(n) => eprintln!(
            "at most {n} connection(s) to {host}, fleet-wide{}",
            messages_per_sec
                .map(|r| format!(", {r} messages/s"))
                .unwrap_or_default()
        ),
        None => eprintln!("no connection limit for {host}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The stop request of a long-running process (scheduler, worker, serve), set by SIGTERM
/// (a service manager, `docker stop`) or Ctrl-C alike. The handlers are installed here,
/// before the process opens anything, so a stop during start-up is a clean stop too.
pub fn lifecycle() -> Arc<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = Arc::new(Shutdown::default());
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let s = shutdown.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            tracing::warn!("cannot watch for SIGTERM/SIGINT: stop this process with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested: finishing the work in flight");
        s.request();
    });
    shutdown
}

pub async fn scheduler(a: SchedulerArgs, shutdown: Arc<Shutdown>) -> anyhow::Result<ExitCode> {
    if let Some(addr) = a.metrics_listen {
        crate::telemetry::serve_metrics(addr)?;
    }
    let opened = shutdown
        .unless_stopped(async {
            let store = a.db.open(true).await?;
            let queue = crate::queue::publisher(&a.queue.amqp, &a.queue.queue).await?;
            anyhow::Ok((store, queue))
        })
        .await;
    let Some(opened) = opened else {
        return Ok(ExitCode::SUCCESS);
    };
    let (store, queue) = opened?;
    let s = Scheduler {
        state: store.clone(),
        mailboxes: store.clone(),
        connectors: connectors(&store, a.timeout, Some(shutdown.clone())),
        queue,
        interval: Duration::from_secs(a.interval.max(1)),
        split_above: (a.split_above > 0).then_some(a.split_above),
        cutovers: Some(Cutovers {
            store: store.clone(),
            observer: Arc::new(DnsObserver::new(Duration::from_secs(3))),
        }),
        batches: Some(store.clone()),
        owner: format!("{}/{}", process_name(), uuid::Uuid::new_v4()),
        parallel: a.plan_parallel.max(1),
        per_host: a.plan_per_host.max(1),
        outage_retry: Duration::from_secs(15),
        lost_after: Duration::from_secs(a.requeue_lost_after),
        stopping: Arc::new(AtomicBool::new(false)),
        planning_lease: Duration::from_secs(a.planning_lease.max(3)),
    };
    if a.once {
        let r = s.round(true).await?;
        eprintln!(
            "scheduled {} job(s) for {} mailbox(es); {} could not be planned",
            r.jobs, r.mailboxes, r.failed
        );
        return Ok(if r.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    // Even a scheduler killed in the middle of a round leaves nothing half done: a pass's
    // jobs are written with it in one transaction and published by the relay of whichever
    // scheduler runs next, and a planning lease left behind expires within a minute. Asked
    // to stop, it finishes the mailboxes it is planning and publishes their jobs first.
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let round = s.round(false);
        tokio::pin!(round);
        tokio::select! {
            r = &mut round => {
                if let Err(e) = r {
                    tracing::warn!(error = %e.message, "scheduling round failed");
                }
            }
            _ = &mut stop => {
                s.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("stopping: finishing the mailboxes being planned");
                let grace = Duration::from_secs(60);
                if tokio::time::timeout(grace, round).await.is_err() {
                    tracing::warn!("planning did not end within {}s; stopped anyway (its leases expire)", grace.as_secs());
                }
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(a.tick.max(1))) => {}
            _ = &mut stop => break,
        }
    }
    tracing::info!("scheduler stopped");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    db: FleetDb,
    #[command(flatten)]
    queue: FleetQueue,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464)
    #[arg(long, env = "MAILSHIFT_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Folder jobs run at once (each holds one connection to each server)
    #[arg(long, default_value_t = 8, value_name = "N")]
    concurrency: usize,
    /// Seconds an IMAP command may take
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
    /// Attempts of a job that fails for a reason of its own (not an outage) before it
    /// goes to the dead-letter queue
    #[arg(long, default_value_t = 4, value_name = "N")]
    max_attempts: u32,
    /// How long a job waits out an outage (a server refusing connections, the database
    /// or broker away) before it goes to the dead-letter queue, e.g. 30m, 2h
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = crate::migrate::parse_duration)]
    retry_for: Duration,
    /// Exit once the queue stays empty this many seconds (for batch runs and tests)
    #[arg(long, value_name = "SECS")]
    exit_when_idle: Option<u64>,
    /// Seconds a folder lease lasts without renewal: after a crash, how long until
    /// another worker may take the folder over
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    lease_secs: u64,
    /// Messages per batch (one fetch and one MULTIAPPEND each)
    #[arg(long, value_name = "N", default_value_t = BatchLimits::default().max_messages, hide_short_help = true)]
    batch_messages: usize,
}

pub async fn worker(a: WorkerArgs, shutdown: Arc<Shutdown>) -> anyhow::Result<ExitCode> {
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if let Some(addr) = a.metrics_listen {
        crate::telemetry::serve_metrics(addr)?;
    }
    let opened = shutdown
        .unless_stopped(async {
            let store = a.db.open(true).await?;
            let queue = crate::queue::open(
                &a.queue.amqp,
                &a.queue.queue,
                a.concurrency.clamp(1, u16::MAX as usize) as u16,
            )
            .await?;
            anyhow::Ok((store, queue))
        })
        .await;
    let Some(opened) = opened else {
        return Ok(ExitCode::SUCCESS);
    };
    let (store, queue) = opened?;
    let queue: Arc<dyn JobQueue> = match a.exit_when_idle {
        Some(secs) => Arc::new(crate::queue::IdleExit::new(
            queue,
            Duration::from_secs(secs),
        )),
        None => queue,
    };
    let owner = process_name();
    let mut w = Worker::new(
        connectors(&store, a.timeout, Some(shutdown.clone())),
        store.clone() as Arc<dyn StateStore>,
        Arc::new(NoProgress),
        BatchLimits {
            max_messages: a.batch_messages.max(1),
            ..BatchLimits::default()
        },
    );
    w.retry.max_attempts = a.max_attempts;
    w.retry.outage_budget = a.retry_for;
    w.leases = Some(Leases {
        store: store.clone() as Arc<dyn MailboxStore>,
        owner,
        ttl: Duration::from_secs(a.lease_secs.max(3)),
    });
    // SIGTERM or Ctrl-C: finish the batches in flight, checkpoint, hand the rest back to
    // the queue, release the leases, exit. A rolling restart loses nothing.
    w.stop = shutdown;
    let w = Arc::new(w);
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (w, q) = (w.clone(), queue.clone());
        tasks.push(tokio::spawn(async move { w.run(&*q, None).await }));
    }
    let mut ok = true;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                ok = false;
                tracing::error!(error = %e.message, "worker stopped");
            }
            Err(e) => {
                ok = false;
                tracing::error!(error = %e, "worker task ended abnormally");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
