//! What a person reads: the summary printed at the end of a run, aligned tables, numbers
//! with thousands separators, and text made safe for a terminal.

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

/// `3025` as `3,025`: every count a person reads, in every command.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How a column lines up: text to the left, numbers to the right.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table whose columns line up whatever their contents: each column as wide as its
/// widest cell (counted in characters, after control characters are escaped), two
/// spaces between columns, the last column never padded.
pub fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(
        columns
            .iter()
            .map(|(h, _)| (*h).to_string())
            .collect::<Vec<_>>(),
    )
    .chain(
        rows.iter()
            .map(|r| r.iter().map(|c| terminal_safe(c).into_owned()).collect()),
    )
    .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, (_, align)) in columns.iter().enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            let last = i + 1 == columns.len();
            match align {
                Align::Right => {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
                Align::Left if last => line.push_str(cell),
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn print_summary(s: &MigrationSummary) {
    let mut out = String::new();
    if !s.folders.is_empty() {
        use Align::{Left, Right};
        let rows: Vec<Vec<String>> = s
            .folders
            .iter()
            .map(|f| {
                let status = match f.status {
                    FolderStatus::Complete => "ok",
                    FolderStatus::Partial => "PARTIAL",
                    FolderStatus::Failed => "FAILED",
                    FolderStatus::Interrupted => "interrupted",
                };
                vec![
                    format!("{} -> {}", f.source, f.dest),
                    thousands(f.source_messages),
                    thousands(f.copied),
                    thousands(f.already_done),
                    thousands(f.moved_in),
                    thousands(f.flags_updated),
                    thousands(f.deleted),
                    thousands(f.failures.len() as u64),
                    status.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("folder (source -> destination)", Left),
                ("messages", Right),
                ("copied", Right),
                ("before", Right),
                ("moved", Right),
                ("flags", Right),
                ("deleted", Right),
                ("failed", Right),
                ("status", Left),
            ],
            &rows,
        ));
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
    // What stopped the run is a diagnostic (stderr), like verify's; the table and the
    // verdict are the result (stdout).
    let mut diagnostics = String::new();
    for e in &s.errors {
        diagnostics.push_str(&format!("error: {} [{}]\n", e.message, e.kind));
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
            thousands(s.dest_messages()),
            thousands(s.copied()),
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
    // The result is the command's output (stdout, like `verify`'s); progress and
    // diagnostics go to stderr.
    eprint!("{}", terminal_safe(&diagnostics));
    print!("{}", terminal_safe(out.trim_start_matches('\n')));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_names() {
        let t = table(
            &[
                ("mailbox", Align::Left),
                ("copied", Align::Right),
                ("error", Align::Left),
            ],
            &[
                vec![
                    "imap://ann@old.example:143".into(),
                    thousands(3025),
                    "".into(),
                ],
                vec![
                    "imap://x@h:1".into(),
                    "7".into(),
                    "login \u{1b}[31mrefused".into(),
                ],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "mailbox                     copied  error");
        assert_eq!(lines[1], "imap://ann@old.example:143   3,025");
        assert_eq!(
            lines[2],
            "imap://x@h:1                     7  login \\u{1b}[31mrefused"
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

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
