//! The fleet's scheduler: for every registered mailbox whose next pass is due, prepare
//! the pass (the same [`crate::pass::prepare`] as embedded mode) and publish one job per
//! folder to the queue; workers anywhere take them from there.

use crate::pass::{PassOptions, prepare};
use mailshift_core::batch::{BatchRecord, BatchState, Gate, attempted_at};
use mailshift_core::cutover::{DomainObservation, DomainRecord, Phase, next_phase};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::ports::{
    BatchStore, Connectors, DomainStore, JobQueue, MailboxRecord, MailboxStore, MxObserver,
    StateStore,
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
    /// Batch schedules (start, interval, completion, pause, concurrency); None: every
    /// mailbox is scheduled on `interval`.
    pub batches: Option<Arc<dyn BatchStore>>,
}

/// What one scheduling round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub mailboxes: usize,
    pub jobs: usize,
    pub failed: usize,
}

/// The old server of a mailbox, `host:port` (the key of per-server limits).
fn source_host(m: &MailboxRecord) -> String {
    m.source
        .parse::<Endpoint>()
        .map(|e| e.host_port())
        .unwrap_or_else(|_| m.source.clone())
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
        let batches = self.advance_batches(&mailboxes, t).await?;
        // Mailboxes with a pass in flight, per batch and per (batch, old server).
        let mut in_flight: HashMap<&str, u32> = HashMap::new();
        let mut in_flight_host: HashMap<(&str, String), u32> = HashMap::new();
        let busy = |m: &MailboxRecord| m.jobs_left > 0 && m.status == "syncing";
        for m in &mailboxes {
            if let Some(b) = &m.batch
                && busy(m)
            {
                *in_flight.entry(b.as_str()).or_default() += 1;
                *in_flight_host
                    .entry((b.as_str(), source_host(m)))
                    .or_default() += 1;
            }
        }
        let mut final_passes: Vec<&str> = Vec::new();
        let mut lag: i64 = 0;
        for m in &mailboxes {
            let domain = m.options.domain.as_deref().and_then(|d| phases.get(d));
            if domain.is_some_and(|d| d.phase == Phase::Done) {
                continue; // decommissioned: no more passes
            }
            let batch = m.batch.as_deref().and_then(|b| batches.get(b));
            let attempted = attempted_at(&m.status, m.pass_started_at, m.last_pass_at);
            let (now_anyway, interval) = match batch.map(|b| b.gate(t, attempted)) {
                Some(Gate::Hold(_)) => continue,
                Some(Gate::Now) => (true, None),
                Some(Gate::Due(interval)) => (false, interval),
                None => (false, None),
            };
            let ending = domain.filter(|d| {
                d.phase == Phase::DualReception
                    && d.final_pass_at.is_none()
                    && d.dual_reception_until().is_some_and(|u| t >= u)
            });
            if !force
                && !now_anyway
                && ending.is_none()
                && m.next_pass_at.is_some_and(|due| due > t)
            {
                continue;
            }
            if let Some(b) = batch
                && !busy(m)
            {
                let n = in_flight.get(b.name.as_str()).copied().unwrap_or(0);
                let on_host = in_flight_host
                    .get(&(b.name.as_str(), source_host(m)))
                    .copied()
                    .unwrap_or(0);
                if b.concurrency.is_some_and(|c| n >= c)
                    || b.host_concurrency.is_some_and(|c| on_host >= c)
                {
                    continue; // the batch's other mailboxes go first
                }
            }
            let dual = domain.is_some_and(|d| d.phase.dual_reception());
            let interval = interval.unwrap_or(self.interval.as_secs());
            let next = Some(t + interval as i64);
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
                self.plan(m, dual, next).instrument(span.clone()).await
            };
            if let Ok((n, _)) = &planned {
                span.record("jobs", *n);
                metrics::counter!(crate::metrics::JOBS_PUBLISHED).increment(*n as u64);
            }
            match planned {
                Ok((n, source_messages)) => {
                    round.mailboxes += 1;
                    round.jobs += n;
                    if let Some(d) = ending {
                        final_passes.push(&d.config.name);
                    }
                    if let Some(b) = batch
                        && n > 0
                        && !busy(m)
                    {
                        *in_flight.entry(b.name.as_str()).or_default() += 1;
                        *in_flight_host
                            .entry((b.name.as_str(), source_host(m)))
                            .or_default() += 1;
                    }
                    tracing::info!(mailbox = %m.source, jobs = n, messages = source_messages, "pass scheduled");
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

    /// Moves each batch on (running -> completing -> completed) from its schedule and
    /// its mailboxes' passes; returns the batches by name.
    async fn advance_batches(
        &self,
        mailboxes: &[MailboxRecord],
        t: i64,
    ) -> Result<HashMap<String, BatchRecord>> {
        let Some(store) = &self.batches else {
            return Ok(HashMap::new());
        };
        let mut out = HashMap::new();
        for mut b in store.batches().await? {
            let members: Vec<(u32, Option<i64>)> = mailboxes
                .iter()
                .filter(|m| m.batch.as_deref() == Some(b.name.as_str()))
                .map(|m| {
                    (
                        m.jobs_left,
                        attempted_at(&m.status, m.pass_started_at, m.last_pass_at),
                    )
                })
                .collect();
            if let Some(next) = b.next_state(t, &members) {
                tracing::info!(batch = %b.name, from = %b.state, to = %next, "batch state");
                if next == BatchState::Completing {
                    b.final_pass_at = Some(t);
                }
                b.state = next;
                store.put_batch(&b).await?;
            }
            out.insert(b.name.clone(), b);
        }
        Ok(out)
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

    /// Publishes a pass's jobs; returns how many, and how many messages the source's
    /// folders hold now (the dashboard's total).
    async fn plan(
        &self,
        m: &MailboxRecord,
        dual_reception: bool,
        next: Option<i64>,
    ) -> Result<(usize, u64)> {
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
        let mut total = 0u64;
        let mut counted = std::collections::HashSet::new();
        for job in &pass.jobs {
            if counted.insert(job.source_folder.as_str()) {
                total += u64::from(src.examine(&job.source_folder).await?.exists);
            }
        }
        // Counted before any is published: a fast worker may finish one at once.
        self.mailboxes
            .begin_pass(m.id, pass.jobs.len() as u32, Some(total), next)
            .await?;
        for job in &pass.jobs {
            self.queue.publish(job).await?;
        }
        Ok((pass.jobs.len(), total))
    }
}
