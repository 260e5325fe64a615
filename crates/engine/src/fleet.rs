//! The fleet's scheduler: for every registered mailbox whose next pass is due, prepare
//! the pass (the same [`crate::pass::prepare`] as embedded mode) and record its folder
//! jobs with the pass in one transaction; a relay publishes recorded jobs to the queue,
//! so a scheduler stopped at any instant leaves no pass half announced. Mailboxes are
//! planned concurrently (bounded overall and per old server); several schedulers may
//! run side by side (a planning lease per mailbox, a relay lease per job row).
//!
//! Outages are not mailbox failures: a broker, database or server that cannot be
//! reached defers the mailbox's pass with back-off and a warning; only what is the
//! mailbox's own (a refused login, a folder the destination rejects, the same accounts
//! registered twice) marks it failed.

use crate::pass::{PassOptions, prepare};
use futures::StreamExt;
use mailshift_core::batch::{BatchRecord, BatchState, Gate, attempted_at};
use mailshift_core::cutover::{DomainObservation, DomainRecord, Phase, next_phase};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::mailbox::MailboxStatus;
use mailshift_core::ports::{
    BatchStore, Connectors, DomainStore, JobQueue, MailboxRecord, MailboxStore, MxObserver,
    NoProgress, StateStore,
};
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

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
    /// This scheduler, as recorded with its planning and relay leases.
    pub owner: String,
    /// Mailboxes planned at once, in total and per old server (`host:port`).
    pub parallel: usize,
    pub per_host: usize,
    /// First wait after an outage stopped a mailbox's planning; doubles up to 10 min.
    pub outage_retry: Duration,
    /// A job published this long ago, unfinished, in no queue and on no worker counts
    /// as lost (an outage swallowed it) and is published again.
    pub lost_after: Duration,
    /// Set to stop: a running round plans no further mailbox, finishes those it is
    /// planning (their planning leases released) and publishes what they recorded.
    pub stopping: Arc<AtomicBool>,
    /// How long a planning lease lasts without renewal: after a scheduler is killed, how
    /// long until another may plan its mailboxes. Renewed every third of it while
    /// planning.
    pub planning_lease: Duration,
}

/// The planning lease of `mailshift scheduler`.
pub const PLANNING_LEASE: Duration = Duration::from_secs(60);

/// What one scheduling round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub mailboxes: usize,
    pub jobs: usize,
    /// Mailboxes that failed because of themselves (refused login, ...).
    pub failed: usize,
    /// Mailboxes whose pass waits for an outage to end.
    pub deferred: usize,
    /// Jobs the relay published to the queue.
    pub published: usize,
    /// Jobs found lost and published again.
    pub requeued: usize,
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

/// One mailbox chosen for a pass this round.
struct Due<'a> {
    m: &'a MailboxRecord,
    dual: bool,
    next: Option<i64>,
    final_of_domain: Option<String>,
}

/// How planning one mailbox ended.
enum Planned {
    Jobs(usize),
    Failed,
    Deferred,
    /// Another scheduler is planning it.
    Skipped,
}

