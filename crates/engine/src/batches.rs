//! The batch service: what can be done to a batch, for the command line (`mailshift
//! batch ...`), the HTTP API and the dashboard alike: import a spreadsheet, check
//! credentials and quotas, schedule, start, pause, retry, view, report. It speaks only to
//! ports (the fleet's store, the connectors), so it is tested on in-memory fakes; results
//! are plain data (serde) that each front end renders its own way. Nothing here prints.

use futures::StreamExt;
use mailshift_core::batch::{BatchRecord, BatchState, Counts, progress};
use mailshift_core::endpoint::Security;
use mailshift_core::folder::FolderRules;
use mailshift_core::import::{Defaults, RowError, parse};
use mailshift_core::mailbox::{MailboxEvent, MailboxStatus};
use mailshift_core::ports::{
    Connectors, FleetStore, MailboxCredentials, MailboxOptions, MailboxRecord,
};
use mailshift_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The fleet's store as this service uses it.
type Store = dyn FleetStore;

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Where imported rows' servers come from when the file does not say.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub domain: Option<String>,
    pub source_host: Option<String>,
    pub dest_host: Option<String>,
    pub source_port: Option<u16>,
    pub dest_port: Option<u16>,
    pub starttls: bool,
    pub allow_plaintext: bool,
}

#[derive(Debug, Serialize)]
pub struct Imported {
    pub line: usize,
    pub source: String,
    pub dest: String,
}

#[derive(Debug, Serialize)]
pub struct ImportOutcome {
    pub batch: String,
    pub imported: Vec<Imported>,
    pub rejected: Vec<RowError>,
}

pub fn check_name(name: &str) -> Result<()> {
    let fine = !name.trim().is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '));
    if fine {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "a batch name is 1-100 letters, digits, spaces, '-', '_' or '.' (got '{name}')"
        )))
    }
}

