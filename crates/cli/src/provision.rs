//! `mailshift provision --batch B`: create the batch's destination mailboxes before any
//! mail is copied, with their users' passwords (carried as a hash, hashed from the
//! imported plaintext, or temporary and exported once), a quota sized from the source,
//! and the aliases and forwards of an aliases file. The decisions are core's
//! (`mailshift_core::provision`, `mailshift_core::aliases`); the changes are made by the
//! batch's backend (`mailshift_provision`); this module wires them and prints.

use crate::fleet::FleetDb;
use anyhow::{Context, bail};
use clap::Args;
use mailshift_core::aliases::{self, AliasContext, AliasEntry};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::provision::{
    Address, Existing, Lookup, MailboxSpec, NewPassword, PasswordCarry, Plan, ProvisionRecord,
    Provisioner, QuotaPolicy, Step, decide_password, format_size, parse_size, plan, quota_for,
};
use mailshift_engine::provision::{
    AliasOut, DomainOut, Exported, MailboxOut, Member, Outcome, alias_line, describe_plan, now,
    plural, record_aliases, restore_temporaries, summary,
};
use mailshift_provision::{BackendConfig, hash};

use secrecy::ExposeSecret;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Args)]
#[command(
    about = "Batches: create the destination mailboxes (same passwords, quotas), aliases and forwards before any mail is copied",
    long_about = "Create a batch's destination mailboxes before any mail is copied.\n\n\
    Every mailbox of the batch that does not exist on the new server yet is created \
    with the user's password: the old server's hash when the import gave one \
    (source_password_hash), else the imported plaintext hashed (when the row gives \
    the same password for both servers), else a temporary password, sealed and \
    written once to --export-passwords FILE. Its quota is the source's size (from \
    `batch verify`) times --quota-factor, rounded up to a MiB, at least --quota-min. \
    --aliases FILE (address,target[,keep_copy]) adds aliases and forwards; every bad \
    row is listed by line and nothing is applied.\n\n\
    Mailboxes that exist are left alone, so a second run changes nothing. \
    --dry-run prints the plan. The backend (--backend-config FILE: PostfixAdmin-style \
    SQL tables, or an operator's program) is kept with the batch; see \
    docs/provisioning.md.\n\n\
    Exit status: 0 when everything is in place; 1 when a row, mailbox or alias was \
    refused (nothing is applied when the input is bad); 2 on bad usage."
)]
pub struct ProvisionArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The batch whose destination mailboxes to create
    #[arg(long, value_name = "NAME")]
    batch: String,
    /// The backend (TOML: `backend = "sql"` or `"command"`, see docs/provisioning.md);
    /// kept with the batch (sealed), so later runs need not repeat it
    #[arg(long, value_name = "FILE")]
    backend_config: Option<PathBuf>,
    /// Aliases and forwards to set: CSV `address,target[,keep_copy]`
    #[arg(long, value_name = "FILE")]
    aliases: Option<PathBuf>,
    /// Write the temporary passwords not exported yet to FILE (CSV, created with mode
    /// 0600, never overwritten); each is exported only once
    #[arg(long, value_name = "FILE")]
    export_passwords: Option<PathBuf>,
    /// Quota = the source's size (recorded by `batch verify`) times F, rounded up to a MiB
    #[arg(long, default_value_t = 1.5, value_name = "F")]
    quota_factor: f64,
    /// The smallest quota given
    #[arg(long, default_value = "1G", value_name = "SIZE", value_parser = parse_size)]
    quota_min: u64,
    /// One quota for every new mailbox, whatever its source's size (e.g. 5G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    quota: Option<u64>,
    /// Print what would be done without changing anything
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON on standard output
    #[arg(long)]
    json: bool,
}

/// Prints every bad row and says nothing was applied.
fn rejected(rows: &[(usize, String)], what: &str, json: bool) -> ExitCode {
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(line, reason)| serde_json::json!({"line": line, "reason": reason}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"applied": false, "rejected": rows, "file": what})
        );
    } else {
        println!(
            "{} of {what} rejected; nothing was applied (fix them and run again):",
            plural(rows.len(), "row", "rows")
        );
        for (line, reason) in rows {
            println!("  line {line}: {reason}");
        }
    }
    ExitCode::from(1)
}

