#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `just bench` / `cargo bench -p mailshift-tests --bench migrate`: mailshift against a
//! minimal copier (the floor the destination server allows), in the same run and
//! alternating, on two loopback Dovecot servers. Prints medians and ratios and writes
//! `target/bench/migrate.json`.
//!
//! Knobs: `MAILSHIFT_BENCH_MESSAGES` (default 3000), `MAILSHIFT_BENCH_RUNS` (default 3).

use mailshift_tests::corpus::{self, CorpusSpec, special_use_options};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::{baseline, imap, mailshift_bin, ops};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SRC_PW: &str = "bench-src";
const DST_PW: &str = "bench-dst";
const CONNECTIONS: usize = 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs `mailshift migrate` into `dst_user`; returns (seconds, peak RSS in KiB).
fn mailshift(src: &Dovecot, dst: &Dovecot, dst_user: &str, state: &std::path::Path) -> (f64, u64) {
    mailshift_as(src, "alice", dst, dst_user, state)
}

fn mailshift_as(
    src: &Dovecot,
    src_user: &str,
    dst: &Dovecot,
    dst_user: &str,
    state: &std::path::Path,
) -> (f64, u64) {
    let started = Instant::now();
    let mut child = Command::new(mailshift_bin())
        .args([
            "migrate",
            "--from",
            &src.url(src_user),
            "--to",
            &dst.url(dst_user),
        ])
        .arg("--state")
        .arg(state)
        .args([
            "--allow-plaintext",
            "--connections",
            &CONNECTIONS.to_string(),
            "--json",
        ])
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "mailshift migrate failed ({status})");
    (started.elapsed().as_secs_f64(), peak)
}

/// Messages on the destination (STATUS, not a download: the big folder is big).
async fn count(dst: &Dovecot, user: &str) -> usize {
    let mut s = imap::login(dst.port(), user, DST_PW).await.unwrap();
    let names: Vec<_> = {
        use futures::TryStreamExt;
        s.list(Some(""), Some("*"))
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    };
    let mut n = 0;
    for name in names {
        if let Ok(mb) = s.examine(&name).await {
            n += mb.exists as usize;
        }
    }
    s.logout().await.ok();
    n
}

/// All messages of a generated corpus in one INBOX.
fn one_folder(messages: usize, seed: u64) -> Vec<corpus::CorpusFolder> {
    let all: Vec<corpus::Msg> = corpus::generate(&CorpusSpec {
        seed,
        messages,
        big_attachments: 0,
    })
    .into_iter()
    .flat_map(|f| f.messages)
    .collect();
    vec![corpus::CorpusFolder {
        path: vec!["INBOX".into()],
        special_use: None,
        messages: all,
    }]
}