/// Registers the good rows of a CSV file as mailboxes of batch `name` (created as a
/// draft if new); bad rows are returned with their line and reason. `on_progress` hears
/// (rows done, rows) as they are stored.
pub async fn import_csv(
    store: &Store,
    name: &str,
    bytes: &[u8],
    o: &ImportOptions,
    on_progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ImportOutcome> {
    check_name(name)?;
    let defaults = Defaults {
        source_host: o.source_host.clone(),
        dest_host: o.dest_host.clone(),
        source_port: o.source_port,
        dest_port: o.dest_port,
        security: o.starttls.then_some(Security::StartTls),
    };
    if let Some(e) = mailshift_core::import::layout_problem(bytes, &defaults) {
        // The file as a whole cannot be imported: nothing is made for it.
        return Ok(ImportOutcome {
            batch: name.to_string(),
            imported: Vec::new(),
            rejected: vec![e],
        });
    }
    let (rows, mut rejected) = parse(bytes, &defaults);
    let domain = o
        .domain
        .as_deref()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    if store.batch(name).await?.is_none() {
        store
            .put_batch(&BatchRecord::new(name, domain.as_deref(), now()))
            .await?;
    }
    // Registered mailboxes by endpoints: a lookup per row, not a scan (100,000 rows).
    let existing: HashMap<(String, String), Option<String>> = store
        .mailboxes(None)
        .await?
        .into_iter()
        .map(|m| ((m.source, m.dest), m.batch))
        .collect();
    let total = rows.len();
    let mut fresh = Vec::with_capacity(total);
    // (`parse` has refused a mailbox appearing twice in the file: no two rows below
    // write the same mailbox at once.)
    for r in rows {
        let key = (r.source.to_string(), r.dest.to_string());
        // Registered in another batch: moving it silently would surprise its owner.
        match existing.get(&key) {
            Some(other) if other.as_deref() != Some(name) => rejected.push(RowError {
                line: r.line,
                reason: format!(
                    "mailbox {} is already registered in batch '{}'",
                    r.source,
                    other.as_deref().unwrap_or("(none)")
                ),
            }),
            _ => fresh.push(r),
        }
    }
    // Rows are stored a few at a time (each seals its passwords and is one upsert), in
    // bounded memory; a row the database refuses is reported with its line, the others
    // go in.
    let done = std::sync::atomic::AtomicUsize::new(total - fresh.len());
    let stored = futures::stream::iter(fresh)
        .map(|r| {
            let domain = domain.clone();
            let done = &done;
            async move {
                let options = MailboxOptions {
                    maps: r.maps.clone(),
                    excludes: r.excludes.clone(),
                    allow_plaintext: o.allow_plaintext,
                    delete: true,
                    adopt_existing: false,
                    domain: domain.or_else(|| {
                        r.dest
                            .user
                            .rsplit_once('@')
                            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
                    }),
                };
                let creds = MailboxCredentials {
                    source_password: r.source_password.clone(),
                    dest_password: r.dest_password.clone(),
                };
                let added = match store
                    .add_mailbox(&r.source, &r.dest, Some(name), &options, &creds)
                    .await
                {
                    // The hash `mailshift provision` carries to the new server (sealed).
                    Ok(m) => store
                        .set_imported_hash(m.id, r.source_password_hash.as_ref())
                        .await
                        .map(|()| m),
                    Err(e) => Err(e),
                };
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                on_progress(n, total);
                match added {
                    Ok(m) => Ok(Imported {
                        line: r.line,
                        source: m.source,
                        dest: m.dest,
                    }),
                    Err(e) => Err(RowError {
                        line: r.line,
                        reason: format!("cannot store it: {}", e.message),
                    }),
                }
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut imported = Vec::with_capacity(stored.len());
    for s in stored {
        match s {
            Ok(i) => imported.push(i),
            Err(e) => rejected.push(e),
        }
    }
    imported.sort_by_key(|i| i.line);
    rejected.sort_by_key(|e| e.line);
    Ok(ImportOutcome {
        batch: name.to_string(),
        imported,
        rejected,
    })
}

async fn members(store: &Store, name: &str) -> Result<Vec<MailboxRecord>> {
    let mailboxes = store.mailboxes(Some(name)).await?;
    if mailboxes.is_empty() {
        return Err(Error::usage(format!(
            "batch '{name}' has no mailbox (see mailshift batch import)"
        )));
    }
    Ok(mailboxes)
}

/// The batch's row; a batch made of `mailbox add --batch` mailboxes gets one, running
/// (they were scheduled as soon as added).
pub async fn batch_record(store: &Store, name: &str) -> Result<BatchRecord> {
    if let Some(b) = store.batch(name).await? {
        return Ok(b);
    }
    members(store, name).await?;
    let mut b = BatchRecord::new(name, None, now());
    b.state = BatchState::Running;
    Ok(b)
}

/// Logs in to both sides of every mailbox of the batch; records and returns each
/// mailbox's readiness.
pub async fn verify_batch(
    store: &Store,
    connectors: &dyn Connectors,
    name: &str,
) -> Result<Vec<Readiness>> {
    let mailboxes = members(store, name).await?;
    let mut rows = Vec::new();
    for m in &mailboxes {
        let mut row = check_mailbox(connectors, m).await;
        row.checked_at = Some(now());
        let json = serde_json::to_string(&row)
            .map_err(|e| Error::new(ErrorKind::Store, format!("cannot record a check: {e}")))?;
        store
            .record_check(m.id, &json, row.source_messages, row.source_bytes)
            .await?;
        rows.push(row);
    }
    Ok(rows)
}

/// Changes to a batch's schedule; None leaves a field as it is.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct ScheduleChange {
    #[serde(default, with = "mailshift_core::time::unix_opt")]
    pub start_at: Option<i64>,
    pub interval_secs: Option<u64>,
    #[serde(default, with = "mailshift_core::time::unix_opt")]
    pub switch_at: Option<i64>,
    #[serde(default, with = "mailshift_core::time::unix_opt")]
    pub complete_at: Option<i64>,
    pub concurrency: Option<u32>,
    pub host_concurrency: Option<u32>,
    pub domain: Option<String>,
}

pub async fn schedule(store: &Store, name: &str, c: &ScheduleChange) -> Result<BatchRecord> {
    let mut b = batch_record(store, name).await?;
    if let (Some(s), Some(e)) = (c.start_at.or(b.start_at), c.complete_at.or(b.complete_at))
        && e <= s
    {
        return Err(Error::usage(format!(
            "batch '{name}': complete-at must come after start-at"
        )));
    }
    if let Some(0) = c.concurrency {
        return Err(Error::usage(format!(
            "batch '{name}': a concurrency of 0 would never copy anything; use at least 1"
        )));
    }
    b.start_at = c.start_at.or(b.start_at);
    b.interval_secs = c.interval_secs.or(b.interval_secs);
    b.complete_at = c.complete_at.or(b.complete_at);
    b.concurrency = c.concurrency.or(b.concurrency);
    b.host_concurrency = c.host_concurrency.or(b.host_concurrency);
    if let Some(d) = &c.domain {
        b.domain = Some(d.trim_end_matches('.').to_ascii_lowercase());
    }
    if let Some(at) = c.switch_at {
        b.switch_at = Some(at);
        let domain = match &b.domain {
            Some(d) => d.clone(),
            None => {
                // Every mailbox of the batch follows its own domain; one switch date
                // only makes sense for one domain.
                let mut ds: Vec<String> = members(store, name)
                    .await?
                    .into_iter()
                    .filter_map(|m| m.options.domain)
                    .collect();
                ds.sort();
                ds.dedup();
                match ds.as_slice() {
                    [one] => one.clone(),
                    _ => {
                        return Err(Error::usage(format!(
                            "batch '{name}' spans {} domains: give --domain to say whose switch this is",
                            ds.len()
                        )));
                    }
                }
            }
        };
        set_switch(store, &domain, at).await?;
        b.domain = Some(domain);
    }
    store.put_batch(&b).await?;
    Ok(b)
}

pub use mailshift_core::cutover::DnsParams;

/// Records a domain's DNS check parameters on its cutover, where `mailshift plan` keeps
/// them; its plan, phase and the rest of its configuration are kept.
pub async fn set_dns_params(store: &Store, domain: &str, p: &DnsParams) -> Result<()> {
    let (mut config, plan) = domain_config(store, domain).await?;
    config.new_mx = Some(p.new_mx.clone());
    config.spf_include = p.spf_include.clone();
    config.dkim_selectors = p.dkim_selectors.clone();
    store.put_domain(&config, plan.as_deref()).await?;
    Ok(())
}

/// Records the switch date on the domain's cutover (registering the domain if new).
async fn set_switch(store: &Store, domain: &str, at: i64) -> Result<()> {
    let when = chrono::DateTime::from_timestamp(at, 0)
        .ok_or_else(|| Error::usage(format!("switch time {at} is out of range")))?
        .to_rfc3339();
    let (mut config, plan) = domain_config(store, domain).await?;
    config.switch_at = Some(when);
    store.put_domain(&config, plan.as_deref()).await?;
    Ok(())
}

/// A domain's recorded configuration and plan, or a new one's defaults. The plan goes
/// back with every write: `put_domain` replaces it.
async fn domain_config(
    store: &Store,
    domain: &str,
) -> Result<(mailshift_core::cutover::DomainConfig, Option<String>)> {
    let existing = store
        .domains()
        .await?
        .into_iter()
        .find(|d| d.config.name == domain);
    Ok(match existing {
        Some(d) => (d.config, d.plan),
        None => (
            mailshift_core::cutover::DomainConfig {
                name: domain.to_string(),
                new_mx: None,
                old_mx: None,
                nameservers: Vec::new(),
                authoritative: Vec::new(),
                switch_at: None,
                dual_reception_secs: 72 * 3600,
                ..Default::default()
            },
            None,
        ),
    })
}

/// What a user can do to a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    RetryFailed,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "retry-failed" => Action::RetryFailed,
            _ => return None,
        })
    }
}

