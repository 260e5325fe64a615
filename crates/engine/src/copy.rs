//! One folder pass: bring the destination folder up to date with the source folder.
//!
//! Fetching batch N+1 from the source overlaps with appending batch N to the destination
//! (two connections), so the slower side sets the pace. Each batch is announced in the
//! store (`pending`) before its APPEND and committed after it; a pass that dies in between
//! finds the appended messages again by content fingerprint on the next run.

use crate::reconcile;
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::FlagSet;
use mailshift_core::flags::PermanentFlags;
use mailshift_core::job::{FolderJob, parse_range_key};
use mailshift_core::plan::{self, BatchLimits, MessageMeta};
use mailshift_core::ports::{
    AppendItem, Appended, CopiedMessage, FailedMessage, FetchedMessage, FolderState,
    FolderStatus as MailboxStatus, MailSource, MailTarget, PendingBatch, PendingItem, Progress,
    StateStore,
};
use mailshift_core::report::{FolderError, FolderReport, FolderStatus, MessageFailure};
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Where one pass runs.
pub struct FolderPass<'a> {
    pub job: &'a FolderJob,
    pub source: &'a mut dyn MailSource,
    pub target: &'a mut dyn MailTarget,
    pub store: &'a dyn StateStore,
    pub progress: &'a dyn Progress,
    pub limits: BatchLimits,
    /// Set when the process is shutting down: the pass stops after the batch in flight
    /// is checkpointed.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
    /// Fleet: proof that this worker still holds the folder's lease, checked before
    /// every APPEND, so a worker whose lease expired (a long stall) never appends beside
    /// the worker that took the folder over.
    pub fence: Option<&'a dyn Fence>,
}

/// Checks (and extends) the lease a pass runs under.
#[async_trait::async_trait]
pub trait Fence: Send + Sync {
    async fn still_held(&self) -> Result<bool>;
}

/// Runs the pass; never fails as a whole: problems end up in the report.
pub async fn copy_folder(pass: FolderPass<'_>) -> (FolderReport, Option<Error>) {
    let FolderPass {
        job,
        source,
        target,
        store,
        progress,
        limits,
        stop,
        fence,
    } = pass;
    let mut report = FolderReport::new(&job.source_display, &job.dest_display);
    let result = run(
        FolderPass {
            job,
            source: &mut *source,
            target: &mut *target,
            store,
            progress,
            limits,
            stop,
            fence,
        },
        &mut report,
    )
    .await;
    let err = match result {
        Ok(()) => {
            report.status = if report.failures.is_empty() {
                FolderStatus::Complete
            } else {
                FolderStatus::Partial
            };
            if job.uid_range.is_none() {
                // What the destination itself says it holds, not what the state believes.
                report.dest_messages = target
                    .status(&job.dest_folder)
                    .await
                    .ok()
                    .map(|s| u64::from(s.exists));
            }
            None
        }
        Err(e) => {
            report.status = FolderStatus::Failed;
            report.error = Some(FolderError::new(&e.kind, e.message.clone()));
            Some(e)
        }
    };
    (report, err)
}

