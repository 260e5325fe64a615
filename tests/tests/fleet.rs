#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fleet mode end to end: real PostgreSQL (127.0.0.1:5432), real RabbitMQ
//! (127.0.0.1:5672) and real Dovecot. Mailboxes are registered, a scheduler round
//! publishes folder jobs, two worker processes copy them; the servers are then compared
//! independently of mailshift's state.
//!
//! `MAILSHIFT_TEST_SKIP_FLEET=1` skips these tests where PostgreSQL or RabbitMQ is absent.

use mailshift_tests::corpus::{self, CorpusSpec};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::fleet::{
    Fleet, WorkerProc, dst_pw, free_port, new_fleet, psql, servers, skip, src_pw,
};
use mailshift_tests::imap;
use mailshift_tests::pair::{assert_same, text};
use std::process::{Command, Output, Stdio};

/// Servers, a fleet database and queue, and `users` registered with a corpus each.
struct Setup {
    src: Dovecot,
    dst: Dovecot,
    fleet: Fleet,
    users: Vec<String>,
    before: Vec<imap::Snapshot>,
}

impl Setup {
    async fn new(users: &[&str], messages: usize) -> Setup {
        let (src, dst, before) = servers(users, messages, 100).await;
        let fleet = new_fleet();
        for u in users {
            fleet.add(&src, &dst, u, &src_pw(u), &dst_pw(u));
        }
        Setup {
            src,
            dst,
            fleet,
            users: users.iter().map(|u| u.to_string()).collect(),
            before,
        }
    }

    /// Every mailbox's destination equals its source as it was.
    async fn assert_all_mirrored(&self) {
        for (i, u) in self.users.iter().enumerate() {
            let got = imap::snapshot(self.dst.port(), u, &dst_pw(u))
                .await
                .unwrap();
            assert_same(&self.before[i], &got, &format!("mailbox {u}"));
        }
    }

    async fn destination_total(&self) -> usize {
        let mut n = 0;
        for u in &self.users {
            if let Ok(s) = imap::snapshot(self.dst.port(), u, &dst_pw(u)).await {
                n += s.values().map(Vec::len).sum::<usize>();
            }
        }
        n
    }

    fn worker(&self, extra: &[&str]) -> WorkerProc {
        let mut args = vec!["worker", "--queue", &self.fleet.queue];
        args.extend_from_slice(extra);
        WorkerProc::new(
            self.fleet
                .cmd(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    fn schedule(&self) -> Output {
        self.fleet
            .run(&["scheduler", "--once", "--queue", &self.fleet.queue], &[])
    }
}

fn finish(worker: WorkerProc) {
    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success(), "worker: {}", text(&out));
    let all = text(&out);
    assert!(!all.contains("-Pw1"), "a password in the worker's output");
}

#[tokio::test(flavor = "multi_thread")]
async fn mailboxes_migrated_by_two_workers_over_rabbitmq_and_postgres() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["alice", "bob", "carol"], 250).await;
    let fleet = &setup.fleet;
    // A mailbox whose destination password is wrong.
    setup.src.add_user("dave", "src-dave-Pw1");
    setup.dst.add_user("dave", "dst-dave-Pw1");
    fleet.add(
        &setup.src,
        &setup.dst,
        "dave",
        "src-dave-Pw1",
        "not-daves-password",
    );

    // No plaintext password at rest.
    let secrets = psql(
        &fleet.db.name,
        "SELECT source_secret || ' ' || dest_secret FROM mailbox",
    );
    for pw in ["src-alice-Pw1", "dst-bob-Pw1", "not-daves-password"] {
        assert!(!secrets.contains(pw), "plaintext password in the database");
    }

    let out = setup.schedule();
    assert_eq!(
        out.status.code(),
        Some(1),
        "dave cannot be planned: {}",
        text(&out)
    );
    let workers: Vec<_> = (0..2)
        .map(|_| setup.worker(&["--concurrency", "2", "--exit-when-idle", "5"]))
        .collect();
    for w in workers {
        finish(w);
    }
    setup.assert_all_mirrored().await;

