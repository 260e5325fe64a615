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
        // The listing's size bounds what the server may send for the probe.
        let listed = src.list_messages_of(&[uid]).await?;
        let largest = listed.first().map_or(0, |m| u64::from(m.size));
        src.fetch_messages(&[uid], largest).await
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The send-and-watch loop against in-memory fakes of the ports: where the probe is
    //! looked for, and that a missing probe ends at the deadline.
    use super::*;
    use async_trait::async_trait;
    use mailshift_core::flags::{FlagSet, PermanentFlags};
    use mailshift_core::folder::ListedFolder;
    use mailshift_core::plan::MessageMeta;
    use mailshift_core::ports::{
        Capabilities, FetchedHeader, FetchedMessage, FolderStatus, MailTarget,
    };
    use mailshift_core::submission::Accepted;
    use std::sync::Mutex;

    /// Messages of one folder as (uid, raw).
    type Messages = Vec<(u32, Vec<u8>)>;

    /// Folders and their messages; every UID any header fetch asked for.
    #[derive(Default)]
    struct Store {
        folders: Vec<(String, Messages)>,
        asked: Vec<u32>,
    }

    #[derive(Clone, Default)]
    struct Mailbox(Arc<Mutex<Store>>);

    struct Session {
        mb: Mailbox,
        open: String,
        caps: Capabilities,
    }

    fn unsupported<T>() -> mailshift_core::Result<T> {
        Err(mailshift_core::Error::new(
            ErrorKind::Protocol,
            "not in the fake",
        ))
    }

    impl Session {
        fn with<T>(&self, f: impl FnOnce(&mut Messages) -> T) -> T {
            let mut s = self.mb.0.lock().unwrap();
            let i = s.folders.iter().position(|(n, _)| n == &self.open).unwrap();
            f(&mut s.folders[i].1)
        }
    }

    #[async_trait]
    impl MailSource for Session {
        fn capabilities(&self) -> &Capabilities {
            &self.caps
        }
        async fn list_folders(
            &mut self,
        ) -> mailshift_core::Result<(Vec<ListedFolder>, Option<char>)> {
            let s = self.mb.0.lock().unwrap();
            Ok((
                s.folders
                    .iter()
                    .map(|(n, _)| ListedFolder {
                        raw: n.clone(),
                        delimiter: Some('/'),
                        special_use: (n == "Junk").then_some(SpecialUse::Junk),
                        selectable: true,
                    })
                    .collect(),
                Some('/'),
            ))
        }
        async fn examine(&mut self, folder: &str) -> mailshift_core::Result<FolderStatus> {
            self.open = folder.to_string();
            let (exists, next) = self.with(|m| {
                (
                    m.len() as u32,
                    m.iter().map(|(u, _)| u + 1).max().unwrap_or(1),
                )
            });
            Ok(FolderStatus {
                uidvalidity: 1,
                uidnext: Some(next),
                exists,
                highest_modseq: None,
                permanent_flags: PermanentFlags::default(),
            })
        }
        async fn list_messages(
            &mut self,
            from_uid: u32,
        ) -> mailshift_core::Result<Vec<MessageMeta>> {
            Ok(self.with(|m| {
                m.iter()
                    .filter(|(u, _)| *u >= from_uid)
                    .map(|(u, raw)| MessageMeta {
                        uid: *u,
                        size: raw.len() as u32,
                        flags: FlagSet::new(),
                        internal_date: "01-Dec-2026 10:00:00 +0000".into(),
                    })
                    .collect()
            }))
        }
        async fn list_messages_of(
            &mut self,
            uids: &[u32],
        ) -> mailshift_core::Result<Vec<MessageMeta>> {
            Ok(self
                .list_messages(1)
                .await?
                .into_iter()
                .filter(|m| uids.contains(&m.uid))
                .collect())
        }
        async fn status(&mut self, folder: &str) -> mailshift_core::Result<FolderStatus> {
            let open = std::mem::replace(&mut self.open, folder.to_string());
            let status = self.examine(folder).await;
            self.open = open;
            status
        }
        async fn fetch_messages(
            &mut self,
            uids: &[u32],
            _largest: u64,
        ) -> mailshift_core::Result<Vec<FetchedMessage>> {
            Ok(self.with(|m| {
                m.iter()
                    .filter(|(u, _)| uids.contains(u))
                    .map(|(u, raw)| FetchedMessage {
                        uid: *u,
                        flags: FlagSet::new(),
                        internal_date: String::new(),
                        raw: raw.clone(),
                    })
                    .collect()
            }))
        }
        async fn fetch_headers(
            &mut self,
            uids: &[u32],
        ) -> mailshift_core::Result<Vec<FetchedHeader>> {
            self.mb.0.lock().unwrap().asked.extend_from_slice(uids);
            Ok(self.with(|m| {
                m.iter()
                    .filter(|(u, _)| uids.contains(u))
                    .map(|(u, raw)| FetchedHeader {
                        uid: *u,
                        size: raw.len() as u32,
                        flags: FlagSet::new(),
                        internal_date: String::new(),
                        header: raw.clone(),
                    })
                    .collect()
            }))
        }
        async fn uids(&mut self) -> mailshift_core::Result<Vec<u32>> {
            unsupported()
        }
        async fn changed_since(&mut self, _: u64) -> mailshift_core::Result<Vec<(u32, FlagSet)>> {
            unsupported()
        }
        async fn wait_for_change(&mut self, timeout: Duration) -> mailshift_core::Result<bool> {
            tokio::time::sleep(timeout.min(Duration::from_millis(20))).await;
            Ok(false)
        }
    }

    struct Reader(Mailbox);

    #[async_trait]
    impl Connector for Reader {
        async fn source(&self) -> mailshift_core::Result<Box<dyn MailSource>> {
            unsupported()
        }
        async fn target(&self) -> mailshift_core::Result<Box<dyn MailTarget>> {
            unsupported()
        }
        async fn target_reader(&self) -> mailshift_core::Result<Box<dyn MailSource>> {
            Ok(Box::new(Session {
                mb: self.0.clone(),
                open: String::new(),
                caps: Capabilities::default(),
            }))
        }
        fn hosts(&self) -> (String, String) {
            ("fake".into(), "fake".into())
        }
    }

    /// Delivers what it is given into `into` (or nowhere), behind a relay hop.
    struct Fake {
        mb: Mailbox,
        into: Option<&'static str>,
    }

    #[async_trait]
    impl Submitter for Fake {
        fn label(&self) -> String {
            "smtps://alice@example.com@fake:465".into()
        }
        async fn submit(&self, _: &Envelope, raw: &[u8]) -> mailshift_core::Result<Accepted> {
            if let Some(folder) = self.into {
                let mut msg = b"Received: from out.new.example ([192.0.2.25]) by mx.example with ESMTPS; d\r\n".to_vec();
                msg.extend_from_slice(raw);
                let mut s = self.mb.0.lock().unwrap();
                let f = s.folders.iter_mut().find(|(n, _)| n == folder).unwrap();
                let uid = f.1.iter().map(|(u, _)| u + 1).max().unwrap_or(1);
                f.1.push((uid, msg));
            }
            Ok(Accepted {
                reply: "250 2.0.0 Ok: queued as Q1".into(),
            })
        }
        async fn check_login(&self) -> mailshift_core::Result<()> {
            Ok(())
        }
    }

    fn plan(mb: &Mailbox, into: Option<&'static str>, timeout: Duration) -> TestSend {
        TestSend {
            domain: "example.com".into(),
            from: "alice@example.com".into(),
            to: "alice@example.com".into(),
            submitter: Arc::new(Fake {
                mb: mb.clone(),
                into,
            }),
            mailbox: Arc::new(Reader(mb.clone())),
            mailbox_label: "imaps://alice@example.com@fake:993".into(),
            folder: "INBOX".into(),
            // A closed loopback port: DNS fails at once, the arrival is what is tested.
            nameservers: vec![Server::new(
                "closed",
                "127.0.0.1:1".parse().unwrap(),
                mailshift_dns::lookup::Role::Recursive,
            )],
            dns_timeout: Duration::from_millis(100),
            timeout,
            submission_host: "fake".into(),
        }
    }

    fn mailbox() -> Mailbox {
        let old = b"Subject: older mail\r\n\r\nhi\r\n".to_vec();
        Mailbox(Arc::new(Mutex::new(Store {
            folders: vec![
                ("INBOX".into(), vec![(1, old.clone()), (2, old.clone())]),
                ("Junk".into(), vec![(7, old)]),
            ],
            asked: Vec::new(),
        })))
    }

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00+01:00").unwrap()
    }

    #[tokio::test]
    async fn a_probe_in_the_junk_folder_is_found_and_is_an_error() {
        let mb = mailbox();
        let r = test_send(&plan(&mb, Some("Junk"), Duration::from_secs(5)), now()).await;
        let d: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.check == "delivery")
            .collect();
        assert_eq!(d.len(), 1, "{:?}", r.findings);
        assert_eq!(d[0].level, Level::Error);
        assert!(
            d[0].message.contains("spam folder Junk"),
            "{}",
            d[0].message
        );
        assert_eq!(r.folder.as_deref(), Some("Junk"));
        assert_eq!(r.queue_id.as_deref(), Some("Q1"));
        assert_eq!(r.sender_ip, Some("192.0.2.25".parse().unwrap()));
        // Only messages that arrived after the UIDNEXT noted before sending were read.
        let asked = mb.0.lock().unwrap().asked.clone();
        assert!(asked.iter().all(|u| *u >= 8), "{asked:?}");
    }

    #[tokio::test]
    async fn a_probe_that_never_comes_ends_at_the_deadline() {
        let mb = mailbox();
        let started = Instant::now();
        let r = test_send(&plan(&mb, None, Duration::from_millis(300)), now()).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(r.level, Level::Error);
        let d = r.findings.iter().find(|f| f.check == "delivery").unwrap();
        assert!(d.message.contains("did not arrive"), "{}", d.message);
        assert!(r.timings.delivery_ms.is_none());
        assert!(mb.0.lock().unwrap().asked.is_empty());
    }
}
