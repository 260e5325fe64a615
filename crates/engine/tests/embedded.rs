#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The engine's migration on in-memory fakes of its own ports (mailshift-testkit): the
//! decisions (what to copy, adopt, rename, retry, report) tested in milliseconds, with
//! faults scripted where real servers cannot be made to fail on cue. The IMAP, SQL and
//! AMQP adapters are tested against real servers in `tests/`.

use mailshift_core::ErrorKind;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::ports::{NoProgress, ServerIdentity, StateStore};
use mailshift_core::report::MigrationSummary;
use mailshift_engine::embedded::{MigrateOptions, migrate};
use mailshift_engine::retry::RetryPolicy;
use mailshift_queue::MemoryQueue;
use mailshift_testkit::{Fault, MemConnector, MemServer, MemStore, Op, message};
use std::sync::Arc;
use std::time::Duration;

fn servers() -> (MemServer, MemServer) {
    let identity = |host: &str| ServerIdentity {
        peer: None,
        id: vec![("name".into(), host.into())],
    };
    (
        MemServer::new().with_identity(identity("old")),
        MemServer::new().with_identity(identity("new")),
    )
}

fn fill(src: &MemServer) -> usize {
    src.create("Archive", None);
    src.create("Archive/2024", None);
    let mut n = 0;
    for (folder, count) in [("INBOX", 30), ("Archive", 12), ("Archive/2024", 7)] {
        for i in 0..count {
            let flags: &[&str] = if i % 3 == 0 { &["\\Seen"] } else { &[] };
            src.put(folder, &message(folder, i), flags);
            n += 1;
        }
    }
    n
}