async fn run(pass: FolderPass<'_>, report: &mut FolderReport) -> Result<()> {
    let FolderPass {
        job,
        source,
        target,
        store,
        progress,
        limits,
        stop,
        fence,
    } = pass;
    let src_name = &job.source_display;
    let dst_name = &job.dest_display;
    // Gmail's All Mail: wait until its label folders are copied, then know their
    // messages, so only archived mail (in no label folder) is copied from it.
    let mut label_known = if job.label_folders.is_empty() {
        None
    } else {
        Some(label_fingerprints(job, source, store).await?)
    };
    let mut labelled_skipped = 0u64;
    let sstat = source
        .examine(&job.source_folder)
        .await
        .map_err(|e| e.context(format!("source folder '{src_name}'")))?;
    let mut state = store
        .folder(job.migration_id, &job.state_key(), &job.dest_folder)
        .await?;
    let loaded = state.clone();
    // A UID-range slice copies its range only; a whole-folder pass first folds finished
    // slices into its own checkpoint and leaves the UIDs of unfinished ones alone.
    let range = job.uid_range;
    let reserved: Vec<(u32, u32)> = match range {
        Some(_) => Vec::new(),
        None => merge_ranges(store, job, &state).await?,
    };
    let in_scope = |u: u32| match range {
        Some((lo, hi)) => u >= lo && u <= hi,
        None => !reserved.iter().any(|(lo, hi)| u >= *lo && u <= *hi),
    };
    let dstat = target
        .select(&job.dest_folder)
        .await
        .map_err(|e| e.context(format!("destination folder '{dst_name}'")))?;
    report.source_messages = u64::from(sstat.exists);

    if let Some(pending) = state.pending.clone() {
        let recovered = recover_pending(&pending, target, store, &state, dstat.uidvalidity)
            .await
            .map_err(|e| e.context(format!("destination folder '{dst_name}'")))?;
        if !recovered.is_empty() {
            report.notes.push(format!(
                "found {} message(s) appended before an interruption; not appended again",
                recovered.len()
            ));
        }
        state.pending = None;
    }

    let mut known: HashMap<u32, CopiedMessage> = store
        .copied(state.id)
        .await?
        .into_iter()
        .map(|c| (c.source_uid, c))
        .collect();
    if range.is_some()
        && (state
            .source_uidvalidity
            .is_some_and(|v| v != sstat.uidvalidity)
            || state
                .dest_uidvalidity
                .is_some_and(|v| v != dstat.uidvalidity))
    {
        return Err(Error::new(
            ErrorKind::UidValidityChanged,
            format!(
                "folder '{src_name}' was recreated while a slice of its first copy was \
                 running; the slice stops here and the folder's next pass reconciles it"
            ),
        ));
    }
    if let Some(old) = state.source_uidvalidity
        && old != sstat.uidvalidity
    {
        let note = reconcile::source_recreated(
            source, target, store, &mut state, &mut known, old, &sstat, job.delete,
        )
        .await
        .map_err(|e| e.context(format!("source folder '{src_name}' (recreated)")))?;
        report.notes.push(note);
    }
    if let Some(old) = state.dest_uidvalidity
        && old != dstat.uidvalidity
    {
        let note = reconcile::dest_recreated(target, store, &mut state, &mut known, old, &dstat)
            .await
            .map_err(|e| e.context(format!("destination folder '{dst_name}' (recreated)")))?;
        report.notes.push(note);
    }
    state.source_uidvalidity = Some(sstat.uidvalidity);
    state.dest_uidvalidity = Some(dstat.uidvalidity);

    // What happened to messages copied earlier: flag changes and expunges.
    let failed_before = store.failed(state.id).await?;
    let full_listing = if range.is_some()
        || job.dual_reception
        || (known.is_empty() && failed_before.is_empty())
    {
        None
    } else {
        sync_existing(
            source,
            target,
            store,
            &mut state,
            &mut known,
            &failed_before,
            &sstat,
            &dstat,
            job.delete,
            report,
        )
        .await
        .map_err(|e| e.context(format!("folder '{src_name}'")))?
    };
    if range.is_none() {
        state.highest_modseq = sstat.highest_modseq;
    }
    let mut copied: HashSet<u32> = known.keys().copied().collect();
    let failures = store.failed(state.id).await?;
    // Failed messages are tried again, except those the source lied about (see
    // `oversized_literal`): left alone, like copied ones.
    copied.extend(
        failures
            .iter()
            .filter(|f| f.kind == OVERSIZED_LITERAL)
            .map(|f| f.source_uid),
    );
    let failed: HashSet<u32> = failures
        .iter()
        .filter(|f| f.kind != OVERSIZED_LITERAL)
        .map(|f| f.source_uid)
        .collect();
    // Still not on the destination: said in every pass's report, not only the first.
    report.failures.extend(
        failures
            .iter()
            .filter(|f| f.kind == OVERSIZED_LITERAL)
            .map(|f| MessageFailure {
                uid: f.source_uid,
                size: f.size,
                kind: f.kind.clone(),
                reason: f.reason.clone(),
                date: None,
                from: None,
                subject: None,
            }),
    );

    // All Mail re-examines every message it has not copied: one whose labels were all
    // removed since (archived) must now be copied.
    let floor = if label_known.is_some() {
        0
    } else {
        state.highest_uid
    };
    let from = failed
        .iter()
        .copied()
        .min()
        .unwrap_or(u32::MAX)
        .min(floor.saturating_add(1));
    // New messages are listed in windows of UIDs, so memory stays bounded however big
    // the folder is (a full listing, when sync_existing needed one, is reused).
    let mut windows: Vec<Vec<u32>> = match &full_listing {
        Some(_) => vec![Vec::new()],
        None => {
            let uids: Vec<u32> = source
                .uids()
                .await
                .map_err(|e| e.context(format!("source folder '{src_name}'")))?
                .into_iter()
                .filter(|u| *u >= from && (*u > floor || failed.contains(u)))
                .filter(|u| !copied.contains(u) && in_scope(*u))
                .collect();
            uids.chunks(limits.list_window.max(1))
                .map(<[u32]>::to_vec)
                .collect()
        }
    };
    let mut pending_total: u64 = match &full_listing {
        Some(all) => plan::pending_messages(all, floor, &copied, &failed)
            .iter()
            .filter(|m| in_scope(m.uid))
            .count() as u64,
        None => windows.iter().map(|w| w.len() as u64).sum(),
    };
    if pending_total > 0 {
        // Destination-side idempotence: what is already there is recorded, not copied.
        let known_list: Vec<&CopiedMessage> = known.values().collect();
        if let Some(index) =
            crate::adopt::index_destination(target, store, job, &state, &known_list, &dstat)
                .await
                .map_err(|e| e.context(format!("destination folder '{dst_name}'")))?
        {
            let pending: Vec<(u32, u32)> = match &full_listing {
                Some(all) => plan::pending_messages(all, floor, &copied, &failed)
                    .into_iter()
                    .filter(|m| m.uid >= from && in_scope(m.uid))
                    .map(|m| (m.uid, m.size))
                    .collect(),
                None => {
                    let mut v = Vec::new();
                    for w in &windows {
                        v.extend(
                            source
                                .list_messages_of(w)
                                .await
                                .map_err(|e| e.context(format!("source folder '{src_name}'")))?
                                .iter()
                                .map(|m| (m.uid, m.size)),
                        );
                    }
                    v
                }
            };
            let adopted = crate::adopt::match_pending(
                source,
                target,
                index,
                &pending,
                &dstat.permanent_flags,
            )
            .await
            .map_err(|e| e.context(format!("folder '{src_name}' (recognising copied mail)")))?;
            if !adopted.messages.is_empty() {
                for chunk in adopted.messages.chunks(500) {
                    store.commit_batch(&state, chunk, &[]).await?;
                }
                let n = adopted.messages.len() as u64;
                report.adopted += n;
                report.flags_updated += adopted.reflagged;
                report.notes.push(format!(
                    "{n} message(s) were already on the destination (same content) and were \
                     adopted, not appended again"
                ));
                copied.extend(adopted.messages.iter().map(|c| c.source_uid));
                for w in windows.iter_mut() {
                    w.retain(|u| !copied.contains(u));
                }
                windows.retain(|w| !w.is_empty());
                if windows.is_empty() && full_listing.is_none() {
                    windows.push(Vec::new());
                }
                pending_total = pending_total.saturating_sub(n);
            }
        }
    }
    report.already_done = u64::from(sstat.exists).saturating_sub(pending_total);
    progress.folder_started(src_name, pending_total, 0);
    progress.already_there(src_name, report.already_done);
    if pending_total == 0 {
        let max = match &full_listing {
            Some(all) => all.last().map(|m| m.uid),
            None => source
                .uids()
                .await
                .map_err(|e| e.context(format!("source folder '{src_name}'")))?
                .last()
                .copied(),
        };
        if let Some(max) = max {
            state.highest_uid = state.highest_uid.max(max);
        }
        if let Some((_, hi)) = range {
            // The slice is complete: its whole range is accounted for.
            state.highest_uid = hi;
        }
        // Nothing copied and nothing changed: no checkpoint to write.
        if state != loaded {
            store.commit_batch(&state, &[], &[]).await?;
        }
        return Ok(());
    }

    let mut appender = Appender {
        target,
        folder: &job.dest_folder,
        display: dst_name,
        permanent: dstat.permanent_flags.clone(),
        next_uid: dstat.uidnext.unwrap_or(1),
        uidvalidity: dstat.uidvalidity,
        notes: Vec::new(),
        progress,
        source_display: src_name,
    };
    let mut full_listing = full_listing;
    for window in windows {
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) && report.copied > 0 {
            return Err(Error::new(
                ErrorKind::Interrupted,
                format!(
                    "stopped after a checkpoint at UID {} (shutting down); the job goes back \
                     to the queue",
                    state.highest_uid
                ),
            ));
        }
        let listing = match full_listing.take() {
            Some(all) => all
                .into_iter()
                .filter(|m| m.uid >= from && in_scope(m.uid))
                .collect(),
            None => source
                .list_messages_of(&window)
                .await
                .map_err(|e| e.context(format!("source folder '{src_name}'")))?,
        };
        let mut todo = plan::pending_messages(&listing, floor, &copied, &failed);
        if let Some(known) = label_known.as_mut() {
            let before = todo.len();
            todo = skip_labelled(source, todo, known)
                .await
                .map_err(|e| e.context(format!("source folder '{src_name}'")))?;
            labelled_skipped += (before - todo.len()) as u64;
        }
        if todo.is_empty() {
            continue;
        }
        let stopped = copy_window(
            &todo,
            source,
            &mut appender,
            store,
            &mut state,
            progress,
            limits,
            stop,
            fence,
            report,
            src_name,
        )
        .await?;
        if stopped {
            return Err(Error::new(
                ErrorKind::Interrupted,
                format!(
                    "stopped after a checkpoint at UID {} (shutting down); the job goes back \
                     to the queue",
                    state.highest_uid
                ),
            ));
        }
    }
    if let Some((_, hi)) = range {
        // The slice is complete: its whole range is accounted for (expunged UIDs too).
        state.highest_uid = hi;
        store.commit_batch(&state, &[], &[]).await?;
    }
    report.notes.append(&mut appender.notes);
    if labelled_skipped > 0 {
        report.already_done += labelled_skipped;
        report.notes.push(format!(
            "{labelled_skipped} message(s) of this label view are in label folders and were \
             copied from there, not again"
        ));
    }
    Ok(())
}

