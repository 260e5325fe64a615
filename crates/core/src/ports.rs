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
use std::collections::HashMap;
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
    /// QUOTA (RFC 9208): usage and limits can be asked.
    pub quota: bool,
}

/// Who answered on a session: what tells two sessions apart when they may reach the
/// same account by different spellings (host name or IP, port, TLS or STARTTLS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The address the connection reached (`IP:port`, resolved).
    pub peer: Option<std::net::SocketAddr>,
    /// The server's ID response (RFC 2971), field by field, when it answered ID.
    pub id: Vec<(String, String)>,
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

/// A message's header section with what a listing gives: enough to recognise it again
/// (moves, UIDVALIDITY changes, verification) without downloading its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedHeader {
    pub uid: u32,
    pub size: u32,
    pub flags: FlagSet,
    pub internal_date: String,
    pub header: Vec<u8>,
}

/// How a message disappears from a destination folder when it moves to another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// UID MOVE (or COPY, then expunge of just those UIDs).
    Move,
    /// UID COPY only: the original stays (no deletions allowed).
    Copy,
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
    /// Who answered (for recognising one account reached by two spellings).
    fn identity(&self) -> ServerIdentity {
        ServerIdentity::default()
    }
    /// All folders with the server's hierarchy delimiter.
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)>;
    async fn examine(&mut self, folder: &str) -> Result<FolderStatus>;
    /// A folder's counters without opening it (STATUS): UIDVALIDITY, UIDNEXT, MESSAGES
    /// and HIGHESTMODSEQ where the server has CONDSTORE. `permanent_flags` is unknown
    /// (reported unrestricted).
    async fn status(&mut self, folder: &str) -> Result<FolderStatus>;
    /// UID, size, flags and internal date of messages with UID >= `from_uid` in the
    /// examined folder, ascending by UID.
    async fn list_messages(&mut self, from_uid: u32) -> Result<Vec<MessageMeta>>;
    /// The same for exactly these UIDs (absent ones skipped), ascending.
    async fn list_messages_of(&mut self, uids: &[u32]) -> Result<Vec<MessageMeta>>;
    /// Full raw bodies of the given UIDs in the examined folder, the largest of which the
    /// listing said is `largest` bytes (a server sending far more is cut off, not
    /// believed). Messages expunged in the meantime are simply absent from the result.
    async fn fetch_messages(&mut self, uids: &[u32], largest: u64) -> Result<Vec<FetchedMessage>>;
    /// Header sections of the given UIDs in the examined folder (absent ones skipped).
    async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<FetchedHeader>>;
    /// All UIDs of the examined folder (for spotting expunged messages).
    async fn uids(&mut self) -> Result<Vec<u32>>;
    /// CONDSTORE: UIDs and flags of messages whose flags changed after `modseq`.
    async fn changed_since(&mut self, modseq: u64) -> Result<Vec<(u32, FlagSet)>>;
    /// Waits (IDLE where the server has it) until the examined folder may have new mail,
    /// or `timeout` passes. Returns whether something happened.
    async fn wait_for_change(&mut self, timeout: Duration) -> Result<bool>;
}

