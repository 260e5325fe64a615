//! `mailshift migrate`: one mailbox on one machine. Plans the folders, creates them on the
//! destination, publishes one job per folder on an in-process queue and runs workers over
//! it: the same worker and job code as the fleet, wired to SQLite and memory.

use crate::pass::PassOptions;
use crate::retry::RetryPolicy;
use crate::worker::{Sessions, Shutdown, Worker};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{Connector, JobQueue, OneConnector, Progress, StateStore};
use mailshift_core::report::{FolderError, FolderReport, FolderStatus, MigrationSummary};
use mailshift_core::{Error, ErrorKind, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Knobs of one migration run.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    pub rules: FolderRules,
    /// Parallel folder passes; each holds one connection to each server.
    pub connections: usize,
    pub limits: BatchLimits,
    pub retry: RetryPolicy,
    /// Mirror deletions (expunged messages, removed folders) on the destination.
    pub delete: bool,
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
            retry: RetryPolicy {
                // A one-off run waits a few minutes for a server, not half an hour.
                outage_budget: Duration::from_secs(300),
                ..RetryPolicy::default()
            },
            delete: true,
            dual_reception: false,
            stop: None,
        }
    }
}

/// Runs one migration pass end to end and says what happened; never panics on bad input.
/// `queue` is an in-process queue (closed once the pass's jobs are on it).
pub async fn migrate(
    source: &Endpoint,
    dest: &Endpoint,
    connector: Arc<dyn Connector>,
    store: Arc<dyn StateStore>,
    progress: Arc<dyn Progress>,
    queue: Arc<dyn JobQueue>,
    opts: MigrateOptions,
) -> MigrationSummary {
    let started = Instant::now();
    let mut summary = MigrationSummary {
        source: source.to_string(),
        dest: dest.to_string(),
        ..Default::default()
    };
    let r = run(
        source,
        dest,
        connector,
        store,
        progress,
        queue,
        opts,
        &mut summary,
    )
    .await;
    if let Err(e) = r {
        summary.errors.push(FolderError::new(&e.kind, e.message));
    }
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary
}

/// Logs in to both servers and prepares the pass. Outages are retried like folder
/// passes (a throttling answer is waited out as the server suggests); mistakes a person
/// must fix (a refused login, an unknown host, TLS on a plain port) are said at once,
/// for both sides together.
async fn start(
    source: &Endpoint,
    dest: &Endpoint,
    connector: &Arc<dyn Connector>,
    store: &dyn StateStore,
    progress: &dyn Progress,
    opts: &MigrateOptions,
) -> std::result::Result<(crate::pass::PreparedPass, Sessions), Vec<Error>> {
    let pass_opts = PassOptions {
        rules: opts.rules.clone(),
        delete: opts.delete,
        adopt_existing: true,
        split_above: None,
        dual_reception: opts.dual_reception,
        skip_unchanged: false,
        // The overall progress total is known from the start.
        count_messages: true,
    };
    let mut failures_at = 0u32;
    loop {
        let (s, t) = tokio::join!(connector.source(), connector.target());
        let failure = match (s, t) {
            (Ok(mut src), Ok(mut dst)) => {
                match crate::pass::prepare(
                    &mut *src, &mut *dst, store, source, dest, &pass_opts, progress,
                )
                .await
                {
                    Ok(pass) => {
                        return Ok((
                            pass,
                            Sessions {
                                source: src,
                                target: dst,
                            },
                        ));
                    }
                    Err(e) => vec![e],
                }
            }
            (s, t) => [s.err(), t.err()].into_iter().flatten().collect(),
        };
        // At start-up an unreachable server is a wrong address far more often than an
        // outage: no retries.
        let retryable = failure
            .iter()
            .all(|e| e.is_retryable() && e.kind != ErrorKind::Unreachable);
        failures_at += 1;
        if !retryable || failures_at >= opts.retry.max_attempts {
            return Err(failure);
        }
        let wait = failure
            .iter()
            .map(|e| match e.kind {
                ErrorKind::Throttled(Some(hint)) => hint,
                _ => opts.retry.backoff(failures_at, 0),
            })
            .max()
            .unwrap_or_default();
        for e in &failure {
            tracing::warn!(attempt = failures_at, retry_in_ms = wait.as_millis() as u64, error = %e, "cannot prepare the pass; retrying");
        }
        tokio::time::sleep(wait).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    source: &Endpoint,
    dest: &Endpoint,
    connector: Arc<dyn Connector>,
    store: Arc<dyn StateStore>,
    progress: Arc<dyn Progress>,
    queue: Arc<dyn JobQueue>,
    opts: MigrateOptions,
    summary: &mut MigrationSummary,
) -> Result<()> {
    let (pass, sessions) = match start(source, dest, &connector, &*store, &*progress, &opts).await {
        Ok(p) => p,
        Err(errors) => {
            // Say everything that is wrong at once: both sides may need fixing.
            for e in errors {
                summary.errors.push(FolderError::new(&e.kind, e.message));
            }
            return Ok(());
        }
    };
    progress.planned(pass.source_messages, pass.jobs.len() as u64);
    summary.excluded = pass.excluded.clone();
    summary.notes = pass.notes.clone();
    for r in &pass.failed {
        progress.folder_finished(r);
    }
    summary.folders.extend(pass.failed.iter().cloned());

    for job in &pass.jobs {
        queue.publish(job).await?;
    }
    queue.close();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut worker = Worker::new(
        Arc::new(OneConnector(connector)),
        store,
        progress,
        opts.limits,
    );
    worker.retry = opts.retry;
    worker.reports = Some(tx);
    if let Some(stop) = &opts.stop {
        worker.stop = stop.clone();
    }
    let worker = Arc::new(worker);
    let mut first = Some(sessions);
    let mut tasks = Vec::new();
    for _ in 0..opts.connections.max(1).min(pass.jobs.len().max(1)) {
        let worker = worker.clone();
        let queue = queue.clone();
        let sessions = first.take();
        tasks.push(tokio::spawn(
            async move { worker.run(&*queue, sessions).await },
        ));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => summary.errors.push(FolderError::new(&e.kind, e.message)),
            Err(join) => summary.errors.push(FolderError {
                kind: "internal".into(),
                message: format!("a worker task ended abnormally: {join}"),
            }),
        }
    }
    drop(worker);
    let mut reports = Vec::new();
    while let Some(r) = rx.recv().await {
        reports.push(r);
    }
    if opts.stop.as_ref().is_some_and(|s| s.requested()) {
        // Folders whose job never started are interrupted too, from their checkpoint.
        for job in &pass.jobs {
            if job.uid_range.is_none() && !reports.iter().any(|r| r.source == job.source_display) {
                let mut r = FolderReport::new(&job.source_display, &job.dest_display);
                r.status = FolderStatus::Interrupted;
                r.notes
                    .push("not started before the stop; the next run copies it".into());
                reports.push(r);
            }
        }
    }
    pass.finish_reports(&mut reports);
    summary.folders.extend(reports);
    Ok(())
}