/// Applies `action`; returns the batch and a sentence saying what happened.
pub async fn act(
    store: &Store,
    name: &str,
    action: Action,
    start_at: Option<i64>,
) -> Result<(BatchRecord, String)> {
    let mut b = batch_record(store, name).await?;
    let said = match action {
        Action::Start | Action::Resume => {
            b.start(start_at).map_err(Error::usage)?;
            match b.start_at.filter(|s| *s > now()) {
                Some(s) => format!("batch '{name}' starts at {}", stamp(s)),
                None => format!(
                    "batch '{name}' is running: its mailboxes are planned at the scheduler's next round"
                ),
            }
        }
        Action::Pause => {
            b.pause().map_err(Error::usage)?;
            format!("batch '{name}' is paused: no new pass is planned; passes in flight finish")
        }
        Action::RetryFailed => {
            let mut n = 0;
            for m in members(store, name).await? {
                if m.status == MailboxStatus::Failed {
                    store
                        .set_mailbox_status(
                            m.id,
                            m.status.next(MailboxEvent::Retried),
                            m.last_error.as_deref(),
                            Some(now()),
                        )
                        .await?;
                    n += 1;
                }
            }
            format!(
                "{n} failed mailbox(es) of batch '{name}' will be retried at the scheduler's next round"
            )
        }
    };
    store.put_batch(&b).await?;
    Ok((b, said))
}

