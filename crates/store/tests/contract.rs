//! The `StateStore` contract: one suite (`suite`), written once against `dyn StateStore`
//! and run on every backend (`sqlite`, `postgres`); plus backend-specific checks
//! (`sqlite_only`, `errors`).
//!
//! SQLite tests use a file in a fresh temporary directory. PostgreSQL tests create a fresh
//! database `mailshift_test_<uuid>` per test through the `postgres` database of
//! `MAILSHIFT_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`) and drop it
//! afterwards, also when the test fails. If PostgreSQL is unreachable they fail, unless
//! `MAILSHIFT_TEST_SKIP_POSTGRES=1`.
//!
//! Timings are printed: run with `--nocapture` to see them.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helpers of a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_core::endpoint::Endpoint;
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::FlagSet;
use mailshift_core::job::FolderJob;
use mailshift_core::mailbox::{JobOutcome, MailboxStatus};
use mailshift_core::ports::{
    CopiedMessage, FailedMessage, FolderState, PendingBatch, PendingItem, StateStore, TokenStore,
};
use mailshift_store::SeaStore;
use sea_orm::ConnectionTrait;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Fixtures

/// A store on a fresh database, and how to get rid of that database.
struct Fixture {
    store: SeaStore,
    /// Keeps the SQLite directory alive until the end of the test.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: (admin connection, database name) to drop at the end.
    pg_drop: Option<(SeaStore, String)>,
    label: String,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("mailshift.db");
        let store = SeaStore::open_sqlite(&path).await.unwrap();
        Fixture {
            store,
            _dir: Some(dir),
            pg_drop: None,
            label: format!("sqlite {}", path.display()),
        }
    }

    /// None when PostgreSQL tests are skipped on purpose.
    async fn postgres() -> Option<Fixture> {
        if std::env::var("MAILSHIFT_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("MAILSHIFT_TEST_SKIP_POSTGRES=1: skipping a PostgreSQL contract test");
            return None;
        }
        let base = std::env::var("MAILSHIFT_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string());
        let base = base.trim_end_matches('/');
        let admin = match SeaStore::connect(&format!("{base}/postgres"), false).await {
            Ok(admin) => admin,
            Err(e) => panic!(
                "PostgreSQL is unreachable ({e}); start it, point MAILSHIFT_TEST_POSTGRES at \
                 it, or set MAILSHIFT_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
            ),
        };
        let name = format!("mailshift_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .connection()
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let store = SeaStore::connect(&format!("{base}/{name}"), true)
            .await
            .unwrap_or_else(|e| panic!("cannot open test database {name}: {e}"));
        Some(Fixture {
            store,
            _dir: None,
            pg_drop: Some((admin, name.clone())),
            label: format!("postgres {name}"),
        })
    }

    /// Runs `test` on this fixture's store, then drops the database (best effort) and
    /// re-raises the test's panic if it had one.
    async fn run<F, Fut>(self, test: F)
    where
        F: FnOnce(Arc<dyn StateStore>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let store: Arc<dyn StateStore> = Arc::new(self.store.clone());
        self.run_sea(move |_| test(store)).await
    }

    /// Like `run`, with the concrete store (for the fleet's traits).
    async fn run_sea<F, Fut>(self, test: F)
    where
        F: FnOnce(SeaStore) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(test(self.store.clone())).await;
        let _ = self.store.connection().clone().close().await;
        if let Some((admin, name)) = &self.pg_drop {
            let dropped = admin
                .connection()
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            if let Err(e) = dropped {
                eprintln!("warning: cannot drop test database {name}: {e}");
            }
        }
        if let Err(e) = outcome {
            eprintln!("failed on {}", self.label);
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("test task did not finish: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Data helpers

fn endpoint(host: &str, user: &str) -> Endpoint {
    format!("imaps://{user}@{host}:993").parse().unwrap()
}

fn copied(uid: u32, tag: &str) -> CopiedMessage {
    CopiedMessage {
        source_uid: uid,
        dest_uid: Some(uid + 1000),
        flags: FlagSet::from_storage(&format!("\\Seen {tag}")),
        size: 1000 + uid,
        fingerprint: Fingerprint::of(format!("message {uid} {tag}").as_bytes()),
        header_fingerprint: Some(Fingerprint::of(format!("header {uid}").as_bytes())),
    }
}

fn failure(uid: u32, reason: &str) -> FailedMessage {
    FailedMessage {
        source_uid: uid,
        size: 50_000_000,
        kind: "too-large".to_string(),
        reason: reason.to_string(),
    }
}

fn checkpoint(mut state: FolderState, highest_uid: u32) -> FolderState {
    state.source_uidvalidity = Some(1_700_000_000);
    state.dest_uidvalidity = Some(42);
    state.highest_uid = highest_uid;
    state.highest_modseq = Some(u64::from(highest_uid) * 3);
    state.pending = None;
    state
}

fn job(migration: uuid::Uuid, folder: &str) -> FolderJob {
    FolderJob {
        id: uuid::Uuid::new_v4(),
        migration_id: migration,
        source_folder: folder.into(),
        dest_folder: folder.into(),
        source_display: folder.into(),
        dest_display: folder.into(),
        attempt: 1,
        delete: true,
        adopt_existing: true,
        uid_range: None,
        dual_reception: false,
        first_failed_at: None,
        label_folders: Vec::new(),
    }
}

fn uids<T>(rows: &[T], uid: impl Fn(&T) -> u32) -> Vec<u32> {
    rows.iter().map(uid).collect()
}

// ---------------------------------------------------------------------------------------
// The suite

/// The contract, one async fn per property, each taking a store on an empty database.
mod suite {
    use super::*;

    pub async fn find_or_create_is_idempotent(store: Arc<dyn StateStore>) {
        let (a, b) = (
            endpoint("a.example", "alice"),
            endpoint("b.example", "alice"),
        );
        let m1 = store.migration(&a, &b).await.unwrap();
        assert_eq!(store.migration(&a, &b).await.unwrap(), m1);
        let reverse = store.migration(&b, &a).await.unwrap();
        assert_ne!(
            reverse, m1,
            "a migration is identified by both endpoints, in order"
        );

        let inbox = store.folder(m1, "INBOX", "INBOX").await.unwrap();
        assert_eq!(inbox.migration_id, m1);
        assert_eq!(inbox.highest_uid, 0);
        assert_eq!(
            (
                inbox.source_uidvalidity,
                inbox.dest_uidvalidity,
                inbox.highest_modseq
            ),
            (None, None, None)
        );
        assert_eq!(inbox.pending, None);
        assert_eq!(store.folder(m1, "INBOX", "INBOX").await.unwrap(), inbox);
        // The same source folder name in another migration is another folder.
        let other = store.folder(reverse, "INBOX", "INBOX").await.unwrap();
        assert_ne!(other.id, inbox.id);

        // A changed destination is recorded on the existing row.
        let sent = store.folder(m1, "Sent", "Sent").await.unwrap();
        let moved = store.folder(m1, "Sent", "Archive/Sent").await.unwrap();
        assert_eq!(moved.id, sent.id);
        assert_eq!(moved.dest_folder, "Archive/Sent");
        assert_eq!(
            store.folder(m1, "Sent", "Archive/Sent").await.unwrap(),
            moved
        );

        store.folder(m1, "Archive", "Archive").await.unwrap();
        let names: Vec<String> = store
            .folders(m1)
            .await
            .unwrap()
            .into_iter()
            .map(|f| format!("{}->{}", f.source_folder, f.dest_folder))
            .collect();
        assert_eq!(
            names,
            ["Archive->Archive", "INBOX->INBOX", "Sent->Archive/Sent"]
        );
        assert_eq!(store.folders(reverse).await.unwrap().len(), 1);
        assert!(
            store
                .folders(uuid::Uuid::new_v4())
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn find_or_create_is_race_safe(store: Arc<dyn StateStore>) {
        let (a, b) = (endpoint("a.example", "race"), endpoint("b.example", "race"));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, a, b) = (store.clone(), a.clone(), b.clone());
                tokio::spawn(async move {
                    let m = store.migration(&a, &b).await.unwrap();
                    let f = store.folder(m, "INBOX", "INBOX").await.unwrap();
                    (m, f.id)
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.dedup();
        assert_eq!(
            ids.len(),
            1,
            "all tasks must agree on one migration and folder"
        );
    }

    pub async fn changes_replace_and_remove(store: Arc<dyn StateStore>) {
        let m = store
            .migration(&endpoint("a.example", "c"), &endpoint("b.example", "c"))
            .await
            .unwrap();
        let f = store.folder(m, "INBOX", "INBOX").await.unwrap();
        let mut state = checkpoint(f.clone(), 5);
        let rows: Vec<CopiedMessage> = (1..=5).map(|u| copied(u, "x")).collect();
        store
            .commit_batch(&state, &rows, &[failure(6, "too big")])
            .await
            .unwrap();

        // Flag updates and forgetting, in one checkpoint.
        let flagged = FlagSet::from_storage("\\Flagged");
        state.dest_created = true;
        store
            .apply_changes(&state, &[(2, flagged.clone())], &[3, 6])
            .await
            .unwrap();
        let now = store.copied(f.id).await.unwrap();
        assert_eq!(uids(&now, |c| c.source_uid), [1, 2, 4, 5]);
        assert_eq!(now[1].flags, flagged);
        assert_eq!(now[0].header_fingerprint, rows[0].header_fingerprint);
        assert!(store.failed(f.id).await.unwrap().is_empty());
        assert!(
            store
                .folder(m, "INBOX", "INBOX")
                .await
                .unwrap()
                .dest_created
        );

        // Replacing the map (after a UIDVALIDITY change).
        let rekeyed: Vec<CopiedMessage> = now
            .iter()
            .map(|c| CopiedMessage {
                source_uid: c.source_uid + 100,
                ..c.clone()
            })
            .collect();
        store.replace_messages(&state, &rekeyed).await.unwrap();
        assert_eq!(
            uids(&store.copied(f.id).await.unwrap(), |c| c.source_uid),
            [101, 102, 104, 105]
        );

        store.remove_folder(f.id).await.unwrap();
        assert!(store.folders(m).await.unwrap().is_empty());
        assert!(store.copied(f.id).await.unwrap().is_empty());
    }

    pub async fn pending_round_trip(store: Arc<dyn StateStore>) {
        let m = store
            .migration(&endpoint("a.example", "p"), &endpoint("b.example", "p"))
            .await
            .unwrap();
        let f = store.folder(m, "INBOX", "INBOX").await.unwrap();
        let batch = PendingBatch {
            dest_uidvalidity: u32::MAX,
            dest_uidnext: 77,
            items: (1..=3)
                .map(|uid| PendingItem {
                    source_uid: uid,
                    size: uid * 100,
                    fingerprint: Fingerprint::of(&[uid as u8]).to_hex(),
                    flags: "\\Seen $Label \"quoted\"".to_string(),
                    header_fingerprint: Some(Fingerprint::of(&[uid as u8, 1]).to_hex()),
                })
                .collect(),
        };
        store.set_pending(f.id, Some(&batch)).await.unwrap();
        let read = store.folder(m, "INBOX", "INBOX").await.unwrap();
        assert_eq!(read.pending.as_ref(), Some(&batch));
        assert_eq!(
            store.folders(m).await.unwrap()[0].pending.as_ref(),
            Some(&batch)
        );

        store.set_pending(f.id, None).await.unwrap();
        assert_eq!(
            store.folder(m, "INBOX", "INBOX").await.unwrap().pending,
            None
        );

        // A commit clears the pending batch too.
        store.set_pending(f.id, Some(&batch)).await.unwrap();
        store
            .commit_batch(&checkpoint(f.clone(), 3), &[copied(1, "x")], &[])
            .await
            .unwrap();
        assert_eq!(
            store.folder(m, "INBOX", "INBOX").await.unwrap().pending,
            None
        );

        let err = store
            .set_pending(uuid::Uuid::new_v4(), Some(&batch))
            .await
            .unwrap_err();
        assert_eq!(err.kind, mailshift_core::ErrorKind::Store, "{err}");
    }

    pub async fn commit_batch_upserts(store: Arc<dyn StateStore>) {
        let m = store
            .migration(&endpoint("a.example", "u"), &endpoint("b.example", "u"))
            .await
            .unwrap();
        let f = store.folder(m, "INBOX", "INBOX").await.unwrap();
        let other = store.folder(m, "Other", "Other").await.unwrap();

        let first: Vec<_> = (1..=10).rev().map(|uid| copied(uid, "first")).collect();
        let refused = [failure(12, "too big"), failure(11, "too big")];
        store
            .commit_batch(&checkpoint(f.clone(), 12), &first, &refused)
            .await
            .unwrap();
        store
            .commit_batch(&checkpoint(other.clone(), 1), &[copied(1, "other")], &[])
            .await
            .unwrap();

        let rows = store.copied(f.id).await.unwrap();
        assert_eq!(uids(&rows, |c| c.source_uid), (1..=10).collect::<Vec<_>>());
        assert_eq!(rows[4], copied(5, "first"));
        assert_eq!(
            uids(&store.failed(f.id).await.unwrap(), |x| x.source_uid),
            [11, 12]
        );

        // Same uids again, changed; 11 now copied; 12 refused again with a new reason.
        let mut second: Vec<_> = (5..=11).map(|uid| copied(uid, "second")).collect();
        second[0].dest_uid = None;
        store
            .commit_batch(
                &checkpoint(f.clone(), 12),
                &second,
                &[failure(12, "still too big")],
            )
            .await
            .unwrap();
        let rows = store.copied(f.id).await.unwrap();
        assert_eq!(uids(&rows, |c| c.source_uid), (1..=11).collect::<Vec<_>>());
        assert_eq!(rows[3], copied(4, "first"));
        assert_eq!(rows[4], second[0]);
        assert_eq!(rows[10], copied(11, "second"));
        assert_eq!(
            store.failed(f.id).await.unwrap(),
            [failure(12, "still too big")]
        );

        // Empty batches only move the checkpoint.
        store
            .commit_batch(&checkpoint(f.clone(), 20), &[], &[])
            .await
            .unwrap();
        assert_eq!(store.copied(f.id).await.unwrap().len(), 11);
        assert_eq!(
            store.folder(m, "INBOX", "INBOX").await.unwrap().highest_uid,
            20
        );

        // The other folder is untouched.
        assert_eq!(store.copied(other.id).await.unwrap(), [copied(1, "other")]);
        assert!(store.failed(other.id).await.unwrap().is_empty());

        // A commit for a folder that does not exist fails and records nothing.
        let mut ghost = checkpoint(f.clone(), 1);
        ghost.id = uuid::Uuid::new_v4();
        let err = store.commit_batch(&ghost, &[], &[]).await.unwrap_err();
        assert_eq!(err.kind, mailshift_core::ErrorKind::Store, "{err}");
        assert!(
            store
                .commit_batch(&ghost, &[copied(1, "ghost")], &[])
                .await
                .is_err()
        );
        assert!(store.copied(ghost.id).await.unwrap().is_empty());
    }

    pub async fn checkpoint_fields_persist(store: Arc<dyn StateStore>) {
        let m = store
            .migration(&endpoint("a.example", "c"), &endpoint("b.example", "c"))
            .await
            .unwrap();
        let f = store.folder(m, "Lists/rust", "Lists.rust").await.unwrap();
        let mut state = f.clone();
        state.source_uidvalidity = Some(u32::MAX);
        state.dest_uidvalidity = Some(1);
        state.highest_uid = u32::MAX;
        state.highest_modseq = Some(i64::MAX as u64);
        state.dest_folder = "Lists/rust-lang".to_string();
        let extreme = CopiedMessage {
            source_uid: u32::MAX,
            dest_uid: Some(u32::MAX),
            flags: FlagSet::new(),
            size: u32::MAX,
            fingerprint: Fingerprint([0xff; 32]),
            header_fingerprint: None,
        };
        store
            .commit_batch(&state, std::slice::from_ref(&extreme), &[])
            .await
            .unwrap();

        let read = store
            .folder(m, "Lists/rust", "Lists/rust-lang")
            .await
            .unwrap();
        assert_eq!(read, state);
        assert_eq!(store.folders(m).await.unwrap(), [state.clone()]);
        assert_eq!(store.copied(f.id).await.unwrap(), [extreme]);

        // Clearing optional fields persists too.
        let mut cleared = state.clone();
        cleared.source_uidvalidity = None;
        cleared.dest_uidvalidity = None;
        cleared.highest_modseq = None;
        cleared.highest_uid = 0;
        store.commit_batch(&cleared, &[], &[]).await.unwrap();
        assert_eq!(
            store
                .folder(m, "Lists/rust", "Lists/rust-lang")
                .await
                .unwrap(),
            cleared
        );
    }

    pub async fn hundred_thousand_rows(store: Arc<dyn StateStore>) {
        const TOTAL: u32 = 100_000;
        const BATCH: usize = 400;
        let m = store
            .migration(&endpoint("a.example", "big"), &endpoint("b.example", "big"))
            .await
            .unwrap();
        let f = store.folder(m, "INBOX", "INBOX").await.unwrap();
        let all: Vec<_> = (1..=TOTAL).map(|uid| copied(uid, "$Forwarded")).collect();

        let mut per_batch = Vec::new();
        let started = Instant::now();
        for batch in all.chunks(BATCH) {
            let state = checkpoint(f.clone(), batch[batch.len() - 1].source_uid);
            let t = Instant::now();
            store.commit_batch(&state, batch, &[]).await.unwrap();
            per_batch.push(t.elapsed());
        }
        let commit_total = started.elapsed();

        let t = Instant::now();
        let loaded = store.copied(f.id).await.unwrap();
        let load = t.elapsed();
        assert_eq!(loaded.len(), all.len());
        assert!(loaded == all, "loaded rows differ from committed rows");
        assert_eq!(
            store.folder(m, "INBOX", "INBOX").await.unwrap().highest_uid,
            TOTAL
        );

        per_batch.sort();
        let median = per_batch[per_batch.len() / 2];
        let max = per_batch[per_batch.len() - 1];
        println!(
            "timing: {TOTAL} rows in {} commits of {BATCH}: total {commit_total:.2?}, \
             per commit median {median:.2?} max {max:.2?}; load of {TOTAL} rows {load:.2?}",
            per_batch.len()
        );
    }

    pub async fn concurrent_commits(store: Arc<dyn StateStore>) {
        const TASKS: u32 = 4;
        const BATCHES: u32 = 25;
        const BATCH: u32 = 400;
        let m = store
            .migration(
                &endpoint("a.example", "conc"),
                &endpoint("b.example", "conc"),
            )
            .await
            .unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let name = format!("Folder{t}");
                    let f = store.folder(m, &name, &name).await.unwrap();
                    for b in 0..BATCHES {
                        let uids = b * BATCH + 1..=(b + 1) * BATCH;
                        let rows: Vec<_> = uids.clone().map(|uid| copied(uid, &name)).collect();
                        let pending = PendingBatch {
                            dest_uidvalidity: 1,
                            dest_uidnext: *uids.start(),
                            items: Vec::new(),
                        };
                        store.set_pending(f.id, Some(&pending)).await.unwrap();
                        let refused = [failure(*uids.end() + 1, "refused")];
                        let state = checkpoint(f.clone(), *uids.end() + 1);
                        store.commit_batch(&state, &rows, &refused).await.unwrap();
                        // Interleave reads with the other tasks' writes.
                        if b % 5 == 0 {
                            store.folders(m).await.unwrap();
                        }
                    }
                    f.id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        println!(
            "timing: {TASKS} tasks x {BATCHES} commits of {BATCH} rows: {:.2?}",
            started.elapsed()
        );
        for id in ids {
            let rows = store.copied(id).await.unwrap();
            assert_eq!(rows.len(), (BATCHES * BATCH) as usize);
            // Each batch's failure was copied by the next batch, except the last one.
            assert_eq!(
                uids(&store.failed(id).await.unwrap(), |f| f.source_uid),
                [BATCHES * BATCH + 1]
            );
        }
        let folders = store.folders(m).await.unwrap();
        assert_eq!(folders.len(), TASKS as usize);
        assert!(
            folders
                .iter()
                .all(|f| f.highest_uid == BATCHES * BATCH + 1 && f.pending.is_none())
        );
    }
}

/// Runs every suite test on one backend; `$fixture` yields `Option<Fixture>`.
macro_rules! contract {
    ($backend:ident, $fixture:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(fixture) = $fixture.await {
                        fixture.run(suite::$test).await;
                    }
                }
            )*
        }
    };
}

macro_rules! contract_all {
    ($($backend:ident => $fixture:expr),* $(,)?) => {
        $(
            contract!($backend, $fixture, [
                find_or_create_is_idempotent,
                find_or_create_is_race_safe,
                pending_round_trip,
                changes_replace_and_remove,
                commit_batch_upserts,
                checkpoint_fields_persist,
                hundred_thousand_rows,
                concurrent_commits,
            ]);
        )*
    };
}

contract_all! {
    sqlite => async { Some(Fixture::sqlite().await) },
    postgres => Fixture::postgres(),
}

/// The fleet's tables: sealed credentials, folder leases, connection slots.
mod fleet_suite {
    use super::*;
    use mailshift_core::ports::{HostSlots, MailboxCredentials, MailboxOptions, MailboxStore};
    use mailshift_store::SecretKey;
    use secrecy::{ExposeSecret, SecretString};

    pub async fn sealed_mailboxes(store: SeaStore) {
        let (a, b) = (
            endpoint("old.example", "zoe"),
            endpoint("new.example", "zoe"),
        );
        let creds = MailboxCredentials {
            source_password: SecretString::from("old-secret-pw"),
            dest_password: SecretString::from("new-secret-pw"),
        };
        // No key, no stored passwords.
        let err = store
            .add_mailbox(&a, &b, None, &MailboxOptions::default(), &creds)
            .await
            .unwrap_err();
        assert!(
            err.message.contains("MAILSHIFT_SECRET_KEY"),
            "{}",
            err.message
        );

        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let m = store
            .add_mailbox(&a, &b, Some("acme"), &MailboxOptions::default(), &creds)
            .await
            .unwrap();
        assert_eq!(m.status, MailboxStatus::Pending);
        let (again, opened) = store.mailbox_credentials(m.migration_id).await.unwrap();
        assert_eq!(again.id, m.id);
        assert_eq!(opened.source_password.expose_secret(), "old-secret-pw");
        assert_eq!(opened.dest_password.expose_secret(), "new-secret-pw");
        assert_eq!(store.mailboxes(Some("acme")).await.unwrap().len(), 1);

        // A sealed password copied into another mailbox's row does not open there: each
        // is bound to its row and column.
        let c = endpoint("old.example", "eve");
        let d = endpoint("new.example", "eve");
        let other = store
            .add_mailbox(&c, &d, Some("acme"), &MailboxOptions::default(), &creds)
            .await
            .unwrap();
        let db = store.connection();
        db.execute_unprepared(
            "UPDATE mailbox SET dest_secret = \
             (SELECT source_secret FROM mailbox WHERE source LIKE '%zoe@%') \
             WHERE source LIKE '%eve@%'",
        )
        .await
        .unwrap();
        let err = store
            .mailbox_credentials(other.migration_id)
            .await
            .unwrap_err();
        assert!(err.message.contains("cannot be opened"), "{}", err.message);
        let _ = store
            .add_mailbox(&c, &d, Some("acme"), &MailboxOptions::default(), &creds)
            .await
            .unwrap();
        assert!(store.mailbox_credentials(other.migration_id).await.is_ok());
        db.execute_unprepared("DELETE FROM mailbox WHERE source LIKE '%eve@%'")
            .await
            .unwrap();
        assert!(store.mailboxes(Some("other")).await.unwrap().is_empty());
        store
            .set_mailbox_status(m.id, MailboxStatus::Failed, Some("login refused"), Some(42))
            .await
            .unwrap();
        let row = &store.mailboxes(None).await.unwrap()[0];
        assert_eq!(
            (
                row.status.as_str(),
                row.last_error.as_deref(),
                row.next_pass_at
            ),
            ("failed", Some("login refused"), Some(42))
        );
    }

    pub async fn folder_leases(store: SeaStore) {
        let m = store
            .migration(&endpoint("a.example", "l"), &endpoint("b.example", "l"))
            .await
            .unwrap();
        let ttl = Duration::from_secs(60);
        // A claim creates the checkpoint row if needed.
        assert!(
            store
                .claim_folder(m, "INBOX", "INBOX", "w1", ttl)
                .await
                .unwrap()
        );
        assert_eq!(store.folders(m).await.unwrap().len(), 1);
        assert!(
            !store
                .claim_folder(m, "INBOX", "INBOX", "w2", ttl)
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_folder(m, "INBOX", "INBOX", "w1", ttl)
                .await
                .unwrap(),
            "renew"
        );
        store.release_folder(m, "INBOX", "w2").await.unwrap(); // not w2's: no effect
        assert!(
            !store
                .claim_folder(m, "INBOX", "INBOX", "w2", ttl)
                .await
                .unwrap()
        );
        store.release_folder(m, "INBOX", "w1").await.unwrap();
        assert!(
            store
                .claim_folder(m, "INBOX", "INBOX", "w2", ttl)
                .await
                .unwrap()
        );
        // An expired lease may be taken over.
        assert!(
            store
                .claim_folder(m, "Sent", "Sent", "w1", Duration::ZERO)
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            store
                .claim_folder(m, "Sent", "Sent", "w2", ttl)
                .await
                .unwrap()
        );
        // Renewal only while unexpired and ours.
        assert!(store.renew_folder(m, "Sent", "w2", ttl).await.unwrap());
        assert!(!store.renew_folder(m, "Sent", "w1", ttl).await.unwrap());
        assert!(
            store
                .claim_folder(m, "Junk", "Junk", "w1", Duration::ZERO)
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !store.renew_folder(m, "Junk", "w1", ttl).await.unwrap(),
            "a lapsed lease is not renewed, even unclaimed"
        );
        // The checkpoint itself is untouched by leases.
        let f = store.folder(m, "INBOX", "INBOX").await.unwrap();
        assert_eq!((f.highest_uid, f.pending), (0, None));
    }

    pub async fn domain_phases(store: SeaStore) {
        use mailshift_core::cutover::{DomainConfig, Phase};
        use mailshift_core::ports::DomainStore;
        let mut c = DomainConfig {
            name: "example.com".into(),
            new_mx: Some("mta.new.example".into()),
            dual_reception_secs: 72 * 3600,
            ..Default::default()
        };
        store.put_domain(&c, Some("{}")).await.unwrap();
        let d = store.domains().await.unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].phase, d[0].switched_at), (Phase::Prepare, None));
        store
            .set_domain_phase("example.com", Phase::Switched, 1000, Some(1000), None)
            .await
            .unwrap();
        store.mark_final_pass("example.com", 2000).await.unwrap();
        // Re-planning changes the configuration, never the phase already reached.
        c.old_mx = Some("mx.old.example".into());
        store.put_domain(&c, None).await.unwrap();
        let d = &store.domains().await.unwrap()[0];
        assert_eq!(d.phase, Phase::Switched);
        assert_eq!(d.switched_at, Some(1000));
        assert_eq!(d.final_pass_at, Some(2000));
        assert_eq!(d.dual_reception_until(), Some(1000 + 72 * 3600));
        assert_eq!(d.config.old_mx.as_deref(), Some("mx.old.example"));
        store
            .set_domain_phase(
                "example.com",
                Phase::Done,
                3000,
                None,
                Some("{\"ok\":true}"),
            )
            .await
            .unwrap();
        let d = &store.domains().await.unwrap()[0];
        assert_eq!(
            (d.phase, d.phase_since, d.switched_at),
            (Phase::Done, 3000, Some(1000))
        );
        assert_eq!(d.report.as_deref(), Some("{\"ok\":true}"));
    }

    pub async fn host_slots(store: SeaStore) {
        let ttl = Duration::from_secs(60);
        assert_eq!(
            store
                .acquire_slot("free.example:993", "w1", ttl)
                .await
                .unwrap(),
            Some(None),
            "no limit, no slot needed"
        );
        store
            .set_host_limit("old.example:993", Some(2), Some(100))
            .await
            .unwrap();
        assert_eq!(
            store.slot_rate("old.example:993").await.unwrap(),
            Some(50.0)
        );
        assert_eq!(store.slot_rate("free.example:993").await.unwrap(), None);
        let a = store
            .acquire_slot("old.example:993", "w1", ttl)
            .await
            .unwrap();
        let b = store
            .acquire_slot("old.example:993", "w2", ttl)
            .await
            .unwrap();
        assert!(matches!((a, b), (Some(Some(x)), Some(Some(y))) if x != y));
        assert_eq!(
            store
                .acquire_slot("old.example:993", "w3", ttl)
                .await
                .unwrap(),
            None
        );
        let Some(Some(slot)) = a else { unreachable!() };
        assert!(
            store
                .renew_slot("old.example:993", slot, "w1", ttl)
                .await
                .unwrap()
        );
        assert!(
            !store
                .renew_slot("old.example:993", slot, "w3", ttl)
                .await
                .unwrap()
        );
        store
            .release_slot("old.example:993", slot, "w1")
            .await
            .unwrap();
        assert!(matches!(
            store
                .acquire_slot("old.example:993", "w3", ttl)
                .await
                .unwrap(),
            Some(Some(_))
        ));
        store
            .set_host_limit("old.example:993", None, None)
            .await
            .unwrap();
        assert_eq!(
            store
                .acquire_slot("old.example:993", "w4", ttl)
                .await
                .unwrap(),
            Some(None)
        );
    }
}

/// Batches, API tokens and a pass's progress counters.
mod batch_suite {
    use super::*;
    use mailshift_core::batch::{BatchRecord, BatchState};
    use mailshift_core::ports::{BatchStore, MailboxCredentials, MailboxOptions, MailboxStore};
    use mailshift_store::SecretKey;
    use secrecy::SecretString;

    pub async fn batches_tokens_and_pass_progress(store: SeaStore) {
        let mut b = BatchRecord::new("acme", Some("acme.example"), 1000);
        store.put_batch(&b).await.unwrap();
        b.start(Some(2000)).unwrap();
        b.interval_secs = Some(14_400);
        b.concurrency = Some(5);
        store.put_batch(&b).await.unwrap();
        assert_eq!(store.batch("acme").await.unwrap(), Some(b.clone()));
        assert_eq!(store.batches().await.unwrap(), vec![b.clone()]);
        assert_eq!(store.batch("other").await.unwrap(), None);
        assert_eq!(b.state, BatchState::Running);

        // Tokens: shown once, stored hashed, names unique, revocable.
        let t = store.create_token("alice", false, None).await.unwrap();
        assert!(t.starts_with(mailshift_store::TOKEN_PREFIX) && t.len() > 40);
        let info = store.check_token(&t).await.unwrap().unwrap();
        assert_eq!((info.name.as_str(), info.read_only), ("alice", false));
        assert!(store.check_token("mst_forged").await.unwrap().is_none());
        let dup = store.create_token("alice", true, None).await.unwrap_err();
        assert!(
            dup.to_string().contains("a token named 'alice' exists"),
            "{dup}"
        );
        // A token past its expiry is refused; one before it is not.
        let past = store
            .create_token("gone", false, Some(chrono::Utc::now().timestamp() - 1))
            .await
            .unwrap();
        assert!(store.check_token(&past).await.unwrap().is_none());
        let future = store
            .create_token("later", true, Some(chrono::Utc::now().timestamp() + 3600))
            .await
            .unwrap();
        let info = store.check_token(&future).await.unwrap().unwrap();
        assert!(info.expires_at.is_some() && info.read_only);
        assert!(store.revoke_token("alice").await.unwrap());
        assert!(store.check_token(&t).await.unwrap().is_none());
        assert!(!store.revoke_token("alice").await.unwrap());

        // A pass of 3 jobs: syncing until all 3 are finished, then synced.
        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let creds = MailboxCredentials {
            source_password: SecretString::from("pw1"),
            dest_password: SecretString::from("pw2"),
        };
        let m = store
            .add_mailbox(
                &endpoint("old.example", "p"),
                &endpoint("new.example", "p"),
                Some("acme"),
                &MailboxOptions::default(),
                &creds,
            )
            .await
            .unwrap();
        let f = store
            .folder(m.migration_id, "INBOX", "INBOX")
            .await
            .unwrap();
        store
            .commit_batch(&checkpoint(f, 2), &[copied(1, "a"), copied(2, "a")], &[])
            .await
            .unwrap();
        let jobs: Vec<FolderJob> = ["INBOX", "Sent", "Work"]
            .iter()
            .map(|f| job(m.migration_id, f))
            .collect();
        store
            .begin_pass(m.id, &jobs, Some(10), Some(99))
            .await
            .unwrap();
        let row = &store.mailboxes(Some("acme")).await.unwrap()[0];
        assert_eq!(
            (
                row.status.as_str(),
                row.jobs_left,
                row.source_messages,
                row.copied_at_start
            ),
            ("syncing", 3, Some(10), Some(2))
        );
        assert!(row.pass_started_at.is_some());
        // A job finished twice (a redelivery) counts once.
        for (j, left) in [(&jobs[0], 2), (&jobs[0], 2), (&jobs[1], 1)] {
            store.job_finished(j, JobOutcome::Done, None).await.unwrap();
            let row = &store.mailboxes(None).await.unwrap()[0];
            assert_eq!((row.status.as_str(), row.jobs_left), ("syncing", left));
        }
        store
            .job_finished(&jobs[2], JobOutcome::Failed, None)
            .await
            .unwrap();
        let row = &store.mailboxes(None).await.unwrap()[0];
        assert_eq!((row.status.as_str(), row.jobs_left), ("synced", 0));
        assert!(row.last_pass_at.is_some());
        store.begin_pass(m.id, &[], None, Some(99)).await.unwrap();
        assert_eq!(
            store.mailboxes(None).await.unwrap()[0].status,
            MailboxStatus::Synced
        );

        store
            .record_check(m.id, r#"{"ready":true}"#, Some(12), Some(3456))
            .await
            .unwrap();
        let row = &store.mailboxes(None).await.unwrap()[0];
        assert_eq!(
            (
                row.checked.as_deref(),
                row.source_messages,
                row.source_bytes
            ),
            (Some(r#"{"ready":true}"#), Some(12), Some(3456))
        );
        let totals = store.copied_totals(Some("acme")).await.unwrap();
        assert_eq!(totals.get(&m.migration_id), Some(&(2, 1001 + 1002)));
        assert!(store.copied_totals(Some("other")).await.unwrap().is_empty());
    }
}

/// The fleet as a service: the outbox, job accounting, planning leases, account keys.
mod outbox_suite {
    use super::*;
    use mailshift_core::ports::{MailboxCredentials, MailboxOptions, MailboxStore};
    use mailshift_store::SecretKey;
    use secrecy::SecretString;

    async fn mailbox(store: &SeaStore, user: &str) -> mailshift_core::ports::MailboxRecord {
        let creds = MailboxCredentials {
            source_password: SecretString::from("pw1"),
            dest_password: SecretString::from("pw2"),
        };
        store
            .add_mailbox(
                &endpoint("old.example", user),
                &endpoint("new.example", user),
                Some("acme"),
                &MailboxOptions::default(),
                &creds,
            )
            .await
            .unwrap()
    }

    /// A mailbox leaves the fleet with its jobs and keeps its migration's records; a
    /// password is replaced sealed; a batch row goes.
    pub async fn mailboxes_and_batches_leave_the_fleet(store: SeaStore) {
        use mailshift_core::batch::BatchRecord;
        use mailshift_core::ports::{BatchStore, Side, StateStore};
        use secrecy::ExposeSecret;
        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let m = mailbox(&store, "r").await;
        let other = mailbox(&store, "s").await;
        let folder = store
            .folder(m.migration_id, "INBOX", "INBOX")
            .await
            .unwrap();
        let jobs = vec![job(m.migration_id, "INBOX"), job(m.migration_id, "Sent")];
        store.begin_pass(m.id, &jobs, None, None).await.unwrap();
        store
            .begin_pass(other.id, &[job(other.migration_id, "INBOX")], None, None)
            .await
            .unwrap();

        store
            .set_mailbox_password(m.id, Side::Dest, &SecretString::from("new-pw"))
            .await
            .unwrap();
        let (_, creds) = store.mailbox_credentials(m.migration_id).await.unwrap();
        assert_eq!(creds.dest_password.expose_secret(), "new-pw");
        assert_eq!(creds.source_password.expose_secret(), "pw1");

        assert!(store.remove_mailbox(m.id).await.unwrap());
        assert!(!store.remove_mailbox(m.id).await.unwrap(), "removed twice");
        let left = store.mailboxes(None).await.unwrap();
        assert_eq!(
            left.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![other.id]
        );
        // Its jobs are gone, the other mailbox's are not.
        let claimed = store
            .claim_unpublished("relay", 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            claimed.iter().map(|j| j.migration_id).collect::<Vec<_>>(),
            vec![other.migration_id]
        );
        // What its migration copied is still recorded: registering it again finds it.
        let again = mailbox(&store, "r").await;
        assert_eq!(again.migration_id, m.migration_id);
        assert_eq!(
            store.folders(m.migration_id).await.unwrap()[0].id,
            folder.id
        );
        assert!(
            store
                .set_mailbox_password(m.id, Side::Source, &SecretString::from("x"))
                .await
                .is_err()
        );

        store
            .put_batch(&BatchRecord::new("acme", None, 1))
            .await
            .unwrap();
        assert!(store.delete_batch("acme").await.unwrap());
        assert!(!store.delete_batch("acme").await.unwrap());
        assert_eq!(store.batch("acme").await.unwrap(), None);
    }

    pub async fn outbox_relays_each_job_once(store: SeaStore) {
        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let m = mailbox(&store, "o").await;
        let jobs: Vec<FolderJob> = (0..7)
            .map(|i| job(m.migration_id, &format!("F{i}")))
            .collect();
        store.begin_pass(m.id, &jobs, None, None).await.unwrap();
        // Two relays at once never take the same rows.
        let (a, b) = tokio::join!(
            store.claim_unpublished("relay-a", 4, Duration::from_secs(60)),
            store.claim_unpublished("relay-b", 4, Duration::from_secs(60))
        );
        let (a, mut b) = (a.unwrap(), b.unwrap());
        // Whatever the interleaving, the rest goes to the next claim.
        b.extend(
            store
                .claim_unpublished("relay-b", 10, Duration::from_secs(60))
                .await
                .unwrap(),
        );
        let mut ids: Vec<_> = a.iter().chain(&b).map(|j| j.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.len() + b.len(), "a row was claimed twice");
        assert_eq!(ids.len(), 7);
        let first = if a.len() >= b.len() { &a } else { &b };
        let names: Vec<&str> = first.iter().map(|j| j.source_folder.as_str()).collect();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "oldest first: {names:?}"
        );
        // A relay that died before publishing: its rows come back after the lease.
        store
            .mark_published(&a.iter().map(|j| j.id).collect::<Vec<_>>())
            .await
            .unwrap();
        let again = store
            .claim_unpublished("relay-c", 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(again.is_empty(), "leased rows were handed out again");
        // Published jobs are not handed out again, even after the lease.
        store
            .mark_published(&b.iter().map(|j| j.id).collect::<Vec<_>>())
            .await
            .unwrap();
        let none = store
            .claim_unpublished("relay-d", 10, Duration::from_secs(0))
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    pub async fn dead_jobs_come_back(store: SeaStore) {
        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let m = mailbox(&store, "d").await;
        let jobs = vec![job(m.migration_id, "INBOX"), job(m.migration_id, "Sent")];
        store.begin_pass(m.id, &jobs, None, None).await.unwrap();
        store
            .job_finished(&jobs[0], JobOutcome::Done, None)
            .await
            .unwrap();
        store
            .job_finished(&jobs[1], JobOutcome::Dead, Some("gave up"))
            .await
            .unwrap();
        store
            .set_mailbox_status(m.id, MailboxStatus::Failed, Some("gave up"), None)
            .await
            .unwrap();
        assert_eq!(
            store
                .dead_jobs(Some("acme"))
                .await
                .unwrap()
                .get(&m.migration_id),
            Some(&1)
        );
        assert!(store.reopen_job(jobs[1].id).await.unwrap());
        assert!(
            !store.reopen_job(jobs[1].id).await.unwrap(),
            "reopened twice"
        );
        let row = &store.mailboxes(None).await.unwrap()[0];
        assert_eq!((row.status, row.jobs_left), (MailboxStatus::Syncing, 1));
        assert!(store.dead_jobs(None).await.unwrap().is_empty());
        store
            .job_finished(&jobs[1], JobOutcome::Done, None)
            .await
            .unwrap();
        let row = &store.mailboxes(None).await.unwrap()[0];
        assert_eq!((row.status, row.jobs_left), (MailboxStatus::Synced, 0));
        // A late job of an older pass does not touch the current one.
        let next = vec![job(m.migration_id, "INBOX")];
        store.begin_pass(m.id, &next, None, None).await.unwrap();
        store
            .job_finished(&jobs[0], JobOutcome::Done, None)
            .await
            .unwrap();
        let row = &store.mailboxes(None).await.unwrap()[0];
        assert_eq!((row.status, row.jobs_left), (MailboxStatus::Syncing, 1));
    }

    pub async fn jobs_finishing_at_once_all_count(store: SeaStore) {
        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let m = mailbox(&store, "c").await;
        // Rounds of jobs finished all at once (the workers of a fleet): each completion
        // must see the others', or the pass stays `syncing` with a job "left".
        for round in 0..5 {
            let jobs: Vec<FolderJob> = (0..8)
                .map(|i| job(m.migration_id, &format!("R{round}F{i}")))
                .collect();
            store.begin_pass(m.id, &jobs, None, None).await.unwrap();
            let all: Vec<_> = jobs
                .iter()
                .map(|j| {
                    let store = store.clone();
                    let j = j.clone();
                    tokio::spawn(
                        async move { store.job_finished(&j, JobOutcome::Done, None).await },
                    )
                })
                .collect();
            for r in all {
                r.await.unwrap().unwrap();
            }
            let row = &store.mailboxes(None).await.unwrap()[0];
            assert_eq!(
                (row.status, row.jobs_left),
                (MailboxStatus::Synced, 0),
                "round {round}"
            );
        }
    }

    pub async fn lost_jobs_are_published_again(store: SeaStore) {
        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let m = mailbox(&store, "l").await;
        let jobs = vec![
            job(m.migration_id, "INBOX"),
            job(m.migration_id, "Sent"),
            job(m.migration_id, "Trash"),
        ];
        store.begin_pass(m.id, &jobs, None, None).await.unwrap();
        let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
        store.mark_published(&ids).await.unwrap();
        let t = chrono::Utc::now().timestamp();
        // Published just now: not lost yet.
        assert!(store.republish_lost(t - 60, 10).await.unwrap().is_empty());
        // Sent is done, Trash runs on a worker (its folder leased): only INBOX is lost.
        store
            .job_finished(&jobs[1], JobOutcome::Done, None)
            .await
            .unwrap();
        assert!(
            store
                .claim_folder(
                    m.migration_id,
                    &jobs[2].state_key(),
                    &jobs[2].dest_folder,
                    "w",
                    Duration::from_secs(60)
                )
                .await
                .unwrap()
        );
        let lost = store.republish_lost(t + 1, 10).await.unwrap();
        assert_eq!(
            lost.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![jobs[0].id]
        );
        // Unpublished again: the relay takes it, and it is not found lost twice.
        let relayed = store
            .claim_unpublished("relay", 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(relayed.len(), 1);
        assert!(store.republish_lost(t + 1, 10).await.unwrap().is_empty());
        // Jobs of a pass that is no longer the mailbox's current one are left alone.
        store.mark_published(&[jobs[0].id]).await.unwrap();
        store.begin_pass(m.id, &[], None, None).await.unwrap();
        let t = chrono::Utc::now().timestamp();
        assert!(store.republish_lost(t + 1, 10).await.unwrap().is_empty());
    }

    pub async fn planning_leases_and_deferrals(store: SeaStore) {
        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let m = mailbox(&store, "p").await;
        let ttl = Duration::from_secs(60);
        assert!(store.claim_planning(m.id, "s1", ttl).await.unwrap());
        assert!(!store.claim_planning(m.id, "s2", ttl).await.unwrap());
        assert!(store.claim_planning(m.id, "s1", ttl).await.unwrap());
        store.release_planning(m.id, "s2").await.unwrap();
        assert!(!store.claim_planning(m.id, "s2", ttl).await.unwrap());
        store.release_planning(m.id, "s1").await.unwrap();
        assert!(store.claim_planning(m.id, "s2", ttl).await.unwrap());
        // An outage defers the pass with a warning, the status stays.
        store
            .defer_mailbox(m.id, "waiting: source unreachable", 123)
            .await
            .unwrap();
        let row = &store.mailboxes(None).await.unwrap()[0];
        assert_eq!(
            (row.status, row.warning.as_deref(), row.next_pass_at),
            (
                MailboxStatus::Pending,
                Some("waiting: source unreachable"),
                Some(123)
            )
        );
        store.begin_pass(m.id, &[], None, None).await.unwrap();
        assert!(store.mailboxes(None).await.unwrap()[0].warning.is_none());
    }

    pub async fn accounts_are_recognised_under_other_spellings(store: SeaStore) {
        let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
        let (a, b) = (endpoint("localhost", "k"), endpoint("new.example", "k"));
        let first = store.migration_keyed(&a, &b, Some("key-1")).await.unwrap();
        assert!(first.recorded_as.is_none());
        let other = endpoint("127.0.0.1", "k");
        let again = store
            .migration_keyed(&other, &b, Some("key-1"))
            .await
            .unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.recorded_as, Some((a.to_string(), b.to_string())));
        let fresh = store
            .migration_keyed(&other, &b, Some("key-2"))
            .await
            .unwrap();
        assert_ne!(fresh.id, first.id);
        // Two registered mailboxes behind one pair of accounts are found.
        let m1 = mailbox(&store, "twin").await;
        let creds = MailboxCredentials {
            source_password: SecretString::from("pw1"),
            dest_password: SecretString::from("pw2"),
        };
        let m2 = store
            .add_mailbox(
                &endpoint("127.0.0.1", "twin"),
                &endpoint("new.example", "twin"),
                Some("other"),
                &MailboxOptions::default(),
                &creds,
            )
            .await
            .unwrap();
        assert!(
            store
                .account_conflicts(m1.migration_id, "twin-key")
                .await
                .unwrap()
                .is_empty()
        );
        let twins = store
            .account_conflicts(m2.migration_id, "twin-key")
            .await
            .unwrap();
        assert_eq!(twins.len(), 1);
        assert_eq!(twins[0].id, m1.id);
    }
}

macro_rules! outbox_contract {
    ($backend:ident, $fixture:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(fixture) = $fixture.await {
                        fixture.run_sea(outbox_suite::$test).await;
                    }
                }
            )*
        }
    };
}

outbox_contract!(
    outbox_sqlite,
    async { Some(Fixture::sqlite().await) },
    [
        mailboxes_and_batches_leave_the_fleet,
        outbox_relays_each_job_once,
        dead_jobs_come_back,
        jobs_finishing_at_once_all_count,
        lost_jobs_are_published_again,
        planning_leases_and_deferrals,
        accounts_are_recognised_under_other_spellings,
    ]
);
outbox_contract!(
    outbox_postgres,
    Fixture::postgres(),
    [
        mailboxes_and_batches_leave_the_fleet,
        outbox_relays_each_job_once,
        dead_jobs_come_back,
        jobs_finishing_at_once_all_count,
        lost_jobs_are_published_again,
        planning_leases_and_deferrals,
        accounts_are_recognised_under_other_spellings,
    ]
);

macro_rules! fleet_contract {
    ($backend:ident, $fixture:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(fixture) = $fixture.await {
                        fixture.run_sea(fleet_suite::$test).await;
                    }
                }
            )*
        }
    };
}

