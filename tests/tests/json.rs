//! Every command's `--json` document against the schema it names in `docs/json/`:
//! `migrate`, `verify`, `status`, `batch status`, `batch report`, `dns check` and
//! `domain status`, in success and in failure (an unreachable server, a refused login,
//! a usage error, a database that cannot be reached), with every time RFC 3339 UTC.
//! Other tests validate the documents they read as well (the harness's `pair::json`,
//! `Fleet::status`, `dns check`); these make sure each command has its schema checked
//! even where no other test reads its JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_tests::corpus::{CorpusSpec, Msg};
use mailshift_tests::dns::{DnsServer, Rec, Zone};
use mailshift_tests::dovecot::DovecotOptions;
use mailshift_tests::fleet::{dst_pw, new_fleet, servers, skip, src_pw};
use mailshift_tests::pair::*;
use mailshift_tests::{imap, mailshift_bin, schema};
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

/// Every schema file is a valid JSON Schema whose `$id` is the tag documents carry.
#[test]
fn the_published_schemas_are_valid_and_named_by_their_tags() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(schema::dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".schema.json") {
            continue;
        }
        let s = schema::load(&path);
        let id = s["$id"].as_str().unwrap_or_default().to_string();
        assert_eq!(schema::file_for(&id), path, "{name}: $id {id}");
        names.push(name);
    }
    names.sort();
    for command in [
        "migrate",
        "verify",
        "status",
        "batch-status",
        "batch-report",
        "dns-check",
        "domain-status",
        "error",
    ] {
        let want = format!("{command}.v1.schema.json");
        assert!(names.contains(&want), "no {want} in {names:?}");
    }
}

