//! The common mistakes a new user makes, each answered at once with the fix and the exit
//! status of the table (README, "Exit statuses"): TLS on a plain-text port and the
//! reverse, a wrong port, an unknown host, a fleet mailbox that would log in in plain
//! text, logs into a file, a long copy whose progress goes to a log. Each case is
//! judged on what the operator reads and on the exit status; none is retried at start-up.
//! (A refused password, an unreachable server, Ctrl-C, `--help` with secrets in the
//! environment and the JSON documents have their own tests in migrate.rs, verify.rs and
//! json.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_tests::corpus::CorpusSpec;
use mailshift_tests::dovecot::DovecotOptions;
use mailshift_tests::fleet::{new_fleet, skip};
use mailshift_tests::mailshift_bin;
use mailshift_tests::pair::*;
use std::process::{Command, Output, Stdio};

/// `mailshift migrate` from the pair's source to `to` (password from the environment).
fn migrate_to(pair: &Pair, to: &str, extra: &[&str]) -> Output {
    let out = Command::new(mailshift_bin())
        .args(["migrate", "--from"])
        .arg(pair.src.url("alice"))
        .args(["--to", to, "--from-allow-plaintext", "--state"])
        .arg(pair.state())
        .args(extra)
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_no_secrets(&out);
    out
}

/// The start-up retry loop logs "retrying" at each attempt: a mistake must not get one.
fn assert_not_retried(out: &Output) {
    assert!(
        !text(out).contains("retrying"),
        "a mistake was retried:\n{}",
        text(out)
    );
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_on_a_plain_port_and_plain_text_on_a_tls_port_name_the_right_url() {
    let pair = Pair::new(DovecotOptions {
        tls: true,
        ..Default::default()
    });
    let (plain, tls) = (pair.dst.port(), pair.dst.tls_port().unwrap());

    // imaps:// on the STARTTLS port: the server answers the handshake in plain text.
    let out = migrate_to(&pair, &format!("imaps://alice@127.0.0.1:{plain}"), &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{plain} is not a TLS port: use imap://alice@127.0.0.1:{plain} (STARTTLS)"
        )),
        "{}",
        text(&out)
    );
    assert_not_retried(&out);

    // imap:// on the TLS port: the server waits for a handshake and says nothing.
    let out = migrate_to(
        &pair,
        &format!("imap://alice@127.0.0.1:{tls}"),
        &["--timeout", "3"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("use imaps://alice@127.0.0.1:{tls}")),
        "{}",
        text(&out)
    );
    assert_not_retried(&out);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_port_or_an_unknown_host_fails_at_once_with_what_to_check() {
    let pair = Pair::new(DovecotOptions::default());
    let port = free_port();

    // Nothing listens on the port: exit 3 at once, for migrate and verify alike.
    let out = migrate_to(&pair, &format!("imap://alice@127.0.0.1:{port}"), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "nothing accepts connections on port {port} of 127.0.0.1: check the port (IMAP is 143 with STARTTLS, 993 with TLS)"
        )),
        "{}",
        text(&out)
    );
    assert_not_retried(&out);
    let out = Command::new(mailshift_bin())
        .args(["verify", "--allow-plaintext", "--from"])
        .arg(pair.src.url("alice"))
        .arg("--to")
        .arg(format!("imap://alice@127.0.0.1:{port}"))
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "verify: {}", text(&out));
    assert!(text(&out).contains("check the port"), "{}", text(&out));

    // An unknown host. The lookup runs in a network namespace of its own (`unshare -n`:
    // only a loopback that is down), so it fails without a query leaving the machine,
    // the way a name that does not resolve fails.
    let probe = Command::new("unshare").args(["-n", "true"]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test needs `unshare -n` (util-linux, run as root)"
    );
    let out = Command::new("unshare")
        .arg("-n")
        .arg(mailshift_bin())
        .args([
            "migrate",
            "--from",
            "imap://alice@mail.old-host.invalid:143",
            "--to",
            "imap://alice@mail.new-host.invalid:143",
            "--allow-plaintext",
            "--state",
        ])
        .arg(pair.state())
        .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
        .env("MAILSHIFT_TO_PASSWORD", DST_PW)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_no_secrets(&out);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    for host in ["mail.old-host.invalid", "mail.new-host.invalid"] {
        assert!(
            text(&out).contains(&format!(
                "the host name {host} does not resolve: check its spelling"
            )),
            "both sides are named: {}",
            text(&out)
        );
    }
    assert_not_retried(&out);
}

