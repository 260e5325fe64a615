#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `mailshift clients export` end to end: a batch imported into a fleet database
//! (PostgreSQL), exported as static files, served by a web server that is not ours
//! (Python's http.server), and read by clients that are not ours: Pimalaya's email-lib
//! looks the settings up as Thunderbird does (through the harness's `webproxy`, no DNS),
//! Python parses the autodiscover answer and the profiles, openssl verifies the signed
//! ones. Then the errors: a batch without mailboxes, no submission server, an unknown
//! batch, a foreign directory; and passwords only when asked, never in any output.
//!
//! `MAILSHIFT_TEST_SKIP_FLEET=1` skips them where PostgreSQL is absent.

use mailshift_tests::fleet::{Fleet, new_fleet, skip};
use mailshift_tests::pair::text;
use mailshift_tests::webproxy::WebProxy;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USERS: [&str; 3] = ["alice", "bob", "carol.o'neil"];

fn dst_pw(user: &str) -> String {
    format!("Temp-{}-Pw1", user.len())
}

/// A batch `acme` of `USERS` moving to imaps://imap.new.example:993 as full addresses.
fn import(fleet: &Fleet) {
    let dir = tempfile::tempdir().unwrap();
    let mut csv =
        String::from("source_host,source_user,source_password,dest_host,dest_user,dest_password\n");
    for u in USERS {
        csv.push_str(&format!(
            "old.example,{u},Old-{u}-Pw1,imap.new.example,{u}@acme.example,{}\n",
            dst_pw(u)
        ));
    }
    let path = dir.path().join("acme.csv");
    std::fs::write(&path, csv).unwrap();
    let out = fleet.run(
        &[
            "batch",
            "import",
            path.to_str().unwrap(),
            "--name",
            "acme",
            "--domain",
            "acme.example",
        ],
        &[],
    );
    assert!(out.status.success(), "batch import: {}", text(&out));
}

/// Runs `mailshift clients export ARGS`; checks that no password is in its output.
fn export(fleet: &Fleet, args: &[&str]) -> std::process::Output {
    let mut all = vec!["clients", "export"];
    all.extend_from_slice(args);
    let out = fleet.run(&all, &[]);
    let t = text(&out);
    for u in USERS {
        assert!(
            !t.contains(&dst_pw(u)) && !t.contains(&format!("Old-{u}-Pw1")),
            "{t}"
        );
    }
    out
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap();
                out.push((p, b));
            }
        }
    }
    out.sort();
    out
}

fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const PLIST_JSON: &str = "import json, plistlib, sys\nwith open(sys.argv[1], 'rb') as f:\n    print(json.dumps(plistlib.load(f)))";

