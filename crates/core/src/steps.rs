//! Where each step of a domain's cutover timeline stands, from what is known of the
//! domain (its phase, the latest DNS check, whether its mailboxes are synced): done,
//! in progress, ahead, or overdue when its time has passed and nothing shows it done.
//! Pure; the dashboard renders it.

use crate::cutover::{Phase, Step};

/// Which step of the method a timeline row is (by its `day`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Audit,
    Ttl,
    InitialSync,
    Incremental,
    Verify,
    Switch,
    DualReception,
    Final,
}

pub fn kind(step: &Step) -> Option<Kind> {
    Some(match step.day.as_str() {
        "D-7" => Kind::Audit,
        "D-5" => Kind::Ttl,
        "D-3" => Kind::InitialSync,
        "D-3..D-1" => Kind::Incremental,
        "D-1" => Kind::Verify,
        "D-Day" => Kind::Switch,
        d if d.starts_with("D..D+") => Kind::DualReception,
        d if d.starts_with("D+") => Kind::Final,
        _ => return None,
    })
}

/// What is known of a domain's progress, to tell done steps from overdue ones.
#[derive(Clone, Copy, Debug)]
pub struct Evidence {
    pub phase: Phase,
    /// Errors of the latest DNS check (None: not checked).
    pub dns_errors: Option<usize>,
    /// Whether the latest DNS check found the MX TTL low enough.
    pub ttl_ok: Option<bool>,
    /// Every mailbox of the batch has been copied at least once.
    pub all_synced: bool,
}

/// Whether a step is known to be done (None: nothing here can tell).
pub fn done(k: Kind, e: &Evidence) -> bool {
    let clean_dns = e.dns_errors == Some(0);
    match k {
        Kind::Audit => clean_dns || e.phase >= Phase::Ready,
        Kind::Ttl => e.ttl_ok == Some(true) || e.phase >= Phase::Switched,
        Kind::InitialSync => e.all_synced || e.phase >= Phase::Ready,
        Kind::Incremental => e.phase >= Phase::Ready,
        Kind::Verify => e.phase >= Phase::Switched || (e.phase == Phase::Ready && clean_dns),
        Kind::Switch => e.phase >= Phase::Switched,
        Kind::DualReception | Kind::Final => e.phase >= Phase::Done,
    }
}

/// Where a step stands at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Done,
    /// Its time (its end, for a period) has passed and it is not known to be done.
    Overdue,
    /// A period that has begun and not ended.
    InProgress,
    Ahead,
    /// Past, and nothing tells whether it was done.
    Past,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Overdue => "overdue",
            Status::InProgress => "in progress",
            Status::Ahead => "ahead",
            Status::Past => "past",
        }
    }
}

pub fn status(step: &Step, e: &Evidence, now: i64) -> Status {
    let start = step.at.timestamp();
    let end = step.until.map_or(start, |u| u.timestamp());
    let known = kind(step).map(|k| done(k, e));
    match known {
        Some(true) => Status::Done,
        _ if start > now => Status::Ahead,
        _ if end > now => Status::InProgress,
        Some(false) => Status::Overdue,
        None => Status::Past,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cutover::{PlanOptions, plan};

    fn evidence(phase: Phase) -> Evidence {
        Evidence {
            phase,
            dns_errors: None,
            ttl_ok: None,
            all_synced: false,
        }
    }

    #[test]
    fn past_steps_not_done_are_overdue() {
        let p = plan(
            "example.com",
            &PlanOptions::new(
                chrono::DateTime::parse_from_rfc3339("2026-12-05T06:00:00+01:00").unwrap(),
            ),
        );
        // D-3 at 09:00 local has passed; the TTL may still be lowered until D-2 06:00;
        // the incremental passes run; D-1 is ahead.
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T15:00:00+01:00")
            .unwrap()
            .timestamp();
        let e = evidence(Phase::Syncing);
        let shown: Vec<Status> = p.steps.iter().map(|s| status(s, &e, now)).collect();
        assert_eq!(
            shown,
            vec![
                Status::Overdue,
                Status::InProgress,
                Status::Overdue,
                Status::InProgress,
                Status::Ahead,
                Status::Ahead,
                Status::Ahead,
                Status::Ahead,
            ]
        );
        let synced = Evidence {
            all_synced: true,
            ttl_ok: Some(true),
            dns_errors: Some(0),
            ..e
        };
        assert_eq!(status(&p.steps[0], &synced, now), Status::Done);
        assert_eq!(status(&p.steps[1], &synced, now), Status::Done);
        assert_eq!(status(&p.steps[2], &synced, now), Status::Done);
        // Once switched, the switch and everything before it is done.
        let switched = evidence(Phase::Switched);
        let late = now + 4 * 86_400;
        assert!(
            p.steps[..6]
                .iter()
                .all(|s| status(s, &switched, late) == Status::Done)
        );
    }
}
