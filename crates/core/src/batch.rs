//! Batches: a group of mailboxes an account manager schedules together. This module owns
//! a batch's schedule and state machine (draft -> running <-> paused -> completing ->
//! completed), the decision whether one of its mailboxes may get a pass now, and the
//! progress figures the dashboard shows (copied of total, rate, ETA).

use serde::{Deserialize, Serialize};

/// Where a batch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Imported, not started: nothing is copied yet (time for `batch verify`).
    Draft,
    /// Passes run (from `start_at` on, every `interval`).
    Running,
    /// No new pass is planned; passes in flight finish.
    Paused,
    /// `complete_at` passed: each mailbox gets one final pass, then no more.
    Completing,
    Completed,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Draft => "draft",
            BatchState::Running => "running",
            BatchState::Paused => "paused",
            BatchState::Completing => "completing",
            BatchState::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<BatchState> {
        Some(match s {
            "draft" => BatchState::Draft,
            "running" => BatchState::Running,
            "paused" => BatchState::Paused,
            "completing" => BatchState::Completing,
            "completed" => BatchState::Completed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for BatchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch as the fleet stores it. Times are unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub name: String,
    /// The mail domain whose cutover the batch follows.
    pub domain: Option<String>,
    pub state: BatchState,
    /// No pass before this time.
    #[serde(default, with = "crate::time::unix_opt")]
    pub start_at: Option<i64>,
    /// Time between incremental passes of a mailbox; None: the scheduler's own.
    pub interval_secs: Option<u64>,
    /// The MX switch agreed with the customer (recorded on the domain's cutover plan).
    #[serde(default, with = "crate::time::unix_opt")]
    pub switch_at: Option<i64>,
    /// After this time each mailbox gets one last pass and the batch ends.
    #[serde(default, with = "crate::time::unix_opt")]
    pub complete_at: Option<i64>,
    /// Mailboxes of this batch with a pass in flight at once; None: no limit.
    pub concurrency: Option<u32>,
    /// The same per source server (`host:port`): an old server shared by many mailboxes
    /// of the batch is not flooded by them (connections are capped fleet-wide by the
    /// host limits besides).
    #[serde(default)]
    pub host_concurrency: Option<u32>,
    /// When the batch went into `completing`.
    #[serde(default, with = "crate::time::unix_opt")]
    pub final_pass_at: Option<i64>,
    #[serde(with = "crate::time::unix")]
    pub created_at: i64,
}

impl BatchRecord {
    pub fn new(name: &str, domain: Option<&str>, now: i64) -> BatchRecord {
        BatchRecord {
            name: name.to_string(),
            domain: domain.map(str::to_string),
            state: BatchState::Draft,
            start_at: None,
            interval_secs: None,
            switch_at: None,
            complete_at: None,
            concurrency: None,
            host_concurrency: None,
            final_pass_at: None,
            created_at: now,
        }
    }

    /// What a user sees: `scheduled` for a running batch whose start is still ahead.
    pub fn display_state(&self, now: i64) -> &'static str {
        match self.state {
            BatchState::Running if self.start_at.is_some_and(|s| s > now) => "scheduled",
            s => s.as_str(),
        }
    }

    /// Starts (or resumes) the batch, at `at` or now.
    pub fn start(&mut self, at: Option<i64>) -> Result<(), String> {
        match self.state {
            BatchState::Draft | BatchState::Paused | BatchState::Running => {
                self.state = BatchState::Running;
                if at.is_some() {
                    self.start_at = at;
                }
                Ok(())
            }
            s => Err(format!(
                "batch '{}' is {s}: it cannot be started again",
                self.name
            )),
        }
    }

    pub fn pause(&mut self) -> Result<(), String> {
        match self.state {
            BatchState::Running | BatchState::Completing => {
                self.state = BatchState::Paused;
                Ok(())
            }
            s => Err(format!(
                "batch '{}' is {s}: only a running batch can be paused",
                self.name
            )),
        }
    }

    /// May a mailbox of this batch get a pass at `now`? `attempted_at` is when the
    /// mailbox's latest pass was planned, or its planning failed (see [`attempted_at`]).
    pub fn gate(&self, now: i64, attempted_at: Option<i64>) -> Gate {
        match self.state {
            BatchState::Draft => return Gate::Hold("not started"),
            BatchState::Paused => return Gate::Hold("paused"),
            BatchState::Completed => return Gate::Hold("completed"),
            BatchState::Running | BatchState::Completing => {}
        }
        if self.start_at.is_some_and(|s| now < s) {
            return Gate::Hold("scheduled");
        }
        match self.complete_at {
            Some(c) if now >= c => {
                if attempted_at.is_some_and(|p| p >= c) {
                    Gate::Hold("final pass planned")
                } else {
                    Gate::Now
                }
            }
            _ => Gate::Due(self.interval_secs),
        }
    }

    /// The state the batch moves to at `now`, given its mailboxes as (jobs of the
    /// current pass left, [`attempted_at`]); None: it stays. A mailbox whose final pass
    /// could not even be planned (a refused login) does not hold the batch open: it is
    /// reported failed, and `retry-failed` gives it another final pass.
    pub fn next_state(&self, now: i64, mailboxes: &[(u32, Option<i64>)]) -> Option<BatchState> {
        let complete_at = self.complete_at?;
        match self.state {
            BatchState::Running if now >= complete_at => Some(BatchState::Completing),
            BatchState::Completing
                if mailboxes.iter().all(|(left, started)| {
                    *left == 0 && started.is_some_and(|s| s >= complete_at)
                }) =>
            {
                Some(BatchState::Completed)
            }
            _ => None,
        }
    }
}

/// When a mailbox's latest pass was attempted: planned (`pass_started_at`), or, for a
/// mailbox whose planning failed, that failure (`last_pass_at`).
pub fn attempted_at(
    status: crate::mailbox::MailboxStatus,
    pass_started_at: Option<i64>,
    last_pass_at: Option<i64>,
) -> Option<i64> {
    if status == crate::mailbox::MailboxStatus::Failed {
        pass_started_at.max(last_pass_at)
    } else {
        pass_started_at
    }
}

/// Whether a mailbox may get a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Not now (the reason, for the dashboard and logs).
    Hold(&'static str),
    /// When its next pass is due, with this interval after it (None: the scheduler's).
    Due(Option<u64>),
    /// Now, whatever its next pass time (the final pass).
    Now,
}

/// Progress of one mailbox's migration, as shown to account managers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    pub messages_copied: u64,
    /// Messages the source held at the latest count (None: not counted yet).
    pub messages_total: Option<u64>,
    pub bytes_copied: u64,
    pub bytes_total: Option<u64>,
    /// 0..=100, from messages (None without a total).
    #[serde(serialize_with = "crate::time::thousandths_opt")]
    pub percent: Option<f64>,
    /// Messages per second of the current pass.
    #[serde(serialize_with = "crate::time::thousandths_opt")]
    pub rate: Option<f64>,
    /// Seconds until the current pass is done, at that rate.
    pub eta_secs: Option<u64>,
}

