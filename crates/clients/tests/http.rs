#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The public routes over real HTTP on 127.0.0.1, judged by independent implementations
//! (email-lib's Thunderbird lookup runs against the `mailshift` binary, in
//! `tests/tests/clients.rs`): roxmltree reads the autodiscover answers; Python's plistlib reads the profiles and
//! `openssl smime -verify` checks the signed one against a CA made here with openssl;
//! Debian's headless Chromium renders the settings page (screenshot and PDF kept in
//! `target/test-artifacts/`).
//!
//! `MAILSHIFT_TEST_SKIP_BROWSER=1` skips the browser test where Chromium is absent.

use mailshift_clients::http::{Options, RateLimit, router};
use mailshift_clients::settings::{DomainSettings, LoginForm, PasswordNote, Server, UserSettings};
use mailshift_clients::{MemoryDirectory, ProfileSigner};
use mailshift_core::endpoint::Security;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUEST_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006";
const RESPONSE_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

fn acme() -> DomainSettings {
    DomainSettings {
        domain: "acme.example".into(),
        display_name: "Acme Mail".into(),
        organization: Some("Acme & Co".into()),
        imap: Server {
            host: "imap.new.example".into(),
            port: 993,
            security: Security::Tls,
        },
        smtp: Server {
            host: "smtp.new.example".into(),
            port: 587,
            security: Security::StartTls,
        },
        login: LoginForm::Address,
        password: PasswordNote::Temporary {
            source: "in a text message from the IT desk".into(),
        },
    }
}

fn directory() -> MemoryDirectory {
    let mut carol = UserSettings::new(
        "carol.o'neil+news@acme.example",
        "carol.o'neil+news@acme.example",
    );
    carol.name = Some("Carol O'Neil <IT>".into());
    MemoryDirectory::new()
        .with_domain(acme())
        .with_user(UserSettings::new(
            "alice@acme.example",
            "alice@acme.example",
        ))
        .with_user(carol)
}

struct TestServer {
    base: String,
}

async fn start(dir: MemoryDirectory, options: Options) -> TestServer {
    // reqwest is built without a default crypto provider: the workspace's is ring.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router::<()>(Arc::new(dir), options);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    TestServer {
        base: format!("http://{addr}"),
    }
}