fleet_contract!(
    fleet_sqlite,
    async { Some(Fixture::sqlite().await) },
    [sealed_mailboxes, folder_leases, host_slots, domain_phases,]
);
fleet_contract!(
    fleet_postgres,
    Fixture::postgres(),
    [sealed_mailboxes, folder_leases, host_slots, domain_phases,]
);

mod batches_sqlite {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batches_tokens_and_pass_progress() {
        Fixture::sqlite()
            .await
            .run_sea(batch_suite::batches_tokens_and_pass_progress)
            .await;
    }
}

mod batches_postgres {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batches_tokens_and_pass_progress() {
        if let Some(f) = Fixture::postgres().await {
            f.run_sea(batch_suite::batches_tokens_and_pass_progress)
                .await;
        }
    }
}

// ---------------------------------------------------------------------------------------

/// SQLite specifics: pragmas, and two stores (as two processes would) on one file.
mod sqlite_only {
    use super::*;
    use sea_orm::{DbBackend, Statement};

    async fn pragma(store: &SeaStore, name: &str) -> String {
        let row = store
            .connection()
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                format!("PRAGMA {name}"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0)
            .map(|v| v.to_string())
            .or_else(|_| row.try_get_by_index::<String>(0))
            .unwrap()
    }

    #[tokio::test]
    async fn pragmas() {
        let fixture = Fixture::sqlite().await;
        let store = &fixture.store;
        assert_eq!(pragma(store, "journal_mode").await, "wal");
        assert_eq!(pragma(store, "synchronous").await, "1", "NORMAL");
        assert_eq!(pragma(store, "foreign_keys").await, "1");
        let busy: u64 = pragma(store, "busy_timeout").await.parse().unwrap();
        assert!(busy >= 10_000, "busy_timeout {busy} ms");
    }

