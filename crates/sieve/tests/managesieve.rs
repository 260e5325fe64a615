//! The ManageSieve client and `engine::sieve` against real Dovecot + Pigeonhole servers
//! (the harness starts them on free loopback ports). Source scripts are put on disk by the
//! harness, and results are judged from the servers' script directories on disk, never
//! from mailshift's own view. Two hostile servers the harness cannot play (a huge literal,
//! silence) are raw loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_core::ErrorKind;
use mailshift_core::endpoint::Security;
use mailshift_core::sieve::{CopyRecord, SieveEndpoint, Step};
use mailshift_engine::sieve::{ActivationOutcome, ScriptResult, compare_scripts, copy_scripts};
use mailshift_sieve::{Side, SieveAuth, SieveConfig, SieveError, connect_source, connect_target};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::oauth::OAuthServer;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const USER: &str = "alice@example.org";
const SOURCE_PW: &str = "source-Pa55-w0rd";
const DEST_PW: &str = "dest-Pa55-w0rd";

/// Vacation plus a redirect: the kind of rule users lose in IMAP-only migrations.
const AWAY: &[u8] = b"require [\"vacation\", \"copy\"];\r\n\
# Out of office until the 14th\r\n\
redirect :copy \"assistant@example.org\";\r\n\
vacation :days 7 :subject \"Away\" text:\r\n\
I am away until the 14th. \xc3\x9crgent matters: assistant@example.org\r\n\
.\r\n;\r\n";
const FILTERS: &[u8] = b"require [\"fileinto\"];\r\n\
if header :contains \"list-id\" \"rust-users\" { fileinto \"Lists\"; stop; }\r\n";
/// A name that needs quoting (quotes, a space, UTF-8).
const FILTERS_NAME: &str = "B\u{fc}ro \"filters\"";

fn server(extensions: Option<&str>) -> Dovecot {
    Dovecot::start(DovecotOptions {
        sieve: true,
        sieve_extensions: extensions.map(str::to_string),
        // Sieve settings share the `plugin` block with the quota plugin's.
        max_mail_size: extensions.map(|_| 1 << 20),
        ..Default::default()
    })
    .expect("start dovecot with managesieve")
}

fn config(d: &Dovecot, password: &str, side: Side) -> SieveConfig {
    SieveConfig {
        endpoint: d.sieve_url(USER).parse().unwrap(),
        auth: SieveAuth::Password(password.to_string().into()),
        side,
        // These servers have no TLS; the TLS tests below use servers that do.
        allow_plaintext: true,
        ca_file: None,
        timeout: Duration::from_secs(20),
    }
}

/// A source with the two scripts ("away" active) and a destination holding a script
/// of the user's own.
fn pair(dest_extensions: Option<&str>) -> (Dovecot, Dovecot) {
    let source = server(None);
    source.add_user(USER, SOURCE_PW);
    source.put_sieve_script(USER, "away", AWAY, true);
    source.put_sieve_script(USER, FILTERS_NAME, FILTERS, false);
    let dest = server(dest_extensions);
    dest.add_user(USER, DEST_PW);
    dest.put_sieve_script(USER, "mine", b"keep;\r\n", false);
    (source, dest)
}

fn assert_no_secret(text: &str) {
    for secret in [SOURCE_PW, DEST_PW] {
        assert!(!text.contains(secret), "a password leaked into: {text}");
    }
}

