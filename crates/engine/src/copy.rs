//! One folder pass: bring the destination folder up to date with the source folder.
//!
//! Fetching batch N+1 from the source overlaps with appending batch N to the destination
//! (two connections), so the slower side sets the pace. Each batch is announced in the
//! store (`pending`) before its APPEND and committed after it; a pass that dies in between
//! finds the appended messages again by content fingerprint on the next run.

use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::PermanentFlags;
use mailshift_core::job::FolderJob;
use mailshift_core::plan::{self, BatchLimits, MessageMeta};
use mailshift_core::ports::{
    AppendItem, Appended, CopiedMessage, FailedMessage, FetchedMessage, MailSource, MailTarget,
    PendingBatch, PendingItem, Progress, StateStore,
};
use mailshift_core::report::{FolderError, FolderReport, FolderStatus, MessageFailure};
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::{HashMap, HashSet};

/// Where one pass runs.
pub struct FolderPass<'a> {
    pub job: &'a FolderJob,
    pub source: &'a mut dyn MailSource,
    pub target: &'a mut dyn MailTarget,
    pub store: &'a dyn StateStore,
    pub progress: &'a dyn Progress,
    pub limits: BatchLimits,
}

/// Runs the pass; never fails as a whole: problems end up in the report.
pub async fn copy_folder(pass: FolderPass<'_>) -> (FolderReport, Option<Error>) {
    let job = pass.job;
    let progress = pass.progress;
    let mut report = FolderReport::new(&job.source_display, &job.dest_display);
    let result = run(pass, &mut report).await;
    let err = match result {
        Ok(()) => {
            report.status = if report.failures.is_empty() {
                FolderStatus::Complete
            } else {
                FolderStatus::Partial
            };
            None
        }
        Err(e) => {
            report.status = FolderStatus::Failed;
            report.error = Some(FolderError::new(&e.kind, e.message.clone()));
            Some(e)
        }
    };
    progress.folder_finished(&report);
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
    } = pass;
    let src_name = &job.source_display;
    let dst_name = &job.dest_display;
    let sstat = source
        .examine(&job.source_folder)
        .await
        .map_err(|e| e.context(format!("source folder '{src_name}'")))?;
    let mut state = store
        .folder(job.migration_id, &job.source_folder, &job.dest_folder)
        .await?;
    if let Some(old) = state.source_uidvalidity
        && old != sstat.uidvalidity
    {
        return Err(Error::new(
            ErrorKind::UidValidityChanged,
            format!(
                "source folder '{src_name}' was recreated (UIDVALIDITY {old} -> {}); its checkpoint \
                     no longer applies and nothing was copied, to avoid duplicates",
                sstat.uidvalidity
            ),
        ));
    }
    let dstat = target
        .select(&job.dest_folder)
        .await
        .map_err(|e| e.context(format!("destination folder '{dst_name}'")))?;
    if let Some(old) = state.dest_uidvalidity
        && old != dstat.uidvalidity
    {
        return Err(Error::new(
            ErrorKind::UidValidityChanged,
            format!(
                "destination folder '{dst_name}' was recreated (UIDVALIDITY {old} -> {}); its checkpoint \
                     no longer applies and nothing was copied, to avoid duplicates",
                dstat.uidvalidity
            ),
        ));
    }
    state.source_uidvalidity = Some(sstat.uidvalidity);
    state.dest_uidvalidity = Some(dstat.uidvalidity);
    report.source_messages = u64::from(sstat.exists);

    let mut copied: HashSet<u32> = store
        .copied(state.id)
        .await?
        .iter()
        .map(|c| c.source_uid)
        .collect();
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
        copied.extend(recovered);
        state.pending = None;
    }
    let failed: HashSet<u32> = store
        .failed(state.id)
        .await?
        .iter()
        .map(|f| f.source_uid)
        .collect();

    let from = failed
        .iter()
        .copied()
        .min()
        .unwrap_or(u32::MAX)
        .min(state.highest_uid.saturating_add(1));
    let listing = source
        .list_messages(from)
        .await
        .map_err(|e| e.context(format!("source folder '{src_name}'")))?;
    let todo = plan::pending_messages(&listing, state.highest_uid, &copied, &failed);
    report.already_done = u64::from(sstat.exists).saturating_sub(todo.len() as u64);
    let todo_bytes: u64 = todo.iter().map(|m| u64::from(m.size)).sum();
    progress.folder_started(src_name, todo.len() as u64, todo_bytes);
    if todo.is_empty() {
        if let Some(max) = listing.last().map(|m| m.uid) {
            state.highest_uid = state.highest_uid.max(max);
        }
        store.commit_batch(&state, &[], &[]).await?;
        return Ok(());
    }

    let batches = plan::batches(&todo, limits);
    let mut appender = Appender {
        target,
        folder: &job.dest_folder,
        display: dst_name,
        permanent: dstat.permanent_flags.clone(),
        next_uid: dstat.uidnext.unwrap_or(1),
        uidvalidity: dstat.uidvalidity,
        notes: Vec::new(),
    };
    let mut next = Some(fetch(source, &batches[0]).await);
    for i in 0..batches.len() {
        let fetched = match next.take() {
            Some(r) => r.map_err(|e| e.context(format!("source folder '{src_name}'")))?,
            None => Vec::new(),
        };
        let batch_max_uid = batches[i].last().map(|m| m.uid).unwrap_or(0);
        let (prefetched, outcome) = if i + 1 < batches.len() {
            let (p, o) = tokio::join!(
                fetch(&mut *source, &batches[i + 1]),
                appender.append_batch(fetched, store, &state)
            );
            (Some(p), o)
        } else {
            (None, appender.append_batch(fetched, store, &state).await)
        };
        next = prefetched;
        let (ok, bad, bytes) = outcome?;
        state.highest_uid = state.highest_uid.max(batch_max_uid);
        let failed: Vec<FailedMessage> = bad.iter().map(to_failed).collect();
        store.commit_batch(&state, &ok, &failed).await?;
        report.copied += ok.len() as u64;
        report.copied_bytes += bytes;
        progress.copied(src_name, (ok.len() + bad.len()) as u64, bytes);
        for f in bad {
            report.failures.push(f);
        }
    }
    report.notes.append(&mut appender.notes);
    Ok(())
}

