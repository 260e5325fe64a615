//! The fleet's scheduler: for every registered mailbox whose next pass is due, prepare
//! the pass (the same [`crate::pass::prepare`] as embedded mode) and publish one job per
//! folder to the queue; workers anywhere take them from there.

use crate::pass::{PassOptions, prepare};
use mailshift_core::cutover::{DomainObservation, DomainRecord, Phase, next_phase};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::ports::{
    Connectors, DomainStore, JobQueue, MailboxRecord, MailboxStore, MxObserver, StateStore,
};
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Domain cutovers the scheduler drives (see [`mailshift_core::cutover::Phase`]).
pub struct Cutovers {
    pub store: Arc<dyn DomainStore>,
    pub observer: Arc<dyn MxObserver>,
}

pub struct Scheduler {
    pub state: Arc<dyn StateStore>,
    pub mailboxes: Arc<dyn MailboxStore>,
    pub connectors: Arc<dyn Connectors>,
    pub queue: Arc<dyn JobQueue>,
    /// Time between incremental passes of one mailbox.
    pub interval: Duration,
    /// First copies of folders above this many messages are split into UID ranges.
    pub split_above: Option<usize>,
    /// Domain phases (prepare .. done); None: every mailbox is synced as before a switch.
    pub cutovers: Option<Cutovers>,
}

