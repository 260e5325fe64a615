#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One contract for both job queues: the in-process `MemoryQueue` and `AmqpQueue` on the
//! RabbitMQ at 127.0.0.1:5672 (guest/guest; `MAILSHIFT_TEST_SKIP_AMQP=1` skips it).
//! Each property is an async fn over a fresh queue.

use mailshift_core::job::FolderJob;
use mailshift_core::ports::JobQueue;
use mailshift_queue::{AmqpQueue, MemoryQueue};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn job(folder: &str) -> FolderJob {
    FolderJob {
        id: Uuid::new_v4(),
        migration_id: Uuid::new_v4(),
        source_folder: folder.into(),
        dest_folder: folder.into(),
        source_display: folder.into(),
        dest_display: folder.into(),
        attempt: 1,
        delete: true,
        adopt_existing: false,
        uid_range: None,
        dual_reception: false,
        first_failed_at: None,
        label_folders: Vec::new(),
    }
}

/// A receive that gives up after `wait` (`None`: nothing came).
async fn receive_within(
    q: &dyn JobQueue,
    wait: Duration,
) -> Option<mailshift_core::ports::Delivery> {
    tokio::time::timeout(wait, q.receive()).await.ok()?.unwrap()
}

mod suite {
    use super::*;

    pub async fn delivers_and_forgets_after_ack(q: Arc<dyn JobQueue>) {
        let j = job("INBOX");
        q.publish(&j).await.unwrap();
        let d = receive_within(&*q, Duration::from_secs(5))
            .await
            .expect("delivery");
        assert_eq!(d.job, j);
        assert!(!d.redelivered);
        q.ack(&d).await.unwrap();
        assert!(
            receive_within(&*q, Duration::from_millis(500))
                .await
                .is_none()
        );
    }

    pub async fn retry_comes_back_later_with_the_next_attempt(q: Arc<dyn JobQueue>) {
        let j = job("Sent");
        q.publish(&j).await.unwrap();
        let d = receive_within(&*q, Duration::from_secs(5)).await.unwrap();
        let t = Instant::now();
        q.retry(&d, Duration::from_millis(400)).await.unwrap();
        let again = receive_within(&*q, Duration::from_secs(5))
            .await
            .expect("retried job");
        assert!(
            t.elapsed() >= Duration::from_millis(350),
            "came back after {:?}",
            t.elapsed()
        );
        assert_eq!(again.job.id, j.id);
        assert_eq!(again.job.attempt, 2);
        q.ack(&again).await.unwrap();
    }

    pub async fn dead_letters_are_not_delivered_again(q: Arc<dyn JobQueue>) {
        q.publish(&job("Junk")).await.unwrap();
        let d = receive_within(&*q, Duration::from_secs(5)).await.unwrap();
        q.dead_letter(&d, "folder 'Junk': login refused")
            .await
            .unwrap();
        assert!(
            receive_within(&*q, Duration::from_millis(500))
                .await
                .is_none()
        );
    }

