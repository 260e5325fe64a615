//! The D-1 test send: does mail sent through the new provider arrive, and does it
//! authenticate?
//!
//! [`test_send`] logs in to the new provider's submission service as a migrated mailbox
//! (the [`Submitter`] port; [`smtp::SmtpSubmitter`] is the SMTP adapter), sends a probe
//! with a unique id, fetches it back over IMAP from the probe mailbox (read-only, through
//! the [`Connector`] port: the UIDNEXT of the folder is noted before sending and only
//! newer messages are looked at; the Junk folder is watched too), and judges it as a
//! receiver would: DKIM signatures against the keys in DNS and their alignment with the
//! From domain, SPF for the address that hands the message over (read from the trace
//! headers), the DMARC result, and the receiving server's own Authentication-Results
//! (RFC 8601, parsed here). Every outcome is a finding (ok, warn or error with a fix);
//! the report also carries the timings. Credentials never reach a report or a log.
//!
//! RFCs followed: 6409 (submission), 8314 (implicit TLS), 4954 (AUTH), 5321 4.4 (trace
//! fields), 6376 (DKIM), 7208 (SPF), 7489 (DMARC), 8601 (Authentication-Results).

pub mod authres;
pub mod error;
pub mod judge;
pub mod probe;
pub mod smtp;
pub mod trace;

pub use error::DeliverError;

use crate::authres::AuthResults;
use crate::judge::Arrival;
use crate::trace::HandoverSource;
use chrono::{DateTime, FixedOffset};
use mailshift_core::ErrorKind;
use mailshift_core::cutover::{Finding, Level, worst};
use mailshift_core::folder::SpecialUse;
use mailshift_core::ports::{Connector, MailSource};
use mailshift_core::submission::{Envelope, Submitter};
use mailshift_dns::authenticate::{self, Authentication, Handover};
use mailshift_dns::lookup::{Dns, Server};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to send, where, and where to look for it.
pub struct TestSend {
    /// The domain whose mail moves (the From domain of the probe).
    pub domain: String,
    /// The probe's From and envelope sender.
    pub from: String,
    /// The probe address (the probe mailbox must receive it).
    pub to: String,
    /// The new provider's submission service, logged in as a migrated mailbox.
    pub submitter: Arc<dyn Submitter>,
    /// Opens the probe mailbox read-only (its `target_reader`).
    pub mailbox: Arc<dyn Connector>,
    /// The probe mailbox for reports, e.g. `imaps://alice@example.com@imap.new.example:993`.
    pub mailbox_label: String,
    /// The folder the probe should arrive in (the Junk folder is watched as well).
    pub folder: String,
    /// Resolvers for DKIM keys, SPF and DMARC records (the system's when empty).
    pub nameservers: Vec<Server>,
    pub dns_timeout: Duration,
    /// How long the probe may take to arrive after the submission server accepted it.
    pub timeout: Duration,
    /// The submission host: whose address SPF is judged for when the probe never left
    /// the new server (no relay hop in its trace).
    pub submission_host: String,
}

/// How long things took, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    /// Connecting, logging in and handing over the probe.
    pub submit_ms: Option<u64>,
    /// From the submission server's acceptance to the probe being visible over IMAP.
    pub delivery_ms: Option<u64>,
}

/// The result of a test send.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub domain: String,
    pub probe_id: String,
    pub from: String,
    pub to: String,
    pub submission: String,
    pub mailbox: String,
    /// The queue id the submission server announced, to find the probe in its logs.
    pub queue_id: Option<String>,
    /// Where the probe arrived.
    pub folder: Option<String>,
    pub timings: Timings,
    /// What mailshift computed from DNS (absent when the probe did not arrive).
    pub authentication: Option<Authentication>,
    /// The address SPF was judged for, and why that one.
    pub sender_ip: Option<IpAddr>,
    pub sender_ip_source: Option<String>,
    /// Authentication-Results headers the receiving side added.
    pub receiver_results: Vec<AuthResults>,
    pub findings: Vec<Finding>,
    pub level: Level,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A watched folder and the first UID that can be the probe.
struct Watched {
    name: String,
    junk: bool,
    next_uid: u32,
}

async fn next_uid(src: &mut dyn MailSource, folder: &str) -> mailshift_core::Result<u32> {
    let st = src.examine(folder).await?;
    if let Some(n) = st.uidnext {
        return Ok(n);
    }
    // A server that does not say: one past the highest UID there is.
    let all = src.list_messages(1).await?;
    Ok(all.last().map_or(1, |m| m.uid.saturating_add(1)))
}

/// Looks for the probe among messages newer than each folder's noted UID.
async fn look(
    src: &mut dyn MailSource,
    watch: &mut [Watched],
    id: &str,
) -> mailshift_core::Result<Option<(usize, u32)>> {
    for (i, w) in watch.iter_mut().enumerate() {
        src.examine(&w.name).await?;
        let metas = src.list_messages(w.next_uid).await?;
        let uids: Vec<u32> = metas.iter().map(|m| m.uid).collect();
        if uids.is_empty() {
            continue;
        }
        let headers = src.fetch_headers(&uids).await?;
        if let Some(h) = headers.iter().find(|h| probe::is_probe(&h.header, id)) {
            return Ok(Some((i, h.uid)));
        }
        if let Some(max) = uids.iter().max() {
            w.next_uid = w.next_uid.max(max.saturating_add(1));
        }
    }
    Ok(None)
}

