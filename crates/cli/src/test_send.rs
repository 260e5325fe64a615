//! `mailshift test-send`: the D-1 test send through the new provider, wired from the
//! command line (submission and probe mailbox credentials, nameservers) to
//! `mailshift_deliver::test_send`, and its report printed like `dns check`'s.

use crate::dns::print_findings;
use crate::servers::password;
use anyhow::Context;
use chrono::Utc;
use clap::Args;
use mailshift_core::cutover::Level;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::ports::HostPauses;
use mailshift_deliver::smtp::{SmtpAuth, SmtpEndpoint, SmtpSubmitter};
use mailshift_deliver::{Report, TestSend};
use mailshift_dns::lookup::{Role, Server, parse_server};
use mailshift_imap::{Auth, ImapConnector, ServerConfig, Side, TokenSource};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
        MAILSHIFT_SMTP_PASSWORD=... mailshift test-send example.com \\\n      \
        --smtp smtps://alice@example.com@smtp.new.example\n\n  \
        mailshift test-send example.com --smtp smtp://alice@example.com@smtp.new.example:587 \\\n      \
        --smtp-password-file alice.pw --to probe@gmail.example \\\n      \
        --imap imaps://probe@gmail.example@imap.gmail.example --imap-password-file probe.pw --json")]
pub struct TestSendArgs {
    /// The domain whose mail moves (the probe is sent From an address of it)
    domain: String,
    /// The new provider's submission service and the account to log in as:
    /// smtps://USER@HOST[:PORT] (implicit TLS, port 465) or smtp://USER@HOST[:PORT]
    /// (STARTTLS required, port 587)
    #[arg(long, value_name = "URL")]
    smtp: String,
    /// File holding the submission password (otherwise MAILSHIFT_SMTP_PASSWORD)
    #[arg(long, value_name = "FILE")]
    smtp_password_file: Option<PathBuf>,
    /// Log in with the OAuth 2.0 access token in FILE (AUTH XOAUTH2)
    #[arg(long, value_name = "FILE", conflicts_with = "smtp_password_file")]
    smtp_oauth_token_file: Option<PathBuf>,
    /// Log in with OAuth 2.0: a command printing a fresh access token
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["smtp_password_file", "smtp_oauth_token_file"])]
    smtp_oauth_token_cmd: Option<String>,
    /// The probe mailbox to fetch the probe back from: imap://USER@HOST[:PORT] or
    /// imaps://USER@HOST[:PORT] (default: the submission account at the submission
    /// host, imaps port 993)
    #[arg(long, value_name = "URL")]
    imap: Option<String>,
    /// File holding the probe mailbox's password (otherwise MAILSHIFT_IMAP_PASSWORD; when
    /// the probe mailbox is the submission account, its credentials are reused)
    #[arg(long, value_name = "FILE")]
    imap_password_file: Option<PathBuf>,
    /// The probe mailbox's OAuth 2.0 access token in FILE
    #[arg(long, value_name = "FILE", conflicts_with = "imap_password_file")]
    imap_oauth_token_file: Option<PathBuf>,
    /// A command printing the probe mailbox's OAuth 2.0 access token
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["imap_password_file", "imap_oauth_token_file"])]
    imap_oauth_token_cmd: Option<String>,
    /// The probe's From address (default: the submission user if it is an address of
    /// DOMAIN, else USER@DOMAIN)
    #[arg(long, value_name = "ADDRESS")]
    from: Option<String>,
    /// The probe address (default: the probe mailbox's user if it is an address, else --from)
    #[arg(long, value_name = "ADDRESS")]
    to: Option<String>,
    /// The folder the probe should arrive in (the Junk folder is watched as well)
    #[arg(long, value_name = "NAME", default_value = "INBOX")]
    folder: String,
    /// How long the probe may take to arrive after it was accepted, e.g. 120s, 5m
    #[arg(long, default_value = "120s", value_parser = crate::migrate::parse_duration)]
    timeout: Duration,
    /// A resolver for DKIM keys, SPF and DMARC records, IP[:PORT] (repeatable; default:
    /// /etc/resolv.conf)
    #[arg(long = "nameserver", alias = "resolver", value_name = "IP[:PORT]")]
    nameservers: Vec<String>,
    /// Seconds one DNS query may take
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    dns_timeout: u64,
    /// Trust this CA certificate (PEM) for the submission and IMAP servers, besides the system's
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Allow an IMAP login without TLS when the server offers no STARTTLS (trusted networks only)
    #[arg(long)]
    allow_plaintext: bool,
    /// Seconds a connection or a single SMTP/IMAP command may take
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    connect_timeout: u64,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

fn token_source(file: &Option<PathBuf>, cmd: &Option<String>) -> Option<TokenSource> {
    match (cmd, file) {
        (Some(c), _) => Some(TokenSource::Command(c.clone())),
        (None, Some(f)) => Some(TokenSource::File(f.clone())),
        (None, None) => None,
    }
}