/// The messages (header fingerprints, with multiplicity) copied from a label view's
/// label folders; `Deferred` while one of them has not caught up with its source yet.
async fn label_fingerprints(
    job: &FolderJob,
    source: &mut dyn MailSource,
    store: &dyn StateStore,
) -> Result<HashMap<(Fingerprint, u32), usize>> {
    let states = store.folders(job.migration_id).await?;
    let mut known: HashMap<(Fingerprint, u32), usize> = HashMap::new();
    for peer in &job.label_folders {
        let status = match source.examine(peer).await {
            Ok(s) => s,
            Err(e) if e.kind == ErrorKind::Network || e.kind.is_retryable() => return Err(e),
            // Gone since the pass was planned: nothing of it to compare with.
            Err(_) => continue,
        };
        let st = states.iter().find(|s| &s.source_folder == peer);
        let caught_up = status.exists == 0
            || st.is_some_and(|st| {
                st.pending.is_none()
                    && st.source_uidvalidity == Some(status.uidvalidity)
                    && status
                        .uidnext
                        .is_none_or(|n| st.highest_uid.saturating_add(1) >= n)
            });
        if !caught_up {
            return Err(Error::new(
                ErrorKind::Deferred(Duration::from_secs(2)),
                format!(
                    "'{}' waits for its label folder '{peer}' to be copied first",
                    job.source_display
                ),
            ));
        }
        if let Some(st) = st {
            for c in store.copied(st.id).await? {
                if let Some(h) = c.header_fingerprint {
                    *known.entry((h, c.size)).or_default() += 1;
                }
            }
        }
    }
    Ok(known)
}

