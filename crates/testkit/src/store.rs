//! [`MemStore`]: the state store and the fleet's mailbox store in memory, with the
//! semantics of `SeaStore` (each method one transaction).

use async_trait::async_trait;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::flags::FlagSet;
use mailshift_core::job::FolderJob;
use mailshift_core::mailbox::{JobOutcome, MailboxEvent, MailboxStatus};
use mailshift_core::ports::{
    CopiedMessage, FailedMessage, FolderState, MailboxCredentials, MailboxOptions, MailboxRecord,
    MailboxStore, MigrationRef, PendingBatch, StateStore,
};
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Debug)]
struct Migration {
    id: Uuid,
    source: String,
    dest: String,
    key: Option<String>,
}

#[derive(Clone, Debug)]
struct Lease {
    owner: String,
    until: i64,
}

#[derive(Clone, Debug)]
struct JobRow {
    job: FolderJob,
    pass: Uuid,
    /// When the relay published it.
    published: Option<i64>,
    relay: Option<Lease>,
    finished: Option<JobOutcome>,
}

#[derive(Default)]
struct State {
    migrations: Vec<Migration>,
    folders: BTreeMap<Uuid, FolderState>,
    messages: HashMap<Uuid, BTreeMap<u32, CopiedMessage>>,
    failures: HashMap<Uuid, BTreeMap<u32, FailedMessage>>,
    leases: HashMap<Uuid, Lease>,
    mailboxes: Vec<(MailboxRecord, MailboxCredentials)>,
    plan_leases: HashMap<Uuid, Lease>,
    jobs: Vec<JobRow>,
    /// The store is unreachable (every call fails with `Store`) while this is set.
    down: bool,
    /// This many coming `job_finished` calls fail as if the database went away then.
    fail_job_finished: u32,
}

/// The state and mailbox stores in memory; clones share it.
#[derive(Clone, Default)]
pub struct MemStore {
    st: Arc<Mutex<State>>,
    clock: Option<Arc<dyn mailshift_core::ports::Clock>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Lease and job times from this clock (default: the system's).
    pub fn with_clock(mut self, clock: Arc<dyn mailshift_core::ports::Clock>) -> MemStore {
        self.clock = Some(clock);
        self
    }

    /// The next `n` records of a finished job fail (the database away at that moment).
    pub fn fail_job_finished(&self, n: u32) {
        self.lock().fail_job_finished = n;
    }

    /// Makes every call fail as a database outage would, until `up`.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> i64 {
        match &self.clock {
            Some(c) => c.now(),
            None => mailshift_core::ports::Clock::now(&mailshift_core::ports::SystemClock),
        }
    }

    fn open(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        let g = self.lock();
        if g.down {
            return Err(Error::new(ErrorKind::Store, "the state database is away"));
        }
        Ok(g)
    }

    /// Jobs recorded and not yet published, for assertions.
    pub fn unpublished(&self) -> usize {
        self.lock()
            .jobs
            .iter()
            .filter(|j| j.published.is_none())
            .count()
    }

    /// The recorded outcome of each job, for assertions.
    pub fn job_outcomes(&self) -> Vec<(Uuid, Option<JobOutcome>)> {
        self.lock()
            .jobs
            .iter()
            .map(|j| (j.job.id, j.finished))
            .collect()
    }
}

fn save(st: &mut State, state: &FolderState) {
    if let Some(f) = st.folders.get_mut(&state.id) {
        let mut s = state.clone();
        s.pending = None;
        *f = s;
    }
}

fn upsert(st: &mut State, folder: Uuid, copied: &[CopiedMessage]) {
    let map = st.messages.entry(folder).or_default();
    for c in copied {
        map.insert(c.source_uid, c.clone());
    }
    if let Some(f) = st.failures.get_mut(&folder) {
        for c in copied {
            f.remove(&c.source_uid);
        }
    }
}

#[async_trait]
impl StateStore for MemStore {
    async fn migration_keyed(
        &self,
        source: &Endpoint,
        dest: &Endpoint,
        account_key: Option<&str>,
    ) -> Result<MigrationRef> {
        let mut st = self.open()?;
        let (s, d) = (source.to_string(), dest.to_string());
        if let Some(m) = st
            .migrations
            .iter_mut()
            .find(|m| m.source == s && m.dest == d)
        {
            if let Some(k) = account_key {
                m.key = Some(k.to_string());
            }
            return Ok(MigrationRef {
                id: m.id,
                recorded_as: None,
            });
        }
        if let Some(k) = account_key
            && let Some(m) = st.migrations.iter().find(|m| m.key.as_deref() == Some(k))
        {
            return Ok(MigrationRef {
                id: m.id,
                recorded_as: Some((m.source.clone(), m.dest.clone())),
            });
        }
        let id = Uuid::new_v4();
        st.migrations.push(Migration {
            id,
            source: s,
            dest: d,
            key: account_key.map(str::to_string),
        });
        Ok(MigrationRef {
            id,
            recorded_as: None,
        })
    }

