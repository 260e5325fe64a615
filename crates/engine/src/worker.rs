//! The worker loop: take a folder job, run it with (pooled) sessions, acknowledge it once
//! its effects are checkpointed, or hand it back for a delayed retry when the failure is
//! retryable. The same loop serves the in-process queue and RabbitMQ.

use crate::copy::{FolderPass, copy_folder};
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{
    Connector, Delivery, JobQueue, MailSource, MailTarget, Progress, StateStore,
};
use mailshift_core::report::FolderReport;
use mailshift_core::{ErrorKind, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// A logged-in pair of sessions, kept between jobs of the same mailbox.
pub struct Sessions {
    pub source: Box<dyn MailSource>,
    pub target: Box<dyn MailTarget>,
}

pub struct Worker {
    pub connector: Arc<dyn Connector>,
    pub store: Arc<dyn StateStore>,
    pub progress: Arc<dyn Progress>,
    pub limits: BatchLimits,
    /// Deliveries of one job before its failure is final.
    pub max_attempts: u32,
    /// First retry delay; doubles with each attempt (capped at 60 s).
    pub retry_base: Duration,
    /// Messages copied by attempts that later failed, so the final report counts them.
    carried: Mutex<HashMap<Uuid, (u64, u64)>>,
}

impl Worker {
    pub fn new(
        connector: Arc<dyn Connector>,
        store: Arc<dyn StateStore>,
        progress: Arc<dyn Progress>,
        limits: BatchLimits,
    ) -> Self {
        Worker {
            connector,
            store,
            progress,
            limits,
            max_attempts: 4,
            retry_base: Duration::from_secs(1),
            carried: Mutex::new(HashMap::new()),
        }
    }

    async fn connect(&self) -> Result<Sessions> {
        let (s, t) = tokio::join!(self.connector.source(), self.connector.target());
        Ok(Sessions {
            source: s?,
            target: t?,
        })
    }

    fn backoff(&self, attempt: u32, kind: &ErrorKind) -> Duration {
        if let ErrorKind::Throttled(Some(hint)) = kind {
            return *hint;
        }
        let exp = self.retry_base.saturating_mul(1 << attempt.min(6));
        exp.min(Duration::from_secs(60))
    }

    /// Runs jobs until the queue is drained. `sessions` may bring already open sessions.
    pub async fn run(
        &self,
        queue: &dyn JobQueue,
        mut sessions: Option<Sessions>,
    ) -> Result<Vec<FolderReport>> {
        let mut reports = Vec::new();
        while let Some(delivery) = queue.receive().await? {
            let s = match sessions.take() {
                Some(s) => Ok(s),
                None => self.connect().await,
            };
            let (mut report, err, keep) = match s {
                Ok(mut s) => {
                    let (report, err) = copy_folder(FolderPass {
                        job: &delivery.job,
                        source: &mut *s.source,
                        target: &mut *s.target,
                        store: &*self.store,
                        progress: &*self.progress,
                        limits: self.limits,
                    })
                    .await;
                    // After a network or protocol failure the session state is unknown.
                    let keep = !matches!(
                        err.as_ref().map(|e| &e.kind),
                        Some(ErrorKind::Network | ErrorKind::Protocol | ErrorKind::Throttled(_))
                    );
                    (report, err, keep.then_some(s))
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
            sessions = keep;
            if let Some(e) = &err
                && e.is_retryable()
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
                continue;
            }
            self.settle(&delivery, &mut report);
            queue.ack(&delivery).await?;
            reports.push(report);
        }
        Ok(reports)
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