/// Builds the test send from the command line (validation and secrets only; nothing
/// is contacted).
pub(crate) fn build(a: &TestSendArgs) -> anyhow::Result<TestSend> {
    let domain = mailshift_dns::lookup::host_name(&a.domain);
    let smtp: SmtpEndpoint = a.smtp.parse().context("--smtp")?;
    let smtp_auth = match token_source(&a.smtp_oauth_token_file, &a.smtp_oauth_token_cmd) {
        Some(src) => SmtpAuth::OAuth2(src),
        None => SmtpAuth::Password(password(
            &a.smtp_password_file,
            "MAILSHIFT_SMTP_PASSWORD",
            "submission",
            "--smtp-password-file",
        )?),
    };
    let timeout = Duration::from_secs(a.connect_timeout.max(1));
    let imap: Endpoint = match &a.imap {
        Some(url) => url.parse().context("--imap")?,
        None => format!("imaps://{}@{}:993", smtp.user, smtp.host)
            .parse()
            .context("the default probe mailbox (give --imap)")?,
    };
    let imap_auth = match token_source(&a.imap_oauth_token_file, &a.imap_oauth_token_cmd) {
        Some(src) => Auth::OAuth2(src),
        None if a.imap_password_file.is_some()
            || std::env::var_os("MAILSHIFT_IMAP_PASSWORD").is_some()
            || imap.user != smtp.user =>
        {
            Auth::Password(password(
                &a.imap_password_file,
                "MAILSHIFT_IMAP_PASSWORD",
                "probe mailbox",
                "--imap-password-file",
            )?)
        }
        // The same account: the same credentials.
        None => match &smtp_auth {
            SmtpAuth::Password(pw) => Auth::Password(pw.clone()),
            SmtpAuth::OAuth2(src) => Auth::OAuth2(src.clone()),
        },
    };
    let from = match &a.from {
        Some(f) => f.clone(),
        None if smtp.user.contains('@') => smtp.user.clone(),
        None => format!("{}@{domain}", smtp.user),
    };
    let to = match &a.to {
        Some(t) => t.clone(),
        None if imap.user.contains('@') => imap.user.clone(),
        None => from.clone(),
    };
    for (flag, addr) in [("--from", &from), ("--to", &to)] {
        anyhow::ensure!(
            addr.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.')),
            "{flag} `{addr}` is not a mail address (local@domain)"
        );
    }
    let nameservers: Vec<Server> = a
        .nameservers
        .iter()
        .map(|s| parse_server(s, Role::Recursive).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let reader = ServerConfig {
        endpoint: imap.clone(),
        auth: imap_auth,
        side: Side::Destination,
        allow_plaintext: a.allow_plaintext,
        ca_file: a.ca_file.clone(),
        timeout,
        pauses: Arc::new(HostPauses::default()),
        compress: true,
        max_literal: mailshift_core::plan::DEFAULT_MAX_MESSAGE_BYTES,
    };
    let submission_host = smtp.host.clone();
    Ok(TestSend {
        domain,
        from,
        to,
        submitter: Arc::new(SmtpSubmitter {
            endpoint: smtp,
            auth: smtp_auth,
            ca_file: a.ca_file.clone(),
            timeout,
        }),
        mailbox: Arc::new(ImapConnector {
            source: reader.clone(),
            target: reader,
        }),
        mailbox_label: imap.to_string(),
        folder: a.folder.clone(),
        nameservers,
        dns_timeout: Duration::from_secs(a.dns_timeout.max(1)),
        timeout: a.timeout,
        submission_host,
    })
}

fn print(r: &Report) {
    println!("Test send for {}", r.domain);
    println!("  probe       {} from {} to {}", r.probe_id, r.from, r.to);
    println!(
        "  submission  {}{}",
        r.submission,
        r.queue_id
            .as_deref()
            .map(|q| format!("  (queue id {q})"))
            .unwrap_or_default()
    );
    println!(
        "  mailbox     {}{}",
        r.mailbox,
        r.folder
            .as_deref()
            .map(|f| format!("  (arrived in {f})"))
            .unwrap_or_default()
    );
    let t = |ms: Option<u64>| ms.map_or("-".to_string(), |m| format!("{m} ms"));
    println!(
        "  timings     submission {}, delivery {}",
        t(r.timings.submit_ms),
        t(r.timings.delivery_ms)
    );
    if let (Some(ip), Some(why)) = (&r.sender_ip, &r.sender_ip_source) {
        println!("  sender      {ip}: {why}");
    }
    println!();
    print_findings(&r.findings);
}

pub async fn run(a: TestSendArgs) -> anyhow::Result<ExitCode> {
    let t = build(&a)?;
    let report = mailshift_deliver::test_send(&t, Utc::now().fixed_offset()).await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(if report.level == Level::Error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
