//! Fleet-wide connection limits: every session to a server is opened inside a slot
//! leased from the shared database ([`HostSlots`]) and gives it back when dropped, so
//! however many workers run, a server never sees more connections than its limit. A
//! killed worker's slots expire with their lease.

use async_trait::async_trait;
use mailshift_core::flags::FlagSet;
use mailshift_core::folder::ListedFolder;
use mailshift_core::plan::MessageMeta;
use mailshift_core::ports::{
    AppendItem, Appended, Capabilities, Connector, Connectors, FetchedHeader, FetchedMessage,
    FolderStatus, HostSlots, LocatedMessage, MailSource, MailTarget, ServerIdentity, Transfer,
};
use mailshift_core::{Error, ErrorKind, Result};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How slots are leased.
pub struct Limits {
    pub slots: Arc<dyn HostSlots>,
    /// This process, as recorded with its slots.
    pub owner: String,
    /// Slot lease; renewed every third of it while the connection lives.
    pub lease: Duration,
    /// How long to wait for a free slot before giving up (the job is retried later).
    pub wait: Duration,
    /// The process's stop request: waiting for a slot ends there (the job is handed
    /// back), or a stop could wait for `wait`.
    pub stop: Option<Arc<crate::lifecycle::Shutdown>>,
}

/// A held slot; released (asynchronously) when dropped.
struct SlotGuard {
    host: String,
    slot: Option<u32>,
    limits: Arc<Limits>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    pacer: Pacer,
}

/// Spaces out message transfers of one connection to its share of the host's rate cap.
struct Pacer {
    per_sec: Option<f64>,
    next: tokio::time::Instant,
}

impl Pacer {
    /// Waits until `n` more messages fit in the rate, then books them.
    async fn take(&mut self, n: usize) {
        let Some(rate) = self.per_sec.filter(|r| *r > 0.0) else {
            return;
        };
        let now = tokio::time::Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        self.next = self.next.max(now) + Duration::from_secs_f64(n as f64 / rate);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let (Some(slot), Ok(rt)) = (self.slot, tokio::runtime::Handle::try_current()) {
            let (limits, host) = (self.limits.clone(), self.host.clone());
            rt.spawn(async move {
                if let Err(e) = limits.slots.release_slot(&host, slot, &limits.owner).await {
                    tracing::warn!(host = %host, error = %e.message, "cannot release a connection slot; it will expire");
                }
            });
        }
    }
}

impl Limits {
    async fn slot(self: &Arc<Self>, host: &str) -> Result<SlotGuard> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self
                .slots
                .acquire_slot(host, &self.owner, self.lease)
                .await?
            {
                Some(None) => {
                    return Ok(SlotGuard {
                        host: host.to_string(),
                        slot: None,
                        limits: self.clone(),
                        heartbeat: None,
                        pacer: Pacer {
                            per_sec: None,
                            next: tokio::time::Instant::now(),
                        },
                    });
                }
                Some(Some(slot)) => {
                    // Read before the heartbeat starts: if this fails, nothing keeps the
                    // slot leased (it is released at once).
                    let per_sec = match self.slots.slot_rate(host).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = self.slots.release_slot(host, slot, &self.owner).await;
                            return Err(e);
                        }
                    };
                    let (limits, h) = (self.clone(), host.to_string());
                    let heartbeat = tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(limits.lease / 3).await;
                            match limits
                                .slots
                                .renew_slot(&h, slot, &limits.owner, limits.lease)
                                .await
                            {
                                Ok(true) => {}
                                Ok(false) => {
                                    tracing::warn!(host = %h, slot, "connection slot lease lost")
                                }
                                Err(e) => {
                                    tracing::warn!(host = %h, error = %e.message, "cannot renew a connection slot")
                                }
                            }
                        }
                    });
                    return Ok(SlotGuard {
                        host: host.to_string(),
                        slot: Some(slot),
                        limits: self.clone(),
                        heartbeat: Some(heartbeat),
                        pacer: Pacer {
                            per_sec,
                            next: tokio::time::Instant::now(),
                        },
                    });
                }
                None if started.elapsed() >= self.wait => {
                    return Err(Error::new(
                        ErrorKind::Throttled(Some(Duration::from_secs(5))),
                        format!(
                            "all connection slots to {host} are busy (fleet-wide limit); \
                             waited {}s",
                            self.wait.as_secs()
                        ),
                    ));
                }
                None => {
                    let stopped = match &self.stop {
                        Some(stop) => stop
                            .unless_stopped(tokio::time::sleep(pause))
                            .await
                            .is_none(),
                        None => {
                            tokio::time::sleep(pause).await;
                            false
                        }
                    };
                    if stopped {
                        return Err(Error::new(
                            ErrorKind::Interrupted,
                            format!("stopping: no connection slot to {host} was free"),
                        ));
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Wraps a fleet's connectors so every session takes a slot first.
pub struct LimitedConnectors {
    pub inner: Arc<dyn Connectors>,
    pub limits: Arc<Limits>,
}

#[async_trait]
impl Connectors for LimitedConnectors {
    async fn connector(&self, migration: Uuid) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(LimitedConnector {
            inner: self.inner.connector(migration).await?,
            limits: self.limits.clone(),
        }))
    }
}