/// The one registered mailbox `query` names: its id, its source or destination URL as
/// registered, or the login of either side (`ann@example.com`), case-insensitively.
pub async fn find_mailbox(store: &Store, query: &str) -> Result<MailboxRecord> {
    let q = query.trim();
    let all = store.mailboxes(None).await?;
    if let Ok(id) = q.parse::<uuid::Uuid>()
        && let Some(m) = all.iter().find(|m| m.id == id)
    {
        return Ok(m.clone());
    }
    let login = |url: &str| {
        url.parse::<mailshift_core::endpoint::Endpoint>()
            .map(|e| e.user)
            .unwrap_or_default()
    };
    let found: Vec<&MailboxRecord> = all
        .iter()
        .filter(|m| {
            m.source.eq_ignore_ascii_case(q)
                || m.dest.eq_ignore_ascii_case(q)
                || login(&m.source).eq_ignore_ascii_case(q)
                || login(&m.dest).eq_ignore_ascii_case(q)
        })
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::usage(format!(
            "no registered mailbox is '{q}': give its id, its source or destination URL, or \
             a login (see mailshift status)"
        ))),
        many => Err(Error::usage(format!(
            "'{q}' names {} mailboxes ({}): give the source URL or the id instead",
            many.len(),
            many.iter()
                .take(5)
                .map(|m| m.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A pass of the mailbox is being copied right now.
fn in_flight(m: &MailboxRecord) -> bool {
    m.status == MailboxStatus::Syncing && m.jobs_left > 0
}

/// Removes a mailbox from the fleet (never anything on its servers). A mailbox whose pass
/// is being copied is refused unless `force`: its jobs would be dropped mid-pass.
pub async fn remove_mailbox(store: &Store, query: &str, force: bool) -> Result<MailboxRecord> {
    let m = find_mailbox(store, query).await?;
    if in_flight(&m) && !force {
        return Err(Error::usage(format!(
            "mailbox {} is being copied ({} folder job(s) left): pause its batch and remove it \
             when the pass is done, or give --force to drop the pass",
            m.source, m.jobs_left
        )));
    }
    store.remove_mailbox(m.id).await?;
    Ok(m)
}

/// Removes a batch and its mailboxes from the fleet (never anything on the servers; what
/// was copied stays copied). A running batch, or one with a pass being copied, is refused:
/// pause it and let the passes finish first. Returns the mailboxes removed.
pub async fn delete_batch(store: &Store, name: &str) -> Result<usize> {
    let b = batch_record(store, name).await?;
    if matches!(b.state, BatchState::Running | BatchState::Completing) {
        return Err(Error::usage(format!(
            "batch '{name}' is {}: pause it first (mailshift batch pause '{name}')",
            b.state.as_str()
        )));
    }
    let mailboxes = store.mailboxes(Some(name)).await?;
    let busy = mailboxes.iter().filter(|m| in_flight(m)).count();
    if busy > 0 {
        return Err(Error::usage(format!(
            "batch '{name}' has {busy} mailbox(es) being copied: wait for their passes to \
             finish (mailshift batch status '{name}'), then delete it"
        )));
    }
    for m in &mailboxes {
        store.remove_mailbox(m.id).await?;
    }
    store.delete_batch(name).await?;
    Ok(mailboxes.len())
}

/// Replaces one side's password of a mailbox (after a refused login, say). A mailbox
/// that failed is retried at the scheduler's next round. Returns the mailbox and a
/// sentence saying what happened.
pub async fn set_password(
    store: &Store,
    query: &str,
    side: mailshift_core::ports::Side,
    password: &secrecy::SecretString,
) -> Result<(MailboxRecord, String)> {
    use secrecy::ExposeSecret;
    if password.expose_secret().is_empty() {
        return Err(Error::usage("the new password is empty"));
    }
    let m = find_mailbox(store, query).await?;
    store.set_mailbox_password(m.id, side, password).await?;
    let server = match side {
        mailshift_core::ports::Side::Source => "old",
        mailshift_core::ports::Side::Dest => "new",
    };
    let said = if m.status == MailboxStatus::Failed {
        store
            .set_mailbox_status(
                m.id,
                m.status.next(MailboxEvent::Retried),
                m.last_error.as_deref(),
                Some(now()),
            )
            .await?;
        format!(
            "password for the {server} server of {} replaced; the mailbox is retried at the \
             scheduler's next round",
            m.source
        )
    } else {
        format!("password for the {server} server of {} replaced", m.source)
    };
    Ok((m, said))
}

/// A mailbox as the dashboard shows it, from its record and what was copied of it.
fn view_of(m: MailboxRecord, (n, bytes): (u64, u64), t: i64) -> MailboxView {
    let p = progress(
        Counts {
            copied: n,
            copied_bytes: bytes,
            total: m.source_messages,
            total_bytes: m.source_bytes,
            copied_at_start: m.copied_at_start,
            pass_started_at: m.pass_started_at,
            pass_done: m.jobs_left == 0,
            last_pass_at: m.last_pass_at,
        },
        t,
    );
    MailboxView {
        id: m.id,
        domain: m.options.domain.clone(),
        status: m.status.to_string(),
        progress: p,
        jobs_left: m.jobs_left,
        last_pass_at: m.last_pass_at,
        next_pass_at: m.next_pass_at,
        last_error: m.last_error.clone(),
        // A check recorded by an older version that no longer parses is simply not
        // shown; `batch verify` records a new one.
        check: m
            .checked
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
        address: address_of(&m),
        warning: m.warning.clone(),
        batch: m.batch.clone(),
        source: m.source,
        dest: m.dest,
    }
}

/// The address a person knows a mailbox by: the new server's login when it is an
/// address, else the old one's, else the destination URL.
pub fn address_of(m: &MailboxRecord) -> String {
    let login = |url: &str| {
        url.parse::<mailshift_core::endpoint::Endpoint>()
            .ok()
            .map(|e| e.user)
    };
    [login(&m.dest), login(&m.source)]
        .into_iter()
        .flatten()
        .find(|u| u.contains('@'))
        .or_else(|| login(&m.dest))
        .unwrap_or_else(|| m.dest.clone())
}

/// One folder of a mailbox's detail: what was copied and what the new server refused.
#[derive(Debug, Serialize)]
pub struct FolderLine {
    pub source_folder: String,
    pub dest_folder: String,
    pub messages_copied: u64,
    pub bytes_copied: u64,
    /// Messages the new server refused (too large, over quota, ...), with why.
    pub refused: Vec<String>,
}

/// A mailbox with its folders: the dashboard's mailbox page.
#[derive(Debug, Serialize)]
pub struct MailboxDetail {
    pub mailbox: MailboxView,
    pub folders: Vec<FolderLine>,
}

/// A mailbox and its folders, from what mailshift recorded (no server is asked).
pub async fn mailbox_detail(store: &Store, query: &str) -> Result<MailboxDetail> {
    let m = find_mailbox(store, query).await?;
    let migration = m.migration_id;
    let per_folder = store.folder_totals(migration).await?;
    let mut folders = Vec::new();
    let (mut n, mut bytes) = (0, 0);
    for f in store.folders(migration).await? {
        let (c, b) = per_folder.get(&f.id).copied().unwrap_or((0, 0));
        n += c;
        bytes += b;
        let refused = store
            .failed(f.id)
            .await?
            .into_iter()
            .map(|r| format!("UID {}: {}", r.source_uid, r.reason))
            .collect();
        folders.push(FolderLine {
            source_folder: f.source_folder,
            dest_folder: f.dest_folder,
            messages_copied: c,
            bytes_copied: b,
            refused,
        });
    }
    folders.sort_by(|a, b| a.source_folder.cmp(&b.source_folder));
    Ok(MailboxDetail {
        mailbox: view_of(m, (n, bytes), now()),
        folders,
    })
}

/// Retries one failed mailbox at the scheduler's next round.
pub async fn retry_mailbox(store: &Store, query: &str) -> Result<(MailboxRecord, String)> {
    let m = find_mailbox(store, query).await?;
    if m.status != MailboxStatus::Failed {
        return Err(Error::usage(format!(
            "mailbox {} is {}, not failed: there is nothing to retry",
            m.source, m.status
        )));
    }
    store
        .set_mailbox_status(
            m.id,
            m.status.next(MailboxEvent::Retried),
            m.last_error.as_deref(),
            Some(now()),
        )
        .await?;
    let said = format!(
        "mailbox {} is retried at the scheduler's next round",
        m.source
    );
    Ok((m, said))
}

pub fn stamp(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// One mailbox as the dashboard shows it.
#[derive(Debug, Serialize)]
pub struct MailboxView {
    pub id: uuid::Uuid,
    /// The address a person knows it by (see [`address_of`]).
    pub address: String,
    pub batch: Option<String>,
    pub source: String,
    pub dest: String,
    pub domain: Option<String>,
    /// pending | syncing | synced | failed
    pub status: String,
    pub progress: mailshift_core::batch::Progress,
    pub jobs_left: u32,
    #[serde(default, with = "mailshift_core::time::unix_opt")]
    pub last_pass_at: Option<i64>,
    #[serde(default, with = "mailshift_core::time::unix_opt")]
    pub next_pass_at: Option<i64>,
    pub last_error: Option<String>,
    /// An outage standing in the way of its pass (not the mailbox's fault).
    pub warning: Option<String>,
    pub check: Option<Readiness>,
}

/// A batch with its mailboxes and totals.
#[derive(Debug, Serialize)]
pub struct BatchView {
    pub name: String,
    /// draft | scheduled | running | paused | completing | completed
    pub state: String,
    pub batch: BatchRecord,
    /// One page of the batch's mailboxes (all of them unless paged): `offset` is the
    /// place of the first in the batch; `totals` count them all.
    pub offset: usize,
    pub mailboxes: Vec<MailboxView>,
    pub totals: Totals,
    pub domain: Option<mailshift_core::cutover::DomainRecord>,
}

impl BatchView {
    /// Whether [`delete_batch`] would take it: not running (nor completing) and no
    /// mailbox being copied.
    pub fn deletable(&self) -> bool {
        !matches!(
            self.batch.state,
            BatchState::Running | BatchState::Completing
        ) && self.totals.syncing == 0
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub mailboxes: usize,
    pub synced: usize,
    pub syncing: usize,
    pub failed: usize,
    pub pending: usize,
    pub messages_copied: u64,
    pub messages_total: Option<u64>,
    pub bytes_copied: u64,
    #[serde(serialize_with = "mailshift_core::time::thousandths_opt")]
    pub percent: Option<f64>,
}

/// Which of a batch's mailboxes a view lists (a batch may hold 100,000).
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    pub const ALL: Page = Page {
        offset: 0,
        limit: usize::MAX,
    };
    /// Totals only.
    pub const NONE: Page = Page {
        offset: 0,
        limit: 0,
    };

    fn holds(&self, i: usize) -> bool {
        i >= self.offset && i - self.offset < self.limit
    }
}

pub async fn batch_view(store: &Store, name: &str, page: Page) -> Result<BatchView> {
    let b = batch_record(store, name).await?;
    let t = now();
    let copied = store.copied_totals(Some(name)).await?;
    let mut totals = Totals::default();
    let mut total_known = true;
    let mut total = 0u64;
    let mut views = Vec::new();
    let mut first_domain = None;
    for (i, m) in store.mailboxes(Some(name)).await?.into_iter().enumerate() {
        let (n, bytes) = copied.get(&m.migration_id).copied().unwrap_or((0, 0));
        totals.mailboxes += 1;
        match m.status {
            MailboxStatus::Synced => totals.synced += 1,
            MailboxStatus::Syncing => totals.syncing += 1,
            MailboxStatus::Failed => totals.failed += 1,
            MailboxStatus::Pending => totals.pending += 1,
        }
        totals.messages_copied += n;
        totals.bytes_copied += bytes;
        match m.source_messages {
            Some(s) => total += s,
            None => total_known = false,
        }
        if first_domain.is_none() {
            first_domain = m.options.domain.clone();
        }
        if !page.holds(i) {
            continue;
        }
        views.push(view_of(m, (n, bytes), t));
    }
    if total_known && totals.mailboxes > 0 {
        totals.messages_total = Some(total);
        totals.percent = Some(if total == 0 || totals.messages_copied >= total {
            100.0
        } else {
            (totals.messages_copied as f64 * 1000.0 / total as f64).floor() / 10.0
        });
    }
    let domain_name = b.domain.clone().or(first_domain);
    let domain = match domain_name {
        Some(d) => store
            .domains()
            .await?
            .into_iter()
            .find(|r| r.config.name == d),
        None => None,
    };
    Ok(BatchView {
        name: b.name.clone(),
        state: b.display_state(t).to_string(),
        batch: b,
        offset: page.offset,
        mailboxes: views,
        totals,
        domain,
    })
}

/// Every batch: those with a row, and those only named by `mailbox add --batch`.
pub async fn batch_names(store: &Store) -> Result<Vec<String>> {
    let mut names: Vec<String> = store.batches().await?.into_iter().map(|b| b.name).collect();
    for m in store.mailboxes(None).await? {
        if let Some(b) = m.batch
            && !names.contains(&b)
        {
            names.push(b);
        }
    }
    Ok(names)
}

/// One folder of the report.
#[derive(Debug, Serialize)]
pub struct FolderRow {
    pub source_folder: String,
    pub dest_folder: String,
    pub source_messages: usize,
    pub dest_messages: usize,
    pub source_bytes: u64,
    pub dest_bytes: u64,
    pub missing: usize,
    pub extra: usize,
    pub different: usize,
    pub verdict: &'static str,
    pub error: Option<String>,
}

/// One mailbox of the report.
#[derive(Debug, Serialize)]
pub struct MailboxReport {
    pub source: String,
    pub dest: String,
    pub status: String,
    /// in-sync | differences | error
    pub verdict: &'static str,
    pub source_messages: usize,
    pub dest_messages: usize,
    pub source_bytes: u64,
    pub dest_bytes: u64,
    pub missing: usize,
    pub extra: usize,
    pub different: usize,
    pub errors: Vec<String>,
    pub folders: Vec<FolderRow>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub batch: String,
    pub generated_at: String,
    /// Header-level fingerprints, or full-content hashes (`deep`).
    pub deep: bool,
    pub in_sync: bool,
    pub mailboxes: Vec<MailboxReport>,
}

/// Compares both servers of every mailbox now (read-only on both sides), independently
/// of what mailshift recorded: the proof to send to a customer.
pub async fn report(
    store: &Store,
    connectors: &dyn Connectors,
    name: &str,
    deep: bool,
) -> Result<Report> {
    let mailboxes = members(store, name).await?;
    let mut out = Vec::new();
    for m in &mailboxes {
        out.push(report_mailbox(connectors, m, deep).await);
    }
    Ok(Report {
        batch: name.to_string(),
        generated_at: mailshift_core::time::rfc3339(chrono::Utc::now().timestamp()),
        deep,
        in_sync: out.iter().all(|m| m.verdict == "in-sync"),
        mailboxes: out,
    })
}

async fn report_mailbox(
    connectors: &dyn Connectors,
    m: &MailboxRecord,
    deep: bool,
) -> MailboxReport {
    let mut r = MailboxReport {
        source: m.source.clone(),
        dest: m.dest.clone(),
        status: m.status.to_string(),
        verdict: "error",
        source_messages: 0,
        dest_messages: 0,
        source_bytes: 0,
        dest_bytes: 0,
        missing: 0,
        extra: 0,
        different: 0,
        errors: Vec::new(),
        folders: Vec::new(),
    };
    let compared = async {
        let connector = connectors.connector(m.migration_id).await?;
        let (s, d) = tokio::join!(connector.source(), connector.target_reader());
        let (mut src, mut dst) = (s?, d?);
        let rules = FolderRules::new(&m.options.maps, &m.options.excludes)?;
        crate::verify::verify(&mut *src, &mut *dst, &rules, deep).await
    }
    .await;
    match compared {
        Err(e) => r.errors.push(e.message),
        Ok(v) => {
            for f in &v.folders {
                let folder_verdict = if f.error.is_some() {
                    "error"
                } else if f.in_sync() {
                    "in-sync"
                } else {
                    "differences"
                };
                r.folders.push(FolderRow {
                    source_folder: f.source_label(),
                    dest_folder: f.dest.clone(),
                    source_messages: f.source_messages,
                    dest_messages: f.dest_messages,
                    source_bytes: f.source_bytes,
                    dest_bytes: f.dest_bytes,
                    missing: f.missing_count(),
                    extra: f.extra.len(),
                    different: f.different.len(),
                    verdict: folder_verdict,
                    error: f.error.as_ref().map(|e| e.message.clone()),
                });
                r.source_messages += f.source_messages;
                r.dest_messages += f.dest_messages;
                r.source_bytes += f.source_bytes;
                r.dest_bytes += f.dest_bytes;
            }
            r.missing = v.missing();
            r.extra = v.extra();
            r.different = v.different();
            r.errors.extend(v.errors.iter().map(|e| e.message.clone()));
            r.verdict = if !v.complete() || !r.errors.is_empty() {
                "error"
            } else if v.in_sync() {
                "in-sync"
            } else {
                "differences"
            };
        }
    }
    r
}

/// A CSV writer whose cells a spreadsheet shows as text, never runs: a cell that starts
/// like a formula (`=`, `+`, `-`, `@`, tab, CR) gets a leading `'`. Folder and user names
/// come from the old server, which anyone who can create a folder there controls.
pub struct SafeCsv<W: std::io::Write>(pub csv::Writer<W>);

impl<W: std::io::Write> SafeCsv<W> {
    pub fn write_record<I, T>(&mut self, record: I) -> csv::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.0.write_record(
            record
                .into_iter()
                .map(|c| neutralise(c.as_ref()).into_owned()),
        )
    }

    pub fn into_inner(self) -> std::io::Result<W> {
        self.0.into_inner().map_err(|e| e.into_error())
    }
}

/// `cell` as a spreadsheet will show it and never evaluate it.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => std::borrow::Cow::Owned(format!("'{cell}")),
        _ => std::borrow::Cow::Borrowed(cell),
    }
}

/// The report as CSV: one row per folder, and one per mailbox whose servers could not
/// be compared at all.
pub fn report_csv(r: &Report) -> std::result::Result<String, csv::Error> {
    let mut w = SafeCsv(csv::Writer::from_writer(Vec::new()));
    w.write_record([
        "batch",
        "source",
        "dest",
        "mailbox_verdict",
        "source_folder",
        "dest_folder",
        "source_messages",
        "dest_messages",
        "source_bytes",
        "dest_bytes",
        "missing",
        "extra",
        "different",
        "folder_verdict",
        "error",
    ])?;
    for m in &r.mailboxes {
        if m.folders.is_empty() {
            w.write_record([
                r.batch.as_str(),
                &m.source,
                &m.dest,
                m.verdict,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                &m.errors.join("; "),
            ])?;
        }
        for f in &m.folders {
            w.write_record([
                r.batch.clone(),
                m.source.clone(),
                m.dest.clone(),
                m.verdict.to_string(),
                f.source_folder.clone(),
                f.dest_folder.clone(),
                f.source_messages.to_string(),
                f.dest_messages.to_string(),
                f.source_bytes.to_string(),
                f.dest_bytes.to_string(),
                f.missing.to_string(),
                f.extra.to_string(),
                f.different.to_string(),
                f.verdict.to_string(),
                f.error.clone().unwrap_or_default(),
            ])?;
        }
    }
    let bytes = w.into_inner()?;
    // Every cell came from a `&str`: the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn caps_text(c: &mailshift_core::ports::Capabilities) -> Vec<&'static str> {
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

/// How a login went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Login {
    Ok,
    /// The server refused the credentials: a password (or token) to fix.
    Refused,
    /// The login was never tried: the server could not be reached, TLS failed, or a
    /// plain-text login was not allowed (the problem says which).
    Failed,
}

impl Login {
    /// How a failed connection counts: a refusal only when the server said no to the
    /// credentials.
    pub fn after(e: &mailshift_core::Error) -> Login {
        if e.kind == mailshift_core::ErrorKind::Auth {
            Login::Refused
        } else {
            Login::Failed
        }
    }
}

impl Login {
    pub fn as_str(self) -> &'static str {
        match self {
            Login::Ok => "ok",
            Login::Refused => "refused",
            Login::Failed => "failed",
        }
    }

    /// `ok`, `refused`, `failed`, or `-` when it was not tried.
    pub fn text(login: Option<Login>) -> &'static str {
        login.map_or("-", Login::as_str)
    }
}

