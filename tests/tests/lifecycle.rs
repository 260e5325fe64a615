#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The long-running processes stop cleanly (issue 15): SIGTERM to `scheduler`, `worker`
//! and `serve` in the middle of a migration. Each exits 0 within its grace time, each
//! has its spans delivered to a loopback OTLP receiver by the flush at exit, and no
//! lease is left behind in the fleet's database (folders, connection slots, planning,
//! relaying). A fresh worker then picks the handed-back work up at once and the
//! mailboxes converge byte-exact.
//!
//! `MAILSHIFT_TEST_SKIP_FLEET=1` skips it where PostgreSQL or RabbitMQ is absent.

use mailshift_tests::fleet::{
    Fleet, Running, WorkerProc, copied, dst_pw, free_port, new_fleet, psql, servers, sigterm, skip,
    src_pw,
};
use mailshift_tests::imap;
use mailshift_tests::otlp::{Receiver, Span};
use mailshift_tests::pair::{assert_same, text};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const USERS: [&str; 2] = ["lena", "mats"];

/// How long each process may take from SIGTERM to its exit. The worker finishes the
/// batch in flight (10 messages) and hands the rest back; `serve` lets requests in
/// flight finish; the scheduler finishes the mailboxes it is planning, for at most 60 s.
const WORKER_GRACE: Duration = Duration::from_secs(10);
const SERVE_GRACE: Duration = Duration::from_secs(10);
const SCHEDULER_GRACE: Duration = Duration::from_secs(65);

/// Trace export to `otlp`, with nothing sent before the process stops (no timer, no
/// batch filling up): whatever the receiver holds afterwards came from the flush at exit.
fn otlp_env(otlp: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".into()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16384".into()),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16384".into()),
    ]
}

