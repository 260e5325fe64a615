//! The fleet's scheduler: for every registered mailbox whose next pass is due, prepare
//! the pass (the same [`crate::pass::prepare`] as embedded mode) and publish one job per
//! folder to the queue; workers anywhere take them from there.

use crate::pass::{PassOptions, prepare};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::ports::{Connectors, JobQueue, MailboxRecord, MailboxStore, StateStore};
use mailshift_core::{Error, ErrorKind, Result};
use std::sync::Arc;
use std::time::Duration;

pub struct Scheduler {
    pub state: Arc<dyn StateStore>,
    pub mailboxes: Arc<dyn MailboxStore>,
    pub connectors: Arc<dyn Connectors>,
    pub queue: Arc<dyn JobQueue>,
    /// Time between incremental passes of one mailbox.
    pub interval: Duration,
    /// First copies of folders above this many messages are split into UID ranges.
    pub split_above: Option<usize>,
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
        for m in self.mailboxes.mailboxes(None).await? {
            if !force && m.next_pass_at.is_some_and(|due| due > t) {
                continue;
            }
            let next = Some(t + self.interval.as_secs() as i64);
            match self.plan(&m).await {
                Ok(n) => {
                    round.mailboxes += 1;
                    round.jobs += n;
                    self.mailboxes
                        .set_mailbox_status(m.id, "syncing", None, next)
                        .await?;
                    tracing::info!(mailbox = %m.source, jobs = n, "pass scheduled");
                }
                Err(e) => {
                    round.failed += 1;
                    tracing::warn!(mailbox = %m.source, error = %e.message, "cannot plan a pass");
                    self.mailboxes
                        .set_mailbox_status(m.id, "failed", Some(&e.message), next)
                        .await?;
                }
            }
        }
        Ok(round)
    }

    async fn plan(&self, m: &MailboxRecord) -> Result<usize> {
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
            delete: m.options.delete,
            adopt_existing: m.options.adopt_existing,
            split_above: self.split_above,
        };
        let pass = prepare(&mut *src, &mut *dst, &*self.state, &source, &dest, &opts).await?;
        for job in &pass.jobs {
            self.queue.publish(job).await?;
        }
        Ok(pass.jobs.len())
    }
}
