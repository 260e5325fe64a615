//! The worker loop: take a folder job, run it with (pooled) sessions, acknowledge it once
//! its effects are checkpointed, or hand it back for a delayed retry when the failure is
//! worth another try ([`crate::retry`] decides). The same loop serves the in-process
//! queue and RabbitMQ.

use crate::copy::{Fence, FolderPass, copy_folder};
use crate::lease::FolderLease;
use crate::retry::{Decision, RetryPolicy};
use mailshift_core::mailbox::{JobOutcome, MailboxStatus};
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{
    Connectors, Delivery, JobQueue, MailSource, MailTarget, MailboxStore, Progress, StateStore,
};
use mailshift_core::report::{FolderReport, FolderStatus};
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

pub use crate::lifecycle::Shutdown;

/// A logged-in pair of sessions, kept between jobs of the same mailbox.
pub struct Sessions {
    pub source: Box<dyn MailSource>,
    pub target: Box<dyn MailTarget>,
}

/// Fleet mode: folder leases in the shared database, so two workers never copy the same
/// folder at once, and a killed worker's folder is taken over once its lease expires.
#[derive(Clone)]
pub struct Leases {
    pub store: Arc<dyn MailboxStore>,
    /// This worker's name (host and process); each claim adds its own token to it.
    pub owner: String,
    /// Lease length; renewed every third of it while the pass runs.
    pub ttl: Duration,
}

pub struct Worker {
    pub connectors: Arc<dyn Connectors>,
    pub leases: Option<Leases>,
    pub store: Arc<dyn StateStore>,
    pub progress: Arc<dyn Progress>,
    pub limits: BatchLimits,
    /// When a failed job is tried again, and when it is given up.
    pub retry: RetryPolicy,
    /// Graceful shutdown: once set, running passes stop after their current batch and no
    /// new job is taken; interrupted jobs go back to the queue.
    pub stop: Arc<Shutdown>,
    /// Where final folder reports go (embedded mode's summary). None in the fleet, where
    /// a worker runs for months and keeps no report: each job ends with one log line.
    pub reports: Option<tokio::sync::mpsc::UnboundedSender<FolderReport>>,
    /// Messages copied, and messages refused, by attempts that later failed, so the
    /// final report counts them (only kept while `reports` is set; entries leave with
    /// their job's final report).
    carried: Mutex<HashMap<Uuid, Carried>>,
}

/// What the failed attempts of a job did, for its final report.
#[derive(Default)]
struct Carried {
    copied: u64,
    bytes: u64,
    failures: Vec<mailshift_core::report::MessageFailure>,
}

/// What became of one delivery.
struct Handled {
    outcome: &'static str,
    report: Option<FolderReport>,
}

impl Worker {
    pub fn new(
        connectors: Arc<dyn Connectors>,
        store: Arc<dyn StateStore>,
        progress: Arc<dyn Progress>,
        limits: BatchLimits,
    ) -> Self {
        Worker {
            connectors,
            leases: None,
            store,
            progress,
            limits,
            retry: RetryPolicy::default(),
            stop: Arc::new(Shutdown::default()),
            reports: None,
            carried: Mutex::new(HashMap::new()),
        }
    }

    async fn connect(&self, migration: Uuid) -> Result<Sessions> {
        let connector = self.connectors.connector(migration).await?;
        // One after the other, always the source first: with connection limits on both
        // servers, two tasks can then never each hold the slot the other waits for.
        let source = connector.source().await?;
        let target = connector.target().await?;
        Ok(Sessions { source, target })
    }

    /// How long the servers of a migration asked to be left alone (throttling).
    async fn throttled(&self, migration: Uuid) -> Option<Duration> {
        self.connectors
            .connector(migration)
            .await
            .ok()
            .and_then(|c| c.throttled_for())
    }