/// The written side of a migration.
#[async_trait]
pub trait MailTarget: Send {
    fn capabilities(&self) -> &Capabilities;
    /// Storage used and allowed in bytes (QUOTA), when the server reports a limit.
    async fn storage_quota(&mut self) -> Result<Option<(u64, u64)>> {
        Ok(None)
    }
    /// Who answered (for recognising one account reached by two spellings).
    fn identity(&self) -> ServerIdentity {
        ServerIdentity::default()
    }
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)>;
    /// Creates a folder; succeeds if it already exists. A name the server does not allow
    /// fails with [`crate::ErrorKind::FolderRefused`].
    async fn create_folder(&mut self, folder: &str) -> Result<()>;
    async fn select(&mut self, folder: &str) -> Result<FolderStatus>;
    /// A folder's counters without selecting it (STATUS), as [`MailSource::status`].
    async fn status(&mut self, folder: &str) -> Result<FolderStatus>;
    /// All UIDs of the selected folder.
    async fn uids(&mut self) -> Result<Vec<u32>>;
    /// Header sections (with size, flags and date) of these UIDs of the selected folder,
    /// absent ones skipped: recognising messages already there without downloading them.
    async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<FetchedHeader>>;
    /// Full content fingerprints of exactly these UIDs of the selected folder (downloads
    /// them: for the few messages whose headers alone are ambiguous).
    async fn locate(&mut self, uids: &[u32]) -> Result<Vec<LocatedMessage>>;
    /// Appends all items in one command (MULTIAPPEND when available), atomically where the
    /// server supports it: on error, assume none of them was stored unless the server
    /// appends one at a time (then the caller reconciles by fingerprint).
    async fn append(&mut self, folder: &str, items: &[AppendItem<'_>]) -> Result<Appended>;
    /// Messages of the selected folder with UID >= `from_uid`, with content fingerprints
    /// (downloads them: use for small ranges only).
    async fn locate_since(&mut self, from_uid: u32) -> Result<Vec<LocatedMessage>>;
    /// Replaces the flags of messages in the selected folder.
    async fn set_flags(&mut self, uids: &[u32], flags: &FlagSet) -> Result<()>;
    /// Removes exactly these messages from the selected folder (never others a user marked
    /// \Deleted): needs UIDPLUS's UID EXPUNGE.
    async fn expunge(&mut self, uids: &[u32]) -> Result<()>;
    /// Removes exactly these messages where the server has no UID EXPUNGE: the other
    /// messages marked \Deleted lose the flag for the EXPUNGE and get it back after.
    /// Safe only while nobody else uses the folder (before the switch).
    async fn expunge_restoring(&mut self, uids: &[u32]) -> Result<()>;
    /// Moves (or copies) messages of the selected folder into `to`; returns the pairs
    /// (old UID, new UID) when the server says (COPYUID), else an empty list.
    async fn transfer(&mut self, uids: &[u32], to: &str, how: Transfer) -> Result<Vec<(u32, u32)>>;
    /// Deletes a folder (and whatever is in it).
    async fn delete_folder(&mut self, folder: &str) -> Result<()>;
}

/// Opens sessions to one mailbox's servers (a worker asks for them per job, so sessions
/// can be pooled and reconnected).
#[async_trait]
pub trait Connector: Send + Sync {
    async fn source(&self) -> Result<Box<dyn MailSource>>;
    async fn target(&self) -> Result<Box<dyn MailTarget>>;
    /// The destination opened for reading only (EXAMINE, BODY.PEEK), for verification.
    async fn target_reader(&self) -> Result<Box<dyn MailSource>>;
    /// `host:port` of (source, destination), the keys of connection limits.
    fn hosts(&self) -> (String, String);
    /// How long either server asked to be left alone (a throttling response with a
    /// suggested back-off); jobs on it wait that long, jobs on other servers do not.
    fn throttled_for(&self) -> Option<Duration> {
        None
    }
}

/// Pauses per server (`host:port`) after throttling responses, shared by every session
/// a process opens, so one job's "slow down" holds back the others on that server only.
#[derive(Debug, Default)]
pub struct HostPauses {
    until: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

impl HostPauses {
    pub fn pause(&self, host: &str, d: Duration) {
        let t = std::time::Instant::now() + d;
        let mut m = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(host.to_string()).or_insert(t);
        *e = (*e).max(t);
    }

    pub fn remaining(&self, host: &str) -> Option<Duration> {
        let m = self.until.lock().unwrap_or_else(|p| p.into_inner());
        m.get(host)
            .and_then(|u| u.checked_duration_since(std::time::Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

// ---------------------------------------------------------------------------------------
// State store

/// The migration a pass continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationRef {
    pub id: Uuid,
    /// The addresses it was recorded under, when they were spelled differently.
    pub recorded_as: Option<(String, String)>,
}

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
    /// mailshift created the destination folder: it may delete it once the source
    /// folder is gone and it holds nothing a user added.
    pub dest_created: bool,
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
    #[serde(default)]
    pub header_fingerprint: Option<String>,
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
    /// sha256 of the header section (None for entries from before it was recorded).
    pub header_fingerprint: Option<Fingerprint>,
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
    async fn migration(&self, source: &Endpoint, dest: &Endpoint) -> Result<Uuid> {
        Ok(self.migration_keyed(source, dest, None).await?.id)
    }
    /// The same, also knowing the accounts' key ([`crate::account::pair_key`]): an
    /// existing migration of the same accounts under other spellings is continued.
    async fn migration_keyed(
        &self,
        source: &Endpoint,
        dest: &Endpoint,
        account_key: Option<&str>,
    ) -> Result<MigrationRef>;
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
    /// In one transaction: replaces the flags of mapped messages, forgets the given
    /// source UIDs (map and failures) and saves `state`'s checkpoint fields.
    async fn apply_changes(
        &self,
        state: &FolderState,
        flags: &[(u32, FlagSet)],
        forget: &[u32],
    ) -> Result<()>;
    /// In one transaction: replaces the whole message map of a folder (after a
    /// UIDVALIDITY change was reconciled), drops its failures, saves the checkpoint.
    async fn replace_messages(&self, state: &FolderState, messages: &[CopiedMessage])
    -> Result<()>;
    /// Forgets a folder whose source is gone, with its map.
    async fn remove_folder(&self, folder: Uuid) -> Result<()>;
    /// In one transaction: moves the map and failures of checkpoint `from` (a finished
    /// UID-range slice) to checkpoint `into`. `from` stays, empty and finished, so a
    /// redelivered slice job finds nothing left to do.
    async fn merge_folder(&self, into: Uuid, from: Uuid) -> Result<()>;
    async fn copied(&self, folder: Uuid) -> Result<Vec<CopiedMessage>>;
    async fn failed(&self, folder: Uuid) -> Result<Vec<FailedMessage>>;
}

// ---------------------------------------------------------------------------------------
// The fleet's mailboxes

/// How a registered mailbox's passes run (stored as JSON with the mailbox).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailboxOptions {
    #[serde(default)]
    pub maps: Vec<String>,
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Mirror deletions (off in dual reception).
    #[serde(default)]
    pub delete: bool,
    #[serde(default)]
    pub adopt_existing: bool,
    /// The mail domain whose cutover this mailbox follows (`mailshift plan`): once its
    /// MX switch is observed, the mailbox's passes run in dual-reception mode.
    #[serde(default)]
    pub domain: Option<String>,
}

/// One of a mailbox's two servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The old server (read only).
    Source,
    /// The new server.
    Dest,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Dest => "dest",
        }
    }
}

