//! The seams of mailshift: traits the adapters implement (IMAP endpoints, the state store,
//! the job queue) and the engine consumes. Embedded mode and fleet mode are two wirings of
//! these traits around the same engine code.

use crate::Result;
use crate::endpoint::Endpoint;
use crate::fingerprint::Fingerprint;
use crate::flags::{FlagSet, PermanentFlags};
use crate::folder::ListedFolder;
use crate::job::FolderJob;
use crate::plan::MessageMeta;
use crate::report::FolderReport;
use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Mail endpoints

/// What a server can do, reduced to what changes mailshift's behaviour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub uidplus: bool,
    pub multiappend: bool,
    /// LITERAL+ (or LITERAL- for literals up to 4096 bytes).
    pub literal_plus: bool,
    pub literal_minus: bool,
    pub condstore: bool,
    pub qresync: bool,
    pub move_: bool,
    pub special_use: bool,
    pub idle: bool,
    /// APPENDLIMIT=N advertised globally.
    pub append_limit: Option<u64>,
}

/// A folder as EXAMINE/SELECT reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderStatus {
    pub uidvalidity: u32,
    pub uidnext: Option<u32>,
    pub exists: u32,
    pub highest_modseq: Option<u64>,
    pub permanent_flags: PermanentFlags,
}

/// A message body fetched from the source, with what APPEND needs to recreate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedMessage {
    pub uid: u32,
    pub flags: FlagSet,
    pub internal_date: String,
    pub raw: Vec<u8>,
}

/// One message to append.
#[derive(Clone, Copy, Debug)]
pub struct AppendItem<'a> {
    pub raw: &'a [u8],
    pub flags: &'a FlagSet,
    pub internal_date: &'a str,
}

/// What the destination said about an accepted APPEND.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// UIDPLUS: the new UIDs, in the order of the appended messages.
    Uids { uidvalidity: u32, uids: Vec<u32> },
    /// The server did not say; the caller must locate the messages itself.
    Unknown,
}

/// A message found on the destination, identified by content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedMessage {
    pub uid: u32,
    pub size: u32,
    pub fingerprint: Fingerprint,
}

/// The read-only side of a migration. Implementations must never change the source:
/// EXAMINE, never SELECT; BODY.PEEK, never BODY.
#[async_trait]
pub trait MailSource: Send {
    fn capabilities(&self) -> &Capabilities;
    /// All folders with the server's hierarchy delimiter.
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)>;
    async fn examine(&mut self, folder: &str) -> Result<FolderStatus>;
    /// UID, size, flags and internal date of messages with UID >= `from_uid` in the
    /// examined folder, ascending by UID.
    async fn list_messages(&mut self, from_uid: u32) -> Result<Vec<MessageMeta>>;
    /// Full raw bodies of the given UIDs in the examined folder. Messages expunged in the
    /// meantime are simply absent from the result.
    async fn fetch_messages(&mut self, uids: &[u32]) -> Result<Vec<FetchedMessage>>;
}

/// The written side of a migration.
#[async_trait]
pub trait MailTarget: Send {
    fn capabilities(&self) -> &Capabilities;
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)>;
    /// Creates a folder; succeeds if it already exists.
    async fn create_folder(&mut self, folder: &str) -> Result<()>;
    async fn select(&mut self, folder: &str) -> Result<FolderStatus>;
    /// Appends all items in one command (MULTIAPPEND when available), atomically where the
    /// server supports it: on error, assume none of them was stored unless the server
    /// appends one at a time (then the caller reconciles by fingerprint).
    async fn append(&mut self, folder: &str, items: &[AppendItem<'_>]) -> Result<Appended>;
    /// Messages of the selected folder with UID >= `from_uid`, with content fingerprints
    /// (downloads them: use for small ranges only).
    async fn locate_since(&mut self, from_uid: u32) -> Result<Vec<LocatedMessage>>;
}

/// Opens sessions to one mailbox's servers (a worker asks for them per job, so sessions
/// can be pooled and reconnected).
#[async_trait]
pub trait Connector: Send + Sync {
    async fn source(&self) -> Result<Box<dyn MailSource>>;
    async fn target(&self) -> Result<Box<dyn MailTarget>>;
}

// ---------------------------------------------------------------------------------------
// State store

/// Per-folder checkpoint. Invariant: every source UID <= `highest_uid` of the current
/// `source_uidvalidity` is either in the message map or in the failure list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderState {
    pub id: Uuid,
    pub migration_id: Uuid,
    pub source_folder: String,
    pub dest_folder: String,
    pub source_uidvalidity: Option<u32>,
    pub dest_uidvalidity: Option<u32>,
    pub highest_uid: u32,
    pub highest_modseq: Option<u64>,
    /// A batch sent to the destination whose outcome is not yet recorded.
    pub pending: Option<PendingBatch>,
}

