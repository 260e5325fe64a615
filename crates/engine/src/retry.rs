//! When a failed folder job is tried again, and when it is given up.
//!
//! Outages (a server that cannot be reached or asks to slow down, a dropped connection,
//! the database or the broker away) are waited out for a budget of TIME, with capped
//! exponential back-off: a server restarting for a minute or failing over for twenty
//! must not fail thousands of mailboxes. Other failures get a few attempts. Waiting is
//! never an attempt: a job handed back at shutdown, deferred behind other folders or
//! resumed after a dropped connection that had made progress.

use mailshift_core::ErrorKind;
use mailshift_core::job::FolderJob;
use std::time::Duration;

/// What to do with a failed delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Publish `job` again after `delay` (its `attempt` and `first_failed_at` updated).
    Retry {
        delay: Duration,
        job: Box<FolderJob>,
    },
    /// Final: report the failure (embedded) or dead-letter the job (fleet).
    GiveUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts for failures that are not outages (and for refused logins in the fleet,
    /// which may be a lockout or a password being changed).
    pub max_attempts: u32,
    /// First back-off; doubles per attempt up to `max_delay`.
    pub base: Duration,
    pub max_delay: Duration,
    /// How long an outage is waited for, counted from the job's first failure.
    pub outage_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            outage_budget: Duration::from_secs(30 * 60),
        }
    }
}

impl RetryPolicy {
    /// Capped exponential back-off for the `n`th failure, jittered.
    pub fn backoff(&self, n: u32, salt: u64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << n.min(16));
        jitter(exp.min(self.max_delay), salt)
    }

    /// The decision for `job`, failed with `kind` at `now` (unix seconds). `progressed`:
    /// the failed attempt checkpointed something. `fleet`: refused logins get retries.
    pub fn decide(
        &self,
        job: &FolderJob,
        kind: &ErrorKind,
        progressed: bool,
        fleet: bool,
        now: i64,
    ) -> Decision {
        let salt = job.id.as_u128() as u64 ^ now as u64;
        let again = |delay: Duration, count: bool, failing: bool| {
            let mut j = job.clone();
            if count {
                j.attempt = j.attempt.saturating_add(1);
            }
            if failing {
                j.first_failed_at = j.first_failed_at.or(Some(now));
            } else {
                j.first_failed_at = None;
            }
            Decision::Retry {
                delay,
                job: Box::new(j),
            }
        };
        match kind {
            ErrorKind::Interrupted => again(Duration::ZERO, false, false),
            ErrorKind::Deferred(d) => again(*d, false, false),
            // A link that drops every few megabytes still moves forward: resume at once.
            ErrorKind::Network if progressed => {
                again(jitter(Duration::from_millis(250), salt), false, false)
            }
            k if k.is_infrastructure() => {
                let since = job.first_failed_at.unwrap_or(now);
                let waited = Duration::from_secs(now.saturating_sub(since).max(0) as u64);
                if waited >= self.outage_budget {
                    return Decision::GiveUp;
                }
                let delay = match k {
                    ErrorKind::Throttled(Some(hint)) => *hint,
                    _ => self.backoff(job.attempt, salt),
                };
                // Only dropped connections shrink the next batches (see
                // `BatchLimits::for_attempt`); a server that is simply away does not.
                again(delay, *k == ErrorKind::Network, true)
            }
            ErrorKind::Auth if fleet && job.attempt < self.max_attempts => {
                again(self.backoff(job.attempt, salt), true, true)
            }
            _ => Decision::GiveUp,
        }
    }
}

/// Spreads retries (80-120 % of `d`) so jobs that failed together do not all come back
/// at the same instant.
pub fn jitter(d: Duration, salt: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    // A cheap mix; fairness, not secrecy, is the goal.
    let r = ((u64::from(nanos) ^ salt).wrapping_mul(6_364_136_223_846_793_005) >> 33) % 401;
    d.mul_f64(0.8 + r as f64 / 1000.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn job() -> FolderJob {
        FolderJob {
            id: Uuid::new_v4(),
            migration_id: Uuid::new_v4(),
            source_folder: "INBOX".into(),
            dest_folder: "INBOX".into(),
            source_display: "INBOX".into(),
            dest_display: "INBOX".into(),
            attempt: 1,
            delete: true,
            adopt_existing: false,
            uid_range: None,
            dual_reception: false,
            first_failed_at: None,
            label_folders: Vec::new(),
        }
    }

    fn retried(d: Decision) -> (Duration, FolderJob) {
        match d {
            Decision::Retry { delay, job } => (delay, *job),
            Decision::GiveUp => panic!("gave up"),
        }
    }

    #[test]
    fn an_unreachable_server_is_waited_for_by_time_not_attempts() {
        let p = RetryPolicy::default();
        let mut j = job();
        let mut t = 1_000;
        // Fifty failures over 25 minutes: still retried, never more than a minute apart.
        for _ in 0..50 {
            let (delay, next) = retried(p.decide(&j, &ErrorKind::Unreachable, false, true, t));
            assert!(delay <= Duration::from_secs(72), "{delay:?}");
            assert_eq!(next.first_failed_at, Some(1_000));
            // An unreachable server does not shrink batches.
            assert_eq!(next.attempt, 1);
            j = next;
            t += 30;
        }
        assert_eq!(
            p.decide(&j, &ErrorKind::Unreachable, false, true, 1_000 + 30 * 60),
            Decision::GiveUp
        );
    }

    #[test]
    fn waiting_is_never_an_attempt() {
        let p = RetryPolicy::default();
        let j = job();
        let (d, n) = retried(p.decide(&j, &ErrorKind::Interrupted, false, true, 5));
        assert_eq!((d, n.attempt, n.first_failed_at), (Duration::ZERO, 1, None));
        let wait = Duration::from_secs(2);
        let (d, n) = retried(p.decide(&j, &ErrorKind::Deferred(wait), false, true, 5));
        assert_eq!((d, n.attempt), (wait, 1));
        // A dropped connection after a checkpoint resumes at once, uncounted.
        let (d, n) = retried(p.decide(&j, &ErrorKind::Network, true, false, 5));
        assert!(d < Duration::from_secs(1) && n.attempt == 1);
        // Without progress it counts (batches shrink).
        let (_, n) = retried(p.decide(&j, &ErrorKind::Network, false, false, 5));
        assert_eq!(n.attempt, 2);
    }

    #[test]
    fn throttling_waits_as_long_as_the_server_asks() {
        let p = RetryPolicy::default();
        let hint = Duration::from_millis(2_500);
        let (d, _) = retried(p.decide(&job(), &ErrorKind::Throttled(Some(hint)), false, true, 5));
        assert_eq!(d, hint);
    }

    #[test]
    fn mailbox_failures_get_few_attempts() {
        let p = RetryPolicy::default();
        let mut j = job();
        // A refused login in the fleet: a few tries (lockouts, password changes).
        for _ in 1..p.max_attempts {
            j = retried(p.decide(&j, &ErrorKind::Auth, false, true, 5)).1;
        }
        assert_eq!(
            p.decide(&j, &ErrorKind::Auth, false, true, 5),
            Decision::GiveUp
        );
        // In a one-off migrate it is said at once.
        assert_eq!(
            p.decide(&job(), &ErrorKind::Auth, false, false, 5),
            Decision::GiveUp
        );
        for k in [
            ErrorKind::FolderRefused,
            ErrorKind::Usage,
            ErrorKind::Insecure,
            ErrorKind::Protocol,
        ] {
            assert_eq!(p.decide(&job(), &k, false, true, 5), Decision::GiveUp);
        }
    }
}