fn imap_finding(e: &mailshift_core::Error, label: &str) -> Finding {
    Finding::error(
        "imap",
        format!("probe mailbox {label}: {e}"),
        match e.kind {
            ErrorKind::Auth => {
                "check the probe mailbox's password or token (--imap-password-file, \
                 MAILSHIFT_IMAP_PASSWORD, or the submission password when it is the same mailbox)"
            }
            ErrorKind::Tls => {
                "check the server's certificate, or trust a private CA with --ca-file"
            }
            _ => "check the IMAP address (--imap) and that the server answers, then test again",
        },
    )
}

fn submission_finding(e: &mailshift_core::Error) -> Finding {
    let fix = match e.kind {
        ErrorKind::Auth => {
            "check the password or token (--smtp-password-file, MAILSHIFT_SMTP_PASSWORD, \
             --smtp-oauth-token-file), that the mailbox exists on the new server and that it may \
             send (SMTP AUTH enabled)"
        }
        ErrorKind::Tls => "check the server's certificate, or trust a private CA with --ca-file",
        ErrorKind::Network => {
            "check the submission address and port (--smtp; 465 implicit TLS, 587 STARTTLS) and \
             that this machine may reach it"
        }
        ErrorKind::Usage => "fix the addresses (--from, --to)",
        _ => "check that the account may send as the From address, and the server's log",
    };
    let what = if e.kind == ErrorKind::Auth {
        "the submission login was refused"
    } else {
        "the submission failed"
    };
    Finding::error("submission", format!("{what}: {e}"), fix)
}

async fn resolve(dns: &Dns, servers: &[Server], host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(ip);
    }
    for s in servers {
        if let Ok(a) = dns.ips(s, host).await {
            return a.records.first().copied();
        }
    }
    None
}

/// Sends the probe, waits for it and judges it. Never fails: every problem is a finding.
pub async fn test_send(t: &TestSend, now: DateTime<FixedOffset>) -> Report {
    let id = probe::new_id();
    let mut report = Report {
        domain: t.domain.clone(),
        probe_id: id.clone(),
        from: t.from.clone(),
        to: t.to.clone(),
        submission: t.submitter.label(),
        mailbox: t.mailbox_label.clone(),
        queue_id: None,
        folder: None,
        timings: Timings::default(),
        authentication: None,
        sender_ip: None,
        sender_ip_source: None,
        receiver_results: Vec::new(),
        findings: Vec::new(),
        level: Level::Ok,
    };
    run(t, &id, now, &mut report).await;
    report.level = worst(&report.findings);
    report
}