async fn fetch(src: &mut dyn MailSource, batch: &[&MessageMeta]) -> Result<Vec<FetchedMessage>> {
    let uids: Vec<u32> = batch.iter().map(|m| m.uid).collect();
    src.fetch_messages(&uids).await
}

/// Finds on the destination the messages of a batch whose outcome was never recorded.
async fn recover_pending(
    pending: &PendingBatch,
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    state: &mailshift_core::ports::FolderState,
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
}

type BatchOutcome = (Vec<CopiedMessage>, Vec<MessageFailure>, u64);

impl Appender<'_> {
    async fn append_batch(
        &mut self,
        mut msgs: Vec<FetchedMessage>,
        store: &dyn StateStore,
        state: &mailshift_core::ports::FolderState,
    ) -> Result<BatchOutcome> {
        if msgs.is_empty() {
            return Ok((Vec::new(), Vec::new(), 0));
        }
        let fps: Vec<Fingerprint> = msgs.iter().map(|m| Fingerprint::of(&m.raw)).collect();
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
                .zip(&fps)
                .map(|(m, fp)| PendingItem {
                    source_uid: m.uid,
                    size: m.raw.len() as u32,
                    fingerprint: fp.to_hex(),
                    flags: m.flags.to_storage(),
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

        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let mut bytes = 0u64;
        for ((m, fp), r) in msgs.iter().zip(&fps).zip(results) {
            match r {
                Some(Ok(dest_uid)) => {
                    bytes += m.raw.len() as u64;
                    ok.push(CopiedMessage {
                        source_uid: m.uid,
                        dest_uid,
                        flags: m.flags.clone(),
                        size: m.raw.len() as u32,
                        fingerprint: *fp,
                    });
                }
                Some(Err(e)) => bad.push(describe_failure(m, &e)),
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
