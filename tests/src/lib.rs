//! Integration-test harness for mailshift.
//!
//! This crate is the *independent observer* of what the migrator did: it starts throwaway
//! Dovecot servers ([`dovecot`]), generates a deterministic, deliberately nasty mail corpus
//! ([`corpus`]), fills and fingerprints mailboxes over IMAP with its own small client
//! ([`imap`]) and locates the `mailshift` binary under test ([`mailshift_bin`]).
//! For OAuth 2.0 logins it has a token-introspection server for Dovecot's `oauth2`
//! passdb ([`oauth`]). For outage tests it runs private PostgreSQL and RabbitMQ servers that
//! may be crashed and started again ([`services`]). For HTTP clients that look names up (mail client discovery) it
//! has a loopback forward proxy that stands in for DNS ([`webproxy`]). For provisioning,
//! PostfixAdmin's tables ([`postfixadmin`]) that a Dovecot can take its users from. For
//! the new provider's sending side it runs Postfix submission
//! with OpenDKIM signing, delivering into a test Dovecot ([`smtp`]), and an HTTPS server
//! with a private CA for MTA-STS policies ([`https`]).
//! It depends on no `mailshift-*` crate on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod baseline;
pub mod corpus;
pub mod dns;
pub mod dovecot;
pub mod fleet;
pub mod https;
pub mod imap;
pub mod oauth;
pub mod ops;
pub mod otlp;
pub mod pair;
pub mod postfixadmin;
pub mod proxy;
pub mod schema;
pub mod services;
pub mod smtp;
pub mod webproxy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path of the `mailshift` binary in the same target directory as the running test
/// executable (`target/<profile>/mailshift`), or `MAILSHIFT_BIN` when set (a binary
/// copied away from a target directory that others build into).
///
/// If it does not exist yet, `cargo build -p mailshift --bin mailshift` is run once per
/// process from the workspace root (with `--release` when the tests run from a release
/// profile directory); panics with a clear message if that fails.
pub fn mailshift_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("MAILSHIFT_BIN") {
                let bin = PathBuf::from(bin);
                assert!(
                    bin.is_file(),
                    "MAILSHIFT_BIN={} is not a file",
                    bin.display()
                );
                return bin;
            }
            let exe = std::env::current_exe().expect("current_exe");
            // target/<profile>/deps/<test>-<hash>  ->  target/<profile>
            let deps = exe
                .parent()
                .expect("test executable has a parent directory");
            let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
                deps.parent().expect("deps has a parent directory")
            } else {
                deps
            };
            let bin = profile_dir.join(format!("mailshift{}", std::env::consts::EXE_SUFFIX));
            if bin.is_file() {
                return bin;
            }
            build_mailshift(profile_dir);
            assert!(
                bin.is_file(),
                "`cargo build -p mailshift --bin mailshift` succeeded but {} does not exist",
                bin.display()
            );
            bin
        })
        .clone()
}

fn build_mailshift(profile_dir: &Path) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "-p", "mailshift", "--bin", "mailshift"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("could not run cargo to build the mailshift binary: {e}");
    });
    assert!(
        status.success(),
        "the mailshift binary is missing and `cargo build -p mailshift --bin mailshift` \
         (run in {}) failed with {status}",
        workspace.display()
    );
}