impl Scheduler {
    /// Plans a pass for every due mailbox (all of them with `force`) and publishes the
    /// recorded jobs.
    pub async fn round(&self, force: bool) -> Result<Round> {
        let mut round = Round::default();
        let t = now();
        let mailboxes = self.mailboxes.mailboxes(None).await?;
        let phases = self.advance_domains(&mailboxes, t).await?;
        let batches = self.advance_batches(&mailboxes, t).await?;
        let due = self.select(&mailboxes, &phases, &batches, force, t);
        round.requeued = self.requeue_lost(t).await;
        let mut lag: i64 = 0;
        for d in &due {
            if let Some(at) = d.m.next_pass_at {
                lag = lag.max(t - at);
            }
        }
        // Plan concurrently while the relay publishes what is recorded, so workers
        // start on the first mailboxes while the last are still being planned.
        let planning_done = AtomicBool::new(false);
        let published = AtomicUsize::new(0);
        let hosts: HashMap<String, Arc<Semaphore>> = due
            .iter()
            .map(|d| {
                (
                    source_host(d.m),
                    Arc::new(Semaphore::new(self.per_host.max(1))),
                )
            })
            .collect();
        let plans = futures::stream::iter(due.iter())
            .map(|d| {
                let host = hosts.get(&source_host(d.m)).cloned();
                async move {
                    let _permit = match &host {
                        Some(h) => h.clone().acquire_owned().await.ok(),
                        None => None,
                    };
                    if self.stopping.load(Ordering::SeqCst) {
                        return (d, Planned::Skipped);
                    }
                    (d, self.plan_one(d, t).await)
                }
            })
            .buffer_unordered(self.parallel.max(1))
            .collect::<Vec<_>>();
        let relay = async {
            loop {
                let done = planning_done.load(Ordering::SeqCst);
                match self.relay().await {
                    Ok(n) => {
                        published.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message, "cannot publish jobs now; they are kept and published later");
                        if done {
                            break;
                        }
                    }
                }
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let planned = async {
            let r = plans.await;
            planning_done.store(true, Ordering::SeqCst);
            r
        };
        let (outcomes, ()) = tokio::join!(planned, relay);
        round.published = published.load(Ordering::SeqCst);
        let mut final_passes: Vec<String> = Vec::new();
        for (d, outcome) in outcomes {
            match outcome {
                Planned::Jobs(n) => {
                    round.mailboxes += 1;
                    round.jobs += n;
                    if let Some(name) = &d.final_of_domain {
                        final_passes.push(name.clone());
                    }
                }
                Planned::Failed => round.failed += 1,
                Planned::Deferred => round.deferred += 1,
                Planned::Skipped => {}
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
                c.store.mark_final_pass(&d, t).await?;
                tracing::info!(domain = %d, "dual reception over: final passes scheduled");
            }
        }
        Ok(round)
    }

    /// Jobs no queue holds and no worker runs, yet unfinished: an outage lost them
    /// (a message gone with a broker's disk, a worker killed between its copy and its
    /// record...). Looked for only while the queue holds nothing, so a job waiting its
    /// turn is never taken for lost; they go back to the relay. Returns how many.
    async fn requeue_lost(&self, t: i64) -> usize {
        match self.queue.waiting().await {
            Ok(Some(0)) => {}
            Ok(_) => return 0,
            Err(e) => {
                tracing::debug!(error = %e.message, "cannot read the queue's depth");
                return 0;
            }
        }
        let by = t - i64::try_from(self.lost_after.as_secs()).unwrap_or(i64::MAX / 2);
        match self.mailboxes.republish_lost(by, 500).await {
            Ok(lost) => {
                for j in &lost {
                    tracing::warn!(
                        folder = %j.source_display,
                        migration = %j.migration_id,
                        "a job was in no queue and on no worker (lost in an outage); published again"
                    );
                }
                lost.len()
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot look for lost jobs");
                0
            }
        }
    }

    /// Publishes recorded jobs not yet published (this scheduler's share), oldest first;
    /// returns how many. A publish that fails leaves its row for the next try.
    pub async fn relay(&self) -> Result<usize> {
        let mut n = 0;
        loop {
            let jobs = self
                .mailboxes
                .claim_unpublished(&self.owner, 500, Duration::from_secs(120))
                .await?;
            if jobs.is_empty() {
                return Ok(n);
            }
            let mut sent = Vec::with_capacity(jobs.len());
            let mut failure = None;
            for job in &jobs {
                match self.queue.publish(job).await {
                    Ok(()) => sent.push(job.id),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            metrics::counter!(crate::metrics::JOBS_PUBLISHED).increment(sent.len() as u64);
            n += sent.len();
            self.mailboxes.mark_published(&sent).await?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// The mailboxes to plan now, with the batch and domain rules applied in order
    /// (concurrency caps count the ones chosen before).
    fn select<'a>(
        &self,
        mailboxes: &'a [MailboxRecord],
        phases: &HashMap<String, DomainRecord>,
        batches: &HashMap<String, BatchRecord>,
        force: bool,
        t: i64,
    ) -> Vec<Due<'a>> {
        // Mailboxes with a pass in flight, per batch and per (batch, old server).
        let mut in_flight: HashMap<&str, u32> = HashMap::new();
        let mut in_flight_host: HashMap<(&str, String), u32> = HashMap::new();
        let busy = |m: &MailboxRecord| m.status.busy(m.jobs_left);
        for m in mailboxes {
            if let Some(b) = &m.batch
                && busy(m)
            {
                *in_flight.entry(b.as_str()).or_default() += 1;
                *in_flight_host
                    .entry((b.as_str(), source_host(m)))
                    .or_default() += 1;
            }
        }
        let mut out = Vec::new();
        for m in mailboxes {
            let domain = m.options.domain.as_deref().and_then(|d| phases.get(d));
            if domain.is_some_and(|d| d.phase == Phase::Done) {
                continue; // decommissioned: no more passes
            }
            let batch = m.batch.as_deref().and_then(|b| batches.get(b));
            let attempted = attempted_at(m.status, m.pass_started_at, m.last_pass_at);
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
                *in_flight.entry(b.name.as_str()).or_default() += 1;
                *in_flight_host
                    .entry((b.name.as_str(), source_host(m)))
                    .or_default() += 1;
            }
            let dual = domain.is_some_and(|d| d.phase.dual_reception());
            let interval = interval.unwrap_or(self.interval.as_secs());
            out.push(Due {
                m,
                dual,
                next: Some(t + interval as i64),
                final_of_domain: ending.map(|d| d.config.name.clone()),
            });
        }
        out
    }

    /// Plans one mailbox under its planning lease and records the outcome on it.
    async fn plan_one(&self, d: &Due<'_>, t: i64) -> Planned {
        let m = d.m;
        match self
            .mailboxes
            .claim_planning(m.id, &self.owner, self.planning_lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Planned::Skipped,
            Err(e) => {
                tracing::warn!(mailbox = %m.source, error = %e.message, "cannot take the mailbox to plan it");
                return Planned::Deferred;
            }
        }
        // One trace per planned pass: the jobs it publishes carry it to the workers.
        let span = tracing::info_span!(
            "scheduler.plan",
            mailbox = %m.id,
            source = %m.source,
            dual_reception = d.dual,
            jobs = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        if let Some(id) = crate::trace::trace_id(&span) {
            span.record("trace_id", id.as_str());
        }
        // The lease is renewed while the planning lasts (a mailbox of thousands of
        // folders takes a while), so it can be short enough for a killed scheduler's
        // mailboxes to be planned by another soon.
        let renew = async {
            loop {
                tokio::time::sleep(self.planning_lease / 3).await;
                if let Err(e) = self
                    .mailboxes
                    .claim_planning(m.id, &self.owner, self.planning_lease)
                    .await
                {
                    tracing::warn!(mailbox = %m.source, error = %e.message, "cannot renew a planning lease");
                }
            }
        };
        let planned = {
            use tracing::Instrument;
            tokio::select! {
                r = self.plan(m, d.dual, d.next).instrument(span.clone()) => r,
                never = renew => never,
            }
        };
        let outcome = match planned {
            Ok((n, source_messages)) => {
                span.record("jobs", n);
                tracing::info!(mailbox = %m.source, jobs = n, messages = source_messages, "pass scheduled");
                Planned::Jobs(n)
            }
            Err(e) if e.kind.is_infrastructure() => {
                // Not the mailbox's fault: try again soon, with back-off, keep its status.
                let wait = match e.kind {
                    ErrorKind::Throttled(Some(hint)) => hint,
                    _ => self.outage_wait(m, t),
                };
                let warning = format!(
                    "waiting: {} (next try in {}s)",
                    e.message,
                    wait.as_secs().max(1)
                );
                tracing::warn!(mailbox = %m.source, error = %e.message, retry_in_s = wait.as_secs(), "pass deferred by an outage");
                if let Err(e) = self
                    .mailboxes
                    .defer_mailbox(m.id, &warning, t + wait.as_secs().max(1) as i64)
                    .await
                {
                    tracing::warn!(mailbox = %m.source, error = %e.message, "cannot record the deferral");
                }
                Planned::Deferred
            }
            Err(e) => {
                tracing::warn!(mailbox = %m.source, error = %e.message, "cannot plan a pass");
                if let Err(e) = self
                    .mailboxes
                    .set_mailbox_status(m.id, MailboxStatus::Failed, Some(&e.message), d.next)
                    .await
                {
                    tracing::warn!(mailbox = %m.source, error = %e.message, "cannot record the failure");
                }
                Planned::Failed
            }
        };
        if let Err(e) = self.mailboxes.release_planning(m.id, &self.owner).await {
            tracing::debug!(error = %e.message, "planning lease left to expire");
        }
        outcome
    }

    /// The wait after an outage deferred a mailbox: doubling from `outage_retry` with
    /// each consecutive deferral (told by how overdue the pass is), up to 10 minutes.
    fn outage_wait(&self, m: &MailboxRecord, t: i64) -> Duration {
        let base = self.outage_retry.max(Duration::from_secs(1));
        let overdue = m
            .next_pass_at
            .map(|due| (t - due).max(0) as u64)
            .unwrap_or(0);
        let wait = if m.warning.is_some() {
            Duration::from_secs((overdue / 2).max(base.as_secs())).saturating_mul(2)
        } else {
            base
        };
        wait.min(Duration::from_secs(600))
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
                        attempted_at(m.status, m.pass_started_at, m.last_pass_at),
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

    /// Prepares a pass and records its jobs (published by the relay); returns how many,
    /// and how many messages the source's folders hold now (the dashboard's total).
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
                let errors: Vec<Error> = [s.err(), t.err()].into_iter().flatten().collect();
                // The mailbox's own problem wins: a refused login is said even when the
                // other side is briefly away.
                let kind = errors
                    .iter()
                    .find(|e| !e.kind.is_infrastructure())
                    .or(errors.first())
                    .map(|e| e.kind.clone())
                    .unwrap_or(ErrorKind::Network);
                let msg: Vec<String> = errors.into_iter().map(|e| e.message).collect();
                return Err(Error::new(kind, msg.join("; ")));
            }
        };
        let source: Endpoint = m.source.parse()?;
        let dest: Endpoint = m.dest.parse()?;
        let opts = PassOptions {
            rules: FolderRules::new(&m.options.maps, &m.options.excludes)?,
            delete: m.options.delete && !dual_reception,
            adopt_existing: true,
            split_above: self.split_above,
            dual_reception,
            skip_unchanged: true,
            count_messages: true,
        };
        let pass = prepare(
            &mut *src,
            &mut *dst,
            &*self.state,
            &source,
            &dest,
            &opts,
            &NoProgress,
        )
        .await?;
        if let Some(key) = &pass.account_key {
            let twins = self
                .mailboxes
                .account_conflicts(m.migration_id, key)
                .await?;
            if let Some(other) = twins.first() {
                return Err(Error::usage(format!(
                    "the same accounts are registered twice: as {} -> {} and as {} -> {} \
                     (batch {}, mailbox id {}); copying both would race into one mailbox. \
                     Remove one of the two registrations from the fleet database",
                    m.source,
                    m.dest,
                    other.source,
                    other.dest,
                    other.batch.as_deref().unwrap_or("none"),
                    other.id
                )));
            }
        }
        self.mailboxes
            .begin_pass(m.id, &pass.jobs, Some(pass.source_messages), next)
            .await?;
        Ok((pass.jobs.len(), pass.source_messages))
    }
}
