//! The cutover: `dns check` against a real authoritative DNS server on loopback serving
//! test zones, `dns watch` across two nameservers updated one after the other, and the
//! dated `plan`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_tests::dns::{DnsServer, Rec, Zone, servfail_server, silent_server};
use mailshift_tests::mailshift_bin;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEY_2048: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA4pF70cyU1vsIKUjkj4eAIH3nAsO6jwgyiZDkZgj7+zVL4okmqwjJtV6CRxCLpFRGWbWMc4lzAxLfu6+Qjrz4FHV2ZASxPvPobo+xj8TxtdQ4mASOVEXXSbTf6tyH0Zzu0SuWBTsATwCpBj5Ds/gJiQXnjXITmFXDDtu5kUp+LejJSNf+H7MjgkJfTE6YZqzRRq2/hDQRTwWBRwdrGYLdN2I5epmf8wzNwWVVgVbnLaQn/QUsOfMKAMERtwYtVMrmDnv3WeZqXurCCoINvfW+jiQnt3O3lV4DpcViW7joOVvdzPIkkOuewAedlmge4m7paWJ+Pq03B9r5PaibO9MtxQIDAQAB";

/// A domain ready for the switch to mta.new.example; `tweak` breaks one thing.
fn domain(name: &str, mx_ttl: u32, tweak: impl FnOnce(Zone) -> Zone) -> Zone {
    let z = Zone::new(name)
        .with("@", 3600, Rec::Ns("ns1".into()))
        .with("ns1", 3600, Rec::A(Ipv4Addr::LOCALHOST))
        .mx(mx_ttl, 10, "mta.new.example.");
    tweak(z)
}

fn ready(z: Zone) -> Zone {
    z.txt("@", "v=spf1 include:spf.new.example ~all")
        .txt("@", "google-site-verification=not-spf")
        .txt("sel1._domainkey", &format!("v=DKIM1; k=rsa; p={KEY_2048}"))
        .txt(
            "_dmarc",
            "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.net",
        )
}

fn zones() -> Vec<Zone> {
    vec![
        Zone::new("new.example")
            .txt("spf", "v=spf1 ip4:192.0.2.0/24 -all")
            .with("mta", 300, Rec::A(Ipv4Addr::new(192, 0, 2, 25))),
        domain("ready.test", 300, ready),
        domain("highttl.test", 3600, ready),
        domain("twospf.test", 300, |z| ready(z).txt("@", "v=spf1 mx -all")),
        domain("nodkim.test", 300, |z| {
            z.txt("@", "v=spf1 include:spf.new.example ~all")
                .txt("_dmarc", "v=DMARC1; p=none")
        }),
        domain("baddmarc.test", 300, |z| {
            z.txt("@", "v=spf1 include:spf.new.example ~all")
                .txt("sel1._domainkey", &format!("v=DKIM1; k=rsa; p={KEY_2048}"))
                .txt("_dmarc", "v=DMARC1; p=sometimes; rua=nowhere")
        }),
        Zone::new("nomx.test")
            .txt("@", "v=spf1 include:spf.new.example ~all")
            .txt("sel1._domainkey", &format!("v=DKIM1; k=rsa; p={KEY_2048}"))
            .txt("_dmarc", "v=DMARC1; p=reject"),
        domain("baddkim.test", 300, |z| {
            z.txt("@", "v=spf1 include:spf.new.example ~all")
                .txt("sel1._domainkey", "v=DKIM1; k=rsa; p=this-is-not-a-key")
                .txt("_dmarc", "v=DMARC1; p=none")
        }),
        domain("plusall.test", 300, |z| {
            z.txt("@", "v=spf1 include:spf.new.example +all")
                .txt("sel1._domainkey", &format!("v=DKIM1; k=rsa; p={KEY_2048}"))
                .txt("_dmarc", "v=DMARC1; p=none")
        }),
    ]
}

