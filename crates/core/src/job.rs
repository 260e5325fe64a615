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
}