    #[tokio::test]
    async fn connect_url_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("via-url.db");
        let url = format!("sqlite://{}", path.display());
        let store = SeaStore::connect(&url, true).await.unwrap();
        let m = store
            .migration(&endpoint("a.example", "r"), &endpoint("b.example", "r"))
            .await
            .unwrap();
        let f = store.folder(m, "INBOX", "INBOX").await.unwrap();
        store
            .commit_batch(&checkpoint(f.clone(), 9), &[copied(9, "r")], &[])
            .await
            .unwrap();
        store.connection().clone().close().await.unwrap();
        assert!(path.exists());

        // Reopened without migrating (the schema is there), through the other entry point.
        let again = SeaStore::connect(&url, false).await.unwrap();
        assert_eq!(again.folders(m).await.unwrap()[0].highest_uid, 9);
        let again = SeaStore::open_sqlite(&path).await.unwrap();
        assert_eq!(again.copied(f.id).await.unwrap(), [copied(9, "r")]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_on_one_file() {
        let fixture = Fixture::sqlite().await;
        let path = fixture.label.trim_start_matches("sqlite ").to_string();
        let second = SeaStore::open_sqlite(std::path::Path::new(&path))
            .await
            .unwrap();
        let stores = [fixture.store.clone(), second];
        let m = stores[0]
            .migration(&endpoint("a.example", "two"), &endpoint("b.example", "two"))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..4u32)
            .map(|t| {
                let store = stores[t as usize % 2].clone();
                tokio::spawn(async move {
                    let name = format!("F{t}");
                    let f = store.folder(m, &name, &name).await.unwrap();
                    for b in 0..10u32 {
                        let rows: Vec<_> = (b * 400 + 1..=(b + 1) * 400)
                            .map(|uid| copied(uid, "two"))
                            .collect();
                        store.set_pending(f.id, None).await.unwrap();
                        store
                            .commit_batch(&checkpoint(f.clone(), (b + 1) * 400), &rows, &[])
                            .await
                            .unwrap();
                    }
                    f.id
                })
            })
            .collect();
        for t in tasks {
            let id = t.await.unwrap();
            assert_eq!(stores[1].copied(id).await.unwrap().len(), 4000);
        }
    }
}

