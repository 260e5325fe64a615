//! Opening the fleet's queue, and a wrapper that ends a worker once the queue stays idle
//! (batch runs, tests).

use mailshift_core::Result;
use mailshift_core::ports::{Delivery, JobQueue};
use mailshift_queue::AmqpQueue;
use std::sync::Arc;
use std::time::Duration;

/// The scheduler's handle: it publishes and never takes a job.
pub async fn publisher(url: &str, name: &str) -> anyhow::Result<Arc<dyn JobQueue>> {
    Ok(Arc::new(AmqpQueue::publisher(url, name).await?))
}

/// `prefetch`: deliveries held unacknowledged at once. A worker asks for as many as it
/// runs, so it never hoards jobs (a big folder's slices) that idle workers could take.
pub async fn open(url: &str, name: &str, prefetch: u16) -> anyhow::Result<Arc<dyn JobQueue>> {
    Ok(Arc::new(AmqpQueue::connect(url, name, prefetch).await?))
}

/// `receive` returns `None` once no job arrived for `idle`.
pub struct IdleExit {
    inner: Arc<dyn JobQueue>,
    idle: Duration,
}

impl IdleExit {
    pub fn new(inner: Arc<dyn JobQueue>, idle: Duration) -> Self {
        IdleExit { inner, idle }
    }
}

#[async_trait::async_trait]
impl JobQueue for IdleExit {
    async fn publish(&self, job: &mailshift_core::job::FolderJob) -> Result<()> {
        self.inner.publish(job).await
    }
    async fn receive(&self) -> Result<Option<Delivery>> {
        match tokio::time::timeout(self.idle, self.inner.receive()).await {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }
    async fn ack(&self, d: &Delivery) -> Result<()> {
        self.inner.ack(d).await
    }
    async fn retry(&self, d: &Delivery, delay: Duration) -> Result<()> {
        self.inner.retry(d, delay).await
    }
    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<()> {
        self.inner.dead_letter(d, reason).await
    }
    async fn depth(&self) -> Result<Option<u64>> {
        self.inner.depth().await
    }
    async fn waiting(&self) -> Result<Option<u64>> {
        self.inner.waiting().await
    }
}
