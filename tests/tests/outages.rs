#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fleet heals itself (issue 16): a private RabbitMQ killed with SIGKILL and a
//! private PostgreSQL stopped with `-m immediate` in the middle of a migration, each
//! started again after a while, with the scheduler and the workers left running. Every
//! mailbox must converge byte-exact and none may end `failed`. Judged on the servers
//! themselves; the shared PostgreSQL and RabbitMQ are never touched.

use mailshift_tests::fleet::{WorkerProc, dst_pw, new_fleet_on, servers, skip, src_pw};
use mailshift_tests::imap;
use mailshift_tests::pair::{assert_same, text};
use mailshift_tests::services::{PrivatePostgres, PrivateRabbit};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long each outage lasts: long enough for every process to notice and to retry
/// several times, short enough for CI.
const OUTAGE: Duration = Duration::from_secs(12);

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

async fn copied(dst_port: u16, users: &[&str]) -> usize {
    let mut n = 0;
    for u in users {
        if let Ok(s) = imap::snapshot(dst_port, u, &dst_pw(u)).await {
            n += s.values().map(Vec::len).sum::<usize>();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_broker_and_a_stopped_database_heal_without_a_failed_mailbox() {
    if skip() {
        return;
    }
    let pg = PrivatePostgres::start();
    pg.create_database("fleet");
    let rabbit = PrivateRabbit::start();
    let users = ["olga", "piet", "quin"];
    let (src, dst, before) = servers(&users, 500, 160).await;
    let total: usize = before
        .iter()
        .map(|s| s.values().map(Vec::len).sum::<usize>())
        .sum();
    let fleet = new_fleet_on(&pg.url("fleet"), &rabbit.url());
    for u in users {
        fleet.add(&src, &dst, u, &src_pw(u), &dst_pw(u));
    }
    let scheduler = WorkerProc::new(
        fleet
            .cmd(&[
                "scheduler",
                "--queue",
                &fleet.queue,
                "--tick",
                "1",
                "--requeue-lost-after",
                "30",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Small batches: the copy is still running when the outages start.
    let worker = WorkerProc::new(
        fleet
            .cmd(&[
                "worker",
                "--queue",
                &fleet.queue,
                "--concurrency",
                "2",
                "--batch-messages",
                "20",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // The broker dies while mail is being copied.
    let deadline = Instant::now() + Duration::from_secs(120);
    while copied(dst.port(), &users).await == 0 {
        assert!(Instant::now() < deadline, "nothing copied within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rabbit.kill9();
    let during = copied(dst.port(), &users).await;
    tokio::time::sleep(OUTAGE).await;
    rabbit.restart();

    // Then the database, once the copy has moved on after the broker came back.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = copied(dst.port(), &users).await;
        if now > during || now >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress within 120 s after the broker came back ({now} of {total})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pg.stop_immediate();
    tokio::time::sleep(OUTAGE).await;
    pg.start_again();

    // Convergence: every mailbox synced, none failed, the servers identical.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = fleet.run(&["status", "--json"], &[]);
        if out.status.success() {
            let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let rows = rows.as_array().unwrap();
            for r in rows {
                assert_ne!(r["status"], "failed", "a mailbox failed: {r:#}");
            }
            if rows.iter().all(|r| r["status"] == "synced") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every mailbox synced within 300 s after the outages:\n{}",
            text(&out)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (i, u) in users.iter().enumerate() {
        let got = imap::snapshot(dst.port(), u, &dst_pw(u)).await.unwrap();
        assert_same(&before[i], &got, &format!("mailbox {u} after the outages"));
    }
    sigterm(scheduler.id());
    sigterm(worker.id());
    let (s, w) = (
        scheduler.wait_with_output().unwrap(),
        worker.wait_with_output().unwrap(),
    );
    for (name, out) in [("scheduler", &s), ("worker", &w)] {
        assert!(out.status.success(), "{name} after SIGTERM: {}", text(out));
        let all = text(out);
        assert!(!all.contains("-Pw1"), "a password in the {name}'s output");
        assert!(
            !all.contains("guest:guest"),
            "the broker URL's password in the {name}'s output"
        );
    }
}
