#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `mailshift provision` end to end: a batch imported from CSV, its destination mailboxes
//! created in PostfixAdmin's tables (real PostgreSQL on 127.0.0.1:5432) that a real
//! Dovecot uses as its passdb/userdb, every user logging in with their old password (or
//! the temporary one of the one-time export), aliases and forwards checked with psql,
//! idempotent runs, dry runs, bad alias files; and the `command` backend driving a test
//! program that records every JSON document, argument list and environment it gets.
//! No password, hash or temporary password may appear in any output or log.
//!
//! `MAILSHIFT_TEST_SKIP_FLEET=1` skips these tests where PostgreSQL is absent.

use mailshift_tests::corpus::{self, CorpusSpec};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions, hash_password};
use mailshift_tests::fleet::{Fleet, new_fleet, psql, skip};
use mailshift_tests::imap;
use mailshift_tests::pair::text;
use mailshift_tests::postfixadmin;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const ALICE_PW: &str = "Alice-Old-Pw-7";
const BOB_PW: &str = "Bob-Old-Pw-7";
const CAROL_PW: &str = "Carol-App-Pw-7";
/// What the spreadsheet gives as carol's new-server password: not hers (she gets a
/// temporary password).
const CAROL_PLACEHOLDER: &str = "Carol-Unknown-7";

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

/// Every secret of the scenario is absent from a command's stdout and stderr.
fn assert_no_secret(out: &Output, secrets: &[&str]) {
    let all = text(out);
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            !all.contains(s),
            "a secret ({} chars) leaked into the output:\n{all}",
            s.len()
        );
    }
}

fn run(fleet: &Fleet, args: &[&str]) -> Output {
    // Debug logs on: they must not carry secrets either.
    fleet.run(args, &[("RUST_LOG", "debug")])
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(out)))
}