    /// Runs jobs until the queue is drained (or closed, or shutdown is requested).
    /// `sessions` may bring already open sessions for the migration of the first job.
    pub async fn run(&self, queue: &dyn JobQueue, sessions: Option<Sessions>) -> Result<()> {
        let mut pooled: Option<(Option<Uuid>, Sessions)> = sessions.map(|s| (None, s));
        loop {
            if self.stop.requested() {
                break;
            }
            let received = tokio::select! {
                r = queue.receive() => r?,
                _ = self.stop.wait() => None,
            };
            let Some(delivery) = received else {
                break;
            };
            let job_span = tracing::info_span!(
                "worker.job",
                folder = %delivery.job.source_display,
                dest = %delivery.job.dest_display,
                migration = %delivery.job.migration_id,
                attempt = delivery.job.attempt,
                outcome = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            // A child of the span that published the job (the scheduler's).
            crate::trace::adopt(&job_span, &delivery.trace);
            if let Some(id) = crate::trace::trace_id(&job_span) {
                // So JSON log lines of this job carry the trace they belong to.
                job_span.record("trace_id", id.as_str());
            }
            let started = std::time::Instant::now();
            let handled = match self
                .handle(queue, delivery, &mut pooled)
                .instrument(job_span.clone())
                .await
            {
                Ok(h) => h,
                Err(e) => {
                    // The queue (or the database) failed while the job was settled: it
                    // was not acknowledged, so the broker hands it out again. The
                    // worker goes on with the next one.
                    let _g = job_span.enter();
                    tracing::warn!(error = %e.message, "cannot settle a job; it will be redelivered");
                    job_span.record("outcome", "unsettled");
                    continue;
                }
            };
            job_span.record("outcome", handled.outcome);
            crate::metrics::job_finished(handled.outcome, started.elapsed());
            if let Some(report) = handled.report {
                let _g = job_span.enter();
                tracing::info!(
                    folder = %report.source,
                    status = ?report.status,
                    copied = report.copied,
                    adopted = report.adopted,
                    refused = report.failures.len(),
                    flags = report.flags_updated,
                    deleted = report.deleted,
                    ms = started.elapsed().as_millis() as u64,
                    "folder job finished"
                );
                if let Some(tx) = &self.reports {
                    let _ = tx.send(report);
                }
            }
        }
        Ok(())
    }

    /// One delivered job: lease, sessions, the folder pass, then ack, retry or
    /// dead-letter.
    async fn handle(
        &self,
        queue: &dyn JobQueue,
        delivery: Delivery,
        pooled: &mut Option<(Option<Uuid>, Sessions)>,
    ) -> Result<Handled> {
        let migration = delivery.job.migration_id;
        if let Some(wait) = self.throttled(migration).await {
            // A server asked this process to slow down: the job waits its turn without
            // opening a session (or counting an attempt); jobs on other servers go on.
            tracing::info!(
                folder = %delivery.job.source_display,
                wait_ms = wait.as_millis() as u64,
                "server throttled; job deferred"
            );
            queue.retry(&uncounted(&delivery), wait).await?;
            return Ok(Handled {
                outcome: "deferred",
                report: None,
            });
        }
        let lease = match &self.leases {
            None => None,
            Some(l) => {
                match FolderLease::take(l.store.clone(), &delivery.job, &l.owner, l.ttl).await {
                    Ok(Some(lease)) => Some(lease),
                    Ok(None) => {
                        // Someone else is copying this folder: try again once they are done,
                        // without counting it as a failed attempt.
                        queue.retry(&uncounted(&delivery), l.ttl / 2).await?;
                        return Ok(Handled {
                            outcome: "deferred",
                            report: None,
                        });
                    }
                    Err(e) => {
                        // The database is away: wait for it like for any outage.
                        return self.settle(queue, delivery, None, e).await;
                    }
                }
            }
        };
        let s = match pooled.take() {
            Some((m, s)) if m.is_none() || m == Some(migration) => Ok(s),
            _ => self.connect(migration).await,
        };
        let (report, err) = match s {
            Ok(mut s) => {
                let pass_span = tracing::info_span!(
                    "folder.pass",
                    source = %delivery.job.source_display,
                    dest = %delivery.job.dest_display,
                );
                let (report, err) = copy_folder(FolderPass {
                    job: &delivery.job,
                    source: &mut *s.source,
                    target: &mut *s.target,
                    store: &*self.store,
                    progress: &*self.progress,
                    // Retries after failures use smaller batches (see `for_attempt`).
                    limits: self.limits.for_attempt(delivery.job.attempt),
                    stop: Some(&self.stop.flag),
                    fence: lease.as_ref().map(|f| f as &dyn Fence),
                })
                .instrument(pass_span)
                .await;
                // After a network or protocol failure the session state is unknown. In
                // the fleet, sessions are not kept while waiting for the next job: they
                // may hold connection slots that a job delivered elsewhere needs.
                let keep = self.leases.is_none()
                    && !matches!(
                        err.as_ref().map(|e| &e.kind),
                        Some(
                            ErrorKind::Network
                                | ErrorKind::Protocol
                                | ErrorKind::Throttled(_)
                                | ErrorKind::TooLarge
                        )
                    );
                if keep {
                    *pooled = Some((Some(migration), s));
                }
                (report, err)
            }
            Err(e) => {
                let job = &delivery.job;
                let report = FolderReport::failed(
                    &job.source_display,
                    &job.dest_display,
                    &e.kind,
                    e.message.clone(),
                );
                (report, Some(e))
            }
        };
        if let Some(lease) = lease {
            lease.release().await;
        }
        match err {
            None => {
                // Recorded before it is acknowledged: a job acknowledged but not recorded
                // would leave its mailbox `syncing` for ever (the database away at that
                // moment). Not recorded, it comes back; its pass then copies nothing.
                if let Err(e) = self.record(&delivery, &report, None).await {
                    return self.unrecorded(queue, &delivery, e).await;
                }
                queue.ack(&delivery).await?;
                let report = self.final_report(&delivery, report);
                Ok(Handled {
                    outcome: "done",
                    report: Some(report),
                })
            }
            Some(e) => self.settle(queue, delivery, Some(report), e).await,
        }
    }

    /// The job's end could not be recorded (the database is away): hand it back, without
    /// counting an attempt, so a later delivery records it.
    async fn unrecorded(&self, queue: &dyn JobQueue, d: &Delivery, e: Error) -> Result<Handled> {
        tracing::warn!(
            folder = %d.job.source_display,
            error = %e.message,
            "cannot record the finished job; it comes back to be recorded"
        );
        queue.retry(&uncounted(d), self.retry.base).await?;
        Ok(Handled {
            outcome: "unrecorded",
            report: None,
        })
    }

    /// A failed (or interrupted, or deferred) pass: retry it, or give it up.
    async fn settle(
        &self,
        queue: &dyn JobQueue,
        delivery: Delivery,
        report: Option<FolderReport>,
        e: Error,
    ) -> Result<Handled> {
        if e.kind == ErrorKind::Interrupted && self.stop.requested() && self.reports.is_some() {
            // A one-off run stopping: the folder ends here, from its checkpoint.
            queue.ack(&delivery).await?;
            let job = &delivery.job;
            let mut r =
                report.unwrap_or_else(|| FolderReport::new(&job.source_display, &job.dest_display));
            r.status = FolderStatus::Interrupted;
            r.error = None;
            r.notes.push(e.message.clone());
            let r = self.final_report(&delivery, r);
            return Ok(Handled {
                outcome: "interrupted",
                report: Some(r),
            });
        }
        let progressed = report.as_ref().is_some_and(|r| {
            r.copied > 0 || r.flags_updated > 0 || r.deleted > 0 || !r.failures.is_empty()
        });
        let decision = self.retry.decide(
            &delivery.job,
            &e.kind,
            progressed,
            self.leases.is_some(),
            now(),
        );
        match decision {
            Decision::Retry { delay, job } => {
                match &e.kind {
                    ErrorKind::Interrupted | ErrorKind::Deferred(_) => {
                        tracing::info!(folder = %delivery.job.source_display, reason = %e.message, "job handed back");
                    }
                    _ => tracing::warn!(
                        folder = %delivery.job.source_display,
                        attempt = delivery.job.attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %e,
                        "folder pass failed; retrying"
                    ),
                }
                if let Some(r) = &report {
                    self.carry(&delivery, r);
                }
                let mut again = delivery.clone();
                again.job = *job;
                // `retry` counts the next attempt itself.
                again.job.attempt = again.job.attempt.saturating_sub(1);
                queue.retry(&again, delay).await?;
                let outcome = match e.kind {
                    ErrorKind::Interrupted => "interrupted",
                    ErrorKind::Deferred(_) => "deferred",
                    _ => "retried",
                };
                Ok(Handled {
                    outcome,
                    report: None,
                })
            }
            Decision::GiveUp => {
                let job = &delivery.job;
                let mut report = report.unwrap_or_else(|| {
                    FolderReport::failed(
                        &job.source_display,
                        &job.dest_display,
                        &e.kind,
                        e.message.clone(),
                    )
                });
                if report.error.is_none() {
                    report.status = FolderStatus::Failed;
                    report.error = Some(mailshift_core::report::FolderError::new(
                        &e.kind,
                        e.message.clone(),
                    ));
                }
                let report = self.final_report(&delivery, report);
                let reason = format!("folder '{}': {}", job.source_display, e.message);
                match &self.leases {
                    Some(l) => {
                        // Fleet: keep the job aside and show the error on the mailbox,
                        // recorded first for the same reason as a finished job.
                        if let Err(e) = self.record(&delivery, &report, Some(&reason)).await {
                            return self.unrecorded(queue, &delivery, e).await;
                        }
                        queue.dead_letter(&delivery, &reason).await?;
                        match l.store.mailbox_credentials(job.migration_id).await {
                            Ok((m, _)) => {
                                if let Err(e) = l
                                    .store
                                    .set_mailbox_status(
                                        m.id,
                                        MailboxStatus::Failed,
                                        Some(&reason),
                                        m.next_pass_at,
                                    )
                                    .await
                                {
                                    tracing::warn!(error = %e.message, "cannot mark the mailbox failed");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e.message, "cannot read the job's mailbox")
                            }
                        }
                    }
                    None => queue.ack(&delivery).await?,
                }
                crate::metrics::error(&e.kind);
                Ok(Handled {
                    outcome: "failed",
                    report: Some(report),
                })
            }
        }
    }

    /// Records the job's end in the fleet's job rows (once per job, however often it is
    /// delivered).
    async fn record(&self, d: &Delivery, report: &FolderReport, dead: Option<&str>) -> Result<()> {
        let Some(l) = &self.leases else {
            return Ok(());
        };
        let outcome = match (dead, report.status) {
            (Some(_), _) => JobOutcome::Dead,
            (None, FolderStatus::Complete) => JobOutcome::Done,
            (None, _) => JobOutcome::Failed,
        };
        l.store.job_finished(&d.job, outcome, dead).await
    }

    fn carry(&self, d: &Delivery, r: &FolderReport) {
        if self.reports.is_none() {
            return;
        }
        let mut c = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.entry(d.job.id).or_default();
        e.copied += r.copied;
        e.bytes += r.copied_bytes;
        e.failures.extend(r.failures.iter().cloned());
    }

    fn final_report(&self, d: &Delivery, mut r: FolderReport) -> FolderReport {
        let mut c = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(earlier) = c.remove(&d.job.id) {
            r.copied += earlier.copied;
            r.copied_bytes += earlier.bytes;
            r.already_done = r.already_done.saturating_sub(earlier.copied);
            // Refused by an earlier attempt (e.g. an oversized literal), not tried again.
            for f in earlier.failures {
                if !r.failures.iter().any(|g| g.uid == f.uid) {
                    r.failures.push(f);
                }
            }
            if r.status == FolderStatus::Complete && !r.failures.is_empty() {
                r.status = FolderStatus::Partial;
            }
        }
        self.progress.folder_finished(&r);
        r
    }
}

/// The delivery again, without counting an attempt (waiting is not failing).
fn uncounted(d: &Delivery) -> Delivery {
    let mut again = d.clone();
    again.job.attempt = again.job.attempt.saturating_sub(1);
    again
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
