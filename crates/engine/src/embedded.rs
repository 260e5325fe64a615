//! `mailshift migrate`: one mailbox on one machine. Plans the folders, creates them on the
//! destination, publishes one job per folder on an in-process queue and runs workers over
//! it: the same worker and job code as the fleet, wired to SQLite and memory.

use crate::reconcile;
use crate::worker::{Sessions, Worker};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::{FolderPath, FolderRules, map_folders};
use mailshift_core::job::FolderJob;
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{Connector, JobQueue, MailSource, MailTarget, Progress, StateStore};
use mailshift_core::report::{FolderError, FolderReport, MigrationSummary};
use mailshift_core::{Error, Result};
use mailshift_queue::MemoryQueue;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Knobs of one migration run.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    pub rules: FolderRules,
    /// Parallel folder passes; each holds one connection to each server.
    pub connections: usize,
    pub limits: BatchLimits,
    pub max_attempts: u32,
    pub retry_base: Duration,
    /// Mirror deletions (expunged messages, removed folders) on the destination.
    pub delete: bool,
    /// Recognise mail already on the destination (by full content) on first passes.
    pub adopt_existing: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            rules: FolderRules::default(),
            connections: 4,
            limits: BatchLimits::default(),
            max_attempts: 4,
            retry_base: Duration::from_secs(1),
            delete: true,
            adopt_existing: false,
        }
    }
}

/// Runs one migration pass end to end and says what happened; never panics on bad input.
pub async fn migrate(
    source: &Endpoint,
    dest: &Endpoint,
    connector: Arc<dyn Connector>,
    store: Arc<dyn StateStore>,
    progress: Arc<dyn Progress>,
    opts: MigrateOptions,
) -> MigrationSummary {
    let started = Instant::now();
    let mut summary = MigrationSummary {
        source: source.to_string(),
        dest: dest.to_string(),
        ..Default::default()
    };
    if let Err(e) = run(source, dest, connector, store, progress, opts, &mut summary).await {
        summary.errors.push(FolderError::new(&e.kind, e.message));
    }
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary
}

async fn run(
    source: &Endpoint,
    dest: &Endpoint,
    connector: Arc<dyn Connector>,
    store: Arc<dyn StateStore>,
    progress: Arc<dyn Progress>,
    opts: MigrateOptions,
    summary: &mut MigrationSummary,
) -> Result<()> {
    let (s, t) = tokio::join!(connector.source(), connector.target());
    let (mut src, mut dst) = match (s, t) {
        (Ok(s), Ok(t)) => (s, t),
        (s, t) => {
            // Say everything that is wrong at once: both sides may need fixing.
            for e in [s.err(), t.err()].into_iter().flatten() {
                summary.errors.push(FolderError::new(&e.kind, e.message));
            }
            return Ok(());
        }
    };
    let (src_folders, src_delim) = MailSource::list_folders(&mut *src).await?;
    let (dst_folders, dst_delim) = MailTarget::list_folders(&mut *dst).await?;
    let mapping = map_folders(
        &src_folders,
        src_delim,
        &dst_folders,
        dst_delim,
        &opts.rules,
    )?;
    summary.excluded = mapping.excluded.clone();
    summary.notes = mapping.notes.clone();
    for n in &mapping.notes {
        tracing::info!(note = %n, "folder mapping");
    }

    let migration_id = store.migration(source, dest).await?;
    let mut existing: HashSet<String> = dst_folders.iter().map(|f| f.raw.clone()).collect();
    existing.insert("INBOX".to_string());
    let mut ready = Vec::new();
    for plan in &mapping.folders {
        match ensure_folder(&mut *dst, &plan.dest_path, dst_delim, &mut existing).await {
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
            Err(e) => {
                let report = FolderReport::failed(
                    &plan.source_display,
                    &plan.dest_display,
                    &e.kind,
                    format!(
                        "cannot create destination folder '{}': {}; create it by hand or map it elsewhere with --map",
                        plan.dest_display, e.message
                    ),
                );
                progress.folder_finished(&report);
                summary.folders.push(report);
            }
        }
    }

    // Moves between folders and folders gone from the source, before the folder passes.
    let listed: HashSet<String> = src_folders.iter().map(|f| f.raw.clone()).collect();
    let changes = reconcile::mailbox(
        &mut *src,
        &mut *dst,
        &*store,
        migration_id,
        &ready,
        &listed,
        opts.delete,
    )
    .await?;
    for n in &changes.notes {
        tracing::info!(note = %n, "reconciliation");
    }
    summary.notes.extend(changes.notes);

    let queue = Arc::new(MemoryQueue::new());
    for plan in &ready {
        queue
            .publish(&FolderJob {
                id: Uuid::new_v4(),
                migration_id,
                source_folder: plan.source_raw.clone(),
                dest_folder: plan.dest_raw.clone(),
                source_display: plan.source_display.clone(),
                dest_display: plan.dest_display.clone(),
                attempt: 1,
                delete: opts.delete,
                adopt_existing: opts.adopt_existing,
            })
            .await?;
    }
    queue.close();

    let mut worker = Worker::new(connector, store, progress, opts.limits);
    worker.max_attempts = opts.max_attempts;
    worker.retry_base = opts.retry_base;
    let worker = Arc::new(worker);
    let mut first = Some(Sessions {
        source: src,
        target: dst,
    });
    let mut tasks = Vec::new();
    for _ in 0..opts.connections.max(1).min(mapping.folders.len().max(1)) {
        let worker = worker.clone();
        let queue = queue.clone();
        let sessions = first.take();
        tasks.push(tokio::spawn(
            async move { worker.run(&*queue, sessions).await },
        ));
    }
    let mut reports = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => reports.extend(r),
            Ok(Err(e)) => summary.errors.push(FolderError::new(&e.kind, e.message)),
            Err(join) => summary.errors.push(FolderError {
                kind: "internal".into(),
                message: format!("a worker task ended abnormally: {join}"),
            }),
        }
    }
    // Report in plan order (INBOX first, then the tree).
    let order: Vec<&str> = mapping
        .folders
        .iter()
        .map(|p| p.source_display.as_str())
        .collect();
    reports.sort_by_key(|r| {
        order
            .iter()
            .position(|o| *o == r.source)
            .unwrap_or(usize::MAX)
    });
    for r in &mut reports {
        if let Some(plan) = ready.iter().find(|p| p.source_display == r.source)
            && let Some(n) = changes.moved_in.get(&plan.source_raw)
        {
            r.moved_in = *n;
        }
    }
    summary.folders.extend(reports);
    Ok(())
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
