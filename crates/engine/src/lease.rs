//! Leases held while work runs: a folder's (one pass at a time) in the fleet's database.
//! A [`FolderLease`] renews itself in the background and stops renewing the moment it is
//! dropped, so a lease can never outlive the work it protects; [`FolderLease::release`]
//! gives it back at once.
//!
//! Every claim gets its own token (`OWNER/UUID`), never just the process name: a job
//! redelivered to the same process while its first delivery still runs (a broker
//! connection dropped and came back) must not be allowed in beside it.

use crate::copy::Fence;
use mailshift_core::Result;
use mailshift_core::job::FolderJob;
use mailshift_core::ports::MailboxStore;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The lease of one folder checkpoint (a whole folder or a UID-range slice).
pub struct FolderLease {
    store: Arc<dyn MailboxStore>,
    migration: Uuid,
    key: String,
    token: String,
    ttl: Duration,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl FolderLease {
    /// Takes the folder's lease for this claim (creating its checkpoint row if new);
    /// `Ok(None)` while another claim holds an unexpired lease.
    pub async fn take(
        store: Arc<dyn MailboxStore>,
        job: &FolderJob,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<FolderLease>> {
        let token = format!("{owner}/{}", Uuid::new_v4());
        let key = job.state_key();
        if !store
            .claim_folder(job.migration_id, &key, &job.dest_folder, &token, ttl)
            .await?
        {
            return Ok(None);
        }
        let heartbeat = {
            let (store, key, token, migration) =
                (store.clone(), key.clone(), token.clone(), job.migration_id);
            let folder = job.source_display.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match store.renew_folder(migration, &key, &token, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // The fence stops the pass before its next APPEND.
                            tracing::warn!(folder = %folder, "folder lease lost");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(folder = %folder, error = %e.message, "cannot renew a folder lease")
                        }
                    }
                }
            })
        };
        Ok(Some(FolderLease {
            store,
            migration: job.migration_id,
            key,
            token,
            ttl,
            heartbeat: Some(heartbeat),
        }))
    }

    /// Gives the lease back now (otherwise it expires on its own).
    pub async fn release(mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Err(e) = self
            .store
            .release_folder(self.migration, &self.key, &self.token)
            .await
        {
            tracing::warn!(error = %e.message, "cannot release a folder lease; it will expire");
        }
    }
}

impl Drop for FolderLease {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

#[async_trait::async_trait]
impl Fence for FolderLease {
    /// Renews the lease only if this claim still holds it unexpired.
    async fn still_held(&self) -> Result<bool> {
        self.store
            .renew_folder(self.migration, &self.key, &self.token, self.ttl)
            .await
    }
}
