//! `mailshift verify`: are both servers in sync? Compares folder by folder, without any
//! stored state, and names every message that is missing, extra or different.

use crate::servers::Servers;
use clap::Args;
use mailshift_core::ports::Connector;
use mailshift_engine::verify::{FolderCheck, MessageRef, verify};
use std::process::ExitCode;

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    servers: Servers,
    /// Compare full message contents (downloads every message from both sides) instead
    /// of size + header fingerprints
    #[arg(long)]
    deep: bool,
    /// Print a machine-readable report on stdout
    #[arg(long)]
    json: bool,
}

fn name(r: &MessageRef) -> String {
    format!(
        "UID {} ({} bytes, date {}, from {}, subject {:?})",
        r.uid,
        r.size,
        r.date.as_deref().unwrap_or("?"),
        r.from.as_deref().unwrap_or("?"),
        r.subject.as_deref().unwrap_or("")
    )
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    crate::init_logging("warn");
    let (_, _, rules, connector) = args.servers.connect()?;
    let (s, d) = tokio::join!(connector.source(), connector.target_reader());
    let (mut src, mut dst) = match (s, d) {
        (Ok(s), Ok(d)) => (s, d),
        (s, d) => {
            for e in [s.err(), d.err()].into_iter().flatten() {
                eprintln!("error: {} [{}]", e.message, e.kind.as_str());
            }
            return Ok(ExitCode::from(2));
        }
    };
    let checks: Vec<FolderCheck> = verify(&mut *src, &mut *dst, &rules, args.deep).await?;
    let in_sync = checks.iter().all(FolderCheck::in_sync);
    let messages: usize = checks.iter().map(|c| c.source_messages).sum();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "in_sync": in_sync,
                "folders": checks,
            }))?
        );
    } else {
        let mut out = format!(
            "{:<50} {:>8} {:>8} {:>8} {:>6} {:>9}\n",
            "folder (source -> destination)", "source", "dest", "missing", "extra", "different"
        );
        for c in &checks {
            out.push_str(&format!(
                "{:<50} {:>8} {:>8} {:>8} {:>6} {:>9}\n",
                format!("{} -> {}", c.source, c.dest),
                c.source_messages,
                c.dest_messages,
                c.missing.len(),
                c.extra.len(),
                c.different.len()
            ));
        }
        for c in &checks {
            if c.dest_folder_missing {
                out.push_str(&format!(
                    "\nfolder '{}': missing on the destination",
                    c.dest
                ));
            }
            for m in &c.missing {
                out.push_str(&format!(
                    "\nfolder '{}': missing on the destination: {}",
                    c.source,
                    name(m)
                ));
            }
            for m in &c.extra {
                out.push_str(&format!(
                    "\nfolder '{}': only on the destination: {}",
                    c.dest,
                    name(m)
                ));
            }
            for (m, what) in &c.different {
                out.push_str(&format!("\nfolder '{}': {}: {what}", c.source, name(m)));
            }
        }
        if in_sync {
            out.push_str(&format!(
                "\n\nin sync: {} folders, {messages} messages\n",
                checks.len()
            ));
        } else {
            let (mi, ex, di): (usize, usize, usize) = checks.iter().fold((0, 0, 0), |a, c| {
                (
                    a.0 + c.missing.len(),
                    a.1 + c.extra.len(),
                    a.2 + c.different.len(),
                )
            });
            out.push_str(&format!(
                "\n\nNOT IN SYNC: {mi} missing, {ex} extra, {di} different in {} of {} folders; \
                 run `mailshift migrate` with the same servers to bring the destination up to date\n",
                checks.iter().filter(|c| !c.in_sync()).count(),
                checks.len()
            ));
        }
        print!("{out}");
    }
    Ok(if in_sync {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