    let status = fleet.status();
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
    for r in rows.iter().filter(|r| r["source"] != dave["source"]) {
        assert_eq!(r["messages_copied"], 250, "{status:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_and_dropped_broker_connections_lose_and_duplicate_nothing() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["erin", "frank", "grace"], 500).await;
    let out = setup.schedule();
    assert!(out.status.success(), "scheduler: {}", text(&out));
    let total: usize = setup
        .before
        .iter()
        .map(|s| s.values().map(Vec::len).sum::<usize>())
        .sum();
    // Small batches so the work lasts; short leases so the killed worker's folders are
    // taken over quickly.
    let slow = [
        "--concurrency",
        "2",
        "--batch-messages",
        "10",
        "--lease-secs",
        "4",
        "--exit-when-idle",
        "10",
    ];
    let mut first = setup.worker(&slow);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while setup.destination_total().await < 150 {
        assert!(std::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    first.kill().unwrap(); // SIGKILL, mid-batch
    first.wait().unwrap();
    let copied_by_first = setup.destination_total().await;
    assert!(
        copied_by_first < total,
        "the first worker finished everything"
    );

    let others: Vec<_> = (0..2).map(|_| setup.worker(&slow)).collect();
    let before_drop = setup.destination_total().await;
    while setup.destination_total().await < before_drop + 150 {
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(60));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The broker drops the workers' connections (as on a restart); they reconnect.
    // (Only this test's connections: other tests share the broker.)
    let listing = Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let mut closed = 0;
    for line in listing.lines().filter(|l| l.contains(&setup.fleet.queue)) {
        let pid = line.split('\t').next().unwrap_or("");
        let out = Command::new("rabbitmqctl")
            .args([
                "close_connection",
                pid,
                "mailshift test: simulated broker restart",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "rabbitmqctl: {}", text(&out));
        closed += 1;
    }
    assert!(
        closed >= 2,
        "no worker connection found to close:\n{listing}"
    );
    for w in others {
        finish(w);
    }
    setup.assert_all_mirrored().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_keeps_failing_ends_in_the_dead_letter_queue() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["heidi", "ivan"], 120).await;
    let out = setup.schedule();
    assert!(out.status.success(), "scheduler: {}", text(&out));
    // "scheduled N job(s) for 2 mailbox(es)": both mailboxes have the same folders.
    let jobs: usize = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("scheduled "))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job count: {}", text(&out)));
    // After the jobs were published, heidi's destination password is changed.
    setup.dst.set_password("heidi", "changed-by-the-admin");
    let w = setup.worker(&[
        "--concurrency",
        "4",
        "--max-attempts",
        "2",
        "--exit-when-idle",
        "15",
    ]);
    finish(w);

    let queues = Command::new("rabbitmqctl")
        .args(["list_queues", "name", "messages", "-q"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&queues.stdout).into_owned();
    let dead: usize = listing
        .lines()
        .find_map(|l| {
            let (name, n) = l.split_once('\t')?;
            (name == format!("{}.dead", setup.fleet.queue)).then(|| n.trim().parse().ok())?
        })
        .unwrap_or(0);
    assert_eq!(
        dead,
        jobs / 2,
        "every heidi job is dead-lettered:\n{listing}"
    );
    let status = setup.fleet.status();
    let heidi = status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"].as_str().unwrap_or("").contains("heidi"))
        .unwrap()
        .clone();
    assert_eq!(heidi["status"], "failed", "{status:#}");
    assert!(
        heidi["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("destination"),
        "{status:#}"
    );
    assert_eq!(
        heidi["dead_jobs"].as_u64(),
        Some((jobs / 2) as u64),
        "{status:#}"
    );
    // ivan is unaffected.
    let got = imap::snapshot(setup.dst.port(), "ivan", &dst_pw("ivan"))
        .await
        .unwrap();
    assert_same(&setup.before[1], &got, "mailbox ivan");

    // The admin puts the password back; the dead jobs go back to work and finish.
    setup.dst.set_password("heidi", &dst_pw("heidi"));
    let out = setup
        .fleet
        .run(&["jobs", "retry-dead", "--queue", &setup.fleet.queue], &[]);
    assert!(out.status.success(), "retry-dead: {}", text(&out));
    assert!(
        text(&out).contains(&format!("{} job(s) back", jobs / 2)),
        "{}",
        text(&out)
    );
    finish(setup.worker(&["--concurrency", "4", "--exit-when-idle", "3"]));
    let got = imap::snapshot(setup.dst.port(), "heidi", &dst_pw("heidi"))
        .await
        .unwrap();
    assert_same(&setup.before[0], &got, "mailbox heidi after retry-dead");
    let status = setup.fleet.status();
    let heidi = status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"].as_str().unwrap_or("").contains("heidi"))
        .unwrap()
        .clone();
    assert_eq!(heidi["status"], "synced", "{status:#}");
    assert_eq!(heidi["dead_jobs"].as_u64(), Some(0), "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_work_back_and_a_rolling_restart_loses_nothing() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["judy", "karl"], 400).await;
    let out = setup.schedule();
    assert!(out.status.success(), "scheduler: {}", text(&out));
    let slow = [
        "--concurrency",
        "2",
        "--batch-messages",
        "10",
        "--exit-when-idle",
        "10",
    ];
    let first = setup.worker(&slow);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while setup.destination_total().await < 100 {
        assert!(std::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    let stopped = std::time::Instant::now();
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "worker after SIGTERM: {}", text(&out));
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(8),
        "SIGTERM took {:?}",
        stopped.elapsed()
    );
    let total: usize = setup
        .before
        .iter()
        .map(|s| s.values().map(Vec::len).sum::<usize>())
        .sum();
    assert!(
        setup.destination_total().await < total,
        "nothing was left to hand back"
    );
    // The replacement picks up the handed-back jobs (no lease to wait for: released).
    finish(setup.worker(&["--concurrency", "2", "--exit-when-idle", "5"]));
    setup.assert_all_mirrored().await;
}

/// Established TCP connections to `port` on loopback, from /proc/net/tcp: for each, the
/// process (pid and command line) holding its client end, so a failure names who
/// opened the connections beyond the limit.
///
/// The kernel writes that file a page at a time, so while other tests open and close
/// sockets one connection can be listed several times in a single read (seen: one
/// client port five times). Connections are counted once each, by their client address.
fn established_to(port: u16) -> Vec<String> {
    let want = format!(":{port:04X}");
    let mut clients = std::collections::BTreeSet::new();
    let mut inodes = std::collections::HashMap::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = std::fs::read_to_string(f) else {
            continue;
        };
        for l in table.lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "01" {
                continue;
            }
            if cols[2].ends_with(&want) {
                clients.insert(cols[1].to_string());
                inodes.insert(cols[9].to_string(), cols[1].to_string());
            }
        }
    }
    if clients.is_empty() {
        return Vec::new();
    }
    let mut owners: std::collections::HashMap<String, String> = Default::default();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let pid = p.file_name().to_string_lossy().to_string();
            if !pid.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let link = link.to_string_lossy().to_string();
                if let Some(ino) = link
                    .strip_prefix("socket:[")
                    .and_then(|l| l.strip_suffix(']'))
                    && let Some(local) = inodes.get(ino)
                {
                    let cmd = std::fs::read(p.path().join("cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                        .unwrap_or_default();
                    owners.insert(local.clone(), format!("pid {pid}: {}", cmd.trim()));
                }
            }
        }
    }
    clients
        .into_iter()
        .map(|c| {
            let who = owners.get(&c).cloned().unwrap_or_else(|| "?".into());
            format!("{c} <- {who}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_host_limit_holds_across_all_workers() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["leo", "mia", "ned"], 300).await;
    let host = format!("127.0.0.1:{}", setup.src.port());
    // At most 2 connections and 300 messages/s to the source, whatever the workers.
    let out = setup.fleet.run(
        &["host", "limit", &host, "2", "--messages-per-sec", "300"],
        &[],
    );
    assert!(out.status.success(), "host limit: {}", text(&out));
    let out = setup.schedule();
    assert!(out.status.success(), "scheduler: {}", text(&out));

    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let peak = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watcher = {
        let (watching, peak, port) = (watching.clone(), peak.clone(), setup.src.port());
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                let now = established_to(port);
                let mut peak = peak.lock().unwrap();
                if now.len() > peak.len() {
                    *peak = now;
                }
                drop(peak);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            setup.worker(&[
                "--concurrency",
                "3",
                "--batch-messages",
                "50",
                "--exit-when-idle",
                "5",
            ])
        })
        .collect();
    let total: usize = setup
        .before
        .iter()
        .map(|s| s.values().map(Vec::len).sum::<usize>())
        .sum();
    while setup.destination_total().await < total {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "too slow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let copy_time = started.elapsed();
    eprintln!("copied {total} messages in {copy_time:?} under the cap");
    for w in workers {
        finish(w);
    }
    // 900 messages at no more than 300/s take at least 3 s.
    assert!(
        copy_time >= std::time::Duration::from_millis(2700),
        "{total} messages in {copy_time:?} despite a 300 messages/s cap"
    );
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    watcher.join().unwrap();
    let peak = peak.lock().unwrap().clone();
    assert!(
        (1..=2).contains(&peak.len()),
        "{} connections were open to the source at once (limit 2):\n{}",
        peak.len(),
        peak.join("\n")
    );
    setup.assert_all_mirrored().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_folder_is_shared_by_several_workers_in_uid_slices() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["olga"], 1500).await;
    let total: usize = setup.before[0].values().map(Vec::len).sum();
    let inbox = setup.before[0]["INBOX"].len();
    assert!(inbox > 300, "INBOX has {inbox}");
    let out = setup.fleet.run(
        &[
            "scheduler",
            "--once",
            "--queue",
            &setup.fleet.queue,
            "--split-above",
            "100",
        ],
        &[],
    );
    assert!(out.status.success(), "scheduler: {}", text(&out));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            setup.worker(&[
                "--concurrency",
                "1",
                "--batch-messages",
                "20",
                "--exit-when-idle",
                "6",
            ])
        })
        .collect();
    let mut with_inbox_slices = 0;
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker: {}", text(&out));
        if String::from_utf8_lossy(&out.stderr).contains("INBOX [UIDs ") {
            with_inbox_slices += 1;
        }
    }
    assert!(
        with_inbox_slices >= 2,
        "INBOX slices ran on {with_inbox_slices} worker(s)"
    );
    setup.assert_all_mirrored().await;

    // The next pass folds the slices into the folders' checkpoints and copies nothing.
    let out = setup.schedule();
    assert!(out.status.success(), "scheduler: {}", text(&out));
    finish(setup.worker(&["--concurrency", "2", "--exit-when-idle", "5"]));
    setup.assert_all_mirrored().await;
    let status = setup.fleet.status();
    assert_eq!(status[0]["messages_copied"], total, "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_mailboxes_one_with_a_30000_message_inbox_by_three_workers() {
    if skip() {
        return;
    }
    let users: Vec<String> = (0..19).map(|i| format!("user{i:02}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut setup = Setup::new(&names, 200).await;
    // The 20th mailbox: a 30,000-message INBOX.
    std::thread::sleep(std::time::Duration::from_millis(1100)); // passwd mtime
    setup.src.add_user("bigbox", &src_pw("bigbox"));
    setup.dst.add_user("bigbox", &dst_pw("bigbox"));
    let messages: Vec<corpus::Msg> = corpus::generate(&CorpusSpec {
        seed: 30_000,
        messages: 30_000,
        big_attachments: 0,
    })
    .into_iter()
    .flat_map(|f| f.messages)
    .collect();
    let big = vec![corpus::CorpusFolder {
        path: vec!["INBOX".into()],
        special_use: None,
        messages,
    }];
    imap::populate(setup.src.port(), "bigbox", &src_pw("bigbox"), &big)
        .await
        .unwrap();
    drop(big);
    setup.before.push(
        imap::snapshot(setup.src.port(), "bigbox", &src_pw("bigbox"))
            .await
            .unwrap(),
    );
    setup.users.push("bigbox".into());
    setup.fleet.add(
        &setup.src,
        &setup.dst,
        "bigbox",
        &src_pw("bigbox"),
        &dst_pw("bigbox"),
    );
    assert_eq!(setup.before[19]["INBOX"].len(), 30_000);

    let out = setup.fleet.run(
        &[
            "scheduler",
            "--once",
            "--queue",
            &setup.fleet.queue,
            "--split-above",
            "5000",
        ],
        &[],
    );
    assert!(out.status.success(), "scheduler: {}", text(&out));
    let workers: Vec<_> = (0..3)
        .map(|_| setup.worker(&["--concurrency", "2", "--exit-when-idle", "8"]))
        .collect();
    let mut with_big_inbox = 0;
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker: {}", text(&out));
        assert!(!text(&out).contains("-Pw1"));
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("INBOX [UIDs ") {
            with_big_inbox += 1;
        }
    }
    assert!(
        with_big_inbox >= 2,
        "the big INBOX ran on {with_big_inbox} worker(s)"
    );
    setup.assert_all_mirrored().await;
}

/// Phase of `domain` as `mailshift domain status --json` reports it.
fn domain_status(fleet: &Fleet, domain: &str) -> serde_json::Value {
    let out = fleet.run(&["domain", "status", "--json"], &[]);
    assert!(out.status.success(), "domain status: {}", text(&out));
    let all = mailshift_tests::schema::check(&out.stdout);
    all["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain"] == domain)
        .cloned()
        .unwrap_or_else(|| panic!("no {domain} in {all:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_is_driven_through_its_cutover_into_dual_reception() {
    use mailshift_tests::dns::{DnsServer, Rec, Zone};
    if skip() {
        return;
    }
    let setup = Setup::new(&["pia"], 40).await;
    let fleet = &setup.fleet;
    let dns = DnsServer::start(&[Zone::new("switch.test")
        .with("@", 3600, Rec::Ns("ns1".into()))
        .mx(1, 10, "mx.old.example.")])
    .await;
    let switch_at = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let out = fleet.run(
        &[
            "plan",
            "switch.test",
            "--switch-at",
            &switch_at,
            "--new-mx",
            "mta.new.example",
            "--old-mx",
            "mx.old.example",
            "--authoritative",
            &dns.addr().to_string(),
            "--dual-reception",
            "25s",
        ],
        &[],
    );
    assert!(out.status.success(), "plan: {}", text(&out));
    assert_eq!(domain_status(fleet, "switch.test")["phase"], "prepare");
    // The mailbox follows the domain's cutover.
    let out = fleet.run(
        &[
            "mailbox",
            "add",
            "--from",
            &setup.src.url("pia"),
            "--to",
            &setup.dst.url("pia"),
            "--allow-plaintext",
            "--batch",
            "test",
            "--domain",
            "switch.test",
        ],
        &[
            ("MAILSHIFT_FROM_PASSWORD", &src_pw("pia")),
            ("MAILSHIFT_TO_PASSWORD", &dst_pw("pia")),
        ],
    );
    assert!(out.status.success(), "mailbox add: {}", text(&out));
    let pass = || {
        let out = setup.schedule();
        assert!(out.status.success(), "scheduler: {}", text(&out));
        finish(setup.worker(&["--exit-when-idle", "2"]));
    };

    // Sync, then verified: ready.
    pass();
    assert_eq!(domain_status(fleet, "switch.test")["phase"], "syncing");
    setup.assert_all_mirrored().await;
    pass();
    assert_eq!(domain_status(fleet, "switch.test")["phase"], "ready");

    // D-Day: the MX switches. The old server still receives a message; the user
    // deletes one on the new server, and one disappears from the old one.
    dns.set_mx("switch.test", 1, &[(10, "mta.new.example.")])
        .await;
    let arrival = corpus::Msg {
        raw: b"From: late@example.net\r\nTo: pia@switch.test\r\nSubject: sent to the old MX\r\n\r\nstill arriving\r\n".to_vec(),
        flags: Vec::new(),
        internal_date: "29-Nov-2026 10:00:00 +0000".into(),
    };
    imap::append(setup.src.port(), "pia", &src_pw("pia"), "INBOX", &arrival)
        .await
        .unwrap();
    let dst_uids = mailshift_tests::ops::uids(setup.dst.port(), "pia", &dst_pw("pia"), "INBOX")
        .await
        .unwrap();
    let deleted_by_user = dst_uids[0];
    mailshift_tests::ops::run(
        setup.dst.port(),
        "pia",
        &dst_pw("pia"),
        &[
            "SELECT INBOX".into(),
            format!("UID STORE {deleted_by_user} +FLAGS.SILENT (\\Deleted)"),
            "EXPUNGE".into(),
        ],
    )
    .await
    .unwrap();
    let src_uids = mailshift_tests::ops::uids(setup.src.port(), "pia", &src_pw("pia"), "INBOX")
        .await
        .unwrap();
    mailshift_tests::ops::run(
        setup.src.port(),
        "pia",
        &src_pw("pia"),
        &[
            "SELECT INBOX".into(),
            format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", src_uids[1]),
            "EXPUNGE".into(),
        ],
    )
    .await
    .unwrap();
    let dest_before = imap::snapshot(setup.dst.port(), "pia", &dst_pw("pia"))
        .await
        .unwrap();

    pass();
    let d = domain_status(fleet, "switch.test");
    assert_eq!(d["phase"], "switched", "{d:#}");
    let dest_after = imap::snapshot(setup.dst.port(), "pia", &dst_pw("pia"))
        .await
        .unwrap();
    let inbox_before = &dest_before["INBOX"];
    let inbox_after = &dest_after["INBOX"];
    // Exactly one message more: the new arrival. Nothing deleted (not the one expunged
    // on the old server), nothing the user deleted copied again.
    assert_eq!(
        inbox_after.len(),
        inbox_before.len() + 1,
        "{inbox_after:#?}"
    );
    for m in inbox_before {
        assert!(
            inbox_after.iter().any(|a| a.sha256 == m.sha256),
            "lost {m:?}"
        );
    }
    let arrived = imap::snapshot(setup.src.port(), "pia", &src_pw("pia"))
        .await
        .unwrap()["INBOX"]
        .iter()
        .find(|m| !inbox_before.iter().any(|b| b.sha256 == m.sha256))
        .cloned()
        .unwrap();
    assert!(inbox_after.iter().any(|m| m.sha256 == arrived.sha256));
    for (folder, msgs) in &dest_before {
        if folder != "INBOX" {
            assert_eq!(
                Some(msgs),
                dest_after.get(folder),
                "folder {folder} changed"
            );
        }
    }

    // Dual reception for its period, then the final pass and the decommission report.
    pass();
    assert_eq!(
        domain_status(fleet, "switch.test")["phase"],
        "dual-reception"
    );
    // Until the dual reception is over (a deadline, not a guess of how long passes take).
    let until = domain_status(fleet, "switch.test")["dual_reception_until"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("dual_reception_until")
        .timestamp();
    while chrono::Utc::now().timestamp() <= until {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    pass();
    let d = domain_status(fleet, "switch.test");
    assert_eq!(d["phase"], "dual-reception", "{d:#}");
    assert!(d["final_pass_at"].is_string(), "{d:#}");
    pass();
    let d = domain_status(fleet, "switch.test");
    assert_eq!(d["phase"], "done", "{d:#}");
    let report = &d["report"]["mailboxes"][0];
    assert_eq!(report["complete"], true, "{d:#}");
    assert!(report["source_messages"].as_u64().unwrap() > 0, "{d:#}");
    // Done: no more passes for its mailboxes.
    let out = setup.schedule();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("scheduled 0 job(s) for 0 mailbox(es)"),
        "{}",
        text(&out)
    );
    let final_dest = imap::snapshot(setup.dst.port(), "pia", &dst_pw("pia"))
        .await
        .unwrap();
    assert_eq!(final_dest["INBOX"].len(), inbox_after.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttling_server_delays_its_own_mailboxes_only() {
    use mailshift_tests::proxy::{Proxy, Throttle};
    if skip() {
        return;
    }
    let mut setup = Setup::new(&["uma"], 150).await;
    // "tia" lives on a server that throttles (the same Dovecot, reached through a proxy
    // answering UID FETCH with Exchange's throttling NO and a 4 s back-off, three times).
    std::thread::sleep(std::time::Duration::from_millis(1100)); // passwd-file mtime
    setup.src.add_user("tia", &src_pw("tia"));
    setup.dst.add_user("tia", &dst_pw("tia"));
    let corpus = corpus::generate(&CorpusSpec {
        seed: 77,
        messages: 150,
        big_attachments: 0,
    });
    imap::populate(setup.src.port(), "tia", &src_pw("tia"), &corpus)
        .await
        .unwrap();
    setup.before.push(
        imap::snapshot(setup.src.port(), "tia", &src_pw("tia"))
            .await
            .unwrap(),
    );
    setup.users.push("tia".into());
    let proxy = Proxy::start(setup.src.port()).await;
    proxy.throttle(Throttle {
        command: "UID FETCH".into(),
        times: 3,
        reply: "NO [UNAVAILABLE] Request is throttled. Suggested Backoff Time: 4000 milliseconds"
            .into(),
    });
    let out = setup.fleet.run(
        &[
            "mailbox",
            "add",
            "--from",
            &format!("imap://tia@127.0.0.1:{}", proxy.port()),
            "--to",
            &setup.dst.url("tia"),
            "--allow-plaintext",
        ],
        &[
            ("MAILSHIFT_FROM_PASSWORD", &src_pw("tia")),
            ("MAILSHIFT_TO_PASSWORD", &dst_pw("tia")),
        ],
    );
    assert!(out.status.success(), "mailbox add: {}", text(&out));
    let out = setup.schedule();
    assert!(text(&out).contains("for 2 mailbox(es)"), "{}", text(&out));
    let started = std::time::Instant::now();
    let worker = setup.worker(&["--concurrency", "2", "--exit-when-idle", "6"]);
    let count = |port: u16, user: &'static str| async move {
        imap::snapshot(port, user, &dst_pw(user))
            .await
            .map(|s| s.values().map(Vec::len).sum::<usize>())
            .unwrap_or(0)
    };
    let uma_total: usize = setup.before[0].values().map(Vec::len).sum();
    let tia_total: usize = setup.before[1].values().map(Vec::len).sum();
    let (mut uma_done, mut tia_done) = (None, None);
    while uma_done.is_none() || tia_done.is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "too slow"
        );
        if uma_done.is_none() && count(setup.dst.port(), "uma").await >= uma_total {
            uma_done = Some(started.elapsed());
        }
        if tia_done.is_none() && count(setup.dst.port(), "tia").await >= tia_total {
            tia_done = Some(started.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    finish(worker);
    let (uma_done, tia_done) = (uma_done.unwrap(), tia_done.unwrap());
    eprintln!(
        "uma done after {uma_done:?}, tia after {tia_done:?}; {} throttled",
        proxy.throttled()
    );
    assert!(proxy.throttled() >= 1, "the proxy never throttled");
    assert!(
        uma_done < tia_done,
        "the unthrottled mailbox waited for the throttled one ({uma_done:?} vs {tia_done:?})"
    );
    setup.assert_all_mirrored().await;
}

/// `GET /metrics` on loopback, as text.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_follows_a_job_from_scheduler_to_worker_and_metrics_count_the_copy() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["vic"], 60).await;
    let otlp = mailshift_tests::otlp::Receiver::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_string()),
    ];
    let out = setup
        .fleet
        .cmd(&["scheduler", "--once", "--queue", &setup.fleet.queue])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "scheduler: {}", text(&out));
    let metrics_port = free_port();
    let worker = setup
        .fleet
        .cmd(&[
            "worker",
            "--queue",
            &setup.fleet.queue,
            "--exit-when-idle",
            "4",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let worker = WorkerProc::new(worker);
    let total: usize = setup.before[0].values().map(Vec::len).sum();
    let started = std::time::Instant::now();
    while setup.destination_total().await < total {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "too slow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The counter equals what was copied.
    let metrics = scrape(metrics_port).await;
    let copied: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mailshift_messages_copied_total "))
        .unwrap_or_else(|| panic!("no messages-copied counter in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(copied as usize, total, "{metrics}");
    assert!(
        metrics.contains("mailshift_imap_command_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mailshift_jobs_total{outcome=\"done\"}"),
        "{metrics}"
    );
    finish(worker);
    setup.assert_all_mirrored().await;

    // Traces: the worker's job and IMAP spans belong to the trace of the scheduler's
    // publish span (W3C context through the AMQP headers).
    let mut spans = otlp.spans();
    for _ in 0..50 {
        if spans
            .iter()
            .any(|s| s.name == "imap.command" && s.service == "mailshift-worker")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        spans = otlp.spans();
    }
    let published: std::collections::HashSet<&str> = spans
        .iter()
        .filter(|s| s.name == "amqp.publish" && s.service == "mailshift-scheduler")
        .map(|s| s.trace_id.as_str())
        .collect();
    assert!(!published.is_empty(), "no publish span: {spans:#?}");
    let jobs: Vec<&mailshift_tests::otlp::Span> = spans
        .iter()
        .filter(|s| s.name == "worker.job" && s.service == "mailshift-worker")
        .collect();
    assert!(!jobs.is_empty(), "no job span");
    for j in &jobs {
        assert!(
            published.contains(j.trace_id.as_str()),
            "job span in its own trace: {j:?}"
        );
        assert!(
            !j.parent_span_id.is_empty(),
            "job span without parent: {j:?}"
        );
    }
    let imap_in_trace = spans.iter().any(|s| {
        s.name == "imap.command"
            && s.service == "mailshift-worker"
            && published.contains(s.trace_id.as_str())
    });
    assert!(imap_in_trace, "no IMAP command span in a scheduler trace");
    for name in ["folder.pass", "batch"] {
        assert!(
            spans.iter().any(|s| s.name == name
                && s.service == "mailshift-worker"
                && published.contains(s.trace_id.as_str())),
            "no {name} span in a scheduler trace"
        );
    }
    for s in &spans {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains(&src_pw("vic")) && !v.contains(&dst_pw("vic")),
                "a password in span {} attribute {k}",
                s.name
            );
        }
    }
}

/// A fresh database (schema applied), credentials key and queue name.

#[test]
fn a_csv_batch_is_imported_with_line_numbered_errors() {
    if skip() {
        return;
    }
    let fleet = new_fleet();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write(
        "good.csv",
        b"source_host,source_user,source_password,dest_host,dest_user,dest_password,tls\n\
          old.example,ann,Secret-ann-1,new.example,ann@acme.example,Secret-ann-2,starttls\n\
          old.example,ben,Secret-ben-1,new.example,ben@acme.example,Secret-ben-2,\n",
    );
    let out = fleet.run(&["batch", "import", &good, "--name", "acme", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Secret-"), "a password in the output");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["imported"].as_array().unwrap().len(), 2, "{j:#}");

    // Missing column, bad port, duplicate (in the file and across batches), good rows.
    let missing = write(
        "missing.csv",
        b"source_host,source_user,dest_host,dest_user,dest_password\nx,y,z,w,v\n",
    );
    let out = fleet.run(&["batch", "import", &missing, "--name", "acme"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("line 1: the header lacks column(s) source_password"),
        "{}",
        text(&out)
    );

    // An Exchange-layout file without the servers: refused as a whole, saying what to
    // give, and no batch is made for it.
    let exchange = write(
        "bare-exchange.csv",
        b"zoe@acme.example,ACME\\zoe,Secret-zoe-1\n",
    );
    let out = fleet.run(&["batch", "import", &exchange, "--name", "gamma"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--source-host and --dest-host"),
        "{}",
        text(&out)
    );
    let out = fleet.run(&["batch", "status", "--json"], &[]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("gamma"),
        "a batch was made for a refused file: {}",
        text(&out)
    );

    let mixed = write(
        "mixed.csv",
        b"source_host,source_user,source_password,dest_host,dest_user,dest_password,source_port\n\
          old.example,cat,Secret-cat-1,new.example,cat@acme.example,Secret-cat-2,\n\
          old.example,dan,Secret-dan-1,new.example,dan@acme.example,Secret-dan-2,70000\n\
          old.example,cat,Secret-cat-3,new.example,cat2@acme.example,Secret-cat-4,\n\
          old.example,eve,Secret-eve-1,new.example,eve@acme.example,,\n",
    );
    let out = fleet.run(&["batch", "import", &mixed, "--name", "beta"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("imported 1 mailbox(es) into batch 'beta'"),
        "{t}"
    );
    assert!(
        t.contains("line 3: source_port '70000' is not a port number (1-65535)"),
        "{t}"
    );
    assert!(
        t.contains("line 4: mailbox cat on old.example:993 appears twice in the file"),
        "{t}"
    );
    assert!(t.contains("line 5: dest_password is empty"), "{t}");
    assert!(!t.contains("Secret-"), "a password in the output: {t}");

    // A mailbox already in another batch is not moved silently.
    let out = fleet.run(&["batch", "import", &good, "--name", "beta"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "line 2: mailbox imap://ann@old.example:143 is already registered in batch 'acme'"
        ),
        "{}",
        text(&out)
    );

    // Bad encoding: one error naming the line.
    let latin1 = write(
        "latin1.csv",
        b"source_host,source_user,source_password,dest_host,dest_user,dest_password\nold.example,j\xe9r\xf4me,pw,new.example,jerome,pw\n",
    );
    let out = fleet.run(&["batch", "import", &latin1, "--name", "acme"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("line 2: not UTF-8 text"),
        "{}",
        text(&out)
    );

    // imapsync layout, and Exchange's with the servers given on the command line.
    let imapsync = write(
        "imapsync.txt",
        b"old.example;fay;Secret-fay-1;new.example;fay@acme.example;Secret-fay-2\n",
    );
    let out = fleet.run(&["batch", "import", &imapsync, "--name", "acme"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let exchange = write("exchange.csv", b"gus@acme.example,ACME\\gus,Secret-gus-1\n");
    let out = fleet.run(
        &[
            "batch",
            "import",
            &exchange,
            "--name",
            "acme",
            "--source-host",
            "exch.example",
            "--dest-host",
            "new.example",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = fleet.run(&["status", "--batch", "acme", "--json"], &[]);
    let status = mailshift_tests::schema::check(&out.stdout);
    let sources: Vec<&str> = status["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 4, "{status:#}");
    assert!(
        sources.contains(&"imaps://ACME\\gus@exch.example:993"),
        "{sources:?}"
    );
    // Sealed at rest.
    let secrets = psql(
        &fleet.db.name,
        "SELECT source_secret || dest_secret FROM mailbox",
    );
    assert!(
        !secrets.contains("Secret-"),
        "a plaintext password in the database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_verify_names_refused_logins_and_quotas_too_small() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["hal", "ida", "jon"], 40).await;
    let fleet = &setup.fleet;
    // jon's destination password is wrong.
    fleet.add(
        &setup.src,
        &setup.dst,
        "jon",
        &src_pw("jon"),
        "not-jons-password",
    );
    // ida also goes to a server whose quota (50 KiB) cannot hold her mailbox.
    let tiny = Dovecot::start(DovecotOptions {
        quota_storage: Some("50K".into()),
        ..Default::default()
    })
    .unwrap();
    tiny.add_user("ida", &dst_pw("ida"));
    fleet.add(&setup.src, &tiny, "ida", &src_pw("ida"), &dst_pw("ida"));

    let out = fleet.run(&["batch", "verify", "test", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("-Pw1"), "a password in the output");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = j["mailboxes"].as_array().unwrap();
    let find = |user: &str, dest_port: u16| {
        rows.iter()
            .find(|r| {
                r["source"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("//{user}@"))
                    && r["dest"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!(":{dest_port}"))
            })
            .unwrap_or_else(|| panic!("no row for {user}: {j:#}"))
    };
    let hal = find("hal", setup.dst.port());
    assert_eq!(hal["ready"], true, "{hal:#}");
    assert_eq!(hal["source_login"], "ok");
    assert!(hal["source_messages"].as_u64().unwrap() > 0);
    assert!(
        hal["dest_capabilities"].to_string().contains("UIDPLUS"),
        "{hal:#}"
    );
    let jon = find("jon", setup.dst.port());
    assert_eq!(
        (jon["ready"].clone(), jon["dest_login"].clone()),
        (false.into(), "refused".into()),
        "{jon:#}"
    );
    assert!(
        jon["problems"].to_string().contains("destination"),
        "{jon:#}"
    );
    let ida = find("ida", tiny.port());
    assert_eq!(ida["ready"], false, "{ida:#}");
    assert!(ida["problems"].to_string().contains("quota"), "{ida:#}");
    assert_eq!(ida["dest_quota_limit"], 50 * 1024, "{ida:#}");
    // The human report names them too.
    let out = fleet.run(&["batch", "verify", "test"], &[]);
    let t = text(&out);
    assert!(
        t.contains("problem: ") && t.contains("mailbox(es) ready"),
        "{t}"
    );
}

/// Zero duplicates whatever happens to the fleet's database: the same accounts
/// registered a second time (under another spelling and batch) are refused at planning,
/// and a fresh database (restored, recreated) finds the copied mail on the destination
/// and adopts it instead of copying it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_registration_or_a_new_database_duplicates_nothing() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["rita"], 150).await;
    // The old server as its own destination is refused at registration.
    let out = setup.fleet.run(
        &[
            "mailbox",
            "add",
            "--from",
            &setup.src.url("rita"),
            "--to",
            &setup.src.url("rita"),
            "--allow-plaintext",
        ],
        &[
            ("MAILSHIFT_FROM_PASSWORD", &src_pw("rita")),
            ("MAILSHIFT_TO_PASSWORD", &src_pw("rita")),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("same account"), "{}", text(&out));
    let out = setup.schedule();
    assert!(out.status.success(), "scheduler: {}", text(&out));
    finish(setup.worker(&["--exit-when-idle", "2"]));
    setup.assert_all_mirrored().await;

    // The same accounts again, spelled with the host name, in another batch.
    let out = setup.fleet.run(
        &[
            "mailbox",
            "add",
            "--from",
            &setup.src.url("rita").replace("127.0.0.1", "localhost"),
            "--to",
            &setup.dst.url("rita").replace("127.0.0.1", "localhost"),
            "--allow-plaintext",
            "--batch",
            "again",
        ],
        &[
            ("MAILSHIFT_FROM_PASSWORD", &src_pw("rita")),
            ("MAILSHIFT_TO_PASSWORD", &dst_pw("rita")),
        ],
    );
    assert!(out.status.success(), "mailbox add: {}", text(&out));
    let out = setup.schedule();
    finish(setup.worker(&["--exit-when-idle", "2"]));
    setup.assert_all_mirrored().await;
    let status = setup.fleet.status();
    let twin = status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["batch"] == "again")
        .unwrap()
        .clone();
    assert_eq!(twin["status"], "failed", "{status:#}\n{}", text(&out));
    assert!(
        twin["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("registered twice"),
        "{status:#}"
    );

    // A new, empty database for the same mailbox: everything is adopted, nothing copied.
    let fresh = new_fleet();
    fresh.add(
        &setup.src,
        &setup.dst,
        "rita",
        &src_pw("rita"),
        &dst_pw("rita"),
    );
    let out = fresh.run(&["scheduler", "--once", "--queue", &fresh.queue], &[]);
    assert!(out.status.success(), "scheduler: {}", text(&out));
    let worker = WorkerProc::new(
        fresh
            .cmd(&["worker", "--queue", &fresh.queue, "--exit-when-idle", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    finish(worker);
    setup.assert_all_mirrored().await;
    let status = fresh.status();
    assert_eq!(status[0]["status"], "synced", "{status:#}");
}

/// The operator's fixes from the command line: a refused password is replaced and the
/// failed mailbox then syncs; a mailbox and then its batch leave the fleet, refused
/// while running, and the servers keep every message.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_password_is_replaced_and_mailboxes_and_batches_leave_the_fleet() {
    if skip() {
        return;
    }
    let setup = Setup::new(&["kim", "lou"], 30).await;
    let fleet = &setup.fleet;
    // kim's destination password, as registered, is wrong.
    fleet.add(
        &setup.src,
        &setup.dst,
        "kim",
        &src_pw("kim"),
        "not-kims-Pw1",
    );
    let out = setup.schedule();
    // lou's pass is copied; kim's could not even be planned.
    finish(setup.worker(&["--exit-when-idle", "3"]));
    let find = |status: &serde_json::Value, user: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["source"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("//{user}@"))
            })
            .cloned()
    };
    let kim = find(&fleet.status(), "kim").unwrap();
    assert_eq!(kim["status"], "failed", "{kim:#}\n{}", text(&out));

    // The right password, from a file (never the command line).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{}\n", dst_pw("kim"))).unwrap();
    let out = fleet.run(
        &[
            "mailbox",
            "set-password",
            "kim",
            "--side",
            "dest",
            "--password-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "set-password: {}", text(&out));
    assert!(text(&out).contains("retried"), "{}", text(&out));
    assert!(!text(&out).contains("-Pw1"), "a password in the output");
    assert_eq!(find(&fleet.status(), "kim").unwrap()["status"], "pending");
    // An ambiguous or unknown mailbox is named, not guessed.
    let out = fleet.run(
        &[
            "mailbox",
            "set-password",
            "nobody",
            "--side",
            "dest",
            "--password-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("mailshift status"), "{}", text(&out));

    let out = setup.schedule();
    assert!(out.status.success(), "scheduler: {}", text(&out));
    finish(setup.worker(&["--exit-when-idle", "3"]));
    setup.assert_all_mirrored().await;
    assert_eq!(find(&fleet.status(), "kim").unwrap()["status"], "synced");

    // lou leaves the fleet; the new server keeps its mail.
    let out = fleet.run(&["mailbox", "remove", "lou"], &[]);
    assert!(out.status.success(), "remove: {}", text(&out));
    assert!(find(&fleet.status(), "lou").is_none());
    // The batch (made by `mailbox add --batch`, so running) is refused until paused.
    let out = fleet.run(&["batch", "delete", "test"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("batch pause"), "{}", text(&out));
    let out = fleet.run(&["batch", "pause", "test"], &[]);
    assert!(out.status.success(), "pause: {}", text(&out));
    let out = fleet.run(&["batch", "delete", "test"], &[]);
    assert!(out.status.success(), "delete: {}", text(&out));
    assert!(text(&out).contains("1 mailbox"), "{}", text(&out));
    assert_eq!(fleet.status().as_array().map(Vec::len), Some(0));
    setup.assert_all_mirrored().await;
}
