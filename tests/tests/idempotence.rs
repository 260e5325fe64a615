#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Never a duplicate, whatever happens to the state; never a write to the old server;
//! nothing a hostile name or server can win (issue 14). Every assertion on mail compares
//! the servers themselves through the harness's own IMAP client.

use mailshift_tests::corpus::{self, CorpusFolder, CorpusSpec};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::imap;
use mailshift_tests::mailshift_bin;
use mailshift_tests::pair::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SPEC: CorpusSpec = CorpusSpec {
    seed: 14,
    messages: 240,
    big_attachments: 0,
};

/// `mailshift migrate` with the servers spelled as given and its own state file.
fn migrate_spelled(pair: &Pair, from: &str, to: &str, state: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(mailshift_bin());
    cmd.arg("migrate")
        .args(["--from", from, "--to", to])
        .arg("--state")
        .arg(pair.dir.path().join(state))
        .arg("--allow-plaintext")
        .args(extra)
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> std::process::Output {
    let out = cmd.output().expect("run mailshift");
    assert_no_secrets(&out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_state_or_another_spelling_of_the_servers_copies_nothing_twice() {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(&pair, &SPEC).await;
    let total_msgs: u64 = before.values().map(|v| v.len() as u64).sum();
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "first copy:\n{}", text(&out));
    assert_eq!(total(&json(&out), "copied"), total_msgs);

    let (s, d) = (pair.src.port(), pair.dst.port());
    let spellings = [
        // A new state file (the default ./mailshift.db of another directory).
        (
            format!("imap://alice@127.0.0.1:{s}"),
            format!("imap://alice@127.0.0.1:{d}"),
            "fresh.db",
        ),
        // The host by name instead of by address.
        (
            format!("imap://alice@localhost:{s}"),
            format!("imap://alice@localhost:{d}"),
            "by-name.db",
        ),
        // The port written another way, with a trailing slash.
        (
            format!("imap://alice@127.0.0.1:0{s}/"),
            format!("imap://alice@127.0.0.1:0{d}/"),
            "port.db",
        ),
    ];
    for (from, to, state) in &spellings {
        let out = run(migrate_spelled(&pair, from, to, state, &["--json"]));
        let what = format!("re-run as {from} -> {to} with state {state}");
        assert!(out.status.success(), "{what}:\n{}", text(&out));
        let summary = json(&out);
        assert_eq!(total(&summary, "copied"), 0, "{what}:\n{}", text(&out));
        pair.assert_mirrored(&what).await;
    }
    // The human summary says what happened: mail found on the destination and kept.
    let out = run(migrate_spelled(
        &pair,
        &format!("imap://alice@127.0.0.1:{s}"),
        &format!("imap://alice@127.0.0.1:{d}"),
        "human.db",
        &[],
    ));
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "{total_msgs} messages on the destination (0 copied now"
        )) && t.contains(&format!("{total_msgs} found already there and kept")),
        "the summary names the adopted mail:\n{t}"
    );
    pair.assert_mirrored("after every re-run").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_account_on_both_sides_is_refused_and_the_source_untouched() {
    let pair = Pair::new(DovecotOptions::default());
    populate(&pair, &SPEC).await;
    let before = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    let s = pair.src.port();
    for (from, to) in [
        (
            format!("imap://alice@127.0.0.1:{s}"),
            format!("imap://alice@127.0.0.1:{s}"),
        ),
        // Another spelling of the same server: recognised once logged in.
        (
            format!("imap://alice@127.0.0.1:{s}"),
            format!("imap://alice@localhost:{s}"),
        ),
    ] {
        let mut cmd = migrate_spelled(&pair, &from, &to, "same.db", &[]);
        cmd.env("MAILSHIFT_TO_PASSWORD", SRC_PW);
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{from} -> {to}:\n{}",
            text(&out)
        );
        assert!(
            text(&out).contains("same account"),
            "the refusal says why:\n{}",
            text(&out)
        );
        assert!(!text(&out).contains(SRC_PW));
    }
    let after = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    assert!(
        imap::diff_strict(&before, &after).is_empty(),
        "source changed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn names_the_destination_refuses_are_renamed_and_copied() {
    // LAYOUT=fs ('/'-delimited) allows '.' in names; Maildir++ ('.'-delimited) does not.
    let src = Dovecot::start(DovecotOptions::default()).unwrap();
    let dst = Dovecot::start(DovecotOptions {
        delimiter: '.',
        ..Default::default()
    })
    .unwrap();
    src.add_user("alice", SRC_PW);
    dst.add_user("alice", DST_PW);
    let mut generated = corpus::generate(&CorpusSpec {
        seed: 7,
        messages: 60,
        big_attachments: 0,
    });
    let mut folders = Vec::new();
    for (i, path) in [
        vec!["INBOX"],
        vec!["Projects"],
        vec!["Projects", "v1.2"],
        vec!["Clients", "acme.example"],
    ]
    .into_iter()
    .enumerate()
    {
        let n = generated.len();
        let messages = std::mem::take(&mut generated[i % n].messages);
        folders.push(CorpusFolder {
            path: path.into_iter().map(String::from).collect(),
            special_use: None,
            messages: messages.into_iter().take(12).collect(),
        });
    }
    imap::populate(src.port(), "alice", SRC_PW, &folders)
        .await
        .unwrap();
    let source = imap::snapshot(src.port(), "alice", SRC_PW).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let migrate = |extra: &[&str]| {
        let out = Command::new(mailshift_bin())
            .arg("migrate")
            .arg("--from")
            .arg(format!("imap://alice@127.0.0.1:{}", src.port()))
            .arg("--to")
            .arg(format!("imap://alice@127.0.0.1:{}", dst.port()))
            .arg("--state")
            .arg(dir.path().join("state.db"))
            .arg("--allow-plaintext")
            .args(extra)
            .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
            .env("MAILSHIFT_TO_PASSWORD", DST_PW)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_no_secrets(&out);
        out
    };
    let out = migrate(&[]);
    assert!(out.status.success(), "first pass:\n{}", text(&out));
    assert!(
        text(&out).contains("v1_2") && text(&out).contains("acme_example"),
        "the renames are reported:\n{}",
        text(&out)
    );
    let expected: imap::Snapshot = source
        .iter()
        .map(|(k, v)| {
            (
                k.replace("v1.2", "v1_2")
                    .replace("acme.example", "acme_example"),
                v.clone(),
            )
        })
        .collect();
    let dest = imap::snapshot(dst.port(), "alice", DST_PW).await.unwrap();
    let d = imap::diff(&expected, &dest);
    assert!(d.is_empty(), "destination after renames:\n{}", d.join("\n"));

    let out = migrate(&["--json"]);
    assert!(out.status.success(), "second pass:\n{}", text(&out));
    assert_eq!(total(&json(&out), "copied"), 0, "{}", text(&out));
    let dest = imap::snapshot(dst.port(), "alice", DST_PW).await.unwrap();
    assert!(imap::diff(&expected, &dest).is_empty());

    let out = Command::new(mailshift_bin())
        .arg("verify")
        .arg("--from")
        .arg(format!("imap://alice@127.0.0.1:{}", src.port()))
        .arg("--to")
        .arg(format!("imap://alice@127.0.0.1:{}", dst.port()))
        .arg("--allow-plaintext")
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "verify:\n{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_started_together_leave_no_duplicate() {
    let pair = Pair::new(DovecotOptions::default());
    populate(
        &pair,
        &CorpusSpec {
            seed: 5,
            messages: 600,
            big_attachments: 0,
        },
    )
    .await;
    let first = pair
        .command(&[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = pair.command(&[]).output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert_no_secrets(&first);
    assert_no_secrets(&second);
    let outcomes = [&first, &second];
    assert!(
        outcomes.iter().any(|o| o.status.success()),
        "one of them copies:\n{}\n{}",
        text(&first),
        text(&second)
    );
    let refused: Vec<_> = outcomes.iter().filter(|o| !o.status.success()).collect();
    for o in &refused {
        assert_eq!(o.status.code(), Some(6), "busy, not failed:\n{}", text(o));
        assert!(
            text(o).contains("another mailshift migrate"),
            "the refusal says another run holds it:\n{}",
            text(o)
        );
    }
    pair.assert_mirrored("after two runs started 0.1 s apart")
        .await;
    // Whatever the second run did, a third one finishes the job with nothing to add.
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    pair.assert_mirrored("after a third run").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn folder_names_with_quotes_backslashes_and_wildcards_round_trip() {
    let pair = Pair::new(DovecotOptions::default());
    let generated = corpus::generate(&CorpusSpec {
        seed: 9,
        messages: 40,
        big_attachments: 0,
    });
    let sample: Vec<_> = generated
        .iter()
        .flat_map(|f| f.messages.iter().cloned())
        .take(20)
        .collect();
    let names = ["Back\\slash", "Quote \"x\"", "100%", "a*b"];
    let folders: Vec<CorpusFolder> = names
        .iter()
        .enumerate()
        .map(|(i, n)| CorpusFolder {
            path: vec![n.to_string()],
            special_use: None,
            messages: sample[i * 5..i * 5 + 5].to_vec(),
        })
        .collect();
    imap::populate(pair.src.port(), "alice", SRC_PW, &folders)
        .await
        .unwrap();
    let out = pair.migrate(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let src = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    for n in names {
        assert_eq!(src.get(n).map(Vec::len), Some(5), "source folder {n}");
    }
    pair.assert_mirrored("odd folder names").await;
    let out = pair.migrate(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(total(&json(&out), "copied"), 0);
}

/// A server that offers STARTTLS and refuses it: with plain text allowed, mailshift must
/// still not send the password in clear (a downgrade by a man in the middle).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_starttls_is_an_error_even_with_plaintext_allowed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                let _ = w
                    .write_all(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n")
                    .await;
                let mut line = String::new();
                while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                    log.lock().unwrap().push(line.clone());
                    let mut parts = line.split_whitespace();
                    let tag = parts.next().unwrap_or("*").to_string();
                    let cmd = parts.next().unwrap_or("").to_ascii_uppercase();
                    let reply = match cmd.as_str() {
                        "CAPABILITY" => format!(
                            "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\n{tag} OK done\r\n"
                        ),
                        "STARTTLS" => format!("{tag} NO not today\r\n"),
                        "LOGOUT" => format!("* BYE\r\n{tag} OK bye\r\n"),
                        _ => format!("{tag} OK fine\r\n"),
                    };
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    let pair = Pair::new(DovecotOptions::default());
    let out = run(migrate_spelled(
        &pair,
        &format!("imap://alice@127.0.0.1:{port}"),
        &format!("imap://alice@127.0.0.1:{}", pair.dst.port()),
        "tls.db",
        &[],
    ));
    server.abort();
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(out.status.code(), Some(5), "a TLS failure:\n{}", text(&out));
    assert!(
        text(&out).contains("STARTTLS"),
        "the error names STARTTLS:\n{}",
        text(&out)
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.to_ascii_uppercase().contains("STARTTLS")),
        "STARTTLS was asked for: {seen:?}"
    );
    for l in seen.iter() {
        let up = l.to_ascii_uppercase();
        assert!(
            !up.contains("LOGIN") && !up.contains("AUTHENTICATE") && !l.contains(SRC_PW),
            "credentials went out in clear: {l:?}"
        );
    }
}

/// Peak resident memory (VmHWM, bytes) of a running process; 0 once it is gone.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_announcing_a_500_mb_literal_costs_one_message_not_the_memory() {
    let pair = Pair::new(DovecotOptions::default());
    populate(&pair, &SPEC).await;
    // The message the hostile server lies about: its listed size is true, but its FETCH
    // announces 500 MiB and then sends nothing.
    let mut raw = b"From: mallory@example.com\r\nTo: alice@example.com\r\n\
                    Subject: the message a hostile server inflates\r\n\
                    Message-ID: <liar@example.com>\r\n\r\n"
        .to_vec();
    while raw.len() < 7_777 - 2 {
        raw.push(b'z');
    }
    raw.extend_from_slice(b"\r\n");
    assert_eq!(raw.len(), 7_777);
    let liar = corpus::Msg {
        raw,
        flags: Vec::new(),
        internal_date: "17-Jul-2023 02:44:25 -0700".into(),
    };
    imap::append(pair.src.port(), "alice", SRC_PW, "INBOX", &liar)
        .await
        .unwrap();
    // And mail after it, which must not be left behind.
    for i in 0..3 {
        let m = corpus::Msg {
            raw: format!(
                "From: bob@example.com\r\nSubject: after the liar {i}\r\n\
                 Message-ID: <after{i}@example.com>\r\n\r\nhello {i}\r\n"
            )
            .into_bytes(),
            flags: vec!["\\Seen".into()],
            internal_date: "18-Jul-2023 02:44:25 -0700".into(),
        };
        imap::append(pair.src.port(), "alice", SRC_PW, "INBOX", &m)
            .await
            .unwrap();
    }
    let liar_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&liar.raw))
    };
    let mut before = imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .unwrap();
    for msgs in before.values_mut() {
        msgs.retain(|m| m.sha256 != liar_sha);
    }
    let proxy = mailshift_tests::proxy::Proxy::start(pair.src.port()).await;
    proxy.inflate_literal(7_777, 500 << 20);
    let mut child = pair
        .command_via(proxy.port(), pair.dst.port(), &["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss(pid));
        assert!(
            std::time::Instant::now() < deadline,
            "migrate did not end in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert_no_secrets(&out);
    assert!(
        proxy.inflated() >= 1,
        "the proxy never saw the message's literal"
    );
    assert!(
        peak < 200 << 20,
        "peak RSS {} MiB: the announced literal was allocated",
        peak >> 20
    );
    // One message refused, named, and the run says it is incomplete.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    let failures: Vec<serde_json::Value> = j["folders"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["failures"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(failures.len(), 1, "{j:#}");
    assert_eq!(failures[0]["kind"], "oversized-literal", "{j:#}");
    // Everything else arrived, byte-exact, the rest of INBOX included.
    let got = imap::snapshot(pair.dst.port(), "alice", DST_PW)
        .await
        .unwrap();
    assert_same(
        &expected_on_destination(&before),
        &got,
        "all but the inflated message",
    );
}
