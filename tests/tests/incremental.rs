#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Incremental passes end to end: after a first copy, users keep working on the old
//! server; every later `mailshift migrate` with the same state file must make the
//! destination identical again, cheaply. Every assertion on mail compares the servers
//! themselves (the harness's own IMAP client), never mailshift's state.

use mailshift_tests::corpus::{self, CorpusSpec};
use mailshift_tests::dovecot::DovecotOptions;
use mailshift_tests::imap;
use mailshift_tests::ops;
use mailshift_tests::pair::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

async fn source_snapshot(pair: &Pair) -> imap::Snapshot {
    imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap()
}

async fn assert_mirrored(pair: &Pair, what: &str) {
    let src = source_snapshot(pair).await;
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_same(&expected_on_destination(&src), &dst, what);
}

fn set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Bytes the server received and sent in sessions logged after `since` (a log length).
async fn bytes_since(log: impl Fn() -> String, since: usize) -> (u64, u64) {
    // Dovecot writes the logout line as the session ends: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = log();
    ops::session_bytes(log.get(since..).unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_pass_mirrors_new_mail_flags_deletions_moves_and_folders() {
    let pair = Pair::new(DovecotOptions::default());
    populate(
        &pair,
        &CorpusSpec {
            seed: 5,
            messages: 800,
            big_attachments: 0,
        },
    )
    .await;
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "first pass failed:\n{}", text(&out));

    let (port, pw) = (pair.src.port(), SRC_PW);
    // 50 new messages: 40 in INBOX, 10 in a new folder.
    ops::run(port, "alice", pw, &["CREATE \"Fresh\"".to_string()])
        .await
        .unwrap();
    let extra = corpus::generate(&CorpusSpec {
        seed: 99,
        messages: 60,
        big_attachments: 0,
    });
    let new_msgs: Vec<_> = extra
        .iter()
        .flat_map(|f| f.messages.iter())
        .take(50)
        .collect();
    let new_bytes: u64 = new_msgs.iter().map(|m| m.raw.len() as u64).sum();
    for (i, m) in new_msgs.iter().enumerate() {
        let folder = if i < 40 { "INBOX" } else { "Fresh" };
        imap::append(port, "alice", pw, folder, m).await.unwrap();
    }
    // Flags changed on 100, 30 deleted, 40 moved, one folder renamed.
    let inbox = ops::uids(port, "alice", pw, "INBOX").await.unwrap();
    let y2024 = ops::uids(port, "alice", pw, "Archive.2024").await.unwrap();
    let archive = ops::uids(port, "alice", pw, "Archive").await.unwrap();
    let lists = ops::uids(port, "alice", pw, "Lists").await.unwrap();
    assert!(inbox.len() >= 100 && y2024.len() >= 30 && archive.len() >= 40);
    let moved_bytes: u64 = {
        let snap = source_snapshot(&pair).await;
        let in_archive: u64 = snap["Archive"]
            .iter()
            .filter(|m| archive[..40].contains(&m.uid))
            .map(|m| m.size)
            .sum();
        in_archive + snap["Lists"].iter().map(|m| m.size).sum::<u64>()
    };
    ops::run(
        port,
        "alice",
        pw,
        &[
            "SELECT INBOX".to_string(),
            format!(
                "UID STORE {} FLAGS.SILENT (\\Answered $Label2)",
                set(&inbox[..100])
            ),
            "SELECT \"Archive.2024\"".to_string(),
            format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", set(&y2024[..30])),
            format!("UID EXPUNGE {}", set(&y2024[..30])),
            "SELECT \"Archive\"".to_string(),
            format!("UID MOVE {} \"Projects\"", set(&archive[..40])),
            "UNSELECT".to_string(),
            "RENAME \"Lists\" \"Listes\"".to_string(),
        ],
    )
    .await
    .unwrap();

    let log_mark = pair.dst.log().len();
    let out = pair.migrate(&["--json"]);
    assert!(
        out.status.success(),
        "incremental pass failed:\n{}",
        text(&out)
    );
    let summary = json(&out);
    assert_mirrored(&pair, "destination after the incremental pass").await;
    assert_eq!(
        total(&summary, "copied"),
        50,
        "only new mail is uploaded: {summary:#}"
    );
    assert_eq!(
        total(&summary, "moved_in"),
        40 + lists.len() as u64,
        "moves (and the rename) are moves: {summary:#}"
    );
    assert_eq!(total(&summary, "deleted"), 30, "{summary:#}");
    let flags = total(&summary, "flags_updated");
    assert!((90..=100).contains(&flags), "flags updated: {flags}");
    let dst_keys: Vec<String> = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert!(
        !dst_keys.iter().any(|k| k == "Lists") && dst_keys.iter().any(|k| k == "Listes"),
        "the renamed folder: {dst_keys:?}"
    );
    // The destination received the new mail, not the moved mail again.
    let (received, _) = bytes_since(|| pair.dst.log(), log_mark).await;
    assert!(
        received < new_bytes + moved_bytes / 2,
        "destination received {received} bytes for {new_bytes} bytes of new mail \
         ({moved_bytes} bytes were moved)"
    );

    // And the pass after that has nothing to do.
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "third pass failed:\n{}", text(&out));
    let summary = json(&out);
    for field in ["copied", "moved_in", "deleted", "flags_updated"] {
        assert_eq!(
            total(&summary, field),
            0,
            "{field} on a no-op pass: {summary:#}"
        );
    }
    assert_mirrored(&pair, "destination after a no-op pass").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_op_pass_transfers_no_message_bodies() {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 3,
            messages: 3000,
            big_attachments: 2,
        },
    )
    .await;
    let corpus_bytes: u64 = before.values().flatten().map(|m| m.size).sum();
    let out = pair.migrate(&[]);
    assert!(out.status.success(), "first pass failed:\n{}", text(&out));

    let (src_mark, dst_mark) = (pair.src.log().len(), pair.dst.log().len());
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "no-op pass failed:\n{}", text(&out));
    assert_eq!(total(&json(&out), "copied"), 0);
    let (_, sent) = bytes_since(|| pair.src.log(), src_mark).await;
    let (received, _) = bytes_since(|| pair.dst.log(), dst_mark).await;
    // Bodies would be ~corpus_bytes; folder status and UID lists are a few KiB.
    assert!(
        sent < 256 * 1024 && received < 64 * 1024,
        "a no-op pass moved {sent} bytes from the source and {received} to the destination \
         (mailbox: {corpus_bytes} bytes)"
    );
    assert_mirrored(&pair, "destination after a no-op pass").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uidvalidity_reset_on_the_source_creates_no_duplicates() {
    let pair = Pair::new(DovecotOptions::default());
    populate(
        &pair,
        &CorpusSpec {
            seed: 8,
            messages: 400,
            big_attachments: 0,
        },
    )
    .await;
    let out = pair.migrate(&[]);
    assert!(out.status.success(), "first pass failed:\n{}", text(&out));
    ops::recreate_folder(pair.src.port(), "alice", SRC_PW, "Projects")
        .await
        .unwrap();

    let out = pair.migrate(&["--json"]);
    assert!(
        out.status.success(),
        "pass after the reset failed:\n{}",
        text(&out)
    );
    let summary = json(&out);
    assert_eq!(
        total(&summary, "copied"),
        0,
        "recognised by content, not copied again: {summary:#}"
    );
    assert!(
        text(&out).contains("recreated"),
        "the report says what happened:\n{}",
        text(&out)
    );
    assert_mirrored(&pair, "destination after a UIDVALIDITY reset").await;

    // The same on the destination side: found again by content, nothing re-uploaded.
    ops::recreate_folder(pair.dst.port(), "alice", DST_PW, "Projects")
        .await
        .unwrap();
    let out = pair.migrate(&["--json"]);
    assert!(
        out.status.success(),
        "pass after the destination reset failed:\n{}",
        text(&out)
    );
    assert_eq!(total(&json(&out), "copied"), 0, "{}", text(&out));
    assert_mirrored(&pair, "destination after its own UIDVALIDITY reset").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_between_append_and_checkpoint_then_rerun_is_exact() {
    let pair = Pair::new(DovecotOptions::default());
    populate(
        &pair,
        &CorpusSpec {
            seed: 21,
            messages: 600,
            big_attachments: 0,
        },
    )
    .await;
    // The third batch is accepted by the destination, then the process dies before its
    // checkpoint: deterministic, unlike a timed kill.
    let out = pair
        .command(&[
            "--connections",
            "1",
            "--batch-messages",
            "25",
            "--list-window",
            "60",
        ])
        .env("MAILSHIFT_FAULT", "after-append:3")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the fault point did not fire:\n{}",
        text(&out)
    );
    let partial = count_destination(&pair).await;
    assert!(partial >= 50, "only {partial} messages on the destination");

    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "re-run failed:\n{}", text(&out));
    assert!(
        text(&out).contains("appended before an interruption"),
        "the re-run recognised the unrecorded batch:\n{}",
        text(&out)
    );
    assert_mirrored(&pair, "destination after the crash and re-run").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_copies_new_mail_within_seconds() {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 13,
            messages: 100,
            big_attachments: 0,
        },
    )
    .await;
    let total_before: usize = before.values().map(Vec::len).sum();
    let mut child = pair
        .command(&["--follow", "--interval", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_destination(&pair).await < total_before {
        assert!(Instant::now() < deadline, "the first pass did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the first pass finish and the IDLE start.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let extra = corpus::generate(&CorpusSpec {
        seed: 77,
        messages: 1,
        big_attachments: 0,
    });
    let msg = extra.iter().flat_map(|f| f.messages.iter()).next().unwrap();
    imap::append(pair.src.port(), "alice", SRC_PW, "INBOX", msg)
        .await
        .unwrap();
    let appended = Instant::now();
    let mut arrived = false;
    while appended.elapsed() < Duration::from_secs(10) {
        if count_destination(&pair).await == total_before + 1 {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = appended.elapsed();

    // Ctrl-C ends it cleanly.
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let stop = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if stop.elapsed() > Duration::from_secs(15) {
            child.kill().ok();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(arrived, "new mail did not arrive within 10 s ({waited:?})");
    assert!(status.is_some(), "--follow did not stop on Ctrl-C");
    assert_mirrored(&pair, "destination while following").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn adopt_existing_recognises_mail_copied_by_another_tool() {
    let pair = Pair::new(DovecotOptions::default());
    let spec = CorpusSpec {
        seed: 31,
        messages: 300,
        big_attachments: 0,
    };
    let before = populate(&pair, &spec).await;
    // An earlier run of another tool already copied INBOX.
    let corpus = corpus::generate(&spec);
    let inbox = corpus
        .iter()
        .find(|f| f.path == ["INBOX"])
        .expect("corpus INBOX");
    for m in &inbox.messages {
        imap::append(pair.dst.port(), "alice", DST_PW, "INBOX", m)
            .await
            .unwrap();
    }

    let out = pair.migrate(&["--adopt-existing", "--json"]);
    assert!(out.status.success(), "migrate failed:\n{}", text(&out));
    let total_msgs: usize = before.values().map(Vec::len).sum();
    assert_eq!(
        total(&json(&out), "copied") as usize,
        total_msgs - inbox.messages.len(),
        "INBOX was adopted, not copied again"
    );
    assert_mirrored(&pair, "destination after adopting").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dual_reception_copies_new_arrivals_and_never_changes_the_destination() {
    let pair = Pair::new(DovecotOptions::default());
    populate(
        &pair,
        &CorpusSpec {
            seed: 21,
            messages: 60,
            big_attachments: 0,
        },
    )
    .await;
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "first pass failed:\n{}", text(&out));

    // After the switch: the user deletes a message and flags another on the new server;
    // on the old one a message is expunged, another re-flagged, and new mail arrives.
    let dst_inbox = ops::uids(pair.dst.port(), "alice", DST_PW, "INBOX")
        .await
        .unwrap();
    ops::run(
        pair.dst.port(),
        "alice",
        DST_PW,
        &[
            "SELECT INBOX".into(),
            format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", dst_inbox[0]),
            "EXPUNGE".into(),
            format!("UID STORE {} +FLAGS.SILENT ($Label1)", dst_inbox[1]),
        ],
    )
    .await
    .unwrap();
    let src_inbox = ops::uids(pair.src.port(), "alice", SRC_PW, "INBOX")
        .await
        .unwrap();
    ops::run(
        pair.src.port(),
        "alice",
        SRC_PW,
        &[
            "SELECT INBOX".into(),
            format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", src_inbox[2]),
            "EXPUNGE".into(),
            format!("UID STORE {} FLAGS.SILENT (\\Flagged)", src_inbox[3]),
        ],
    )
    .await
    .unwrap();
    let arrival = corpus::Msg {
        raw: b"From: late@example.net\r\nTo: alice@example.test\r\nSubject: to the old MX\r\n\r\nstill arriving\r\n"
            .to_vec(),
        flags: Vec::new(),
        internal_date: "29-Nov-2026 10:00:00 +0000".into(),
    };
    imap::append(pair.src.port(), "alice", SRC_PW, "INBOX", &arrival)
        .await
        .unwrap();
    let before = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();

    let out = pair.migrate(&["--dual-reception", "--json"]);
    assert!(
        out.status.success(),
        "dual-reception pass failed:\n{}",
        text(&out)
    );
    let s = json(&out);
    assert_eq!(total(&s, "copied"), 1, "{s:#}");
    assert_eq!(total(&s, "deleted"), 0, "{s:#}");
    assert_eq!(total(&s, "flags_updated"), 0, "{s:#}");
    let after = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    // The destination is what the user left, plus the new arrival.
    let mut expected = before.clone();
    let new_msg = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap()["INBOX"]
        .iter()
        .find(|m| !before["INBOX"].iter().any(|b| b.sha256 == m.sha256))
        .cloned()
        .unwrap();
    expected.get_mut("INBOX").unwrap().push(new_msg);
    assert_same(&expected, &after, "destination after a dual-reception pass");

    // Again: nothing more to do.
    let out = pair.migrate(&["--dual-reception", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(total(&json(&out), "copied"), 0);
}
