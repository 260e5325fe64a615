//! The human summary printed at the end of a run.

use mailshift_core::report::{FolderStatus, MigrationSummary};

/// One line per pass in `--follow` mode.
pub fn pass_line(n: u64, s: &MigrationSummary) -> String {
    let sum = |f: fn(&mailshift_core::report::FolderReport) -> u64| -> u64 {
        s.folders.iter().map(f).sum()
    };
    format!(
        "pass {n}: {} copied, {} moved, {} flag change(s), {} deleted, {} refused{} ({:.1}s)",
        s.copied(),
        sum(|f| f.moved_in),
        sum(|f| f.flags_updated),
        sum(|f| f.deleted),
        s.failed_messages(),
        if s.errors.is_empty() && s.is_complete() {
            ""
        } else {
            "; INCOMPLETE, see above"
        },
        s.elapsed_secs
    )
}

/// `text` as it may reach a terminal: control characters other than line ends and tabs
/// (an escape sequence in a folder name or a server's error text) written as `\u{..}`,
/// so what a server or a user named cannot move the cursor, recolour or retitle the
/// operator's terminal.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn unsafe_char(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

pub fn print_summary(s: &MigrationSummary) {
    let mut out = String::new();
    if !s.folders.is_empty() {
        let w = s
            .folders
            .iter()
            .map(|f| f.source.chars().count() + f.dest.chars().count() + 4)
            .max()
            .unwrap_or(10)
            .clamp(10, 60);
        out.push_str(&format!(
            "{:<w$}  {:>8}  {:>8}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  status\n",
            "folder (source -> destination)",
            "messages",
            "copied",
            "before",
            "moved",
            "flags",
            "deleted",
            "failed"
        ));
        for f in &s.folders {
            let name = format!("{} -> {}", f.source, f.dest);
            let status = match f.status {
                FolderStatus::Complete => "ok",
                FolderStatus::Partial => "PARTIAL",
                FolderStatus::Failed => "FAILED",
                FolderStatus::Interrupted => "interrupted",
            };
            out.push_str(&format!(
                "{:<w$}  {:>8}  {:>8}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  {status}\n",
                name,
                f.source_messages,
                f.copied,
                f.already_done,
                f.moved_in,
                f.flags_updated,
                f.deleted,
                f.failures.len()
            ));
        }
    }
    for f in &s.folders {
        if let Some(e) = &f.error {
            out.push_str(&format!(
                "\nfolder '{}': {} [{}]\n",
                f.source, e.message, e.kind
            ));
        }
        for m in &f.failures {
            out.push_str(&format!(
                "\nfolder '{}', message UID {} ({} bytes, date {}, from {}, subject {:?}) was not copied: {} [{}]",
                f.source,
                m.uid,
                m.size,
                m.date.as_deref().unwrap_or("?"),
                m.from.as_deref().unwrap_or("?"),
                m.subject.as_deref().unwrap_or(""),
                m.reason,
                m.kind
            ));
        }
        for n in &f.notes {
            out.push_str(&format!("\nfolder '{}': {n}", f.source));
        }
    }
    for n in &s.notes {
        out.push_str(&format!("\nnote: {n}"));
    }
    if !s.excluded.is_empty() {
        out.push_str(&format!("\nexcluded folders: {}", s.excluded.join(", ")));
    }
    for e in &s.errors {
        out.push_str(&format!("\nerror: {} [{}]", e.message, e.kind));
    }
    for (folder, expected, held) in s.count_mismatches() {
        let why = if held > expected {
            "more than the source: mail delivered there directly, or copied before by \
             something else; check the folder for duplicates"
        } else {
            "fewer than the source: run the same command again, then `mailshift verify`"
        };
        out.push_str(&format!(
            "\nwarning: folder '{folder}': the destination holds {held} message(s), the \
             source {expected}; {why}"
        ));
    }
    let mb = s.copied_bytes() as f64 / (1024.0 * 1024.0);
    let adopted = match s.adopted() {
        0 => String::new(),
        n => format!(", {n} found already there and kept"),
    };
    let verdict = if s.is_complete() {
        format!(
            "\n\ncomplete: {} folders, {} messages on the destination ({} copied now, {:.1} MiB{adopted}) in {:.1}s\n",
            s.folders.len(),
            s.dest_messages(),
            s.copied(),
            mb,
            s.elapsed_secs
        )
    } else if s
        .folders
        .iter()
        .any(|f| f.status == FolderStatus::Interrupted)
    {
        let n = s
            .folders
            .iter()
            .filter(|f| f.status == FolderStatus::Interrupted)
            .count();
        format!(
            "\n\nINTERRUPTED: stopped on request; {n} of {} folders interrupted at their \
             checkpoint (everything copied so far is kept); run the same command again to \
             continue\n",
            s.folders.len()
        )
    } else if s.folders.is_empty() && !s.errors.is_empty() {
        // Nothing was planned (a refused login, an unreachable server): no folder counts.
        "\n\nNOTHING COPIED: the migration could not start (see the error above); fix the \
         cause and run the same command again\n"
            .to_string()
    } else {
        let bad_folders = s
            .folders
            .iter()
            .filter(|f| f.status != FolderStatus::Complete)
            .count();
        format!(
            "\n\nINCOMPLETE: {} of {} folders not fully copied, {} message(s) refused{}; \
             fix the cause and run the same command again: it retries only what is missing\n",
            bad_folders,
            s.folders.len(),
            s.failed_messages(),
            if s.errors.is_empty() {
                ""
            } else {
                ", see errors above"
            }
        )
    };
    out.push_str(&verdict);
    eprint!("{}", terminal_safe(&out));
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn escape_sequences_are_shown_not_run() {
        assert_eq!(terminal_safe("INBOX\n\tok"), "INBOX\n\tok");
        assert_eq!(
            terminal_safe("evil\u{1b}]0;pwned\u{7}\u{1b}[2J"),
            "evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"
        );
        assert_eq!(terminal_safe("a\rb\u{9b}c"), "a\\u{d}b\\u{9b}c");
    }
}