/// Drops from `todo` the messages whose size and header match one still unclaimed in
/// `known` (each known message excuses one copy, so real duplicates inside All Mail
/// survive).
async fn skip_labelled<'a>(
    source: &mut dyn MailSource,
    todo: Vec<&'a MessageMeta>,
    known: &mut HashMap<(Fingerprint, u32), usize>,
) -> Result<Vec<&'a MessageMeta>> {
    let mut keep = Vec::with_capacity(todo.len());
    for chunk in todo.chunks(500) {
        let uids: Vec<u32> = chunk.iter().map(|m| m.uid).collect();
        let headers: HashMap<u32, Fingerprint> = source
            .fetch_headers(&uids)
            .await?
            .into_iter()
            .map(|h| (h.uid, Fingerprint::of_header(&h.header)))
            .collect();
        for m in chunk {
            let labelled = headers
                .get(&m.uid)
                .and_then(|h| known.get_mut(&(*h, m.size)))
                .filter(|n| **n > 0);
            match labelled {
                Some(n) => *n -= 1,
                None => keep.push(*m),
            }
        }
    }
    Ok(keep)
}

/// Copies one window of messages in pipelined batches (fetch N+1 while appending N),
/// checkpointing each batch. Returns true if it stopped early on a shutdown request.
#[allow(clippy::too_many_arguments)]
async fn copy_window(
    todo: &[&MessageMeta],
    source: &mut dyn MailSource,
    appender: &mut Appender<'_>,
    store: &dyn StateStore,
    state: &mut FolderState,
    progress: &dyn Progress,
    limits: BatchLimits,
    stop: Option<&std::sync::atomic::AtomicBool>,
    fence: Option<&dyn Fence>,
    report: &mut FolderReport,
    src_name: &str,
) -> Result<bool> {
    // Bigger than mailshift accepts: reported (and retried by a later run with a higher
    // --max-message-size), never fetched.
    let (todo, too_big): (Vec<&MessageMeta>, Vec<&MessageMeta>) = todo
        .iter()
        .partition(|m| u64::from(m.size) <= limits.max_message_bytes);
    if !too_big.is_empty() {
        let bad: Vec<MessageFailure> = too_big
            .iter()
            .map(|m| MessageFailure {
                uid: m.uid,
                size: m.size,
                kind: ErrorKind::TooLarge.as_str().to_string(),
                reason: format!(
                    "the source says this message is {} bytes, more than the {} bytes \
                     mailshift accepts (--max-message-size)",
                    m.size, limits.max_message_bytes
                ),
                date: Some(m.internal_date.clone()),
                from: None,
                subject: None,
            })
            .collect();
        let failed: Vec<FailedMessage> = bad.iter().map(to_failed).collect();
        store.commit_batch(state, &[], &failed).await?;
        progress.copied(src_name, bad.len() as u64, 0);
        report.failures.extend(bad);
    }
    if todo.is_empty() {
        return Ok(false);
    }
    let batches = plan::batches(&todo, limits);
    let mut next = Some(fetch(source, &batches[0]).await);
    for i in 0..batches.len() {
        let fetched = match next.take() {
            Some(Ok(f)) => f,
            Some(Err(e)) if e.kind == ErrorKind::TooLarge => {
                let batch = &batches[i];
                return Err(
                    oversized_literal(e, batch, store, state, report, progress, src_name).await,
                );
            }
            Some(Err(e)) => return Err(e.context(format!("source folder '{src_name}'"))),
            None => Vec::new(),
        };
        let batch_max_uid = batches[i].last().map(|m| m.uid).unwrap_or(0);
        if let Some(f) = fence
            && !f.still_held().await?
        {
            return Err(Error::new(
                ErrorKind::Interrupted,
                format!(
                    "folder '{src_name}': the lease passed to another worker (this one \
                     stalled); stopping before the next APPEND"
                ),
            ));
        }
        // One span per batch (its APPEND, and the next batch's FETCH beside it).
        let batch_span = tracing::info_span!(
            "batch",
            messages = fetched.len(),
            bytes = fetched.iter().map(|m| m.raw.len()).sum::<usize>(),
        );
        let (prefetched, outcome) = {
            use tracing::Instrument;
            async {
                if i + 1 < batches.len() {
                    let (p, o) = tokio::join!(
                        fetch(&mut *source, &batches[i + 1]),
                        appender.append_batch(fetched, store, state)
                    );
                    (Some(p), o)
                } else {
                    (None, appender.append_batch(fetched, store, state).await)
                }
            }
            .instrument(batch_span)
            .await
        };
        next = prefetched;
        let (ok, bad, bytes) = outcome?;
        state.highest_uid = state.highest_uid.max(batch_max_uid);
        let failed: Vec<FailedMessage> = bad.iter().map(to_failed).collect();
        store.commit_batch(state, &ok, &failed).await?;
        crate::metrics::copied(ok.len() as u64, bytes);
        tracing::debug!(
            messages = ok.len(),
            refused = bad.len(),
            bytes,
            "batch checkpointed"
        );
        report.copied += ok.len() as u64;
        report.copied_bytes += bytes;
        progress.copied(src_name, (ok.len() + bad.len()) as u64, bytes);
        for f in bad {
            report.failures.push(f);
        }
        if i + 1 < batches.len()
            && stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        {
            // The prefetched batch is simply dropped: nothing of it reached the
            // destination, and the checkpoint is exact.
            return Ok(true);
        }
    }
    Ok(false)
}