/// A mailbox registered with the fleet (no credentials: see [`MailboxCredentials`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxRecord {
    pub id: Uuid,
    pub migration_id: Uuid,
    pub batch: Option<String>,
    /// `Endpoint` strings (no password ever).
    pub source: String,
    pub dest: String,
    pub options: MailboxOptions,
    pub status: crate::mailbox::MailboxStatus,
    pub last_error: Option<String>,
    /// Why the mailbox waits on an outage (not its own fault); cleared by its next pass.
    pub warning: Option<String>,
    /// The pass whose jobs `jobs_left` counts.
    pub pass_id: Option<Uuid>,
    /// Unix seconds.
    pub last_pass_at: Option<i64>,
    pub next_pass_at: Option<i64>,
    /// Folder jobs of the current pass not finished yet.
    pub jobs_left: u32,
    /// The source's size at the latest count (pass planning, `batch verify`).
    pub source_messages: Option<u64>,
    pub source_bytes: Option<u64>,
    /// JSON of the latest `batch verify` of this mailbox.
    pub checked: Option<String>,
    /// When the current pass was planned (unix seconds), and messages copied then.
    pub pass_started_at: Option<i64>,
    pub copied_at_start: Option<u64>,
}

/// Decrypted passwords of a mailbox, only ever held in memory.
#[derive(Clone)]
pub struct MailboxCredentials {
    pub source_password: secrecy::SecretString,
    pub dest_password: secrecy::SecretString,
}

impl std::fmt::Debug for MailboxCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailboxCredentials([redacted])")
    }
}