pub async fn run(a: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open(true).await?;
    let batch = a.batch.as_str();
    let policy = QuotaPolicy {
        factor: a.quota_factor,
        min_bytes: a.quota_min,
        fixed_bytes: a.quota,
    };
    policy.check().map_err(anyhow::Error::msg)?;
    if let Some(p) = &a.export_passwords
        && std::fs::symlink_metadata(p).is_ok()
    {
        bail!(
            "{} exists: temporary passwords are only ever written to a new file",
            p.display()
        );
    }

    let config = match &a.backend_config {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            BackendConfig::from_toml(&text).with_context(|| f.display().to_string())?
        }
        None => match store.provision_backend(batch).await? {
            Some((_, stored)) => BackendConfig::from_stored(&stored)?,
            None => bail!(
                "batch '{batch}' has no provisioning backend yet: give --backend-config FILE \
                 (see docs/provisioning.md)"
            ),
        },
    };

    let mailboxes = store.mailboxes(Some(batch)).await?;
    anyhow::ensure!(
        !mailboxes.is_empty(),
        "batch '{batch}' has no mailbox (see mailshift batch import)"
    );
    let records: HashMap<Uuid, ProvisionRecord> = store
        .provision_records(batch)
        .await?
        .into_iter()
        .map(|r| (r.mailbox_id, r))
        .collect();

    // Every mailbox's address, credentials and quota; problems stop the run before any
    // change.
    let mut problems: Vec<String> = Vec::new();
    let mut members: Vec<Member> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for m in mailboxes {
        let dest: Endpoint = m
            .dest
            .parse()
            .with_context(|| format!("stored destination {}", m.dest))?;
        let address = match Address::parse(&dest.user) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!(
                    "{}: the destination login {e}: provisioning creates the mailbox named by it",
                    m.dest
                ));
                continue;
            }
        };
        if let Some(other) = seen.insert(address.to_string(), m.source.clone()) {
            problems.push(format!(
                "{address} is the destination of both {other} and {}",
                m.source
            ));
            continue;
        }
        let (_, creds) = store.mailbox_credentials(m.migration_id).await?;
        let hash = store.imported_hash(m.id).await?;
        members.push(Member {
            quota: quota_for(m.source_bytes, &policy),
            record: m,
            address,
            creds,
            hash,
        });
    }

    let mut domains: BTreeSet<String> = members.iter().map(|m| m.address.domain.clone()).collect();
    if let Some(d) = store.batch(batch).await?.and_then(|b| b.domain) {
        domains.insert(d);
    }
    let entries: Vec<AliasEntry> = match &a.aliases {
        None => Vec::new(),
        Some(f) => {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            let ctx = AliasContext {
                domains: domains.clone(),
                mailboxes: members.iter().map(|m| m.address.to_string()).collect(),
            };
            match aliases::parse(&bytes, &ctx) {
                Ok(e) => e,
                Err(rows) => {
                    let rows: Vec<(usize, String)> =
                        rows.into_iter().map(|r| (r.line, r.reason)).collect();
                    return Ok(rejected(&rows, &f.display().to_string(), a.json));
                }
            }
        }
    };

    let backend = mailshift_provision::connect(&config, batch).await?;
    let support = backend.password_support();
    let member_addresses: BTreeSet<String> =
        members.iter().map(|m| m.address.to_string()).collect();
    let lookup = Lookup {
        // Alias addresses too: one that is a mailbox outside the batch must not be
        // turned into an alias.
        mailboxes: member_addresses
            .iter()
            .cloned()
            .chain(entries.iter().map(|e| e.address.to_string()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        aliases: entries.iter().map(|e| e.address.to_string()).collect(),
        domains: domains.iter().cloned().collect(),
    };
    let existing = match backend.existing(&lookup).await? {
        Some(e) => e,
        // The backend cannot tell: what mailshift did stands in.
        None => Existing {
            mailboxes: members
                .iter()
                .filter(|m| {
                    records
                        .get(&m.record.id)
                        .is_some_and(|r| r.provisioned_at.is_some())
                })
                .map(|m| m.address.to_string())
                .collect(),
            aliases: store.recorded_aliases(batch).await?,
            domains: None,
        },
    };

    let specs: Vec<MailboxSpec> = members
        .iter()
        .map(|m| {
            let d = decide_password(
                m.hash.as_ref(),
                &m.creds.source_password,
                &m.creds.dest_password,
                &support,
            );
            MailboxSpec {
                mailbox_id: m.record.id,
                address: m.address.clone(),
                quota_bytes: m.quota.unwrap_or(0),
                carry: d.carry,
                note: d.note,
            }
        })
        .collect();
    for e in &entries {
        let key = e.address.to_string();
        if !e.is_forward() && !member_addresses.contains(&key) && existing.mailboxes.contains(&key)
        {
            problems.push(format!(
                "{key} (aliases file, line {}) is a mailbox on the new server outside batch \
                 '{batch}': an alias would take its mail away; add it to the batch to forward it",
                e.lines.first().copied().unwrap_or(0)
            ));
        }
    }
    let p = plan(specs, &entries, &existing);
    let by_id: HashMap<Uuid, &Member> = members.iter().map(|m| (m.record.id, m)).collect();
    for s in p.mailboxes_to_create() {
        if by_id.get(&s.mailbox_id).is_some_and(|m| m.quota.is_none()) {
            problems.push(format!(
                "{}: the source's size is unknown, so no quota can be sized from it: run \
                 `mailshift batch verify {batch}` first, or give --quota SIZE",
                s.address
            ));
        }
    }
    if !problems.is_empty() {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"applied": false, "problems": problems})
            );
        } else {
            println!(
                "{} in the way; nothing was applied:",
                plural(problems.len(), "problem", "problems")
            );
            for pr in &problems {
                println!("  {pr}");
            }
        }
        return Ok(ExitCode::from(1));
    }
    let temporaries = p
        .mailboxes_to_create()
        .filter(|s| s.carry == PasswordCarry::Temporary)
        .count();
    if !a.dry_run && temporaries > 0 && a.export_passwords.is_none() {
        bail!(
            "{} will get a temporary password: give --export-passwords FILE to receive them \
             (written once, mode 0600) for the letter to their users; --dry-run shows which",
            plural(temporaries, "mailbox", "mailboxes")
        );
    }

    let mut out = Outcome {
        batch: batch.to_string(),
        backend: backend.describe(),
        dry_run: a.dry_run,
        mailboxes: Vec::new(),
        domains: Vec::new(),
        aliases: Vec::new(),
        summary: String::new(),
        warnings: Vec::new(),
        exported: None,
    };
    for s in &p.existing {
        out.mailboxes.push(MailboxOut {
            address: s.address.to_string(),
            action: "exists",
            password: None,
            quota_bytes: None,
            note: None,
            error: None,
        });
    }
    for key in &p.aliases_unchanged {
        if let Some(e) = entries.iter().find(|e| e.address.to_string() == *key) {
            out.aliases.push(AliasOut {
                goto: e.goto(),
                entry: e.clone(),
                action: "unchanged",
                previous: None,
                error: None,
            });
        }
    }

    if a.dry_run {
        describe_plan(&p, &mut out);
    } else {
        if a.backend_config.is_some() {
            store
                .set_provision_backend(
                    batch,
                    config.kind(),
                    &config.to_stored(),
                    &config.describe(),
                )
                .await?;
        }
        apply(&*backend, &*store, &p, &by_id, &mut out).await?;
        restore_temporaries(&*store, &p, &by_id, &records, &mut out).await?;
        if a.aliases.is_some() {
            record_aliases(&*store, batch, &entries, &out, &members).await?;
        }
        export(
            &*store,
            batch,
            &members,
            a.export_passwords.as_deref(),
            &mut out,
        )
        .await?;
    }
    out.summary = summary(&out);
    let failed = out.mailboxes.iter().any(|m| m.action == "failed")
        || out.aliases.iter().any(|m| m.action == "failed")
        || out.domains.iter().any(|m| m.action == "failed");
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(&out);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn apply(
    backend: &dyn Provisioner,
    store: &dyn mailshift_core::ports::FleetStore,
    p: &Plan,
    by_id: &HashMap<Uuid, &Member>,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let total = p.mailboxes_to_create().count();
    let mut n = 0;
    for step in &p.steps {
        match step {
            Step::CreateDomain(d) => {
                let r = backend.create_domain(d).await;
                out.domains.push(DomainOut {
                    domain: d.clone(),
                    action: if r.is_ok() { "created" } else { "failed" },
                    error: r.err().map(|e| e.message),
                });
            }
            Step::CreateMailbox(s) => {
                n += 1;
                let Some(m) = by_id.get(&s.mailbox_id) else {
                    continue;
                };
                let password = match s.carry {
                    PasswordCarry::Hash => match &m.hash {
                        Some(h) => {
                            if hash::matches(h, &m.creds.dest_password) == Some(false) {
                                out.warnings.push(format!(
                                    "{}: the copy logs in to the new server with the batch's \
                                     dest_password, which does not match the carried hash: \
                                     import the user's password as dest_password, or the \
                                     copy's logins will be refused",
                                    s.address
                                ));
                            }
                            NewPassword::Hash(h.clone())
                        }
                        None => continue,
                    },
                    PasswordCarry::Plaintext => {
                        NewPassword::Plaintext(m.creds.source_password.clone())
                    }
                    PasswordCarry::Temporary => {
                        // Sealed (and made the copy's login) before the mailbox exists, so
                        // a crash in between loses nothing; a retry reuses it.
                        let t = match store.temporary_password(s.mailbox_id).await? {
                            Some(t) => t,
                            None => hash::temporary_password(),
                        };
                        store.set_temporary_password(s.mailbox_id, &t).await?;
                        NewPassword::Plaintext(t)
                    }
                };
                let r = backend.create_mailbox(s, &password).await;
                if r.is_ok() {
                    store
                        .record_provisioned(s.mailbox_id, s.carry, s.quota_bytes, now())
                        .await?;
                }
                match &r {
                    Ok(()) => eprintln!(
                        "[{n}/{total}] {}: created ({}, quota {})",
                        s.address,
                        s.carry.describe(),
                        format_size(s.quota_bytes)
                    ),
                    Err(e) => eprintln!("[{n}/{total}] {}: FAILED: {}", s.address, e.message),
                }
                out.mailboxes.push(MailboxOut {
                    address: s.address.to_string(),
                    action: if r.is_ok() { "created" } else { "failed" },
                    password: Some(s.carry),
                    quota_bytes: Some(s.quota_bytes),
                    note: s.note.clone(),
                    error: r.err().map(|e| e.message),
                });
            }
            Step::SetAlias { entry, previous } => {
                let r = backend.set_alias(entry).await;
                out.aliases.push(AliasOut {
                    goto: entry.goto(),
                    entry: entry.clone(),
                    action: if r.is_ok() { "set" } else { "failed" },
                    previous: previous.clone(),
                    error: r.err().map(|e| e.message),
                });
            }
        }
    }
    Ok(())
}

