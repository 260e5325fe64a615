#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `mailshift migrate` end to end against real Dovecot servers: fidelity, resumability
//! and the errors a user sees. Every assertion on mail compares the servers themselves
//! (the harness's own IMAP client), never mailshift's state.

use mailshift_tests::corpus::CorpusSpec;
use mailshift_tests::dovecot::DovecotOptions;
use mailshift_tests::imap;
use mailshift_tests::mailshift_bin;
use mailshift_tests::pair::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn full_migration_is_byte_exact_and_leaves_the_source_untouched() {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(&pair, &CorpusSpec::default()).await;
    let total: usize = before.values().map(Vec::len).sum();
    assert!(
        total >= 2000 && before.len() >= 12,
        "corpus too small: {total} in {}",
        before.len()
    );

    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "migrate failed:\n{}", text(&out));
    let summary = json(&out);
    let copied: u64 = summary["folders"]
        .as_array()
        .expect("folders")
        .iter()
        .map(|f| f["copied"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(copied as usize, total, "summary: {summary:#}");

    let after_src = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    let d = imap::diff_strict(&before, &after_src);
    assert!(d.is_empty(), "the source changed:\n{}", d.join("\n"));
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_same(
        &expected_on_destination(&before),
        &dst,
        "destination vs source",
    );

    // Special-use mapping kept the destination's own Sent folder.
    let uses = imap::special_uses(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert!(
        !dst.contains_key("Sent Items"),
        "Sent Items was created on the destination"
    );
    assert!(
        uses.get("Sent")
            .is_some_and(|u| u.iter().any(|a| a == "\\Sent")),
        "{uses:?}"
    );

    // A second run is a no-op: nothing copied, nothing duplicated.
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "second run failed:\n{}", text(&out));
    let copied_again: u64 = json(&out)["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["copied"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(copied_again, 0);
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_same(
        &expected_on_destination(&before),
        &dst,
        "destination after the second run",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_copy_then_rerun_loses_and_duplicates_nothing() {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 7,
            messages: 1500,
            big_attachments: 2,
        },
    )
    .await;
    // Small batches and one connection make the copy long enough to be caught mid-way.
    let mut child = pair
        .command(&[
            "--connections",
            "1",
            "--batch-messages",
            "10",
            "--list-window",
            "70",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mailshift");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = count_destination(&pair).await;
        if n >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress on the destination");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL mailshift");
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "mailshift finished before it could be killed"
    );
    let partial = count_destination(&pair).await;
    let total: usize = before.values().map(Vec::len).sum();
    assert!(partial < total, "everything was copied before the kill");

    let out = pair.migrate(&[]);
    assert!(out.status.success(), "re-run failed:\n{}", text(&out));
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_same(
        &expected_on_destination(&before),
        &dst,
        "destination after kill + re-run",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_names_the_side_and_changes_nothing() {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 1,
            messages: 50,
            big_attachments: 0,
        },
    )
    .await;
    let out = pair
        .command(&[])
        .env("MAILSHIFT_TO_PASSWORD", "not-the-password")
        .output()
        .expect("run");
    assert_no_secrets(&out);
    let all = text(&out);
    assert!(!all.contains("not-the-password"), "{all}");
    // Exit status 4: a refused login (the table in the README).
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(all.contains("login as alice on destination"), "{all}");
    assert!(all.contains("check the user name and password"), "{all}");
    assert!(
        all.contains("NOTHING COPIED") && !all.contains("0 of 0 folders"),
        "{all}"
    );
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_eq!(dst.values().map(Vec::len).sum::<usize>(), 0, "{dst:?}");
    let after = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    assert!(imap::diff_strict(&before, &after).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_server_is_named() {
    let pair = Pair::new(DovecotOptions::default());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Command::new(mailshift_bin())
        .args(["migrate", "--from"])
        .arg(pair.src.url("alice"))
        .args([
            "--to",
            &format!("imap://alice@127.0.0.1:{port}"),
            "--allow-plaintext",
            "--state",
        ])
        .arg(pair.state())
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .output()
        .unwrap();
    assert_no_secrets(&out);
    let all = text(&out);
    // Exit status 3: a server that cannot be reached.
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains(&format!(
            "cannot connect to destination imap://alice@127.0.0.1:{port}"
        )),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_message_is_reported_and_everything_else_is_copied() {
    let pair = Pair::new(DovecotOptions {
        max_mail_size: Some(1 << 20),
        ..Default::default()
    });
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 3,
            messages: 300,
            big_attachments: 2,
        },
    )
    .await;
    let big: Vec<(String, String)> = before
        .iter()
        .flat_map(|(f, msgs)| {
            msgs.iter()
                .filter(|m| m.size > (1 << 20))
                .map(move |m| (f.clone(), m.subject.clone()))
        })
        .collect();
    assert_eq!(big.len(), 2, "corpus should hold 2 big messages");

    let out = pair.migrate(&[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for (folder, subject) in &big {
        assert!(
            all.contains(&format!("folder '{folder}', message UID")),
            "{all}"
        );
        assert!(
            all.contains(subject.as_str()),
            "subject {subject:?} not named:\n{all}"
        );
    }
    assert!(all.contains("[too-large]"), "{all}");

    // Everything but the two big messages is there, exactly once.
    let mut expected = expected_on_destination(&before);
    for v in expected.values_mut() {
        v.retain(|m| m.size <= (1 << 20));
    }
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_same(&expected, &dst, "destination without the oversize messages");

    // A re-run retries only the refused messages, and keeps them in a quarantine.
    let quarantine = pair.dir.path().join("quarantine");
    let q = quarantine.to_str().unwrap();
    let out = pair.migrate(&["--json", "--quarantine", q]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = json(&out);
    let failures: usize = s["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["failures"].as_array().unwrap().len())
        .sum();
    let copied: u64 = s["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["copied"].as_u64().unwrap())
        .sum();
    assert_eq!((failures, copied), (2, 0), "{s:#}");
    let mut kept = Vec::new();
    let mut dirs = vec![quarantine.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                use sha2::Digest;
                kept.push(hex::encode(sha2::Sha256::digest(
                    std::fs::read(&p).unwrap(),
                )));
            }
        }
    }
    let mut want: Vec<String> = before
        .values()
        .flatten()
        .filter(|m| m.size > (1 << 20))
        .map(|m| m.sha256.clone())
        .collect();
    kept.sort();
    want.sort();
    assert_eq!(
        kept, want,
        "the quarantine holds the refused messages, byte for byte"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_is_verified_and_plaintext_needs_consent() {
    let pair = Pair::new(DovecotOptions {
        tls: true,
        ..Default::default()
    });
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 5,
            messages: 40,
            big_attachments: 0,
        },
    )
    .await;
    let ca = pair.dst.ca_pem().expect("CA");
    let run = |to: String, extra: &[&str]| {
        let out = Command::new(mailshift_bin())
            .args(["migrate", "--from"])
            .arg(pair.src.url("alice"))
            .arg("--to")
            .arg(to)
            .arg("--state")
            .arg(pair.state())
            .args(extra)
            .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
            .env("MAILSHIFT_TO_PASSWORD", DST_PW)
            .output()
            .unwrap();
        assert_no_secrets(&out);
        out
    };
    let tls_url = format!("imaps://alice@localhost:{}", pair.dst.tls_port().unwrap());
    // Unknown CA: refused.
    let out = run(tls_url.clone(), &["--allow-plaintext"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("TLS with destination"),
        "{}",
        text(&out)
    );
    // The source offers no STARTTLS: refused without --allow-plaintext.
    let ca_arg = ca.to_str().unwrap().to_string();
    let out = run(tls_url.clone(), &["--to-ca-file", &ca_arg]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("--from-allow-plaintext"),
        "{}",
        text(&out)
    );
    // STARTTLS on the destination, with its CA trusted.
    let starttls_url = format!("imap://alice@localhost:{}", pair.dst.port());
    let out = run(
        starttls_url,
        &["--to-ca-file", &ca_arg, "--allow-plaintext"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_same(
        &expected_on_destination(&before),
        &dst,
        "destination over STARTTLS",
    );
    // Implicit TLS works as well (nothing left to copy).
    let out = run(tls_url, &["--to-ca-file", &ca_arg, "--allow-plaintext"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn help_teaches() {
    let out = Command::new(mailshift_bin())
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--from",
        "--to-password-file",
        "MAILSHIFT_FROM_PASSWORD",
        "--map",
        "--exclude",
        "Exit status",
        "Examples",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let _ = Path::new("");
}

/// `--help` shows which environment variables an option reads, never their values when
/// they hold a password (a database or broker URL).
#[test]
fn help_never_shows_the_urls_it_reads_from_the_environment() {
    for cmd in [
        ["worker", "--help"],
        ["scheduler", "--help"],
        ["status", "--help"],
    ] {
        let out = Command::new(mailshift_bin())
            .args(cmd)
            .env("MAILSHIFT_DATABASE_URL", "postgres://app:Db-Secret-9@db/x")
            .env("MAILSHIFT_AMQP_URL", "amqp://app:Mq-Secret-9@mq/%2f")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("MAILSHIFT_DATABASE_URL"), "{help}");
        assert!(
            !help.contains("Secret-9"),
            "`mailshift {}` shows a secret:\n{help}",
            cmd.join(" ")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_after_a_checkpoint_and_a_rerun_finishes() {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 12,
            messages: 1200,
            big_attachments: 0,
        },
    )
    .await;
    let child = pair
        .command(&["--connections", "1", "--batch-messages", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailshift");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_destination(&pair).await < 50 {
        assert!(Instant::now() < deadline, "no progress on the destination");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains("stopped on request"), "{}", text(&out));
    // Interrupted folders are shown as such, at their checkpoint, never as failed.
    assert!(
        text(&out).contains("interrupted at their checkpoint"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("FAILED"), "{}", text(&out));
    assert!(!text(&out).contains("INCOMPLETE"), "{}", text(&out));
    let total: usize = before.values().map(Vec::len).sum();
    assert!(count_destination(&pair).await < total);

    let out = pair.migrate(&[]);
    assert!(out.status.success(), "re-run failed:\n{}", text(&out));
    // Counts as people read them, like verify's.
    assert!(
        text(&out).contains("1,200 messages on the destination"),
        "{}",
        text(&out)
    );
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_same(
        &expected_on_destination(&before),
        &dst,
        "destination after Ctrl-C + re-run",
    );
}