/// Registered mailboxes, their credentials (sealed at rest) and folder leases.
#[async_trait]
pub trait MailboxStore: Send + Sync {
    /// Registers a mailbox (or updates the one with the same endpoints).
    async fn add_mailbox(
        &self,
        source: &Endpoint,
        dest: &Endpoint,
        batch: Option<&str>,
        options: &MailboxOptions,
        credentials: &MailboxCredentials,
    ) -> Result<MailboxRecord>;
    async fn mailboxes(&self, batch: Option<&str>) -> Result<Vec<MailboxRecord>>;
    /// Removes a mailbox from the fleet: its row, its jobs and its provisioning record.
    /// What its migration copied stays recorded, so registering it again copies nothing
    /// twice. False when there is no such mailbox.
    async fn remove_mailbox(&self, id: Uuid) -> Result<bool>;
    /// Replaces the password of one side of a mailbox (sealed as at registration).
    async fn set_mailbox_password(
        &self,
        id: Uuid,
        side: Side,
        password: &secrecy::SecretString,
    ) -> Result<()>;
    async fn mailbox_credentials(
        &self,
        migration: Uuid,
    ) -> Result<(MailboxRecord, MailboxCredentials)>;
    /// Sets a mailbox's status and error (an operator's retry, a failure that is the
    /// mailbox's own) and when its next pass is due; clears its warning.
    async fn set_mailbox_status(
        &self,
        id: Uuid,
        status: crate::mailbox::MailboxStatus,
        error: Option<&str>,
        next_pass_at: Option<i64>,
    ) -> Result<()>;
    /// An outage (not the mailbox) stands in the way of its pass: keep its status, say
    /// why, and try again at `next_pass_at`.
    async fn defer_mailbox(&self, id: Uuid, warning: &str, next_pass_at: i64) -> Result<()>;
    /// In one transaction: records a planned pass of `jobs` (the outbox rows the relay
    /// publishes) and makes it the mailbox's current pass (`syncing`, or `synced` when
    /// there are no jobs). Returns the pass id. Nothing is published here: a planner
    /// that dies after this leaves jobs for the relay, never a pass half announced.
    async fn begin_pass(
        &self,
        id: Uuid,
        jobs: &[FolderJob],
        source_messages: Option<u64>,
        next_pass_at: Option<i64>,
    ) -> Result<Uuid>;
    /// A job ended for good: recorded once (a redelivered job's second completion
    /// changes nothing); the mailbox is `synced` when its current pass has no
    /// unfinished job left.
    async fn job_finished(
        &self,
        job: &FolderJob,
        outcome: crate::mailbox::JobOutcome,
        error: Option<&str>,
    ) -> Result<()>;
    /// A dead-lettered job goes back to work: unfinished again (its mailbox `syncing`
    /// again if it belongs to the current pass). False if no such job is recorded.
    async fn reopen_job(&self, job: Uuid) -> Result<bool>;
    /// The relay's share of jobs not yet published (oldest first), leased to `owner`
    /// for `lease` so two relays never publish the same rows at once.
    async fn claim_unpublished(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<FolderJob>>;
    /// RabbitMQ confirmed these jobs.
    async fn mark_published(&self, jobs: &[Uuid]) -> Result<()>;
    /// Jobs lost in an outage: published at or before `published_by`, still unfinished,
    /// of their mailbox's current pass, and with no live lease on their folder. They are
    /// made unpublished again (the relay publishes them anew) and returned, at most
    /// `limit`. Only asked while the queue holds nothing, so none of them can be waiting
    /// there; a second delivery of one still running elsewhere is harmless (leases).
    async fn republish_lost(&self, published_by: i64, limit: usize) -> Result<Vec<FolderJob>>;
    /// Takes the right to plan a mailbox's pass (several schedulers may run); false when
    /// another scheduler holds it.
    async fn claim_planning(&self, id: Uuid, owner: &str, lease: Duration) -> Result<bool>;
    async fn release_planning(&self, id: Uuid, owner: &str) -> Result<()>;
    /// Records the account key of a migration and returns the other registered
    /// mailboxes whose migration has the same key (the same accounts registered twice).
    async fn account_conflicts(&self, migration: Uuid, key: &str) -> Result<Vec<MailboxRecord>>;
    /// Jobs that ended in the dead-letter queue and were not reopened, per migration.
    async fn dead_jobs(&self, batch: Option<&str>) -> Result<HashMap<Uuid, u64>>;
    /// Records a credential check (`batch verify`) and the source size it saw.
    async fn record_check(
        &self,
        id: Uuid,
        checked: &str,
        source_messages: Option<u64>,
        source_bytes: Option<u64>,
    ) -> Result<()>;
    /// Messages and bytes on the destination per migration (of one batch, or all).
    async fn copied_totals(&self, batch: Option<&str>) -> Result<HashMap<Uuid, (u64, u64)>>;
    /// Messages and bytes copied per folder (by folder id) of one migration, counted
    /// in the database (a mailbox's detail page).
    async fn folder_totals(&self, migration: Uuid) -> Result<HashMap<Uuid, (u64, u64)>>;
    /// Takes (or renews) the lease of one folder for `owner`, creating the folder's
    /// checkpoint row if it has none; false if another worker holds an unexpired lease.
    async fn claim_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        dest_folder: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool>;
    async fn release_folder(&self, migration: Uuid, source_folder: &str, owner: &str)
    -> Result<()>;
    /// Extends `owner`'s lease only if it is still unexpired: false once it lapsed, even
    /// if no one else took it (the folder may have been copied meanwhile).
    async fn renew_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool>;
}

/// The fleet's batches (see [`crate::batch`]).
#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Creates or replaces a batch's row.
    async fn put_batch(&self, batch: &crate::batch::BatchRecord) -> Result<()>;
    async fn batch(&self, name: &str) -> Result<Option<crate::batch::BatchRecord>>;
    async fn batches(&self) -> Result<Vec<crate::batch::BatchRecord>>;
    /// Removes a batch's row; false when there is none. (Its mailboxes are the
    /// caller's to remove first.)
    async fn delete_batch(&self, name: &str) -> Result<bool>;
}

