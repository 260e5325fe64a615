//! Preparing one incremental pass of a mailbox: list both servers' folders, map them,
//! create what is missing on the destination, reconcile moves and vanished folders, and
//! produce one [`FolderJob`] per folder. Embedded mode puts the jobs on an in-process
//! queue; the fleet's scheduler publishes them to RabbitMQ. Same code, same decisions.

use crate::reconcile;
use mailshift_core::account::{AccountProbe, pair_key, same_account, same_address};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::{FolderPath, FolderPlan, FolderRules, map_folders};
use mailshift_core::job::{FolderJob, parse_range_key, range_key};
use mailshift_core::ports::{MailSource, MailTarget, Progress, StateStore};
use mailshift_core::report::FolderReport;
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// The choices that shape a pass.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    pub rules: FolderRules,
    /// Mirror deletions (expunges, moves as moves, vanished folders).
    pub delete: bool,
    pub adopt_existing: bool,
    /// Fleet: a folder's first copy with more messages than this is split into UID-range
    /// slices, one job each, so several workers share it. None: never split.
    pub split_above: Option<usize>,
    /// Dual reception: new arrivals only (see [`FolderJob::dual_reception`]); implies no
    /// deletions, and no move reconciliation on the destination.
    pub dual_reception: bool,
    /// Fleet: no job for a folder whose source has not changed at all since its last
    /// complete pass (CONDSTORE's HIGHESTMODSEQ, which new mail, flag changes and
    /// expunges all raise), so a round over 10,000 quiet mailboxes publishes little.
    pub skip_unchanged: bool,
    /// Count the source's messages (STATUS per folder) for progress totals.
    pub count_messages: bool,
}

/// A planned pass.
#[derive(Debug)]
pub struct PreparedPass {
    pub migration_id: Uuid,
    /// One job per folder, INBOX first, then the tree.
    pub jobs: Vec<FolderJob>,
    /// Folders left out because nothing changed since their last pass.
    pub unchanged: usize,
    /// Messages in the source's copied folders (when counted).
    pub source_messages: u64,
    /// Folders that could not be prepared (e.g. cannot be created on the destination).
    pub failed: Vec<FolderReport>,
    pub excluded: Vec<String>,
    pub notes: Vec<String>,
    /// Messages moved on the destination, by source folder (raw name).
    pub moved_in: HashMap<String, u64>,
    /// The accounts' key ([`mailshift_core::account::pair_key`]), when both INBOXes
    /// could be read.
    pub account_key: Option<String>,
    order: Vec<String>,
}

impl PreparedPass {
    /// Puts folder reports in plan order and adds what the reconciliation did.
    pub fn finish_reports(&self, reports: &mut [FolderReport]) {
        reports.sort_by_key(|r| {
            self.order
                .iter()
                .position(|o| *o == r.source)
                .unwrap_or(usize::MAX)
        });
        for r in reports.iter_mut() {
            if let Some(job) = self.jobs.iter().find(|j| j.source_display == r.source)
                && let Some(n) = self.moved_in.get(&job.source_folder)
            {
                r.moved_in = *n;
            }
        }
    }
}

/// Looks at both accounts (read-only) and refuses one account copied into itself.
type Listing = (Vec<mailshift_core::folder::ListedFolder>, Option<char>);

async fn probe(
    src: &mut dyn MailSource,
    dst: &mut dyn MailTarget,
    source: &Endpoint,
    dest: &Endpoint,
    (src_folders, src_delim): &Listing,
    (dst_folders, dst_delim): &Listing,
) -> Result<Option<String>> {
    let names = |f: &[mailshift_core::folder::ListedFolder]| {
        let mut v: Vec<String> = f.iter().map(|f| f.raw.clone()).collect();
        v.sort();
        v
    };
    let a = AccountProbe {
        endpoint: source.clone(),
        identity: MailSource::identity(src),
        inbox: MailSource::status(src, "INBOX").await.ok(),
        folders: names(src_folders),
        delimiter: *src_delim,
    };
    let b = AccountProbe {
        endpoint: dest.clone(),
        identity: MailTarget::identity(dst),
        inbox: MailTarget::status(dst, "INBOX").await.ok(),
        folders: names(dst_folders),
        delimiter: *dst_delim,
    };
    if let Some(why) = same_account(&a, &b) {
        return Err(Error::usage(format!(
            "the source and the destination are the same account ({why}); mailshift only \
             reads the old server and will not copy a mailbox into itself: check --from and --to"
        )));
    }
    Ok(pair_key(&a, &b))
}

