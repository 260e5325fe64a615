//! What a migration did, per folder and in total: the source of the human summary, the
//! `--json` output and the exit code.

use crate::ErrorKind;

/// One message that could not be copied, described so a person can find it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageFailure {
    pub uid: u32,
    pub size: u32,
    /// Stable error kind (`too-large`, `quota`, `refused`).
    pub kind: String,
    /// The server's own words.
    pub reason: String,
    #[serde(serialize_with = "crate::time::imap_date_opt")]
    pub date: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
}

/// How one folder ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FolderStatus {
    /// Every message is on the destination.
    Complete,
    /// Some messages could not be copied (listed in `failures`).
    Partial,
    /// The folder could not be processed at all (see `error`).
    Failed,
    /// Stopped on request (Ctrl-C, SIGTERM) after a checkpoint; the next run continues
    /// from it.
    Interrupted,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderReport {
    pub source: String,
    pub dest: String,
    pub status: FolderStatus,
    /// Messages in the source folder when it was listed.
    pub source_messages: u64,
    /// Copied in this run.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Already on the destination from an earlier run.
    pub already_done: u64,
    /// Messages whose flags were brought in line with the source.
    #[serde(default)]
    pub flags_updated: u64,
    /// Messages removed from the destination because they were expunged on the source.
    #[serde(default)]
    pub deleted: u64,
    /// Messages moved here on the destination from another folder (no re-upload).
    #[serde(default)]
    pub moved_in: u64,
    pub failures: Vec<MessageFailure>,
    pub error: Option<FolderError>,
    pub notes: Vec<String>,
    /// Messages the destination folder holds after the pass (its own STATUS count, not
    /// what mailshift believes it copied); None when it could not be asked.
    #[serde(default)]
    pub dest_messages: Option<u64>,
    /// Messages recognised on the destination by content (another run's or another
    /// tool's copy) and recorded instead of appended again.
    #[serde(default)]
    pub adopted: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderError {
    pub kind: String,
    pub message: String,
}

impl FolderError {
    pub fn new(kind: &ErrorKind, message: impl Into<String>) -> Self {
        FolderError {
            kind: kind.as_str().to_string(),
            message: message.into(),
        }
    }
}

impl FolderReport {
    pub fn new(source: &str, dest: &str) -> Self {
        FolderReport {
            source: source.to_string(),
            dest: dest.to_string(),
            status: FolderStatus::Complete,
            source_messages: 0,
            copied: 0,
            copied_bytes: 0,
            already_done: 0,
            flags_updated: 0,
            deleted: 0,
            moved_in: 0,
            failures: Vec::new(),
            error: None,
            notes: Vec::new(),
            dest_messages: None,
            adopted: 0,
        }
    }

    pub fn failed(source: &str, dest: &str, kind: &ErrorKind, message: impl Into<String>) -> Self {
        let mut r = FolderReport::new(source, dest);
        r.status = FolderStatus::Failed;
        r.error = Some(FolderError::new(kind, message));
        r
    }
}

/// The result of one `migrate` run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MigrationSummary {
    pub source: String,
    pub dest: String,
    pub folders: Vec<FolderReport>,
    pub excluded: Vec<String>,
    pub notes: Vec<String>,
    /// Errors that stopped the run before folders were processed (login, listing).
    pub errors: Vec<FolderError>,
    #[serde(serialize_with = "crate::time::thousandths")]
    pub elapsed_secs: f64,
}

impl MigrationSummary {
    /// True only when every message of every (non-excluded) folder is on the destination.
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty()
            && self
                .folders
                .iter()
                .all(|f| f.status == FolderStatus::Complete)
    }

    pub fn copied(&self) -> u64 {
        self.folders.iter().map(|f| f.copied).sum()
    }

    pub fn copied_bytes(&self) -> u64 {
        self.folders.iter().map(|f| f.copied_bytes).sum()
    }

    pub fn source_messages(&self) -> u64 {
        self.folders.iter().map(|f| f.source_messages).sum()
    }

    pub fn failed_messages(&self) -> usize {
        self.folders.iter().map(|f| f.failures.len()).sum()
    }

    /// Messages recognised on the destination by content instead of appended again.
    pub fn adopted(&self) -> u64 {
        self.folders.iter().map(|f| f.adopted).sum()
    }

    /// What the destination folders hold by their own count (STATUS after the pass);
    /// a folder that could not be asked counts what its source holds.
    pub fn dest_messages(&self) -> u64 {
        self.folders
            .iter()
            .map(|f| f.dest_messages.unwrap_or(f.source_messages))
            .sum()
    }

    /// Folders whose destination count differs from what a complete copy would hold
    /// (the source's messages less those refused), as `(source folder, expected, held)`.
    /// Several source folders mapped onto one destination folder are compared together.
    pub fn count_mismatches(&self) -> Vec<(String, u64, u64)> {
        let mut by_dest: std::collections::BTreeMap<&str, (Vec<&str>, u64, Option<u64>)> =
            std::collections::BTreeMap::new();
        for f in &self.folders {
            if f.status != FolderStatus::Complete {
                continue;
            }
            let Some(held) = f.dest_messages else {
                continue;
            };
            let e = by_dest
                .entry(f.dest.as_str())
                .or_insert((Vec::new(), 0, None));
            e.0.push(f.source.as_str());
            e.1 += f.source_messages.saturating_sub(f.failures.len() as u64);
            e.2 = Some(e.2.map_or(held, |h: u64| h.max(held)));
        }
        by_dest
            .into_values()
            .filter_map(|(sources, expected, held)| {
                let held = held?;
                (held != expected).then(|| (sources.join(" + "), expected, held))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(source: &str, dest: &str, messages: u64, held: Option<u64>) -> FolderReport {
        let mut f = FolderReport::new(source, dest);
        f.source_messages = messages;
        f.dest_messages = held;
        f
    }

    #[test]
    fn the_destination_count_is_what_the_summary_reports() {
        let s = MigrationSummary {
            folders: vec![
                folder("INBOX", "INBOX", 10, Some(10)),
                folder("Old", "Old", 5, None),
            ],
            ..Default::default()
        };
        assert_eq!(s.dest_messages(), 15);
        assert!(s.count_mismatches().is_empty());
    }

    #[test]
    fn a_folder_holding_more_or_fewer_is_named() {
        let mut refused = folder("Big", "Big", 4, Some(3));
        refused.failures.push(MessageFailure {
            uid: 4,
            size: 1,
            kind: "too_large".into(),
            reason: "too large".into(),
            date: None,
            from: None,
            subject: None,
        });
        let s = MigrationSummary {
            folders: vec![
                folder("INBOX", "INBOX", 10, Some(20)),
                folder("Sent", "Sent", 5, Some(4)),
                refused,
                // Two sources mapped onto one folder are compared together.
                folder("Sent Items", "Sent Mail", 2, Some(5)),
                folder("Sent Mail", "Sent Mail", 3, Some(5)),
            ],
            ..Default::default()
        };
        assert_eq!(
            s.count_mismatches(),
            vec![("INBOX".to_string(), 10, 20), ("Sent".to_string(), 5, 4),]
        );
    }
}