fn verify(pair: &Pair, to_password: &str) -> Output {
    Command::new(mailshift_bin())
        .args(["verify", "--json", "--allow-plaintext", "--from"])
        .arg(pair.src.url("alice"))
        .arg("--to")
        .arg(pair.dst.url("alice"))
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", to_password)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A `date-time` the schema accepts is also UTC here (`Z`): no local offsets.
fn assert_utc(v: &serde_json::Value, path: &str) {
    match v {
        serde_json::Value::String(s) if looks_like_time(s) => {
            assert!(s.ends_with('Z'), "{path} = {s}: not UTC");
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                assert_utc(x, &format!("{path}[{i}]"));
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                assert_utc(x, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

fn looks_like_time(s: &str) -> bool {
    s.len() >= 20
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[10] == b'T'
        && s[..4].bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_and_verify_print_documents_of_their_schemas_in_success_and_failure() {
    let pair = Pair::new(DovecotOptions {
        max_mail_size: Some(1 << 20),
        ..Default::default()
    });
    populate(
        &pair,
        &CorpusSpec {
            seed: 71,
            messages: 60,
            big_attachments: 1,
        },
    )
    .await;

    // A copy with one message refused (too large): folders, failures with their dates.
    let out = pair.migrate(&["--json"]);
    assert_no_secrets(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = schema::check(&out.stdout);
    assert_eq!(doc["schema"], "mailshift/migrate/v1");
    let failures: Vec<_> = doc["folders"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["failures"].as_array().unwrap().iter())
        .collect();
    assert!(!failures.is_empty(), "{doc:#}");
    assert_utc(&doc, "migrate");
    // Durations to the millisecond, not 15 decimals.
    let elapsed = doc["elapsed_secs"].as_f64().unwrap();
    assert!(
        ((elapsed * 1000.0).round() - elapsed * 1000.0).abs() < 1e-6,
        "elapsed_secs = {elapsed}"
    );

    // Verify: a message that arrived since is missing, with its dates.
    imap::append(
        pair.src.port(),
        "alice",
        SRC_PW,
        "INBOX",
        &Msg {
            raw: b"From: a@example.org\r\nTo: b@example.org\r\nDate: Sun, 17 Feb 2019 08:01:21 +0100\r\nSubject: late\r\n\r\nhello\r\n".to_vec(),
            flags: vec![],
            internal_date: "17-Feb-2019 08:01:21 +0100".into(),
        },
    )
    .await
    .unwrap();
    let out = verify(&pair, DST_PW);
    assert_no_secrets(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = schema::check(&out.stdout);
    assert_eq!(doc["schema"], "mailshift/verify/v1");
    let late = doc["folders"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["missing"].as_array().unwrap().iter())
        .find(|m| m["subject"] == "late")
        .unwrap_or_else(|| panic!("the late message is not missing: {doc:#}"));
    assert_eq!(late["internal_date"], "2019-02-17T07:01:21Z", "{late:#}");
    assert_eq!(late["date"], "2019-02-17T07:01:21Z", "{late:#}");
    assert_utc(&doc, "verify");

    // A refused login: still a verify document, with the error, exit 4.
    let out = verify(&pair, "not-the-password");
    assert_no_secrets(&out);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let doc = schema::check(&out.stdout);
    assert_eq!(doc["errors"][0]["kind"], "auth", "{doc:#}");

    // An unreachable destination: a migrate document with the error, exit 3.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Command::new(mailshift_bin())
        .args(["migrate", "--json", "--allow-plaintext", "--from"])
        .arg(pair.src.url("alice"))
        .arg("--to")
        .arg(format!("imap://alice@127.0.0.1:{port}"))
        .arg("--state")
        .arg(pair.state())
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let doc = schema::check(&out.stdout);
    assert_eq!(doc["schema"], "mailshift/migrate/v1");
    assert_eq!(doc["errors"][0]["kind"], "unreachable", "{doc:#}");

    // A usage error, found by the argument parser: the error document, exit 2.
    let out = Command::new(mailshift_bin())
        .args(["migrate", "--json", "--from", "imap://a@127.0.0.1:1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let doc = schema::check(&out.stdout);
    assert_eq!(doc["schema"], "mailshift/error/v1");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("--to"),
        "{doc:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_commands_print_documents_of_their_schemas() {
    if skip() {
        return;
    }
    let (src, dst, _) = servers(&["ivy", "joe"], 25, 300).await;
    let fleet = new_fleet();
    // A domain with its cutover plan (DNS from a loopback authoritative server).
    let dns = DnsServer::start(&[Zone::new("json.test")
        .with("@", 3600, Rec::Ns("ns1".into()))
        .with("ns1", 3600, Rec::A(Ipv4Addr::LOCALHOST))
        .mx(300, 10, "mta.new.example.")
        .txt("@", "v=spf1 include:spf.new.example ~all")
        .txt("_dmarc", "v=DMARC1; p=none")])
    .await;
    let ns = dns.addr().to_string();
    let switch_at = (chrono::Utc::now() + chrono::Duration::days(3))
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339();
    let out = fleet.run(
        &[
            "plan",
            "json.test",
            "--switch-at",
            &switch_at,
            "--new-mx",
            "mta.new.example",
            "--authoritative",
            &ns,
        ],
        &[],
    );
    assert!(out.status.success(), "plan: {}", text(&out));
    for u in ["ivy", "joe"] {
        fleet.add_with(
            &src,
            &dst,
            u,
            &src_pw(u),
            &dst_pw(u),
            &["--batch", "jb", "--domain", "json.test"],
        );
    }
    let out = fleet.run(&["scheduler", "--once", "--queue", &fleet.queue], &[]);
    assert!(out.status.success(), "scheduler: {}", text(&out));
    let out = fleet.run(
        &["worker", "--queue", &fleet.queue, "--exit-when-idle", "3"],
        &[],
    );
    assert!(out.status.success(), "worker: {}", text(&out));

    let doc = |args: &[&str], code: i32| {
        let out = fleet.run(args, &[]);
        assert_no_secrets(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        let d = schema::check(&out.stdout);
        assert_utc(&d, &args.join(" "));
        d
    };
    let status = doc(&["status", "--json"], 0);
    assert_eq!(status["schema"], "mailshift/status/v1");
    assert_eq!(
        status["mailboxes"].as_array().unwrap().len(),
        2,
        "{status:#}"
    );
    assert!(
        status["mailboxes"][0]["last_pass_at"].is_string(),
        "{status:#}"
    );
    assert_eq!(status["domains"][0]["domain"], "json.test", "{status:#}");

    let batches = doc(&["batch", "status", "--json"], 0);
    assert_eq!(batches["schema"], "mailshift/batch-status/v1");
    assert_eq!(batches["batches"][0]["name"], "jb", "{batches:#}");

    let report = doc(&["batch", "report", "jb", "--format", "json"], 0);
    assert_eq!(report["schema"], "mailshift/batch-report/v1");
    assert_eq!(report["in_sync"], true, "{report:#}");

    let domains = doc(&["domain", "status", "--json"], 0);
    assert_eq!(domains["schema"], "mailshift/domain-status/v1");
    let d = &domains["domains"][0];
    assert_eq!(d["mailboxes"], 2, "{domains:#}");
    // Given with +01:00, shown in UTC.
    assert!(d["switch_at"].as_str().unwrap().ends_with('Z'), "{d:#}");

    // `dns check`, the document of a domain with findings (no DKIM selector given).
    let out = Command::new(mailshift_bin())
        .args([
            "dns",
            "check",
            "json.test",
            "--new-mx",
            "mta.new.example",
            "--authoritative",
            &ns,
            "--nameserver",
            &ns,
            "--json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let check = schema::check(&out.stdout);
    assert_eq!(check["schema"], "mailshift/dns-check/v1");
    assert!(check["views"][0]["mx"].is_array(), "{check:#}");

    // The database cannot be reached: the error document, on stdout, naming the fix.
    let out = Command::new(mailshift_bin())
        .args(["status", "--json"])
        .env(
            "MAILSHIFT_DATABASE_URL",
            "postgres://app:Db-Secret-7@127.0.0.1:1/none",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!text(&out).contains("Db-Secret-7"), "{}", text(&out));
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let e = schema::check(&out.stdout);
    assert_eq!(e["schema"], "mailshift/error/v1");
    assert_eq!(
        e["error"]["exit_status"].as_i64(),
        out.status.code().map(i64::from),
        "{e:#}"
    );
}
