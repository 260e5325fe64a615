//! `mailshift batch ...`: what account managers do with a spreadsheet of mailboxes.

use crate::fleet::FleetDb;
use anyhow::Context;
use clap::{Args, Subcommand};
use mailshift_core::endpoint::Security;
use mailshift_core::import::{Defaults, RowError, parse};
use mailshift_core::ports::{MailboxCredentials, MailboxOptions, MailboxStore};
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
        starttls), folder_map (SRC=DST|SRC=DST) and exclude (REGEX|REGEX);\n\
        - imapsync lines: host1;user1;password1;host2;user2;password2;\n\
        - Exchange lines without header: EmailAddress,UserName,Password, with \
        --source-host and --dest-host (the old server is logged into as UserName, the new \
        one as EmailAddress, both with Password).\n\n\
        Every row is checked on its own; bad rows are reported with their line number and \
        reason and nothing of them is stored; good rows are registered (or updated) with \
        their passwords sealed under MAILSHIFT_SECRET_KEY.\n\n\
        Exit status: 0 when every row was imported; 1 when some were rejected; 2 on bad \
        usage.")]
    Import(Box<ImportArgs>),
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

pub async fn batch(cmd: BatchCommand) -> anyhow::Result<ExitCode> {
    let BatchCommand::Import(a) = cmd;
    anyhow::ensure!(!a.name.trim().is_empty(), "--name must not be empty");
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let defaults = Defaults {
        source_host: a.source_host.clone(),
        dest_host: a.dest_host.clone(),
        source_port: a.source_port,
        dest_port: a.dest_port,
        security: a.starttls.then_some(Security::StartTls),
    };
    let (rows, mut rejected) = parse(&bytes, &defaults);
    let store = a.db.open(true).await?;
    let existing = store.mailboxes(None).await?;
    let mut imported = Vec::new();
    for r in rows {
        // Registered in another batch: moving it silently would surprise its owner.
        if let Some(other) = existing.iter().find(|m| {
            m.source == r.source.to_string()
                && m.dest == r.dest.to_string()
                && m.batch.as_deref() != Some(a.name.as_str())
        }) {
            rejected.push(RowError {
                line: r.line,
                reason: format!(
                    "mailbox {} is already registered in batch '{}'",
                    r.source,
                    other.batch.as_deref().unwrap_or("(none)")
                ),
            });
            continue;
        }
        let options = MailboxOptions {
            maps: r.maps.clone(),
            excludes: r.excludes.clone(),
            allow_plaintext: a.allow_plaintext,
            delete: true,
            adopt_existing: false,
            domain: a
                .domain
                .clone()
                .or_else(|| r.dest.user.rsplit_once('@').map(|(_, d)| d.to_string()))
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        };
        let creds = MailboxCredentials {
            source_password: r.source_password.clone(),
            dest_password: r.dest_password.clone(),
        };
        match store
            .add_mailbox(&r.source, &r.dest, Some(&a.name), &options, &creds)
            .await
        {
            Ok(m) => imported.push((r.line, m.source, m.dest)),
            Err(e) => rejected.push(RowError {
                line: r.line,
                reason: format!("cannot store it: {}", e.message),
            }),
        }
    }
    rejected.sort_by_key(|e| e.line);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "batch": a.name,
                "imported": imported
                    .iter()
                    .map(|(l, s, d)| serde_json::json!({"line": l, "source": s, "dest": d}))
                    .collect::<Vec<_>>(),
                "rejected": rejected,
            }))?
        );
    } else {
        println!(
            "imported {} mailbox(es) into batch '{}' from {}",
            imported.len(),
            a.name,
            a.file.display()
        );
        if !rejected.is_empty() {
            println!(
                "{} row(s) rejected (fix them and import the file again):",
                rejected.len()
            );
            for e in &rejected {
                println!("  line {}: {}", e.line, e.reason);
            }
        }
    }
    Ok(if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