struct LimitedConnector {
    inner: Arc<dyn Connector>,
    limits: Arc<Limits>,
}

#[async_trait]
impl Connector for LimitedConnector {
    async fn source(&self) -> Result<Box<dyn MailSource>> {
        let guard = self.limits.slot(&self.inner.hosts().0).await?;
        Ok(Box::new(Guarded {
            inner: self.inner.source().await?,
            guard,
        }))
    }

    async fn target(&self) -> Result<Box<dyn MailTarget>> {
        let guard = self.limits.slot(&self.inner.hosts().1).await?;
        Ok(Box::new(Guarded {
            inner: self.inner.target().await?,
            guard,
        }))
    }

    async fn target_reader(&self) -> Result<Box<dyn MailSource>> {
        let guard = self.limits.slot(&self.inner.hosts().1).await?;
        Ok(Box::new(Guarded {
            inner: self.inner.target_reader().await?,
            guard,
        }))
    }

    fn hosts(&self) -> (String, String) {
        self.inner.hosts()
    }

    fn throttled_for(&self) -> Option<Duration> {
        self.inner.throttled_for()
    }
}

/// A session that holds its slot for as long as it lives (and keeps to its share of the
/// host's message rate).
struct Guarded<T: ?Sized> {
    inner: Box<T>,
    guard: SlotGuard,
}

#[async_trait]
impl MailSource for Guarded<dyn MailSource> {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn identity(&self) -> ServerIdentity {
        self.inner.identity()
    }
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)> {
        self.inner.list_folders().await
    }
    async fn examine(&mut self, folder: &str) -> Result<FolderStatus> {
        self.inner.examine(folder).await
    }
    async fn status(&mut self, folder: &str) -> Result<FolderStatus> {
        self.inner.status(folder).await
    }
    async fn list_messages(&mut self, from_uid: u32) -> Result<Vec<MessageMeta>> {
        self.inner.list_messages(from_uid).await
    }
    async fn list_messages_of(&mut self, uids: &[u32]) -> Result<Vec<MessageMeta>> {
        self.inner.list_messages_of(uids).await
    }
    async fn fetch_messages(&mut self, uids: &[u32], largest: u64) -> Result<Vec<FetchedMessage>> {
        self.guard.pacer.take(uids.len()).await;
        self.inner.fetch_messages(uids, largest).await
    }
    async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<FetchedHeader>> {
        self.inner.fetch_headers(uids).await
    }
    async fn uids(&mut self) -> Result<Vec<u32>> {
        self.inner.uids().await
    }
    async fn changed_since(&mut self, modseq: u64) -> Result<Vec<(u32, FlagSet)>> {
        self.inner.changed_since(modseq).await
    }
    async fn wait_for_change(&mut self, timeout: Duration) -> Result<bool> {
        self.inner.wait_for_change(timeout).await
    }
}

#[async_trait]
impl MailTarget for Guarded<dyn MailTarget> {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn identity(&self) -> ServerIdentity {
        self.inner.identity()
    }
    async fn storage_quota(&mut self) -> Result<Option<(u64, u64)>> {
        self.inner.storage_quota().await
    }
    async fn status(&mut self, folder: &str) -> Result<FolderStatus> {
        self.inner.status(folder).await
    }
    async fn uids(&mut self) -> Result<Vec<u32>> {
        self.inner.uids().await
    }
    async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<FetchedHeader>> {
        self.inner.fetch_headers(uids).await
    }
    async fn locate(&mut self, uids: &[u32]) -> Result<Vec<LocatedMessage>> {
        self.inner.locate(uids).await
    }
    async fn expunge_restoring(&mut self, uids: &[u32]) -> Result<()> {
        self.inner.expunge_restoring(uids).await
    }
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)> {
        self.inner.list_folders().await
    }
    async fn create_folder(&mut self, folder: &str) -> Result<()> {
        self.inner.create_folder(folder).await
    }
    async fn select(&mut self, folder: &str) -> Result<FolderStatus> {
        self.inner.select(folder).await
    }
    async fn append(&mut self, folder: &str, items: &[AppendItem<'_>]) -> Result<Appended> {
        self.guard.pacer.take(items.len()).await;
        self.inner.append(folder, items).await
    }
    async fn locate_since(&mut self, from_uid: u32) -> Result<Vec<LocatedMessage>> {
        self.inner.locate_since(from_uid).await
    }
    async fn set_flags(&mut self, uids: &[u32], flags: &FlagSet) -> Result<()> {
        self.inner.set_flags(uids, flags).await
    }
    async fn expunge(&mut self, uids: &[u32]) -> Result<()> {
        self.inner.expunge(uids).await
    }
    async fn transfer(&mut self, uids: &[u32], to: &str, how: Transfer) -> Result<Vec<(u32, u32)>> {
        self.inner.transfer(uids, to, how).await
    }
    async fn delete_folder(&mut self, folder: &str) -> Result<()> {
        self.inner.delete_folder(folder).await
    }
}
