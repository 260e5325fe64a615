//! Preparing one incremental pass of a mailbox: list both servers' folders, map them,
//! create what is missing on the destination, reconcile moves and vanished folders, and
//! produce one [`FolderJob`] per folder. Embedded mode puts the jobs on an in-process
//! queue; the fleet's scheduler publishes them to RabbitMQ. Same code, same decisions.

use crate::reconcile;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::{FolderPath, FolderPlan, FolderRules, map_folders};
use mailshift_core::job::{FolderJob, parse_range_key, range_key};
use mailshift_core::ports::{MailSource, MailTarget, StateStore};
use mailshift_core::report::FolderReport;
use mailshift_core::{Error, Result};
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
}

/// A planned pass.
#[derive(Debug)]
pub struct PreparedPass {
    pub migration_id: Uuid,
    /// One job per folder, INBOX first, then the tree.
    pub jobs: Vec<FolderJob>,
    /// Folders that could not be prepared (e.g. cannot be created on the destination).
    pub failed: Vec<FolderReport>,
    pub excluded: Vec<String>,
    pub notes: Vec<String>,
    /// Messages moved on the destination, by source folder (raw name).
    pub moved_in: HashMap<String, u64>,
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

pub async fn prepare(
    src: &mut dyn MailSource,
    dst: &mut dyn MailTarget,
    store: &dyn StateStore,
    source: &Endpoint,
    dest: &Endpoint,
    opts: &PassOptions,
) -> Result<PreparedPass> {
    let (src_folders, src_delim) = MailSource::list_folders(src).await?;
    let (dst_folders, dst_delim) = MailTarget::list_folders(dst).await?;
    let mapping = map_folders(
        &src_folders,
        src_delim,
        &dst_folders,
        dst_delim,
        &opts.rules,
    )?;
    for n in &mapping.notes {
        tracing::info!(note = %n, "folder mapping");
    }
    let migration_id = store.migration(source, dest).await?;
    let mut existing: HashSet<String> = dst_folders.iter().map(|f| f.raw.clone()).collect();
    existing.insert("INBOX".to_string());
    let mut ready: Vec<FolderPlan> = Vec::new();
    let mut failed = Vec::new();
    for plan in &mapping.folders {
        match ensure_folder(dst, &plan.dest_path, dst_delim, &mut existing).await {
            Ok(created) => {
                if created {
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
        label_folders: plan.label_folders.clone(),
    };
    let states = match opts.split_above {
        Some(_) => store.folders(migration_id).await?,
        None => Vec::new(),
    };
    let mut jobs = Vec::new();
    for plan in &ready {
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
    Ok(PreparedPass {
        migration_id,
        jobs,
        failed,
        excluded: mapping.excluded.clone(),
        notes,
        moved_in: changes.moved_in,
        order: mapping
            .folders
            .iter()
            .map(|p| p.source_display.clone())
            .collect(),
    })
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
