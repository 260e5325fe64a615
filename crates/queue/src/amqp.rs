//! The fleet's job queue on RabbitMQ (lapin): a durable quorum queue of folder jobs,
//! publisher confirms on every publish, bounded prefetch and manual acks after the
//! checkpoint. Retries go through a delay queue (per-message TTL, dead-lettered back to
//! the job queue); jobs that failed for good go to `<queue>.dead` with their error.
//!
//! Connection loss: the next `receive`/`publish` reconnects (with backoff) and
//! re-declares everything. Deliveries of a dead channel cannot be acked any more; RabbitMQ
//! redelivers them (`redelivered`), and an ack for them is ignored. Jobs are idempotent
//! (checkpoints + crash reconciliation), so a redelivered job is safe.

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use mailshift_core::job::FolderJob;
use mailshift_core::ports::{Delivery, JobQueue};
use mailshift_core::{Error, ErrorKind, Result};
use std::sync::Mutex;
use std::time::Duration;

/// Delivery tags carry the connection's epoch in their high bits, so an ack for a
/// delivery of an earlier (dead) channel is recognised and skipped.
const EPOCH_SHIFT: u32 = 40;

struct Live {
    epoch: u64,
    _conn: Connection,
    channel: Channel,
}

pub struct AmqpQueue {
    url: String,
    queue: String,
    prefetch: u16,
    live: Mutex<Option<(u64, Channel)>>,
    /// The connection of the current epoch, and its consumer (None for a publisher).
    consumer: tokio::sync::Mutex<Option<(u64, Option<Consumer>, Connection)>>,
    connecting: tokio::sync::Mutex<u64>,
    /// Takes deliveries; false for a process that only publishes (the scheduler), which
    /// would otherwise be handed jobs it never runs.
    consume: bool,
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

    async fn new(url: &str, queue: &str, prefetch: u16, consume: bool) -> Result<AmqpQueue> {
        let q = AmqpQueue {
            url: url.to_string(),
            queue: queue.to_string(),
            prefetch: prefetch.max(1),
            live: Mutex::new(None),
            consumer: tokio::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
            consume,
        };
        q.open().await?;
        Ok(q)
    }

    async fn open_once(&self, epoch: u64) -> Result<Live> {
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
        Ok(Live {
            epoch,
            _conn: conn,
            channel,
        })
    }

    fn delay_queue(&self) -> String {
        format!("{}.delay", self.queue)
    }

    fn dead_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }

    /// (Re)connects: a new epoch with a fresh channel and consumer.
    async fn open(&self) -> Result<()> {
        let mut epoch = self.connecting.lock().await;
        *epoch += 1;
        let live = self.open_once(*epoch).await?;
        let consumer = if self.consume {
            Some(
                live.channel
                    .basic_consume(
                        self.queue.as_str().into(),
                        format!("mailshift-{}-{}", std::process::id(), live.epoch)
                            .as_str()
                            .into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| err(&self.url, "cannot consume", e))?,
            )
        } else {
            None
        };
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((live.epoch, live.channel.clone()));
        *self.consumer.lock().await = Some((live.epoch, consumer, live._conn));
        Ok(())
    }

    /// Reconnects with backoff until it works (a broker restart takes a while).
    async fn reconnect(&self, seen_epoch: u64) {
        let mut delay = Duration::from_millis(200);
        loop {
            if *self.connecting.lock().await != seen_epoch {
                return; // another task already reconnected
            }
            match self.open().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e.message, retry_in_ms = delay.as_millis() as u64, "RabbitMQ unavailable");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn channel(&self) -> Option<(u64, Channel)> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn publish_to(&self, queue: &str, job: &FolderJob, props: BasicProperties) -> Result<()> {
        let payload = serde_json::to_vec(job)
            .map_err(|e| Error::new(ErrorKind::Queue, format!("cannot encode a job: {e}")))?;
        for _ in 0..5 {
            let Some((epoch, ch)) = self.channel() else {
                self.reconnect(0).await;
                continue;
            };
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
                    tracing::warn!(error = %err(&self.url, "publish", e).message, "reconnecting");
                    self.reconnect(epoch).await;
                }
            }
        }
        Err(Error::new(
            ErrorKind::Queue,
            format!("RabbitMQ {}: cannot publish a job", scrub(&self.url)),
        ))
    }

    async fn ack_tag(&self, tag: u64) -> Result<()> {
        let epoch = tag >> EPOCH_SHIFT;
        let Some((live, ch)) = self.channel() else {
            return Ok(());
        };
        if live != epoch {
            // From a dead channel: RabbitMQ redelivers it; nothing to ack.
            return Ok(());
        }
        if let Err(e) = ch
            .basic_ack(tag & ((1 << EPOCH_SHIFT) - 1), BasicAckOptions::default())
            .await
        {
            tracing::warn!(error = %err(&self.url, "ack", e).message, "ack lost; the job will be redelivered");
        }
        Ok(())
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
        loop {
            let mut guard = self.consumer.lock().await;
            let Some((epoch, consumer, _)) = guard.as_mut() else {
                drop(guard);
                self.reconnect(0).await;
                continue;
            };
            let epoch = *epoch;
            let Some(consumer) = consumer.as_mut() else {
                return Err(Error::new(
                    ErrorKind::Queue,
                    format!("queue {}: this connection only publishes", self.queue),
                ));
            };
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
                    self.reconnect(epoch).await;
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
        let Some((_, ch)) = self.channel() else {
            return Ok(None);
        };
        // A passive declare changes nothing and reports the ready messages.
        let q = ch
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| err(&self.url, "cannot read the queue depth", e))?;
        Ok(Some(u64::from(q.message_count())))
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
