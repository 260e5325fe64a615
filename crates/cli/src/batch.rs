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

pub async fn batch(cmd: BatchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BatchCommand::Import(a) => import(*a).await,
        BatchCommand::Verify(a) => verify(*a).await,
    }
}

fn caps_text(c: &mailshift_core::ports::Capabilities) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (on, name) in [
        (c.uidplus, "UIDPLUS"),
        (c.condstore, "CONDSTORE"),
        (c.move_, "MOVE"),
        (c.multiappend, "MULTIAPPEND"),
    ] {
        if on {
            v.push(name);
        }
    }
    v
}

/// One mailbox's readiness, as JSON.
async fn check_mailbox(
    connectors: &dyn mailshift_core::ports::Connectors,
    m: &mailshift_core::ports::MailboxRecord,
) -> serde_json::Value {
    let connector = match connectors.connector(m.migration_id).await {
        Ok(c) => c,
        Err(e) => {
            return serde_json::json!({"source": m.source, "dest": m.dest, "ready": false, "problems": [e.message]});
        }
    };
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let (s, t) = tokio::join!(connector.source(), connector.target());
    let mut out = serde_json::json!({"source": m.source, "dest": m.dest});
    let mut source_bytes = None;
    match s {
        Err(e) => {
            out["source_login"] = "refused".into();
            problems.push(e.message);
        }
        Ok(mut src) => {
            out["source_login"] = "ok".into();
            out["source_capabilities"] = caps_text(src.capabilities()).into();
            let size = async {
                let (folders, _) = src.list_folders().await?;
                let (mut n, mut messages, mut bytes) = (0u64, 0u64, 0u64);
                for f in folders.iter().filter(|f| f.selectable) {
                    n += 1;
                    let st = src.examine(&f.raw).await?;
                    if st.exists > 0 {
                        let list = src.list_messages(1).await?;
                        messages += list.len() as u64;
                        bytes += list.iter().map(|m| u64::from(m.size)).sum::<u64>();
                    }
                }
                Ok::<_, mailshift_core::Error>((n, messages, bytes))
            }
            .await;
            match size {
                Ok((n, messages, bytes)) => {
                    out["source_folders"] = n.into();
                    out["source_messages"] = messages.into();
                    out["source_bytes"] = bytes.into();
                    source_bytes = Some(bytes);
                }
                Err(e) => problems.push(e.message),
            }
        }
    }
    match t {
        Err(e) => {
            out["dest_login"] = "refused".into();
            problems.push(e.message);
        }
        Ok(mut dst) => {
            out["dest_login"] = "ok".into();
            out["dest_capabilities"] = caps_text(dst.capabilities()).into();
            match dst.storage_quota().await {
                Ok(Some((used, limit))) => {
                    out["dest_quota_used"] = used.into();
                    out["dest_quota_limit"] = limit.into();
                    if let Some(need) = source_bytes
                        && used + need > limit
                    {
                        problems.push(format!(
                            "the destination quota ({} KiB, {} KiB used) cannot hold the source's {} KiB",
                            limit / 1024,
                            used / 1024,
                            need / 1024
                        ));
                    }
                }
                Ok(None) => warnings.push("the destination reports no quota".into()),
                Err(e) => {
                    warnings.push(format!("cannot read the destination quota: {}", e.message))
                }
            }
        }
    }
    out["ready"] = problems.is_empty().into();
    out["problems"] = problems.into();
    out["warnings"] = warnings.into();
    out
}

async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open(true).await?;
    let mailboxes = store.mailboxes(Some(&a.name)).await?;
    anyhow::ensure!(
        !mailboxes.is_empty(),
        "batch '{}' has no mailbox (see mailshift batch import)",
        a.name
    );
    let connectors = crate::fleet::connectors(&store, a.timeout);
    let mut rows = Vec::new();
    for m in &mailboxes {
        rows.push(check_mailbox(&*connectors, m).await);
    }
    let ready = rows.iter().filter(|r| r["ready"] == true).count();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"batch": a.name, "mailboxes": rows}))?
        );
    } else {
        for r in &rows {
            let mark = if r["ready"] == true { "ok  " } else { "FAIL" };
            println!(
                "{mark} {}  login {}/{}  {} folder(s), {} message(s), {} KiB",
                r["source"].as_str().unwrap_or(""),
                r["source_login"].as_str().unwrap_or("-"),
                r["dest_login"].as_str().unwrap_or("-"),
                r["source_folders"],
                r["source_messages"],
                r["source_bytes"].as_u64().unwrap_or(0) / 1024
            );
            for p in r["problems"].as_array().into_iter().flatten() {
                println!("       problem: {}", p.as_str().unwrap_or(""));
            }
            for w in r["warnings"].as_array().into_iter().flatten() {
                println!("       warning: {}", w.as_str().unwrap_or(""));
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