/// What the dashboard knows of one mailbox, for [`progress`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub copied: u64,
    pub copied_bytes: u64,
    pub total: Option<u64>,
    pub total_bytes: Option<u64>,
    /// Copied messages when the current pass was planned, and when that was.
    pub copied_at_start: Option<u64>,
    pub pass_started_at: Option<i64>,
    /// The current pass's jobs are all done.
    pub pass_done: bool,
    /// When the latest pass finished (the mailbox's `last_pass_at`).
    pub last_pass_at: Option<i64>,
}

pub fn progress(c: Counts, now: i64) -> Progress {
    let percent = c.total.map(|t| {
        if t == 0 || c.copied >= t {
            100.0
        } else {
            (c.copied as f64 * 100.0 / t as f64 * 10.0).floor() / 10.0
        }
    });
    let rate = pass_rate(c, now);
    let eta_secs = match (c.total, rate) {
        _ if c.pass_done => None,
        (Some(t), Some(r)) if r > 0.0 && t > c.copied => {
            Some(((t - c.copied) as f64 / r).ceil() as u64)
        }
        _ => None,
    };
    Progress {
        messages_copied: c.copied,
        messages_total: c.total,
        bytes_copied: c.copied_bytes,
        bytes_total: c.total_bytes.map(|b| b.max(c.copied_bytes)),
        percent,
        rate,
        eta_secs,
    }
}

/// Messages per second of the current pass. A running pass is measured up to `now`; a
/// finished one over its own duration (planned to finished), so its rate stays at its
/// final value instead of falling for as long as the page is looked at.
fn pass_rate(c: Counts, now: i64) -> Option<f64> {
    let (Some(start), Some(at)) = (c.copied_at_start, c.pass_started_at) else {
        return None;
    };
    if c.copied <= start {
        return None;
    }
    let end = if c.pass_done {
        // `last_pass_at` older than the pass's planning belongs to an earlier pass: the
        // end of this one is not known, and `now` would make the rate decay.
        c.last_pass_at.filter(|&end| end >= at)?
    } else {
        now
    };
    // A pass planned and finished within one second took at least that second (times
    // are whole seconds).
    let secs = if c.pass_done {
        (end - at).max(1)
    } else if end > at {
        end - at
    } else {
        return None;
    };
    Some((c.copied - start) as f64 / secs as f64)
}

