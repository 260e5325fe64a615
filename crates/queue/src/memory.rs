//! An in-process job queue with acknowledgements and delayed retries.

use async_trait::async_trait;
use mailshift_core::job::FolderJob;
use mailshift_core::ports::{Delivery, JobQueue};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    ready: VecDeque<(FolderJob, bool)>,
    /// Jobs waiting for their retry time.
    delayed: Vec<(Instant, FolderJob)>,
    /// Delivered, not yet acknowledged.
    in_flight: HashMap<u64, FolderJob>,
    next_tag: u64,
    /// No more publishes will come: `receive` ends once everything is acknowledged.
    closed: bool,
}

/// Jobs live in memory; `close` once everything is published so workers stop when the
/// queue is drained.
#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    changed: Notify,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Next {
    Job(Box<Delivery>),
    Done,
    Wait(Option<Instant>),
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn publish(&self, job: &FolderJob) -> mailshift_core::Result<()> {
        self.lock().ready.push_back((job.clone(), false));
        self.changed.notify_waiters();
        Ok(())
    }

    async fn receive(&self) -> mailshift_core::Result<Option<Delivery>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = {
                let mut st = self.lock();
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut st.delayed)
                    .into_iter()
                    .partition(|(t, _)| *t <= now);
                st.delayed = later;
                for (_, job) in due {
                    st.ready.push_back((job, true));
                }
                if let Some((job, redelivered)) = st.ready.pop_front() {
                    st.next_tag += 1;
                    let tag = st.next_tag;
                    st.in_flight.insert(tag, job.clone());
                    Next::Job(Box::new(Delivery {
                        job,
                        tag,
                        redelivered,
                        trace: Vec::new(),
                    }))
                } else if st.closed && st.in_flight.is_empty() && st.delayed.is_empty() {
                    Next::Done
                } else {
                    Next::Wait(st.delayed.iter().map(|(t, _)| *t).min())
                }
            };
            match next {
                Next::Job(d) => return Ok(Some(*d)),
                Next::Done => {
                    // Wake the other receivers so they see the end too.
                    self.changed.notify_waiters();
                    return Ok(None);
                }
                Next::Wait(Some(deadline)) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
                Next::Wait(None) => notified.await,
            }
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    async fn depth(&self) -> mailshift_core::Result<Option<u64>> {
        Ok(Some(self.lock().ready.len() as u64))
    }

    async fn waiting(&self) -> mailshift_core::Result<Option<u64>> {
        let st = self.lock();
        Ok(Some((st.ready.len() + st.delayed.len()) as u64))
    }

    async fn ack(&self, delivery: &Delivery) -> mailshift_core::Result<()> {
        self.lock().in_flight.remove(&delivery.tag);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn retry(&self, delivery: &Delivery, delay: Duration) -> mailshift_core::Result<()> {
        {
            let mut st = self.lock();
            if let Some(mut job) = st.in_flight.remove(&delivery.tag) {
                job.attempt += 1;
                st.delayed.push((Instant::now() + delay, job));
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use uuid::Uuid;

    fn job(name: &str) -> FolderJob {
        FolderJob {
            id: Uuid::nil(),
            migration_id: Uuid::nil(),
            source_folder: name.into(),
            dest_folder: name.into(),
            source_display: name.into(),
            dest_display: name.into(),
            attempt: 1,
            delete: true,
            adopt_existing: false,
            uid_range: None,
            dual_reception: false,
            first_failed_at: None,
            label_folders: Vec::new(),
        }
    }

    #[tokio::test]
    async fn drains_with_retries_across_workers() {
        let q = Arc::new(MemoryQueue::new());
        for n in ["a", "b", "c"] {
            q.publish(&job(n)).await.unwrap();
        }
        q.close();
        let mut handles = Vec::new();
        for _ in 0..2 {
            let q = q.clone();
            handles.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(d) = q.receive().await.unwrap() {
                    if d.job.source_folder == "b" && d.job.attempt == 1 {
                        q.retry(&d, Duration::from_millis(20)).await.unwrap();
                        continue;
                    }
                    seen.push((d.job.source_folder.clone(), d.job.attempt, d.redelivered));
                    q.ack(&d).await.unwrap();
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all.sort();
        assert_eq!(
            all,
            vec![
                ("a".into(), 1, false),
                ("b".into(), 2, true),
                ("c".into(), 1, false)
            ]
        );
    }
}