/// Folds the finished UID-range slices of this folder's first copy into its checkpoint
/// and returns the ranges still being copied (their UIDs are not this pass's to copy).
async fn merge_ranges(
    store: &dyn StateStore,
    job: &FolderJob,
    state: &FolderState,
) -> Result<Vec<(u32, u32)>> {
    let mut reserved = Vec::new();
    for slice in store.folders(job.migration_id).await? {
        let Some((folder, lo, hi)) = parse_range_key(&slice.source_folder) else {
            continue;
        };
        if folder != job.source_folder {
            continue;
        }
        if slice.highest_uid >= hi && slice.pending.is_none() {
            store.merge_folder(state.id, slice.id).await?;
        } else {
            reserved.push((lo, hi));
        }
    }
    Ok(reserved)
}

/// Brings earlier-copied messages in line with the source: flag changes (CONDSTORE
/// CHANGEDSINCE where possible, else a full UID/FLAGS listing) and expunges. Returns the
/// full listing when it had to fetch one, so the caller need not list again.
#[allow(clippy::too_many_arguments)]
async fn sync_existing(
    source: &mut dyn MailSource,
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    state: &mut FolderState,
    known: &mut HashMap<u32, CopiedMessage>,
    failed: &[FailedMessage],
    sstat: &MailboxStatus,
    dstat: &MailboxStatus,
    delete: bool,
    report: &mut FolderReport,
) -> Result<Option<Vec<MessageMeta>>> {
    let condstore = source.capabilities().condstore;
    let (present, changed, full) = match (condstore, state.highest_modseq, sstat.highest_modseq) {
        // Nothing at all changed in the folder (new mail, flags and expunges all raise
        // HIGHESTMODSEQ): no listing needed.
        (true, Some(old), Some(now)) if old == now => return Ok(None),
        (true, Some(old), Some(_)) => {
            let changed = source.changed_since(old).await?;
            let present: HashSet<u32> = source.uids().await?.into_iter().collect();
            (present, changed, None)
        }
        _ => {
            let all = source.list_messages(1).await?;
            let present = all.iter().map(|m| m.uid).collect();
            let changed = all.iter().map(|m| (m.uid, m.flags.clone())).collect();
            (present, changed, Some(all))
        }
    };

    // Flags: group destination UIDs by their new flag set, one UID STORE per group.
    let mut groups: BTreeMap<String, (FlagSet, Vec<u32>)> = BTreeMap::new();
    let mut updates: Vec<(u32, FlagSet)> = Vec::new();
    let mut unknown_dest = 0usize;
    for (uid, flags) in changed {
        let Some(k) = known.get_mut(&uid) else {
            continue;
        };
        let mut flags = flags;
        flags.restrict_to(&dstat.permanent_flags);
        if flags == k.flags {
            continue;
        }
        match k.dest_uid {
            Some(d) => {
                groups
                    .entry(flags.to_storage())
                    .or_insert_with(|| (flags.clone(), Vec::new()))
                    .1
                    .push(d);
                updates.push((uid, flags.clone()));
                k.flags = flags;
            }
            None => unknown_dest += 1,
        }
    }
    for (flags, uids) in groups.values() {
        target.set_flags(uids, flags).await?;
        report.flags_updated += uids.len() as u64;
    }
    if unknown_dest > 0 {
        report.notes.push(format!(
            "{unknown_dest} message(s) changed flags on the source but their destination UID is \
             unknown (no UIDPLUS); flags left as they were"
        ));
    }

    // Expunges.
    let mut vanished: Vec<u32> = known
        .keys()
        .copied()
        .filter(|u| !present.contains(u))
        .collect();
    vanished.sort_unstable();
    let mut forget: Vec<u32> = failed
        .iter()
        .map(|f| f.source_uid)
        .filter(|u| !present.contains(u))
        .collect();
    if !vanished.is_empty() {
        if !delete {
            report.notes.push(format!(
                "{} message(s) expunged on the source are kept on the destination (deletions are off)",
                vanished.len()
            ));
        } else {
            let dest: Vec<u32> = vanished
                .iter()
                .filter_map(|u| known.get(u).and_then(|k| k.dest_uid))
                .collect();
            let uidplus = target.capabilities().uidplus;
            for chunk in dest.chunks(1000) {
                if uidplus {
                    target.expunge(chunk).await?;
                } else {
                    // Before the switch nobody else uses the destination, so the other
                    // \Deleted messages can step aside for the EXPUNGE.
                    target.expunge_restoring(chunk).await?;
                }
            }
            report.deleted += dest.len() as u64;
            for u in &vanished {
                known.remove(u);
            }
            forget.extend(vanished);
        }
    }
    if !updates.is_empty() || !forget.is_empty() {
        store.apply_changes(state, &updates, &forget).await?;
    }
    Ok(full)
}

