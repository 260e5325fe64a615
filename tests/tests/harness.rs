//! Self-tests of the harness: Dovecot instances start, the corpus round-trips byte-exactly
//! whatever the server's delimiter, TLS works with the throwaway CA, and size limits bite.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use mailshift_tests::corpus::{self, CorpusSpec, Msg};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::imap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

async fn round_trip(delimiter: char) {
    let corpus = corpus::default_corpus();
    let server = Dovecot::start(DovecotOptions {
        delimiter,
        special_use: corpus::special_use_options(corpus, delimiter),
        ..DovecotOptions::default()
    })
    .unwrap();
    server.add_user("alice", "secret");

    let t = Instant::now();
    imap::populate(server.port(), "alice", "secret", corpus)
        .await
        .unwrap();
    let populate = t.elapsed();
    let t = Instant::now();
    let snap = imap::snapshot(server.port(), "alice", "secret")
        .await
        .unwrap();
    eprintln!(
        "delimiter {delimiter:?}: populate of {} messages ({} MiB) took {populate:?}, snapshot {:?}",
        corpus::message_count(corpus),
        corpus::total_bytes(corpus) >> 20,
        t.elapsed()
    );

    let expected = imap::corpus_snapshot(corpus);
    let d = imap::diff(&expected, &snap);
    assert!(d.is_empty(), "corpus did not round-trip:\n{}", d.join("\n"));
    // Every expected folder exists under its '/'-joined UTF-8 key.
    for key in [
        "INBOX",
        "Archive/2023",
        "Projects/Q&A [internal]",
        "Réunions",
        "日本語",
    ] {
        assert!(snap.contains_key(key), "{key} missing: {:?}", snap.keys());
    }
    // Special-use attributes come from the generated config.
    let uses = imap::special_uses(server.port(), "alice", "secret")
        .await
        .unwrap();
    assert_eq!(uses.get("Sent Items"), Some(&vec!["\\Sent".to_owned()]));
    assert_eq!(uses.get("Archive"), Some(&vec!["\\Archive".to_owned()]));
    // A second snapshot sees the same thing: EXAMINE changed nothing (\Seen, \Recent).
    let again = imap::snapshot(server.port(), "alice", "secret")
        .await
        .unwrap();
    assert_eq!(snap, again);
    // Dovecot does not keep zone offsets: the strict diff notices (documented).
    assert!(!imap::diff_strict(&expected, &snap).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_round_trips_on_slash_server() {
    round_trip('/').await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_round_trips_on_dot_server() {
    round_trip('.').await;
}

#[test]
fn corpus_has_the_awkward_cases() {
    let corpus = corpus::default_corpus();
    let msgs: Vec<&Msg> = corpus.iter().flat_map(|f| &f.messages).collect();
    let n = msgs.len();
    assert_eq!(n, 2000);
    assert_eq!(corpus.len(), 14);
    let pct = |count: usize| count * 100 / n;

    let ids: Vec<Option<Vec<u8>>> = msgs
        .iter()
        .map(|m| corpus::header(&m.raw, "message-id"))
        .collect();
    let no_id = ids.iter().filter(|i| i.is_none()).count();
    let mut by_id: HashMap<&[u8], usize> = HashMap::new();
    for id in ids.iter().flatten() {
        *by_id.entry(id.as_slice()).or_default() += 1;
    }
    let in_dup_groups: usize = by_id.values().filter(|&&c| c > 1).sum();
    let eight_bit = msgs
        .iter()
        .filter(|m| m.raw.iter().any(|b| *b >= 0x80))
        .count();
    let not_utf8 = msgs
        .iter()
        .filter(|m| std::str::from_utf8(&m.raw).is_err())
        .count();
    let big = msgs.iter().filter(|m| m.raw.len() >= 1 << 20).count();
    let long_lines = msgs
        .iter()
        .filter(|m| m.raw.split(|b| *b == b'\n').any(|l| l.len() > 1000))
        .count();
    let multipart = msgs
        .iter()
        .filter(|m| m.raw.windows(20).any(|w| w == b"Content-Disposition:"))
        .count();
    let html = msgs
        .iter()
        .filter(|m| m.raw.windows(9).any(|w| w == b"text/html"))
        .count();
    eprintln!(
        "no id {no_id}, dup-id msgs {in_dup_groups}, 8bit {eight_bit} (non-UTF-8 {not_utf8}), \
         big {big}, long lines {long_lines}, attachments {multipart}, html {html}"
    );
    assert!(pct(no_id) >= 2, "no Message-ID: {no_id}");
    assert!(
        pct(in_dup_groups) >= 2,
        "shared Message-ID: {in_dup_groups}"
    );
    assert!(
        pct(eight_bit) >= 5 && pct(not_utf8) >= 2,
        "8-bit: {eight_bit}/{not_utf8}"
    );
    assert!(pct(long_lines) >= 2, "long lines: {long_lines}");
    assert!(pct(multipart) >= 5 && pct(html) >= 5);
    assert_eq!(big, 3, "big messages");
    assert!(msgs.iter().all(|m| m.raw.len() <= 4 << 20));
    assert!(msgs.iter().all(|m| !m.raw.contains(&0)));
    // INBOX is the largest folder, every folder has mail.
    let inbox = corpus.iter().find(|f| f.path == ["INBOX"]).unwrap();
    assert!(
        corpus
            .iter()
            .all(|f| f.messages.len() <= inbox.messages.len())
    );
    assert!(corpus.iter().all(|f| !f.messages.is_empty()));
    // Sizes: median near 8 KiB.
    let mut sizes: Vec<usize> = msgs.iter().map(|m| m.raw.len()).collect();
    sizes.sort_unstable();
    let median = sizes[n / 2];
    assert!((5_000..13_000).contains(&median), "median {median}");
    // Flags and internal dates.
    for flag in [
        "\\Seen",
        "\\Answered",
        "\\Flagged",
        "\\Draft",
        "\\Deleted",
        "$Forwarded",
        "$Label1",
        "Work",
    ] {
        assert!(
            msgs.iter().any(|m| m.flags.iter().any(|f| f == flag)),
            "{flag}"
        );
    }
    let offsets: std::collections::BTreeSet<i32> = msgs
        .iter()
        .map(|m| imap::parse_internal_date(&m.internal_date).unwrap().1)
        .collect();
    assert!(offsets.len() >= 5, "{offsets:?}");
    // Deterministic.
    assert_eq!(corpus, corpus::generate(&CorpusSpec::default()).as_slice());
}

fn tls_connector(ca: &std::path::Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls_instance_accepts_the_throwaway_ca() {
    let server = Dovecot::start(DovecotOptions {
        tls: true,
        ..DovecotOptions::default()
    })
    .unwrap();
    server.add_user("bob", "pw");
    let connector = tls_connector(&server.ca_pem().unwrap());

    // Implicit TLS, by name and by IP address.
    for name in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect(("127.0.0.1", server.tls_port().unwrap()))
            .await
            .unwrap();
        let tls = connector
            .connect(ServerName::try_from(name).unwrap().to_owned(), tcp)
            .await
            .unwrap();
        let mut lines = BufReader::new(tls).lines();
        let greeting = lines.next_line().await.unwrap().unwrap();
        assert!(greeting.starts_with("* OK"), "{greeting}");
    }

    // STARTTLS on the plain port.
    let tcp = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let mut reader = BufReader::new(tcp);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.contains("STARTTLS"), "{line}");
    reader.get_mut().write_all(b"a STARTTLS\r\n").await.unwrap();
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("a OK"), "{line}");
    let tls = connector
        .connect(
            ServerName::try_from("localhost").unwrap(),
            reader.into_inner(),
        )
        .await
        .unwrap();
    let mut reader = BufReader::new(tls);
    reader
        .get_mut()
        .write_all(b"b LOGIN bob pw\r\n")
        .await
        .unwrap();
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("b OK"), "{line}");

    // A plain server has no TLS port and no CA.
    let plain = Dovecot::start(DovecotOptions::default()).unwrap();
    assert!(plain.tls_port().is_none() && plain.ca_pem().is_none());
}