    pub async fn every_job_is_delivered_once_to_concurrent_consumers(q: Arc<dyn JobQueue>) {
        let jobs: Vec<FolderJob> = (0..40).map(|i| job(&format!("F{i}"))).collect();
        for j in &jobs {
            q.publish(j).await.unwrap();
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (q, seen) = (q.clone(), seen.clone());
                tokio::spawn(async move {
                    while let Some(d) = receive_within(&*q, Duration::from_millis(800)).await {
                        seen.lock().unwrap().push(d.job.id);
                        q.ack(&d).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        let mut want: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        want.sort();
        assert_eq!(got, want);
    }
}

macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn delivers_and_forgets_after_ack() {
                if let Some(q) = $make.await {
                    suite::delivers_and_forgets_after_ack(q).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn retry_comes_back_later_with_the_next_attempt() {
                if let Some(q) = $make.await {
                    suite::retry_comes_back_later_with_the_next_attempt(q).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn dead_letters_are_not_delivered_again() {
                if let Some(q) = $make.await {
                    suite::dead_letters_are_not_delivered_again(q).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn every_job_is_delivered_once_to_concurrent_consumers() {
                if let Some(q) = $make.await {
                    suite::every_job_is_delivered_once_to_concurrent_consumers(q).await;
                }
            }
        }
    };
}

async fn memory() -> Option<Arc<dyn JobQueue>> {
    Some(Arc::new(MemoryQueue::new()))
}

fn queue_name() -> String {
    format!("mailshift.contract.{}", Uuid::new_v4().simple())
}

/// An `AmqpQueue` whose queues are deleted from the broker when the test drops it.
struct Scratch {
    inner: AmqpQueue,
    name: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", ".delay", ".dead"] {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["delete_queue", &format!("{}{suffix}", self.name)])
                .output();
        }
    }
}

#[async_trait::async_trait]
impl JobQueue for Scratch {
    async fn publish(&self, job: &FolderJob) -> mailshift_core::Result<()> {
        self.inner.publish(job).await
    }
    async fn receive(&self) -> mailshift_core::Result<Option<mailshift_core::ports::Delivery>> {
        self.inner.receive().await
    }
    async fn ack(&self, d: &mailshift_core::ports::Delivery) -> mailshift_core::Result<()> {
        self.inner.ack(d).await
    }
    async fn retry(
        &self,
        d: &mailshift_core::ports::Delivery,
        delay: Duration,
    ) -> mailshift_core::Result<()> {
        self.inner.retry(d, delay).await
    }
    async fn dead_letter(
        &self,
        d: &mailshift_core::ports::Delivery,
        reason: &str,
    ) -> mailshift_core::Result<()> {
        self.inner.dead_letter(d, reason).await
    }
}

async fn amqp() -> Option<Arc<dyn JobQueue>> {
    if std::env::var_os("MAILSHIFT_TEST_SKIP_AMQP").is_some() {
        return None;
    }
    let name = queue_name();
    let inner = AmqpQueue::connect(AMQP, &name, 4).await.unwrap();
    Some(Arc::new(Scratch { inner, name }))
}

contract!(memory_queue, memory());
contract!(rabbitmq, amqp());

/// RabbitMQ only: a delivery that was never acked (the consumer died) comes back,
/// marked as redelivered, to the next consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_redelivers_what_a_dead_consumer_held() {
    if std::env::var_os("MAILSHIFT_TEST_SKIP_AMQP").is_some() {
        return;
    }
    let name = queue_name();
    let j = job("Archive");
    {
        let first = AmqpQueue::connect(AMQP, &name, 4).await.unwrap();
        first.publish(&j).await.unwrap();
        let d = receive_within(&first, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(d.job.id, j.id);
        // Dropped without an ack: its connection closes.
    }
    let second = AmqpQueue::connect(AMQP, &name, 4).await.unwrap();
    let d = receive_within(&second, Duration::from_secs(10))
        .await
        .expect("redelivered");
    assert_eq!(d.job.id, j.id);
    assert!(d.redelivered);
    second.ack(&d).await.unwrap();
    drop(Scratch {
        inner: second,
        name,
    });
}

/// RabbitMQ only: a publisher-only connection (the scheduler's) is never handed a job,
/// so a long-running scheduler cannot sit on one; the consumer gets them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_never_hands_a_job_to_a_publisher() {
    if std::env::var_os("MAILSHIFT_TEST_SKIP_AMQP").is_some() {
        return;
    }
    let name = queue_name();
    let publisher = AmqpQueue::publisher(AMQP, &name).await.unwrap();
    let consumer = AmqpQueue::connect(AMQP, &name, 1).await.unwrap();
    let jobs: Vec<FolderJob> = ["INBOX", "Sent", "Archive"].into_iter().map(job).collect();
    for j in &jobs {
        publisher.publish(j).await.unwrap();
    }
    for j in &jobs {
        let d = receive_within(&consumer, Duration::from_secs(5))
            .await
            .expect("every job reaches the consumer");
        assert_eq!(d.job.id, j.id);
        consumer.ack(&d).await.unwrap();
    }
    assert!(publisher.receive().await.is_err());
    drop(publisher);
    drop(Scratch {
        inner: consumer,
        name,
    });
}