async fn run(t: &TestSend, id: &str, now: DateTime<FixedOffset>, r: &mut Report) {
    // The probe mailbox first: its UIDNEXT must be known before anything is sent.
    let mut src = match t.mailbox.target_reader().await {
        Ok(s) => s,
        Err(e) => {
            r.findings.push(imap_finding(&e, &t.mailbox_label));
            // Tell a wrong shared password apart from an IMAP-only problem.
            if e.kind == ErrorKind::Auth {
                match t.submitter.check_login().await {
                    Ok(()) => r.findings.push(Finding::ok(
                        "submission",
                        format!("the submission login to {} works", t.submitter.label()),
                    )),
                    Err(e) => r.findings.push(submission_finding(&e)),
                }
            }
            return;
        }
    };
    let mut watch = Vec::new();
    let junk = match src.list_folders().await {
        Ok((folders, _)) => folders
            .into_iter()
            .find(|f| f.special_use == Some(SpecialUse::Junk) && f.selectable)
            .map(|f| f.raw),
        Err(_) => None,
    };
    for (name, is_junk) in std::iter::once((t.folder.clone(), false))
        .chain(junk.filter(|j| j != &t.folder).map(|j| (j, true)))
    {
        match next_uid(src.as_mut(), &name).await {
            Ok(n) => watch.push(Watched {
                name,
                junk: is_junk,
                next_uid: n,
            }),
            Err(e) if is_junk => {
                tracing::warn!(folder = %name, error = %e, "cannot watch the junk folder");
            }
            Err(e) => {
                r.findings.push(imap_finding(&e, &t.mailbox_label));
                return;
            }
        }
    }

    let raw = probe::build(id, &t.from, &t.to, now);
    let envelope = Envelope {
        mail_from: t.from.clone(),
        rcpt_to: vec![t.to.clone()],
    };
    let started = Instant::now();
    tracing::info!(probe = %id, submission = %t.submitter.label(), "submitting the probe");
    let accepted = match t.submitter.submit(&envelope, &raw).await {
        Ok(a) => a,
        Err(e) => {
            r.timings.submit_ms = Some(ms(started.elapsed()));
            r.findings.push(submission_finding(&e));
            return;
        }
    };
    let accepted_at = Instant::now();
    r.timings.submit_ms = Some(ms(accepted_at - started));
    r.queue_id = accepted.queue_id().map(str::to_string);
    r.findings.push(Finding::ok(
        "submission",
        format!(
            "{} accepted the probe from {} in {} ({})",
            t.submitter.label(),
            t.from,
            judge::human(accepted_at - started),
            accepted.reply.trim()
        ),
    ));

    // Wait for it: IDLE on the probe folder where the server offers it, with a growing
    // bound on each wait, never past the deadline.
    let deadline = accepted_at + t.timeout;
    let mut wait = Duration::from_millis(250);
    let found = loop {
        match look(src.as_mut(), &mut watch, id).await {
            Ok(Some(hit)) => break Some((hit, accepted_at.elapsed())),
            Ok(None) => {}
            Err(e) => {
                r.findings.push(imap_finding(&e, &t.mailbox_label));
                return;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        let primary = watch.first().map(|w| w.name.clone()).unwrap_or_default();
        let waited = async {
            src.examine(&primary).await?;
            src.wait_for_change(wait.min(left)).await
        };
        if let Err(e) = waited.await {
            r.findings.push(imap_finding(&e, &t.mailbox_label));
            return;
        }
        wait = (wait * 2).min(Duration::from_secs(8));
    };
    let Some(((i, uid), after)) = found else {
        r.findings.push(judge::judge_arrival(
            None,
            t.timeout,
            &t.to,
            r.queue_id.as_deref(),
        ));
        return;
    };
    let arrival = Arrival {
        folder: watch[i].name.clone(),
        junk: watch[i].junk,
        after,
    };
    r.timings.delivery_ms = Some(ms(after));
    r.folder = Some(arrival.folder.clone());
    r.findings.push(judge::judge_arrival(
        Some(&arrival),
        t.timeout,
        &t.to,
        r.queue_id.as_deref(),
    ));

    let fetched = async {
        src.examine(&arrival.folder).await?;
        src.fetch_messages(&[uid]).await
    };
    let message = match fetched.await {
        Ok(mut m) if !m.is_empty() => m.remove(0).raw,
        Ok(_) => {
            r.findings.push(Finding::warn(
                "imap",
                format!(
                    "the probe (UID {uid} in {}) vanished before it could be read",
                    arrival.folder
                ),
                "check that no filter or client deletes new mail in the probe mailbox",
            ));
            return;
        }
        Err(e) => {
            r.findings.push(imap_finding(&e, &t.mailbox_label));
            return;
        }
    };
    drop(src);
    judge_message(t, &message, r).await;
}

/// Reads the trace of the delivered probe and authenticates it.
async fn judge_message(t: &TestSend, raw: &[u8], r: &mut Report) {
    let fields = trace::header_fields(raw);
    r.receiver_results = trace::values(&fields, "Authentication-Results")
        .into_iter()
        .filter_map(authres::parse)
        .collect();
    let mail_from = trace::return_path(&fields).unwrap_or_else(|| t.from.clone());
    let servers = if t.nameservers.is_empty() {
        Dns::system_resolvers()
    } else {
        t.nameservers.clone()
    };
    let dns = Dns::new(t.dns_timeout);
    let (host, note, helo) = match trace::handover(&trace::hops(&fields)) {
        Some(HandoverSource::Hop { ip, helo }) => (
            None,
            format!("the address that handed the probe to the receiving server, as {helo}"),
            Some((ip, helo)),
        ),
        Some(HandoverSource::SubmissionHost(h)) => (
            Some(h.clone()),
            format!(
                "the address of {h}, the submission server: the probe never left the new server, so \
                 this is what other receivers see if it sends directly"
            ),
            None,
        ),
        None => (
            Some(t.submission_host.clone()),
            format!(
                "the address of {}, the submission host (no trace header named the sending server)",
                t.submission_host
            ),
            None,
        ),
    };
    let (ip, helo) = match (helo, host) {
        (Some((ip, helo)), _) => (Some(ip), helo),
        (None, Some(h)) => (resolve(&dns, &servers, &h).await, h),
        (None, None) => (None, String::new()),
    };
    let Some(ip) = ip else {
        r.findings.push(Finding::warn(
            "spf",
            format!("cannot tell which address sends for the new server ({note}, which has no address)"),
            "send the probe to a mailbox at another provider (--to, --imap) to see the real sending hop",
        ));
        return;
    };
    r.sender_ip = Some(ip);
    r.sender_ip_source = Some(note.clone());
    let handover = Handover {
        ip,
        helo,
        mail_from,
    };
    match authenticate::authenticate(&servers, t.dns_timeout, raw, &handover).await {
        Ok(auth) => {
            r.findings.extend(judge::judge_authentication(
                &t.domain,
                &auth,
                &note,
                &r.receiver_results,
            ));
            r.authentication = Some(auth);
        }
        Err(e) => r.findings.push(Finding::error(
            "authentication",
            format!("the probe could not be authenticated: {e}"),
            "check the nameservers (--nameserver) and test again",
        )),
    }
}
