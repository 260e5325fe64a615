#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fleet scheduler on the test kit's fakes: a pass is planned into the job outbox and
//! published by the relay; an outage defers a mailbox instead of failing it, and the next
//! round plans it; a job lost in an outage is published again; a job whose end cannot
//! be recorded comes back until it is.

use mailshift_core::ErrorKind;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::mailbox::{JobOutcome, MailboxStatus};
use mailshift_core::plan::BatchLimits;
use mailshift_core::ports::{
    Connector, JobQueue, MailboxCredentials, MailboxOptions, MailboxStore, NoProgress,
    OneConnector, ServerIdentity, StateStore,
};
use mailshift_engine::fleet::Scheduler;
use mailshift_engine::retry::RetryPolicy;
use mailshift_engine::worker::{Leases, Worker};
use mailshift_queue::MemoryQueue;
use mailshift_testkit::{Fault, MemConnector, MemServer, MemStore, Op, message};
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    src: MemServer,
    dst: MemServer,
    connector: Arc<dyn Connector>,
    store: Arc<MemStore>,
    queue: Arc<MemoryQueue>,
    scheduler: Scheduler,
}

async fn fixture() -> Fixture {
    let id = |h: &str| ServerIdentity {
        peer: None,
        id: vec![("name".into(), h.into())],
    };
    let src = MemServer::new().with_identity(id("old"));
    let dst = MemServer::new().with_identity(id("new"));
    src.create("Archive", None);
    src.create("Sent", None);
    for (f, n) in [("INBOX", 5), ("Archive", 3), ("Sent", 2)] {
        for i in 0..n {
            src.put(f, &message(f, i), &[]);
        }
    }
    let store = Arc::new(MemStore::new());
    let from: Endpoint = "imap://alice@old.example".parse().unwrap();
    let to: Endpoint = "imaps://alice@new.example".parse().unwrap();
    store
        .add_mailbox(
            &from,
            &to,
            Some("acme"),
            &MailboxOptions::default(),
            &MailboxCredentials {
                source_password: "a".to_string().into(),
                dest_password: "b".to_string().into(),
            },
        )
        .await
        .unwrap();
    let queue = Arc::new(MemoryQueue::new());
    let connector: Arc<dyn Connector> = Arc::new(MemConnector::new(&src, &dst));
    let scheduler = Scheduler {
        state: store.clone() as Arc<dyn StateStore>,
        mailboxes: store.clone() as Arc<dyn MailboxStore>,
        connectors: Arc::new(OneConnector(connector.clone())),
        queue: queue.clone() as Arc<dyn JobQueue>,
        interval: Duration::from_secs(3600),
        split_above: None,
        cutovers: None,
        batches: None,
        owner: "test/1".into(),
        parallel: 4,
        per_host: 2,
        outage_retry: Duration::from_secs(15),
        lost_after: Duration::from_secs(600),
        stopping: Default::default(),
        planning_lease: mailshift_engine::fleet::PLANNING_LEASE,
    };
    Fixture {
        src,
        dst,
        connector,
        store,
        queue,
        scheduler,
    }
}

/// Jobs waiting in the queue (taken off it to count them).
async fn drain(q: &MemoryQueue) -> usize {
    let mut n = 0;
    while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_millis(50), q.receive()).await {
        n += 1;
    }
    n
}

async fn status(store: &MemStore) -> MailboxStatus {
    store.mailboxes(None).await.unwrap()[0].status
}

#[tokio::test]
async fn a_pass_is_planned_into_the_outbox_and_published_once() {
    let f = fixture().await;
    let round = f.scheduler.round(true).await.unwrap();
    assert_eq!(
        (round.mailboxes, round.jobs, round.failed),
        (1, 3, 0),
        "{round:?}"
    );
    assert_eq!(round.published, 3);
    assert_eq!(f.store.unpublished(), 0);
    assert_eq!(status(&f.store).await, MailboxStatus::Syncing);
    // A second round while the pass runs plans nothing new and publishes nothing twice.
    let again = f.scheduler.round(false).await.unwrap();
    assert_eq!(again.published, 0, "{again:?}");
    assert_eq!(drain(&f.queue).await, 3);
}