pub async fn prepare(
    src: &mut dyn MailSource,
    dst: &mut dyn MailTarget,
    store: &dyn StateStore,
    source: &Endpoint,
    dest: &Endpoint,
    opts: &PassOptions,
    progress: &dyn Progress,
) -> Result<PreparedPass> {
    if same_address(source, dest) {
        return Err(Error::usage(format!(
            "--from and --to name the same account ({source}); mailshift only reads the old \
             server and will not copy a mailbox into itself"
        )));
    }
    let src_listing = MailSource::list_folders(src).await?;
    let dst_listing = MailTarget::list_folders(dst).await?;
    let account_key = probe(src, dst, source, dest, &src_listing, &dst_listing).await?;
    let (src_folders, src_delim) = src_listing;
    let (dst_folders, dst_delim) = dst_listing;
    let mut mapping = map_folders(
        &src_folders,
        src_delim,
        &dst_folders,
        dst_delim,
        &opts.rules,
    )?;
    let migration = store
        .migration_keyed(source, dest, account_key.as_deref())
        .await?;
    let migration_id = migration.id;
    if let Some((s, d)) = &migration.recorded_as {
        mapping.notes.push(format!(
            "these accounts were migrated before as {s} -> {d}: continuing that migration"
        ));
    }
    let mut existing: HashSet<String> = dst_folders.iter().map(|f| f.raw.clone()).collect();
    existing.insert("INBOX".to_string());
    let mut ready: Vec<FolderPlan> = Vec::new();
    let mut failed = Vec::new();
    let to_create = mapping
        .folders
        .iter()
        .filter(|p| !existing.contains(&p.dest_raw))
        .count();
    let mut created_n = 0usize;
    let plans = mapping.folders.clone();
    for plan in &plans {
        let mut plan = plan.clone();
        let mut outcome = ensure_folder(dst, &plan.dest_path, dst_delim, &mut existing).await;
        if let Err(e) = &outcome
            && e.kind == ErrorKind::FolderRefused
            && let Some(sub) = opts.rules.substitute(&plan.dest_path)
        {
            // The destination refuses the name (a '.' on Maildir++): a substitute it
            // accepts, remembered by the folder's checkpoint for later passes.
            let retry = ensure_folder(dst, &sub, dst_delim, &mut existing).await;
            if retry.is_ok() {
                mapping.rename(&plan.source_raw, sub, dst_delim);
                if let Some(p) = mapping
                    .folders
                    .iter()
                    .find(|p| p.source_raw == plan.source_raw)
                {
                    plan = p.clone();
                }
            }
            outcome = retry;
        }
        match outcome {
            Ok(created) => {
                if created {
                    created_n += 1;
                    progress.preparing(created_n as u64, to_create as u64);
                    // Remember that this folder is ours (and may be removed with its source).
                    let mut st = store
                        .folder(migration_id, &plan.source_raw, &plan.dest_raw)
                        .await?;
                    if st.pending.is_none() && !st.dest_created {
                        st.dest_created = true;
                        store.apply_changes(&st, &[], &[]).await?;
                    }
                }
                ready.push(plan.clone());
            }
            Err(e) => failed.push(FolderReport::failed(
                &plan.source_display,
                &plan.dest_display,
                &e.kind,
                format!(
                    "cannot create destination folder '{}': {}; create it by hand or map it elsewhere with --map",
                    plan.dest_display, e.message
                ),
            )),
        }
    }

    // Moves between folders and folders gone from the source, before the folder passes.
    let listed: HashSet<String> = src_folders.iter().map(|f| f.raw.clone()).collect();
    let changes = if opts.dual_reception {
        reconcile::MailboxChanges::default()
    } else {
        reconcile::mailbox(src, dst, store, migration_id, &ready, &listed, opts.delete).await?
    };
    for n in &changes.notes {
        tracing::info!(note = %n, "reconciliation");
    }
    let mut notes = mapping.notes.clone();
    notes.extend(changes.notes);
    let job = |plan: &FolderPlan, range: Option<(u32, u32)>| FolderJob {
        id: Uuid::new_v4(),
        migration_id,
        source_folder: plan.source_raw.clone(),
        dest_folder: plan.dest_raw.clone(),
        source_display: match range {
            Some((lo, hi)) => format!("{} [UIDs {lo}-{hi}]", plan.source_display),
            None => plan.source_display.clone(),
        },
        dest_display: plan.dest_display.clone(),
        attempt: 1,
        delete: opts.delete && !opts.dual_reception,
        adopt_existing: opts.adopt_existing,
        uid_range: range,
        dual_reception: opts.dual_reception,
        first_failed_at: None,
        label_folders: plan.label_folders.clone(),
    };
    let states = if opts.split_above.is_some() || opts.skip_unchanged {
        store.folders(migration_id).await?
    } else {
        Vec::new()
    };
    let mut jobs = Vec::new();
    let mut source_messages = 0u64;
    let mut unchanged = 0usize;
    for plan in &ready {
        if opts.skip_unchanged || opts.count_messages {
            let status = src.status(&plan.source_raw).await?;
            source_messages += u64::from(status.exists);
            if opts.skip_unchanged
                && !changes.moved_in.contains_key(&plan.source_raw)
                && folder_unchanged(store, plan, &states, &status).await?
            {
                unchanged += 1;
                continue;
            }
        }
        // A label view is compared with its label folders as a whole: never sliced.
        if let Some(limit) = opts.split_above.filter(|_| plan.label_folders.is_empty()) {
            let slices = split_first_copy(src, store, migration_id, plan, &states, limit).await?;
            if !slices.is_empty() {
                jobs.extend(slices.into_iter().map(|r| job(plan, Some(r))));
                continue;
            }
        }
        jobs.push(job(plan, None));
    }
    if unchanged > 0 {
        tracing::debug!(unchanged, "folders without changes since their last pass");
    }
    Ok(PreparedPass {
        migration_id,
        jobs,
        unchanged,
        source_messages,
        failed,
        excluded: mapping.excluded.clone(),
        notes,
        moved_in: changes.moved_in,
        account_key,
        order: mapping
            .folders
            .iter()
            .map(|p| p.source_display.clone())
            .collect(),
    })
}

