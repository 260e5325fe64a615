//! A throwaway fleet for tests: a PostgreSQL database of its own, a credentials key, a
//! RabbitMQ queue name, and the `mailshift` processes run against them (workers whose
//! stderr is drained as they run).
//!
//! `MAILSHIFT_TEST_SKIP_FLEET=1` makes [`skip`] true where PostgreSQL or RabbitMQ is absent.

use crate::corpus::{self, CorpusSpec, special_use_options};
use crate::dovecot::{Dovecot, DovecotOptions};
use crate::imap;
use crate::mailshift_bin;
use crate::pair::text;
use std::process::{Command, Output, Stdio};

/// Where fleet tests find RabbitMQ.
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn skip() -> bool {
    std::env::var_os("MAILSHIFT_TEST_SKIP_FLEET").is_some()
}

/// A throwaway PostgreSQL database, dropped at the end.
pub struct Db {
    pub name: String,
    /// A database of another server (a private one the test may stop), not dropped here.
    external: Option<String>,
}

impl Db {
    pub fn create() -> Db {
        let name = format!("mailshift_fleet_{}", uuid_like());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Db {
            name,
            external: None,
        }
    }

    pub fn url(&self) -> String {
        match &self.external {
            Some(url) => url.clone(),
            None => format!("postgres://postgres@127.0.0.1:5432/{}", self.name),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if self.external.is_some() {
            return;
        }
        if std::env::var_os("MAILSHIFT_TEST_KEEP_DB").is_some() {
            eprintln!(
                "kept the test database {} (MAILSHIFT_TEST_KEEP_DB)",
                self.name
            );
            return;
        }
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-At",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql {sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn uuid_like() -> String {
    // Tests run in parallel: a counter keeps names apart even within one clock tick.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        t % 1_000_000_000
    )
}

pub struct Fleet {
    pub db: Db,
    pub key: String,
    pub queue: String,
    /// The broker (the shared one unless [`new_fleet_on`] named another).
    pub amqp: String,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for q in ["", ".delay", ".dead"] {
            let _ = Command::new("rabbitmqctl")
                .args(["delete_queue", &format!("{}{q}", self.queue)])
                .output();
        }
    }
}

/// A worker process whose stderr is read as it is written: a pipe nobody drains fills
/// up (64 KiB) and then blocks the worker on its next log line.
pub struct WorkerProc {
    pub child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl WorkerProc {
    pub fn new(mut child: std::process::Child) -> WorkerProc {
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = std::io::Read::read_to_end(&mut e, &mut buf);
                buf
            })
        });
        WorkerProc { child, stderr }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }

    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        let status = self.child.wait()?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok(Output {
            status,
            stdout: Vec::new(),
            stderr,
        })
    }
}

/// Sends SIGTERM to process `pid` (what `docker stop` and systemd send).
pub fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// A long-running process (scheduler, worker, `serve`) killed when the test ends, however
/// it ends: a failed assertion must not leave it running.
pub struct Running(Option<WorkerProc>);

