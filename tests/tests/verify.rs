#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `mailshift verify` end to end: after a migration it says "in sync"; after changes made
//! by hand on the destination (a message deleted, flags changed, a message added, a
//! folder deleted) it names each one by folder, UID and subject and exits non-zero. The
//! changes are made with the harness's own IMAP client, never through mailshift.

use mailshift_tests::corpus::{CorpusSpec, Msg};
use mailshift_tests::dovecot::DovecotOptions;
use mailshift_tests::imap::{self, MsgPrint, Snapshot};
use mailshift_tests::mailshift_bin;
use mailshift_tests::ops;
use mailshift_tests::pair::*;
use std::process::{Command, Output, Stdio};

const SPEC: CorpusSpec = CorpusSpec {
    seed: 23,
    messages: 300,
    big_attachments: 0,
};

/// `mailshift verify` against the pair (no state file: verify needs none).
fn verify(pair: &Pair, extra: &[&str]) -> Output {
    let out = Command::new(mailshift_bin())
        .arg("verify")
        .arg("--from")
        .arg(pair.src.url("alice"))
        .arg("--to")
        .arg(pair.dst.url("alice"))
        .arg("--allow-plaintext")
        .args(extra)
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run mailshift verify");
    assert_no_secrets(&out);
    out
}

/// A message of `folder` whose subject is plain enough to look for in the output.
fn plain(snap: &Snapshot, folder: &str, skip: &[&MsgPrint]) -> MsgPrint {
    snap[folder]
        .iter()
        .find(|m| {
            m.subject.len() > 8
                && m.subject
                    .bytes()
                    .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\')
                && !m.subject.contains("=?")
                && !skip.iter().any(|s| s.subject == m.subject)
                && snap[folder]
                    .iter()
                    .filter(|o| o.subject == m.subject)
                    .count()
                    == 1
        })
        .unwrap_or_else(|| panic!("no message with a plain, unique subject in {folder}"))
        .clone()
}

