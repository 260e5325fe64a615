//! Folder jobs: the unit of work that goes through the job queue. A job names a folder
//! pass of one migration; it carries no credentials (workers look those up).

use uuid::Uuid;

/// Copy (or bring up to date) one source folder into its destination folder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderJob {
    pub id: Uuid,
    pub migration_id: Uuid,
    /// Source folder name as the source server spells it (modified UTF-7).
    pub source_folder: String,
    /// Destination folder name as the destination server spells it.
    pub dest_folder: String,
    /// Human-readable names, for logs and reports.
    pub source_display: String,
    pub dest_display: String,
    /// 1 for the first delivery; incremented on each retry.
    pub attempt: u32,
    /// Mirror expunges of the source on the destination (before the switch). Off during
    /// dual reception and with `--no-delete`: then nothing is ever removed there.
    #[serde(default)]
    pub delete: bool,
    /// On a folder's first pass, recognise messages already on the destination (another
    /// tool's earlier copy) by full content and record them instead of appending again.
    #[serde(default)]
    pub adopt_existing: bool,
    /// A slice of a huge folder's first copy: only source UIDs in `lo..=hi`, with its own
    /// checkpoint row (see [`range_key`]), so several workers share one big folder.
    #[serde(default)]
    pub uid_range: Option<(u32, u32)>,
    /// Dual reception (after the MX switch): copy new arrivals only. Users now work on
    /// the destination, so nothing there is deleted, moved or re-flagged from the source,
    /// and what they delete is not copied again.
    #[serde(default)]
    pub dual_reception: bool,
    /// When this job first failed (unix seconds), for retry budgets counted in time:
    /// a server that refuses connections for twenty minutes is waited for, not given up.
    #[serde(default)]
    pub first_failed_at: Option<i64>,
    /// A Gmail-style All Mail: the label folders (source names) whose messages it must
    /// not copy again. Empty for every other folder.
    #[serde(default)]
    pub label_folders: Vec<String>,
}

/// Separates a folder name from a UID range in a range checkpoint's key. A control
/// character: no IMAP mailbox name can contain it.
pub const RANGE_SEPARATOR: char = '\u{1}';

/// The checkpoint key of a UID-range slice of `folder`.
pub fn range_key(folder: &str, lo: u32, hi: u32) -> String {
    format!("{folder}{RANGE_SEPARATOR}{lo}-{hi}")
}

/// `(folder, lo, hi)` of a range checkpoint key; `None` for a plain folder.
pub fn parse_range_key(key: &str) -> Option<(&str, u32, u32)> {
    let (folder, range) = key.split_once(RANGE_SEPARATOR)?;
    let (lo, hi) = range.split_once('-')?;
    Some((folder, lo.parse().ok()?, hi.parse().ok()?))
}

impl FolderJob {
    /// Where this job's checkpoint lives: the folder's own, or its range's.
    pub fn state_key(&self) -> String {
        match self.uid_range {
            Some((lo, hi)) => range_key(&self.source_folder, lo, hi),
            None => self.source_folder.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_keys_round_trip() {
        let k = range_key("INBOX", 1, 20_000);
        assert_eq!(parse_range_key(&k), Some(("INBOX", 1, 20_000)));
        assert_eq!(parse_range_key("INBOX"), None);
        assert_eq!(parse_range_key("Archive.2023"), None);
    }
}
