//! The `command` backend: an operator's program, run once per action with a JSON
//! document on its standard input (cPanel's UAPI, Plesk, Microsoft 365 or an in-house
//! panel behind a small script). A password travels only in that document: never on the
//! command line (visible in `ps`) nor in the environment, and mailshift's own
//! `MAILSHIFT_*` variables (the fleet key, database URL, passwords) are removed from the
//! program's environment.
//!
//! Exit status 0 means done; anything else is a refusal whose stderr (its last lines,
//! truncated, with the secrets of the action blanked out) is shown to the operator. The
//! documents are described in docs/provisioning.md.

use crate::config::{CommandConfig, PasswordForm};
use crate::error::{ProvisionError, tail};
use crate::hash;
use async_trait::async_trait;
use mailshift_core::aliases::{AliasEntry, AliasKind};
use mailshift_core::provision::{
    Existing, Lookup, MailboxSpec, NewPassword, PasswordCarry, PasswordSupport, Provisioner,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Version of the JSON documents.
pub const PROTOCOL_VERSION: u32 = 1;

/// Characters of stderr shown with a refusal.
const STDERR_SHOWN: usize = 1000;

pub struct CommandProvisioner {
    config: CommandConfig,
    batch: String,
    described: String,
}

/// What the program answers to `lookup`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupAnswer {
    #[serde(default)]
    mailboxes: Vec<String>,
    #[serde(default)]
    aliases: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    domains: Option<Vec<String>>,
}

impl CommandProvisioner {
    pub fn new(config: CommandConfig, batch: &str) -> CommandProvisioner {
        CommandProvisioner {
            described: format!("command {}", config.program.display()),
            config,
            batch: batch.to_string(),
        }
    }

    /// Runs the program with `doc` on stdin; its stdout on success. `secrets` are blanked
    /// out of anything shown.
    async fn run(
        &self,
        op: &str,
        doc: &serde_json::Value,
        secrets: &[&str],
    ) -> Result<Vec<u8>, ProvisionError> {
        let fail = |detail: String| ProvisionError::Failed {
            backend: self.described.clone(),
            op: op.to_string(),
            detail,
        };
        let mut cmd = tokio::process::Command::new(&self.config.program);
        cmd.args(&self.config.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a time-out also stops what it started.
            .process_group(0)
            .kill_on_drop(true);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MAILSHIFT_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot run the program: {e}")))?;
        let input = serde_json::to_vec(doc).map_err(|e| fail(e.to_string()))?;
        let stdin = child.stdin.take();
        let write = async move {
            if let Some(mut s) = stdin {
                // A program that does not read its input closes the pipe: not our failure.
                let _ = s.write_all(&input).await;
                let _ = s.shutdown().await;
            }
        };
        let secs = self.config.timeout_secs;
        let group = child.id();
        let out = match tokio::time::timeout(Duration::from_secs(secs), async {
            let ((), out) = tokio::join!(write, child.wait_with_output());
            out
        })
        .await
        {
            Ok(out) => out.map_err(|e| fail(format!("waiting for the program: {e}")))?,
            Err(_) => {
                if let Some(pgid) = group {
                    // The program itself is killed on drop; this reaches its children.
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pgid}")])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                return Err(ProvisionError::Timeout {
                    backend: self.described.clone(),
                    op: op.to_string(),
                    secs,
                });
            }
        };
        if out.status.success() {
            return Ok(out.stdout);
        }
        let status = match out.status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        };
        let said = tail(&out.stderr, secrets, STDERR_SHOWN);
        Err(fail(if said.is_empty() {
            status
        } else {
            format!("{status}: {said}")
        }))
    }

    fn base(&self, action: &str) -> serde_json::Value {
        json!({"version": PROTOCOL_VERSION, "action": action, "batch": self.batch})
    }
}

#[async_trait]
impl Provisioner for CommandProvisioner {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn password_support(&self) -> PasswordSupport {
        PasswordSupport {
            hash_schemes: self
                .config
                .hash_schemes
                .iter()
                .map(|s| s.to_ascii_uppercase())
                .collect(),
        }
    }

