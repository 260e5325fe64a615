//! Real-world servers and networks: connections cut every few megabytes by a proxy,
//! throttling answers, and servers that advertise nothing but IMAP4rev1. Every
//! assertion compares the servers themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_tests::corpus::CorpusSpec;
use mailshift_tests::dovecot::DovecotOptions;
use mailshift_tests::imap;
use mailshift_tests::pair::*;
use mailshift_tests::proxy::{Proxy, Throttle};

/// Messages stay below the cut (one bigger than it could never cross such a link whole:
/// an APPEND cannot be split).
#[tokio::test(flavor = "multi_thread")]
async fn connections_cut_every_two_megabytes_lose_and_duplicate_nothing() {
    let pair = Pair::new(DovecotOptions::default());
    populate(
        &pair,
        &CorpusSpec {
            seed: 31,
            messages: 1200,
            big_attachments: 0,
        },
    )
    .await;
    let src = Proxy::start(pair.src.port()).await;
    let dst = Proxy::start(pair.dst.port()).await;
    src.cut_every(2 << 20);
    dst.cut_every(2 << 20);
    let out = pair
        .command_via(src.port(), dst.port(), &["--json"])
        .output()
        .unwrap();
    assert_no_secrets(&out);
    assert!(
        out.status.success(),
        "migration through a cutting proxy:\n{}",
        text(&out)
    );
    assert!(
        src.cuts() + dst.cuts() >= 5,
        "the proxies cut only {} + {} connections",
        src.cuts(),
        dst.cuts()
    );
    pair.assert_mirrored("after a migration through connections cut every ~2 MB")
        .await;
    // And a second pass through the same proxies finds nothing to do.
    let out = pair
        .command_via(src.port(), dst.port(), &["--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let copied: u64 = json(&out)["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["copied"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(copied, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_server_is_waited_for_as_it_asks() {
    let pair = Pair::new(DovecotOptions::default());
    populate(
        &pair,
        &CorpusSpec {
            seed: 32,
            messages: 150,
            big_attachments: 0,
        },
    )
    .await;
    let src = Proxy::start(pair.src.port()).await;
    src.throttle(Throttle {
        command: "EXAMINE".into(),
        times: 2,
        reply: "NO [UNAVAILABLE] Request is throttled. Suggested Backoff Time: 1500 milliseconds"
            .into(),
    });
    let started = std::time::Instant::now();
    let out = pair
        .command_via(src.port(), pair.dst.port(), &["--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(src.throttled(), 2);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "finished in {:?} despite a 1.5 s back-off",
        started.elapsed()
    );
    pair.assert_mirrored("after throttling").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn imap4rev1_only_servers_on_both_sides_are_migrated_byte_exact() {
    let bare = || DovecotOptions {
        capability: Some("IMAP4rev1".into()),
        ..Default::default()
    };
    let mut pair = Pair::new(bare());
    // The source advertises nothing either (no UIDPLUS, CONDSTORE, MOVE, SPECIAL-USE,
    // MULTIAPPEND, LITERAL+, IDLE).
    pair.src = mailshift_tests::dovecot::Dovecot::start(DovecotOptions {
        delimiter: '.',
        ..bare()
    })
    .unwrap();
    pair.src.add_user("alice", SRC_PW);
    populate(
        &pair,
        &CorpusSpec {
            seed: 33,
            messages: 300,
            big_attachments: 1,
        },
    )
    .await;
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let src = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    let total_src: usize = src.values().map(Vec::len).sum();
    let total_dst: usize = dst.values().map(Vec::len).sum();
    assert_eq!(total_src, total_dst, "same number of messages");
    // Byte-exact: every message's SHA-256, flags and date are on the destination.
    let mut a: Vec<_> = src.values().flatten().cloned().collect();
    let mut b: Vec<_> = dst.values().flatten().cloned().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);

    let before = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    let (before_archive, before_inbox) = (before["Archive"].clone(), before["INBOX"].clone());
    // An incremental pass without CONDSTORE, UIDPLUS or MOVE: new mail, a message moved
    // to another folder (COPY + EXPUNGE on the old server), a flag change.
    let inbox = mailshift_tests::ops::uids(pair.src.port(), "alice", SRC_PW, "INBOX")
        .await
        .unwrap();
    mailshift_tests::ops::run(
        pair.src.port(),
        "alice",
        SRC_PW,
        &[
            "SELECT INBOX".into(),
            format!("UID COPY {} Archive", inbox[0]),
            format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", inbox[0]),
            "EXPUNGE".into(),
            format!("UID STORE {} +FLAGS.SILENT (\\Answered)", inbox[1]),
        ],
    )
    .await
    .unwrap();
    let msg = mailshift_tests::corpus::Msg {
        raw: b"From: x@example.net\r\nSubject: later\r\n\r\nlater\r\n".to_vec(),
        flags: vec!["\\Seen".into()],
        internal_date: "29-Nov-2026 11:00:00 +0000".into(),
    };
    imap::append(pair.src.port(), "alice", SRC_PW, "INBOX", &msg)
        .await
        .unwrap();
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = json(&out);
    assert!(
        s["notes"].to_string().contains("neither MOVE nor UIDPLUS"),
        "{s:#}"
    );
    let src = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    // Every source message, byte-exact with its flags (the flag change applied), in its
    // folder, and nothing else: without UID EXPUNGE the destination's other \Deleted
    // messages stepped aside for the EXPUNGE and got their flag back (compared too).
    assert!(
        dst["Archive"]
            .iter()
            .any(|m| !before_archive.iter().any(|b| b.sha256 == m.sha256)),
        "the moved message is in Archive"
    );
    assert!(
        before_inbox
            .iter()
            .any(|m| m.flags.iter().any(|f| f == "\\Deleted")),
        "the corpus has \\Deleted messages that must keep their flag"
    );
    assert_same(
        &expected_on_destination(&src),
        &dst,
        "after an incremental pass between IMAP4rev1 servers",
    );
}

fn gmail_msg(n: u32, flags: &[&str]) -> mailshift_tests::corpus::Msg {
    mailshift_tests::corpus::Msg {
        raw: format!(
            "Message-ID: <m{n}@gmail.example>\r\nFrom: friend{n}@example.net\r\nTo: alice@gmail.example\r\nSubject: message {n}\r\nDate: Mon, 2 Nov 2026 10:{n:02}:00 +0000\r\n\r\nbody of message {n}\r\n"
        )
        .into_bytes(),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        internal_date: format!("02-Nov-2026 10:{n:02}:00 +0000"),
    }
}

/// Messages of a snapshot folder by subject, sorted.
fn subjects(snap: &imap::Snapshot, folder: &str) -> Vec<String> {
    let mut v: Vec<String> = snap
        .get(folder)
        .map(|msgs| msgs.iter().map(|m| m.subject.clone()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gmail_label_layout_is_copied_once_per_label_and_archive() {
    use mailshift_tests::corpus::{CorpusFolder, special_use_options};
    let m = gmail_msg;
    let folder =
        |path: &[&str], su: Option<&str>, msgs: Vec<mailshift_tests::corpus::Msg>| CorpusFolder {
            path: path.iter().map(|s| s.to_string()).collect(),
            special_use: su.map(str::to_string),
            messages: msgs,
        };
    // Gmail as IMAP shows it: a message appears in each of its labels' folders and in
    // All Mail; Starred and Important are views; Trash is outside All Mail.
    let layout = vec![
        folder(
            &["INBOX"],
            None,
            vec![m(1, &["\\Flagged"]), m(2, &[]), m(3, &["\\Seen"])],
        ),
        folder(&["Work"], None, vec![m(3, &["\\Seen"]), m(4, &[])]),
        folder(
            &["[Gmail]", "Sent Mail"],
            Some("\\Sent"),
            vec![m(5, &["\\Seen"])],
        ),
        folder(
            &["[Gmail]", "Starred"],
            Some("\\Flagged"),
            vec![m(1, &["\\Flagged"])],
        ),
        folder(
            &["[Gmail]", "Important"],
            Some("\\Important"),
            vec![m(2, &[]), m(4, &[])],
        ),
        folder(
            &["[Gmail]", "All Mail"],
            Some("\\All"),
            vec![
                m(1, &["\\Flagged"]),
                m(2, &[]),
                m(3, &["\\Seen"]),
                m(4, &[]),
                m(5, &["\\Seen"]),
                m(6, &["\\Seen"]),
                m(7, &[]),
            ],
        ),
        folder(
            &["[Gmail]", "Trash"],
            Some("\\Trash"),
            vec![m(8, &["\\Seen"])],
        ),
    ];
    let mut pair = Pair::new(DovecotOptions::default());
    pair.src = mailshift_tests::dovecot::Dovecot::start(DovecotOptions {
        special_use: special_use_options(&layout, '/'),
        ..Default::default()
    })
    .unwrap();
    pair.src.add_user("alice", SRC_PW);
    imap::populate(pair.src.port(), "alice", SRC_PW, &layout)
        .await
        .unwrap();
    // The new server has its own \Sent, as a real one does.
    imap::populate(
        pair.dst.port(),
        "alice",
        DST_PW,
        &[folder(&["Sent"], Some("\\Sent"), Vec::new())],
    )
    .await
    .unwrap();

    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    assert!(s.contains("Gmail label view"), "{s}");
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    let want = |v: &[u32]| -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|n| format!("message {n}")).collect();
        v.sort();
        v
    };
    assert_eq!(subjects(&dst, "INBOX"), want(&[1, 2, 3]), "{dst:#?}");
    assert_eq!(subjects(&dst, "Work"), want(&[3, 4]));
    assert_eq!(subjects(&dst, "Sent"), want(&[5]), "{:?}", dst.keys());
    assert_eq!(
        subjects(&dst, "Archive"),
        want(&[6, 7]),
        "archived mail only"
    );
    assert_eq!(subjects(&dst, "[Gmail]/Trash"), want(&[8]));
    for view in ["[Gmail]/Starred", "[Gmail]/Important", "[Gmail]/All Mail"] {
        assert!(subjects(&dst, view).is_empty(), "{view} copied: {dst:#?}");
    }
    // Starred survives as the flag.
    let inbox = &dst["INBOX"];
    assert!(
        inbox
            .iter()
            .any(|m| m.subject == "message 1" && m.flags.contains(&"\\Flagged".to_string()))
    );

    // Later: new mail (INBOX + All Mail), and message 2 archived (its INBOX label removed).
    let m9 = m(9, &[]);
    imap::append(pair.src.port(), "alice", SRC_PW, "INBOX", &m9)
        .await
        .unwrap();
    imap::append(pair.src.port(), "alice", SRC_PW, "[Gmail]/All Mail", &m9)
        .await
        .unwrap();
    let inbox_uids = mailshift_tests::ops::uids(pair.src.port(), "alice", SRC_PW, "INBOX")
        .await
        .unwrap();
    mailshift_tests::ops::run(
        pair.src.port(),
        "alice",
        SRC_PW,
        &[
            "SELECT INBOX".into(),
            format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", inbox_uids[1]),
            "EXPUNGE".into(),
        ],
    )
    .await
    .unwrap();
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_eq!(subjects(&dst, "INBOX"), want(&[1, 3, 9]), "{dst:#?}");
    assert_eq!(
        subjects(&dst, "Archive"),
        want(&[2, 6, 7]),
        "archived since: {dst:#?}"
    );
    assert_eq!(subjects(&dst, "Work"), want(&[3, 4]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_prefixed_namespace_is_translated_both_ways() {
    use mailshift_tests::corpus::{self, CorpusSpec, special_use_options};
    // A Courier/cPanel-style server: every folder under "INBOX.".
    let prefixed = || DovecotOptions {
        delimiter: '.',
        prefix: Some("INBOX.".into()),
        // Mailbox settings inside a namespace name folders without its prefix.
        special_use: special_use_options(&corpus::standard_folders(), '.'),
        ..Default::default()
    };
    let corpus = corpus::generate(&CorpusSpec {
        seed: 34,
        messages: 200,
        big_attachments: 0,
    });
    let under_inbox = |folders: &[corpus::CorpusFolder]| -> Vec<corpus::CorpusFolder> {
        folders
            .iter()
            .map(|f| {
                let mut f = f.clone();
                if f.path != ["INBOX"] {
                    f.path.insert(0, "INBOX".into());
                }
                f
            })
            .collect()
    };
    let strip = |snap: &imap::Snapshot| -> imap::Snapshot {
        snap.iter()
            .map(|(k, v)| {
                let k = k.strip_prefix("INBOX/").unwrap_or(k).to_string();
                (k, v.clone())
            })
            .collect()
    };

    // From the prefixed server to a plain one: INBOX.Work.2024 becomes Work/2024.
    let mut pair = Pair::new(DovecotOptions::default());
    pair.src = mailshift_tests::dovecot::Dovecot::start(prefixed()).unwrap();
    pair.src.add_user("alice", SRC_PW);
    imap::populate(pair.src.port(), "alice", SRC_PW, &under_inbox(&corpus))
        .await
        .unwrap();
    imap::populate(
        pair.dst.port(),
        "alice",
        DST_PW,
        &[corpus::CorpusFolder {
            path: vec!["Sent".into()],
            special_use: Some("\\Sent".into()),
            messages: Vec::new(),
        }],
    )
    .await
    .unwrap();
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let src = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    let dst = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert!(
        !dst.keys().any(|k| k.starts_with("INBOX/")),
        "{:?}",
        dst.keys()
    );
    assert_same(
        &expected_on_destination(&strip(&src)),
        &dst,
        "prefixed -> plain",
    );

    // And back: from a plain server into a prefixed one (its Sent already there).
    let mut back = Pair::new(DovecotOptions::default());
    populate(
        &back,
        &CorpusSpec {
            seed: 35,
            messages: 200,
            big_attachments: 0,
        },
    )
    .await;
    back.dst = mailshift_tests::dovecot::Dovecot::start(prefixed()).unwrap();
    back.dst.add_user("alice", DST_PW);
    imap::populate(
        back.dst.port(),
        "alice",
        DST_PW,
        &[corpus::CorpusFolder {
            path: vec!["INBOX".into(), "Sent".into()],
            special_use: Some("\\Sent".into()),
            messages: Vec::new(),
        }],
    )
    .await
    .unwrap();
    let out = back.migrate(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let src = imap::snapshot(back.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    let dst = imap::snapshot(back.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert!(
        dst.keys().all(|k| k == "INBOX" || k.starts_with("INBOX/")),
        "{:?}",
        dst.keys()
    );
    assert_same(
        &expected_on_destination(&src),
        &strip(&dst),
        "plain -> prefixed",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compress_deflate_is_used_when_offered_and_halves_the_traffic() {
    let z = || DovecotOptions {
        compress: true,
        ..Default::default()
    };
    let spec = CorpusSpec {
        seed: 36,
        messages: 300,
        big_attachments: 0,
    };
    // The same mailbox twice, through counting proxies: compressed, then not.
    let mut traffic = Vec::new();
    for flags in [&["--json"][..], &["--json", "--no-compress"][..]] {
        let mut pair = Pair::new(z());
        pair.src = mailshift_tests::dovecot::Dovecot::start(DovecotOptions {
            delimiter: '.',
            special_use: mailshift_tests::corpus::special_use_options(
                &mailshift_tests::corpus::standard_folders(),
                '.',
            ),
            ..z()
        })
        .unwrap();
        pair.src.add_user("alice", SRC_PW);
        populate(&pair, &spec).await;
        let (sp, dp) = (
            Proxy::start(pair.src.port()).await,
            Proxy::start(pair.dst.port()).await,
        );
        let out = pair
            .command_via(sp.port(), dp.port(), flags)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        pair.assert_mirrored("after a compressed migration").await;
        traffic.push(sp.bytes() + dp.bytes());
    }
    let (compressed, plain) = (traffic[0], traffic[1]);
    eprintln!("traffic: {compressed} bytes compressed, {plain} plain");
    assert!(
        compressed * 10 < plain * 7,
        "COMPRESS=DEFLATE saved too little: {compressed} vs {plain} bytes"
    );
}
