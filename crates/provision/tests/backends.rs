//! The backends against real things: the `sql` backend on an in-house schema mapped by
//! the configuration (PostgreSQL on 127.0.0.1:5432, a fresh database per test, skipped
//! with `MAILSHIFT_TEST_SKIP_POSTGRES=1`), and the `command` backend's time limit and
//! refusals with a real program. PostfixAdmin's own layout is covered end to end in
//! `tests/tests/provision.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_core::aliases::{AliasEntry, AliasKind};
use mailshift_core::provision::{
    Address, Lookup, MailboxSpec, NewPassword, PasswordCarry, PasswordHash, Provisioner,
};
use mailshift_provision::{BackendConfig, connect, hash};
use sea_orm::{ConnectionTrait, Database};
use secrecy::SecretString;
use std::os::unix::fs::PermissionsExt;

const BASE: &str = "postgres://postgres@127.0.0.1:5432";

fn skip_pg() -> bool {
    std::env::var("MAILSHIFT_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

fn spec(addr: &str, carry: PasswordCarry) -> MailboxSpec {
    MailboxSpec {
        mailbox_id: uuid::Uuid::nil(),
        address: Address::parse(addr).unwrap(),
        quota_bytes: 1536 << 20,
        carry,
        note: None,
    }
}

#[tokio::test]
async fn sql_backend_on_an_in_house_schema() {
    if skip_pg() {
        return;
    }
    let name = format!(
        "mailshift_prov_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let admin = Database::connect(format!("{BASE}/postgres")).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let outcome = tokio::spawn(in_house(name.clone())).await;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn in_house(name: String) {
    let db = Database::connect(format!("{BASE}/{name}")).await.unwrap();
    db.execute_unprepared(
        "CREATE SCHEMA mail;
         CREATE TABLE mail.users (email text PRIMARY KEY, pw_hash text NOT NULL,
             quota_mb integer NOT NULL DEFAULT 0, home text, enabled smallint NOT NULL);
         CREATE TABLE mail.forwardings (source text PRIMARY KEY, destination text NOT NULL,
             enabled smallint NOT NULL);",
    )
    .await
    .unwrap();
    let config = BackendConfig::from_toml(&format!(
        r#"
        backend = "sql"
        url = "{BASE}/{name}"
        password_scheme = "SHA256-CRYPT"
        maildir_template = "/var/vmail/{{domain}}/{{local_part}}"
        quota_unit = "mib"
        active_value = 1
        [mailbox]
        table = "mail.users"
        username = "email"
        password = "pw_hash"
        name = ""
        maildir = "home"
        quota = "quota_mb"
        local_part = ""
        domain = ""
        created = ""
        modified = ""
        active = "enabled"
        [alias]
        table = "mail.forwardings"
        address = "source"
        goto = "destination"
        domain = ""
        created = ""
        modified = ""
        active = "enabled"
        mailbox_self_alias = false
        [domain]
        table = ""
        "#
    ))
    .unwrap();
    let p = connect(&config, "b").await.unwrap();
    assert!(
        p.describe()
            .starts_with("sql postgres://postgres@127.0.0.1:5432/")
    );

    let pw = SecretString::from("Plain-Pw-3");
    p.create_mailbox(
        &spec("ann@x.example", PasswordCarry::Plaintext),
        &NewPassword::Plaintext(pw.clone()),
    )
    .await
    .unwrap();
    let carried = PasswordHash::parse(
        "{BLF-CRYPT}$2y$05$7gE74aq3A/vc4c2zikWLP.yEbAKNspErwp5YiiBYRSgdIoTuIpbue",
    )
    .unwrap();
    p.create_mailbox(
        &spec("ben@x.example", PasswordCarry::Hash),
        &NewPassword::Hash(carried.clone()),
    )
    .await
    .unwrap();
    let forward = AliasEntry {
        address: Address::parse("ann@x.example").unwrap(),
        targets: vec!["ann@elsewhere.example".into()],
        kind: AliasKind::Forward { keep_copy: true },
        lines: vec![1],
    };
    p.set_alias(&forward).await.unwrap();

    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT email, pw_hash, quota_mb, home, enabled FROM mail.users ORDER BY email",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let ann_hash: String = rows[0].try_get("", "pw_hash").unwrap();
    let ann_hash = PasswordHash::parse(&ann_hash).unwrap();
    assert_eq!(ann_hash.scheme(), "SHA256-CRYPT");
    assert_eq!(hash::matches(&ann_hash, &pw), Some(true));
    assert_eq!(rows[0].try_get::<i32>("", "quota_mb").unwrap(), 1536);
    assert_eq!(
        rows[0].try_get::<String>("", "home").unwrap(),
        "/var/vmail/x.example/ann"
    );
    assert_eq!(rows[0].try_get::<i16>("", "enabled").unwrap(), 1);
    assert_eq!(
        rows[1].try_get::<String>("", "pw_hash").unwrap(),
        carried.expose()
    );

    let existing = p
        .existing(&Lookup {
            mailboxes: vec!["ann@x.example".into(), "zed@x.example".into()],
            aliases: vec!["ann@x.example".into()],
            domains: vec!["x.example".into()],
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        existing.mailboxes.into_iter().collect::<Vec<_>>(),
        ["ann@x.example"]
    );
    assert_eq!(existing.aliases["ann@x.example"], forward.goto());
    assert_eq!(existing.domains, None, "no domain table");

    // Creating it again is refused by the database, in words without the hash.
    let e = p
        .create_mailbox(
            &spec("ben@x.example", PasswordCarry::Hash),
            &NewPassword::Hash(carried.clone()),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("creating mailbox ben@x.example"), "{e}");
    assert!(!e.message.contains(carried.value()), "{e}");

    // A wrong column name fails at connect, before anything is written.
    let wrong = BackendConfig::from_toml(&format!(
        "backend = \"sql\"\nurl = \"{BASE}/{name}\"\n[mailbox]\ntable = \"mail.users\"\n"
    ))
    .unwrap();
    let e = connect(&wrong, "b").await.err().unwrap().to_string();
    assert!(e.contains("checking table mail.users"), "{e}");
    assert!(e.contains("does not exist"), "{e}");
}

/// A killed process whose parent has not reaped it yet.
fn zombie(proc_dir: &std::path::Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

fn program(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("prog.sh");
    std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

async fn command(dir: &std::path::Path, body: &str, timeout: u64) -> Box<dyn Provisioner> {
    let prog = program(dir, body);
    let config = BackendConfig::from_toml(&format!(
        "backend = \"command\"\nprogram = \"{}\"\npassword = \"plaintext\"\ntimeout_secs = {timeout}\n",
        prog.display()
    ))
    .unwrap();
    connect(&config, "b").await.unwrap()
}

#[tokio::test]
async fn command_backend_time_limit_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let pw = NewPassword::Plaintext(SecretString::from("Secret-Pw-55"));
    let ann = spec("ann@x.example", PasswordCarry::Plaintext);

    let pidfile = dir.path().join("child.pid");
    let p = command(
        dir.path(),
        &format!(
            "cat >/dev/null; sleep 60 & echo $! > {}; sleep 30",
            pidfile.display()
        ),
        1,
    )
    .await;
    let started = std::time::Instant::now();
    let e = p.create_mailbox(&ann, &pw).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(e.message.contains("no answer within 1 s"), "{e}");
    assert!(e.is_retryable(), "{e:?}");
    // What it started is stopped with it.
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let proc_dir = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while proc_dir.exists() && !zombie(&proc_dir) {
        assert!(
            std::time::Instant::now() < deadline,
            "the program's child outlived the time-out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Long stderr echoing the input: truncated, the password blanked.
    let p = command(
        dir.path(),
        "input=$(cat); for i in $(seq 200); do echo \"noise $i\" >&2; done; echo \"$input\" >&2; exit 7",
        10,
    )
    .await;
    let e = p.create_mailbox(&ann, &pw).await.unwrap_err();
    assert!(e.message.contains("exit status 7"), "{e}");
    assert!(!e.message.contains("Secret-Pw-55"), "{e}");
    assert!(e.message.contains("[redacted]"), "{e}");
    assert!(!e.message.contains("noise 150"), "not truncated: {e}");
    assert!(e.message.len() < 1500, "{}", e.message.len());

    // A lookup answer that is not the documented JSON.
    let prog = program(dir.path(), "cat >/dev/null; echo 'not json'");
    let config = BackendConfig::from_toml(&format!(
        "backend = \"command\"\nprogram = \"{}\"\nlookup = true\n",
        prog.display()
    ))
    .unwrap();
    let p = connect(&config, "b").await.unwrap();
    let e = p.existing(&Lookup::default()).await.unwrap_err();
    assert!(e.message.contains("the answer is not"), "{e}");

    // A program that does not exist.
    let config =
        BackendConfig::from_toml("backend = \"command\"\nprogram = \"/nonexistent/prog\"\n")
            .unwrap();
    let p = connect(&config, "b").await.unwrap();
    let e = p.create_mailbox(&ann, &pw).await.unwrap_err();
    assert!(e.message.contains("cannot run the program"), "{e}");
}