#[tokio::test]
async fn copies_every_script_activates_the_active_one_and_leaves_the_source_alone() {
    let (source, dest) = pair(None);
    let before = source.sieve_scripts(USER);
    assert_eq!(before.scripts.len(), 2);

    let mut src = connect_source(&config(&source, SOURCE_PW, Side::Source))
        .await
        .unwrap();
    let mut dst = connect_target(&config(&dest, DEST_PW, Side::Destination))
        .await
        .unwrap();
    assert!(
        dst.capabilities().supports("vacation"),
        "{:?}",
        dst.capabilities()
    );
    assert_eq!(dst.capabilities().max_redirects, Some(4));
    let report = copy_scripts(src.as_mut(), dst.as_mut(), &CopyRecord::default())
        .await
        .unwrap();
    assert_no_secret(&format!("{report:?}"));
    assert!(report.is_complete(), "{report:#?}");
    assert_eq!(report.uploaded(), 2);
    assert_eq!(
        report.activation,
        ActivationOutcome::Activated {
            name: "away".into(),
            replaced: None
        }
    );
    assert_eq!(report.untouched, vec!["mine"]);

    // On the destination's disk: both scripts byte for byte, "away" active, the user's
    // own script untouched.
    let copied = dest.sieve_scripts(USER);
    assert_eq!(copied.scripts["away"], AWAY);
    assert_eq!(copied.scripts[FILTERS_NAME], FILTERS);
    assert_eq!(copied.scripts["mine"], b"keep;\r\n");
    assert_eq!(copied.scripts.len(), 3);
    assert_eq!(copied.active.as_deref(), Some("away"));
    // The source, read from its disk: same scripts, same files, same active one.
    assert_eq!(source.sieve_scripts(USER), before);

    // A second pass (new sessions, no record) uploads nothing: not one file rewritten.
    drop((src, dst));
    let mut src = connect_source(&config(&source, SOURCE_PW, Side::Source))
        .await
        .unwrap();
    let mut dst = connect_target(&config(&dest, DEST_PW, Side::Destination))
        .await
        .unwrap();
    let again = copy_scripts(src.as_mut(), dst.as_mut(), &CopyRecord::default())
        .await
        .unwrap();
    assert_eq!(again.uploaded(), 0, "{again:#?}");
    assert!(
        again
            .scripts
            .iter()
            .all(|s| s.result == ScriptResult::Unchanged)
    );
    assert_eq!(
        again.activation,
        ActivationOutcome::Unchanged {
            active: Some("away".into())
        }
    );
    assert_eq!(dest.sieve_scripts(USER), copied);
    assert_eq!(source.sieve_scripts(USER), before);

    let cmp = compare_scripts(src.as_mut(), dst.as_mut(), &CopyRecord::default())
        .await
        .unwrap();
    assert!(cmp.is_complete(), "{cmp:#?}");
    assert_eq!(cmp.extra, vec!["mine"]);

    // The user changes a script on the old server: with the record of the first pass,
    // mailshift's copy is updated in place; the user's own script stays as it is.
    let changed = b"require \"fileinto\";\r\nfileinto \"Archive\";\r\n";
    source.put_sieve_script(USER, FILTERS_NAME, changed, false);
    let third = copy_scripts(src.as_mut(), dst.as_mut(), &report.record)
        .await
        .unwrap();
    assert_eq!(third.uploaded(), 1, "{third:#?}");
    let filters = third
        .scripts
        .iter()
        .find(|s| s.name == FILTERS_NAME)
        .unwrap();
    assert_eq!(
        filters.result,
        ScriptResult::Copied {
            step: Step::Update,
            warnings: None
        }
    );
    let updated = dest.sieve_scripts(USER);
    assert_eq!(updated.scripts[FILTERS_NAME], changed);
    assert_eq!(updated.scripts["away"], AWAY);
    assert_eq!(updated.modified["away"], copied.modified["away"]);
    assert_eq!(updated.scripts["mine"], b"keep;\r\n");
}

#[tokio::test]
async fn a_script_the_destination_cannot_run_is_reported_and_the_other_still_arrives() {
    // The destination has no vacation extension.
    let (source, dest) = pair(Some("-vacation"));
    let before = source.sieve_scripts(USER);
    let cfg = config(&dest, DEST_PW, Side::Destination);
    let mut src = connect_source(&config(&source, SOURCE_PW, Side::Source))
        .await
        .unwrap();
    let mut dst = connect_target(&cfg).await.unwrap();
    assert!(!dst.capabilities().supports("vacation"));
    let report = copy_scripts(src.as_mut(), dst.as_mut(), &CopyRecord::default())
        .await
        .unwrap();
    assert_no_secret(&format!("{report:?}"));
    assert!(!report.is_complete());
    let rejected: Vec<_> = report.rejected().collect();
    assert_eq!(rejected.len(), 1, "{report:#?}");
    assert_eq!(rejected[0].name, "away");
    let ScriptResult::Rejected {
        kind,
        reason,
        missing_extensions,
    } = &rejected[0].result
    else {
        unreachable!()
    };
    assert_eq!(kind, "refused");
    // The server, the script, the server's own reason, and what to do.
    assert!(
        reason.starts_with(&format!(
            "destination {} refused CHECKSCRIPT of script \"away\": ",
            cfg.endpoint
        )),
        "{reason}"
    );
    assert!(
        reason.contains("unknown Sieve capability `vacation'"),
        "{reason}"
    );
    assert!(reason.contains("enable the missing extension"), "{reason}");
    assert_eq!(missing_extensions, &vec!["vacation".to_string()]);

    // The other script arrived; the refused one did not, and is not active.
    let on_disk = dest.sieve_scripts(USER);
    assert_eq!(on_disk.scripts[FILTERS_NAME], FILTERS);
    assert!(!on_disk.scripts.contains_key("away"));
    assert_eq!(on_disk.active, None);
    assert!(matches!(
        &report.activation,
        ActivationOutcome::Skipped { name, .. } if name == "away"
    ));
    assert_eq!(source.sieve_scripts(USER), before);

    // PUTSCRIPT refuses it the same way (what a server without CHECKSCRIPT would say).
    let mut session = mailshift_sieve::connect(&cfg).await.unwrap();
    let e = session.put("away", AWAY).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused);
    assert!(
        e.to_string().contains("PUTSCRIPT of script \"away\""),
        "{e}"
    );
    session.logout().await;
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_auth_error_without_the_password() {
    let (source, _dest) = pair(None);
    let wrong = "wrong-Pa55-w0rd";
    let e = connect_source(&config(&source, wrong, Side::Source))
        .await
        .err()
        .expect("a wrong password is refused");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "login as {USER} on source {} was refused",
            source.sieve_url(USER)
        )),
        "{m}"
    );
    assert!(m.contains("check the user name and password"), "{m}");
    assert!(!m.contains(wrong), "{m}");
    assert_no_secret(&m);
    // Nor in the Debug output of the configuration.
    let dbg = format!("{:?}", config(&source, SOURCE_PW, Side::Source));
    assert_no_secret(&dbg);
}