    async fn existing(&self, lookup: &Lookup) -> mailshift_core::Result<Option<Existing>> {
        if !self.config.lookup {
            return Ok(None);
        }
        let mut doc = self.base("lookup");
        doc["mailboxes"] = json!(lookup.mailboxes);
        doc["aliases"] = json!(lookup.aliases);
        doc["domains"] = json!(lookup.domains);
        let out = self.run("lookup", &doc, &[]).await?;
        let answer: LookupAnswer = serde_json::from_slice(&out).map_err(|e| {
            ProvisionError::Failed {
                backend: self.described.clone(),
                op: "lookup".into(),
                detail: format!(
                    "the answer is not {{\"mailboxes\": [...], \"aliases\": {{ADDRESS: [TARGET, ...]}}}}: {e}"
                ),
            }
        })?;
        let lower = |s: String| s.trim().to_ascii_lowercase();
        Ok(Some(Existing {
            mailboxes: answer.mailboxes.into_iter().map(lower).collect(),
            aliases: answer
                .aliases
                .into_iter()
                .map(|(k, v)| (lower(k), v.into_iter().map(lower).collect::<BTreeSet<_>>()))
                .collect(),
            domains: answer.domains.map(|d| d.into_iter().map(lower).collect()),
        }))
    }

    async fn create_domain(&self, domain: &str) -> mailshift_core::Result<()> {
        let mut doc = self.base("create_domain");
        doc["domain"] = json!(domain);
        self.run(&format!("creating domain {domain}"), &doc, &[])
            .await?;
        Ok(())
    }

    async fn create_mailbox(
        &self,
        spec: &MailboxSpec,
        password: &NewPassword,
    ) -> mailshift_core::Result<()> {
        let address = spec.address.to_string();
        let op = format!("creating mailbox {address}");
        let origin = spec.carry.as_str();
        let (password_doc, secret): (serde_json::Value, SecretString) = match password {
            NewPassword::Hash(h) => (
                json!({"origin": origin, "scheme": h.scheme(), "hash": h.expose()}),
                SecretString::from(h.expose().to_string()),
            ),
            NewPassword::Plaintext(p) => match self.config.password {
                PasswordForm::Plaintext => (
                    json!({"origin": origin, "plaintext": p.expose_secret()}),
                    p.clone(),
                ),
                PasswordForm::Hash => {
                    let h = hash::crypt(self.config.password_scheme, p).map_err(|detail| {
                        ProvisionError::Failed {
                            backend: self.described.clone(),
                            op: op.clone(),
                            detail,
                        }
                    })?;
                    (
                        json!({"origin": origin, "scheme": h.scheme(), "hash": h.expose()}),
                        SecretString::from(h.expose().to_string()),
                    )
                }
            },
        };
        let mut doc = self.base("create_mailbox");
        doc["address"] = json!(address);
        doc["local_part"] = json!(spec.address.local);
        doc["domain"] = json!(spec.address.domain);
        doc["quota_bytes"] = json!(spec.quota_bytes);
        doc["password"] = password_doc;
        doc["temporary"] = json!(spec.carry == PasswordCarry::Temporary);
        let plain_too = match password {
            NewPassword::Plaintext(p) => p.expose_secret().to_string(),
            NewPassword::Hash(_) => String::new(),
        };
        self.run(&op, &doc, &[secret.expose_secret(), &plain_too])
            .await?;
        Ok(())
    }

    async fn set_alias(&self, entry: &AliasEntry) -> mailshift_core::Result<()> {
        let address = entry.address.to_string();
        let mut doc = match entry.kind {
            AliasKind::Alias => self.base("set_alias"),
            AliasKind::Forward { keep_copy } => {
                let mut d = self.base("set_forward");
                d["keep_copy"] = json!(keep_copy);
                d
            }
        };
        doc["address"] = json!(address);
        doc["domain"] = json!(entry.address.domain);
        doc["targets"] = json!(entry.targets);
        doc["goto"] = json!(entry.goto());
        let what = if entry.is_forward() {
            "setting forward"
        } else {
            "setting alias"
        };
        self.run(&format!("{what} {address}"), &doc, &[]).await?;
        Ok(())
    }
}