/// Python's ElementTree reads Outlook's answer: the Protocol entries as dicts.
const AUTODISCOVER_JSON: &str = r#"
import json, sys, xml.etree.ElementTree as ET
ns = {'r': 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'}
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == '{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}Autodiscover', root.tag
acct = root.find('r:Response/r:Account', ns)
out = {'type': acct.find('r:AccountType', ns).text, 'action': acct.find('r:Action', ns).text,
       'protocols': [{c.tag.split('}')[1]: c.text for c in p} for p in acct.findall('r:Protocol', ns)]}
print(json.dumps(out))
"#;

/// A web server that is not ours on `dir`, stopped when dropped.
struct StaticServer {
    child: std::process::Child,
    port: u16,
}

impl StaticServer {
    fn start(dir: &Path) -> StaticServer {
        let port = mailshift_tests::fleet::free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "python's http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        StaticServer { child, port }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test installs it)")
}

/// A throwaway CA and a signing certificate it issued, in `dir`.
fn signing_ca(dir: &Path) {
    std::fs::write(
        dir.join("ext.cnf"),
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection\n",
    )
    .unwrap();
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mailshift test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "signer.key",
            "-out",
            "signer.csr",
            "-subj",
            "/CN=Acme IT/O=Acme",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            "signer.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "signer.pem",
        ],
    ] {
        let out = openssl(dir, &args);
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_kit_is_discovered_by_clients_that_are_not_ours() {
    if skip() {
        return;
    }
    let fleet = new_fleet();
    import(&fleet);
    let work = tempfile::tempdir().unwrap();
    signing_ca(work.path());
    let kit = work.path().join("kit");
    let signer = |f: &str| work.path().join(f).to_str().unwrap().to_string();
    let out = export(
        &fleet,
        &[
            "--batch",
            "acme",
            kit.to_str().unwrap(),
            "--smtp-host",
            "smtp.new.example",
            "--display-name",
            "Acme Mail",
            "--organization",
            "Acme & Co",
            "--sign-cert",
            &signer("signer.pem"),
            "--sign-key",
            &signer("signer.key"),
        ],
    );
    assert!(out.status.success(), "export: {}", text(&out));
    assert!(
        text(&out).contains(
            "IMAP imap.new.example:993 (SSL/TLS), submission smtp.new.example:587 (STARTTLS)"
        ),
        "{}",
        text(&out)
    );

    // The files, and no password in any of them.
    let all = files(&kit);
    let names: Vec<String> = all
        .iter()
        .map(|(p, _)| p.strip_prefix(&kit).unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        ".well-known/autoconfig/mail/config-v1.1.xml",
        "mail/config-v1.1.xml",
        "autodiscover/autodiscover.xml",
        "clients/alice@acme.example.mobileconfig",
        "clients/carol.o'neil@acme.example.html",
        "index.html",
        "README.txt",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    for (p, b) in &all {
        let s = String::from_utf8_lossy(b);
        for u in USERS {
            assert!(
                !s.contains(&dst_pw(u)) && !s.contains(&format!("Old-{u}-Pw1")),
                "{}",
                p.display()
            );
        }
    }

    // Served by Python's http.server, looked up by email-lib as Thunderbird does.
    let web = StaticServer::start(&kit);
    let proxy = WebProxy::start(web.port).await;
    let found = discover(&proxy, "bob@acme.example").await;
    assert_eq!(found.len(), 2, "{found:?}");
    for f in &found {
        assert_eq!(f["incoming"]["host"], "imap.new.example", "{f}");
        assert_eq!(f["incoming"]["port"], 993);
        assert_eq!(f["incoming"]["socket"], "Tls");
        assert_eq!(f["incoming"]["username"], "%EMAILADDRESS%");
        assert_eq!(f["outgoing"]["host"], "smtp.new.example");
        assert_eq!(f["outgoing"]["port"], 587);
        assert_eq!(f["outgoing"]["socket"], "Starttls");
    }
    let asked = proxy.asked();
    assert!(
        asked
            .iter()
            .any(|l| l.starts_with("CONNECT autoconfig.acme.example:80 ")),
        "{asked:?}"
    );

    // Outlook's static answer, read by ElementTree.
    let a = python(
        AUTODISCOVER_JSON,
        &[kit.join("autodiscover/autodiscover.xml").to_str().unwrap()],
    );
    assert_eq!(a["type"], "email");
    assert_eq!(a["action"], "settings");
    let p = a["protocols"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(
        (
            p[0]["Type"].as_str(),
            p[0]["Server"].as_str(),
            p[0]["Port"].as_str(),
            p[0]["SSL"].as_str()
        ),
        (
            Some("IMAP"),
            Some("imap.new.example"),
            Some("993"),
            Some("on")
        )
    );
    assert_eq!(
        (
            p[1]["Type"].as_str(),
            p[1]["Server"].as_str(),
            p[1]["Port"].as_str(),
            p[1]["Encryption"].as_str()
        ),
        (
            Some("SMTP"),
            Some("smtp.new.example"),
            Some("587"),
            Some("TLS")
        )
    );

    // Each signed profile verifies against the CA and holds its user's account.
    for u in USERS {
        let address = format!("{u}@acme.example");
        let file = kit.join(format!("clients/{address}.mobileconfig"));
        let plain = work.path().join(format!("{u}.plist"));
        let out = openssl(
            work.path(),
            &[
                "smime",
                "-verify",
                "-inform",
                "der",
                "-in",
                file.to_str().unwrap(),
                "-CAfile",
                "ca.pem",
                "-out",
                plain.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "verify {address}: {}", text(&out));
        let p = python(PLIST_JSON, &[plain.to_str().unwrap()]);
        let m = &p["PayloadContent"][0];
        assert_eq!(m["PayloadType"], "com.apple.mail.managed");
        assert_eq!(m["EmailAddress"], address.as_str());
        assert_eq!(m["IncomingMailServerHostName"], "imap.new.example");
        assert_eq!(m["IncomingMailServerPortNumber"], 993);
        assert_eq!(m["OutgoingMailServerPortNumber"], 587);
        assert_eq!(m["IncomingMailServerUsername"], address.as_str());
        assert!(m.get("IncomingPassword").is_none());
        assert_eq!(p["PayloadOrganization"], "Acme & Co");
    }

    // Exported again: the same profiles (stable identifiers), the directory replaced.
    let before = std::fs::read(kit.join("clients/alice@acme.example.html")).unwrap();
    let out = export(
        &fleet,
        &[
            "--batch",
            "acme",
            kit.to_str().unwrap(),
            "--smtp-host",
            "smtp.new.example",
            "--display-name",
            "Acme Mail",
            "--organization",
            "Acme & Co",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(kit.join("clients/alice@acme.example.html")).unwrap(),
        before
    );
    let p = python(
        PLIST_JSON,
        &[kit
            .join("clients/alice@acme.example.mobileconfig")
            .to_str()
            .unwrap()],
    );
    let signed = python(
        PLIST_JSON,
        &[work.path().join("alice.plist").to_str().unwrap()],
    );
    assert_eq!(p["PayloadUUID"], signed["PayloadUUID"]);
}

/// The child half of the test above; does nothing when run on its own.
/// What email-lib (Thunderbird's lookup, as a library) finds for `address` when every
/// host name leads to `proxy`'s web server: one entry per URL it tried.
async fn discover(proxy: &WebProxy, address: &str) -> Vec<serde_json::Value> {
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "email_lib_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MAILSHIFT_TEST_DISCOVER", address)
        .env("ALL_PROXY", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "email-lib: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| {
            l.split_once("DISCOVERED ")
                .map(|(_, j)| serde_json::from_str(j).unwrap())
        })
        .collect()
}

/// `mailshift serve --clients-batch` answers the same lookups from the fleet store.
#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_the_discovery_of_a_batch_from_the_store() {
    if skip() {
        return;
    }
    let fleet = new_fleet();
    import(&fleet);
    let port = mailshift_tests::fleet::free_port();
    let mut serve = fleet
        .cmd(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--clients-batch",
            "acme",
            "--clients-smtp-host",
            "smtp.new.example",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve did not listen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let proxy = WebProxy::start(port).await;
    let found = discover(&proxy, "bob@acme.example").await;
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(found.len(), 2, "{found:?}");
    for f in &found {
        assert_eq!(f["incoming"]["host"], "imap.new.example", "{f}");
        assert_eq!(f["incoming"]["port"], 993);
        assert_eq!(f["outgoing"]["host"], "smtp.new.example");
        assert_eq!(f["outgoing"]["port"], 587);
    }
}

#[tokio::test]
async fn email_lib_child() {
    let Ok(address) = std::env::var("MAILSHIFT_TEST_DISCOVER") else {
        return;
    };
    let domain = address.rsplit_once('@').unwrap().1.to_string();
    let http = http::Client::new();
    // from_addr's first URL alone first: were it to fail, from_addr would go on to ask
    // real DNS servers, which tests must not reach.
    let first: http::ureq::http::Uri =
        format!("http://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={address}")
            .parse()
            .unwrap();
    email::autoconfig::get_config(&http, first)
        .await
        .expect("the autoconfig.DOMAIN URL answers through the proxy");
    let c = tokio::time::timeout(
        Duration::from_secs(30),
        email::autoconfig::from_addr(&address),
    )
    .await
    .unwrap()
    .unwrap();
    print_found(&c);
    let well_known: http::ureq::http::Uri = format!(
        "http://{domain}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={address}"
    )
    .parse()
    .unwrap();
    print_found(
        &email::autoconfig::get_config(&http, well_known)
            .await
            .unwrap(),
    );
}

fn print_found(c: &email::autoconfig::config::AutoConfig) {
    let p = c.email_provider();
    let server = |s: &email::autoconfig::config::Server| {
        serde_json::json!({
            "host": s.hostname(),
            "port": s.port(),
            "socket": s.security_type().map(|t| format!("{t:?}")),
            "username": s.username(),
        })
    };
    let v = serde_json::json!({
        "incoming": server(p.incoming_servers()[0]),
        "outgoing": server(p.outgoing_servers()[0]),
    });
    println!("DISCOVERED {v}");
}

#[test]
fn temporary_passwords_go_in_only_when_asked() {
    if skip() {
        return;
    }
    let fleet = new_fleet();
    import(&fleet);
    let work = tempfile::tempdir().unwrap();
    let kit = work.path().join("kit");
    let kit_s = kit.to_str().unwrap();
    // Not without a temporary password source.
    let out = export(
        &fleet,
        &[
            "--batch",
            "acme",
            kit_s,
            "--smtp-host",
            "smtp.new.example",
            "--include-passwords",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--temporary-password-from"),
        "{}",
        text(&out)
    );
    assert!(!kit.exists());

    let out = export(
        &fleet,
        &[
            "--batch",
            "acme",
            kit_s,
            "--smtp-host",
            "smtp.new.example",
            "--smtp-port",
            "465",
            "--temporary-password-from",
            "in the letter from your IT desk",
            "--include-passwords",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("do not publish them"), "{}", text(&out));
    let readme = std::fs::read_to_string(kit.join("README.txt")).unwrap();
    assert!(readme.contains("WARNING"), "{readme}");
    for u in USERS {
        let address = format!("{u}@acme.example");
        let profile = kit.join(format!("clients/{address}.mobileconfig"));
        let p = python(PLIST_JSON, &[profile.to_str().unwrap()]);
        let m = &p["PayloadContent"][0];
        assert_eq!(m["IncomingPassword"], dst_pw(u).as_str());
        assert_eq!(m["OutgoingMailServerPortNumber"], 465);
        let page = std::fs::read_to_string(kit.join(format!("clients/{address}.html"))).unwrap();
        assert!(page.contains(&dst_pw(u)));
        assert!(page.contains("in the letter from your IT desk"));
        for f in [profile, kit.join(format!("clients/{address}.html"))] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    // The public files carry none.
    for f in [
        "mail/config-v1.1.xml",
        "autodiscover/autodiscover.xml",
        "index.html",
        "README.txt",
    ] {
        let s = std::fs::read_to_string(kit.join(f)).unwrap();
        for u in USERS {
            assert!(!s.contains(&dst_pw(u)), "{f}");
        }
    }
}

#[test]
fn bad_batches_and_arguments_are_clear_errors_and_write_nothing() {
    if skip() {
        return;
    }
    let fleet = new_fleet();
    import(&fleet);
    // A batch whose only row was refused: it exists, without mailboxes.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("empty.csv");
    std::fs::write(&csv, "source_host,source_user,source_password,dest_host,dest_user,dest_password\nold.example,x,pw,bad host,x,pw\n").unwrap();
    let out = fleet.run(
        &[
            "batch",
            "import",
            csv.to_str().unwrap(),
            "--name",
            "empty",
            "--domain",
            "acme.example",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let kit = dir.path().join("kit");
    let kit_s = kit.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--batch", "empty", kit_s, "--smtp-host", "smtp.new.example"],
            "has no mailboxes, so the new server's IMAP endpoint is unknown: give --imap-host",
        ),
        (
            vec!["--batch", "acme", kit_s],
            "submission (SMTP) endpoint is unknown",
        ),
        (
            vec![
                "--batch",
                "nosuch",
                kit_s,
                "--smtp-host",
                "smtp.new.example",
            ],
            "there is no batch 'nosuch'",
        ),
        (
            vec![
                "--batch",
                "acme",
                kit_s,
                "--smtp-host",
                "smtp.new.example",
                "--sign-cert",
                "/nonexistent.pem",
                "--sign-key",
                "/nonexistent.key",
            ],
            "cannot read /nonexistent.pem",
        ),
        (
            vec![
                "--batch",
                "acme",
                kit_s,
                "--smtp-host",
                "smtp.new.example",
                "--domain",
                "bad_domain!",
            ],
            "is not a domain name",
        ),
    ];
    for (args, why) in cases {
        let out = export(&fleet, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(why), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains("panicked"), "{}", text(&out));
        assert!(!kit.exists(), "{args:?} wrote files");
    }
    // The empty batch with its IMAP server given: the domain's files, no user's.
    let out = export(
        &fleet,
        &[
            "--batch",
            "empty",
            kit_s,
            "--smtp-host",
            "smtp.new.example",
            "--imap-host",
            "imap.new.example",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(kit.join("mail/config-v1.1.xml").exists());
    assert!(
        !kit.join("clients").exists()
            || std::fs::read_dir(kit.join("clients"))
                .unwrap()
                .next()
                .is_none()
    );
    // A directory that holds something else is not overwritten.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let out = export(
        &fleet,
        &[
            "--batch",
            "acme",
            foreign.to_str().unwrap(),
            "--smtp-host",
            "smtp.new.example",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is not empty and holds no earlier export"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);
}
