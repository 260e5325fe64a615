//! `mailshift verify`: are both servers in sync? Compares folder by folder, without any
//! stored state, and names every message that is missing, extra or different.

use crate::servers::Servers;
use clap::Args;
use mailshift_core::ports::Connector;
use mailshift_engine::verify::{FolderCheck, MessageRef, VerifyReport, verify};
use std::process::ExitCode;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
        MAILSHIFT_FROM_PASSWORD=... MAILSHIFT_TO_PASSWORD=... \\\n  \
        mailshift verify --from imap://alice@old.example --to imaps://alice@new.example\n\n  \
        mailshift verify --from imaps://bob@old.example --from-password-file bob.old \\\n      \
        --to imaps://bob@new.example --to-password-file bob.new \\\n      \
        --map 'Sent Items=Sent' --exclude '^Trash$' --deep --json")]
pub struct VerifyArgs {
    #[command(flatten)]
    servers: Servers,
    /// Compare full message contents (downloads every message from both sides) instead
    /// of sizes and header sections
    #[arg(long)]
    deep: bool,
    /// Print a machine-readable report on stdout instead of the table
    #[arg(long)]
    json: bool,
}

/// Problem lines printed per folder and kind; `--json` has them all.
const SHOWN: usize = 50;

/// `3000` -> `3,000`.
fn thousands(n: usize) -> String {
    crate::output::thousands(n as u64)
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

fn status(c: &FolderCheck) -> &'static str {
    if c.error.is_some() {
        "ERROR"
    } else if c.dest_folder_missing {
        "NO FOLDER"
    } else if c.in_sync() {
        "ok"
    } else {
        "DIFFERS"
    }
}

/// Pushes at most [`SHOWN`] lines, then how many more there are.
fn capped(out: &mut String, folder: &str, lines: impl ExactSizeIterator<Item = String>) {
    let n = lines.len();
    for l in lines.take(SHOWN) {
        out.push_str(&format!("\n{l}"));
    }
    if n > SHOWN {
        out.push_str(&format!(
            "\nfolder '{folder}': ... and {} more (see --json)",
            n - SHOWN
        ));
    }
}