/// Logs written to a file carry no colour codes, and a long copy whose stderr goes to
/// a log says how far it is, in plain lines, while it runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_file_gets_plain_lines_and_periodic_progress() {
    let pair = Pair::new(DovecotOptions::default());
    populate(
        &pair,
        &CorpusSpec {
            seed: 44,
            messages: 600,
            big_attachments: 0,
        },
    )
    .await;
    let out = pair
        .command(&[
            "--log-format",
            "text",
            "--connections",
            "1",
            "--batch-messages",
            "5",
            "--progress-every",
            "100ms",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\u{1b}'), "colour codes in a log:\n{err}");
    assert!(err.contains(" INFO "), "no log lines at info:\n{err}");
    // Before the copy, the folders being created ("progress: creating folders on the
    // new server: 3 of 12"); then the messages.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("progress: ") && !l.contains("creating folders"))
        .collect();
    assert!(
        lines.len() >= 2,
        "fewer than two progress lines in a multi-second copy:\n{err}"
    );
    for l in &lines {
        // progress: 1,234 of 3,025 messages (40%), 3 of 12 folders done, 250 msg/s[, ETA ..]
        assert!(l.contains(" of 600 messages ("), "{l}");
        assert!(l.contains(" folders done, "), "{l}");
        assert!(l.contains(" msg/s"), "{l}");
    }
    // The result is stdout's; diagnostics and progress are stderr's.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("complete: "), "{stdout}");
    assert!(!stdout.contains("progress: "), "{stdout}");
}

/// A fleet mailbox on a server without STARTTLS: `batch verify` names the option the
/// fleet accepts (`batch import --allow-plaintext`), not migrate's.
#[test]
fn a_fleet_mailbox_that_would_log_in_in_plain_text_names_the_fleet_option() {
    if skip() {
        return;
    }
    let pair = Pair::new(DovecotOptions::default());
    let fleet = new_fleet();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("plain.csv");
    std::fs::write(
        &csv,
        format!(
            "source_host,source_port,source_user,source_password,dest_host,dest_port,dest_user,dest_password,tls\n\
             127.0.0.1,{},alice,{SRC_PW},127.0.0.1,{},alice,{DST_PW},starttls\n",
            pair.src.port(),
            pair.dst.port()
        ),
    )
    .unwrap();
    let out = fleet.run(
        &["batch", "import", csv.to_str().unwrap(), "--name", "plain"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = fleet.run(&["batch", "verify", "plain"], &[]);
    assert_no_secrets(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("batch import --allow-plaintext"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains("pass --allow-plaintext"),
        "{}",
        text(&out)
    );
    // Not a refused password: the login was never tried.
    assert!(text(&out).contains("login failed/failed"), "{}", text(&out));
}

/// What people and servers named reaches the terminal escaped (an escape sequence in a
/// spreadsheet's user name cannot recolour or retitle it), and `status` lines its
/// columns up whatever the lengths of the addresses.
#[test]
fn escape_sequences_never_reach_the_terminal_and_status_columns_line_up() {
    if skip() {
        return;
    }
    let fleet = new_fleet();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("mixed.csv");
    std::fs::write(
        &csv,
        "source_host,source_user,source_password,dest_host,dest_user,dest_password,tls\n\
         old.example,ann,Pw-ann-1,new.example,ann@acme.example,Pw-ann-2,starttls\n\
         old.example,evil\u{1b}]0;pwned\u{7}\u{1b}[2J,Pw-evil-1,new.example,evil@acme.example,Pw-evil-2,starttls\n\
         a-much-longer-old-server-name.example,bartholomew.longname,Pw-bart-1,new.example,bart@acme.example,Pw-bart-2,starttls\n",
    )
    .unwrap();
    let mut all = String::new();
    for args in [
        &["batch", "import", csv.to_str().unwrap(), "--name", "mixed"][..],
        &["batch", "status", "mixed"][..],
        &["status"][..],
    ] {
        let out = fleet.run(args, &[]);
        assert!(
            !text(&out).contains('\u{1b}') && !text(&out).contains('\u{7}'),
            "`{}` printed a raw control character:\n{}",
            args.join(" "),
            text(&out).escape_debug()
        );
        assert!(!text(&out).contains("Pw-"), "a password in the output");
        all.push_str(&text(&out));
    }
    // The refused row is named by its line, its control characters shown, not run.
    assert!(all.contains("line 3"), "{all}");
    assert!(all.contains("\\u{1b}"), "{all}");

    let out = fleet.run(&["status"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let table: Vec<&str> = stdout.lines().collect();
    let header = table
        .iter()
        .position(|l| l.starts_with("mailbox (source)"))
        .unwrap_or_else(|| panic!("no status table:\n{}", text(&out)));
    let rows = &table[header + 1..];
    assert_eq!(rows.len(), 2, "{}", text(&out));
    // Every column starts where its header starts: `status` left-aligned, the counts
    // right-aligned (ending where their header ends).
    let at = |line: &str, col: &str| line.find(col).unwrap();
    let status_at = at(table[header], "status");
    let copied_end = at(table[header], "copied") + "copied".len();
    for r in rows {
        assert_eq!(
            r[status_at..].split_whitespace().next(),
            Some("pending"),
            "misaligned:\n{}\n{r}",
            table[header]
        );
        assert!(
            r.chars().nth(status_at - 1) == Some(' ')
                && r.chars().nth(copied_end - 1) == Some('0')
                && r.chars().nth(copied_end) == Some(' '),
            "misaligned:\n{}\n{r}",
            table[header]
        );
    }
}