/// Written before an APPEND, cleared by the commit after it: if the process dies in
/// between, the next run looks at destination UIDs >= `dest_uidnext` and matches them by
/// fingerprint instead of appending again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingBatch {
    pub dest_uidvalidity: u32,
    pub dest_uidnext: u32,
    pub items: Vec<PendingItem>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingItem {
    pub source_uid: u32,
    pub size: u32,
    pub fingerprint: String,
    pub flags: String,
}

/// A source message known to be on the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopiedMessage {
    pub source_uid: u32,
    /// Known through UIDPLUS or by locating it; None when the server would not say.
    pub dest_uid: Option<u32>,
    pub flags: FlagSet,
    pub size: u32,
    pub fingerprint: Fingerprint,
}

/// A source message the destination refused, kept so a re-run retries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedMessage {
    pub source_uid: u32,
    pub size: u32,
    pub kind: String,
    pub reason: String,
}

#[async_trait]
pub trait StateStore: Send + Sync {
    /// Finds or creates the migration from `source` to `dest` (identified by both
    /// endpoints, never by credentials).
    async fn migration(&self, source: &Endpoint, dest: &Endpoint) -> Result<Uuid>;
    /// Finds or creates the checkpoint of one source folder.
    async fn folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        dest_folder: &str,
    ) -> Result<FolderState>;
    async fn folders(&self, migration: Uuid) -> Result<Vec<FolderState>>;
    /// Records (or clears) the batch about to be appended.
    async fn set_pending(&self, folder: Uuid, pending: Option<&PendingBatch>) -> Result<()>;
    /// In one transaction: adds `copied` to the message map, records `failed`, forgets
    /// earlier failures of copied messages, saves `state`'s checkpoint fields and clears
    /// the pending batch.
    async fn commit_batch(
        &self,
        state: &FolderState,
        copied: &[CopiedMessage],
        failed: &[FailedMessage],
    ) -> Result<()>;
    async fn copied(&self, folder: Uuid) -> Result<Vec<CopiedMessage>>;
    async fn failed(&self, folder: Uuid) -> Result<Vec<FailedMessage>>;
}

// ---------------------------------------------------------------------------------------
// Job queue

/// A job handed to a worker; acknowledge it once its effects are checkpointed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub job: FolderJob,
    /// Queue-specific handle.
    pub tag: u64,
    pub redelivered: bool,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Durably enqueues a job (returns once the queue has accepted it).
    async fn publish(&self, job: &FolderJob) -> Result<()>;
    /// The next job; `None` once the queue is closed and holds nothing more.
    async fn receive(&self) -> Result<Option<Delivery>>;
    /// The job's effects are checkpointed: forget it.
    async fn ack(&self, delivery: &Delivery) -> Result<()>;
    /// Try the job again after `delay` (with `attempt` incremented).
    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<()>;
}

// ---------------------------------------------------------------------------------------
// Progress

/// Receives progress as it happens (terminal bars, log lines, metrics). Must not block.
pub trait Progress: Send + Sync {
    fn folder_started(&self, folder: &str, messages: u64, bytes: u64);
    fn copied(&self, folder: &str, messages: u64, bytes: u64);
    fn folder_finished(&self, report: &FolderReport);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn folder_started(&self, _: &str, _: u64, _: u64) {}
    fn copied(&self, _: &str, _: u64, _: u64) {}
    fn folder_finished(&self, _: &FolderReport) {}
}