/// Parses a duration such as `90`, `90s`, `15m`, `4h` or `2d` into seconds.
pub fn parse_interval(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 90s, 15m, 4h or 2d)"))?;
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        u => {
            return Err(format!(
                "'{s}': unknown unit '{u}'; use s, m, h or d (90s, 15m, 4h, 2d)"
            ));
        }
    };
    if n == 0 {
        return Err("a duration must be at least 1s".into());
    }
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> BatchRecord {
        BatchRecord::new("b", None, 0)
    }

    #[test]
    fn a_draft_or_paused_batch_holds_its_mailboxes() {
        let mut b = batch();
        assert_eq!(b.gate(100, None), Gate::Hold("not started"));
        b.start(None).unwrap();
        assert_eq!(b.gate(100, None), Gate::Due(None));
        b.pause().unwrap();
        assert_eq!(b.gate(100, None), Gate::Hold("paused"));
        b.start(None).unwrap();
        assert_eq!(b.state, BatchState::Running);
    }

    #[test]
    fn start_at_holds_until_then() {
        let mut b = batch();
        b.interval_secs = Some(4 * 3600);
        b.start(Some(1000)).unwrap();
        assert_eq!(b.display_state(999), "scheduled");
        assert_eq!(b.gate(999, None), Gate::Hold("scheduled"));
        assert_eq!(b.gate(1000, None), Gate::Due(Some(14_400)));
        assert_eq!(b.display_state(1000), "running");
    }

    #[test]
    fn complete_at_gives_each_mailbox_one_final_pass_then_completes() {
        let mut b = batch();
        b.start(None).unwrap();
        b.complete_at = Some(500);
        assert_eq!(b.gate(499, Some(10)), Gate::Due(None));
        assert_eq!(b.next_state(499, &[(0, Some(10))]), None);
        assert_eq!(b.next_state(500, &[]), Some(BatchState::Completing));
        b.state = BatchState::Completing;
        assert_eq!(b.gate(500, Some(10)), Gate::Now);
        assert_eq!(b.gate(501, Some(500)), Gate::Hold("final pass planned"));
        // One mailbox still copying its final pass, one not planned yet.
        assert_eq!(b.next_state(501, &[(2, Some(500)), (0, Some(10))]), None);
        assert_eq!(
            b.next_state(501, &[(0, Some(500)), (0, Some(501))]),
            Some(BatchState::Completed)
        );
        b.state = BatchState::Completed;
        assert_eq!(b.gate(600, Some(501)), Gate::Hold("completed"));
        assert!(b.start(None).is_err());
    }

    #[test]
    fn a_failed_final_pass_is_not_retried_every_round() {
        let mut b = batch();
        b.start(None).unwrap();
        b.complete_at = Some(500);
        b.state = BatchState::Completing;
        // Planning failed at 501 (wrong password): held, and the batch can complete.
        let failed = attempted_at(crate::mailbox::MailboxStatus::Failed, Some(10), Some(501));
        assert_eq!(b.gate(502, failed), Gate::Hold("final pass planned"));
        assert_eq!(
            b.next_state(502, &[(0, failed)]),
            Some(BatchState::Completed)
        );
        // retry-failed makes it pending again: another final pass.
        let retried = attempted_at(crate::mailbox::MailboxStatus::Pending, Some(10), Some(503));
        assert_eq!(b.gate(504, retried), Gate::Now);
    }

    #[test]
    fn progress_has_percent_rate_and_eta() {
        let p = progress(
            Counts {
                copied: 300,
                copied_bytes: 3000,
                total: Some(1000),
                total_bytes: Some(10_000),
                copied_at_start: Some(100),
                pass_started_at: Some(0),
                pass_done: false,
                last_pass_at: None,
            },
            20,
        );
        assert_eq!(p.percent, Some(30.0));
        assert_eq!(p.rate, Some(10.0));
        assert_eq!(p.eta_secs, Some(70));
        let done = progress(
            Counts {
                copied: 1000,
                total: Some(1000),
                pass_done: true,
                ..Counts::default()
            },
            20,
        );
        assert_eq!(done.percent, Some(100.0));
        assert_eq!(done.eta_secs, None);
        assert_eq!(progress(Counts::default(), 0).percent, None);
    }

    #[test]
    fn a_finished_pass_keeps_its_final_rate() {
        // 200 messages copied between t=100 (planned) and t=120 (finished).
        let finished = Counts {
            copied: 300,
            total: Some(300),
            copied_at_start: Some(100),
            pass_started_at: Some(100),
            pass_done: true,
            last_pass_at: Some(120),
            ..Counts::default()
        };
        for now in [120, 121, 3_600, 86_400] {
            assert_eq!(progress(finished, now).rate, Some(10.0), "at {now}");
            assert_eq!(progress(finished, now).eta_secs, None);
        }
        // Finished within the second it was planned in: one second, not a division by 0.
        let quick = Counts {
            last_pass_at: Some(100),
            ..finished
        };
        assert_eq!(progress(quick, 500).rate, Some(200.0));
        // The end of an earlier pass says nothing about this one: no rate rather than a
        // decaying one.
        let stale = Counts {
            last_pass_at: Some(50),
            ..finished
        };
        assert_eq!(progress(stale, 500).rate, None);
        // A running pass is still measured up to now.
        let running = Counts {
            pass_done: false,
            last_pass_at: None,
            ..finished
        };
        assert_eq!(progress(running, 140).rate, Some(5.0));
        assert_eq!(progress(running, 100).rate, None);
    }

    #[test]
    fn intervals_read_like_people_write_them() {
        assert_eq!(parse_interval("4h"), Ok(14_400));
        assert_eq!(parse_interval("90"), Ok(90));
        assert_eq!(parse_interval("15m"), Ok(900));
        assert!(parse_interval("4 hours").is_err());
        assert!(parse_interval("0s").is_err());
    }
}