#[tokio::test]
async fn tls_is_verified_and_plain_text_needs_permission() {
    let d = Dovecot::start(DovecotOptions {
        sieve: true,
        tls: true,
        ..Default::default()
    })
    .unwrap();
    d.add_user(USER, SOURCE_PW);
    d.put_sieve_script(USER, "away", AWAY, true);
    let mut cfg = config(&d, SOURCE_PW, Side::Source);
    cfg.allow_plaintext = false;
    cfg.ca_file = d.ca_pem();

    // STARTTLS (offered, so taken even though plain text is allowed elsewhere).
    let mut s = mailshift_sieve::connect(&cfg).await.unwrap();
    assert!(
        s.list()
            .await
            .unwrap()
            .iter()
            .any(|l| l.name == "away" && l.active)
    );
    assert_eq!(s.get("away").await.unwrap(), AWAY);
    s.logout().await;

    // Implicit TLS.
    let mut tls = cfg.clone();
    tls.endpoint = SieveEndpoint {
        security: Security::Tls,
        port: d.sieve_tls_port().unwrap(),
        ..cfg.endpoint.clone()
    };
    let mut s = mailshift_sieve::connect(&tls).await.unwrap();
    assert_eq!(s.get("away").await.unwrap(), AWAY);
    s.logout().await;

    // A certificate nobody vouches for is refused, STARTTLS or not.
    for mut c in [cfg.clone(), tls.clone()] {
        c.ca_file = None;
        let e = mailshift_sieve::connect(&c).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        assert!(matches!(e, SieveError::Tls { .. }), "{e}");
    }

    // A server without STARTTLS: refused unless plain text is allowed.
    let plain = server(None);
    plain.add_user(USER, SOURCE_PW);
    let mut c = config(&plain, SOURCE_PW, Side::Source);
    c.allow_plaintext = false;
    let e = mailshift_sieve::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Insecure);
    assert!(e.to_string().contains("does not offer STARTTLS"), "{e}");
    c.allow_plaintext = true;
    mailshift_sieve::connect(&c).await.unwrap().logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_token_logs_in_and_a_bad_one_is_refused_without_leaking() {
    let oauth = OAuthServer::start().await;
    let d = Dovecot::start(DovecotOptions {
        sieve: true,
        oauth2_introspection_url: Some(oauth.url()),
        ..Default::default()
    })
    .unwrap();
    d.add_user("alice", SOURCE_PW);
    d.put_sieve_script("alice", "away", AWAY, true);
    let token = oauth.issue("alice", Duration::from_secs(3600));
    let cfg = SieveConfig {
        endpoint: d.sieve_url("alice").parse().unwrap(),
        auth: SieveAuth::Bearer(token.clone().into()),
        side: Side::Source,
        allow_plaintext: true,
        ca_file: None,
        timeout: Duration::from_secs(20),
    };
    let mut s = connect_source(&cfg).await.unwrap();
    let listed = s.list_scripts().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(s.get_script("away").await.unwrap(), AWAY);

    oauth.revoke(&token);
    let e = connect_source(&cfg)
        .await
        .err()
        .expect("a revoked token is refused");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("OAUTHBEARER login as alice"), "{e}");
    assert!(!e.message.contains(&token), "{e}");
}

/// A loopback server that greets with `greeting` and then stays silent.
async fn raw_server(greeting: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = sock.write_all(greeting).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    port
}

fn raw_config(port: u16, timeout: Duration) -> SieveConfig {
    SieveConfig {
        endpoint: format!("sieve://{USER}@127.0.0.1:{port}").parse().unwrap(),
        auth: SieveAuth::Password(SOURCE_PW.to_string().into()),
        side: Side::Source,
        allow_plaintext: true,
        ca_file: None,
        timeout,
    }
}

#[tokio::test]
async fn a_hostile_or_silent_server_fails_cleanly() {
    // Announces a 100 GB literal and sends nothing more: refused at once, nothing
    // allocated, no waiting for the timeout.
    let port = raw_server(b"\"IMPLEMENTATION\" {100000000000}\r\n").await;
    let started = std::time::Instant::now();
    let e = mailshift_sieve::connect(&raw_config(port, Duration::from_secs(20)))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("announced a literal of at least") && m.contains("limit"),
        "{m}"
    );
    assert!(m.starts_with("source sieve://"), "{m}");

    // Greets, then never answers: the timeout names the server and what to do.
    let port = raw_server(b"\"SASL\" \"PLAIN\"\r\n\"VERSION\" \"1.0\"\r\nOK \"hi\"\r\n").await;
    let e = mailshift_sieve::connect(&raw_config(port, Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_no_secret(&e.to_string());
}