/// The fleet's record of domain cutovers.
#[async_trait]
pub trait DomainStore: Send + Sync {
    /// Registers or updates a domain's cutover (its phase is kept when it exists).
    async fn put_domain(
        &self,
        config: &crate::cutover::DomainConfig,
        plan: Option<&str>,
    ) -> Result<()>;
    async fn domains(&self) -> Result<Vec<crate::cutover::DomainRecord>>;
    /// Records that the passes after dual reception ended were scheduled at `at`.
    async fn mark_final_pass(&self, name: &str, at: i64) -> Result<()>;
    /// Moves a domain to `phase` at `now` (unix seconds); `switched_at` and `report`
    /// are set when given.
    async fn set_domain_phase(
        &self,
        name: &str,
        phase: crate::cutover::Phase,
        now: i64,
        switched_at: Option<i64>,
        report: Option<&str>,
    ) -> Result<()>;
}

/// An API token's public facts (the token itself is shown once, at creation, and only
/// its hash is kept).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub read_only: bool,
    #[serde(with = "crate::time::unix")]
    pub created_at: i64,
    #[serde(default, with = "crate::time::unix_opt")]
    pub last_used_at: Option<i64>,
    /// Unix seconds after which it is refused; None: never.
    #[serde(default, with = "crate::time::unix_opt")]
    pub expires_at: Option<i64>,
}

/// The HTTP API's tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Creates a token named `name`, valid until `expires_at` (unix seconds) if given;
    /// returns the token, which is not stored anywhere.
    async fn create_token(
        &self,
        name: &str,
        read_only: bool,
        expires_at: Option<i64>,
    ) -> Result<String>;
    /// The token's facts if `token` is a valid token, not expired (and notes its use).
    async fn check_token(&self, token: &str) -> Result<Option<TokenInfo>>;
    async fn tokens(&self) -> Result<Vec<TokenInfo>>;
    /// Revokes the token named `name`; false if there is none.
    async fn revoke_token(&self, name: &str) -> Result<bool>;
}

/// Everything the fleet keeps in its database, as one handle: what the binary opens
/// (PostgreSQL, or the embedded SQLite file) and hands to the engine and front ends,
/// each of which sees only the ports it uses.
pub trait FleetStore:
    StateStore
    + MailboxStore
    + BatchStore
    + DomainStore
    + crate::provision::ProvisionStore
    + HostSlots
    + TokenStore
{
}

impl<T> FleetStore for T where
    T: StateStore
        + MailboxStore
        + BatchStore
        + DomainStore
        + crate::provision::ProvisionStore
        + HostSlots
        + TokenStore
        + ?Sized
{
}

/// Tells whether a domain's MX switch has happened (every authoritative nameserver
/// returns only the new MX).
#[async_trait]
pub trait MxObserver: Send + Sync {
    /// `(switched, what was seen)`.
    async fn observe(&self, domain: &crate::cutover::DomainConfig) -> Result<(bool, String)>;
}

