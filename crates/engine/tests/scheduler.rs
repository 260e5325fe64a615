#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fleet scheduler on the test kit's fakes: a pass is planned into the job outbox and
//! published by the relay; an outage defers a mailbox instead of failing it, and the next
//! round plans it.

use mailshift_core::ErrorKind;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::mailbox::MailboxStatus;
use mailshift_core::ports::{
    Connector, JobQueue, MailboxCredentials, MailboxOptions, MailboxStore, OneConnector,
    ServerIdentity, StateStore,
};
use mailshift_engine::fleet::Scheduler;
use mailshift_queue::MemoryQueue;
use mailshift_testkit::{Fault, MemConnector, MemServer, MemStore, Op, message};
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    src: MemServer,
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
        connectors: Arc::new(OneConnector(connector)),
        queue: queue.clone() as Arc<dyn JobQueue>,
        interval: Duration::from_secs(3600),
        split_above: None,
        cutovers: None,
        batches: None,
        owner: "test/1".into(),
        parallel: 4,
        per_host: 2,
        outage_retry: Duration::from_secs(15),
    };
    Fixture {
        src,
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