async fn migrated_pair() -> (Pair, usize) {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(&pair, &SPEC).await;
    let out = pair.migrate(&[]);
    assert!(out.status.success(), "migrate failed:\n{}", text(&out));
    let total = before.values().map(Vec::len).sum();
    (pair, total)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_says_in_sync_then_names_every_change_made_by_hand() {
    let (pair, total) = migrated_pair().await;

    let out = verify(&pair, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify after a migration:\n{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("in sync: 14 folders, {total} messages"))
            || stdout.contains(&format!(
                "in sync: 14 folders, {},{:03} messages",
                total / 1000,
                total % 1000
            )),
        "{}",
        text(&out)
    );
    let v = json(&verify(&pair, &["--json"]));
    assert_eq!(v["in_sync"], true, "{v:#}");
    assert_eq!(v["totals"]["source_messages"], total as u64, "{v:#}");

    // By hand on the destination: delete one message, change the flags of another, add a
    // message of its own, delete a whole folder.
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    let gone = plain(&dst, "INBOX", &[]);
    let src = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    let gone_source_uid = src["INBOX"]
        .iter()
        .find(|m| m.sha256 == gone.sha256)
        .expect("the deleted message is on the source")
        .uid;
    let reflagged = plain(&dst, "Projects", &[&gone]);
    let new_flags = if reflagged.flags.iter().any(|f| f == "\\Flagged") {
        ""
    } else {
        "\\Flagged"
    };
    let deleted_folder = "Archive/2024";
    let deleted_count = dst[deleted_folder].len();
    assert!(deleted_count > 0);
    ops::run(
        pair.dst.port(),
        "alice",
        DST_PW,
        &[
            "SELECT INBOX".to_string(),
            format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", gone.uid),
            format!("UID EXPUNGE {}", gone.uid),
            "SELECT Projects".to_string(),
            format!("UID STORE {} FLAGS.SILENT ({new_flags})", reflagged.uid),
            "UNSELECT".to_string(),
            format!("DELETE {deleted_folder}"),
        ],
    )
    .await
    .unwrap();
    let added = Msg {
        raw: b"From: Bob <bob@example.com>\r\nTo: alice@example.com\r\n\
               Subject: Added by hand on the new server\r\n\
               Date: Mon, 17 Jul 2023 02:44:25 -0700\r\n\r\nhello\r\n"
            .to_vec(),
        flags: vec!["\\Seen".into()],
        internal_date: "17-Jul-2023 02:44:25 -0700".into(),
    };
    imap::append(pair.dst.port(), "alice", DST_PW, "Lists", &added)
        .await
        .unwrap();

    for extra in [&[][..], &["--deep"][..]] {
        let out = verify(&pair, extra);
        let report = text(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}:\n{report}");
        assert!(
            report.contains(&format!(
                "folder 'INBOX': missing on the destination: UID {gone_source_uid} ("
            )) && report.contains(&gone.subject),
            "names the deleted message by folder, UID and subject:\n{report}"
        );
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("folder 'Projects': UID ")
                    && l.contains(&reflagged.subject)
                    && l.contains("flags ")),
            "names the re-flagged message by folder and subject:\n{report}"
        );
        assert!(
            report.lines().any(
                |l| l.starts_with("folder 'Lists': only on the destination: UID ")
                    && l.contains("Added by hand on the new server")
                    && l.contains("bob@example.com")
            ),
            "names the added message:\n{report}"
        );
        assert!(
            report.contains(&format!(
                "destination folder '{deleted_folder}' does not exist ({deleted_count} message(s) on the source)"
            )),
            "reports the deleted folder:\n{report}"
        );
        assert!(report.contains("NOT IN SYNC: "), "{report}");
    }

    let out = verify(&pair, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["in_sync"], false);
    assert_eq!(v["complete"], true);
    assert_eq!(v["totals"]["missing"], (1 + deleted_count) as u64, "{v:#}");
    assert_eq!(v["totals"]["extra"], 1, "{v:#}");
    assert_eq!(v["totals"]["different"], 1, "{v:#}");
    let folder = |name: &str| {
        v["folders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["dest"] == name)
            .unwrap_or_else(|| panic!("no folder {name} in {v:#}"))
            .clone()
    };
    let inbox = folder("INBOX");
    assert_eq!(inbox["missing"][0]["subject"], gone.subject.as_str());
    assert_eq!(inbox["missing"][0]["folder"], "INBOX");
    assert_eq!(inbox["missing"][0]["uid"], gone_source_uid);
    let projects = folder("Projects");
    let d = &projects["different"][0];
    assert_eq!(d["source"]["subject"], reflagged.subject.as_str());
    assert_eq!(d["dest"]["uid"], reflagged.uid);
    assert_eq!(d["flags_differ"], true);
    assert_eq!(d["internal_date_differs"], false);
    assert_eq!(folder("Lists")["extra"][0]["from"], "bob@example.com");
    assert_eq!(folder(deleted_folder)["dest_folder_missing"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_pairs_merged_folders_like_migrate() {
    let pair = Pair::new(DovecotOptions::default());
    populate(&pair, &SPEC).await;
    let out = pair.migrate(&["--map", "Lists=Projects"]);
    assert!(out.status.success(), "migrate failed:\n{}", text(&out));

    let out = verify(&pair, &["--map", "Lists=Projects"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("Lists + Projects -> Projects"),
        "{}",
        text(&out)
    );
    // Without the same --map, verify pairs Lists with a destination Lists that is not there.
    let out = verify(&pair, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("destination folder 'Lists' does not exist"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_exits_4_when_a_server_refuses_the_login_and_says_so_in_json() {
    let pair = Pair::new(DovecotOptions::default());
    let out = Command::new(mailshift_bin())
        .arg("verify")
        .arg("--from")
        .arg(pair.src.url("alice"))
        .arg("--to")
        .arg(pair.dst.url("alice"))
        .arg("--allow-plaintext")
        .arg("--json")
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", "wrong-Dest!pw")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_no_secrets(&out);
    let all = text(&out);
    // The same status as migrate's for a refused login, and a JSON document.
    assert_eq!(out.status.code(), Some(4), "{all}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON document on stdout ({e}):\n{all}"));
    assert_eq!(doc["complete"], false, "{doc:#}");
    assert_eq!(doc["errors"][0]["kind"], "auth", "{doc:#}");
    assert!(!all.contains("wrong-Dest!pw"), "{all}");
    assert!(all.contains("destination"), "says which server:\n{all}");

    let out = verify(&pair, &["--map", "no equals sign"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
