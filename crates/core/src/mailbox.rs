//! A fleet mailbox's status and how it moves: planned passes, finished jobs, failures
//! that are the mailbox's own (a refused login, a full destination) and operator actions.
//! Outages (a broker, a database, a server that cannot be reached) are not statuses: the
//! mailbox keeps its status and gets a warning until its next pass.

use std::fmt;

/// Where a mailbox stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailboxStatus {
    /// Registered (or retried by the operator): its next pass has not been planned.
    Pending,
    /// A pass is planned and some of its folder jobs are not finished.
    Syncing,
    /// Every folder job of its last pass finished.
    Synced,
    /// Something about this mailbox needs a person (see its error).
    Failed,
}

/// What happens to a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxEvent {
    /// A pass of this many folder jobs was planned.
    PassPlanned { jobs: usize },
    /// A job of the current pass finished; this many remain unfinished.
    JobFinished { left: usize },
    /// The mailbox itself stands in the way (login refused, quota, folder refused).
    Failed,
    /// The operator asks for another try.
    Retried,
}

impl MailboxStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            MailboxStatus::Pending => "pending",
            MailboxStatus::Syncing => "syncing",
            MailboxStatus::Synced => "synced",
            MailboxStatus::Failed => "failed",
        }
    }

    /// The stored spelling back; an unknown value reads as `Pending` (it will be planned
    /// again, which is always safe).
    pub fn parse(s: &str) -> MailboxStatus {
        match s {
            "syncing" => MailboxStatus::Syncing,
            "synced" => MailboxStatus::Synced,
            "failed" => MailboxStatus::Failed,
            _ => MailboxStatus::Pending,
        }
    }

    /// The status after `event`.
    pub fn next(self, event: MailboxEvent) -> MailboxStatus {
        match (self, event) {
            (_, MailboxEvent::PassPlanned { jobs: 0 }) => MailboxStatus::Synced,
            (_, MailboxEvent::PassPlanned { .. }) => MailboxStatus::Syncing,
            (MailboxStatus::Syncing, MailboxEvent::JobFinished { left: 0 }) => {
                MailboxStatus::Synced
            }
            // A late job of an earlier pass does not change a failed or synced mailbox.
            (s, MailboxEvent::JobFinished { .. }) => s,
            (_, MailboxEvent::Failed) => MailboxStatus::Failed,
            (MailboxStatus::Failed, MailboxEvent::Retried) => MailboxStatus::Pending,
            (s, MailboxEvent::Retried) => s,
        }
    }

    /// Whether a pass is in flight (counts towards a batch's concurrency).
    pub fn busy(self, jobs_left: u32) -> bool {
        self == MailboxStatus::Syncing && jobs_left > 0
    }
}

impl fmt::Display for MailboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a folder job ended, as recorded once per job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    /// Every message of the folder is on the destination.
    Done,
    /// The pass ran but some messages were refused (reported with the folder).
    Failed,
    /// Given up after its retry budget: kept in the dead-letter queue.
    Dead,
}

impl JobOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobOutcome::Done => "done",
            JobOutcome::Failed => "failed",
            JobOutcome::Dead => "dead",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MailboxEvent as E;
    use super::MailboxStatus::*;
    use super::*;

    #[test]
    fn a_pass_runs_its_course() {
        let s = Pending.next(E::PassPlanned { jobs: 3 });
        assert_eq!(s, Syncing);
        assert_eq!(s.next(E::JobFinished { left: 2 }), Syncing);
        assert_eq!(s.next(E::JobFinished { left: 0 }), Synced);
        assert_eq!(Pending.next(E::PassPlanned { jobs: 0 }), Synced);
    }

    #[test]
    fn failures_and_retries() {
        assert_eq!(Syncing.next(E::Failed), Failed);
        assert_eq!(Failed.next(E::JobFinished { left: 0 }), Failed);
        assert_eq!(Failed.next(E::Retried), Pending);
        assert_eq!(Synced.next(E::Retried), Synced);
        for s in [Pending, Syncing, Synced, Failed] {
            assert_eq!(MailboxStatus::parse(s.as_str()), s);
        }
        assert!(Syncing.busy(2) && !Syncing.busy(0) && !Synced.busy(2));
    }
}