/// Fleet-wide connection slots per server (`host:port`): a connection is opened only in
/// a slot leased from the shared database.
#[async_trait]
pub trait HostSlots: Send + Sync {
    /// Sets (or with `None` removes) a host's connection limit and, optionally, a
    /// fleet-wide messages-per-second cap (enforced as an equal share per slot).
    async fn set_host_limit(
        &self,
        host: &str,
        max: Option<u32>,
        messages_per_sec: Option<u32>,
    ) -> Result<()>;
    /// Messages per second one slot of `host` may move (None: uncapped).
    async fn slot_rate(&self, host: &str) -> Result<Option<f64>>;
    /// Leases a free slot for `owner`: `Ok(None)` when all are taken, `Ok(Some(None))`
    /// when the host has no limit, `Ok(Some(Some(slot)))` otherwise.
    async fn acquire_slot(
        &self,
        host: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Option<u32>>>;
    /// Extends a held slot's lease; false if it was lost (expired and taken).
    async fn renew_slot(&self, host: &str, slot: u32, owner: &str, lease: Duration)
    -> Result<bool>;
    async fn release_slot(&self, host: &str, slot: u32, owner: &str) -> Result<()>;
}

/// Finds the servers of a migration: one fixed pair in embedded mode, the stored
/// mailbox's in the fleet.
#[async_trait]
pub trait Connectors: Send + Sync {
    async fn connector(&self, migration: Uuid) -> Result<std::sync::Arc<dyn Connector>>;
}

/// Embedded mode: every job belongs to the one migration.
pub struct OneConnector(pub std::sync::Arc<dyn Connector>);

#[async_trait]
impl Connectors for OneConnector {
    async fn connector(&self, _: Uuid) -> Result<std::sync::Arc<dyn Connector>> {
        Ok(self.0.clone())
    }
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
    /// W3C trace context of whoever published the job (`traceparent`, `tracestate`).
    pub trace: Vec<(String, String)>,
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
    /// The job failed for good: keep it aside with `reason` (a dead-letter queue) and
    /// forget it here. Queues without one just acknowledge it.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let _ = reason;
        self.ack(delivery).await
    }
    /// Jobs waiting in the queue, when the queue can tell.
    async fn depth(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Jobs the queue holds for later: ready ones and delayed retries (not those
    /// delivered and unacknowledged), when the queue can tell. Zero lets the scheduler
    /// look for jobs an outage lost.
    async fn waiting(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// No more jobs will be published: receivers get `None` once the queue is drained
    /// (an in-process queue; a broker's queue lives on and ignores this).
    fn close(&self) {}
}

// ---------------------------------------------------------------------------------------
// Progress

/// Receives progress as it happens (terminal bars, log lines, metrics). Must not block.
pub trait Progress: Send + Sync {
    fn folder_started(&self, folder: &str, messages: u64, bytes: u64);
    fn copied(&self, folder: &str, messages: u64, bytes: u64);
    fn folder_finished(&self, report: &FolderReport);
    /// This many messages of a folder are on the destination already (copied by an
    /// earlier run or attempt): counted as done, not copied again. Called when the
    /// folder's pass starts, after `folder_started`.
    fn already_there(&self, _folder: &str, _messages: u64) {}
    /// A message the destination refused for good (too large, quota...), with its raw
    /// bytes, so it can be kept somewhere (`--quarantine`) instead of only reported.
    fn rejected(&self, _folder: &str, _failure: &crate::report::MessageFailure, _raw: &[u8]) {}
    /// Preparing the pass: `done` of `total` destination folders created.
    fn preparing(&self, _done: u64, _total: u64) {}
    /// The pass is planned: the source's copied folders hold `messages` in `folders`.
    fn planned(&self, _messages: u64, _folders: u64) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn folder_started(&self, _: &str, _: u64, _: u64) {}
    fn copied(&self, _: &str, _: u64, _: u64) {}
    fn folder_finished(&self, _: &FolderReport) {}
}

// ---------------------------------------------------------------------------------------
// Time

/// Unix time in seconds, injectable so schedules, back-offs and retry budgets can be
/// tested without waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}
