#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `migrate --sieve`: the users' filters and vacation replies reach the new server with
//! the mail, the same one active, and follow later changes on the old server. Judged on
//! each server's script storage on disk, not through mailshift.

use mailshift_tests::corpus::{self, CorpusSpec};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::imap;
use mailshift_tests::mailshift_bin;
use mailshift_tests::pair::{DST_PW, SRC_PW, assert_no_secrets, json, text};
use std::process::{Command, Output, Stdio};

const VACATION: &[u8] =
    b"require \"vacation\";\r\nvacation :days 3 \"I am away until Monday.\";\r\n";
const SPAM: &[u8] = b"require \"fileinto\";\r\nif header :contains \"X-Spam\" \"yes\" {\r\n  fileinto \"Junk\";\r\n}\r\n";

fn sieve_server() -> Dovecot {
    Dovecot::start(DovecotOptions {
        sieve: true,
        ..Default::default()
    })
    .unwrap()
}

fn migrate(src: &Dovecot, dst: &Dovecot, dir: &std::path::Path, extra: &[&str]) -> Output {
    let out = Command::new(mailshift_bin())
        .arg("migrate")
        .arg("--from")
        .arg(format!("imap://alice@127.0.0.1:{}", src.port()))
        .arg("--to")
        .arg(format!("imap://alice@127.0.0.1:{}", dst.port()))
        .arg("--state")
        .arg(dir.join("state.db"))
        .arg("--allow-plaintext")
        .arg("--sieve")
        .arg("--from-sieve")
        .arg(src.sieve_url("alice"))
        .arg("--to-sieve")
        .arg(dst.sieve_url("alice"))
        .args(extra)
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_no_secrets(&out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_arrive_with_the_mail_and_follow_changes_on_the_old_server() {
    let (src, dst) = (sieve_server(), sieve_server());
    src.add_user("alice", SRC_PW);
    dst.add_user("alice", DST_PW);
    let corpus = corpus::generate(&CorpusSpec {
        seed: 3,
        messages: 30,
        big_attachments: 0,
    });
    imap::populate(src.port(), "alice", SRC_PW, &corpus)
        .await
        .unwrap();
    src.put_sieve_script("alice", "vacation", VACATION, true);
    src.put_sieve_script("alice", "spam", SPAM, false);
    let before = src.sieve_scripts("alice");
    let dir = tempfile::tempdir().unwrap();

    let out = migrate(&src, &dst, dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Sieve filters:"), "{}", text(&out));
    let got = dst.sieve_scripts("alice");
    assert_eq!(
        got.scripts.get("vacation").map(Vec::as_slice),
        Some(VACATION)
    );
    assert_eq!(got.scripts.get("spam").map(Vec::as_slice), Some(SPAM));
    assert_eq!(got.active.as_deref(), Some("vacation"));
    // The old server only read.
    let after = src.sieve_scripts("alice");
    assert_eq!(before.scripts, after.scripts);
    assert_eq!(before.modified, after.modified);
    assert_eq!(before.active, after.active);

    // Nothing changed: nothing written again.
    let out = migrate(&src, &dst, dir.path(), &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    assert!(
        v["sieve"]["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["result"]["status"] == "unchanged"),
        "{v:#}"
    );
    assert_eq!(dst.sieve_scripts("alice").modified, got.modified);

    // The user edits the filter on the old server and switches to it: the copy follows,
    // in place, and the same script is active.
    let edited = b"require \"fileinto\";\r\nif header :contains \"X-Spam\" \"yes\" {\r\n  fileinto \"Spam\";\r\n}\r\n";
    src.put_sieve_script("alice", "spam", edited, true);
    let out = migrate(&src, &dst, dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let got = dst.sieve_scripts("alice");
    assert_eq!(
        got.scripts.get("spam").map(Vec::as_slice),
        Some(&edited[..])
    );
    assert_eq!(got.active.as_deref(), Some("spam"));
    assert_eq!(
        got.scripts.len(),
        2,
        "updated in place: {:?}",
        got.scripts.keys()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_the_new_server_refuses_is_named_and_the_run_is_incomplete() {
    let src = sieve_server();
    let dst = Dovecot::start(DovecotOptions {
        sieve: true,
        sieve_extensions: Some("-vacation".into()),
        ..Default::default()
    })
    .unwrap();
    src.add_user("alice", SRC_PW);
    dst.add_user("alice", DST_PW);
    src.put_sieve_script("alice", "vacation", VACATION, true);
    src.put_sieve_script("alice", "spam", SPAM, false);
    let mail = corpus::Msg {
        raw: b"From: bob@example.com\r\nSubject: still copied\r\n\r\nhello\r\n".to_vec(),
        flags: vec!["\\Seen".into()],
        internal_date: "17-Jul-2023 02:44:25 -0700".into(),
    };
    imap::append(src.port(), "alice", SRC_PW, "INBOX", &mail)
        .await
        .unwrap();
    let before = src.sieve_scripts("alice");
    let dir = tempfile::tempdir().unwrap();
    let out = migrate(&src, &dst, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("vacation") && t.contains("NOT COPIED"), "{t}");
    let got = dst.sieve_scripts("alice");
    assert_eq!(got.scripts.get("spam").map(Vec::as_slice), Some(SPAM));
    assert!(!got.scripts.contains_key("vacation"));
    // The rest of the mailbox went on, and the old server's scripts are as they were.
    let copied = imap::snapshot(dst.port(), "alice", DST_PW).await.unwrap();
    assert_eq!(copied.get("INBOX").map(Vec::len), Some(1), "{copied:#?}");
    let after = src.sieve_scripts("alice");
    assert_eq!(
        (before.scripts, before.active),
        (after.scripts, after.active)
    );
}