/// One mailbox's readiness: both logins, the source's size, the destination's room.
/// Recorded with the mailbox (`batch verify`) and shown on the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    pub source: String,
    pub dest: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_login: Option<Login>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_login: Option<Login>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_folders: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_messages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_quota_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_quota_limit: Option<u64>,
    /// What stops the migration (a refused login, a quota too small).
    #[serde(default)]
    pub problems: Vec<String>,
    /// What deserves a look but does not stop it.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// When it was checked (unix seconds).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "mailshift_core::time::unix_opt"
    )]
    pub checked_at: Option<i64>,
}

fn caps(c: &mailshift_core::ports::Capabilities) -> Vec<String> {
    caps_text(c).into_iter().map(String::from).collect()
}

/// One mailbox's readiness: logs in to both sides (read-only), sizes the source and
/// compares it with the destination's quota.
pub async fn check_mailbox(connectors: &dyn Connectors, m: &MailboxRecord) -> Readiness {
    let mut out = Readiness {
        source: m.source.clone(),
        dest: m.dest.clone(),
        ..Readiness::default()
    };
    let connector = match connectors.connector(m.migration_id).await {
        Ok(c) => c,
        Err(e) => {
            out.problems.push(e.message);
            return out;
        }
    };
    let (s, t) = tokio::join!(connector.source(), connector.target());
    match s {
        Err(e) => {
            out.source_login = Some(Login::after(&e));
            out.problems.push(e.message);
        }
        Ok(mut src) => {
            out.source_login = Some(Login::Ok);
            out.source_capabilities = Some(caps(src.capabilities()));
            match source_size(&mut *src).await {
                Ok((n, messages, bytes)) => {
                    out.source_folders = Some(n);
                    out.source_messages = Some(messages);
                    out.source_bytes = Some(bytes);
                }
                Err(e) => out.problems.push(e.message),
            }
        }
    }
    match t {
        Err(e) => {
            out.dest_login = Some(Login::after(&e));
            out.problems.push(e.message);
        }
        Ok(mut dst) => {
            out.dest_login = Some(Login::Ok);
            out.dest_capabilities = Some(caps(dst.capabilities()));
            match dst.storage_quota().await {
                Ok(Some((used, limit))) => {
                    out.dest_quota_used = Some(used);
                    out.dest_quota_limit = Some(limit);
                    if let Some(need) = out.source_bytes
                        && used + need > limit
                    {
                        out.problems.push(format!(
                            "the destination quota ({} KiB, {} KiB used) cannot hold the source's {} KiB",
                            limit / 1024,
                            used / 1024,
                            need / 1024
                        ));
                    }
                }
                Ok(None) => out.warnings.push("the destination reports no quota".into()),
                Err(e) => out
                    .warnings
                    .push(format!("cannot read the destination quota: {}", e.message)),
            }
        }
    }
    out.ready = out.problems.is_empty();
    out
}