/// Whether a folder's last pass left nothing to do and its source has not changed since:
/// same UIDVALIDITY, same HIGHESTMODSEQ, no batch pending, no refused message to retry,
/// no slice of a first copy still running. Without CONDSTORE nothing can be told.
async fn folder_unchanged(
    store: &dyn StateStore,
    plan: &FolderPlan,
    states: &[mailshift_core::ports::FolderState],
    status: &mailshift_core::ports::FolderStatus,
) -> Result<bool> {
    if !plan.label_folders.is_empty() || status.highest_modseq.is_none() {
        return Ok(false);
    }
    let Some(st) = states.iter().find(|s| s.source_folder == plan.source_raw) else {
        return Ok(false);
    };
    let slices_open = states.iter().any(|s| {
        parse_range_key(&s.source_folder).is_some_and(|(f, _, hi)| {
            f == plan.source_raw && (s.highest_uid < hi || s.pending.is_some())
        })
    });
    if slices_open
        || st.pending.is_some()
        || st.dest_folder != plan.dest_raw
        || st.source_uidvalidity != Some(status.uidvalidity)
        || st.highest_modseq != status.highest_modseq
    {
        return Ok(false);
    }
    Ok(store.failed(st.id).await?.is_empty())
}

/// The UID ranges of a big folder's first copy, each registered as its own checkpoint
/// (so the folder's own pass leaves those UIDs to the slices); empty when the folder is
/// not new or not big.
async fn split_first_copy(
    src: &mut dyn MailSource,
    store: &dyn StateStore,
    migration_id: Uuid,
    plan: &FolderPlan,
    states: &[mailshift_core::ports::FolderState],
    limit: usize,
) -> Result<Vec<(u32, u32)>> {
    let sliced_before = states
        .iter()
        .any(|s| parse_range_key(&s.source_folder).is_some_and(|(f, _, _)| f == plan.source_raw));
    let fresh = states
        .iter()
        .find(|s| s.source_folder == plan.source_raw)
        .is_none_or(|s| s.highest_uid == 0 && s.source_uidvalidity.is_none());
    if sliced_before || !fresh {
        return Ok(Vec::new());
    }
    let status = src.examine(&plan.source_raw).await?;
    if (status.exists as usize) <= limit.max(1) {
        return Ok(Vec::new());
    }
    let uids = src.uids().await?;
    let mut ranges = Vec::new();
    for chunk in uids.chunks(limit.max(1)) {
        let (Some(lo), Some(hi)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        store
            .folder(
                migration_id,
                &range_key(&plan.source_raw, *lo, *hi),
                &plan.dest_raw,
            )
            .await?;
        ranges.push((*lo, *hi));
    }
    Ok(ranges)
}

/// Creates a destination folder and its missing ancestors; says whether it created the
/// folder itself.
async fn ensure_folder(
    dst: &mut dyn MailTarget,
    path: &FolderPath,
    delim: Option<char>,
    existing: &mut HashSet<String>,
) -> std::result::Result<bool, Error> {
    let mut chain = path.ancestors();
    chain.push(path.clone());
    let mut created = false;
    for p in chain {
        let raw = p.to_server(delim);
        if existing.contains(&raw) || p.is_inbox() {
            created = false;
            continue;
        }
        dst.create_folder(&raw).await?;
        existing.insert(raw);
        created = true;
    }
    Ok(created)
}
