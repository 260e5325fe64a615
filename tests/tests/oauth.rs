//! OAuth 2.0 logins against a real Dovecot whose `oauth2` passdb asks our own
//! token-introspection server ([`OAuthServer`]): the source is read with an access token
//! (OAUTHBEARER), never a password, and a token that expires during a long `--follow`
//! run is replaced by the fresh one the token file holds at the next login. Every
//! assertion on mail compares the servers themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_tests::corpus::{self, CorpusSpec, special_use_options};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::imap;
use mailshift_tests::oauth::OAuthServer;
use mailshift_tests::pair::*;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);

/// The usual pair (see [`Pair::new`]), but the source also takes OAuth 2.0 logins checked
/// against `oauth`.
fn oauth_pair(oauth: &OAuthServer) -> Pair {
    let folders = corpus::standard_folders();
    let src = Dovecot::start(DovecotOptions {
        delimiter: '.',
        special_use: special_use_options(&folders, '.'),
        oauth2_introspection_url: Some(oauth.url()),
        ..Default::default()
    })
    .expect("start source dovecot with the oauth2 passdb");
    let dst = Dovecot::start(DovecotOptions {
        special_use: vec![("Sent".into(), "\\Sent".into())],
        ..Default::default()
    })
    .expect("start destination dovecot");
    src.add_user("alice", SRC_PW);
    dst.add_user("alice", DST_PW);
    Pair {
        src,
        dst,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// Replaces the token file atomically (as a refresh helper should), so a login never
/// reads half a token.
fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{token}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `mailshift migrate` logging in to the source with OAuth only: the source password is
/// not even in the environment.
fn oauth_command(pair: &Pair, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = pair.command(extra);
    cmd.env_remove("MAILSHIFT_FROM_PASSWORD");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd
}

async fn run(pair: &Pair, extra: &[&str]) -> Output {
    oauth_command(pair, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run mailshift")
}

/// Neither password nor any token (current or expired) may reach stdout or stderr.
fn assert_no_tokens(out: &Output, tokens: &[&str]) {
    assert_no_secrets(out);
    let all = text(out);
    for t in tokens {
        assert!(
            !all.contains(t),
            "an OAuth token leaked into the output:\n{all}"
        );
    }
}

/// Logins (`imap-login: Info: Login: ... method=M`) in the part of the Dovecot log after
/// byte `since`, as a list of methods.
fn login_methods(log: &str, since: usize) -> Vec<String> {
    log.get(since..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("imap-login: Info: Login: "))
        .filter_map(|l| {
            let m = l.split("method=").nth(1)?;
            Some(m.split([',', ' ']).next().unwrap_or("").to_string())
        })
        .collect()
}

fn new_message(seed: u64) -> corpus::Msg {
    let extra = corpus::generate(&CorpusSpec {
        seed,
        messages: 1,
        big_attachments: 0,
    });
    extra
        .into_iter()
        .flat_map(|f| f.messages)
        .next()
        .expect("one message")
}

fn token_path(pair: &Pair) -> PathBuf {
    pair.dir.path().join("access-token")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_introspection_server_answers_as_rfc_7662_says() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let oauth = OAuthServer::start().await;
    let port = oauth.port();
    let ask = |request: String| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 "), "{reply}");
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    };
    let post = |token: &str| {
        let body = format!("token={}", mailshift_tests::oauth::percent_encode(token));
        format!(
            "POST /introspect HTTP/1.1\r\nHost: x\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let good = oauth.issue("alice", HOUR);
    let short = oauth.issue("bob", Duration::from_millis(300));
    let v = ask(post(&good)).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["username"], "alice");
    // GET with the token in the URL, and `Authorization: Bearer`, work the same.
    let v = ask(format!(
        "GET /introspect?token={good} HTTP/1.1\r\nHost: x\r\n\r\n"
    ))
    .await;
    assert_eq!(v["username"], "alice");
    let v = ask(format!(
        "GET /introspect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {short}\r\n\r\n"
    ))
    .await;
    assert_eq!(v["username"], "bob");
    // Unknown, expired and revoked tokens are inactive, and say nothing else.
    assert_eq!(
        ask(post("nonsense")).await,
        serde_json::json!({"active": false})
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        ask(post(&short)).await,
        serde_json::json!({"active": false})
    );
    oauth.revoke(&good);
    assert_eq!(ask(post(&good)).await, serde_json::json!({"active": false}));
    assert_eq!(oauth.requests(), 6);
    let log = oauth.log();
    assert_eq!(
        log.iter().map(|i| i.active).collect::<Vec<_>>(),
        [true, true, true, false, false, false]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oauthbearer_login_with_a_token_command_mirrors_the_source_byte_exact() {
    let oauth = OAuthServer::start().await;
    let pair = oauth_pair(&oauth);
    populate(
        &pair,
        &CorpusSpec {
            seed: 61,
            messages: 300,
            big_attachments: 1,
        },
    )
    .await;
    let token = oauth.issue("alice", HOUR);
    write_token(&token_path(&pair), &token);
    let cmd = format!("cat '{}'", token_path(&pair).display());
    let log_start = pair.src.log().len();

    let out = run(&pair, &["--json", "--from-oauth-token-cmd", &cmd]).await;
    assert!(out.status.success(), "OAuth migration:\n{}", text(&out));
    assert_no_tokens(&out, &[&token]);
    assert!(total(&json(&out), "copied") > 0, "{}", text(&out));

    // Every source login of the run was OAUTHBEARER with our token, none a password.
    let methods = login_methods(&pair.src.log(), log_start);
    assert!(
        !methods.is_empty(),
        "no source login logged:\n{}",
        pair.src.log()
    );
    assert!(
        methods.iter().all(|m| m == "OAUTHBEARER"),
        "source logins used {methods:?}"
    );
    let asked = oauth.log();
    assert!(asked.len() >= methods.len(), "{asked:?} vs {methods:?}");
    assert!(
        asked
            .iter()
            .all(|i| i.active && i.token == token && i.username.as_deref() == Some("alice")),
        "{asked:?}"
    );
    pair.assert_mirrored("after a migration logged in with OAuth")
        .await;
}

/// Simple runs: a revoked token is refused with a clear error naming the server (and
/// nothing is touched); the token file, once it holds a fresh token, is read again by
/// the next run, which copies the mail that arrived meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_refused_clearly_and_a_refreshed_file_resumes() {
    let oauth = OAuthServer::start().await;
    let pair = oauth_pair(&oauth);
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 62,
            messages: 80,
            big_attachments: 0,
        },
    )
    .await;
    let path = token_path(&pair);
    let file = path.to_str().unwrap();
    let t1 = oauth.issue("alice", HOUR);
    write_token(&path, &t1);
    let out = run(&pair, &["--json", "--from-oauth-token-file", file]).await;
    assert!(out.status.success(), "first run:\n{}", text(&out));
    assert_no_tokens(&out, &[&t1]);
    pair.assert_mirrored("after the first run").await;

    // T1 expires; new mail arrives; the file still holds T1.
    oauth.revoke(&t1);
    let msg = new_message(620);
    imap::append(pair.src.port(), "alice", SRC_PW, "INBOX", &msg)
        .await
        .unwrap();
    let out = run(&pair, &["--from-oauth-token-file", file]).await;
    assert!(
        !out.status.success(),
        "a revoked token was accepted:\n{}",
        text(&out)
    );
    assert_no_tokens(&out, &[&t1]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let server = format!("127.0.0.1:{}", pair.src.port());
    assert!(
        stderr.contains("OAuth") && stderr.contains("token") && stderr.contains(&server),
        "the error should say that the OAuth token for {server} was refused:\n{}",
        text(&out)
    );
    let total_before: usize = before.values().map(Vec::len).sum();
    assert_eq!(count_destination(&pair).await, total_before);
    assert!(
        oauth.log().iter().any(|i| i.token == t1 && !i.active),
        "Dovecot did not ask about the revoked token: {:?}",
        oauth.log()
    );

    // A refresh helper writes T2: the next run reads it and catches up.
    let t2 = oauth.issue("alice", HOUR);
    write_token(&path, &t2);
    let out = run(&pair, &["--json", "--from-oauth-token-file", file]).await;
    assert!(
        out.status.success(),
        "run with the refreshed token:\n{}",
        text(&out)
    );
    assert_no_tokens(&out, &[&t1, &t2]);
    assert_eq!(total(&json(&out), "copied"), 1, "{}", text(&out));
    pair.assert_mirrored("after the run with the refreshed token")
        .await;
}

/// A long `--follow` run outlives its token: after the first pass the token expires and a
/// refresh helper replaces the file; new mail still arrives on the destination (the pass
/// woken by IDLE logs in with the new token), no pass fails, and Ctrl-C between passes
/// ends the run with status 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_follow_run_survives_token_expiry_between_passes() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let oauth = OAuthServer::start().await;
    let pair = oauth_pair(&oauth);
    populate(
        &pair,
        &CorpusSpec {
            seed: 63,
            messages: 60,
            big_attachments: 0,
        },
    )
    .await;
    let path = token_path(&pair);
    let t1 = oauth.issue("alice", HOUR);
    write_token(&path, &t1);
    // Passes are woken by new mail (IDLE on the source INBOX); the interval only bounds
    // the wait. Ctrl-C is sent between passes: one it interrupts ends with status 1.
    let mut child = oauth_command(
        &pair,
        &[
            "--follow",
            "--interval",
            "5s",
            "--from-oauth-token-file",
            path.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let stdout = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    // stderr line by line: `pass N: ...` is printed as each pass ends.
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stderr = {
        let lines = lines.clone();
        let mut r = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = r.next_line().await {
                lines.lock().unwrap().push(l);
            }
        })
    };
    let passes = |lines: &std::sync::Mutex<Vec<String>>| -> Vec<String> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("pass "))
            .cloned()
            .collect()
    };
    let wait_for_pass = |n: usize, what: &'static str| {
        let lines = lines.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if passes(&lines).len() >= n {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: no `pass {n}:` line within 60 s:\n{}",
                    lines.lock().unwrap().join("\n")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for_pass(1, "the first pass").await;
    assert!(child.try_wait().unwrap().is_none(), "--follow ended early");
    // mailshift now waits for new mail in a session opened with T1.

    // The refresh helper writes T2; a moment later T1 expires; then new mail arrives.
    let t2 = oauth.issue("alice", HOUR);
    write_token(&path, &t2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    oauth.revoke(&t1);
    let expired_at = Instant::now();
    let done = passes(&lines).len();
    imap::append(pair.src.port(), "alice", SRC_PW, "INBOX", &new_message(630))
        .await
        .unwrap();
    // The pass that copies it, and the one after it (woken by the interval at the
    // latest), both log in with T2.
    wait_for_pass(done + 2, "after the token switch").await;

    let pid = child.id().expect("mailshift is running");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("--follow did not stop within 30 s of Ctrl-C")
        .unwrap();
    stderr.await.unwrap();
    let out = Output {
        status,
        stdout: stdout.await.unwrap(),
        stderr: lines.lock().unwrap().join("\n").into_bytes(),
    };
    assert_no_tokens(&out, &[&t1, &t2]);
    assert!(
        status.success(),
        "--follow should end with status 0 after Ctrl-C between passes:\n{}",
        text(&out)
    );
    let all = text(&out);
    assert!(
        !all.contains("OAuth login") && !all.contains("refused:"),
        "a login failed:\n{all}"
    );
    let copied: Vec<String> = passes(&lines)
        .into_iter()
        .skip(done)
        .filter(|l| l.contains(": 1 copied,"))
        .collect();
    assert_eq!(copied.len(), 1, "the new mail was not copied once:\n{all}");

    // Introspections: T1 before the switch, only T2 after it, and never an "inactive"
    // answer (mailshift never presented the expired T1).
    let asked = oauth.log();
    assert!(asked.iter().all(|i| i.active), "{asked:?}");
    assert!(asked.iter().any(|i| i.token == t1));
    let after: Vec<_> = asked.iter().filter(|i| i.at > expired_at).collect();
    assert!(
        after.len() >= 2,
        "too few logins after the switch: {after:?}"
    );
    assert!(after.iter().all(|i| i.token == t2), "{after:?}");
    pair.assert_mirrored("after following across a token expiry")
        .await;
}

/// Google and Microsoft offer XOAUTH2 only: a destination logged into with XOAUTH2.
#[tokio::test(flavor = "multi_thread")]
async fn xoauth2_login_to_the_destination_mirrors_the_source() {
    let oauth = OAuthServer::start().await;
    let folders = corpus::standard_folders();
    let src = Dovecot::start(DovecotOptions {
        delimiter: '.',
        special_use: special_use_options(&folders, '.'),
        ..Default::default()
    })
    .expect("start source dovecot");
    let dst = Dovecot::start(DovecotOptions {
        special_use: vec![("Sent".into(), "\\Sent".into())],
        oauth2_introspection_url: Some(oauth.url()),
        oauth2_xoauth2_only: true,
        ..Default::default()
    })
    .expect("start destination dovecot with an XOAUTH2-only oauth2 passdb");
    src.add_user("alice", SRC_PW);
    dst.add_user("alice", DST_PW);
    let pair = Pair {
        src,
        dst,
        dir: tempfile::tempdir().expect("tempdir"),
    };
    populate(
        &pair,
        &CorpusSpec {
            seed: 63,
            messages: 120,
            big_attachments: 0,
        },
    )
    .await;
    let token = oauth.issue("alice", HOUR);
    let path = pair.dir.path().join("dest-token");
    write_token(&path, &token);
    let log_start = pair.dst.log().len();
    let mut cmd = pair.command(&["--json", "--to-oauth-token-file", path.to_str().unwrap()]);
    cmd.env_remove("MAILSHIFT_TO_PASSWORD");
    let out = cmd.output().expect("run mailshift");
    assert!(out.status.success(), "XOAUTH2 migration:\n{}", text(&out));
    assert_no_tokens(&out, &[&token]);
    let methods = login_methods(&pair.dst.log(), log_start);
    assert!(
        !methods.is_empty() && methods.iter().all(|m| m == "XOAUTH2"),
        "{methods:?}"
    );
    pair.assert_mirrored("after a migration into an XOAUTH2 server")
        .await;
}