impl Running {
    pub fn new(p: WorkerProc) -> Running {
        Running(Some(p))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, WorkerProc::id)
    }

    /// Kills it and returns what it printed.
    pub fn output(mut self) -> String {
        let mut p = self.0.take().unwrap();
        let _ = p.kill();
        text(&p.wait_with_output().unwrap())
    }

    /// What it printed and its exit status if it has exited by now (without waiting);
    /// None while it runs.
    pub fn try_exit(&mut self) -> Option<Output> {
        let exited = self.0.as_mut()?.child.try_wait().unwrap().is_some();
        if !exited {
            return None;
        }
        Some(self.0.take().unwrap().wait_with_output().unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(p) = &mut self.0 {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Fleet {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(mailshift_bin());
        c.args(args)
            .env("MAILSHIFT_DATABASE_URL", self.db.url())
            .env("MAILSHIFT_AMQP_URL", &self.amqp)
            .env("MAILSHIFT_SECRET_KEY", &self.key)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn add(&self, src: &Dovecot, dst: &Dovecot, user: &str, spw: &str, dpw: &str) {
        self.add_with(src, dst, user, spw, dpw, &["--batch", "test"]);
    }

    /// `mailbox add` with other options (`--batch NAME`, `--domain DOMAIN`).
    pub fn add_with(
        &self,
        src: &Dovecot,
        dst: &Dovecot,
        user: &str,
        spw: &str,
        dpw: &str,
        extra: &[&str],
    ) {
        let mut args = vec!["mailbox", "add", "--from"];
        let (from, to) = (src.url(user), dst.url(user));
        args.extend([from.as_str(), "--to", to.as_str(), "--allow-plaintext"]);
        args.extend_from_slice(extra);
        let out = self.run(
            &args,
            &[
                ("MAILSHIFT_FROM_PASSWORD", spw),
                ("MAILSHIFT_TO_PASSWORD", dpw),
            ],
        );
        assert!(out.status.success(), "mailbox add: {}", text(&out));
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"], &[]);
        assert!(out.status.success(), "status: {}", text(&out));
        assert!(!text(&out).contains("-Pw1"));
        crate::schema::check(&out.stdout)["mailboxes"].clone()
    }

    pub fn run(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd(args);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.output().expect("run mailshift")
    }
}

pub fn new_fleet() -> Fleet {
    fleet_with(Db::create(), AMQP.to_string())
}

/// A fleet on another PostgreSQL database (URL) and RabbitMQ broker (URL): private
/// servers that a test may crash.
pub fn new_fleet_on(db_url: &str, amqp: &str) -> Fleet {
    fleet_with(
        Db {
            name: String::new(),
            external: Some(db_url.to_string()),
        },
        amqp.to_string(),
    )
}

fn fleet_with(db: Db, amqp: String) -> Fleet {
    let key = String::from_utf8(
        Command::new(mailshift_bin())
            .args(["db", "new-key"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let fleet = Fleet {
        db,
        key,
        queue: format!("mailshift.test.{}", uuid_like()),
        amqp,
    };
    let out = fleet.run(&["db", "migrate"], &[]);
    assert!(out.status.success(), "db migrate: {}", text(&out));
    fleet
}

/// The old server's password of a fleet test's `user`.
pub fn src_pw(user: &str) -> String {
    format!("src-{user}-Pw1")
}

/// The new server's password of a fleet test's `user`.
pub fn dst_pw(user: &str) -> String {
    format!("dst-{user}-Pw1")
}

/// A `.`-delimited source with the corpus's special-use folders and a default
/// destination, with `users` on both ([`src_pw`], [`dst_pw`]), each source mailbox
/// filled with `messages` of the corpus seeded `seed + i`; returns the servers and each
/// source mailbox's snapshot.
pub async fn servers(
    users: &[&str],
    messages: usize,
    seed: u64,
) -> (Dovecot, Dovecot, Vec<imap::Snapshot>) {
    let folders = corpus::standard_folders();
    let src = Dovecot::start(DovecotOptions {
        delimiter: '.',
        special_use: special_use_options(&folders, '.'),
        ..Default::default()
    })
    .unwrap();
    let dst = Dovecot::start(DovecotOptions::default()).unwrap();
    // All users before the first login: Dovecot re-reads its passwd file by mtime.
    for u in users {
        src.add_user(u, &src_pw(u));
        dst.add_user(u, &dst_pw(u));
    }
    let mut before = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let c = corpus::generate(&CorpusSpec {
            seed: seed + i as u64,
            messages,
            big_attachments: 0,
        });
        imap::populate(src.port(), u, &src_pw(u), &c).await.unwrap();
        before.push(imap::snapshot(src.port(), u, &src_pw(u)).await.unwrap());
    }
    (src, dst, before)
}

/// Messages on `dst_port` over the mailboxes of `users` (a mailbox that cannot be read
/// counts 0).
pub async fn copied(dst_port: u16, users: &[&str]) -> usize {
    let mut n = 0;
    for u in users {
        if let Ok(s) = imap::snapshot(dst_port, u, &dst_pw(u)).await {
            n += s.values().map(Vec::len).sum::<usize>();
        }
    }
    n
}

/// A loopback TCP port free a moment ago (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