/// (selectable folders, messages, bytes) of the source.
async fn source_size(src: &mut dyn mailshift_core::ports::MailSource) -> Result<(u64, u64, u64)> {
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
    Ok((n, messages, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_like_cells_are_written_as_text() {
        let mut w = SafeCsv(csv::Writer::from_writer(Vec::new()));
        w.write_record([
            "=1+2",
            "@SUM(1+1)",
            "+cmd|'/C calc'!A0",
            "-2",
            "Inbox",
            "a=b",
        ])
        .unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            out.trim_end(),
            "'=1+2,'@SUM(1+1),'+cmd|'/C calc'!A0,'-2,Inbox,a=b"
        );
    }
    /// A report whose folder names (chosen by whoever can create folders on the old
    /// server), users and errors look like formulas: no cell of the CSV starts like one.
    #[test]
    fn a_report_with_formula_like_names_has_no_live_cell() {
        let hostile = [
            "=1+2",
            "@SUM(1+1)",
            "+cmd|'/C calc'!A0",
            "-1",
            "\tTAB",
            "\rCR",
        ];
        let folder = |name: &str| FolderRow {
            source_folder: name.to_string(),
            dest_folder: name.to_string(),
            source_messages: 1,
            dest_messages: 1,
            source_bytes: 10,
            dest_bytes: 10,
            missing: 0,
            extra: 0,
            different: 0,
            verdict: "in-sync",
            error: Some(name.to_string()),
        };
        let mailbox = |user: &str, folders: Vec<FolderRow>| MailboxReport {
            source: format!("imap://{user}@old.example"),
            dest: user.to_string(),
            status: "synced".into(),
            verdict: "in-sync",
            source_messages: 0,
            dest_messages: 0,
            source_bytes: 0,
            dest_bytes: 0,
            missing: 0,
            extra: 0,
            different: 0,
            errors: hostile.iter().map(|h| h.to_string()).collect(),
            folders,
        };
        let r = Report {
            batch: "=HYPERLINK(\"http://evil\")".into(),
            generated_at: "2026-12-02T00:00:00Z".into(),
            deep: false,
            in_sync: true,
            mailboxes: vec![
                mailbox("=cmd", hostile.iter().map(|h| folder(h)).collect()),
                // No folder: the mailbox's own row carries its errors.
                mailbox("@user", Vec::new()),
            ],
        };
        let text = report_csv(&r).unwrap();
        let mut rows = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(text.as_bytes());
        let mut cells = 0;
        for row in rows.records() {
            for cell in row.unwrap().iter() {
                cells += 1;
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "a live cell {cell:?} in:\n{text}"
                );
            }
        }
        assert_eq!(cells, 7 * 15, "{text}");
        // Shown as text, not lost.
        assert!(
            text.contains("'=1+2") && text.contains("'@SUM(1+1)"),
            "{text}"
        );
    }
}