#[tokio::test]
async fn an_unreachable_source_defers_the_mailbox_instead_of_failing_it() {
    let f = fixture().await;
    f.src
        .fault(Fault::on(Op::Connect, ErrorKind::Unreachable).times(1));
    let round = f.scheduler.round(true).await.unwrap();
    assert_eq!(
        (round.deferred, round.failed, round.jobs),
        (1, 0, 0),
        "{round:?}"
    );
    assert_ne!(status(&f.store).await, MailboxStatus::Failed);
    assert_eq!(f.src.writes(), 0);
    // The server is back: the next round plans the pass.
    let round = f.scheduler.round(true).await.unwrap();
    assert_eq!((round.jobs, round.failed), (3, 0), "{round:?}");
    assert_eq!(status(&f.store).await, MailboxStatus::Syncing);
}

#[tokio::test]
async fn a_store_outage_leaves_nothing_half_planned() {
    let f = fixture().await;
    f.store.set_down(true);
    assert!(f.scheduler.round(true).await.is_err());
    assert_eq!(drain(&f.queue).await, 0);
    f.store.set_down(false);
    let round = f.scheduler.round(true).await.unwrap();
    assert_eq!((round.jobs, round.published), (3, 3), "{round:?}");
}

/// A fleet worker (folder leases in the store) with back-offs of milliseconds.
fn fleet_worker(f: &Fixture) -> Worker {
    let mut w = Worker::new(
        Arc::new(OneConnector(f.connector.clone())),
        f.store.clone() as Arc<dyn StateStore>,
        Arc::new(NoProgress),
        BatchLimits::default(),
    );
    w.leases = Some(Leases {
        store: f.store.clone() as Arc<dyn MailboxStore>,
        owner: "worker/1".into(),
        ttl: Duration::from_secs(30),
    });
    w.retry = RetryPolicy {
        base: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    w
}

#[tokio::test]
async fn a_job_whose_end_cannot_be_recorded_comes_back_until_it_is() {
    let f = fixture().await;
    f.scheduler.round(true).await.unwrap();
    // The database is away each time one of the first two jobs ends.
    f.store.fail_job_finished(2);
    f.queue.close();
    let w = fleet_worker(&f);
    tokio::time::timeout(Duration::from_secs(10), w.run(&*f.queue, None))
        .await
        .expect("the worker did not drain the queue")
        .unwrap();
    assert_eq!(status(&f.store).await, MailboxStatus::Synced);
    assert_eq!(f.dst.contents(), f.src.contents());
    assert_eq!(f.src.writes(), 0);
}

#[tokio::test]
async fn a_job_lost_in_an_outage_is_published_again_once_the_queue_is_empty() {
    let mut f = fixture().await;
    f.scheduler.lost_after = Duration::ZERO;
    f.scheduler.round(true).await.unwrap();
    let take = || async { f.queue.receive().await.unwrap().unwrap() };
    // Swallowed: delivered and acknowledged, never run nor recorded.
    let lost = take().await;
    f.queue.ack(&lost).await.unwrap();
    // While jobs wait in the queue, none is taken for lost.
    let r = f.scheduler.round(false).await.unwrap();
    assert_eq!(r.requeued, 0, "{r:?}");
    // One runs on a worker (its folder leased), one is over.
    let running = take().await;
    let done = take().await;
    assert!(
        f.store
            .claim_folder(
                running.job.migration_id,
                &running.job.state_key(),
                &running.job.dest_folder,
                "worker/1",
                Duration::from_secs(30),
            )
            .await
            .unwrap()
    );
    f.store
        .job_finished(&done.job, JobOutcome::Done, None)
        .await
        .unwrap();
    let r = f.scheduler.round(false).await.unwrap();
    assert_eq!((r.requeued, r.published), (1, 1), "{r:?}");
    let again = take().await;
    assert_eq!(again.job.id, lost.job.id);
    // Published again, it is not lost again while it waits.
    f.queue
        .retry(&again, Duration::from_secs(60))
        .await
        .unwrap();
    let r = f.scheduler.round(false).await.unwrap();
    assert_eq!(r.requeued, 0, "{r:?}");
}
