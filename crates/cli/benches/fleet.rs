#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fleet's control plane alone, with no-op mail servers, against PostgreSQL and
//! RabbitMQ on 127.0.0.1 (`cargo bench -p mailshift --bench fleet`, or `just bench-fleet`):
//! - workers: 10,000 folder jobs (`MAILSHIFT_BENCH_JOBS`) published with confirms and run
//!   (lease, checkpoint, release, ack);
//! - planning: scheduler rounds over 300 and 10,000 registered mailboxes
//!   (`MAILSHIFT_BENCH_MAILBOXES=300,10000`) of 8 folders each on 4 old servers: a first
//!   pass (every folder a job, recorded and published) and a no-op round (nothing
//!   changed), each with its time per mailbox, and the status reads (aggregates) after;
//! - big batches: `mailshift batch import` of a 100,000-row CSV
//!   (`MAILSHIFT_BENCH_IMPORT_ROWS`), then `batch status` of that batch.

use async_trait::async_trait;
use futures::StreamExt;
use mailshift_core::Result;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::flags::{FlagSet, PermanentFlags};
use mailshift_core::folder::ListedFolder;
use mailshift_core::job::FolderJob;
use mailshift_core::plan::{BatchLimits, MessageMeta};
use mailshift_core::ports::FleetStore;
use mailshift_core::ports::*;
use mailshift_core::report::FolderReport;
use mailshift_engine::worker::{Leases, Worker};
use mailshift_queue::AmqpQueue;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// An empty mailbox on both sides; the source lists `FOLDERS` empty folders.
struct Noop(Capabilities);

const FOLDERS: [&str; 8] = [
    "INBOX", "Archive", "Drafts", "Sent", "Trash", "Junk", "Lists", "Projects",
];

#[async_trait]
impl MailSource for Noop {
    fn capabilities(&self) -> &Capabilities {
        &self.0
    }
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)> {
        let listed = FOLDERS
            .iter()
            .map(|f| ListedFolder {
                raw: f.to_string(),
                delimiter: Some('/'),
                special_use: None,
                selectable: true,
            })
            .collect();
        Ok((listed, Some('/')))
    }
    async fn examine(&mut self, _: &str) -> Result<FolderStatus> {
        Ok(status())
    }
    async fn list_messages(&mut self, _: u32) -> Result<Vec<MessageMeta>> {
        Ok(Vec::new())
    }
    async fn list_messages_of(&mut self, _: &[u32]) -> Result<Vec<MessageMeta>> {
        Ok(Vec::new())
    }
    async fn status(&mut self, _: &str) -> Result<FolderStatus> {
        Ok(status())
    }
    async fn fetch_messages(&mut self, _: &[u32], _: u64) -> Result<Vec<FetchedMessage>> {
        Ok(Vec::new())
    }
    async fn fetch_headers(&mut self, _: &[u32]) -> Result<Vec<FetchedHeader>> {
        Ok(Vec::new())
    }
    async fn uids(&mut self) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }
    async fn changed_since(&mut self, _: u64) -> Result<Vec<(u32, FlagSet)>> {
        Ok(Vec::new())
    }
    async fn wait_for_change(&mut self, _: Duration) -> Result<bool> {
        Ok(false)
    }
}

