//! Two Dovecot servers (a `.`-delimited source with the corpus's special-use folders and
//! a `/`-delimited destination whose \Sent folder is "Sent"), one user each, and the
//! `mailshift` command line pointed at them: the fixture of the end-to-end tests.

use crate::corpus::{self, CorpusSpec, special_use_options};
use crate::dovecot::{Dovecot, DovecotOptions};
use crate::imap::{self, Snapshot};
use crate::mailshift_bin;
use std::process::{Command, Output, Stdio};

pub const SRC_PW: &str = "s3cret-Source!pw";
pub const DST_PW: &str = "s3cret-Dest!pw";

pub struct Pair {
    pub src: Dovecot,
    pub dst: Dovecot,
    pub dir: tempfile::TempDir,
}

impl Pair {
    /// A '.'-delimited source with the corpus's special-use folders and a '/'-delimited
    /// destination whose \Sent folder is called "Sent".
    pub fn new(dst_opts: DovecotOptions) -> Pair {
        let corpus = corpus::standard_folders();
        let src = Dovecot::start(DovecotOptions {
            delimiter: '.',
            special_use: special_use_options(&corpus, '.'),
            ..Default::default()
        })
        .expect("start source dovecot");
        let mut dst_opts = dst_opts;
        dst_opts.special_use.push(("Sent".into(), "\\Sent".into()));
        let dst = Dovecot::start(dst_opts).expect("start destination dovecot");
        src.add_user("alice", SRC_PW);
        dst.add_user("alice", DST_PW);
        Pair {
            src,
            dst,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }

    pub fn command(&self, extra: &[&str]) -> Command {
        self.command_via(self.src.port(), self.dst.port(), extra)
    }

    /// `mailshift migrate` reaching the servers through other ports (a proxy's).
    pub fn command_via(&self, src_port: u16, dst_port: u16, extra: &[&str]) -> Command {
        let mut cmd = Command::new(mailshift_bin());
        cmd.arg("migrate")
            .arg("--from")
            .arg(format!("imap://alice@127.0.0.1:{src_port}"))
            .arg("--to")
            .arg(format!("imap://alice@127.0.0.1:{dst_port}"))
            .arg("--state")
            .arg(self.state())
            .arg("--allow-plaintext")
            .args(extra)
            .env("MAILSHIFT_FROM_PASSWORD", SRC_PW)
            .env("MAILSHIFT_TO_PASSWORD", DST_PW)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    pub fn migrate(&self, extra: &[&str]) -> Output {
        let out = self.command(extra).output().expect("run mailshift");
        assert_no_secrets(&out);
        out
    }
}

impl Pair {
    /// The destination holds exactly the source's messages (multisets per folder, so a
    /// duplicate fails too), `Sent Items` mapped to `Sent`.
    pub async fn assert_mirrored(&self, what: &str) {
        let src = imap::snapshot(self.src.port(), "alice", SRC_PW)
            .await
            .expect("snapshot source");
        let dst = imap::snapshot(self.dst.port(), "alice", DST_PW)
            .await
            .expect("snapshot destination");
        assert_same(&expected_on_destination(&src), &dst, what);
    }
}

/// Sum of one per-folder counter (`copied`, `deleted`, ...) of a `--json` summary.
pub fn total(summary: &serde_json::Value, field: &str) -> u64 {
    summary["folders"]
        .as_array()
        .expect("folders")
        .iter()
        .map(|f| f[field].as_u64().unwrap_or(0))
        .sum()
}

pub fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_no_secrets(out: &Output) {
    let all = text(out);
    for pw in [SRC_PW, DST_PW] {
        assert!(
            !all.contains(pw),
            "a password leaked into the output:\n{all}"
        );
    }
}

/// A command's `--json` document, validated against the schema it names.
pub fn json(out: &Output) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", text(out)));
    crate::schema::validate(&doc);
    doc
}

/// The source snapshot as it should look on the destination ("Sent Items" -> "Sent").
pub fn expected_on_destination(src: &Snapshot) -> Snapshot {
    src.iter()
        .map(|(k, v)| {
            let k = if k == "Sent Items" {
                "Sent".to_string()
            } else {
                k.clone()
            };
            (k, v.clone())
        })
        .collect()
}

pub fn assert_same(expected: &Snapshot, actual: &Snapshot, what: &str) {
    let d = imap::diff(expected, actual);
    assert!(
        d.is_empty(),
        "{what}: {} difference(s):\n{}",
        d.len(),
        d.join("\n")
    );
}

pub async fn populate(pair: &Pair, spec: &CorpusSpec) -> Snapshot {
    let corpus = corpus::generate(spec);
    imap::populate(pair.src.port(), "alice", SRC_PW, &corpus)
        .await
        .expect("populate source");
    // The destination's \Sent folder exists before the migration, as on a real new server.
    imap::populate(
        pair.dst.port(),
        "alice",
        DST_PW,
        &[corpus::CorpusFolder {
            path: vec!["Sent".into()],
            special_use: Some("\\Sent".into()),
            messages: Vec::new(),
        }],
    )
    .await
    .expect("create destination Sent");
    imap::snapshot(pair.src.port(), "alice", SRC_PW)
        .await
        .expect("snapshot source")
}

/// Messages on the destination (0 while it cannot be read).
pub async fn count_destination(pair: &Pair) -> usize {
    match imap::snapshot(pair.dst.port(), "alice", DST_PW).await {
        Ok(s) => s.values().map(Vec::len).sum(),
        Err(_) => 0,
    }
}