/// Writes the batch's temporary passwords that were never exported to a new 0600 file,
/// then records them as exported: each is exported once.
async fn export(
    store: &dyn mailshift_core::ports::FleetStore,
    batch: &str,
    members: &[Member],
    path: Option<&Path>,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let pending: Vec<&Member> = {
        let records: HashMap<Uuid, ProvisionRecord> = store
            .provision_records(batch)
            .await?
            .into_iter()
            .map(|r| (r.mailbox_id, r))
            .collect();
        members
            .iter()
            .filter(|m| {
                records.get(&m.record.id).is_some_and(|r| {
                    r.temporary && r.provisioned_at.is_some() && r.temporary_exported_at.is_none()
                })
            })
            .collect()
    };
    if pending.is_empty() {
        return Ok(());
    }
    let Some(path) = path else {
        out.warnings.push(format!(
            "{} not exported yet: run again with --export-passwords FILE",
            plural(
                pending.len(),
                "temporary password is",
                "temporary passwords are"
            )
        ));
        return Ok(());
    };
    let mut rows = csv::Writer::from_writer(Vec::new());
    rows.write_record(["address", "temporary_password"])?;
    let mut ids = Vec::new();
    for m in &pending {
        if let Some(t) = store.temporary_password(m.record.id).await? {
            rows.write_record([m.address.to_string().as_str(), t.expose_secret()])?;
            ids.push(m.record.id);
        }
    }
    let bytes = rows.into_inner().context("writing the export")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (temporary passwords are only ever written to a new file)",
                path.display()
            )
        })?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    store.mark_exported(&ids, now()).await?;
    out.exported = Some(Exported {
        file: path.display().to_string(),
        count: ids.len(),
    });
    Ok(())
}