/// `MAILSHIFT_BENCH_SCALE=N`: per-folder throughput of a 3,000- vs an N-message INBOX,
/// the no-op pass on the big one, and peak RSS there and with one 40 MiB message.
async fn scale(n: usize) {
    let src = Dovecot::start(DovecotOptions::default()).unwrap();
    let dst = Dovecot::start(DovecotOptions {
        fsync: true,
        ..Default::default()
    })
    .unwrap();
    for u in ["small", "big", "huge"] {
        src.add_user(u, SRC_PW);
        dst.add_user(u, DST_PW);
    }
    eprintln!("bench: filling a 3,000- and a {n}-message INBOX ...");
    imap::populate(src.port(), "small", SRC_PW, &one_folder(3000, 5))
        .await
        .unwrap();
    imap::populate(src.port(), "big", SRC_PW, &one_folder(n, 6))
        .await
        .unwrap();
    // One 40 MiB message among a few small ones.
    let mut huge = one_folder(20, 7);
    let mut raw = b"From: bench@example.org\r\nTo: huge@example.org\r\nSubject: 40 MiB\r\n\
                    MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\
                    Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while raw.len() < 40 * 1024 * 1024 {
        raw.extend_from_slice(line);
    }
    huge[0].messages.push(corpus::Msg {
        raw,
        flags: vec![],
        internal_date: "01-Jan-2024 00:00:00 +0000".into(),
    });
    imap::populate(src.port(), "huge", SRC_PW, &huge)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (ts, rss_s) = mailshift_as(&src, "small", &dst, "small", &dir.path().join("s.db"));
    let big_state = dir.path().join("b.db");
    let (tb, rss_b) = mailshift_as(&src, "big", &dst, "big", &big_state);
    let mut noop: Vec<f64> = (0..3)
        .map(|_| mailshift_as(&src, "big", &dst, "big", &big_state).0)
        .collect();
    let (_, rss_h) = mailshift_as(&src, "huge", &dst, "huge", &dir.path().join("h.db"));
    assert_eq!(count(&dst, "big").await, n);

    let (rate_s, rate_b) = (3000.0 / ts, n as f64 / tb);
    let noop_m = median(&mut noop);
    let mib = |kb: u64| kb as f64 / 1024.0;
    let ok = |c: bool| if c { "PASS" } else { "MISS" };
    println!("\nmailshift scale bench: one INBOX of 3,000 vs {n} messages\n");
    println!("{:<40} {:>12}  target", "measure", "value");
    println!(
        "{:<40} {:>10.0}/s",
        "copy rate, 3,000-message folder", rate_s
    );
    println!(
        "{:<40} {:>10.0}/s  >= 90% of the small folder's {}",
        format!("copy rate, {n}-message folder"),
        rate_b,
        ok(rate_b >= 0.9 * rate_s)
    );
    println!(
        "{:<40} {:>11.2}s  <= 3 s {}",
        format!("no-op pass, {n}-message folder"),
        noop_m,
        ok(noop_m <= 3.0)
    );
    println!("{:<40} {:>9.1}MiB", "peak RSS, 3,000 messages", mib(rss_s));
    println!(
        "{:<40} {:>9.1}MiB  <= 64 MiB + 2 x largest {}",
        format!("peak RSS, {n} messages"),
        mib(rss_b),
        ok(mib(rss_b) <= 64.0 + 2.0 * 4.0)
    );
    println!(
        "{:<40} {:>9.1}MiB  <= 64 + 2 x 40 MiB {}",
        "peak RSS, one 40 MiB message",
        mib(rss_h),
        ok(mib(rss_h) <= 144.0)
    );
    let json = serde_json::json!({
        "messages": n,
        "rate_small_per_sec": rate_s,
        "rate_big_per_sec": rate_b,
        "noop_big_secs": noop,
        "peak_rss_kib": {"small": rss_s, "big": rss_b, "huge_40mib": rss_h},
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("scale.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("\nwritten to target/bench/scale.json");
}

#[tokio::main]
async fn main() {
    if let Some(n) = std::env::var("MAILSHIFT_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        scale(n).await;
        return;
    }
    let messages = env_usize("MAILSHIFT_BENCH_MESSAGES", 3000);
    let runs = env_usize("MAILSHIFT_BENCH_RUNS", 3).max(1);
    let folders = corpus::standard_folders();
    let src = Dovecot::start(DovecotOptions {
        delimiter: '.',
        special_use: special_use_options(&folders, '.'),
        fsync: true,
        ..Default::default()
    })
    .unwrap();
    // The destination commits to disk as a production server does: that is the floor.
    let dst = Dovecot::start(DovecotOptions {
        fsync: true,
        ..Default::default()
    })
    .unwrap();
    src.add_user("alice", SRC_PW);
    for i in 0..runs {
        dst.add_user(&format!("base{i}"), DST_PW);
        dst.add_user(&format!("ms{i}"), DST_PW);
    }
    let corpus = corpus::generate(&CorpusSpec {
        seed: 2026,
        messages,
        big_attachments: 3,
    });
    eprintln!("bench: filling the source with {messages} messages ...");
    imap::populate(src.port(), "alice", SRC_PW, &corpus)
        .await
        .unwrap();
    let total = corpus::message_count(&corpus);
    let bytes = corpus::total_bytes(&corpus);
    let dir = tempfile::tempdir().unwrap();
    let _ = mailshift_bin();

    let (mut base_t, mut ms_t, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate which goes first, so neither always gets the warmer caches.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            if which == 0 {
                let t = Instant::now();
                let n = baseline::copy(
                    src.port(),
                    "alice",
                    SRC_PW,
                    dst.port(),
                    &format!("base{i}"),
                    DST_PW,
                    CONNECTIONS,
                )
                .await
                .unwrap();
                base_t.push(t.elapsed().as_secs_f64());
                assert_eq!(n, total, "the baseline copied {n} of {total}");
            } else {
                let state = dir.path().join(format!("ms{i}.db"));
                let (t, kb) = mailshift(&src, &dst, &format!("ms{i}"), &state);
                ms_t.push(t);
                rss.push(kb as f64);
                assert_eq!(count(&dst, &format!("ms{i}")).await, total);
            }
        }
    }

    // A lost state on a full destination (a run from another directory, a deleted
    // state file): everything is recognised on the destination, nothing appended again.
    let mut lost = Vec::new();
    for i in 0..runs {
        let fresh = dir.path().join(format!("lost{i}.db"));
        lost.push(mailshift(&src, &dst, &format!("ms{i}"), &fresh).0);
        assert_eq!(
            count(&dst, &format!("ms{i}")).await,
            total,
            "a re-run with a lost state duplicated mail"
        );
    }

    // Incremental passes on the last mailshift copy.
    let last = format!("ms{}", runs - 1);
    let state = dir.path().join(format!("{last}.db"));
    let mut noop = Vec::new();
    for _ in 0..3 {
        noop.push(mailshift(&src, &dst, &last, &state).0);
    }
    let extra = corpus::generate(&CorpusSpec {
        seed: 77,
        messages: (total / 100).max(1),
        big_attachments: 0,
    });
    for m in extra.iter().flat_map(|f| f.messages.iter()) {
        imap::append(src.port(), "alice", SRC_PW, "INBOX", m)
            .await
            .unwrap();
    }
    let inbox = ops::uids(src.port(), "alice", SRC_PW, "INBOX")
        .await
        .unwrap();
    let flagged: Vec<String> = inbox.iter().take(total / 20).map(u32::to_string).collect();
    ops::run(
        src.port(),
        "alice",
        SRC_PW,
        &[
            "SELECT INBOX".to_string(),
            format!("UID STORE {} +FLAGS.SILENT ($Bench)", flagged.join(",")),
        ],
    )
    .await
    .unwrap();
    let changed = mailshift(&src, &dst, &last, &state).0;

    let (b, m) = (median(&mut base_t), median(&mut ms_t));
    let noop_m = median(&mut noop);
    let lost_m = median(&mut lost);
    let rss_m = median(&mut rss) / 1024.0;
    let largest = corpus
        .iter()
        .flat_map(|f| f.messages.iter())
        .map(|m| m.raw.len())
        .max()
        .unwrap_or(0) as f64
        / (1024.0 * 1024.0);
    let rss_budget = 64.0 + 2.0 * largest;
    let ok = |c: bool| if c { "PASS" } else { "MISS" };
    println!(
        "\nmailshift bench: {total} messages, {:.1} MiB, {} folders, {CONNECTIONS} connections, median of {runs}\n",
        bytes as f64 / (1024.0 * 1024.0),
        corpus.len()
    );
    println!("{:<34} {:>10} {:>10}  target", "measure", "value", "ratio");
    println!("{:<34} {:>9.2}s {:>10}", "baseline full copy", b, "1.00");
    println!(
        "{:<34} {:>9.2}s {:>10.2}  <= 1.25 x baseline {}",
        "mailshift full copy",
        m,
        m / b,
        ok(m / b <= 1.25)
    );
    println!(
        "{:<34} {:>9.2}s {:>10}  <= 0.5 s {}",
        "mailshift no-op pass",
        noop_m,
        "",
        ok(noop_m <= 0.5)
    );
    println!(
        "{:<34} {:>9.2}s {:>10.2}  <= 0.3 x mailshift full copy {}",
        "re-run with a lost state",
        lost_m,
        lost_m / m,
        ok(lost_m / m <= 0.3)
    );
    println!(
        "{:<34} {:>9.2}s {:>10}",
        "pass after 1% new, 5% flags", changed, ""
    );
    println!(
        "{:<34} {:>8.1}MiB {:>10}  <= {rss_budget:.0} MiB {}",
        "mailshift peak RSS",
        rss_m,
        "",
        ok(rss_m <= rss_budget)
    );
    let json = serde_json::json!({
        "messages": total,
        "bytes": bytes,
        "connections": CONNECTIONS,
        "runs": runs,
        "baseline_secs": base_t,
        "mailshift_secs": ms_t,
        "ratio": m / b,
        "noop_secs": noop,
        "lost_state_secs": lost,
        "lost_state_ratio_to_full_copy": lost_m / m,
        "incremental_after_changes_secs": changed,
        "peak_rss_kib": rss,
        "rss_budget_mib": rss_budget,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("migrate.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("\nwritten to target/bench/migrate.json");
}