/// The failure kind of a message whose source announced far more bytes than it listed
/// for it. Such a message is not fetched again by later passes (a server that lied
/// about it once, or a hostile one); it stays reported.
pub const OVERSIZED_LITERAL: &str = "oversized-literal";

/// The source announced a literal far beyond the listed size of the messages of `batch`:
/// the IMAP layer refused it before allocating it, and the connection is unusable. Alone
/// in its batch, the message is recorded as failed, and the returned error (a dropped
/// connection, with progress made) makes the worker go on at once over a new connection,
/// without it. In a bigger batch, the error makes the retry use smaller batches (see
/// `BatchLimits::for_attempt`) until it is alone.
async fn oversized_literal(
    e: Error,
    batch: &[&MessageMeta],
    store: &dyn StateStore,
    state: &FolderState,
    report: &mut FolderReport,
    progress: &dyn Progress,
    src_name: &str,
) -> Error {
    let [m] = batch else {
        let (lo, hi) = (
            batch.first().map(|m| m.uid).unwrap_or(0),
            batch.last().map(|m| m.uid).unwrap_or(0),
        );
        return Error::new(
            ErrorKind::Network,
            format!(
                "source folder '{src_name}': {} (in a batch of {} messages, UIDs {lo}-{hi}); \
                 the connection is dropped and the batch retried in smaller ones to find \
                 the message",
                e.message,
                batch.len()
            ),
        );
    };
    let failure = MessageFailure {
        uid: m.uid,
        size: m.size,
        kind: OVERSIZED_LITERAL.to_string(),
        reason: format!(
            "the source listed this message as {} bytes but announced more when sending it \
             ({}); refused without reading it, and not fetched again",
            m.size, e.message
        ),
        date: Some(m.internal_date.clone()),
        from: None,
        subject: None,
    };
    if let Err(err) = store.commit_batch(state, &[], &[to_failed(&failure)]).await {
        return err;
    }
    progress.copied(src_name, 1, 0);
    report.failures.push(failure);
    Error::new(
        ErrorKind::Network,
        format!(
            "source folder '{src_name}': message UID {} refused (an oversized literal); \
             the connection is dropped and the folder goes on over a new one",
            m.uid
        ),
    )
}