async fn run(src: &MemServer, dst: &MemServer, store: &Arc<MemStore>) -> MigrationSummary {
    let from: Endpoint = "imap://alice@old.example".parse().unwrap();
    let to: Endpoint = "imaps://alice@new.example".parse().unwrap();
    migrate(
        &from,
        &to,
        Arc::new(MemConnector::new(src, dst)),
        store.clone() as Arc<dyn StateStore>,
        Arc::new(NoProgress),
        Arc::new(MemoryQueue::new()),
        MigrateOptions {
            // Back-offs of milliseconds: the decisions are under test, not the waiting.
            retry: RetryPolicy {
                base: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                outage_budget: Duration::from_secs(5),
                ..RetryPolicy::default()
            },
            ..MigrateOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn every_folder_is_copied_and_the_source_never_written() {
    let (src, dst) = servers();
    let total = fill(&src);
    let summary = run(&src, &dst, &Arc::new(MemStore::new())).await;
    assert!(summary.is_complete(), "{summary:#?}");
    assert_eq!(summary.copied() as usize, total);
    assert_eq!(dst.contents(), src.contents());
    assert_eq!(src.writes(), 0, "the old server was written to");
    assert_eq!(summary.dest_messages() as usize, total);
    assert!(summary.count_mismatches().is_empty());
}

#[tokio::test]
async fn a_lost_state_adopts_what_is_there_instead_of_copying_it_again() {
    let (src, dst) = servers();
    let total = fill(&src);
    run(&src, &dst, &Arc::new(MemStore::new())).await;
    let writes = dst.writes();
    // A new state: nothing recorded, everything already on the destination.
    let summary = run(&src, &dst, &Arc::new(MemStore::new())).await;
    assert!(summary.is_complete(), "{summary:#?}");
    assert_eq!(summary.copied(), 0);
    assert_eq!(summary.adopted() as usize, total);
    assert_eq!(dst.contents(), src.contents(), "no duplicate");
    // Only SELECTs (counted as writes by the fake): no APPEND, STORE or EXPUNGE.
    assert!(
        dst.writes() - writes <= 3,
        "{} writes",
        dst.writes() - writes
    );
}

#[tokio::test]
async fn connections_dropped_mid_append_lose_and_duplicate_nothing() {
    let (src, dst) = servers();
    fill(&src);
    dst.fault(Fault::on(Op::Append, ErrorKind::Network).skip(2).times(3));
    src.fault(Fault::on(Op::Fetch, ErrorKind::Network).skip(1).times(2));
    let summary = run(&src, &dst, &Arc::new(MemStore::new())).await;
    assert!(summary.is_complete(), "{summary:#?}");
    assert_eq!(dst.contents(), src.contents());
}

#[tokio::test]
async fn a_refused_message_is_reported_and_the_rest_of_the_folder_copied() {
    let (src, dst) = servers();
    fill(&src);
    let mut big = message("big", 0);
    big.extend_from_slice(&[b'x'; 5000]);
    big.extend_from_slice(b"\r\n");
    src.put("INBOX", &big, &[]);
    dst.fault(
        Fault::on(Op::Append, ErrorKind::TooLarge)
            .for_size(big.len())
            .times(100),
    );
    let store = Arc::new(MemStore::new());
    let summary = run(&src, &dst, &store).await;
    assert!(!summary.is_complete());
    assert_eq!(summary.failed_messages(), 1, "{summary:#?}");
    let inbox = summary
        .folders
        .iter()
        .find(|f| f.source == "INBOX")
        .unwrap();
    assert_eq!(inbox.failures[0].kind, "too-large");
    assert_eq!(dst.count("INBOX"), 30);
    assert_eq!(dst.count("Archive"), 12);
    // The next run retries only what failed, and still cannot.
    let again = run(&src, &dst, &store).await;
    assert_eq!(again.copied(), 0);
    assert_eq!(again.failed_messages(), 1);
    assert_eq!(dst.count("INBOX"), 30);
}

/// A refusal that concerns the whole folder (`[TRYCREATE]`, `[CANNOT]`: the imap crate
/// maps both response codes to `FolderRefused`) is not the refusal of one message:
/// splitting the batch into single APPENDs cannot help, so none is tried.
#[tokio::test]
async fn a_folder_level_refusal_of_an_append_does_not_split_the_batch() {
    let (src, dst) = servers();
    for i in 0..40 {
        src.put("INBOX", &message("INBOX", i), &[]);
    }
    // Every APPEND into the folder is refused as the folder's problem, for the whole run.
    dst.fault(Fault::on(Op::Append, ErrorKind::FolderRefused).times(1_000));
    let summary = run(&src, &dst, &Arc::new(MemStore::new())).await;
    assert!(!summary.is_complete(), "{summary:#?}");
    assert_eq!(dst.count("INBOX"), 0);
    // One APPEND of the whole batch per attempt of the job (40 messages in one batch):
    // split down to single messages it would take 79 (40 leaves and 39 halves) per
    // attempt.
    let appends = dst.calls(Op::Append);
    let attempts = RetryPolicy::default().max_attempts as usize;
    assert!(
        (1..=attempts).contains(&appends),
        "{appends} APPENDs for a folder-level refusal over {attempts} attempt(s)"
    );
    // Reported as the folder's error, not as 40 refused messages.
    assert_eq!(summary.failed_messages(), 0, "{summary:#?}");
    let inbox = summary
        .folders
        .iter()
        .find(|f| f.source == "INBOX")
        .unwrap();
    assert!(inbox.error.is_some(), "{inbox:#?}");
}

#[tokio::test]
async fn a_message_the_source_lies_about_is_isolated_and_the_rest_of_the_folder_copied() {
    let (src, dst) = servers();
    fill(&src);
    // Its FETCH announces a literal far beyond its listed size (as a hostile server
    // would): every fetch of a batch holding it is refused and breaks the session.
    let mut liar = message("liar", 0);
    liar.extend_from_slice(&[b'y'; 3333]);
    liar.extend_from_slice(b"\r\n");
    src.put("INBOX", &liar, &[]);
    for i in 30..40 {
        src.put("INBOX", &message("INBOX", i), &[]);
    }
    src.fault(
        Fault::on(Op::Fetch, ErrorKind::TooLarge)
            .for_size(liar.len())
            .times(usize::MAX),
    );
    let store = Arc::new(MemStore::new());
    let summary = run(&src, &dst, &store).await;
    assert_eq!(summary.failed_messages(), 1, "{summary:#?}");
    let inbox = summary
        .folders
        .iter()
        .find(|f| f.source == "INBOX")
        .unwrap();
    assert_eq!(inbox.failures[0].kind, "oversized-literal", "{inbox:#?}");
    // Everything else, including what comes after it, arrived.
    assert_eq!(dst.count("INBOX"), 40);
    assert_eq!(dst.count("Archive"), 12);
    // A later run does not fetch it again (it would only break the connection again),
    // and says again that it is missing.
    let again = run(&src, &dst, &store).await;
    assert_eq!(again.failed_messages(), 1, "{again:#?}");
    assert_eq!(again.copied(), 0);
    assert_eq!(dst.count("INBOX"), 40);
}

#[tokio::test]
async fn a_name_the_destination_refuses_is_created_renamed_and_filled() {
    let (src, dst) = servers();
    let dst = dst.refusing_chars(&['.']);
    src.create("v1.2", None);
    for i in 0..4 {
        src.put("v1.2", &message("v1.2", i), &[]);
    }
    let store = Arc::new(MemStore::new());
    let summary = run(&src, &dst, &store).await;
    assert!(summary.is_complete(), "{summary:#?}");
    assert_eq!(dst.count("v1_2"), 4);
    let again = run(&src, &dst, &store).await;
    assert!(again.is_complete());
    assert_eq!(again.copied(), 0);
    assert_eq!(dst.count("v1_2"), 4);
}

#[tokio::test]
async fn an_unreachable_destination_stops_before_anything_is_planned() {
    let (src, dst) = servers();
    fill(&src);
    dst.fault(Fault::on(Op::Connect, ErrorKind::Unreachable).times(1000));
    let summary = run(&src, &dst, &Arc::new(MemStore::new())).await;
    assert!(summary.folders.is_empty(), "{summary:#?}");
    assert_eq!(summary.errors[0].kind, "unreachable");
    assert_eq!(src.writes(), 0);
}