#[tokio::test]
async fn max_mail_size_refuses_oversize_append() {
    let server = Dovecot::start(DovecotOptions {
        max_mail_size: Some(1 << 20),
        capability: Some("IMAP4rev1".into()),
        ..DovecotOptions::default()
    })
    .unwrap();
    server.add_user("carol", "pw");
    server.add_user("dave", "pw2"); // added right after: both must work at once

    let small = Msg {
        raw: b"Subject: small\r\n\r\nhello\r\n".to_vec(),
        flags: vec!["\\Seen".into()],
        internal_date: " 1-Feb-2020 10:00:00 +0100".into(),
    };
    imap::append(server.port(), "carol", "pw", "INBOX", &small)
        .await
        .unwrap();
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < (1 << 20) + 4096 {
        big.extend_from_slice(&[b'x'; 998]);
        big.extend_from_slice(b"\r\n");
    }
    let big = Msg {
        raw: big,
        flags: vec![],
        internal_date: " 1-Feb-2020 10:00:00 +0100".into(),
    };
    let err = imap::append(server.port(), "carol", "pw", "INBOX", &big)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("larger"), "{err:#}");

    let snap = imap::snapshot(server.port(), "carol", "pw").await.unwrap();
    assert_eq!(snap["INBOX"].len(), 1);
    assert_eq!(snap["INBOX"][0].subject, "small");
    assert!(imap::snapshot(server.port(), "dave", "pw2").await.is_ok());

    // The capability override is what a client sees after login.
    let mut s = imap::login(server.port(), "dave", "pw2").await.unwrap();
    let caps = s.capabilities().await.unwrap();
    assert!(caps.has_str("IMAP4rev1") && !caps.has_str("MULTIAPPEND"));
    // set_flags works and snapshot reflects it.
    imap::set_flags(
        server.port(),
        "carol",
        "pw",
        "INBOX",
        snap["INBOX"][0].uid,
        &["\\Flagged"],
    )
    .await
    .unwrap();
    let snap = imap::snapshot(server.port(), "carol", "pw").await.unwrap();
    assert_eq!(snap["INBOX"][0].flags, ["\\Flagged"]);
}

#[test]
fn drop_leaves_no_process_behind() {
    let server = Dovecot::start(DovecotOptions::default()).unwrap();
    let conf = server.dir().join("dovecot.conf");
    let dir = server.dir().to_path_buf();
    let title = format!("dovecot-{}/", server.instance_name());
    drop(server);
    let out = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&out.stdout);
    assert!(
        !ps.contains(conf.to_str().unwrap()) && !ps.contains(&title),
        "dovecot still running:\n{ps}"
    );
    assert!(!dir.exists(), "instance dir left behind");
}
