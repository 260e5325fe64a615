#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fleet mode end to end: real PostgreSQL (127.0.0.1:5432), real RabbitMQ
//! (127.0.0.1:5672) and real Dovecot. Mailboxes are registered, a scheduler round
//! publishes folder jobs, two worker processes copy them; the servers are then compared
//! independently of mailshift's state.
//!
//! `MAILSHIFT_TEST_SKIP_FLEET=1` skips these tests where PostgreSQL or RabbitMQ is absent.

use mailshift_tests::corpus::{self, CorpusSpec, special_use_options};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::imap;
use mailshift_tests::mailshift_bin;
use mailshift_tests::pair::{assert_same, text};
use std::process::{Command, Output, Stdio};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn skip() -> bool {
    std::env::var_os("MAILSHIFT_TEST_SKIP_FLEET").is_some()
}

/// A throwaway PostgreSQL database, dropped at the end.
struct Db {
    name: String,
}

impl Db {
    fn create() -> Db {
        let name = format!("mailshift_fleet_{}", uuid_like());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Db { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn psql(db: &str, sql: &str) -> String {
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

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{}", std::process::id(), t % 1_000_000_000)
}

struct Fleet {
    db: Db,
    key: String,
    queue: String,
}

impl Fleet {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(mailshift_bin());
        c.args(args)
            .env("MAILSHIFT_DATABASE_URL", self.db.url())
            .env("MAILSHIFT_AMQP_URL", AMQP)
            .env("MAILSHIFT_SECRET_KEY", &self.key)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd(args);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.output().expect("run mailshift")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mailboxes_migrated_by_two_workers_over_rabbitmq_and_postgres() {
    if skip() {
        return;
    }
    let folders = corpus::standard_folders();
    let src = Dovecot::start(DovecotOptions {
        delimiter: '.',
        special_use: special_use_options(&folders, '.'),
        ..Default::default()
    })
    .unwrap();
    let dst = Dovecot::start(DovecotOptions::default()).unwrap();
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
        db: Db::create(),
        key,
        queue: format!("mailshift.test.{}", uuid_like()),
    };
    let out = fleet.run(&["db", "migrate"], &[]);
    assert!(out.status.success(), "db migrate: {}", text(&out));

    let users = ["alice", "bob", "carol"];
    // All users before the first login: Dovecot re-reads its passwd file by mtime.
    for u in users {
        src.add_user(u, &format!("src-{u}-Pw1"));
        dst.add_user(u, &format!("dst-{u}-Pw1"));
    }
    src.add_user("dave", "src-dave-Pw1");
    dst.add_user("dave", "dst-dave-Pw1");
    let mut before = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let (spw, dpw) = (format!("src-{u}-Pw1"), format!("dst-{u}-Pw1"));
        let corpus = corpus::generate(&CorpusSpec {
            seed: 100 + i as u64,
            messages: 250,
            big_attachments: 0,
        });
        imap::populate(src.port(), u, &spw, &corpus).await.unwrap();
        before.push(imap::snapshot(src.port(), u, &spw).await.unwrap());
        let out = fleet.run(
            &[
                "mailbox",
                "add",
                "--from",
                &src.url(u),
                "--to",
                &dst.url(u),
                "--allow-plaintext",
                "--batch",
                "test",
            ],
            &[
                ("MAILSHIFT_FROM_PASSWORD", &spw),
                ("MAILSHIFT_TO_PASSWORD", &dpw),
            ],
        );
        assert!(out.status.success(), "mailbox add: {}", text(&out));
    }
    // A mailbox whose destination password is wrong.
    let out = fleet.run(
        &[
            "mailbox",
            "add",
            "--from",
            &src.url("dave"),
            "--to",
            &dst.url("dave"),
            "--allow-plaintext",
        ],
        &[
            ("MAILSHIFT_FROM_PASSWORD", "src-dave-Pw1"),
            ("MAILSHIFT_TO_PASSWORD", "not-daves-password"),
        ],
    );
    assert!(out.status.success(), "mailbox add: {}", text(&out));

    // No plaintext password at rest.
    let secrets = psql(
        &fleet.db.name,
        "SELECT source_secret || ' ' || dest_secret FROM mailbox",
    );
    for pw in ["src-alice-Pw1", "dst-bob-Pw1", "not-daves-password"] {
        assert!(!secrets.contains(pw), "plaintext password in the database");
    }

    let out = fleet.run(&["scheduler", "--once", "--queue", &fleet.queue], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "dave cannot be planned: {}",
        text(&out)
    );
    let workers: Vec<_> = (0..2)
        .map(|_| {
            fleet
                .cmd(&[
                    "worker",
                    "--queue",
                    &fleet.queue,
                    "--concurrency",
                    "2",
                    "--exit-when-idle",
                    "5",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker: {}", text(&out));
        let all = text(&out);
        assert!(!all.contains("Pw1") && !all.contains("not-daves-password"));
    }

    for (i, u) in users.iter().enumerate() {
        let got = imap::snapshot(dst.port(), u, &format!("dst-{u}-Pw1"))
            .await
            .unwrap();
        assert_same(&before[i], &got, &format!("mailbox {u}"));
    }
    let out = fleet.run(&["status", "--json"], &[]);
    assert!(out.status.success(), "status: {}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = status.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let dave = rows
        .iter()
        .find(|r| r["source"].as_str().unwrap_or("").contains("dave"))
        .unwrap();
    assert_eq!(dave["status"], "failed", "{status:#}");
    assert!(
        dave["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("destination"),
        "the error names the side: {status:#}"
    );
    assert!(!text(&out).contains("Pw1"));
    for r in rows.iter().filter(|r| r["source"] != dave["source"]) {
        assert_eq!(r["messages_copied"], 250, "{status:#}");
    }
    let _ = Command::new("rabbitmqctl")
        .args(["delete_queue", &fleet.queue])
        .output();
}