/// The temporary passwords of an export file: address -> password.
fn exported(path: &Path) -> Vec<(String, String)> {
    let body = std::fs::read_to_string(path).unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("address,temporary_password"), "{body}");
    lines
        .map(|l| {
            let (a, p) = l.split_once(',').unwrap();
            (a.to_string(), p.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_backend_creates_mailboxes_users_log_in_with_their_old_passwords() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = Dovecot::start(DovecotOptions::default()).unwrap();
    for (u, pw) in [("alice", ALICE_PW), ("bob", BOB_PW), ("carol", CAROL_PW)] {
        src.add_user(u, pw);
    }
    for (i, (u, pw)) in [("alice", ALICE_PW), ("bob", BOB_PW), ("carol", CAROL_PW)]
        .iter()
        .enumerate()
    {
        let c = corpus::generate(&CorpusSpec {
            seed: 700 + i as u64,
            messages: 12 + 8 * i,
            big_attachments: 0,
        });
        imap::populate(src.port(), u, pw, &c).await.unwrap();
    }
    let pfa = postfixadmin::create();
    let dst = Dovecot::start(DovecotOptions {
        pgsql_database: Some(pfa.name.clone()),
        ..Default::default()
    })
    .unwrap();
    let fleet = new_fleet();

    // Alice's old hash as Dovecot makes it; bob's plaintext; carol's neither.
    let alice_hash = hash_password("SHA512-CRYPT", ALICE_PW);
    assert!(alice_hash.starts_with("{SHA512-CRYPT}$6$"), "{alice_hash}");
    let alice_hash_value = alice_hash.split_once('}').unwrap().1.to_string();
    let row = |user: &str, spw: &str, dpw: &str, hash: &str| {
        format!(
            "127.0.0.1,{},starttls,{user},{spw},127.0.0.1,{},{user}@acme.example,{dpw},{hash}\n",
            src.port(),
            dst.port()
        )
    };
    let csv = write(
        dir.path(),
        "acme.csv",
        &format!(
            "source_host,source_port,tls,source_user,source_password,dest_host,dest_port,dest_user,dest_password,source_password_hash\n{}{}{}",
            row("alice", ALICE_PW, ALICE_PW, &alice_hash),
            row("bob", BOB_PW, BOB_PW, ""),
            row("carol", CAROL_PW, CAROL_PLACEHOLDER, ""),
        ),
    );
    let secrets: Vec<&str> = vec![
        ALICE_PW,
        BOB_PW,
        CAROL_PW,
        CAROL_PLACEHOLDER,
        &alice_hash_value,
    ];
    let out = run(
        &fleet,
        &[
            "batch",
            "import",
            &csv,
            "--name",
            "acme",
            "--allow-plaintext",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&out, &secrets);

    // The source's sizes (the destination logins fail: nothing exists yet).
    let out = run(&fleet, &["batch", "verify", "acme", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let verify = json(&out);
    let mut source_bytes = std::collections::BTreeMap::new();
    for m in verify["mailboxes"].as_array().unwrap() {
        assert_eq!(m["source_login"], "ok", "{m:#}");
        assert_eq!(m["dest_login"], "refused", "{m:#}");
        // imap://alice@127.0.0.1:PORT
        let source = m["source"].as_str().unwrap();
        let user = source["imap://".len()..]
            .split('@')
            .next()
            .unwrap()
            .to_string();
        source_bytes.insert(user, m["source_bytes"].as_u64().unwrap());
    }
    assert_eq!(source_bytes.len(), 3, "{verify:#}");
    assert!(
        imap::login(dst.port(), "alice@acme.example", ALICE_PW)
            .await
            .is_err()
    );

    let config = write(
        dir.path(),
        "backend.toml",
        &format!(
            "backend = \"sql\"\nurl = \"postgres://postgres@127.0.0.1:5432/{}\"\n",
            pfa.name
        ),
    );
    let aliases = write(
        dir.path(),
        "aliases.csv",
        "address,target,keep_copy\n\
         sales@acme.example,alice@acme.example\n\
         sales@acme.example,bob@acme.example\n\
         info@acme.example,sales@acme.example\n\
         bob@acme.example,bob@elsewhere.example,yes\n",
    );
    let export = dir.path().join("passwords.csv");
    let export_s = export.to_str().unwrap();

    // A dry run says what it would do and changes nothing.
    let empty = postfixadmin::fingerprint(&pfa.name);
    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "acme",
            "--backend-config",
            &config,
            "--aliases",
            &aliases,
            "--quota-min",
            "0",
            "--dry-run",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&out, &secrets);
    let plan = json(&out);
    let carry: std::collections::BTreeMap<String, String> = plan["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["action"], "create", "{m:#}");
            (
                m["address"].as_str().unwrap().to_string(),
                m["password"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(carry["alice@acme.example"], "hash");
    assert_eq!(carry["bob@acme.example"], "plaintext");
    assert_eq!(carry["carol@acme.example"], "temporary");
    assert_eq!(plan["aliases"].as_array().unwrap().len(), 3, "{plan:#}");
    assert_eq!(plan["domains"][0]["domain"], "acme.example");
    assert_eq!(
        postfixadmin::fingerprint(&pfa.name),
        empty,
        "a dry run changed the tables"
    );
    assert!(!export.exists());

    // Without an export file, nobody would learn carol's temporary password: refused.
    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "acme",
            "--backend-config",
            &config,
            "--quota-min",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--export-passwords"), "{}", text(&out));
    assert_eq!(postfixadmin::fingerprint(&pfa.name), empty);

    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "acme",
            "--backend-config",
            &config,
            "--aliases",
            &aliases,
            "--quota-min",
            "0",
            "--export-passwords",
            export_s,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&out, &secrets);
    let t = text(&out);
    assert!(t.contains("0 mailboxes already exist, 3 created"), "{t}");
    assert!(t.contains("[3/3] "), "a progress line per mailbox: {t}");

    // The export: carol only, 0600, and her password is nowhere else.
    let mode = std::fs::metadata(&export).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let temps = exported(&export);
    assert_eq!(temps.len(), 1, "{temps:?}");
    assert_eq!(temps[0].0, "carol@acme.example");
    let carol_temp = temps[0].1.clone();
    assert!(carol_temp.len() >= 16, "a weak temporary password");
    assert!(!text(&out).contains(&carol_temp));

    // Every user logs in to the new server with their old password (carol: the
    // temporary one), checked by Dovecot against the rows.
    imap::login(dst.port(), "alice@acme.example", ALICE_PW)
        .await
        .unwrap();
    imap::login(dst.port(), "bob@acme.example", BOB_PW)
        .await
        .unwrap();
    imap::login(dst.port(), "carol@acme.example", &carol_temp)
        .await
        .unwrap();
    assert!(
        imap::login(dst.port(), "carol@acme.example", CAROL_PW)
            .await
            .is_err()
    );
    assert!(
        imap::login(dst.port(), "bob@acme.example", ALICE_PW)
            .await
            .is_err()
    );

    // The rows, read with psql.
    let rows = postfixadmin::mailboxes(&pfa.name);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let alice = &rows["alice@acme.example"];
    assert_eq!(alice.password, alice_hash, "the hash is carried as it was");
    assert_eq!(alice.maildir, "acme.example/alice/");
    assert_eq!(
        (alice.local_part.as_str(), alice.domain.as_str()),
        ("alice", "acme.example")
    );
    assert!(alice.active);
    for u in ["bob", "carol"] {
        let r = &rows[&format!("{u}@acme.example")];
        assert!(
            r.password.starts_with("{SHA512-CRYPT}$6$"),
            "{}",
            r.password.len()
        );
    }
    for (u, bytes) in &source_bytes {
        let mib = 1u64 << 20;
        let want = ((*bytes as f64 * 1.5).ceil() as u64).div_ceil(mib) * mib;
        assert_eq!(rows[&format!("{u}@acme.example")].quota as u64, want, "{u}");
    }
    // Dovecot reads the quota from the row.
    let mut s = imap::login(dst.port(), "bob@acme.example", BOB_PW)
        .await
        .unwrap();
    let (_, quotas) = s.get_quota_root("INBOX").await.unwrap();
    let limit = quotas
        .iter()
        .flat_map(|q| &q.resources)
        .find(|r| matches!(r.name, async_imap::types::QuotaResourceName::Storage))
        .map(|r| r.limit)
        .unwrap();
    assert_eq!(limit * 1024, rows["bob@acme.example"].quota as u64);
    let _ = s.logout().await;
    assert_eq!(postfixadmin::domains(&pfa.name), ["acme.example"]);
    let aliases_rows = postfixadmin::aliases(&pfa.name);
    let got = |a: &str| aliases_rows.get(a).cloned().unwrap_or_default();
    assert_eq!(
        got("sales@acme.example"),
        ["alice@acme.example", "bob@acme.example"]
    );
    assert_eq!(got("info@acme.example"), ["sales@acme.example"]);
    assert_eq!(
        got("bob@acme.example"),
        ["bob@acme.example", "bob@elsewhere.example"],
        "a forward keeping a copy lists the mailbox itself"
    );
    assert_eq!(got("alice@acme.example"), ["alice@acme.example"]);

    // mailshift now copies with what the new mailboxes really have: every login works.
    let out = run(&fleet, &["batch", "verify", "acme", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut all_secrets = secrets.clone();
    all_secrets.push(&carol_temp);
    assert_no_secret(&out, &all_secrets);

    // Nothing in clear in mailshift's database.
    let dump = psql(
        &fleet.db.name,
        "SELECT coalesce(string_agg(t::text, ';'), '') FROM provision_mailbox t",
    ) + &psql(
        &fleet.db.name,
        "SELECT string_agg(source_secret || dest_secret, ';') FROM mailbox",
    ) + &psql(&fleet.db.name, "SELECT config FROM provision_backend");
    for s in all_secrets.iter().chain([&pfa.name.as_str()]) {
        assert!(!dump.contains(s), "a secret in clear in the fleet database");
    }
    let recorded = psql(
        &fleet.db.name,
        "SELECT password_carry || ':' || (provisioned_at IS NOT NULL) FROM provision_mailbox ORDER BY password_carry",
    );
    assert_eq!(recorded.trim(), "hash:true\nplaintext:true\ntemporary:true");

    // A second run (the backend remembered) changes nothing, and says so.
    let before = postfixadmin::fingerprint(&pfa.name);
    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "acme",
            "--aliases",
            &aliases,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&out, &all_secrets);
    let again = json(&out);
    assert_eq!(
        again["summary"], "3 mailboxes already exist, 0 created, aliases unchanged",
        "{again:#}"
    );
    assert_eq!(
        postfixadmin::fingerprint(&pfa.name),
        before,
        "a second run changed the tables"
    );

    // Exported once: nothing left to export, and an existing file is never overwritten.
    let second = dir.path().join("again.csv");
    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "acme",
            "--export-passwords",
            second.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!second.exists(), "a temporary password exported twice");
    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "acme",
            "--export-passwords",
            export_s,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(exported(&export)[0].1, carol_temp);
    assert_eq!(postfixadmin::fingerprint(&pfa.name), before);

    // A mailbox of the new server outside the batch is never turned into an alias.
    psql(
        &pfa.name,
        "INSERT INTO mailbox (username, password, local_part, domain) \
         VALUES ('zoe@acme.example', '{PLAIN}x', 'zoe', 'acme.example')",
    );
    let before = postfixadmin::fingerprint(&pfa.name);
    let zoe = write(
        dir.path(),
        "zoe.csv",
        "zoe@acme.example,alice@acme.example\n",
    );
    let out = run(&fleet, &["provision", "--batch", "acme", "--aliases", &zoe]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("zoe@acme.example (aliases file, line 1) is a mailbox on the new server outside batch 'acme'"),
        "{}",
        text(&out)
    );
    assert_eq!(postfixadmin::fingerprint(&pfa.name), before);
}

#[test]
fn bad_alias_rows_are_named_by_line_and_nothing_is_applied() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pfa = postfixadmin::create();
    let fleet = new_fleet();
    let csv = write(
        dir.path(),
        "beta.csv",
        "source_host,source_user,source_password,dest_host,dest_user,dest_password\n\
         old.example,ann,Ann-Pw-1,new.example,ann@beta.example,Ann-Pw-1\n\
         old.example,ben,Ben-Pw-1,new.example,ben@beta.example,Ben-Pw-1\n",
    );
    let out = run(&fleet, &["batch", "import", &csv, "--name", "beta"]);
    assert!(out.status.success(), "{}", text(&out));
    let config = write(
        dir.path(),
        "backend.toml",
        &format!(
            "backend = \"sql\"\nurl = \"postgres://postgres@127.0.0.1:5432/{}\"\n",
            pfa.name
        ),
    );
    let aliases = write(
        dir.path(),
        "aliases.csv",
        "address,target,keep_copy\n\
         team@beta.example,ann@beta.example\n\
         a@beta.example,b@beta.example\n\
         b@beta.example,c@beta.example\n\
         c@beta.example,a@beta.example\n\
         press@beta.example,someone@gmail.example\n\
         ann@beta.example,ann@gmail.example,yes\n\
         not an address,ben@beta.example\n\
         team@beta.example,ann@beta.example\n",
    );
    let empty = postfixadmin::fingerprint(&pfa.name);
    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "beta",
            "--backend-config",
            &config,
            "--aliases",
            &aliases,
            "--quota",
            "1G",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("6 rows of"), "{t}");
    assert!(t.contains("nothing was applied"), "{t}");
    for want in [
        "line 3: loop: a@beta.example -> b@beta.example -> c@beta.example -> a@beta.example",
        "line 4: loop: b@beta.example",
        "line 5: loop: c@beta.example",
        "line 6: alias press@beta.example delivers to someone@gmail.example, outside the batch's domains",
        "line 8: address 'not an address' is not a mail address",
        "line 9: duplicate of line 2",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    // A mailbox's forward may point outside the batch's domains.
    assert!(!t.contains("line 7"), "{t}");
    assert_no_secret(&out, &["Ann-Pw-1", "Ben-Pw-1"]);
    assert_eq!(
        postfixadmin::fingerprint(&pfa.name),
        empty,
        "something was applied"
    );
    assert!(postfixadmin::mailboxes(&pfa.name).is_empty());

    // JSON says the same.
    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "beta",
            "--backend-config",
            &config,
            "--aliases",
            &aliases,
            "--quota",
            "1G",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert_eq!(j["applied"], false);
    let lines: Vec<u64> = j["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 5, 6, 8, 9]);
    assert_eq!(postfixadmin::fingerprint(&pfa.name), empty);
}

/// The command backend's test program: records argv, environment and stdin of each run
/// under `calls/N.*`; fails (echoing its input to stderr) for dave while `fail` exists.
fn recorder(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("calls")).unwrap();
    let script = dir.join("panel.sh");
    std::fs::write(
        &script,
        r#"#!/bin/bash
here="$(cd "$(dirname "$0")" && pwd)"
n=$(ls "$here/calls" | grep -c '\.stdin$')
cat > "$here/calls/$n.stdin"
printf '%s\n' "$0" "$@" > "$here/calls/$n.argv"
env > "$here/calls/$n.env"
if [ -e "$here/fail" ] && grep -q '"address":"dave@' "$here/calls/$n.stdin"; then
  echo "panel: cannot create the mailbox" >&2
  cat "$here/calls/$n.stdin" >&2
  exit 3
fi
exit 0
"#,
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The recorded runs, in order: (argv, environment, stdin as JSON).
fn calls(dir: &Path) -> Vec<(String, String, serde_json::Value)> {
    let mut out = Vec::new();
    for n in 0.. {
        let stdin = dir.join(format!("calls/{n}.stdin"));
        if !stdin.exists() {
            break;
        }
        let read =
            |ext: &str| std::fs::read_to_string(dir.join(format!("calls/{n}.{ext}"))).unwrap();
        let doc = serde_json::from_str(&read("stdin"))
            .unwrap_or_else(|e| panic!("run {n}: stdin is not JSON ({e}): {}", read("stdin")));
        out.push((read("argv"), read("env"), doc));
    }
    out
}

#[test]
fn command_backend_gets_json_on_stdin_and_no_password_in_argv_or_env() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = recorder(dir.path());
    let fleet = new_fleet();
    let alice_hash = hash_password("SHA512-CRYPT", ALICE_PW);
    let alice_hash_value = alice_hash.split_once('}').unwrap().1.to_string();
    let csv = write(
        dir.path(),
        "acme.csv",
        &format!(
            "source_host,source_user,source_password,dest_host,dest_user,dest_password,source_password_hash\n\
             old.example,alice,{ALICE_PW},new.example,alice@acme.example,{ALICE_PW},{alice_hash}\n\
             old.example,bob,{BOB_PW},new.example,bob@acme.example,{BOB_PW},\n\
             old.example,carol,{CAROL_PW},new.example,carol@acme.example,{CAROL_PLACEHOLDER},\n"
        ),
    );
    let out = run(&fleet, &["batch", "import", &csv, "--name", "acme"]);
    assert!(out.status.success(), "{}", text(&out));
    let config = write(
        dir.path(),
        "backend.toml",
        &format!(
            "backend = \"command\"\nprogram = \"{}\"\nargs = [\"--panel\", \"test\"]\n\
             password = \"plaintext\"\nhash_schemes = [\"SHA512-CRYPT\"]\ntimeout_secs = 20\n",
            script.display()
        ),
    );
    let aliases = write(
        dir.path(),
        "aliases.csv",
        "sales@acme.example,alice@acme.example\nbob@acme.example,bob@elsewhere.example,yes\n",
    );
    let export = dir.path().join("passwords.csv");
    let secrets = [
        ALICE_PW,
        BOB_PW,
        CAROL_PW,
        CAROL_PLACEHOLDER,
        alice_hash_value.as_str(),
    ];
    let out = run(
        &fleet,
        &[
            "provision",
            "--batch",
            "acme",
            "--backend-config",
            &config,
            "--aliases",
            &aliases,
            "--quota",
            "2G",
            "--export-passwords",
            export.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&out, &secrets);
    let temps = exported(&export);
    assert_eq!(temps.len(), 1);
    let carol_temp = temps[0].1.clone();
    assert!(!text(&out).contains(&carol_temp));

    let runs = calls(dir.path());
    let docs: Vec<&serde_json::Value> = runs.iter().map(|(_, _, d)| d).collect();
    let actions: Vec<&str> = docs.iter().map(|d| d["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "create_mailbox",
            "create_mailbox",
            "create_mailbox",
            "set_forward",
            "set_alias"
        ],
        "{docs:#?}"
    );
    let by_address = |a: &str| {
        *docs
            .iter()
            .find(|d| d["address"] == a && d["action"] == "create_mailbox")
            .unwrap()
    };
    let alice = by_address("alice@acme.example");
    assert_eq!(alice["version"], 1);
    assert_eq!(alice["batch"], "acme");
    assert_eq!(alice["local_part"], "alice");
    assert_eq!(alice["domain"], "acme.example");
    assert_eq!(alice["quota_bytes"], 2u64 << 30);
    assert_eq!(alice["password"]["origin"], "hash");
    assert_eq!(alice["password"]["scheme"], "SHA512-CRYPT");
    assert_eq!(alice["password"]["hash"], alice_hash.as_str());
    let bob = by_address("bob@acme.example");
    assert_eq!(bob["password"]["origin"], "plaintext");
    assert_eq!(bob["password"]["plaintext"], BOB_PW);
    let carol = by_address("carol@acme.example");
    assert_eq!(carol["password"]["origin"], "temporary");
    assert_eq!(carol["password"]["plaintext"], carol_temp.as_str());
    assert_eq!(carol["temporary"], true);
    let forward = docs.iter().find(|d| d["action"] == "set_forward").unwrap();
    assert_eq!(forward["address"], "bob@acme.example");
    assert_eq!(forward["keep_copy"], true);
    assert_eq!(
        forward["targets"],
        serde_json::json!(["bob@elsewhere.example"])
    );
    let alias = docs.iter().find(|d| d["action"] == "set_alias").unwrap();
    assert_eq!(alias["targets"], serde_json::json!(["alice@acme.example"]));

    // Passwords only ever on stdin: never in argv or the environment, and none of
    // mailshift's own variables (the fleet key, the database URL) reach the program.
    let mut all = secrets.to_vec();
    all.push(&carol_temp);
    for (argv, env, _) in &runs {
        assert_eq!(
            argv.lines().skip(1).collect::<Vec<_>>(),
            ["--panel", "test"],
            "{argv}"
        );
        for s in &all {
            assert!(
                !argv.contains(s) && !env.contains(s),
                "a secret in argv or env"
            );
        }
        assert!(
            !env.contains(&fleet.key),
            "the fleet key reached the program"
        );
        assert!(!env.contains("MAILSHIFT_"), "{env}");
    }

    // No lookup: mailshift's own records make the next run a no-op.
    let out = run(
        &fleet,
        &["provision", "--batch", "acme", "--aliases", &aliases],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("3 mailboxes already exist, 0 created, aliases unchanged"),
        "{}",
        text(&out)
    );
    assert_eq!(calls(dir.path()).len(), 5, "a second run ran the program");

    // A refusal: the exit status and stderr (truncated, secrets blanked) reach the operator.
    let dave = write(
        dir.path(),
        "dave.csv",
        "source_host,source_user,source_password,dest_host,dest_user,dest_password\n\
         old.example,dave,Dave-Pw-77,new.example,dave@acme.example,Dave-Pw-77\n",
    );
    let out = run(&fleet, &["batch", "import", &dave, "--name", "acme"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(dir.path().join("fail"), "").unwrap();
    let out = run(&fleet, &["provision", "--batch", "acme", "--quota", "2G"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("exit status 3"), "{t}");
    assert!(t.contains("panel: cannot create the mailbox"), "{t}");
    assert!(t.contains("[redacted]"), "{t}");
    assert_no_secret(&out, &["Dave-Pw-77"]);
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    let out = run(&fleet, &["provision", "--batch", "acme", "--quota", "2G"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("3 mailboxes already exist, 1 created"),
        "{}",
        text(&out)
    );
    let out = run(&fleet, &["provision", "--batch", "acme", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        json(&out)["summary"],
        "4 mailboxes already exist, 0 created, aliases unchanged"
    );
}