fn render(r: &VerifyReport) -> String {
    let mut out = String::new();
    let label = |c: &FolderCheck| format!("{} -> {}", c.source_label(), c.dest);
    let w = r
        .folders
        .iter()
        .map(|c| label(c).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(30, 60);
    out.push_str(&format!(
        "{:<w$}  {:>8}  {:>8}  {:>8}  {:>6}  {:>9}  status\n",
        "folder (source -> destination)", "source", "dest", "missing", "extra", "different"
    ));
    for c in &r.folders {
        out.push_str(&format!(
            "{:<w$}  {:>8}  {:>8}  {:>8}  {:>6}  {:>9}  {}\n",
            label(c),
            c.source_messages,
            c.dest_messages,
            c.missing_count(),
            c.extra.len(),
            c.different.len(),
            status(c)
        ));
    }
    for c in &r.folders {
        if let Some(e) = &c.error {
            out.push_str(&format!(
                "\nfolder '{}': not compared: {} [{}]",
                c.source_label(),
                e.message,
                e.kind
            ));
        }
        if c.dest_folder_missing {
            out.push_str(&format!(
                "\nfolder '{}': destination folder '{}' does not exist ({} message(s) on the source)",
                c.source_label(),
                c.dest,
                c.source_messages
            ));
        }
        capped(
            &mut out,
            &c.source_label(),
            c.missing.iter().map(|m| {
                format!(
                    "folder '{}': missing on the destination: {}",
                    m.folder,
                    name(m)
                )
            }),
        );
        capped(
            &mut out,
            &c.dest,
            c.extra.iter().map(|m| {
                format!(
                    "folder '{}': only on the destination: {}",
                    m.folder,
                    name(m)
                )
            }),
        );
        capped(
            &mut out,
            &c.source_label(),
            c.different.iter().map(|d| {
                format!(
                    "folder '{}': {}: {} (destination '{}' UID {})",
                    d.source.folder,
                    name(&d.source),
                    d.what(),
                    d.dest.folder,
                    d.dest.uid
                )
            }),
        );
    }
    for n in &r.notes {
        out.push_str(&format!("\nnote: {n}"));
    }
    for f in &r.dest_only {
        out.push_str(&format!(
            "\nnote: destination folder '{}' holds {} message(s) and no source folder maps to it",
            f.folder,
            thousands(f.messages as usize)
        ));
    }
    if !r.excluded.is_empty() {
        out.push_str(&format!("\nexcluded folders: {}", r.excluded.join(", ")));
    }
    for e in &r.errors {
        out.push_str(&format!("\nerror: {} [{}]", e.message, e.kind));
    }
    out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
    out.push_str(&verdict(r));
    out.push('\n');
    out
}

/// The one-line verdict.
fn verdict(r: &VerifyReport) -> String {
    let folders = r.folders.len();
    if r.in_sync() {
        return format!(
            "in sync: {} folders, {} messages{}",
            thousands(folders),
            thousands(r.source_messages()),
            if r.deep {
                " (full contents compared)"
            } else {
                ""
            }
        );
    }
    let mut parts = Vec::new();
    let no_folder = r.folders.iter().filter(|c| c.dest_folder_missing).count();
    if no_folder > 0 {
        parts.push(format!("{no_folder} destination folder(s) missing"));
    }
    for (n, what) in [
        (r.missing(), "missing"),
        (r.extra(), "extra"),
        (r.different(), "with different flags or date"),
    ] {
        if n > 0 {
            parts.push(format!("{} message(s) {what}", thousands(n)));
        }
    }
    let differing = r
        .folders
        .iter()
        .filter(|c| c.error.is_none() && !c.in_sync())
        .count();
    let mut line = if parts.is_empty() {
        String::new()
    } else {
        format!(
            "NOT IN SYNC: {} in {differing} of {folders} folders{}",
            parts.join(", "),
            if r.missing() + r.different() > 0 {
                "; a `mailshift migrate` pass (same servers and state file) copies what is \
                 missing and brings flags in line"
            } else {
                ""
            }
        )
    };
    if !r.complete() {
        let failed = r.folders.iter().filter(|c| c.error.is_some()).count();
        if !line.is_empty() {
            line.push('\n');
        }
        line.push_str(&format!(
            "INCOMPLETE: {failed} folder(s) could not be compared{}",
            if r.errors.is_empty() {
                ""
            } else {
                " and the comparison stopped early"
            }
        ));
    }
    line
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (source, dest, rules, connector) = args.servers.connect()?;
    let (s, d) = tokio::join!(connector.source(), connector.target_reader());
    let (mut src, mut dst) = match (s, d) {
        (Ok(s), Ok(d)) => (s, d),
        (s, d) => {
            // Say everything that is wrong at once: both sides may need fixing.
            let errors: Vec<mailshift_core::Error> =
                [s.err(), d.err()].into_iter().flatten().collect();
            not_compared(&args, &source, &dest, &errors);
            // The same statuses as `migrate`: unreachable 3, login refused 4, TLS 5.
            return Ok(ExitCode::from(crate::exit::for_start_errors(
                errors.iter().map(|e| e.kind.as_str()),
            )));
        }
    };
    let report = match verify(&mut *src, &mut *dst, &rules, args.deep).await {
        Ok(r) => r,
        Err(e) => {
            not_compared(&args, &source, &dest, std::slice::from_ref(&e));
            return Ok(ExitCode::from(2));
        }
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("source".into(), source.to_string().into());
            o.insert("dest".into(), dest.to_string().into());
            o.insert("in_sync".into(), report.in_sync().into());
            o.insert("complete".into(), report.complete().into());
            o.insert(
                "totals".into(),
                serde_json::json!({
                    "folders": report.folders.len(),
                    "source_messages": report.source_messages(),
                    "missing": report.missing(),
                    "extra": report.extra(),
                    "different": report.different(),
                }),
            );
        }
        crate::json::print(crate::json::VERIFY, &v)?;
    } else {
        print!("{}", render(&report));
    }
    Ok(if !report.complete() {
        ExitCode::from(2)
    } else if report.in_sync() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Says why the servers could not be compared: on stderr, and with `--json` as a JSON
/// document on stdout too (a script always gets one).
fn not_compared(
    args: &VerifyArgs,
    source: &mailshift_core::endpoint::Endpoint,
    dest: &mailshift_core::endpoint::Endpoint,
    errors: &[mailshift_core::Error],
) {
    for e in errors {
        eprintln!("error: {} [{}]", e.message, e.kind.as_str());
    }
    if args.json {
        let doc = serde_json::json!({
            "schema": crate::json::VERIFY,
            "source": source.to_string(),
            "dest": dest.to_string(),
            "in_sync": false,
            "complete": false,
            "errors": errors
                .iter()
                .map(|e| serde_json::json!({"kind": e.kind.as_str(), "message": e.message}))
                .collect::<Vec<_>>(),
        });
        println!("{doc:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(3000), "3,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn verdicts() {
        let mut r = VerifyReport {
            folders: vec![FolderCheck {
                sources: vec!["INBOX".into()],
                dest: "INBOX".into(),
                source_messages: 3000,
                dest_messages: 3000,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(verdict(&r), "in sync: 1 folders, 3,000 messages");
        r.folders[0].extra.push(MessageRef::default());
        assert!(
            verdict(&r).starts_with("NOT IN SYNC: 1 message(s) extra in 1 of 1 folders"),
            "{}",
            verdict(&r)
        );
        r.folders[0].dest_folder_missing = true;
        assert!(verdict(&r).contains("1 destination folder(s) missing, 3,000 message(s) missing"));
    }
}