fn run(args: &[&str]) -> Output {
    Command::new(mailshift_bin())
        .args(args)
        .output()
        .expect("run mailshift")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `dns check DOMAIN` against the loopback server (as authoritative and as resolver),
/// as JSON.
fn check(ns: &str, domain: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut args = vec![
        "dns",
        "check",
        domain,
        "--new-mx",
        "mta.new.example",
        "--old-mx",
        "mx.old.example",
        "--spf-include",
        "spf.new.example",
        "--dkim-selector",
        "sel1",
        "--authoritative",
        ns,
        "--nameserver",
        ns,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    mailshift_tests::schema::validate_as("mailshift/dns-check/v1", &json);
    (out, json)
}

/// The findings of one check (`spf`, `dkim:sel1`, ...) as (level, message).
fn findings(json: &serde_json::Value, check: &str) -> Vec<(String, String)> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .map(|f| {
            (
                f["level"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has(json: &serde_json::Value, check: &str, level: &str, needle: &str) -> bool {
    findings(json, check)
        .iter()
        .any(|(l, m)| l == level && m.contains(needle))
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_check_reports_each_test_domain_correctly() {
    let server = DnsServer::start(&zones()).await;
    let ns = server.addr().to_string();
    let ns = ns.as_str();

    let (out, j) = check(ns, "ready.test", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(j["active"], "new", "{j:#}");
    assert_eq!(j["level"], "ok", "{j:#}");
    assert!(has(&j, "spf", "ok", "authorises the new provider"), "{j:#}");
    assert!(has(&j, "dkim:sel1", "ok", "RSA 2048 bits"), "{j:#}");
    assert!(has(&j, "dmarc", "ok", "quarantine"), "{j:#}");
    assert!(
        has(&j, "dmarc", "ok", "reports to dmarc@example.net"),
        "{j:#}"
    );

    // TTL 3600: a warning a week before the switch, an error the day before.
    let week = (chrono::Utc::now() + chrono::Duration::days(7)).to_rfc3339();
    let (out, j) = check(ns, "highttl.test", &["--switch-at", &week]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(has(&j, "ttl", "warn", "lower it to 300 now"), "{j:#}");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (out, j) = check(ns, "highttl.test", &["--switch-at", &tomorrow]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(has(&j, "ttl", "error", "less than 48 h away"), "{j:#}");

    let (out, j) = check(ns, "twospf.test", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(has(&j, "spf", "error", "2 SPF records"), "{j:#}");

    let (out, j) = check(ns, "nodkim.test", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        has(
            &j,
            "dkim:sel1",
            "error",
            "no DKIM key published at sel1._domainkey.nodkim.test"
        ),
        "{j:#}"
    );
    assert!(has(&j, "dmarc", "ok", "policy none"), "{j:#}");

    let (out, j) = check(ns, "baddmarc.test", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        findings(&j, "dmarc").iter().any(|(l, _)| l == "error"),
        "{j:#}"
    );
    assert!(has(&j, "dkim:sel1", "ok", "RSA 2048"), "{j:#}");

    let (out, j) = check(ns, "nomx.test", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(has(&j, "mx", "error", "has no MX record"), "{j:#}");

    let (out, j) = check(ns, "plusall.test", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(has(&j, "spf", "error", "+all"), "{j:#}");

    let (out, j) = check(ns, "baddkim.test", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(has(&j, "dkim:sel1", "error", "not a usable key"), "{j:#}");

    // A resolver that lies: another server answering for ready.test with its own MX.
    let liar = DnsServer::start(&[Zone::new("ready.test").mx(300, 10, "mx.evil.example.")]).await;
    let (out, j) = check(
        ns,
        "ready.test",
        &["--nameserver", &liar.addr().to_string()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        has(
            &j,
            "mx",
            "warn",
            "returns an MX the authoritative servers do not publish"
        ),
        "{j:#}"
    );

    // A resolver that answers SERVFAIL: a warning naming it; the check still completes.
    let broken = servfail_server().to_string();
    let (out, j) = check(ns, "ready.test", &["--nameserver", &broken]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(has(&j, "mx", "warn", "SERVFAIL"), "{j:#}");

    // A name that does not exist in a served zone.
    let (out, j) = check(ns, "nothere.ready.test", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(has(&j, "mx", "error", "NXDOMAIN"), "{j:#}");

    // A nameserver that never answers: a finding within the timeouts, not a hang.
    let (_silent, dead) = silent_server();
    let started = Instant::now();
    let out = run(&[
        "dns",
        "check",
        "ready.test",
        "--new-mx",
        "mta.new.example",
        "--authoritative",
        &dead.to_string(),
        "--authoritative",
        ns,
        "--nameserver",
        ns,
        "--dns-timeout",
        "1",
    ]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no answer in time"), "{}", text(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // Human output names findings with their fix.
    assert!(stdout.contains("fix: "), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_watch_follows_the_switch_across_two_nameservers() {
    let zone = || {
        vec![
            Zone::new("switch.test")
                .with("@", 3600, Rec::Ns("ns1".into()))
                .mx(1, 10, "mx.old.example."),
        ]
    };
    let a = DnsServer::start(&zone()).await;
    let b = DnsServer::start(&zone()).await;
    let mut child = Command::new(mailshift_bin())
        .args([
            "dns",
            "watch",
            "switch.test",
            "--new-mx",
            "mta.new.example",
            "--old-mx",
            "mx.old.example",
            "--authoritative",
            &a.addr().to_string(),
            "--authoritative",
            &b.addr().to_string(),
            "--until-complete",
            "--interval",
            "1s",
            "--timeout",
            "90s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(l.clone());
                if l.contains(needle) {
                    return;
                }
            }
        }
        panic!("no `{needle}` from dns watch; saw:\n{}", seen.join("\n"));
    };
    let mut seen = Vec::new();
    wait_for("  0% (0/2)", &mut seen);
    a.set_mx("switch.test", 1, &[(10, "mta.new.example.")])
        .await;
    wait_for(" 50% (1/2)", &mut seen);
    b.set_mx("switch.test", 1, &[(10, "mta.new.example.")])
        .await;
    wait_for("100% (2/2)", &mut seen);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "dns watch: {status:?}; saw:\n{}",
        seen.join("\n")
    );
}

#[test]
fn plan_prints_the_dated_timeline() {
    let out = run(&[
        "plan",
        "example.test",
        "--switch-at",
        "2026-12-05T06:00+01:00",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<(String, String)> = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["day"].as_str().unwrap().to_string(),
                s["at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("D-7", "2026-11-28T09:00:00+01:00"),
        ("D-5", "2026-11-30T09:00:00+01:00"),
        ("D-3", "2026-12-02T09:00:00+01:00"),
        ("D-3..D-1", "2026-12-02T13:00:00+01:00"),
        ("D-1", "2026-12-04T09:00:00+01:00"),
        ("D-Day", "2026-12-05T06:00:00+01:00"),
        ("D..D+3", "2026-12-05T06:00:00+01:00"),
        ("D+3", "2026-12-08T06:00:00+01:00"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(steps, want);
    assert_eq!(p["ttl_deadline"], "2026-12-03T06:00:00+01:00");
    assert_eq!(p["warnings"].as_array().unwrap().len(), 0);

    // Month-end, in working hours: warned, with a better slot.
    let out = run(&[
        "plan",
        "example.test",
        "--switch-at",
        "2026-11-30T14:00+01:00",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("warning: the switch at 2026-11-30 14:00 +01:00 falls in the month-end period"),
        "{s}"
    );
    assert!(s.contains("suggested: 2026-12-02 06:00 +01:00"), "{s}");
    assert!(s.contains("working hours"), "{s}");

    // Bad input says what to write.
    let out = run(&["plan", "example.test", "--switch-at", "next friday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2026-12-05T06:00+01:00"),
        "{}",
        text(&out)
    );
}