async fn fetch(src: &mut dyn MailSource, batch: &[&MessageMeta]) -> Result<Vec<FetchedMessage>> {
    let uids: Vec<u32> = batch.iter().map(|m| m.uid).collect();
    let largest = batch.iter().map(|m| u64::from(m.size)).max().unwrap_or(0);
    src.fetch_messages(&uids, largest).await
}

/// Finds on the destination the messages of a batch whose outcome was never recorded.
async fn recover_pending(
    pending: &PendingBatch,
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    state: &FolderState,
    dest_uidvalidity: u32,
) -> Result<Vec<u32>> {
    let mut found = Vec::new();
    let mut copied = Vec::new();
    if pending.dest_uidvalidity == dest_uidvalidity {
        let located = target.locate_since(pending.dest_uidnext).await?;
        let mut by_fp: HashMap<Fingerprint, Vec<u32>> = HashMap::new();
        for m in located.iter().rev() {
            by_fp.entry(m.fingerprint).or_default().push(m.uid);
        }
        for item in &pending.items {
            let Some(fp) = Fingerprint::from_hex(&item.fingerprint) else {
                continue;
            };
            // Each destination message answers for one source message only.
            if let Some(uid) = by_fp.get_mut(&fp).and_then(Vec::pop) {
                found.push(item.source_uid);
                copied.push(CopiedMessage {
                    source_uid: item.source_uid,
                    dest_uid: Some(uid),
                    flags: mailshift_core::flags::FlagSet::from_storage(&item.flags),
                    size: item.size,
                    fingerprint: fp,
                    header_fingerprint: item
                        .header_fingerprint
                        .as_deref()
                        .and_then(Fingerprint::from_hex),
                });
            }
        }
    }
    // The checkpoint fields stay as they were: only the message map grows.
    store.commit_batch(state, &copied, &[]).await?;
    Ok(found)
}

/// Appends batches to one destination folder, splitting a refused batch until the
/// refusal is pinned on single messages.
struct Appender<'a> {
    target: &'a mut dyn MailTarget,
    folder: &'a str,
    display: &'a str,
    permanent: PermanentFlags,
    /// Lower bound of the UID the next appended message gets (for crash recovery).
    next_uid: u32,
    uidvalidity: u32,
    notes: Vec<String>,
    /// Told of refused messages (with their bytes, for a quarantine).
    progress: &'a dyn Progress,
    source_display: &'a str,
}

type BatchOutcome = (Vec<CopiedMessage>, Vec<MessageFailure>, u64);