/// What one scheduling round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub mailboxes: usize,
    pub jobs: usize,
    pub failed: usize,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Scheduler {
    /// Plans a pass for every due mailbox (all of them with `force`).
    pub async fn round(&self, force: bool) -> Result<Round> {
        let mut round = Round::default();
        let t = now();
        let mailboxes = self.mailboxes.mailboxes(None).await?;
        let phases = self.advance_domains(&mailboxes, t).await?;
        let mut final_passes: Vec<&str> = Vec::new();
        let mut lag: i64 = 0;
        for m in &mailboxes {
            let domain = m.options.domain.as_deref().and_then(|d| phases.get(d));
            if domain.is_some_and(|d| d.phase == Phase::Done) {
                continue; // decommissioned: no more passes
            }
            let ending = domain.filter(|d| {
                d.phase == Phase::DualReception
                    && d.final_pass_at.is_none()
                    && d.dual_reception_until().is_some_and(|u| t >= u)
            });
            if !force && ending.is_none() && m.next_pass_at.is_some_and(|due| due > t) {
                continue;
            }
            let dual = domain.is_some_and(|d| d.phase.dual_reception());
            let next = Some(t + self.interval.as_secs() as i64);
            if let Some(due) = m.next_pass_at {
                lag = lag.max(t - due);
            }
            // One trace per planned pass: the jobs it publishes carry it to the workers.
            let span = tracing::info_span!(
                "scheduler.plan",
                mailbox = %m.id,
                source = %m.source,
                dual_reception = dual,
                jobs = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            if let Some(id) = mailshift_queue::trace::trace_id(&span) {
                span.record("trace_id", id.as_str());
            }
            let planned = {
                use tracing::Instrument;
                self.plan(m, dual).instrument(span.clone()).await
            };
            if let Ok(n) = &planned {
                span.record("jobs", *n);
                metrics::counter!(crate::metrics::JOBS_PUBLISHED).increment(*n as u64);
            }
            match planned {
                Ok(n) => {
                    round.mailboxes += 1;
                    round.jobs += n;
                    if let Some(d) = ending {
                        final_passes.push(&d.config.name);
                    }
                    self.mailboxes
                        .set_mailbox_status(m.id, "syncing", None, next)
                        .await?;
                    tracing::info!(mailbox = %m.source, jobs = n, "pass scheduled");
                }
                Err(e) => {
                    round.failed += 1;
                    tracing::warn!(mailbox = %m.source, error = %e.message, "cannot plan a pass");
                    // A server that asked to slow down is asked again once its back-off
                    // is over, not a whole interval later.
                    let next = match e.kind {
                        ErrorKind::Throttled(hint) => Some(
                            t + hint.unwrap_or(Duration::from_secs(60)).as_secs().max(1) as i64,
                        ),
                        _ => next,
                    };
                    self.mailboxes
                        .set_mailbox_status(m.id, "failed", Some(&e.message), next)
                        .await?;
                }
            }
        }
        metrics::gauge!(crate::metrics::PASS_LAG).set(lag.max(0) as f64);
        if let Ok(Some(depth)) = self.queue.depth().await {
            metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(depth as f64);
        }
        if let Some(c) = &self.cutovers {
            final_passes.sort_unstable();
            final_passes.dedup();
            for d in final_passes {
                c.store.mark_final_pass(d, t).await?;
                tracing::info!(domain = d, "dual reception over: final passes scheduled");
            }
        }
        Ok(round)
    }

    /// Moves each domain's cutover on by at most one phase, from what its DNS and
    /// mailboxes show now; returns the domains by name with their current phase.
    async fn advance_domains(
        &self,
        mailboxes: &[MailboxRecord],
        t: i64,
    ) -> Result<HashMap<String, DomainRecord>> {
        let Some(c) = &self.cutovers else {
            return Ok(HashMap::new());
        };
        let mut out = HashMap::new();
        for mut d in c.store.domains().await? {
            let members: Vec<&MailboxRecord> = mailboxes
                .iter()
                .filter(|m| m.options.domain.as_deref() == Some(d.config.name.as_str()))
                .collect();
            let mut seen = DomainObservation {
                all_verified: false,
                mx_switched: false,
                final_pass_done: d.final_pass_at.is_some(),
            };
            if d.phase < Phase::Switched && d.config.new_mx.is_some() {
                match c.observer.observe(&d.config).await {
                    Ok((switched, what)) => {
                        seen.mx_switched = switched;
                        tracing::info!(domain = %d.config.name, switched, seen = %what, "MX observed");
                    }
                    Err(e) => {
                        tracing::warn!(domain = %d.config.name, error = %e.message, "cannot observe the MX")
                    }
                }
            }
            if d.phase == Phase::Syncing && !seen.mx_switched && !members.is_empty() {
                let mut all = true;
                for m in &members {
                    match self.verify(m).await {
                        Ok(r) if r.in_sync() => {}
                        Ok(r) => {
                            all = false;
                            tracing::info!(mailbox = %m.source, missing = r.missing(), different = r.different(), "not in sync yet");
                            break;
                        }
                        Err(e) => {
                            all = false;
                            tracing::warn!(mailbox = %m.source, error = %e.message, "cannot verify");
                            break;
                        }
                    }
                }
                seen.all_verified = all;
            }
            if let Some(next) = next_phase(&d, seen, t) {
                let switched_at = (next == Phase::Switched).then_some(t);
                let report = if next == Phase::Done {
                    Some(self.decommission_report(&d, &members).await)
                } else {
                    None
                };
                c.store
                    .set_domain_phase(&d.config.name, next, t, switched_at, report.as_deref())
                    .await?;
                tracing::info!(domain = %d.config.name, from = %d.phase, to = %next, "cutover phase");
                d.phase = next;
                d.phase_since = t;
                if switched_at.is_some() {
                    d.switched_at = switched_at;
                }
                d.report = report.or(d.report);
            }
            out.insert(d.config.name.clone(), d);
        }
        Ok(out)
    }

    /// Compares a mailbox's servers now (read-only on both sides).
    async fn verify(&self, m: &MailboxRecord) -> Result<crate::verify::VerifyReport> {
        let connector = self.connectors.connector(m.migration_id).await?;
        let (s, d) = tokio::join!(connector.source(), connector.target_reader());
        let (mut src, mut dst) = (s?, d?);
        let rules = FolderRules::new(&m.options.maps, &m.options.excludes)?;
        crate::verify::verify(&mut *src, &mut *dst, &rules, false).await
    }

    /// The final verification of every mailbox of a domain, as JSON. Differences are
    /// expected now (users delete and re-flag on the new server); the report says
    /// what the old server holds that the new one does not, for the operator to judge
    /// before decommissioning.
    async fn decommission_report(&self, d: &DomainRecord, members: &[&MailboxRecord]) -> String {
        let mut rows = Vec::new();
        for m in members {
            let row = match self.verify(m).await {
                Ok(r) => serde_json::json!({
                    "source": m.source,
                    "dest": m.dest,
                    "complete": r.complete(),
                    "source_messages": r.source_messages(),
                    "missing_on_destination": r.missing(),
                    "extra_on_destination": r.extra(),
                    "different": r.different(),
                }),
                Err(e) => serde_json::json!({
                    "source": m.source,
                    "dest": m.dest,
                    "complete": false,
                    "error": e.message,
                }),
            };
            rows.push(row);
        }
        serde_json::json!({
            "domain": d.config.name,
            "switched_at": d.switched_at,
            "dual_reception_until": d.dual_reception_until(),
            "mailboxes": rows,
        })
        .to_string()
    }

    async fn plan(&self, m: &MailboxRecord, dual_reception: bool) -> Result<usize> {
        let connector = self.connectors.connector(m.migration_id).await?;
        let (s, t) = tokio::join!(connector.source(), connector.target());
        let (mut src, mut dst) = match (s, t) {
            (Ok(s), Ok(t)) => (s, t),
            (s, t) => {
                let msg: Vec<String> = [s.err(), t.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| e.message)
                    .collect();
                return Err(Error::new(ErrorKind::Auth, msg.join("; ")));
            }
        };
        let source: Endpoint = m.source.parse()?;
        let dest: Endpoint = m.dest.parse()?;
        let opts = PassOptions {
            rules: FolderRules::new(&m.options.maps, &m.options.excludes)?,
            delete: m.options.delete && !dual_reception,
            adopt_existing: m.options.adopt_existing,
            split_above: self.split_above,
            dual_reception,
        };
        let pass = prepare(&mut *src, &mut *dst, &*self.state, &source, &dest, &opts).await?;
        for job in &pass.jobs {
            self.queue.publish(job).await?;
        }
        Ok(pass.jobs.len())
    }
}