fn generous() -> Options {
    Options {
        rate: RateLimit {
            per_minute: NonZeroU32::new(6000).unwrap(),
            burst: NonZeroU32::new(1000).unwrap(),
        },
        ..Options::default()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Everything but the Date header.
    fn shape(&self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let headers = self
            .headers
            .iter()
            .filter(|(k, _)| k != "date")
            .cloned()
            .collect();
        (self.status, headers, self.body.clone())
    }
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = res.bytes().await.unwrap().to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(url: &str) -> Reply {
    send(reqwest::Client::new().get(url)).await
}

fn outlook_request(address: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Autodiscover xmlns=\"{REQUEST_SCHEMA}\"><Request><EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>{RESPONSE_SCHEMA}</AcceptableResponseSchema></Request></Autodiscover>"
    )
}

async fn autodiscover(base: &str, path: &str, body: String) -> Reply {
    send(
        reqwest::Client::new()
            .post(format!("{base}{path}"))
            .header("Content-Type", "text/xml")
            .header(
                "User-Agent",
                "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266; Pro)",
            )
            .body(body),
    )
    .await
}

#[tokio::test]
async fn autoconfig_types_and_unknown_domains() {
    let server = start(directory(), generous()).await;
    let r = get(&format!(
        "{}/mail/config-v1.1.xml?emailaddress=alice%40acme.example",
        server.base
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    let text = r.text();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "clientConfig");
    assert_eq!(root.attribute("version"), Some("1.1"));
    let provider = root.first_element_child().unwrap();
    assert_eq!(provider.attribute("id"), Some("acme.example"));
    let kinds: Vec<_> = provider
        .children()
        .filter(|n| n.tag_name().name().ends_with("Server"))
        .map(|n| (n.tag_name().name(), n.attribute("type").unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("incomingServer", "imap"), ("outgoingServer", "smtp")]
    );
    // Any address of the domain, known or not, gets the same file.
    let other = get(&format!(
        "{}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=nobody%40acme.example",
        server.base
    ))
    .await;
    assert_eq!(other.shape(), r.shape());
    // A domain that is not ours, or no domain at all: 404.
    for q in [
        "emailaddress=alice%40other.example",
        "emailaddress=%3Cscript%3E",
    ] {
        let r = get(&format!("{}/mail/config-v1.1.xml?{q}", server.base)).await;
        assert_eq!(r.status, 404, "{q}");
        assert_eq!(r.text(), "not found\n");
    }
}

// ---------------------------------------------------------------------------------------
// Outlook autodiscover.

/// Every element as (depth, namespace, name), in document order.
fn shape(xml: &str) -> Vec<(usize, String, String)> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.descendants()
        .filter(|n| n.is_element())
        .map(|n| {
            (
                n.ancestors().count(),
                n.tag_name().namespace().unwrap_or("").to_string(),
                n.tag_name().name().to_string(),
            )
        })
        .collect()
}

fn protocols(xml: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Autodiscover");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006")
    );
    let response = root.first_element_child().unwrap();
    assert_eq!(response.tag_name().name(), "Response");
    assert_eq!(response.tag_name().namespace(), Some(RESPONSE_SCHEMA));
    let account = response
        .children()
        .find(|n| n.has_tag_name((RESPONSE_SCHEMA, "Account")))
        .expect("an Account");
    let child = |name: &str| {
        account
            .children()
            .find(|n| n.tag_name().name() == name)
            .and_then(|n| n.text())
            .map(str::to_string)
    };
    assert_eq!(child("AccountType").as_deref(), Some("email"));
    assert_eq!(child("Action").as_deref(), Some("settings"));
    account
        .children()
        .filter(|n| n.has_tag_name((RESPONSE_SCHEMA, "Protocol")))
        .map(|p| {
            p.children()
                .filter(|n| n.is_element())
                .map(|n| {
                    (
                        n.tag_name().name().to_string(),
                        n.text().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn outlook_autodiscover_gets_imap_and_smtp_and_learns_nothing_about_addresses() {
    let server = start(directory(), generous()).await;
    let known = autodiscover(
        &server.base,
        "/autodiscover/autodiscover.xml",
        outlook_request("alice@acme.example"),
    )
    .await;
    assert_eq!(known.status, 200);
    assert_eq!(
        known.header("content-type"),
        Some("text/xml; charset=utf-8")
    );
    let p = protocols(&known.text());
    assert_eq!(p.len(), 2);
    let imap = &p[0];
    assert_eq!(imap["Type"], "IMAP");
    assert_eq!(imap["Server"], "imap.new.example");
    assert_eq!(imap["Port"], "993");
    assert_eq!(imap["SSL"], "on");
    assert_eq!(imap["SPA"], "off");
    assert_eq!(imap["AuthRequired"], "on");
    assert_eq!(imap["LoginName"], "alice@acme.example");
    assert!(!imap.contains_key("Encryption"));
    let smtp = &p[1];
    assert_eq!(smtp["Type"], "SMTP");
    assert_eq!(smtp["Server"], "smtp.new.example");
    assert_eq!(smtp["Port"], "587");
    assert_eq!(smtp["SSL"], "off");
    assert_eq!(smtp["Encryption"], "TLS");
    assert_eq!(smtp["SPA"], "off");
    assert_eq!(smtp["AuthRequired"], "on");
    assert_eq!(smtp["LoginName"], "alice@acme.example");

    // An address nobody has: the same answer, but for the address given.
    let unknown = autodiscover(
        &server.base,
        "/Autodiscover/Autodiscover.xml",
        outlook_request("zed@acme.example"),
    )
    .await;
    assert_eq!(unknown.status, known.status);
    assert_eq!(shape(&unknown.text()), shape(&known.text()));
    assert_eq!(
        unknown
            .text()
            .replace("zed@acme.example", "alice@acme.example"),
        known.text()
    );
    let mut k = known.shape();
    let mut u = unknown.shape();
    k.1.retain(|(h, _)| h != "content-length");
    u.1.retain(|(h, _)| h != "content-length");
    assert_eq!(k.1, u.1);

    // A domain that is not ours and a client wanting another schema: error answers.
    let other = autodiscover(
        &server.base,
        "/autodiscover/autodiscover.xml",
        outlook_request("alice@other.example"),
    )
    .await;
    assert_eq!(other.status, 200);
    let doc = other.text();
    let doc = roxmltree::Document::parse(&doc).unwrap();
    let code = doc
        .descendants()
        .find(|n| n.has_tag_name("ErrorCode"))
        .unwrap();
    assert_eq!(code.text(), Some("600"));
    let mobilesync = outlook_request("alice@acme.example").replace(
        "outlook/responseschema/2006a",
        "mobilesync/responseschema/2006",
    );
    let r = autodiscover(&server.base, "/autodiscover/autodiscover.xml", mobilesync).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("<ErrorCode>601</ErrorCode>"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn malformed_autodiscover_requests_get_a_400_that_says_why() {
    let server = start(directory(), generous()).await;
    let secret = "s3cr3t-probe";
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "no <Autodiscover>"),
        (
            format!("<Autodiscover><Request><EMailAddress>{secret}"),
            "ends inside",
        ),
        (
            format!("<Autodiscover><Request><EMailAddress>{secret}</Request>"),
            "not well-formed",
        ),
        (
            format!(
                "<Autodiscover><Request><EMailAddress>{secret}</EMailAddress></Request></Autodiscover>"
            ),
            "not an email address",
        ),
        (
            format!(
                "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><Autodiscover><Request><EMailAddress>&e;{secret}</EMailAddress></Request></Autodiscover>"
            ),
            "DOCTYPE",
        ),
        (
            "<Autodiscover><Request/></Autodiscover>".into(),
            "EMailAddress",
        ),
    ];
    for (body, why) in cases {
        let r = autodiscover(&server.base, "/autodiscover/autodiscover.xml", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(why), "{body}: {}", r.text());
        assert!(
            r.text().starts_with("malformed autodiscover request"),
            "{}",
            r.text()
        );
        assert!(!r.text().contains(secret), "{}", r.text());
    }
    // Bodies are bounded before they are read.
    let big = format!("<Autodiscover>{}</Autodiscover>", " ".repeat(1 << 20));
    let r = autodiscover(&server.base, "/autodiscover/autodiscover.xml", big).await;
    assert_eq!(r.status, 413);
    // GET is not how autodiscover is asked.
    assert_eq!(
        get(&format!("{}/autodiscover/autodiscover.xml", server.base))
            .await
            .status,
        405
    );
}

// ---------------------------------------------------------------------------------------
// Per-user files.

#[tokio::test]
async fn unknown_and_malformed_addresses_get_one_opaque_404() {
    let server = start(directory(), generous()).await;
    let reference = get(&format!("{}/clients/nobody@acme.example", server.base)).await;
    assert_eq!(reference.status, 404);
    assert_eq!(reference.text(), "not found\n");
    for path in [
        "nobody@acme.example.mobileconfig",
        "alice@other.example",
        "alice@other.example.mobileconfig",
        "not-an-address",
        "%3Cscript%3E@acme.example",
        "..%2F..%2Fetc%2Fpasswd",
        "alice@acme.example%00",
        "alice@@acme.example.mobileconfig",
    ] {
        let r = get(&format!("{}/clients/{path}", server.base)).await;
        assert_eq!(r.shape(), reference.shape(), "{path}");
    }
    // The known ones.
    let page = get(&format!("{}/clients/alice@acme.example", server.base)).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    let profile = get(&format!(
        "{}/clients/ALICE@Acme.Example.mobileconfig",
        server.base
    ))
    .await;
    assert_eq!(profile.status, 200);
    assert_eq!(
        profile.header("content-type"),
        Some("application/x-apple-aspen-config")
    );
}

/// Python's plistlib reads `path` and prints it as JSON.
fn plistlib(path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys\nwith open(sys.argv[1], 'rb') as f:\n    p = plistlib.load(f)\nprint(json.dumps(p))",
        ])
        .arg(path)
        .output()
        .expect("python3 is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "plistlib refused {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_apple_profile_is_a_plist_with_the_mail_payload_and_no_password() {
    let server = start(directory(), generous()).await;
    let dir = tempfile::tempdir().unwrap();
    let r = get(&format!(
        "{}/clients/carol.o'neil%2Bnews@acme.example.mobileconfig",
        server.base
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-disposition")
            .unwrap()
            .contains(".mobileconfig"),
        "{:?}",
        r.headers
    );
    let path = dir.path().join("carol.mobileconfig");
    std::fs::write(&path, &r.body).unwrap();
    let p = plistlib(&path);
    check_profile(&p, "carol.o'neil+news@acme.example");
    let mail = &p["PayloadContent"][0];
    assert_eq!(mail["EmailAccountName"], "Carol O'Neil <IT>");
    for k in ["IncomingPassword", "OutgoingPassword"] {
        assert!(mail.get(k).is_none(), "{k} in the profile");
    }
    // Stable: the same UUIDs on every download.
    let again = get(&format!(
        "{}/clients/carol.o'neil%2Bnews@acme.example.mobileconfig",
        server.base
    ))
    .await;
    assert_eq!(again.body, r.body);
}

/// The documented keys of a mail profile for `address` on [`acme`].
fn check_profile(p: &serde_json::Value, address: &str) {
    assert_eq!(p["PayloadType"], "Configuration");
    assert_eq!(p["PayloadVersion"], 1);
    assert_eq!(p["PayloadOrganization"], "Acme & Co");
    assert_eq!(p["PayloadRemovalDisallowed"], false);
    for k in ["PayloadIdentifier", "PayloadUUID", "PayloadDisplayName"] {
        assert!(p[k].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    }
    let uuid = p["PayloadUUID"].as_str().unwrap();
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "5", "UUID v5: {uuid}");
    let content = p["PayloadContent"].as_array().unwrap();
    assert_eq!(content.len(), 1);
    let m = &content[0];
    assert_eq!(m["PayloadType"], "com.apple.mail.managed");
    assert_eq!(m["PayloadVersion"], 1);
    assert_ne!(m["PayloadUUID"], p["PayloadUUID"]);
    assert!(
        m["PayloadIdentifier"]
            .as_str()
            .unwrap()
            .starts_with(p["PayloadIdentifier"].as_str().unwrap())
    );
    assert_eq!(m["EmailAccountType"], "EmailTypeIMAP");
    assert_eq!(m["EmailAddress"], address);
    assert_eq!(m["IncomingMailServerHostName"], "imap.new.example");
    assert_eq!(m["IncomingMailServerPortNumber"], 993);
    assert_eq!(m["IncomingMailServerUseSSL"], true);
    assert_eq!(m["IncomingMailServerUsername"], address);
    assert_eq!(m["IncomingMailServerAuthentication"], "EmailAuthPassword");
    assert_eq!(m["OutgoingMailServerHostName"], "smtp.new.example");
    assert_eq!(m["OutgoingMailServerPortNumber"], 587);
    assert_eq!(m["OutgoingMailServerUseSSL"], true);
    assert_eq!(m["OutgoingMailServerUsername"], address);
    assert_eq!(m["OutgoingMailServerAuthentication"], "EmailAuthPassword");
    assert!(m["PayloadDisplayName"].as_str().is_some());
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a profile-signing certificate it issued: (ca.pem, signer.pem,
/// signer.key) in `dir`.
pub fn make_signing_ca(dir: &Path) {
    openssl(
        dir,
        &[
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
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "signer.key",
            "-out",
            "signer.csr",
            "-subj",
            "/CN=Acme IT profile signing/O=Acme",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "signer.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "4242",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "signer.pem",
        ],
    );
}

#[tokio::test]
async fn a_signed_profile_verifies_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_signing_ca(d);
    let cert = std::fs::read(d.join("signer.pem")).unwrap();
    let key = std::fs::read(d.join("signer.key")).unwrap();
    // The CA's key does not belong to the signer's certificate.
    let wrong = ProfileSigner::from_pem(&cert, &std::fs::read(d.join("ca.key")).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("does not belong to the certificate"),
        "{wrong}"
    );
    let signer = ProfileSigner::from_pem(&cert, &key, None).unwrap();
    assert!(!format!("{signer:?}").contains("PRIVATE"));
    let server = start(
        directory(),
        Options {
            signer: Some(Arc::new(signer)),
            ..generous()
        },
    )
    .await;
    let r = get(&format!(
        "{}/clients/alice@acme.example.mobileconfig",
        server.base
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body[0], 0x30, "DER SignedData, not XML");
    std::fs::write(d.join("signed.mobileconfig"), &r.body).unwrap();
    openssl(
        d,
        &[
            "smime",
            "-verify",
            "-inform",
            "der",
            "-in",
            "signed.mobileconfig",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "any",
            "-out",
            "content.plist",
        ],
    );
    let p = plistlib(&d.join("content.plist"));
    check_profile(&p, "alice@acme.example");
    // The same check as above, without -purpose: as a S/MIME signing certificate.
    openssl(
        d,
        &[
            "smime",
            "-verify",
            "-inform",
            "der",
            "-in",
            "signed.mobileconfig",
            "-CAfile",
            "ca.pem",
            "-out",
            "content2.plist",
        ],
    );
    // One changed byte of the profile and the signature no longer holds.
    let mut tampered = r.body.clone();
    let at = tampered
        .windows(16)
        .position(|w| w == b"imap.new.example")
        .unwrap();
    tampered[at] = b'X';
    std::fs::write(d.join("tampered.mobileconfig"), &tampered).unwrap();
    let out = Command::new("openssl")
        .args([
            "smime",
            "-verify",
            "-inform",
            "der",
            "-in",
            "tampered.mobileconfig",
            "-CAfile",
            "ca.pem",
            "-out",
            "/dev/null",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a tampered profile verified");
}

// ---------------------------------------------------------------------------------------
// Rate limit.

#[tokio::test]
async fn each_client_ip_is_rate_limited() {
    let server = start(
        directory(),
        Options {
            rate: RateLimit {
                per_minute: NonZeroU32::new(1).unwrap(),
                burst: NonZeroU32::new(3).unwrap(),
            },
            ..Options::default()
        },
    )
    .await;
    let urls = [
        format!("{}/clients/alice@acme.example", server.base),
        format!("{}/clients/nobody@acme.example", server.base),
        format!(
            "{}/mail/config-v1.1.xml?emailaddress=alice%40acme.example",
            server.base
        ),
    ];
    let mut statuses = Vec::new();
    for u in &urls {
        statuses.push(get(u).await.status);
    }
    assert_eq!(statuses, [200, 404, 200]);
    let r = autodiscover(
        &server.base,
        "/autodiscover/autodiscover.xml",
        outlook_request("alice@acme.example"),
    )
    .await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(get(&urls[0]).await.status, 429);
}

// ---------------------------------------------------------------------------------------
// The settings page in Chromium.

#[tokio::test(flavor = "multi_thread")]
async fn the_settings_sheet_renders_in_chromium() {
    if std::env::var_os("MAILSHIFT_TEST_SKIP_BROWSER").is_some() {
        return;
    }
    let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromedriver is not installed: run scripts/test (it installs Debian's chromium and chromium-driver) or set MAILSHIFT_TEST_SKIP_BROWSER=1");
    let server = start(directory(), generous()).await;
    let wd_port = mailshift_tests::fleet::free_port();
    let mut driver = Command::new(chromedriver)
        .arg(format!("--port={wd_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", wd_port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1500"],
        }),
    );
    let client = fantoccini::ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{wd_port}"))
        .await
        .expect("connect to chromedriver");
    let result = drive(&client, &server).await;
    if result.is_err() {
        eprintln!(
            "page when it failed:\n{}",
            client.source().await.unwrap_or_default()
        );
    }
    let _ = client.close().await;
    let _ = driver.kill();
    let _ = driver.wait();
    result.unwrap();
}

async fn drive(
    c: &fantoccini::Client,
    server: &TestServer,
) -> Result<(), fantoccini::error::CmdError> {
    use fantoccini::Locator;
    let url = format!("{}/clients/carol.o'neil%2Bnews@acme.example", server.base);
    c.goto(&url).await?;
    let text = |css: &'static str| async move {
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await?
            .text()
            .await
    };
    assert_eq!(text("#address").await?, "carol.o'neil+news@acme.example");
    assert_eq!(text("#incoming-host").await?, "imap.new.example");
    assert_eq!(text("#incoming-port").await?, "993");
    assert_eq!(text("#incoming-security").await?, "SSL/TLS");
    assert_eq!(text("#outgoing-host").await?, "smtp.new.example");
    assert_eq!(text("#outgoing-port").await?, "587");
    assert_eq!(text("#outgoing-security").await?, "STARTTLS");
    assert_eq!(
        text("#incoming-login").await?,
        "carol.o'neil+news@acme.example"
    );
    assert!(
        text("#password-note")
            .await?
            .contains("in a text message from the IT desk")
    );
    for id in ["thunderbird", "outlook", "apple", "android", "gmail"] {
        let css = format!("#steps-{id} li");
        assert!(!c.find_all(Locator::Css(&css)).await?.is_empty(), "{id}");
    }
    // No script ran (there is none), and the profile link points beside the page.
    let href = c
        .find(Locator::Css("#profile-link"))
        .await?
        .prop("href")
        .await?
        .unwrap();
    assert!(
        href.ends_with("/clients/carol.o'neil+news@acme.example.mobileconfig"),
        "{href}"
    );
    let scripts = c.find_all(Locator::Css("script")).await?;
    assert!(scripts.is_empty());

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("client-settings.png"), c.screenshot().await?).unwrap();
    let pdf = c
        .print(fantoccini::wd::PrintConfiguration::default())
        .await?;
    assert!(pdf.starts_with(b"%PDF"));
    std::fs::write(artifacts.join("client-settings-sheet.pdf"), pdf).unwrap();
    Ok(())
}
