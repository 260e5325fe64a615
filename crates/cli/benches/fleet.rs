#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fleet's control plane alone: 10,000 folder jobs (`MAILSHIFT_BENCH_JOBS`) published
//! to RabbitMQ with confirms and run by workers against PostgreSQL (lease, checkpoint,
//! release, ack) with a no-op mail copier. Run with
//! `cargo bench -p mailshift --bench fleet` (needs 127.0.0.1:5432 and :5672).

use async_trait::async_trait;
use mailshift_core::Result;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::flags::{FlagSet, PermanentFlags};
use mailshift_core::folder::ListedFolder;
use mailshift_core::job::FolderJob;
use mailshift_core::plan::{BatchLimits, MessageMeta};
use mailshift_core::ports::*;
use mailshift_core::report::FolderReport;
use mailshift_engine::worker::{Leases, Worker};
use mailshift_queue::AmqpQueue;
use mailshift_store::SeaStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// An empty mailbox on both sides.
struct Noop(Capabilities);

#[async_trait]
impl MailSource for Noop {
    fn capabilities(&self) -> &Capabilities {
        &self.0
    }
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)> {
        Ok((Vec::new(), Some('/')))
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
        highest_modseq: None,
        permanent_flags: PermanentFlags::unrestricted(),
    }
}

struct NoopConnector;

#[async_trait]
impl Connector for NoopConnector {
    async fn source(&self) -> Result<Box<dyn MailSource>> {
        Ok(Box::new(Noop(Capabilities::default())))
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
    let jobs: usize = std::env::var("MAILSHIFT_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tag = Uuid::new_v4().simple().to_string();
    let db = format!("mailshift_bench_{}", &tag[..12]);
    psql(&format!("CREATE DATABASE {db}"));
    let store = SeaStore::connect(&format!("postgres://postgres@127.0.0.1:5432/{db}"), true)
        .await
        .unwrap();
    let queue_name = format!("mailshift.bench.{}", &tag[..12]);
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
        Arc::new(store.clone()),
        counter.clone(),
        BatchLimits::default(),
    );
    worker.stop = stop.clone();
    worker.leases = Some(Leases {
        store: Arc::new(store.clone()),
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
    std::fs::write(
        out.join("fleet.json"),
        serde_json::json!({"jobs": jobs, "publish_secs": published, "total_secs": total, "jobs_per_sec": done as f64 / total}).to_string(),
    )
    .unwrap();
}