/// `mailshift ARGS...` with `env`, its stderr read as it comes.
fn spawn(fleet: &Fleet, args: &[&str], env: &[(&'static str, String)]) -> Running {
    Running::new(WorkerProc::new(
        fleet
            .cmd(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

/// Leases unexpired in the fleet's database, one line each: folders being copied,
/// connection slots, mailboxes being planned, jobs being relayed.
fn leases_held(fleet: &Fleet) -> Vec<String> {
    let rows = psql(
        &fleet.db.name,
        "SELECT 'folder ' || source_folder || ' held by ' || lease_owner \
           FROM folder WHERE lease_owner IS NOT NULL AND lease_until > now() \
         UNION ALL SELECT 'host_slot ' || host || ' #' || slot || ' held by ' || owner \
           FROM host_slot WHERE owner IS NOT NULL AND lease_until > now() \
         UNION ALL SELECT 'mailbox ' || source || ' planned by ' || plan_owner \
           FROM mailbox WHERE plan_owner IS NOT NULL \
           AND plan_until > extract(epoch FROM now()) \
         UNION ALL SELECT 'job ' || id || ' relayed by ' || relay_owner \
           FROM job WHERE relay_owner IS NOT NULL \
           AND relay_until > extract(epoch FROM now())",
    );
    rows.lines().map(str::to_string).collect()
}

async fn health(base: &str) -> bool {
    matches!(reqwest::get(format!("{base}/health")).await, Ok(r) if r.status() == 200)
}

fn spans_of<'a>(spans: &'a [Span], service: &str, name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_scheduler_worker_and_serve_in_time_with_spans_flushed_and_leases_released() {
    // reqwest carries no crypto provider of its own in this workspace.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    if skip() {
        return;
    }
    let (src, dst, before) = servers(&USERS, 300, 150).await;
    let total: usize = before
        .iter()
        .map(|s| s.values().map(Vec::len).sum::<usize>())
        .sum();
    let fleet = new_fleet();
    for u in USERS {
        fleet.add(&src, &dst, u, &src_pw(u), &dst_pw(u));
    }
    // Every session to the old server takes a fleet-wide connection slot; its rate cap
    // (about 66 messages/s for the worker's two connections) keeps the copy going long
    // enough to be interrupted.
    let source_host = format!("127.0.0.1:{}", src.port());
    let out = fleet.run(
        &[
            "host",
            "limit",
            &source_host,
            "3",
            "--messages-per-sec",
            "100",
        ],
        &[],
    );
    assert!(out.status.success(), "host limit: {}", text(&out));
    let otlp = Receiver::start().await;
    let env = otlp_env(&otlp);

    // `serve` first. Of its requests only those reaching the mail servers (verify,
    // report) open spans, IMAP commands: a verify of the batch gives it some.
    let base = format!("http://127.0.0.1:{}", free_port());
    let listen = base.trim_start_matches("http://").to_string();
    let mut serve = spawn(&fleet, &["serve", "--listen", &listen], &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !health(&base).await {
        assert!(Instant::now() < deadline, "serve did not answer /health");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = fleet.run(&["token", "create", "--name", "lifecycle"], &[]);
    assert!(out.status.success(), "token create: {}", text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/batches/test/verify"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "verify");
    let verified: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(verified["ready"], USERS.len(), "{verified:#}");

    let mut scheduler = spawn(
        &fleet,
        &["scheduler", "--queue", &fleet.queue, "--tick", "1"],
        &env,
    );
    let mut worker = spawn(
        &fleet,
        &[
            "worker",
            "--queue",
            &fleet.queue,
            "--concurrency",
            "2",
            "--batch-messages",
            "10",
        ],
        &env,
    );

    // Under way: a sixth of the mail copied, folders and connection slots leased.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let (n, held) = loop {
        let n = copied(dst.port(), &USERS).await;
        assert!(
            n < total,
            "everything was copied before the stop: nothing left to interrupt"
        );
        let held = leases_held(&fleet);
        if n >= 100
            && held.iter().any(|l| l.starts_with("folder "))
            && held.iter().any(|l| l.starts_with("host_slot "))
        {
            break (n, held);
        }
        assert!(
            Instant::now() < deadline,
            "no copy under way within 120 s ({n} of {total} copied); leases: {held:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(health(&base).await, "serve stopped answering /health");
    eprintln!(
        "copy under way after {:?}: {n} of {total} messages, leases {held:?}",
        started.elapsed()
    );
    let early = otlp.spans();
    assert!(
        early.is_empty(),
        "{} span(s) exported before the stop despite OTEL_BSP_SCHEDULE_DELAY (the test \
         could not tell a flush at exit from a periodic export)",
        early.len()
    );

    // SIGTERM to all three at once; each exit timed on its own.
    let stopped = Instant::now();
    for p in [&scheduler, &worker, &serve] {
        sigterm(p.id());
    }
    let mut exits: [Option<(Duration, Output)>; 3] = [None, None, None];
    let graces = [SCHEDULER_GRACE, WORKER_GRACE, SERVE_GRACE];
    let names = ["scheduler", "worker", "serve"];
    loop {
        for (i, p) in [&mut scheduler, &mut worker, &mut serve]
            .into_iter()
            .enumerate()
        {
            if exits[i].is_none()
                && let Some(out) = p.try_exit()
            {
                exits[i] = Some((stopped.elapsed(), out));
            }
        }
        let waiting: Vec<usize> = (0..3).filter(|i| exits[*i].is_none()).collect();
        if waiting.is_empty() {
            break;
        }
        let late: Vec<&str> = waiting
            .iter()
            .filter(|i| stopped.elapsed() > graces[**i])
            .map(|i| names[*i])
            .collect();
        assert!(
            late.is_empty(),
            "still running {:?} after SIGTERM: {late:?}",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // All three have exited: the leases they held are released now or never.
    let left = leases_held(&fleet);
    let exits: Vec<(Duration, Output)> = exits.into_iter().map(Option::unwrap).collect();
    for (i, (took, out)) in exits.iter().enumerate() {
        let name = names[i];
        eprintln!("{name} exited {took:?} after SIGTERM");
        let all = text(out);
        assert!(
            out.status.success(),
            "{name} after SIGTERM: {}\n{all}",
            out.status
        );
        assert!(
            *took < graces[i],
            "{name} took {took:?} (grace {:?})",
            graces[i]
        );
        assert!(!all.contains("-Pw1"), "a password in the {name}'s output");
        assert!(
            !all.contains("guest:guest"),
            "the broker URL's password in the {name}'s output"
        );
        assert!(
            !all.contains(&token),
            "the API token in the {name}'s output"
        );
    }
    assert!(
        left.is_empty(),
        "leases still held after every process stopped: {left:#?}"
    );
    let handed_back = String::from_utf8_lossy(&exits[1].1.stderr).contains("job handed back");
    assert!(handed_back, "the worker handed no job back");
    let interrupted_at = copied(dst.port(), &USERS).await;
    assert!(interrupted_at < total, "the worker finished after SIGTERM");

    // Spans of every process, delivered by its flush at exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = otlp.spans();
        let interrupted = spans_of(&spans, "mailshift-worker", "worker.job")
            .into_iter()
            .any(|s| {
                s.attributes
                    .contains(&("outcome".into(), "interrupted".into()))
            });
        if interrupted
            && !spans_of(&spans, "mailshift-scheduler", "scheduler.plan").is_empty()
            && !spans_of(&spans, "mailshift-serve", "imap.command").is_empty()
            && !spans_of(&spans, "mailshift-serve", "http.request").is_empty()
        {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing after the processes exited; received: {:?}",
            spans
                .iter()
                .map(|s| (s.service.as_str(), s.name.as_str()))
                .collect::<std::collections::BTreeSet<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !spans_of(&spans, "mailshift-scheduler", "amqp.publish").is_empty(),
        "no publish span from the scheduler"
    );
    for name in ["folder.pass", "batch", "imap.command"] {
        assert!(
            !spans_of(&spans, "mailshift-worker", name).is_empty(),
            "no {name} span from the worker"
        );
    }
    // serve's verify request is the parent of the IMAP sessions it opened.
    let requests = spans_of(&spans, "mailshift-serve", "http.request");
    assert!(
        spans_of(&spans, "mailshift-serve", "imap.command")
            .iter()
            .any(|c| requests.iter().any(|r| r.trace_id == c.trace_id)),
        "serve's IMAP commands are not in the trace of an HTTP request"
    );
    let done = spans_of(&spans, "mailshift-worker", "worker.job")
        .into_iter()
        .filter(|s| s.attributes.contains(&("outcome".into(), "done".into())))
        .count();
    let mut per_service = std::collections::BTreeMap::<&str, usize>::new();
    for s in &spans {
        *per_service.entry(s.service.as_str()).or_default() += 1;
    }
    eprintln!(
        "spans received after the stop: {per_service:?} ({done} finished jobs); \
         {interrupted_at} of {total} messages copied at the stop"
    );
    for s in &spans {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains("-Pw1") && !v.contains(&token),
                "a secret in span {} ({}) attribute {k}",
                s.name,
                s.service
            );
        }
    }

    // A scheduler and a fresh worker: the handed-back jobs are taken at once (a folder
    // lease left behind would defer its job by 30 s, a connection slot would be missing
    // for 30 s). The scheduler's rounds do not plan the mailboxes again mid-pass.
    let resumed = Instant::now();
    let mut scheduler = spawn(
        &fleet,
        &["scheduler", "--queue", &fleet.queue, "--tick", "1"],
        &[],
    );
    let mut fresh = spawn(
        &fleet,
        &[
            "worker",
            "--queue",
            &fleet.queue,
            "--concurrency",
            "2",
            "--exit-when-idle",
            "5",
        ],
        &[],
    );
    loop {
        let n = copied(dst.port(), &USERS).await;
        if n >= total {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(25),
            "the handed-back work was not done within 25 s of the restart ({n} of {total})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the remaining {} messages copied {:?} after the restart",
        total - interrupted_at,
        resumed.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        if let Some(out) = fresh.try_exit() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the fresh worker did not go idle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sigterm(scheduler.id());
    let deadline = Instant::now() + SCHEDULER_GRACE;
    let scheduled = loop {
        if let Some(out) = scheduler.try_exit() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the second scheduler did not stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for (name, out) in [("fresh worker", &out), ("second scheduler", &scheduled)] {
        assert!(out.status.success(), "{name}: {}", text(out));
        assert!(
            !text(out).contains("-Pw1"),
            "a password in the {name}'s output"
        );
    }
    for (i, u) in USERS.iter().enumerate() {
        let got = imap::snapshot(dst.port(), u, &dst_pw(u)).await.unwrap();
        assert_same(&before[i], &got, &format!("mailbox {u} after the restart"));
    }
    let status = fleet.status();
    for r in status.as_array().unwrap() {
        let source = r["source"].as_str().unwrap();
        let i = USERS
            .iter()
            .position(|u| source.contains(&format!("//{u}@")))
            .unwrap();
        let n: usize = before[i].values().map(Vec::len).sum();
        assert_eq!(r["status"], "synced", "{status:#}");
        assert_eq!(r["dead_jobs"], 0, "{status:#}");
        assert_eq!(r["messages_copied"], n as u64, "{status:#}");
    }
    assert!(leases_held(&fleet).is_empty(), "leases held after the run");
}
