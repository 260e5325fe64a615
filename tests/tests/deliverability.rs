//! Deliverability: `test-send` through a real submission stack (Postfix + OpenDKIM +
//! Dovecot over LMTP, DNS from a loopback authoritative server), and the `dns check`
//! findings that can silently break the switch: MTA-STS policies served over HTTPS with a
//! private CA, DANE TLSA on the old MX only, client discovery records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use mailshift_tests::dns::{DnsServer, Rec, Zone};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::https::{HttpsServer, Route, TestCa};
use mailshift_tests::mailshift_bin;
use mailshift_tests::smtp::{DkimKey, Submission, SubmissionOptions};
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ALICE_PW: &str = "Alice-S3cret-4711";
const HELD_PW: &str = "Held-S3cret-0815";

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Findings of one check as (level, message, fix).
fn findings(j: &serde_json::Value, check: &str) -> Vec<(String, String, String)> {
    j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .map(|f| {
            (
                f["level"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
                f["fix"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn has(j: &serde_json::Value, check: &str, level: &str, needle: &str) -> bool {
    findings(j, check)
        .iter()
        .any(|(l, m, _)| l == level && m.contains(needle))
}

/// No secret in anything the command printed, in clear or as an AUTH PLAIN blob.
fn assert_no_secret(o: &Output, user: &str, secrets: &[&str]) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for s in secrets {
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{s}").as_bytes());
        assert!(!all.contains(s), "secret in the output:\n{}", text(o));
        assert!(!all.contains(&plain), "AUTH PLAIN blob in the output");
    }
}

/// A JSON value with no `{"Ok": ..}`/`{"Err": ..}` shapes (plain data).
fn assert_plain(v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            assert!(
                !m.contains_key("Ok") && !m.contains_key("Err"),
                "Rust enum shape in JSON: {v}"
            );
            m.values().for_each(assert_plain);
        }
        serde_json::Value::Array(a) => a.iter().for_each(assert_plain),
        _ => {}
    }
}

fn zones(dkim: &DkimKey) -> Vec<Zone> {
    vec![
        // The parent of every test domain, so DMARC's tree walk gets NXDOMAIN for
        // `_dmarc.test` as it would for `_dmarc.com`.
        Zone::new("test"),
        Zone::new("new.test").with("mta", 300, Rec::A(Ipv4Addr::LOCALHOST)),
        Zone::new("deliver.test")
            .mx(300, 10, "mta.new.test.")
            .txt("@", "v=spf1 ip4:127.0.0.1 -all")
            .txt("sel1._domainkey", &dkim.record)
            .txt(
                "_dmarc",
                "v=DMARC1; p=reject; rua=mailto:dmarc@deliver.test",
            ),
        Zone::new("other.test")
            .mx(300, 10, "mta.new.test.")
            .txt("@", "v=spf1 ip4:127.0.0.1 -all")
            .txt("_dmarc", "v=DMARC1; p=quarantine"),
    ]
}

struct Stack {
    dns: DnsServer,
    dovecot: Dovecot,
    submission: Submission,
    _keys: tempfile::TempDir,
    dkim: DkimKey,
}

impl Stack {
    async fn start() -> Stack {
        Self::start_with(None).await
    }

    /// With `oauth`: the Dovecot also accepts OAuth 2.0 tokens checked by that
    /// introspection endpoint (for IMAP, and for submission through Postfix's SASL).
    async fn start_with(oauth: Option<String>) -> Stack {
        let keys = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            keys.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let dkim = DkimKey::generate(&keys.path().join("k1"), "deliver.test", "sel1").unwrap();
        let dns = DnsServer::start(&zones(&dkim)).await;
        let dovecot = Dovecot::start(DovecotOptions {
            lmtp: true,
            oauth2_introspection_url: oauth,
            ..DovecotOptions::default()
        })
        .unwrap();
        dovecot.add_user("alice@deliver.test", ALICE_PW);
        dovecot.add_user("held@deliver.test", HELD_PW);
        let submission = Submission::start(
            &dovecot,
            SubmissionOptions {
                domains: vec!["deliver.test".into(), "other.test".into()],
                dkim: Some(dkim.clone()),
                hold: vec!["held@deliver.test".into()],
                ..SubmissionOptions::default()
            },
        )
        .unwrap();
        Stack {
            dns,
            dovecot,
            submission,
            _keys: keys,
            dkim,
        }
    }

    /// `test-send` as alice (smtps, or STARTTLS with `starttls`), probe mailbox alice's
    /// INBOX unless `extra` says otherwise.
    fn test_send(
        &self,
        domain: &str,
        starttls: bool,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Output {
        let smtp = if starttls {
            format!(
                "smtp://alice@deliver.test@127.0.0.1:{}",
                self.submission.submission_port()
            )
        } else {
            format!(
                "smtps://alice@deliver.test@127.0.0.1:{}",
                self.submission.smtps_port()
            )
        };
        let imap = format!(
            "imap://alice@deliver.test@127.0.0.1:{}",
            self.dovecot.port()
        );
        let ns = self.dns.addr().to_string();
        let ca = self.submission.ca_pem();
        let mut args = vec![
            "test-send",
            domain,
            "--smtp",
            &smtp,
            "--nameserver",
            &ns,
            "--ca-file",
            ca.to_str().unwrap(),
            "--allow-plaintext",
            "--json",
        ];
        if !extra.contains(&"--imap") {
            args.extend(["--imap", &imap]);
        }
        if !extra.contains(&"--timeout") {
            args.extend(["--timeout", "60s"]);
        }
        args.extend_from_slice(extra);
        let mut cmd = Command::new(mailshift_bin());
        cmd.args(&args)
            .env("MAILSHIFT_SMTP_PASSWORD", ALICE_PW)
            .env_remove("MAILSHIFT_IMAP_PASSWORD")
            .env("RUST_LOG", "trace");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run mailshift test-send")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_send_passes_on_a_correct_setup_and_names_each_broken_piece() {
    let s = Stack::start().await;

    // The correct setup: signed, aligned, authorised, delivered.
    let out = s.test_send("deliver.test", false, &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j = json(&out);
    assert_plain(&j);
    assert_eq!(j["level"], "ok", "{j:#}");
    assert!(has(&j, "delivery", "ok", "arrived in INBOX"), "{j:#}");
    assert!(
        has(
            &j,
            "dkim",
            "ok",
            "d=deliver.test s=sel1 is valid and aligned"
        ),
        "{j:#}"
    );
    assert!(has(&j, "spf", "ok", "passes for 127.0.0.1"), "{j:#}");
    assert!(
        has(&j, "dmarc", "ok", "DMARC passes for deliver.test"),
        "{j:#}"
    );
    assert!(j["timings"]["submit_ms"].as_u64().is_some(), "{j:#}");
    assert!(j["timings"]["delivery_ms"].as_u64().is_some(), "{j:#}");
    assert_eq!(j["folder"], "INBOX");
    assert!(
        j["queue_id"].as_str().is_some_and(|q| !q.is_empty()),
        "{j:#}"
    );
    assert_no_secret(&out, "alice@deliver.test", &[ALICE_PW]);

    // Human output: the same findings with their fixes, the timings, no secret.
    let mut args: Vec<String> = Vec::new();
    let smtp = format!(
        "smtp://alice@deliver.test@127.0.0.1:{}",
        s.submission.submission_port()
    );
    let imap = format!("imap://alice@deliver.test@127.0.0.1:{}", s.dovecot.port());
    for a in [
        "test-send",
        "deliver.test",
        "--smtp",
        &smtp,
        "--imap",
        &imap,
        "--allow-plaintext",
        "--nameserver",
        &s.dns.addr().to_string(),
        "--ca-file",
        s.submission.ca_pem().to_str().unwrap(),
    ] {
        args.push(a.to_string());
    }
    let out = Command::new(mailshift_bin())
        .args(&args)
        .env("MAILSHIFT_SMTP_PASSWORD", ALICE_PW)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("timings     submission "), "{}", text(&out));
    assert!(stdout.contains("0 error(s)"), "{}", text(&out));
    assert_no_secret(&out, "alice@deliver.test", &[ALICE_PW]);

    // (a) The DKIM key in DNS is not the signing key.
    let keys = tempfile::tempdir().unwrap();
    let other = DkimKey::generate(keys.path(), "deliver.test", "sel1").unwrap();
    s.dns
        .set_txt("deliver.test", "sel1._domainkey", &[&other.record])
        .await;
    let out = s.test_send("deliver.test", true, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert!(
        has(
            &j,
            "dkim",
            "error",
            "does not verify with the key published at sel1._domainkey.deliver.test"
        ),
        "{j:#}"
    );
    // DMARC still passes on aligned SPF: the error is the key, not the policy.
    assert!(has(&j, "dmarc", "ok", "DMARC passes"), "{j:#}");
    s.dns
        .set_txt("deliver.test", "sel1._domainkey", &[&s.dkim.record])
        .await;

    // (b) SPF does not authorise the sending address.
    s.dns
        .set_txt("deliver.test", "@", &["v=spf1 ip4:192.0.2.1 -all"])
        .await;
    let out = s.test_send("deliver.test", false, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert!(
        has(&j, "spf", "error", "does not authorise 127.0.0.1"),
        "{j:#}"
    );
    assert!(
        findings(&j, "spf")[0]
            .2
            .contains("add the new provider to the SPF record of deliver.test"),
        "{j:#}"
    );
    assert!(has(&j, "dkim", "ok", "valid and aligned"), "{j:#}");
    s.dns
        .set_txt("deliver.test", "@", &["v=spf1 ip4:127.0.0.1 -all"])
        .await;

    // (c) The From domain is not the signing domain: valid but unaligned DKIM.
    let out = s.test_send(
        "other.test",
        false,
        &[],
        &["--from", "alice@other.test", "--to", "alice@deliver.test"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert!(
        has(
            &j,
            "dkim",
            "error",
            "signed by d=deliver.test, which is not aligned with the From domain other.test"
        ),
        "{j:#}"
    );

    // (d) The submission login is refused (the probe mailbox itself is fine).
    let wrong = "Wrong-Passw0rd-9999";
    let out = s.test_send(
        "deliver.test",
        false,
        &[
            ("MAILSHIFT_SMTP_PASSWORD", wrong),
            ("MAILSHIFT_IMAP_PASSWORD", ALICE_PW),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert!(
        has(
            &j,
            "submission",
            "error",
            "the submission login was refused"
        ),
        "{j:#}"
    );
    assert!(
        has(
            &j,
            "submission",
            "error",
            "login as alice@deliver.test refused"
        ),
        "{j:#}"
    );
    assert_no_secret(&out, "alice@deliver.test", &[wrong, ALICE_PW]);
    // The same wrong password for both (one mailbox): both refusals are named.
    let out = s.test_send(
        "deliver.test",
        false,
        &[("MAILSHIFT_SMTP_PASSWORD", wrong)],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert!(has(&j, "imap", "error", "alice@deliver.test"), "{j:#}");
    assert!(
        has(
            &j,
            "submission",
            "error",
            "the submission login was refused"
        ),
        "{j:#}"
    );
    assert_no_secret(&out, "alice@deliver.test", &[wrong]);

    // (e) The probe never arrives (held in the queue): an error within the timeout.
    let imap_held = format!("imap://held@deliver.test@127.0.0.1:{}", s.dovecot.port());
    let started = Instant::now();
    let out = s.test_send(
        "deliver.test",
        false,
        &[("MAILSHIFT_IMAP_PASSWORD", HELD_PW)],
        &[
            "--to",
            "held@deliver.test",
            "--imap",
            &imap_held,
            "--timeout",
            "4s",
        ],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert!(
        has(
            &j,
            "delivery",
            "error",
            "did not arrive in held@deliver.test within 4.0 s"
        ),
        "{j:#}"
    );
    assert!(findings(&j, "delivery")[0].2.contains("queue id"), "{j:#}");
    assert!(j["timings"]["delivery_ms"].is_null(), "{j:#}");
    assert!(took < Duration::from_secs(40), "took {took:?}");
    assert_no_secret(&out, "held@deliver.test", &[HELD_PW, ALICE_PW]);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_send_logs_in_with_an_oauth_token_and_never_shows_it() {
    let oauth = mailshift_tests::oauth::OAuthServer::start().await;
    let s = Stack::start_with(Some(oauth.url())).await;
    let token = oauth.issue("alice@deliver.test", Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let out = s.test_send(
        "deliver.test",
        false,
        &[("MAILSHIFT_SMTP_PASSWORD", "")],
        &["--smtp-oauth-token-file", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j = json(&out);
    assert!(has(&j, "delivery", "ok", "arrived in INBOX"), "{j:#}");
    assert!(
        oauth.requests() >= 2,
        "submission and IMAP logins asked the introspection endpoint"
    );
    assert_no_secret(&out, "alice@deliver.test", &[&token]);

    // A revoked token: the login is refused, and the token is still not shown.
    oauth.revoke(&token);
    let out = s.test_send(
        "deliver.test",
        false,
        &[],
        &["--smtp-oauth-token-file", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert!(has(&j, "submission", "error", "refused"), "{j:#}");
    assert_no_secret(&out, "alice@deliver.test", &[&token]);
}

/// `dns check` of `domain` against the loopback server, new MX mta.new.test.
fn dns_check(ns: &str, domain: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut args = vec![
        "dns",
        "check",
        domain,
        "--new-mx",
        "mta.new.test",
        "--old-mx",
        "mx.old.test",
        "--authoritative",
        ns,
        "--nameserver",
        ns,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(mailshift_bin()).args(&args).output().unwrap();
    let j = json(&out);
    assert_plain(&j["findings"]);
    (out, j)
}

const POLICY_OLD: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mx.old.test\r\nmax_age: 604800\r\n";
const POLICY_BOTH: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mx.old.test\r\nmx: *.new.test\r\nmax_age: 86400\r\n";

fn sts_zone(name: &str) -> Zone {
    Zone::new(name)
        .mx(300, 10, "mx.old.test.")
        .txt("@", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc", "v=DMARC1; p=none")
        .txt("_mta-sts", "v=STSv1; id=20261201T000000")
        .with("mta-sts", 300, Rec::A(Ipv4Addr::LOCALHOST))
}

#[tokio::test(flavor = "multi_thread")]
async fn mta_sts_policies_are_fetched_over_https_and_judged_against_the_new_mx() {
    let ca = TestCa::new().unwrap();
    let dns = DnsServer::start(&[
        sts_zone("sts.test").txt("_smtp._tls", "v=TLSRPTv1; rua=mailto:tls@sts.test"),
        sts_zone("sts-ok.test"),
        sts_zone("sts-dead.test"),
    ])
    .await;
    let ns = dns.addr().to_string();
    let ca_pem = ca.ca_pem();
    let ca_file = ca_pem.to_str().unwrap();
    let path = "/.well-known/mta-sts.txt";

    // Enforce without the new MX: an error with the date the policy must change by.
    let old = HttpsServer::start(
        &ca,
        &["mta-sts.sts.test"],
        vec![Route::text(path, POLICY_OLD)],
    )
    .await;
    let port = old.port().to_string();
    let (out, j) = dns_check(
        &ns,
        "sts.test",
        &[
            "--ca-file",
            ca_file,
            "--mta-sts-port",
            &port,
            "--switch-at",
            "2099-12-05T06:00+01:00",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        has(
            &j,
            "mta-sts",
            "error",
            "does not list the new MX mta.new.test"
        ),
        "{j:#}"
    );
    let fix = &findings(&j, "mta-sts")[0].2;
    assert!(fix.contains("add `mx: mta.new.test`"), "{fix}");
    assert!(fix.contains("by 2099-11-28 06:00 +01:00"), "{fix}");
    assert!(has(&j, "tls-rpt", "ok", "mailto:tls@sts.test"), "{j:#}");
    assert_eq!(old.requests(), 1, "fetched once");

    // The same policy without trusting the private CA: not fetched, a warning.
    let (out, j) = dns_check(&ns, "sts.test", &["--mta-sts-port", &port]);
    assert!(
        has(&j, "mta-sts", "warn", "cannot be fetched"),
        "{}",
        text(&out)
    );

    // A policy that lists the new MX (by wildcard): ok.
    let both = HttpsServer::start(
        &ca,
        &["mta-sts.sts-ok.test"],
        vec![Route::text(path, POLICY_BOTH)],
    )
    .await;
    let (out, j) = dns_check(
        &ns,
        "sts-ok.test",
        &[
            "--ca-file",
            ca_file,
            "--mta-sts-port",
            &both.port().to_string(),
        ],
    );
    assert!(
        has(
            &j,
            "mta-sts",
            "ok",
            "lists the new MX mta.new.test (mx: *.new.test)"
        ),
        "{}",
        text(&out)
    );
    assert!(has(&j, "tls-rpt", "ok", "no TLS-RPT record"), "{j:#}");

    // A TXT record whose policy host never answers: a warning within the timeouts.
    let dead = HttpsServer::hanging().await;
    let started = Instant::now();
    let (out, j) = dns_check(
        &ns,
        "sts-dead.test",
        &[
            "--ca-file",
            ca_file,
            "--mta-sts-port",
            &dead.port().to_string(),
            "--https-timeout",
            "2",
        ],
    );
    let took = started.elapsed();
    assert!(
        has(&j, "mta-sts", "warn", "cannot be fetched"),
        "{}",
        text(&out)
    );
    assert!(
        findings(&j, "mta-sts").iter().all(|(l, _, _)| l != "error"),
        "{j:#}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(dead.requests() >= 1, "the policy host was contacted");
}

#[tokio::test(flavor = "multi_thread")]
async fn dane_on_the_old_mx_only_and_stale_discovery_records_are_warnings() {
    let hash = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1";
    let dns = DnsServer::start(&[
        Zone::new("old.test")
            .with("mx", 300, Rec::A(Ipv4Addr::new(127, 0, 0, 2)))
            .with("_25._tcp.mx", 300, Rec::Tlsa(3, 1, 1, hash.into()))
            .with("imap", 300, Rec::A(Ipv4Addr::new(127, 0, 0, 3))),
        Zone::new("new.test")
            .with("mta", 300, Rec::A(Ipv4Addr::LOCALHOST))
            .with("imap", 300, Rec::A(Ipv4Addr::new(127, 0, 0, 4)))
            .with("autoconfig", 300, Rec::A(Ipv4Addr::new(127, 0, 0, 4))),
        Zone::new("dane.test")
            .mx(300, 10, "mx.old.test.")
            .txt("@", "v=spf1 ip4:127.0.0.1 -all")
            .with(
                "_imaps._tcp",
                300,
                Rec::Srv(0, 1, 993, "imap.old.test.".into()),
            )
            .with("_submission._tcp", 300, Rec::Srv(0, 0, 0, ".".into()))
            .with("autoconfig", 300, Rec::Cname("autoconfig.new.test.".into()))
            .with("autodiscover", 300, Rec::A(Ipv4Addr::new(127, 0, 0, 3))),
    ])
    .await;
    let ns = dns.addr().to_string();
    let (out, j) = dns_check(
        &ns,
        "dane.test",
        &[
            "--old-imap-host",
            "imap.old.test",
            "--new-imap-host",
            "imap.new.test",
        ],
    );
    assert!(
        has(
            &j,
            "dane",
            "warn",
            "the old MX has DANE TLSA records (_25._tcp.mx.old.test) but the new MX mta.new.test has none"
        ),
        "{}",
        text(&out)
    );
    assert!(
        has(
            &j,
            "discovery",
            "warn",
            "_imaps._tcp.dane.test still sends mail clients to the old provider (imap.old.test:993)"
        ),
        "{j:#}"
    );
    let fix = findings(&j, "discovery")
        .into_iter()
        .find(|(_, m, _)| m.contains("_imaps._tcp"))
        .unwrap()
        .2;
    assert_eq!(
        fix,
        "at the switch, publish `_imaps._tcp.dane.test. SRV 0 1 993 imap.new.test.` instead"
    );
    assert!(
        has(
            &j,
            "discovery",
            "ok",
            "_submission._tcp.dane.test says the service is not offered"
        ),
        "{j:#}"
    );
    assert!(
        has(
            &j,
            "discovery",
            "ok",
            "autoconfig.dane.test points at the new provider (autoconfig.new.test)"
        ),
        "{j:#}"
    );
    assert!(
        has(
            &j,
            "discovery",
            "warn",
            "autodiscover.dane.test still points at the old provider (127.0.0.3)"
        ),
        "{j:#}"
    );
    assert!(
        has(&j, "mta-sts", "ok", "publishes no MTA-STS policy"),
        "{j:#}"
    );
}