fn print_text(out: &Outcome) {
    if out.dry_run {
        println!(
            "plan for batch '{}' on {} (dry run: nothing is changed)",
            out.batch, out.backend
        );
    } else {
        println!("batch '{}' on {}", out.batch, out.backend);
    }
    for d in &out.domains {
        println!(
            "  {:<9} domain {}{}",
            d.action,
            d.domain,
            d.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    for m in &out.mailboxes {
        let mut line = format!("  {:<9} mailbox {}", m.action, m.address);
        if let Some(c) = m.password {
            line += &format!(", {}", c.describe());
        }
        if let Some(q) = m.quota_bytes {
            line += &format!(", quota {}", format_size(q));
        }
        if let Some(e) = &m.error {
            line += &format!(": {e}");
        }
        println!("{line}");
        if let Some(n) = &m.note {
            println!("            ({n})");
        }
    }
    for a in &out.aliases {
        let mut line = format!("  {:<9} {}", a.action, alias_line(&a.entry));
        if let Some(prev) = &a.previous {
            line += &format!(
                " (was: {})",
                prev.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        if let Some(e) = &a.error {
            line += &format!(": {e}");
        }
        println!("{line}");
    }
    for w in &out.warnings {
        println!("warning: {w}");
    }
    if let Some(e) = &out.exported {
        println!(
            "{} written to {} (mode 0600): hand them to the users, then delete the file",
            plural(e.count, "temporary password", "temporary passwords"),
            e.file
        );
    }
    println!("{}", out.summary);
}
