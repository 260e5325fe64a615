//! The worker loop: take a folder job, run it with (pooled) sessions, acknowledge it once
//! its effects are checkpointed, or hand it back for a delayed retry when the failure is
//! retryable. The same loop serves the in-process queue and RabbitMQ.

use crate::copy::{Fence, FolderPass, copy_folder};
use crate::lease::FolderLease;
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{
    Connectors, Delivery, JobQueue, MailSource, MailTarget, MailboxStore, Progress, StateStore,
};
use mailshift_core::report::FolderReport;
use mailshift_core::{ErrorKind, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// A shutdown request shared by a process's workers.
#[derive(Debug, Default)]
pub struct Shutdown {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Shutdown {
    pub fn request(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn requested(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if self.requested() {
            return;
        }
        notified.await;
    }
}

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
    /// This worker's name (host and process), stored with its leases.
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
    /// Deliveries of one job before its failure is final.
    pub max_attempts: u32,
    /// First retry delay; doubles with each attempt (capped at 60 s).
    pub retry_base: Duration,
    /// Graceful shutdown: once set, running passes stop after their current batch and no
    /// new job is taken; interrupted jobs go back to the queue.
    pub stop: Arc<Shutdown>,
    /// Messages copied by attempts that later failed, so the final report counts them.
    carried: Mutex<HashMap<Uuid, (u64, u64)>>,
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
            max_attempts: 4,
            retry_base: Duration::from_secs(1),
            stop: Arc::new(Shutdown::default()),
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

    fn backoff(&self, attempt: u32, kind: &ErrorKind) -> Duration {
        if let ErrorKind::Throttled(Some(hint)) = kind {
            return *hint;
        }
        let exp = self.retry_base.saturating_mul(1 << attempt.min(6));
        jitter(exp.min(Duration::from_secs(60)))
    }

    /// How long the servers of a migration asked to be left alone (throttling).
    async fn throttled(&self, migration: Uuid) -> Option<Duration> {
        self.connectors
            .connector(migration)
            .await
            .ok()
            .and_then(|c| c.throttled_for())
    }

    /// Takes the folder's lease (fleet mode) for this delivery. `Ok(None)`: another
    /// claim holds it; `Ok(Some(None))`: no leases (embedded mode).
    async fn lease(&self, d: &Delivery) -> Result<Option<Option<FolderLease>>> {
        let Some(l) = &self.leases else {
            return Ok(Some(None));
        };
        Ok(FolderLease::take(l.store.clone(), &d.job, &l.owner, l.ttl)
            .await?
            .map(Some))
    }

    /// Runs jobs until the queue is drained (or closed). `sessions` may bring already open
    /// sessions for the migration of the first job.
    pub async fn run(
        &self,
        queue: &dyn JobQueue,
        sessions: Option<Sessions>,
    ) -> Result<Vec<FolderReport>> {
        let mut reports = Vec::new();
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
            mailshift_queue::trace::adopt(&job_span, &delivery.trace);
            if let Some(id) = mailshift_queue::trace::trace_id(&job_span) {
                // So JSON log lines of this job carry the trace they belong to.
                job_span.record("trace_id", id.as_str());
            }
            let started = std::time::Instant::now();
            let (outcome, report) = self
                .handle(queue, delivery, &mut pooled)
                .instrument(job_span.clone())
                .await?;
            job_span.record("outcome", outcome);
            crate::metrics::job_finished(outcome, started.elapsed());
            if let Some(report) = report {
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// One delivered job: lease, sessions, the folder pass, then ack, retry or
    /// dead-letter. Returns the outcome (for metrics) and the final report, if any.
    async fn handle(
        &self,
        queue: &dyn JobQueue,
        delivery: Delivery,
        pooled: &mut Option<(Option<Uuid>, Sessions)>,
    ) -> Result<(&'static str, Option<FolderReport>)> {
        let migration = delivery.job.migration_id;
        if let Some(wait) = self.throttled(migration).await {
            // A server asked this process to slow down: the job waits its turn without
            // opening a session (or counting an attempt); jobs on other servers go on.
            tracing::info!(
                folder = %delivery.job.source_display,
                wait_ms = wait.as_millis() as u64,
                "server throttled; job deferred"
            );
            let mut again = delivery.clone();
            again.job.attempt = again.job.attempt.saturating_sub(1);
            queue.retry(&again, wait).await?;
            return Ok(("deferred", None));
        }
        let lease = match self.lease(&delivery).await {
            Ok(Some(h)) => h,
            Ok(None) => {
                // Someone else is copying this folder: try again once they are done,
                // without counting it as a failed attempt.
                let mut again = delivery.clone();
                again.job.attempt = again.job.attempt.saturating_sub(1);
                let wait = self.leases.as_ref().map(|l| l.ttl / 2).unwrap_or_default();
                queue.retry(&again, wait).await?;
                return Ok(("deferred", None));
            }
            Err(e) => {
                queue
                    .retry(&delivery, self.backoff(delivery.job.attempt, &e.kind))
                    .await?;
                return Ok(("retried", None));
            }
        };
        let s = match pooled.take() {
            Some((m, s)) if m.is_none() || m == Some(migration) => Ok(s),
            _ => self.connect(migration).await,
        };
        let (mut report, err, keep) = match s {
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
                // After a network or protocol failure the session state is unknown.
                let keep = !matches!(
                    err.as_ref().map(|e| &e.kind),
                    Some(ErrorKind::Network | ErrorKind::Protocol | ErrorKind::Throttled(_))
                );
                (report, err, keep.then_some((Some(migration), s)))
            }
            Err(e) => {
                let job = &delivery.job;
                let report = FolderReport::failed(
                    &job.source_display,
                    &job.dest_display,
                    &e.kind,
                    e.message.clone(),
                );
                self.progress.folder_finished(&report);
                (report, Some(e), None)
            }
        };
        // In the fleet, sessions are not kept while waiting for the next job: they may
        // hold connection slots that a job already delivered to another task needs.
        *pooled = if self.leases.is_some() { None } else { keep };
        if let Some(lease) = lease {
            lease.release().await;
        }
        if let Some(mailshift_core::Error {
            kind: ErrorKind::Deferred(wait),
            message,
        }) = &err
        {
            // Not a failure: the pass waits for other folders (All Mail for its labels).
            tracing::info!(folder = %delivery.job.source_display, reason = %message, "deferred");
            let mut again = delivery.clone();
            again.job.attempt = again.job.attempt.saturating_sub(1);
            queue.retry(&again, *wait).await?;
            return Ok(("deferred", None));
        }
        if let Some(e) = &err
            && e.kind == ErrorKind::Interrupted
        {
            // Not a failure: hand the job back untouched for another worker.
            let mut again = delivery.clone();
            again.job.attempt = again.job.attempt.saturating_sub(1);
            self.carry(&delivery, &report);
            queue.retry(&again, Duration::ZERO).await?;
            return Ok(("interrupted", None));
        }
        // In the fleet a refused login may be a lockout or a password being changed:
        // worth a few tries before the job is set aside.
        // A dropped connection after progress (a batch checkpointed) is not a failed
        // attempt: the pass resumes from its checkpoint at once, however many times a
        // flaky link drops. Only attempts that achieve nothing count towards the limit.
        let progressed = report.copied > 0 || report.flags_updated > 0 || report.deleted > 0;
        if let Some(e) = &err
            && e.kind == ErrorKind::Network
            && progressed
        {
            let mut again = delivery.clone();
            again.job.attempt = again.job.attempt.saturating_sub(1);
            let delay = jitter(Duration::from_millis(250));
            tracing::warn!(
                folder = %delivery.job.source_display,
                copied = report.copied,
                error = %e,
                "connection lost after progress; resuming from the checkpoint"
            );
            self.carry(&delivery, &report);
            queue.retry(&again, delay).await?;
            return Ok(("retried", None));
        }
        if let Some(e) = &err
            && (e.is_retryable() || (self.leases.is_some() && e.kind == ErrorKind::Auth))
            && delivery.job.attempt < self.max_attempts
        {
            let delay = self.backoff(delivery.job.attempt, &e.kind);
            tracing::warn!(
                folder = %delivery.job.source_display,
                attempt = delivery.job.attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %e,
                "folder pass failed; retrying"
            );
            self.carry(&delivery, &report);
            queue.retry(&delivery, delay).await?;
            return Ok(("retried", None));
        }
        self.settle(&delivery, &mut report);
        match (&err, &self.leases) {
            (Some(e), Some(l)) => {
                // Fleet: keep the job aside and show the error on the mailbox.
                let reason = format!("folder '{}': {}", delivery.job.source_display, e.message);
                queue.dead_letter(&delivery, &reason).await?;
                if let Ok((m, _)) = l.store.mailbox_credentials(migration).await {
                    l.store
                        .set_mailbox_status(m.id, "failed", Some(&reason), m.next_pass_at)
                        .await?;
                }
            }
            _ => queue.ack(&delivery).await?,
        }
        if let Some(l) = &self.leases
            && let Err(e) = l.store.job_finished(migration).await
        {
            tracing::warn!(folder = %delivery.job.source_display, error = %e.message, "cannot count the finished job");
        }
        if let Some(e) = &err {
            crate::metrics::error(&e.kind);
        }
        let outcome = if err.is_some() { "failed" } else { "done" };
        Ok((outcome, Some(report)))
    }

    fn carry(&self, d: &Delivery, r: &FolderReport) {
        let mut c = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.entry(d.job.id).or_default();
        e.0 += r.copied;
        e.1 += r.copied_bytes;
    }

    fn settle(&self, d: &Delivery, r: &mut FolderReport) {
        let mut c = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, b)) = c.remove(&d.job.id) {
            r.copied += n;
            r.copied_bytes += b;
            r.already_done = r.already_done.saturating_sub(n);
        }
    }
}

/// Spreads retries (80-120 % of `d`) so jobs that failed together do not all come back
/// at the same instant.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    // A cheap mix of the clock's low bits; fairness, not secrecy, is the goal.
    let r = (u64::from(nanos).wrapping_mul(6_364_136_223_846_793_005) >> 33) % 401;
    d.mul_f64(0.8 + r as f64 / 1000.0)
}