/// Error messages: what failed and where, never a password.
mod errors {
    use super::*;

    #[tokio::test]
    async fn postgres_password_is_never_shown() {
        // Port 1: nothing listens there, the connection is refused.
        let url = "postgres://mailshift:hunter2secret@127.0.0.1:1/state?password=hunter2secret";
        let err = SeaStore::connect(url, true).await.unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains("hunter2secret"), "{msg}");
        assert!(
            msg.contains("postgres://mailshift@127.0.0.1:1/state"),
            "{msg}"
        );
        let core: mailshift_core::Error = err.into();
        assert_eq!(core.kind, mailshift_core::ErrorKind::Store);

        let err = SeaStore::connect("mysql://root:hunter2secret@h/db", true)
            .await
            .unwrap_err();
        let core: mailshift_core::Error = err.into();
        assert!(!core.message.contains("hunter2secret"), "{core}");
        assert_eq!(core.kind, mailshift_core::ErrorKind::Usage);
    }

    #[tokio::test]
    async fn sqlite_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("state.db");
        let msg = SeaStore::open_sqlite(&path).await.unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[tokio::test]
    async fn store_errors_say_what_failed() {
        let fixture = Fixture::sqlite().await;
        let err = fixture
            .store
            .set_pending(uuid::Uuid::new_v4(), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind, mailshift_core::ErrorKind::Store);
        assert!(
            err.message.contains("mailshift.db") && err.message.contains("no folder"),
            "{err}"
        );
        // Keep the timeout constant honest: a store call on a healthy file is quick.
        let t = Instant::now();
        fixture.store.folders(uuid::Uuid::new_v4()).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
