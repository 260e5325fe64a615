//! The fleet's job queue on RabbitMQ (lapin): a durable quorum queue of folder jobs,
//! publisher confirms on every publish, bounded prefetch and manual acks after the
//! checkpoint. Retries go through a delay queue (per-message TTL, dead-lettered back to
//! the job queue); jobs that failed for good go to `<queue>.dead` with their error.
//!
//! Connection loss heals itself: the first caller that finds the connection dead
//! reconnects with capped exponential back-off for as long as it takes (a receive) or up
//! to `patience` (a publish, which then fails and is retried by its caller), while every
//! other caller waits on the same attempt instead of spinning. Everything is declared
//! again on each new connection, and each connection gets a new epoch. Deliveries of a
//! dead channel cannot be acked any more: RabbitMQ redelivers them (`redelivered`), and
//! an ack carrying an old epoch is skipped. Jobs are idempotent (checkpoints, leases,
//! crash reconciliation), so a redelivered job is safe.

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use mailshift_core::job::FolderJob;
use mailshift_core::ports::{Delivery, JobQueue};
use mailshift_core::{Error, ErrorKind, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Delivery tags carry the connection's epoch in their high bits, so an ack for a
/// delivery of an earlier (dead) channel is recognised and skipped.
const EPOCH_SHIFT: u32 = 40;

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Numbers consumer tags, which must be unique on a channel.
static CONSUMER_TAGS: AtomicU64 = AtomicU64::new(0);

/// One live connection and its channel.
struct Link {
    epoch: u64,
    conn: Connection,
    channel: Channel,
}

pub struct AmqpQueue {
    url: String,
    queue: String,
    prefetch: u16,
    /// Takes deliveries; false for a process that only publishes (the scheduler), which
    /// would otherwise be handed jobs it never runs.
    consume: bool,
    /// How long a publish waits for the broker to come back before it fails.
    patience: Duration,
    /// The current connection; None once it is known dead. Whoever holds this lock
    /// while it is None is the one reconnecting; the others wait for the result.
    link: tokio::sync::Mutex<Option<Link>>,
    /// The consumer of the current connection (workers), made by the first `receive`
    /// after a connection is opened.
    consumer: tokio::sync::Mutex<Option<(u64, Consumer)>>,
    /// Epoch of the live connection (0: none), readable without waiting on a lock.
    live: AtomicU64,
    next_epoch: AtomicU64,
}

/// The URL without its password, for messages.
fn scrub(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn err(url: &str, what: &str, e: impl std::fmt::Display) -> Error {
    // lapin errors may quote the URL; never let the password through.
    let text = e.to_string();
    let text = if let Some(at) = url.rfind('@') {
        text.replace(&url[..at], "***")
    } else {
        text
    };
    Error::new(
        ErrorKind::Queue,
        format!("RabbitMQ {}: {what}: {text}", scrub(url)),
    )
}

impl AmqpQueue {
    /// Connects and declares the queues (`queue`, `queue.delay`, `queue.dead`).
    pub async fn connect(url: &str, queue: &str, prefetch: u16) -> Result<AmqpQueue> {
        Self::new(url, queue, prefetch, true).await
    }

    /// Like [`AmqpQueue::connect`], for a process that only publishes: no consumer, so
    /// the broker never hands it a job ([`JobQueue::receive`] is an error).
    pub async fn publisher(url: &str, queue: &str) -> Result<AmqpQueue> {
        Self::new(url, queue, 1, false).await
    }

    /// How long publishes wait for a broker that is away (default 30 s).
    pub fn with_patience(mut self, patience: Duration) -> AmqpQueue {
        self.patience = patience;
        self
    }

    async fn new(url: &str, queue: &str, prefetch: u16, consume: bool) -> Result<AmqpQueue> {
        let q = AmqpQueue {
            url: url.to_string(),
            queue: queue.to_string(),
            prefetch: prefetch.max(1),
            consume,
            patience: Duration::from_secs(30),
            link: tokio::sync::Mutex::new(None),
            consumer: tokio::sync::Mutex::new(None),
            live: AtomicU64::new(0),
            next_epoch: AtomicU64::new(1),
        };
        // The first connection is made at once: a wrong URL or password is said now.
        let link = q
            .open_once(q.next_epoch.fetch_add(1, Ordering::SeqCst))
            .await?;
        q.live.store(link.epoch, Ordering::SeqCst);
        *q.link.lock().await = Some(link);
        metrics::gauge!("mailshift_queue_connected").set(1.0);
        Ok(q)
    }

    async fn open_once(&self, epoch: u64) -> Result<Link> {
        // Named after the queue and process, so operators (and tests) can tell workers apart.
        let name = format!("mailshift {} pid {}", self.queue, std::process::id());
        let conn = Connection::connect(
            &self.url,
            ConnectionProperties::default().with_connection_name(name.as_str().into()),
        )
        .await
        .map_err(|e| err(&self.url, "cannot connect", e))?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| err(&self.url, "cannot open a channel", e))?;
        let mut main_args = FieldTable::default();
        main_args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(self.queue.as_str().into(), durable, main_args)
            .await
            .map_err(|e| err(&self.url, "cannot declare the job queue", e))?;
        let mut delay_args = FieldTable::default();
        delay_args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from("")),
        );
        delay_args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(self.queue.as_str())),
        );
        channel
            .queue_declare(self.delay_queue().as_str().into(), durable, delay_args)
            .await
            .map_err(|e| err(&self.url, "cannot declare the delay queue", e))?;
        channel
            .queue_declare(
                self.dead_queue().as_str().into(),
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| err(&self.url, "cannot declare the dead-letter queue", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| err(&self.url, "cannot enable publisher confirms", e))?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| err(&self.url, "cannot set the prefetch", e))?;
        Ok(Link {
            epoch,
            conn,
            channel,
        })
    }

    fn delay_queue(&self) -> String {
        format!("{}.delay", self.queue)
    }

    fn dead_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }

    /// The live channel, reconnecting first if the connection died; waits at most until
    /// `deadline` (None: for as long as it takes).
    async fn channel(&self, deadline: Option<Instant>) -> Result<(u64, Channel)> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.conn.status().connected() && l.channel.status().connected() {
                return Ok((l.epoch, l.channel.clone()));
            }
            tracing::warn!(queue = %self.queue, "RabbitMQ connection lost; reconnecting");
        }
        *link = None;
        self.live.store(0, Ordering::SeqCst);
        metrics::gauge!("mailshift_queue_connected").set(0.0);
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        let mut attempts = 0u32;
        loop {
            let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
            match self.open_once(epoch).await {
                Ok(l) => {
                    tracing::info!(
                        queue = %self.queue,
                        after_ms = started.elapsed().as_millis() as u64,
                        "RabbitMQ connection back"
                    );
                    let out = (l.epoch, l.channel.clone());
                    self.live.store(l.epoch, Ordering::SeqCst);
                    metrics::gauge!("mailshift_queue_connected").set(1.0);
                    *link = Some(l);
                    return Ok(out);
                }
                Err(e) => {
                    attempts += 1;
                    // A line for the first failures, then about one every minute.
                    if attempts <= 3 || attempts.is_multiple_of(6) {
                        tracing::warn!(
                            error = %e.message,
                            down_for_s = started.elapsed().as_secs(),
                            retry_in_ms = delay.as_millis() as u64,
                            "RabbitMQ unavailable"
                        );
                    }
                    if let Some(d) = deadline
                        && Instant::now() + delay >= d
                    {
                        return Err(Error::new(
                            ErrorKind::Queue,
                            format!(
                                "RabbitMQ {}: unavailable for {}s: {}",
                                scrub(&self.url),
                                started.elapsed().as_secs(),
                                e.message
                            ),
                        ));
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Forgets the connection of `epoch` (it failed); the next caller reconnects.
    async fn lost(&self, epoch: u64) {
        let mut link = self.link.lock().await;
        if link.as_ref().is_some_and(|l| l.epoch == epoch) {
            *link = None;
            self.live.store(0, Ordering::SeqCst);
            metrics::gauge!("mailshift_queue_connected").set(0.0);
        }
    }

    async fn publish_to(&self, queue: &str, job: &FolderJob, props: BasicProperties) -> Result<()> {
        let payload = serde_json::to_vec(job)
            .map_err(|e| Error::new(ErrorKind::Queue, format!("cannot encode a job: {e}")))?;
        let deadline = Instant::now() + self.patience;
        loop {
            let (epoch, ch) = self.channel(Some(deadline)).await?;
            let sent = async {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &payload,
                        props.clone().with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                Ok::<_, lapin::Error>(confirm.is_ack())
            }
            .await;
            match sent {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    return Err(Error::new(
                        ErrorKind::Queue,
                        format!("RabbitMQ refused a job for queue {queue} (nack)"),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %err(&self.url, "publish", e).message, "publish failed; reconnecting");
                    self.lost(epoch).await;
                    if Instant::now() >= deadline {
                        return Err(Error::new(
                            ErrorKind::Queue,
                            format!("RabbitMQ {}: cannot publish a job", scrub(&self.url)),
                        ));
                    }
                }
            }
        }
    }

    async fn ack_tag(&self, tag: u64) -> Result<()> {
        let epoch = tag >> EPOCH_SHIFT;
        if self.live.load(Ordering::SeqCst) != epoch {
            // From a dead channel: RabbitMQ redelivers it; nothing to ack.
            return Ok(());
        }
        let ch = {
            let link = self.link.lock().await;
            match link.as_ref() {
                Some(l) if l.epoch == epoch => l.channel.clone(),
                _ => return Ok(()),
            }
        };
        if let Err(e) = ch
            .basic_ack(tag & ((1 << EPOCH_SHIFT) - 1), BasicAckOptions::default())
            .await
        {
            tracing::warn!(error = %err(&self.url, "ack", e).message, "ack lost; the job will be redelivered");
        }
        Ok(())
    }

    /// Moves every job of `<queue>.dead` back to the job queue (attempts and retry
    /// budget reset) and returns them. `reopen` runs for each job before it is published
    /// again (so its accounting expects it before a worker can finish it); a job it
    /// fails for stays in the dead-letter queue. For `mailshift jobs retry-dead`.
    pub async fn retry_dead<F, Fut>(&self, mut reopen: F) -> Result<Vec<FolderJob>>
    where
        F: FnMut(FolderJob) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let deadline = Some(Instant::now() + self.patience);
        let mut moved = Vec::new();
        loop {
            let (_, ch) = self.channel(deadline).await?;
            let got = ch
                .basic_get(
                    self.dead_queue().as_str().into(),
                    BasicGetOptions::default(),
                )
                .await
                .map_err(|e| err(&self.url, "cannot read the dead-letter queue", e))?;
            let Some(msg) = got else {
                return Ok(moved);
            };
            let tag = msg.delivery.delivery_tag;
            match serde_json::from_slice::<FolderJob>(&msg.delivery.data) {
                Ok(mut job) => {
                    job.attempt = 1;
                    job.first_failed_at = None;
                    // On an error the letter stays unacknowledged on this channel: back in
                    // the dead queue when the channel closes.
                    reopen(job.clone()).await?;
                    self.publish(&job).await?;
                    moved.push(job);
                }
                Err(e) => {
                    tracing::error!(error = %e, "dropping an undecodable dead letter");
                }
            }
            ch.basic_ack(tag, BasicAckOptions::default())
                .await
                .map_err(|e| err(&self.url, "cannot remove a dead letter", e))?;
        }
    }

    /// Jobs waiting in the dead-letter queue.
    pub async fn dead_depth(&self) -> Result<u64> {
        self.count(&self.dead_queue()).await
    }

    async fn count(&self, queue: &str) -> Result<u64> {
        let (_, ch) = self
            .channel(Some(Instant::now() + Duration::from_secs(5)))
            .await?;
        // A passive declare changes nothing and reports the ready messages.
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| err(&self.url, "cannot read a queue's depth", e))?;
        Ok(u64::from(q.message_count()))
    }
}

#[async_trait]
impl JobQueue for AmqpQueue {
    async fn publish(&self, job: &FolderJob) -> Result<()> {
        let span = tracing::info_span!(
            "amqp.publish",
            queue = %self.queue,
            folder = %job.source_display,
            migration = %job.migration_id,
        );
        let _enter = span.enter();
        let mut headers = FieldTable::default();
        crate::trace::insert(&mut headers, &crate::trace::current());
        drop(_enter);
        use tracing::Instrument;
        self.publish_to(
            &self.queue,
            job,
            BasicProperties::default().with_headers(headers),
        )
        .instrument(span)
        .await
    }

    async fn receive(&self) -> Result<Option<Delivery>> {
        if !self.consume {
            return Err(Error::new(
                ErrorKind::Queue,
                format!("queue {}: this connection only publishes", self.queue),
            ));
        }
        loop {
            let mut guard = self.consumer.lock().await;
            let current = self.live.load(Ordering::SeqCst);
            if current == 0 || guard.as_ref().is_none_or(|(e, _)| *e != current) {
                *guard = None;
                // Waits for the broker for as long as it takes, holding the consumer slot:
                // a second receiver setting up its own consumer would replace this one,
                // and the broker would go on sending to the orphan.
                let (epoch, ch) = self.channel(None).await?;
                let consumer = ch
                    .basic_consume(
                        self.queue.as_str().into(),
                        // Unique per consumer: a tag reused on a channel closes it.
                        format!(
                            "mailshift-{}-{epoch}-{}",
                            std::process::id(),
                            CONSUMER_TAGS.fetch_add(1, Ordering::Relaxed)
                        )
                        .as_str()
                        .into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await;
                match consumer {
                    Ok(c) => *guard = Some((epoch, c)),
                    Err(e) => {
                        drop(guard);
                        tracing::warn!(error = %err(&self.url, "consume", e).message, "reconnecting");
                        self.lost(epoch).await;
                    }
                }
                continue;
            }
            let Some((epoch, consumer)) = guard.as_mut() else {
                continue;
            };
            let epoch = *epoch;
            match consumer.next().await {
                Some(Ok(d)) => {
                    let tag = (epoch << EPOCH_SHIFT) | d.delivery_tag;
                    match serde_json::from_slice::<FolderJob>(&d.data) {
                        Ok(job) => {
                            return Ok(Some(Delivery {
                                job,
                                tag,
                                redelivered: d.redelivered,
                                trace: crate::trace::extract(d.properties.headers().as_ref()),
                            }));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "dropping an undecodable job");
                            drop(guard);
                            self.ack_tag(tag).await?;
                        }
                    }
                }
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(error = %err(&self.url, "consume", e).message, "reconnecting");
                    }
                    *guard = None;
                    drop(guard);
                    self.lost(epoch).await;
                }
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<()> {
        self.ack_tag(delivery.tag).await
    }

    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let mut job = delivery.job.clone();
        job.attempt += 1;
        let ms = delay.as_millis().max(1).to_string();
        let mut headers = FieldTable::default();
        crate::trace::insert(&mut headers, &delivery.trace);
        self.publish_to(
            &self.delay_queue(),
            &job,
            BasicProperties::default()
                .with_expiration(ms.as_str().into())
                .with_headers(headers),
        )
        .await?;
        self.ack_tag(delivery.tag).await
    }

    async fn depth(&self) -> Result<Option<u64>> {
        Ok(Some(self.count(&self.queue).await?))
    }

    async fn waiting(&self) -> Result<Option<u64>> {
        let ready = self.count(&self.queue).await?;
        let delayed = self.count(&self.delay_queue()).await?;
        Ok(Some(ready + delayed))
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("x-mailshift-error"),
            AMQPValue::LongString(LongString::from(reason)),
        );
        crate::trace::insert(&mut headers, &delivery.trace);
        self.publish_to(
            &self.dead_queue(),
            &delivery.job,
            BasicProperties::default().with_headers(headers),
        )
        .await?;
        self.ack_tag(delivery.tag).await
    }
}
