//! The `mailshift` binary: parses the command line, wires adapters to the engine, and
//! prints what happened. The only crate that uses anyhow and touches the terminal.

mod batch;
mod clients;
mod dns;
mod exit;
mod fleet;
mod json;
mod lock;
mod migrate;
mod output;
mod progress;
mod provision;
mod queue;
mod serve;
mod servers;
mod sieve;
mod telemetry;
mod test_send;
mod token;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mailshift",
    version,
    about = "Move email between IMAP servers with zero lost messages and zero downtime",
    long_about = "Move email between IMAP servers with zero lost messages and zero downtime.\n\n\
        mailshift reads the old server without ever changing it (EXAMINE, BODY.PEEK), copies \
        every message byte for byte with its flags and internal date into the new server, \
        and remembers what it copied so that every later run is a cheap incremental pass.",
    after_help = "Start with:  mailshift migrate --help"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or JSON (default: text on a terminal, JSON lines otherwise)
    #[arg(long, global = true, value_enum, default_value_t = telemetry::LogFormat::Auto, env = "MAILSHIFT_LOG_FORMAT")]
    log_format: telemetry::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Copy one mailbox from an old IMAP server to a new one (re-run to bring it up to date)
    #[command(
        long_about = "Copy one mailbox from an old IMAP server to a new one.\n\n\
        The old server is only read: folders are opened with EXAMINE and bodies fetched with \
        BODY.PEEK, so no flag ever changes there. Every message arrives byte-identical, with \
        its flags and internal date, in the same folder tree (delimiters translated, \
        special-use folders such as Sent mapped to the new server's own).\n\n\
        Progress is checkpointed in a state file: a run that is interrupted, or run again \
        later, copies only what is not on the new server yet.\n\n\
        Mail already on the new server (an earlier run with a lost state file, another \
        spelling of the server, another tool) is recognised by content and kept, never \
        appended twice. The same account on both sides is refused.\n\n\
        Exit status: 0 when every message is on the new server; 1 when some folder or message \
        could not be copied (listed at the end; a re-run retries them); 2 on bad usage or \
        the same account on both sides; 3 when a server cannot be reached; 4 when a login \
        is refused; 5 when TLS fails (or a login would go out in plain text); 6 when \
        another run holds this state file or these mailboxes; 130 when interrupted \
        (everything copied so far is kept)."
    )]
    Migrate(Box<migrate::MigrateArgs>),
    /// Compare both servers folder by folder (independently of any state) and say what
    /// is missing, extra or different; exit 0 only when in sync
    #[command(
        long_about = "Compare both servers folder by folder, independently of any state file.\n\n\
        Folders are paired as `migrate` pairs them (same --map and --exclude). In each pair \
        the messages are matched by size and a SHA-256 of their header section (--deep: of \
        their full content), then their flags and internal dates are compared. Both servers \
        are only read (EXAMINE, BODY.PEEK). Every message that is missing, extra or \
        different is named by folder, UID, date, sender and subject.\n\n\
        Exit status: 0 when in sync; 1 when something differs; 2 on bad usage or when a \
        folder could not be compared; 3 when a server cannot be reached; 4 when a login is \
        refused; 5 when TLS fails (or a login would go out in plain text): the same as \
        `migrate`. With --json a JSON document is printed in every case, errors included."
    )]
    Verify(Box<verify::VerifyArgs>),
    /// Fleet database: apply schema migrations, create a credentials key
    #[command(subcommand)]
    Db(fleet::DbCommand),
    /// Fleet: register mailboxes to migrate
    #[command(subcommand)]
    Mailbox(fleet::MailboxCommand),
    /// Fleet: per-server connection limits
    #[command(subcommand)]
    Host(fleet::HostCommand),
    /// Fleet: where every registered mailbox stands
    Status(Box<fleet::StatusArgs>),
    /// Fleet: plan passes of due mailboxes and publish their folder jobs to RabbitMQ
    Scheduler(Box<fleet::SchedulerArgs>),
    /// Fleet: folder jobs that kept failing (the dead-letter queue)
    #[command(subcommand)]
    Jobs(fleet::JobsCommand),
    /// Fleet: take folder jobs from RabbitMQ and copy mail (run as many as you like)
    Worker(Box<fleet::WorkerArgs>),
    /// Cutover: check a domain's DNS readiness, watch the MX switch propagate
    #[command(subcommand)]
    Dns(dns::DnsCommand),
    /// Batches: import a spreadsheet, check credentials, schedule, start, report
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Cutover: where every domain stands (prepare .. done)
    #[command(subcommand)]
    Domain(fleet::DomainCommand),
    /// Cutover: the dated timeline D-7 .. D+3 of a domain's MX switch
    #[command(
        long_about = "Print the cutover timeline of a domain around its MX switch.\n\n\
        From the switch time: the audit (D-7), the TTL reduction and its deadline (48 h \
        before the switch), the initial sync (D-3), incremental passes, verification (D-1), \
        the switch window, dual reception (72 h by default) and the decommission with the \
        TTL restored. Warns when the switch falls in a busy period (month-end by default) \
        or in working hours, and suggests a quieter slot."
    )]
    Plan(Box<dns::PlanArgs>),
    /// Batches: the HTTP API and web dashboard for account managers
    #[command(
        long_about = "Serve the HTTP JSON API (/api/v1, see docs/openapi.yaml) and the web \
        dashboard on the fleet's database.\n\n\
        Every page and endpoint except /health needs an API token: create one with \
        `mailshift token create --name NAME [--read-only]`, then log in to the dashboard \
        with it, or send it as `Authorization: Bearer TOKEN`. Read-only tokens can look \
        but not change anything. /metrics serves Prometheus metrics (token required).\n\n\
        The scheduler and workers do the copying: run them beside it (`mailshift \
        scheduler`, `mailshift worker`)."
    )]
    Serve(Box<serve::ServeArgs>),
    /// Batches: API tokens for `mailshift serve`
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Cutover: the new server's settings for mail clients (autoconfig, autodiscover,
    /// Apple profiles, printable sheets) of a batch
    #[command(subcommand)]
    Clients(clients::ClientsCommand),
    // Help text: on `provision::ProvisionArgs`.
    Provision(Box<provision::ProvisionArgs>),
    /// Cutover (D-1): send a probe through the new provider's submission service, fetch
    /// it back over IMAP and check DKIM, SPF and DMARC as a receiver would
    #[command(
        long_about = "Send a test message through the new provider and judge it.\n\n\
        Logs in to the new provider's submission service (--smtp: implicit TLS on 465 or \
        STARTTLS on 587) as a migrated mailbox, sends a probe with a unique id to the probe \
        address, and fetches it back over IMAP from the probe mailbox (default: the same \
        mailbox; --imap names another, e.g. at a big webmail provider). The folder's UIDNEXT \
        is noted before sending; the Junk folder is watched too.\n\n\
        The probe is judged as a receiver would judge it: each DKIM signature against the \
        key in DNS and its alignment with the From domain, SPF for the address that handed \
        the probe over (read from its trace headers), the DMARC result, and the \
        Authentication-Results the receiving server added. DNS is asked through \
        --nameserver (or this machine's resolvers).\n\n\
        Every finding is ok, warn or error with a one-line fix; the report carries the \
        timings (accepted -> delivered). Passwords and tokens are never printed.\n\n\
        Exit status: 0 when nothing is an error; 1 otherwise; 2 on bad usage."
    )]
    TestSend(Box<test_send::TestSendArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A script that asked for JSON gets a document for a usage error too.
            if e.use_stderr() && json::wanted() {
                // The error's paragraph, without the usage and help lines after it.
                let text = e.render().to_string();
                let message = text
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_start_matches("error: ")
                    .to_string();
                println!("{:#}", json::error_doc(&message, exit::USAGE));
            }
            e.exit()
        }
    };
    // One TLS crypto provider for every client in the process (IMAP, ManageSieve, HTTPS
    // for MTA-STS and OTLP): ring, already in the tree through rustls.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let (service, level) = match &cli.command {
        Command::Scheduler(_) => ("mailshift-scheduler", "info"),
        Command::Worker(_) => ("mailshift-worker", "info"),
        Command::Serve(_) => ("mailshift-serve", "info"),
        Command::Migrate(_) => ("mailshift-migrate", "warn"),
        _ => ("mailshift", "warn"),
    };
    let format = cli.log_format;
    let result = runtime.block_on(async {
        // Dropped (traces flushed) when the command is done.
        let _telemetry = telemetry::init(service, level, format)?;
        match cli.command {
            Command::Migrate(args) => migrate::run(*args).await,
            Command::Verify(args) => verify::run(*args).await,
            Command::Db(cmd) => fleet::db(cmd).await,
            Command::Mailbox(cmd) => fleet::mailbox(cmd).await,
            Command::Host(cmd) => fleet::host(cmd).await,
            Command::Status(args) => fleet::status(*args).await,
            Command::Scheduler(args) => fleet::scheduler(*args, fleet::lifecycle()).await,
            Command::Worker(args) => fleet::worker(*args, fleet::lifecycle()).await,
            Command::Dns(cmd) => dns::dns(cmd).await,
            Command::Plan(args) => dns::plan(*args).await,
            Command::Domain(cmd) => fleet::domain(cmd).await,
            Command::Batch(cmd) => batch::batch(cmd).await,
            Command::Jobs(cmd) => fleet::jobs(cmd).await,
            Command::Serve(args) => serve::serve(*args, fleet::lifecycle()).await,
            Command::Token(cmd) => token::token(cmd).await,
            Command::Clients(cmd) => clients::clients(cmd).await,
            Command::Provision(args) => provision::run(*args).await,
            Command::TestSend(args) => test_send::run(*args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = exit::for_error(&e);
            eprintln!("error: {e:#}");
            // A script that asked for JSON gets a document, whatever went wrong.
            if json::wanted() {
                println!("{:#}", json::error_doc(&format!("{e:#}"), code));
            }
            ExitCode::from(code)
        }
    }
}
