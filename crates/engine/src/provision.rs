//! The provisioning service's outcome and bookkeeping (`mailshift provision`): what was
//! (or would be) created on the new server, per mailbox, alias and domain, its one-line
//! summary, and what is recorded in the fleet's store afterwards (the aliases applied,
//! the temporary passwords of mailboxes an interrupted run created). The decisions are
//! core's (`mailshift_core::provision`, `mailshift_core::aliases`); the binary reads the
//! files, runs the backend and prints.

use mailshift_core::Result;
use mailshift_core::aliases::{AliasEntry, AliasKind};
use mailshift_core::ports::{FleetStore, MailboxCredentials, MailboxRecord};
use mailshift_core::provision::{
    Address, PasswordCarry, PasswordHash, Plan, ProvisionRecord, Step,
};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `1 mailbox`, `2 mailboxes`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// An alias or forward as a person reads it.
pub fn alias_line(e: &AliasEntry) -> String {
    let targets = e.targets.join(", ");
    match e.kind {
        AliasKind::Alias => format!("alias {} -> {targets}", e.address),
        AliasKind::Forward { keep_copy: true } => {
            format!("forward {} -> {targets} (keeping a copy)", e.address)
        }
        AliasKind::Forward { keep_copy: false } => format!("forward {} -> {targets}", e.address),
    }
}

/// One mailbox of the batch with what provisioning needs.
pub struct Member {
    pub record: MailboxRecord,
    pub address: Address,
    pub creds: MailboxCredentials,
    pub hash: Option<PasswordHash>,
    pub quota: Option<u64>,
}

#[derive(Serialize)]
pub struct MailboxOut {
    pub address: String,
    /// create | created | exists | failed
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordCarry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct AliasOut {
    #[serde(flatten)]
    pub entry: AliasEntry,
    pub goto: BTreeSet<String>,
    /// set | unchanged | failed (dry run: set means "would be set")
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<BTreeSet<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct DomainOut {
    pub domain: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct Exported {
    pub file: String,
    pub count: usize,
}

#[derive(Serialize)]
pub struct Outcome {
    pub batch: String,
    pub backend: String,
    pub dry_run: bool,
    pub mailboxes: Vec<MailboxOut>,
    pub domains: Vec<DomainOut>,
    pub aliases: Vec<AliasOut>,
    pub summary: String,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exported: Option<Exported>,
}

pub fn describe_plan(p: &Plan, out: &mut Outcome) {
    for step in &p.steps {
        match step {
            Step::CreateDomain(d) => out.domains.push(DomainOut {
                domain: d.clone(),
                action: "create",
                error: None,
            }),
            Step::CreateMailbox(s) => out.mailboxes.push(MailboxOut {
                address: s.address.to_string(),
                action: "create",
                password: Some(s.carry),
                quota_bytes: Some(s.quota_bytes),
                note: s.note.clone(),
                error: None,
            }),
            Step::SetAlias { entry, previous } => out.aliases.push(AliasOut {
                goto: entry.goto(),
                entry: entry.clone(),
                action: "set",
                previous: previous.clone(),
                error: None,
            }),
        }
    }
}

/// A re-import resets the password the copy uses on the new server to the file's; a
/// mailbox mailshift created with a temporary password keeps that one. A mailbox that
/// exists with a temporary password sealed but no record of its creation was created by
/// a run interrupted in between: it is recorded now, so its password gets exported.
pub async fn restore_temporaries(
    store: &dyn FleetStore,
    p: &Plan,
    by_id: &HashMap<Uuid, &Member>,
    records: &HashMap<Uuid, ProvisionRecord>,
    out: &mut Outcome,
) -> Result<()> {
    for s in &p.existing {
        let Some(r) = records.get(&s.mailbox_id).filter(|r| r.temporary) else {
            continue;
        };
        if r.provisioned_at.is_none() {
            store
                .record_provisioned(s.mailbox_id, PasswordCarry::Temporary, s.quota_bytes, now())
                .await?;
            out.warnings.push(format!(
                "{}: exists, with a temporary password sealed by an interrupted run: it is \
                 recorded as created by mailshift and its password exported",
                s.address
            ));
        } else if r.carry != Some(PasswordCarry::Temporary) {
            continue;
        }
        if let (Some(t), Some(m)) = (
            store.temporary_password(s.mailbox_id).await?,
            by_id.get(&s.mailbox_id),
        ) && t.expose_secret() != m.creds.dest_password.expose_secret()
        {
            store.set_temporary_password(s.mailbox_id, &t).await?;
        }
    }
    Ok(())
}

pub async fn record_aliases(
    store: &dyn FleetStore,
    batch: &str,
    entries: &[AliasEntry],
    out: &Outcome,
    members: &[Member],
) -> Result<()> {
    let done: BTreeSet<String> = out
        .aliases
        .iter()
        .filter(|a| a.action != "failed")
        .map(|a| a.entry.address.to_string())
        .collect();
    let applied: Vec<AliasEntry> = entries
        .iter()
        .filter(|e| done.contains(&e.address.to_string()))
        .cloned()
        .collect();
    let mut per: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for m in members {
        let me = m.address.to_string();
        let mut mine = Vec::new();
        for e in &applied {
            match e.kind {
                AliasKind::Alias if e.targets.contains(&me) => {
                    mine.push(format!("alias {}", e.address))
                }
                AliasKind::Forward { keep_copy } if e.address.to_string() == me => {
                    for t in &e.targets {
                        mine.push(if keep_copy {
                            format!("forward+copy {t}")
                        } else {
                            format!("forward {t}")
                        });
                    }
                }
                _ => {}
            }
        }
        per.insert(m.record.id, mine);
    }
    store.record_aliases(batch, &applied, &per, now()).await?;
    Ok(())
}

pub fn summary(out: &Outcome) -> String {
    let count = |action: &str| out.mailboxes.iter().filter(|m| m.action == action).count();
    let exists = count("exists");
    let mut s = format!(
        "{} already {}, {} {}",
        plural(exists, "mailbox", "mailboxes"),
        if exists == 1 { "exists" } else { "exist" },
        if out.dry_run {
            count("create")
        } else {
            count("created")
        },
        if out.dry_run { "to create" } else { "created" }
    );
    let failed = count("failed");
    if failed > 0 {
        s += &format!(", {failed} failed");
    }
    let set = out.aliases.iter().filter(|a| a.action == "set").count();
    let alias_failed = out.aliases.iter().filter(|a| a.action == "failed").count();
    if set == 0 && alias_failed == 0 {
        s += ", aliases unchanged";
    } else {
        s += &format!(
            ", {} {}",
            plural(set, "alias or forward", "aliases and forwards"),
            if out.dry_run { "to set" } else { "set" }
        );
        let unchanged = out
            .aliases
            .iter()
            .filter(|a| a.action == "unchanged")
            .count();
        if unchanged > 0 {
            s += &format!(" ({unchanged} unchanged)");
        }
        if alias_failed > 0 {
            s += &format!(", {alias_failed} failed");
        }
    }
    let domains = out
        .domains
        .iter()
        .filter(|d| d.action == "created" || d.action == "create")
        .count();
    if domains > 0 {
        s += &format!(
            ", {} {}",
            plural(domains, "domain", "domains"),
            if out.dry_run { "to create" } else { "created" }
        );
    }
    s
}