#[async_trait]
impl MailTarget for Noop {
    fn capabilities(&self) -> &Capabilities {
        &self.0
    }
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)> {
        Ok((Vec::new(), Some('/')))
    }
    async fn create_folder(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn select(&mut self, _: &str) -> Result<FolderStatus> {
        Ok(status())
    }
    async fn status(&mut self, _: &str) -> Result<FolderStatus> {
        Ok(status())
    }
    async fn uids(&mut self) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }
    async fn fetch_headers(&mut self, _: &[u32]) -> Result<Vec<FetchedHeader>> {
        Ok(Vec::new())
    }
    async fn locate(&mut self, _: &[u32]) -> Result<Vec<LocatedMessage>> {
        Ok(Vec::new())
    }
    async fn expunge_restoring(&mut self, _: &[u32]) -> Result<()> {
        Ok(())
    }
    async fn append(&mut self, _: &str, _: &[AppendItem<'_>]) -> Result<Appended> {
        Ok(Appended::Unknown)
    }
    async fn locate_since(&mut self, _: u32) -> Result<Vec<LocatedMessage>> {
        Ok(Vec::new())
    }
    async fn set_flags(&mut self, _: &[u32], _: &FlagSet) -> Result<()> {
        Ok(())
    }
    async fn expunge(&mut self, _: &[u32]) -> Result<()> {
        Ok(())
    }
    async fn transfer(&mut self, _: &[u32], _: &str, _: Transfer) -> Result<Vec<(u32, u32)>> {
        Ok(Vec::new())
    }
    async fn delete_folder(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
}

fn status() -> FolderStatus {
    FolderStatus {
        uidvalidity: 1,
        uidnext: Some(1),
        exists: 0,
        // CONDSTORE, as on Dovecot: a quiet folder is recognised by its HIGHESTMODSEQ.
        highest_modseq: Some(1),
        permanent_flags: PermanentFlags::unrestricted(),
    }
}

struct NoopConnector;

#[async_trait]
impl Connector for NoopConnector {
    async fn source(&self) -> Result<Box<dyn MailSource>> {
        Ok(Box::new(Noop(Capabilities {
            condstore: true,
            ..Capabilities::default()
        })))
    }
    async fn target(&self) -> Result<Box<dyn MailTarget>> {
        Ok(Box::new(Noop(Capabilities::default())))
    }
    async fn target_reader(&self) -> Result<Box<dyn MailSource>> {
        Ok(Box::new(Noop(Capabilities::default())))
    }
    fn hosts(&self) -> (String, String) {
        ("a:143".into(), "b:993".into())
    }
}

/// Counts finished folder passes and stops the workers at the target.
struct Counter {
    done: AtomicUsize,
    target: usize,
    stop: Arc<mailshift_engine::worker::Shutdown>,
}

impl Progress for Counter {
    fn folder_started(&self, _: &str, _: u64, _: u64) {}
    fn copied(&self, _: &str, _: u64, _: u64) {}
    fn folder_finished(&self, _: &FolderReport) {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 >= self.target {
            self.stop.request();
        }
    }
}

fn psql(sql: &str) {
    let _ = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .output();
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("MAILSHIFT_BENCH_MAILBOXES")
        .unwrap_or_else(|_| "300,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let mut planning = Vec::new();
    for n in sizes {
        planning.push(plan_bench(n).await);
    }
    let rows: usize = std::env::var("MAILSHIFT_BENCH_IMPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let import = (rows > 0).then(|| import_bench(rows));
    let messages: usize = std::env::var("MAILSHIFT_BENCH_STATUS_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let status = if messages > 0 {
        Some((messages, status_bench(messages).await))
    } else {
        None
    };
    workers_bench(planning, import, status).await;
}

/// `batch import` of `rows` rows and `batch status` after: (import s, status s).
fn import_bench(rows: usize) -> (usize, f64, f64) {
    let (db, tag) = bench_db();
    let dir = std::env::temp_dir().join(format!("mailshift-bench-{}", &tag));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("batch.csv");
    let mut body =
        String::from("source_host,source_user,source_password,dest_host,dest_user,dest_password\n");
    for i in 0..rows {
        body.push_str(&format!(
            "old{}.example,user{i},pw-{i}-a,new.example,user{i}@acme.example,pw-{i}-b\n",
            i % 8
        ));
    }
    std::fs::write(&csv, body).unwrap();
    let run = |args: &[&str]| {
        let t = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailshift"))
            .args(args)
            .env(
                "MAILSHIFT_DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:5432/{db}"),
            )
            .env("MAILSHIFT_SECRET_KEY", SecretKeyText::get())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mailshift {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    };
    let import = run(&["batch", "import", csv.to_str().unwrap(), "--name", "big"]);
    let status = run(&["batch", "status", "big", "--json"]);
    let _ = std::fs::remove_dir_all(&dir);
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    (rows, import, status)
}

/// One secret key for the processes of the import bench.
struct SecretKeyText;

impl SecretKeyText {
    fn get() -> String {
        static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        KEY.get_or_init(mailshift_store::SecretKey::generate)
            .clone()
    }
}

/// A throwaway database (dropped by each bench at its end): (name, a short tag).
fn bench_db() -> (String, String) {
    let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
    let db = format!("mailshift_bench_{tag}");
    psql(&format!("CREATE DATABASE {db}"));
    (db, tag)
}

/// A store on a new throwaway database, with a secret key of its own.
async fn bench_store() -> (String, String, Arc<dyn FleetStore>) {
    let (db, tag) = bench_db();
    let key =
        mailshift_store::SecretKey::from_base64(&mailshift_store::SecretKey::generate()).unwrap();
    let store = mailshift_store::open_fleet(
        &format!("postgres://postgres@127.0.0.1:5432/{db}"),
        true,
        Some(key),
    )
    .await
    .unwrap();
    (db, tag, store)
}

/// Registers the mailbox `from` -> `to` in `batch`.
async fn register(store: &Arc<dyn FleetStore>, from: &str, to: &str, batch: &str) -> MailboxRecord {
    let from: Endpoint = from.parse().unwrap();
    let to: Endpoint = to.parse().unwrap();
    store
        .add_mailbox(
            &from,
            &to,
            Some(batch),
            &MailboxOptions::default(),
            &MailboxCredentials {
                source_password: "s".to_string().into(),
                dest_password: "d".to_string().into(),
            },
        )
        .await
        .unwrap()
}

/// What planning over `mailboxes` cost.
struct PlanFigures {
    mailboxes: usize,
    register: f64,
    first: f64,
    first_jobs: usize,
    noop: f64,
    noop_jobs: usize,
    status: f64,
}

async fn plan_bench(n: usize) -> PlanFigures {
    use mailshift_engine::fleet::Scheduler;
    let (db, tag, store) = bench_store().await;
    let queue_name = format!("mailshift.bench.{}", &tag);
    let queue = Arc::new(
        AmqpQueue::publisher("amqp://guest:guest@127.0.0.1:5672/%2f", &queue_name)
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let adds = futures::stream::iter(0..n).map(|i| {
        let store = &store;
        async move {
            register(
                store,
                &format!("imap://user{i}@old{}.example", i % 4),
                &format!("imaps://user{i}@new.example"),
                "bench",
            )
            .await;
        }
    });
    adds.buffer_unordered(16).collect::<Vec<()>>().await;
    let register = started.elapsed().as_secs_f64();
    let scheduler = Scheduler {
        state: store.clone(),
        mailboxes: store.clone(),
        connectors: Arc::new(OneConnector(Arc::new(NoopConnector))),
        queue: queue.clone(),
        interval: Duration::from_secs(3600),
        split_above: None,
        cutovers: None,
        batches: None,
        owner: "bench".into(),
        // The `mailshift scheduler` defaults.
        parallel: 16,
        per_host: 4,
        outage_retry: Duration::from_secs(15),
        lost_after: Duration::from_secs(600),
        stopping: Default::default(),
        planning_lease: mailshift_engine::fleet::PLANNING_LEASE,
    };
    let t = Instant::now();
    let first = scheduler.round(true).await.unwrap();
    let first_secs = t.elapsed().as_secs_f64();
    assert_eq!(first.mailboxes, n, "{first:?}");
    // Workers run the first pass (no-op copies, checkpoints recorded) before the next
    // round, as in a fleet.
    run_jobs(&store, &queue_name, first.published).await;
    let t = Instant::now();
    let noop = scheduler.round(true).await.unwrap();
    let noop_secs = t.elapsed().as_secs_f64();
    let status = status_reads(&store, n).await;
    drop(queue);
    for s in ["", ".delay", ".dead"] {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_queue", &format!("{queue_name}{s}")])
            .output();
    }
    drop(store);
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    PlanFigures {
        mailboxes: n,
        register,
        first: first_secs,
        first_jobs: first.published,
        noop: noop_secs,
        noop_jobs: noop.published,
        status,
    }
}

/// What `mailshift status` reads (mailbox rows and per-mailbox aggregates); seconds.
async fn status_reads(store: &Arc<dyn FleetStore>, mailboxes: usize) -> f64 {
    let t = Instant::now();
    let rows = store.mailboxes(None).await.unwrap();
    let _ = store.copied_totals(None).await.unwrap();
    let _ = store.dead_jobs(None).await.unwrap();
    assert_eq!(rows.len(), mailboxes);
    t.elapsed().as_secs_f64()
}

/// This process's resident memory now (bytes).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// `status` over mailboxes whose state holds `messages` message rows in all, against
/// the same read with none: (seconds without, seconds with, RSS growth in bytes).
async fn status_bench(messages: usize) -> (f64, f64, u64) {
    use mailshift_core::fingerprint::Fingerprint;
    use mailshift_core::flags::FlagSet;
    let (db, _, store) = bench_store().await;
    let mut migrations = Vec::new();
    for i in 0..10 {
        let m = register(
            &store,
            &format!("imap://big{i}@old.example"),
            &format!("imaps://big{i}@new.example"),
            "big",
        )
        .await;
        migrations.push(m.migration_id);
    }
    let empty = status_reads(&store, 10).await;
    let per = messages / migrations.len();
    for m in &migrations {
        let folder = store.folder(*m, "INBOX", "INBOX").await.unwrap();
        let rows: Vec<CopiedMessage> = (1..=per as u32)
            .map(|uid| CopiedMessage {
                source_uid: uid,
                dest_uid: Some(uid),
                flags: FlagSet::from_storage("\\Seen"),
                size: 4000 + uid % 1000,
                fingerprint: Fingerprint::of(format!("{m} {uid}").as_bytes()),
                header_fingerprint: Some(Fingerprint::of(format!("h {m} {uid}").as_bytes())),
            })
            .collect();
        for chunk in rows.chunks(1000) {
            store.commit_batch(&folder, chunk, &[]).await.unwrap();
        }
    }
    let before = rss();
    let full = status_reads(&store, 10).await;
    let grown = rss().saturating_sub(before);
    drop(store);
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    (empty, full, grown)
}

/// 16 worker tasks on queue `name` until `jobs` folder passes have finished.
async fn run_jobs(store: &Arc<dyn FleetStore>, name: &str, jobs: usize) {
    let queue = Arc::new(
        AmqpQueue::connect("amqp://guest:guest@127.0.0.1:5672/%2f", name, 64)
            .await
            .unwrap(),
    );
    let stop = Arc::new(mailshift_engine::worker::Shutdown::default());
    let counter = Arc::new(Counter {
        done: AtomicUsize::new(0),
        target: jobs,
        stop: stop.clone(),
    });
    let mut worker = Worker::new(
        Arc::new(OneConnector(Arc::new(NoopConnector))),
        store.clone(),
        counter.clone(),
        BatchLimits::default(),
    );
    worker.stop = stop;
    worker.leases = Some(Leases {
        store: store.clone(),
        owner: "bench".into(),
        ttl: Duration::from_secs(60),
    });
    let worker = Arc::new(worker);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (w, q) = (worker.clone(), queue.clone());
            tokio::spawn(async move { w.run(&*q, None).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

async fn workers_bench(
    planning: Vec<PlanFigures>,
    import: Option<(usize, f64, f64)>,
    status: Option<(usize, (f64, f64, u64))>,
) {
    let jobs: usize = std::env::var("MAILSHIFT_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (db, tag, store) = bench_store().await;
    let queue_name = format!("mailshift.bench.{}", &tag);
    let queue = Arc::new(
        AmqpQueue::connect("amqp://guest:guest@127.0.0.1:5672/%2f", &queue_name, 64)
            .await
            .unwrap(),
    );
    let a: Endpoint = "imap://bench@a.example".parse().unwrap();
    let b: Endpoint = "imaps://bench@b.example".parse().unwrap();
    let migration = store.migration(&a, &b).await.unwrap();

    let stop = Arc::new(mailshift_engine::worker::Shutdown::default());
    let counter = Arc::new(Counter {
        done: AtomicUsize::new(0),
        target: jobs,
        stop: stop.clone(),
    });
    let mut worker = Worker::new(
        Arc::new(OneConnector(Arc::new(NoopConnector))),
        store.clone(),
        counter.clone(),
        BatchLimits::default(),
    );
    worker.stop = stop.clone();
    worker.leases = Some(Leases {
        store: store.clone(),
        owner: "bench".into(),
        ttl: Duration::from_secs(60),
    });
    let worker = Arc::new(worker);

    let started = Instant::now();
    let consumers: Vec<_> = (0..16)
        .map(|_| {
            let (w, q) = (worker.clone(), queue.clone());
            tokio::spawn(async move { w.run(&*q, None).await })
        })
        .collect();
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let q = queue.clone();
            tokio::spawn(async move {
                for i in (p..jobs).step_by(8) {
                    let name = format!("Folder {i}");
                    q.publish(&FolderJob {
                        id: Uuid::new_v4(),
                        migration_id: migration,
                        source_folder: name.clone(),
                        dest_folder: name.clone(),
                        source_display: name.clone(),
                        dest_display: name,
                        attempt: 1,
                        delete: true,
                        adopt_existing: false,
                        uid_range: None,
                        dual_reception: false,
                        first_failed_at: None,
                        label_folders: Vec::new(),
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let published = started.elapsed().as_secs_f64();
    for c in consumers {
        c.await.unwrap().unwrap();
    }
    let total = started.elapsed().as_secs_f64();
    let done = counter.done.load(Ordering::SeqCst);
    println!("\nmailshift fleet control-plane bench: {jobs} folder jobs, no-op copier\n");
    println!("published (with confirms)      {published:>7.2}s");
    println!(
        "all run (lease, checkpoint, ack) {total:>5.2}s  {:.0} jobs/s  target < 10 s {}",
        done as f64 / total,
        if total < 10.0 { "PASS" } else { "MISS" }
    );
    assert_eq!(done, jobs);
    drop(queue);
    for s in ["", ".delay", ".dead"] {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_queue", &format!("{queue_name}{s}")])
            .output();
    }
    drop(store);
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    // Planning: each size's time per mailbox, and as a ratio to the smallest size's (a
    // baseline of the same run: 1.0 means planning scales linearly).
    println!("\nplanning (scheduler defaults: 16 at once, 4 per old server; 8 folders each)");
    let base = planning
        .first()
        .map(|p| p.first / p.mailboxes as f64)
        .unwrap_or(1.0);
    let mut rows = Vec::new();
    for p in &planning {
        let per = p.first / p.mailboxes as f64;
        let noop_per = p.noop / p.mailboxes as f64;
        println!(
            "{:>6} mailboxes  registered {:>6.2}s  first pass {:>7.2}s ({} jobs, {:.1} ms/mailbox, x{:.2} of the smallest)  no-op round {:>7.2}s ({} jobs, {:.2}x of a first pass)  status reads {:.3}s",
            p.mailboxes,
            p.register,
            p.first,
            p.first_jobs,
            per * 1000.0,
            per / base,
            p.noop,
            p.noop_jobs,
            noop_per / per,
            p.status,
        );
        if p.mailboxes == 300 {
            println!(
                "       target: 300 first-pass mailboxes planned in <= 20 s: {}",
                if p.first <= 20.0 { "PASS" } else { "MISS" }
            );
        }
        if p.mailboxes == 10_000 {
            println!(
                "       target: a no-op round over 10,000 mailboxes in <= 300 s: {}",
                if p.noop <= 300.0 { "PASS" } else { "MISS" }
            );
        }
        rows.push(serde_json::json!({
            "mailboxes": p.mailboxes, "register_secs": p.register,
            "first_pass_secs": p.first, "first_pass_jobs": p.first_jobs,
            "noop_round_secs": p.noop, "noop_round_jobs": p.noop_jobs,
            "status_reads_secs": p.status,
        }));
    }
    let mut import_json = serde_json::Value::Null;
    if let Some((n, secs, status)) = import {
        // Against the same rows registered in-process above (the planning bench's
        // registration rate): what the CSV path (parse, checks, process) adds.
        let inproc = planning
            .last()
            .map(|p| p.register / p.mailboxes as f64)
            .unwrap_or(0.0);
        println!(
            "\nbatch import of {n} rows {secs:>7.2}s ({:.0} rows/s, x{:.2} of in-process registration per row); batch status after {status:.2}s",
            n as f64 / secs,
            if inproc > 0.0 {
                secs / n as f64 / inproc
            } else {
                0.0
            },
        );
        import_json = serde_json::json!({"rows": n, "import_secs": secs, "status_secs": status});
    }
    let mut status_json = serde_json::Value::Null;
    if let Some((n, (empty, full, grown))) = status {
        println!(
            "status reads over {n} message rows {full:.3}s (x{:.2} of the same reads with none, {empty:.3}s); memory grew {:.1} MiB",
            full / empty.max(1e-6),
            grown as f64 / (1024.0 * 1024.0)
        );
        status_json = serde_json::json!({"message_rows": n, "empty_secs": empty, "full_secs": full, "rss_growth_bytes": grown});
    }
    std::fs::write(
        out.join("fleet.json"),
        serde_json::json!({"jobs": jobs, "publish_secs": published, "total_secs": total, "jobs_per_sec": done as f64 / total, "planning": rows, "import": import_json, "status": status_json}).to_string(),
    )
    .unwrap();
}