impl Appender<'_> {
    async fn append_batch(
        &mut self,
        mut msgs: Vec<FetchedMessage>,
        store: &dyn StateStore,
        state: &FolderState,
    ) -> Result<BatchOutcome> {
        if msgs.is_empty() {
            return Ok((Vec::new(), Vec::new(), 0));
        }
        let fps: Vec<Fingerprint> = msgs.iter().map(|m| Fingerprint::of(&m.raw)).collect();
        let hfps: Vec<Fingerprint> = msgs
            .iter()
            .map(|m| Fingerprint::of_header(&m.raw))
            .collect();
        for m in msgs.iter_mut() {
            let dropped = m.flags.restrict_to(&self.permanent);
            if !dropped.is_empty() {
                self.notes.push(format!(
                    "destination folder '{}' cannot store keyword(s) {} (message UID {})",
                    self.display,
                    dropped.join(" "),
                    m.uid
                ));
            }
        }
        let pending = PendingBatch {
            dest_uidvalidity: self.uidvalidity,
            dest_uidnext: self.next_uid,
            items: msgs
                .iter()
                .zip(fps.iter().zip(&hfps))
                .map(|(m, (fp, hfp))| PendingItem {
                    source_uid: m.uid,
                    size: m.raw.len() as u32,
                    fingerprint: fp.to_hex(),
                    flags: m.flags.to_storage(),
                    header_fingerprint: Some(hfp.to_hex()),
                })
                .collect(),
        };
        store.set_pending(state.id, Some(&pending)).await?;

        let mut results: Vec<Option<std::result::Result<Option<u32>, Error>>> =
            vec![None; msgs.len()];
        let limit = self.target.capabilities().append_limit;
        let mut sendable = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            match limit {
                Some(l) if m.raw.len() as u64 > l => {
                    results[i] = Some(Err(Error::new(
                        ErrorKind::TooLarge,
                        format!(
                            "message is larger than the destination's APPENDLIMIT of {l} bytes"
                        ),
                    )));
                }
                _ => sendable.push(i),
            }
        }
        self.append_split(&msgs, &sendable, &mut results).await?;
        crate::fault::point("after-append");

        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let mut bytes = 0u64;
        for (((m, fp), hfp), r) in msgs.iter().zip(&fps).zip(&hfps).zip(results) {
            match r {
                Some(Ok(dest_uid)) => {
                    bytes += m.raw.len() as u64;
                    ok.push(CopiedMessage {
                        source_uid: m.uid,
                        dest_uid,
                        flags: m.flags.clone(),
                        size: m.raw.len() as u32,
                        fingerprint: *fp,
                        header_fingerprint: Some(*hfp),
                    });
                }
                Some(Err(e)) => {
                    let f = describe_failure(m, &e);
                    self.progress.rejected(self.source_display, &f, &m.raw);
                    bad.push(f);
                }
                None => {}
            }
        }
        Ok((ok, bad, bytes))
    }

    /// Appends `idx` (indices into `msgs`); on a per-message refusal splits in halves.
    async fn append_split(
        &mut self,
        msgs: &[FetchedMessage],
        idx: &[usize],
        results: &mut [Option<std::result::Result<Option<u32>, Error>>],
    ) -> Result<()> {
        if idx.is_empty() {
            return Ok(());
        }
        let multi = self.target.capabilities().multiappend;
        if !multi && idx.len() > 1 {
            for &i in idx {
                Box::pin(self.append_split(msgs, &[i], results)).await?;
            }
            return Ok(());
        }
        let items: Vec<AppendItem<'_>> = idx
            .iter()
            .map(|&i| AppendItem {
                raw: &msgs[i].raw,
                flags: &msgs[i].flags,
                internal_date: &msgs[i].internal_date,
            })
            .collect();
        match self.target.append(self.folder, &items).await {
            Ok(Appended::Uids { uids, .. }) => {
                if let Some(max) = uids.iter().max() {
                    self.next_uid = self.next_uid.max(max + 1);
                }
                for (&i, uid) in idx.iter().zip(uids) {
                    results[i] = Some(Ok(Some(uid)));
                }
                Ok(())
            }
            Ok(Appended::Unknown) => {
                for &i in idx {
                    results[i] = Some(Ok(None));
                }
                Ok(())
            }
            Err(e) if e.kind.is_per_message() && idx.len() > 1 => {
                let (a, b) = idx.split_at(idx.len() / 2);
                Box::pin(self.append_split(msgs, a, results)).await?;
                Box::pin(self.append_split(msgs, b, results)).await
            }
            Err(e) if e.kind.is_per_message() => {
                results[idx[0]] = Some(Err(e));
                Ok(())
            }
            Err(e) => Err(e.context(format!("destination folder '{}'", self.display))),
        }
    }
}

/// Names a refused message by what a person sees in their mail client.
fn describe_failure(m: &FetchedMessage, e: &Error) -> MessageFailure {
    let parsed = mail_parser::MessageParser::default().parse_headers(&m.raw);
    let (date, from, subject) = match &parsed {
        Some(p) => (
            p.date().map(|d| d.to_rfc3339()),
            p.from().and_then(|a| a.first()).and_then(|a| {
                a.address()
                    .map(str::to_string)
                    .or_else(|| a.name().map(str::to_string))
            }),
            p.subject().map(str::to_string),
        ),
        None => (None, None, None),
    };
    MessageFailure {
        uid: m.uid,
        size: m.raw.len() as u32,
        kind: e.kind.as_str().to_string(),
        reason: e.message.clone(),
        date,
        from,
        subject,
    }
}

fn to_failed(f: &MessageFailure) -> FailedMessage {
    FailedMessage {
        source_uid: f.uid,
        size: f.size,
        kind: f.kind.clone(),
        reason: f.reason.clone(),
    }
}
