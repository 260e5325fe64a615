//! `mailshift migrate`: one mailbox on one machine. Plans the folders, creates them on the
//! destination, publishes one job per folder on an in-process queue and runs workers over
//! it: the same worker and job code as the fleet, wired to SQLite and memory.

use crate::pass::PassOptions;
use crate::worker::{Sessions, Shutdown, Worker};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{Connector, JobQueue, OneConnector, Progress, StateStore};
use mailshift_core::report::{FolderError, MigrationSummary};
use mailshift_core::{ErrorKind, Result};
use mailshift_queue::MemoryQueue;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// After the MX switch: copy new arrivals only, never change the destination.
    pub dual_reception: bool,
    /// Ctrl-C: running passes stop after the batch in flight is checkpointed.
    pub stop: Option<Arc<Shutdown>>,
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
            dual_reception: false,
            stop: None,
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
    let pass_opts = PassOptions {
        rules: opts.rules.clone(),
        delete: opts.delete,
        adopt_existing: opts.adopt_existing,
        split_above: None,
        dual_reception: opts.dual_reception,
    };
    // Connecting and preparing the pass are retried like folder passes: a dropped
    // connection or a throttling answer (waited out as the server suggests) is not the
    // end of the run.
    let mut attempt: u32 = 1;
    let (pass, src, dst) = loop {
        let (s, t) = tokio::join!(connector.source(), connector.target());
        let failure = match (s, t) {
            (Ok(mut src), Ok(mut dst)) => {
                match crate::pass::prepare(&mut *src, &mut *dst, &*store, source, dest, &pass_opts)
                    .await
                {
                    Ok(pass) => break (pass, src, dst),
                    Err(e) => vec![e],
                }
            }
            (s, t) => [s.err(), t.err()].into_iter().flatten().collect(),
        };
        let retryable = failure.iter().all(|e| e.is_retryable());
        if !retryable || attempt >= opts.max_attempts {
            // Say everything that is wrong at once: both sides may need fixing.
            for e in failure {
                summary.errors.push(FolderError::new(&e.kind, e.message));
            }
            return Ok(());
        }
        let wait = failure
            .iter()
            .map(|e| match e.kind {
                ErrorKind::Throttled(Some(hint)) => hint,
                _ => opts.retry_base.saturating_mul(1 << attempt.min(6)),
            })
            .max()
            .unwrap_or_default();
        for e in &failure {
            tracing::warn!(attempt, retry_in_ms = wait.as_millis() as u64, error = %e, "cannot prepare the pass; retrying");
        }
        tokio::time::sleep(wait).await;
        attempt += 1;
    };
    summary.excluded = pass.excluded.clone();
    summary.notes = pass.notes.clone();
    for r in &pass.failed {
        progress.folder_finished(r);
    }
    summary.folders.extend(pass.failed.iter().cloned());

    let queue = Arc::new(MemoryQueue::new());
    for job in &pass.jobs {
        queue.publish(job).await?;
    }
    queue.close();

    let mut worker = Worker::new(
        Arc::new(OneConnector(connector)),
        store,
        progress,
        opts.limits,
    );
    worker.max_attempts = opts.max_attempts;
    worker.retry_base = opts.retry_base;
    if let Some(stop) = &opts.stop {
        worker.stop = stop.clone();
    }
    let worker = Arc::new(worker);
    let mut first = Some(Sessions {
        source: src,
        target: dst,
    });
    let mut tasks = Vec::new();
    for _ in 0..opts.connections.max(1).min(pass.jobs.len().max(1)) {
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
    pass.finish_reports(&mut reports);
    if opts.stop.as_ref().is_some_and(|s| s.requested()) {
        let unfinished = pass.jobs.len().saturating_sub(reports.len());
        if unfinished > 0 {
            summary.errors.push(FolderError {
                kind: "interrupted".into(),
                message: format!(
                    "stopped on request: {unfinished} folder(s) not finished (everything \
                     copied so far is checkpointed); run the same command again to continue"
                ),
            });
        }
    }
    summary.folders.extend(reports);
    Ok(())
}