    async fn folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        dest_folder: &str,
    ) -> Result<FolderState> {
        let mut st = self.open()?;
        if let Some(f) = st
            .folders
            .values()
            .find(|f| f.migration_id == migration && f.source_folder == source_folder)
        {
            return Ok(f.clone());
        }
        let f = FolderState {
            id: Uuid::new_v4(),
            migration_id: migration,
            source_folder: source_folder.to_string(),
            dest_folder: dest_folder.to_string(),
            source_uidvalidity: None,
            dest_uidvalidity: None,
            highest_uid: 0,
            highest_modseq: None,
            pending: None,
            dest_created: false,
        };
        st.folders.insert(f.id, f.clone());
        Ok(f)
    }

    async fn folders(&self, migration: Uuid) -> Result<Vec<FolderState>> {
        let st = self.open()?;
        Ok(st
            .folders
            .values()
            .filter(|f| f.migration_id == migration)
            .cloned()
            .collect())
    }

    async fn set_pending(&self, folder: Uuid, pending: Option<&PendingBatch>) -> Result<()> {
        let mut st = self.open()?;
        if let Some(f) = st.folders.get_mut(&folder) {
            f.pending = pending.cloned();
        }
        Ok(())
    }

    async fn commit_batch(
        &self,
        state: &FolderState,
        copied: &[CopiedMessage],
        failed: &[FailedMessage],
    ) -> Result<()> {
        let mut st = self.open()?;
        upsert(&mut st, state.id, copied);
        let fmap = st.failures.entry(state.id).or_default();
        for f in failed {
            fmap.insert(f.source_uid, f.clone());
        }
        save(&mut st, state);
        Ok(())
    }

    async fn apply_changes(
        &self,
        state: &FolderState,
        flags: &[(u32, FlagSet)],
        forget: &[u32],
    ) -> Result<()> {
        let mut st = self.open()?;
        if let Some(map) = st.messages.get_mut(&state.id) {
            for (uid, f) in flags {
                if let Some(m) = map.get_mut(uid) {
                    m.flags = f.clone();
                }
            }
            for uid in forget {
                map.remove(uid);
            }
        }
        if let Some(f) = st.failures.get_mut(&state.id) {
            for uid in forget {
                f.remove(uid);
            }
        }
        save(&mut st, state);
        Ok(())
    }

    async fn replace_messages(
        &self,
        state: &FolderState,
        messages: &[CopiedMessage],
    ) -> Result<()> {
        let mut st = self.open()?;
        st.messages.remove(&state.id);
        st.failures.remove(&state.id);
        upsert(&mut st, state.id, messages);
        save(&mut st, state);
        Ok(())
    }

    async fn remove_folder(&self, folder: Uuid) -> Result<()> {
        let mut st = self.open()?;
        st.messages.remove(&folder);
        st.failures.remove(&folder);
        st.folders.remove(&folder);
        Ok(())
    }

    async fn merge_folder(&self, into: Uuid, from: Uuid) -> Result<()> {
        let mut st = self.open()?;
        let msgs = st.messages.remove(&from).unwrap_or_default();
        st.messages.entry(into).or_default().extend(msgs);
        let fails = st.failures.remove(&from).unwrap_or_default();
        st.failures.entry(into).or_default().extend(fails);
        Ok(())
    }

    async fn copied(&self, folder: Uuid) -> Result<Vec<CopiedMessage>> {
        let st = self.open()?;
        Ok(st
            .messages
            .get(&folder)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn failed(&self, folder: Uuid) -> Result<Vec<FailedMessage>> {
        let st = self.open()?;
        Ok(st
            .failures
            .get(&folder)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }
}

fn recount(st: &mut State, pass: Uuid, now: i64) {
    let left = st
        .jobs
        .iter()
        .filter(|j| j.pass == pass && j.finished.is_none())
        .count();
    if let Some((m, _)) = st
        .mailboxes
        .iter_mut()
        .find(|(m, _)| m.pass_id == Some(pass))
    {
        m.jobs_left = left as u32;
        m.status = m.status.next(MailboxEvent::JobFinished { left });
        if left == 0 {
            m.last_pass_at = Some(now);
        }
    }
}

#[async_trait]
impl MailboxStore for MemStore {
    async fn add_mailbox(
        &self,
        source: &Endpoint,
        dest: &Endpoint,
        batch: Option<&str>,
        options: &MailboxOptions,
        credentials: &MailboxCredentials,
    ) -> Result<MailboxRecord> {
        let migration = self.migration(source, dest).await?;
        let now = self.now();
        let mut st = self.open()?;
        if let Some((m, c)) = st
            .mailboxes
            .iter_mut()
            .find(|(m, _)| m.migration_id == migration)
        {
            m.batch = batch.map(str::to_string);
            m.options = options.clone();
            *c = credentials.clone();
            return Ok(m.clone());
        }
        let m = MailboxRecord {
            id: Uuid::new_v4(),
            migration_id: migration,
            batch: batch.map(str::to_string),
            source: source.to_string(),
            dest: dest.to_string(),
            options: options.clone(),
            status: MailboxStatus::Pending,
            last_error: None,
            warning: None,
            pass_id: None,
            last_pass_at: None,
            next_pass_at: Some(now),
            jobs_left: 0,
            source_messages: None,
            source_bytes: None,
            checked: None,
            pass_started_at: None,
            copied_at_start: None,
        };
        st.mailboxes.push((m.clone(), credentials.clone()));
        Ok(m)
    }

    async fn mailboxes(&self, batch: Option<&str>) -> Result<Vec<MailboxRecord>> {
        let st = self.open()?;
        Ok(st
            .mailboxes
            .iter()
            .filter(|(m, _)| batch.is_none_or(|b| m.batch.as_deref() == Some(b)))
            .map(|(m, _)| m.clone())
            .collect())
    }

    async fn remove_mailbox(&self, id: Uuid) -> Result<bool> {
        let mut st = self.open()?;
        let Some(at) = st.mailboxes.iter().position(|(m, _)| m.id == id) else {
            return Ok(false);
        };
        let (m, _) = st.mailboxes.remove(at);
        st.jobs.retain(|j| j.job.migration_id != m.migration_id);
        Ok(true)
    }

    async fn set_mailbox_password(
        &self,
        id: Uuid,
        side: mailshift_core::ports::Side,
        password: &secrecy::SecretString,
    ) -> Result<()> {
        let mut st = self.open()?;
        let (_, c) = st
            .mailboxes
            .iter_mut()
            .find(|(m, _)| m.id == id)
            .ok_or_else(|| Error::new(ErrorKind::Usage, format!("no mailbox {id}")))?;
        match side {
            mailshift_core::ports::Side::Source => c.source_password = password.clone(),
            mailshift_core::ports::Side::Dest => c.dest_password = password.clone(),
        }
        Ok(())
    }

    async fn mailbox_credentials(
        &self,
        migration: Uuid,
    ) -> Result<(MailboxRecord, MailboxCredentials)> {
        let st = self.open()?;
        st.mailboxes
            .iter()
            .find(|(m, _)| m.migration_id == migration)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Usage, format!("no mailbox for {migration}")))
    }

    async fn set_mailbox_status(
        &self,
        id: Uuid,
        status: MailboxStatus,
        error: Option<&str>,
        next_pass_at: Option<i64>,
    ) -> Result<()> {
        let now = self.now();
        let mut st = self.open()?;
        if let Some((m, _)) = st.mailboxes.iter_mut().find(|(m, _)| m.id == id) {
            m.status = status;
            m.last_error = error.map(str::to_string);
            m.warning = None;
            m.next_pass_at = next_pass_at;
            if status != MailboxStatus::Syncing {
                m.last_pass_at = Some(now);
            }
        }
        Ok(())
    }

    async fn defer_mailbox(&self, id: Uuid, warning: &str, next_pass_at: i64) -> Result<()> {
        let mut st = self.open()?;
        if let Some((m, _)) = st.mailboxes.iter_mut().find(|(m, _)| m.id == id) {
            m.warning = Some(warning.to_string());
            m.next_pass_at = Some(next_pass_at);
        }
        Ok(())
    }

    async fn begin_pass(
        &self,
        id: Uuid,
        jobs: &[FolderJob],
        source_messages: Option<u64>,
        next_pass_at: Option<i64>,
    ) -> Result<Uuid> {
        let now = self.now();
        let mut st = self.open()?;
        let pass = Uuid::new_v4();
        let Some(migration) = st
            .mailboxes
            .iter()
            .find(|(m, _)| m.id == id)
            .map(|(m, _)| m.migration_id)
        else {
            return Err(Error::new(
                ErrorKind::Store,
                format!("mailbox {id} vanished"),
            ));
        };
        st.jobs.retain(|j| {
            j.job.migration_id != migration
                || j.finished.is_none()
                || j.finished == Some(JobOutcome::Dead)
        });
        for j in jobs {
            st.jobs.push(JobRow {
                job: j.clone(),
                pass,
                published: None,
                relay: None,
                finished: None,
            });
        }
        if let Some((m, _)) = st.mailboxes.iter_mut().find(|(m, _)| m.id == id) {
            m.status = m
                .status
                .next(MailboxEvent::PassPlanned { jobs: jobs.len() });
            m.last_error = None;
            m.warning = None;
            m.next_pass_at = next_pass_at;
            m.jobs_left = jobs.len() as u32;
            m.pass_id = Some(pass);
            m.pass_started_at = Some(now);
            if jobs.is_empty() {
                m.last_pass_at = Some(now);
            }
            if source_messages.is_some() {
                m.source_messages = source_messages;
            }
        }
        Ok(pass)
    }

    async fn job_finished(
        &self,
        job: &FolderJob,
        outcome: JobOutcome,
        _error: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        let mut st = self.open()?;
        if st.fail_job_finished > 0 {
            st.fail_job_finished -= 1;
            return Err(Error::new(ErrorKind::Store, "the state database is away"));
        }
        let Some(row) = st
            .jobs
            .iter_mut()
            .find(|j| j.job.id == job.id && j.finished.is_none())
        else {
            return Ok(());
        };
        row.finished = Some(outcome);
        let pass = row.pass;
        recount(&mut st, pass, now);
        Ok(())
    }

    async fn reopen_job(&self, job: Uuid) -> Result<bool> {
        let now = self.now();
        let mut st = self.open()?;
        let Some(row) = st
            .jobs
            .iter_mut()
            .find(|j| j.job.id == job && j.finished == Some(JobOutcome::Dead))
        else {
            return Ok(false);
        };
        row.finished = None;
        let pass = row.pass;
        if let Some((m, _)) = st
            .mailboxes
            .iter_mut()
            .find(|(m, _)| m.pass_id == Some(pass))
        {
            m.status = MailboxStatus::Syncing;
            m.last_error = None;
        }
        recount(&mut st, pass, now);
        Ok(true)
    }

    async fn claim_unpublished(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<FolderJob>> {
        let now = self.now();
        let mut st = self.open()?;
        let mut out = Vec::new();
        for j in st.jobs.iter_mut() {
            if out.len() >= limit {
                break;
            }
            let free = j.relay.as_ref().is_none_or(|l| l.until < now);
            if j.published.is_none() && j.finished.is_none() && free {
                j.relay = Some(Lease {
                    owner: owner.to_string(),
                    until: now + lease.as_secs() as i64,
                });
                out.push(j.job.clone());
            }
        }
        Ok(out)
    }

    async fn mark_published(&self, jobs: &[Uuid]) -> Result<()> {
        let now = self.now();
        let mut st = self.open()?;
        for j in st.jobs.iter_mut().filter(|j| jobs.contains(&j.job.id)) {
            j.published = Some(now);
            j.relay = None;
        }
        Ok(())
    }

    async fn republish_lost(&self, published_by: i64, limit: usize) -> Result<Vec<FolderJob>> {
        let now = self.now();
        let mut st = self.open()?;
        let State {
            jobs,
            mailboxes,
            folders,
            leases,
            ..
        } = &mut *st;
        let mut out = Vec::new();
        for j in jobs.iter_mut() {
            if out.len() >= limit {
                break;
            }
            let current = mailboxes
                .iter()
                .any(|(m, _)| m.migration_id == j.job.migration_id && m.pass_id == Some(j.pass));
            let key = j.job.state_key();
            let held = folders.values().any(|f| {
                f.migration_id == j.job.migration_id
                    && f.source_folder == key
                    && leases.get(&f.id).is_some_and(|l| l.until >= now)
            });
            if current
                && !held
                && j.finished.is_none()
                && j.published.is_some_and(|at| at <= published_by)
            {
                j.published = None;
                out.push(j.job.clone());
            }
        }
        Ok(out)
    }

    async fn claim_planning(&self, id: Uuid, owner: &str, lease: Duration) -> Result<bool> {
        let now = self.now();
        let mut st = self.open()?;
        let free = st
            .plan_leases
            .get(&id)
            .is_none_or(|l| l.owner == owner || l.until < now);
        if free {
            st.plan_leases.insert(
                id,
                Lease {
                    owner: owner.to_string(),
                    until: now + lease.as_secs() as i64,
                },
            );
        }
        Ok(free)
    }

    async fn release_planning(&self, id: Uuid, owner: &str) -> Result<()> {
        let mut st = self.open()?;
        if st.plan_leases.get(&id).is_some_and(|l| l.owner == owner) {
            st.plan_leases.remove(&id);
        }
        Ok(())
    }

    async fn account_conflicts(&self, migration: Uuid, key: &str) -> Result<Vec<MailboxRecord>> {
        let mut st = self.open()?;
        if let Some(m) = st.migrations.iter_mut().find(|m| m.id == migration) {
            m.key = Some(key.to_string());
        }
        let twins: Vec<Uuid> = st
            .migrations
            .iter()
            .filter(|m| m.id != migration && m.key.as_deref() == Some(key))
            .map(|m| m.id)
            .collect();
        Ok(st
            .mailboxes
            .iter()
            .filter(|(m, _)| twins.contains(&m.migration_id))
            .map(|(m, _)| m.clone())
            .collect())
    }

    async fn dead_jobs(&self, _batch: Option<&str>) -> Result<HashMap<Uuid, u64>> {
        let st = self.open()?;
        let mut out = HashMap::new();
        for j in st
            .jobs
            .iter()
            .filter(|j| j.finished == Some(JobOutcome::Dead))
        {
            *out.entry(j.job.migration_id).or_default() += 1;
        }
        Ok(out)
    }

    async fn record_check(
        &self,
        id: Uuid,
        checked: &str,
        source_messages: Option<u64>,
        source_bytes: Option<u64>,
    ) -> Result<()> {
        let mut st = self.open()?;
        if let Some((m, _)) = st.mailboxes.iter_mut().find(|(m, _)| m.id == id) {
            m.checked = Some(checked.to_string());
            m.source_messages = source_messages.or(m.source_messages);
            m.source_bytes = source_bytes.or(m.source_bytes);
        }
        Ok(())
    }

    async fn folder_totals(&self, migration: Uuid) -> Result<HashMap<Uuid, (u64, u64)>> {
        let st = self.open()?;
        Ok(st
            .messages
            .iter()
            .filter(|(id, _)| {
                st.folders
                    .get(id)
                    .is_some_and(|f| f.migration_id == migration)
            })
            .map(|(id, msgs)| {
                (
                    *id,
                    (
                        msgs.len() as u64,
                        msgs.values().map(|m| u64::from(m.size)).sum::<u64>(),
                    ),
                )
            })
            .collect())
    }

    async fn copied_totals(&self, batch: Option<&str>) -> Result<HashMap<Uuid, (u64, u64)>> {
        let st = self.open()?;
        let mut out: HashMap<Uuid, (u64, u64)> = HashMap::new();
        for (id, msgs) in &st.messages {
            let Some(f) = st.folders.get(id) else {
                continue;
            };
            if let Some(b) = batch
                && !st
                    .mailboxes
                    .iter()
                    .any(|(m, _)| m.migration_id == f.migration_id && m.batch.as_deref() == Some(b))
            {
                continue;
            }
            let e = out.entry(f.migration_id).or_default();
            e.0 += msgs.len() as u64;
            e.1 += msgs.values().map(|m| u64::from(m.size)).sum::<u64>();
        }
        Ok(out)
    }

    async fn claim_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        dest_folder: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool> {
        let f = self.folder(migration, source_folder, dest_folder).await?;
        let now = self.now();
        let mut st = self.open()?;
        let free = st
            .leases
            .get(&f.id)
            .is_none_or(|l| l.owner == owner || l.until < now);
        if free {
            st.leases.insert(
                f.id,
                Lease {
                    owner: owner.to_string(),
                    until: now + lease.as_secs().max(1) as i64,
                },
            );
        }
        Ok(free)
    }

    async fn release_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        owner: &str,
    ) -> Result<()> {
        let mut st = self.open()?;
        let id = st
            .folders
            .values()
            .find(|f| f.migration_id == migration && f.source_folder == source_folder)
            .map(|f| f.id);
        if let Some(id) = id
            && st.leases.get(&id).is_some_and(|l| l.owner == owner)
        {
            st.leases.remove(&id);
        }
        Ok(())
    }

    async fn renew_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool> {
        let now = self.now();
        let mut st = self.open()?;
        let id = st
            .folders
            .values()
            .find(|f| f.migration_id == migration && f.source_folder == source_folder)
            .map(|f| f.id);
        let Some(id) = id else {
            return Ok(false);
        };
        match st.leases.get_mut(&id) {
            Some(l) if l.owner == owner && l.until >= now => {
                l.until = now + lease.as_secs().max(1) as i64;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
