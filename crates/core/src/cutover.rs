//! The cutover of a domain: its phases, its dated timeline (D-7 .. D+3) around a
//! planned MX switch, TTL advice, and the readiness findings DNS checks produce.
//!
//! Pure: every function takes "now" and the DNS observations as arguments, so the
//! timeline and the advice are unit-tested to the minute.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveTime, TimeZone, Timelike, Weekday};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a domain is in its cutover, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Auditing DNS, creating target mailboxes, lowering the TTL.
    Prepare,
    /// Initial copy and incremental passes running.
    Syncing,
    /// Every mailbox synced and verified: the MX may be switched.
    Ready,
    /// The MX change has been observed by every authoritative nameserver.
    Switched,
    /// The old server still receives mail; new arrivals are copied, nothing is
    /// deleted on the new side.
    DualReception,
    /// Final verification done; the old server can be decommissioned.
    Done,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Prepare,
        Phase::Syncing,
        Phase::Ready,
        Phase::Switched,
        Phase::DualReception,
        Phase::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Syncing => "syncing",
            Phase::Ready => "ready",
            Phase::Switched => "switched",
            Phase::DualReception => "dual-reception",
            Phase::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether mail passes of this domain's mailboxes run in dual-reception mode:
    /// new arrivals only, never a deletion or a flag change on the destination.
    pub fn dual_reception(self) -> bool {
        matches!(self, Phase::Switched | Phase::DualReception)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious a finding is. Only `Error` makes a check fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One observation of a readiness check, with the one-line fix when it is not ok.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What was checked: `mx`, `ttl`, `spf`, `dkim:SELECTOR`, `dmarc`, `ns`, ...
    pub check: String,
    pub level: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn error(
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Error,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The worst level among findings (`Ok` when there are none).
pub fn worst(findings: &[Finding]) -> Level {
    findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}

/// The MX TTL the switch wants, and how long before it the lowered TTL must be live.
pub const TARGET_TTL: u32 = 300;
pub const TTL_LEAD: Duration = Duration::hours(48);

/// Advice on the MX TTL relative to a planned switch.
pub fn ttl_advice(
    ttl: u32,
    switch_at: Option<DateTime<FixedOffset>>,
    now: DateTime<FixedOffset>,
) -> Finding {
    if ttl <= TARGET_TTL {
        return Finding::ok(
            "ttl",
            format!("MX TTL {ttl} s: low enough for a quick switch"),
        );
    }
    // Caches may hold the old record for the old TTL after the change goes live, so the
    // lowered TTL must be published at least that long (and at least 48 h) before.
    let lead = TTL_LEAD.max(Duration::seconds(i64::from(ttl)));
    let Some(switch_at) = switch_at else {
        return Finding::warn(
            "ttl",
            format!("MX TTL {ttl} s: too high for a quick switch"),
            format!(
                "lower the MX TTL to {TARGET_TTL} at least {} h before the switch",
                lead.num_hours()
            ),
        );
    };
    let deadline = switch_at - lead;
    if now <= deadline {
        Finding::warn(
            "ttl",
            format!(
                "MX TTL {ttl} s: lower it to {TARGET_TTL} now; it must be live by {} ({} h before the switch at {})",
                stamp(deadline),
                lead.num_hours(),
                stamp(switch_at)
            ),
            format!("set the MX TTL to {TARGET_TTL} before {}", stamp(deadline)),
        )
    } else {
        Finding::error(
            "ttl",
            format!(
                "MX TTL {ttl} s and the switch at {} is less than {} h away: caches would keep \
                 the old MX after the switch",
                stamp(switch_at),
                lead.num_hours()
            ),
            format!(
                "lower the MX TTL to {TARGET_TTL} now and move the switch to {} or later",
                stamp(now + lead)
            ),
        )
    }
}

/// `2026-12-05 06:00 +01:00`: a timestamp an operator reads in the plan's own zone.
pub fn stamp(t: DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%d %H:%M %:z").to_string()
}

/// A period the operator marks as busy: a switch in it gets a warning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Busy {
    /// The last `days` days of every month and its first day.
    MonthEnd { days: u32 },
    /// An explicit range of local dates, inclusive.
    Dates {
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    },
}

impl Busy {
    /// Parses `month-end`, `month-end:N` or `YYYY-MM-DD..YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Busy, String> {
        if s == "month-end" {
            return Ok(Busy::MonthEnd { days: 3 });
        }
        if let Some(n) = s.strip_prefix("month-end:") {
            let days = n
                .parse()
                .map_err(|_| format!("`{s}`: expected month-end:N with N a number of days"))?;
            return Ok(Busy::MonthEnd { days });
        }
        let (a, b) = s.split_once("..").ok_or_else(|| {
            format!("`{s}`: expected `month-end`, `month-end:N` or `YYYY-MM-DD..YYYY-MM-DD`")
        })?;
        let date = |d: &str| {
            chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
                .map_err(|_| format!("`{d}` in `{s}` is not a YYYY-MM-DD date"))
        };
        let (from, to) = (date(a)?, date(b)?);
        if to < from {
            return Err(format!("`{s}`: the range ends before it starts"));
        }
        Ok(Busy::Dates { from, to })
    }

    fn contains(&self, day: chrono::NaiveDate) -> bool {
        match self {
            Busy::MonthEnd { days } => {
                let next_month_first =
                    (day + Duration::days(i64::from(*days))).month() != day.month();
                day.day() == 1 || next_month_first
            }
            Busy::Dates { from, to } => (*from..=*to).contains(&day),
        }
    }

    fn describe(&self) -> String {
        match self {
            Busy::MonthEnd { days } => {
                format!("the month-end period (last {days} days and the 1st)")
            }
            Busy::Dates { from, to } => format!("the busy period {from}..{to}"),
        }
    }
}

/// What the operator decides when planning a cutover.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub switch_at: DateTime<FixedOffset>,
    /// How long the old server keeps receiving after the switch.
    pub dual_reception: Duration,
    /// Interval of incremental passes between the initial sync and the switch.
    pub incremental_every: Duration,
    pub busy: Vec<Busy>,
}

impl PlanOptions {
    pub fn new(switch_at: DateTime<FixedOffset>) -> PlanOptions {
        PlanOptions {
            switch_at,
            dual_reception: Duration::hours(72),
            incremental_every: Duration::hours(4),
            busy: vec![Busy::MonthEnd { days: 3 }],
        }
    }
}

/// One dated step of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `D-7`, `D-Day`, `D+3`, ...
    pub day: String,
    pub at: DateTime<FixedOffset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<FixedOffset>>,
    pub what: String,
}

/// The cutover plan of one domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoverPlan {
    pub domain: String,
    pub switch_at: DateTime<FixedOffset>,
    pub dual_reception_until: DateTime<FixedOffset>,
    pub ttl_deadline: DateTime<FixedOffset>,
    pub steps: Vec<Step>,
    pub warnings: Vec<String>,
}

fn day_label(days: i64) -> String {
    match days {
        0 => "D-Day".into(),
        d if d < 0 => format!("D{d}"),
        d => format!("D+{d}"),
    }
}

/// Local 09:00 on the day `days` from the switch (steps people do in working hours).
fn office(switch_at: DateTime<FixedOffset>, days: i64) -> DateTime<FixedOffset> {
    let day = switch_at.date_naive() + Duration::days(days);
    let nine = day.and_time(NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default());
    switch_at
        .timezone()
        .from_local_datetime(&nine)
        .single()
        .unwrap_or(switch_at + Duration::days(days))
}

/// The timeline D-7 .. D+3 for a switch, with warnings about its timing.
pub fn plan(domain: &str, o: &PlanOptions) -> CutoverPlan {
    let s = o.switch_at;
    let ttl_deadline = s - TTL_LEAD;
    let sync_start = office(s, -3);
    let verify_at = office(s, -1);
    let dual_until = s + o.dual_reception;
    let passes =
        ((verify_at - sync_start).num_minutes() / o.incremental_every.num_minutes().max(1)).max(0);
    let restore_day = (dual_until - s).num_days();
    let steps = vec![
        Step {
            day: day_label(-7),
            at: office(s, -7),
            until: None,
            what: format!(
                "Audit: `mailshift dns check {domain}` (MX, TTL, SPF, DKIM, DMARC); create the \
                 target mailboxes with the same passwords, aliases and forwards (`mailshift \
                 provision`); verify credentials on both sides (`mailshift batch verify`)"
            ),
        },
        Step {
            day: day_label(-5),
            at: office(s, -5),
            until: Some(ttl_deadline),
            what: format!(
                "Lower the MX TTL to {TARGET_TTL} s; deadline {} (48 h before the switch); publish \
                 the new provider's SPF include, DKIM keys and DMARC",
                stamp(ttl_deadline)
            ),
        },
        Step {
            day: day_label(-3),
            at: sync_start,
            until: None,
            what: "Initial sync: first full copy of every mailbox (the old server is only read)"
                .into(),
        },
        Step {
            day: "D-3..D-1".into(),
            at: sync_start + o.incremental_every,
            until: Some(verify_at),
            what: format!(
                "Incremental passes every {} h (about {passes}): new mail, flags, deletions, moves",
                o.incremental_every.num_hours().max(1)
            ),
        },
        Step {
            day: day_label(-1),
            at: verify_at,
            until: None,
            what: format!(
                "Verify every mailbox (`mailshift verify`); re-run `mailshift dns check {domain}`: \
                 no errors before the switch; send test mail from the new server \
                 (`mailshift test-send`): signed, aligned, not spam"
            ),
        },
        Step {
            day: day_label(0),
            at: s,
            until: Some(s + Duration::hours(1)),
            what: format!(
                "Switch window: point the MX at the new server; watch propagation with \
                 `mailshift dns watch {domain}`; reconfigure mail clients to the new server \
                 (`mailshift clients export`, or `mailshift serve --clients-batch`), never \
                 relying on DNS for them"
            ),
        },
        Step {
            day: format!("D..D+{restore_day}"),
            at: s,
            until: Some(dual_until),
            what: "Dual reception: the old server still receives; new arrivals are copied to the \
                   new server, nothing is deleted there"
                .into(),
        },
        Step {
            day: day_label(restore_day),
            at: dual_until,
            until: None,
            what: "Final verification and decommission report; restore the MX TTL (e.g. 3600 s); \
                   decommission the old server"
                .into(),
        },
    ];
    CutoverPlan {
        domain: domain.to_string(),
        switch_at: s,
        dual_reception_until: dual_until,
        ttl_deadline,
        steps,
        warnings: timing_warnings(o),
    }
}

/// Warnings about when the switch falls, with a better slot suggested.
fn timing_warnings(o: &PlanOptions) -> Vec<String> {
    let s = o.switch_at;
    let mut out = Vec::new();
    for b in &o.busy {
        if b.contains(s.date_naive()) {
            out.push(format!(
                "the switch at {} falls in {}; suggested: {}",
                stamp(s),
                b.describe(),
                stamp(suggest(s, &o.busy))
            ));
        }
    }
    let weekday = !matches!(s.weekday(), Weekday::Sat | Weekday::Sun);
    if weekday && (7..20).contains(&s.hour()) {
        out.push(format!(
            "the switch at {} is in working hours; an early-morning slot (06:00) or a weekend is \
             quieter: suggested {}",
            stamp(s),
            stamp(suggest(s, &o.busy))
        ));
    }
    out
}

/// The first quiet slot at or after the planned day: 06:00 local, not in a busy period.
fn suggest(s: DateTime<FixedOffset>, busy: &[Busy]) -> DateTime<FixedOffset> {
    let six = NaiveTime::from_hms_opt(6, 0, 0).unwrap_or_default();
    for d in 0..62 {
        let day = s.date_naive() + Duration::days(d);
        if busy.iter().any(|b| b.contains(day)) {
            continue;
        }
        if let Some(t) = s
            .timezone()
            .from_local_datetime(&day.and_time(six))
            .single()
            && t >= s
        {
            return t;
        }
    }
    s
}

/// How a domain's cutover is watched and paced, as `mailshift plan` stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    pub name: String,
    /// The new provider's MX host: the switch is observed when every authoritative
    /// nameserver returns only it. None: the switch is never detected automatically.
    #[serde(default)]
    pub new_mx: Option<String>,
    #[serde(default)]
    pub old_mx: Option<String>,
    /// Recursive resolvers (`IP[:PORT]`) used to find the authoritative servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Authoritative servers (`IP[:PORT]`); found through NS when empty.
    #[serde(default)]
    pub authoritative: Vec<String>,
    /// RFC 3339, as given (written in UTC).
    #[serde(default, serialize_with = "crate::time::utc_text_opt")]
    pub switch_at: Option<String>,
    /// How long the old server keeps receiving after the switch, in seconds.
    pub dual_reception_secs: u64,
    /// The SPF include the new provider requires (`dns check --spf-include`). Left out
    /// of the JSON when unset, so records and API answers without it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf_include: Option<String>,
    /// DKIM selectors the new provider signs with (`dns check --dkim-selector`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dkim_selectors: Vec<String>,
}

/// A domain's cutover as the fleet tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub config: DomainConfig,
    pub phase: Phase,
    /// Unix seconds.
    #[serde(with = "crate::time::unix")]
    pub phase_since: i64,
    /// When the MX switch was observed (unix seconds).
    #[serde(default, with = "crate::time::unix_opt")]
    pub switched_at: Option<i64>,
    /// When the passes after dual reception ended were scheduled (unix seconds).
    #[serde(default, with = "crate::time::unix_opt")]
    pub final_pass_at: Option<i64>,
    /// The stored plan (JSON of [`CutoverPlan`]).
    pub plan: Option<String>,
    /// The decommission report once done (JSON).
    pub report: Option<String>,
}

impl DomainRecord {
    /// Unix seconds at which dual reception ends (once switched).
    pub fn dual_reception_until(&self) -> Option<i64> {
        self.switched_at.map(|t| {
            t.saturating_add(i64::try_from(self.config.dual_reception_secs).unwrap_or(i64::MAX))
        })
    }
}

/// What a domain's mailboxes look like in one scheduler round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainObservation {
    /// Every mailbox of the domain verified in sync (source and destination equal).
    pub all_verified: bool,
    /// Every authoritative nameserver returns only the new MX.
    pub mx_switched: bool,
    /// The passes after dual reception ended were scheduled in an earlier round.
    pub final_pass_done: bool,
}

/// The next phase of a domain, given what was observed at `now` (unix seconds).
/// The switch can be observed in any phase before it (an operator may switch early);
/// the way back never happens: mail is never deleted on the new side once users are
/// there.
pub fn next_phase(d: &DomainRecord, o: DomainObservation, now: i64) -> Option<Phase> {
    match d.phase {
        Phase::Prepare | Phase::Syncing | Phase::Ready if o.mx_switched => Some(Phase::Switched),
        Phase::Prepare => Some(Phase::Syncing),
        Phase::Syncing if o.all_verified => Some(Phase::Ready),
        Phase::Switched => Some(Phase::DualReception),
        Phase::DualReception
            if d.dual_reception_until().is_some_and(|until| now >= until) && o.final_pass_done =>
        {
            Some(Phase::Done)
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn the_timeline_of_a_switch_has_concrete_dates() {
        let p = plan(
            "example.com",
            &PlanOptions::new(t("2026-12-05T06:00:00+01:00")),
        );
        let days: Vec<(&str, String)> = p
            .steps
            .iter()
            .map(|s| (s.day.as_str(), stamp(s.at)))
            .collect();
        assert_eq!(
            days,
            vec![
                ("D-7", "2026-11-28 09:00 +01:00".into()),
                ("D-5", "2026-11-30 09:00 +01:00".into()),
                ("D-3", "2026-12-02 09:00 +01:00".into()),
                ("D-3..D-1", "2026-12-02 13:00 +01:00".into()),
                ("D-1", "2026-12-04 09:00 +01:00".into()),
                ("D-Day", "2026-12-05 06:00 +01:00".into()),
                ("D..D+3", "2026-12-05 06:00 +01:00".into()),
                ("D+3", "2026-12-08 06:00 +01:00".into()),
            ]
        );
        assert_eq!(stamp(p.ttl_deadline), "2026-12-03 06:00 +01:00");
        assert_eq!(stamp(p.dual_reception_until), "2026-12-08 06:00 +01:00");
        // A Saturday at 06:00, not month-end: nothing to warn about.
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn month_end_and_working_hours_are_warned_with_a_better_slot() {
        let p = plan(
            "example.com",
            &PlanOptions::new(t("2026-11-30T14:00:00+01:00")),
        );
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("month-end"), "{}", p.warnings[0]);
        // Nov 28..Dec 1 are busy: the first quiet morning is Dec 2.
        assert!(
            p.warnings[0].ends_with("2026-12-02 06:00 +01:00"),
            "{}",
            p.warnings[0]
        );
        assert!(p.warnings[1].contains("working hours"), "{}", p.warnings[1]);

        let mut o = PlanOptions::new(t("2026-12-16T10:00:00+00:00"));
        o.busy = vec![Busy::parse("2026-12-15..2026-12-20").unwrap()];
        let p = plan("example.com", &o);
        assert!(
            p.warnings[0].contains("2026-12-15..2026-12-20"),
            "{:?}",
            p.warnings
        );
        assert!(
            p.warnings[0].ends_with("2026-12-21 06:00 +00:00"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn ttl_advice_depends_on_the_time_left() {
        let switch = Some(t("2026-12-05T06:00:00+01:00"));
        let f = ttl_advice(300, switch, t("2026-12-04T06:00:00+01:00"));
        assert_eq!(f.level, Level::Ok);
        let f = ttl_advice(3600, switch, t("2026-11-29T06:00:00+01:00"));
        assert_eq!(f.level, Level::Warn);
        assert!(f.message.contains("lower it to 300 now"), "{}", f.message);
        assert!(
            f.message.contains("2026-12-03 06:00 +01:00"),
            "{}",
            f.message
        );
        let f = ttl_advice(3600, switch, t("2026-12-04T06:00:00+01:00"));
        assert_eq!(f.level, Level::Error);
        assert!(f.fix.unwrap().contains("2026-12-06 06:00 +01:00"));
        assert_eq!(
            ttl_advice(86400, None, t("2026-12-04T06:00:00+01:00")).level,
            Level::Warn
        );
    }

    #[test]
    fn busy_periods_parse_or_say_why_not() {
        assert_eq!(
            Busy::parse("month-end").unwrap(),
            Busy::MonthEnd { days: 3 }
        );
        assert_eq!(
            Busy::parse("month-end:5").unwrap(),
            Busy::MonthEnd { days: 5 }
        );
        assert!(
            Busy::parse("2026-12-20..2026-12-01")
                .unwrap_err()
                .contains("ends before")
        );
        assert!(Busy::parse("xmas").unwrap_err().contains("expected"));
    }

    #[test]
    fn a_domain_moves_through_its_phases_and_never_back() {
        let mut d = DomainRecord {
            config: DomainConfig {
                name: "example.com".into(),
                dual_reception_secs: 100,
                ..Default::default()
            },
            phase: Phase::Prepare,
            phase_since: 0,
            switched_at: None,
            final_pass_at: None,
            plan: None,
            report: None,
        };
        let none = DomainObservation {
            all_verified: false,
            mx_switched: false,
            final_pass_done: false,
        };
        assert_eq!(next_phase(&d, none, 0), Some(Phase::Syncing));
        d.phase = Phase::Syncing;
        assert_eq!(next_phase(&d, none, 0), None);
        let verified = DomainObservation {
            all_verified: true,
            ..none
        };
        assert_eq!(next_phase(&d, verified, 0), Some(Phase::Ready));
        d.phase = Phase::Ready;
        let switched = DomainObservation {
            mx_switched: true,
            ..none
        };
        assert_eq!(next_phase(&d, switched, 0), Some(Phase::Switched));
        d.phase = Phase::Switched;
        d.switched_at = Some(1000);
        assert_eq!(next_phase(&d, none, 1000), Some(Phase::DualReception));
        d.phase = Phase::DualReception;
        let done = DomainObservation {
            final_pass_done: true,
            ..none
        };
        assert_eq!(
            next_phase(&d, done, 1099),
            None,
            "dual reception lasts its period"
        );
        assert_eq!(next_phase(&d, none, 1100), None, "a final pass comes first");
        assert_eq!(next_phase(&d, done, 1100), Some(Phase::Done));
        d.phase = Phase::Done;
        assert_eq!(next_phase(&d, switched, 2000), None);
    }

    #[test]
    fn phases_round_trip_and_order() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert!(Phase::Ready < Phase::Switched);
        assert!(Phase::DualReception.dual_reception() && !Phase::Ready.dual_reception());
    }
}

/// What a domain's DNS check looks for besides the MX: set on the dashboard, or by
/// `mailshift plan`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsParams {
    pub new_mx: String,
    pub spf_include: Option<String>,
    pub dkim_selectors: Vec<String>,
}

impl DnsParams {
    /// The parameters as a person typed them (selectors separated by commas or spaces),
    /// normalised: lower case, no trailing dot, no repeated selector; what is wrong
    /// otherwise, naming the field.
    pub fn parse(
        new_mx: &str,
        spf_include: &str,
        dkim_selectors: &str,
    ) -> Result<DnsParams, String> {
        let new_mx = new_mx.trim();
        if new_mx.is_empty() {
            return Err(
                "new MX host: enter the new provider's MX host, e.g. mx.new.example".into(),
            );
        }
        let new_mx = host("new MX host", new_mx, false)?;
        let spf_include = match spf_include.trim() {
            "" => None,
            v => Some(host("SPF include", v, true)?),
        };
        let selectors = dkim_selectors;
        let mut dkim_selectors = Vec::new();
        for sel in selectors
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let sel = selector(sel)?;
            if !dkim_selectors.contains(&sel) {
                dkim_selectors.push(sel);
            }
        }
        if dkim_selectors.len() > MAX_SELECTORS {
            return Err(format!(
                "DKIM selectors: at most {MAX_SELECTORS}, {} given",
                dkim_selectors.len()
            ));
        }
        Ok(DnsParams {
            new_mx,
            spf_include,
            dkim_selectors,
        })
    }
}

/// More selectors than this is a paste gone wrong, not a provider's setup (each one is a
/// DNS query per check).
const MAX_SELECTORS: usize = 10;

/// Whether `label` is a DNS label: 1 to 63 letters, digits and hyphens (underscores too
/// where `underscore`, as in `_spf.provider.example`), not starting or ending with a hyphen.
fn dns_label(label: &str, underscore: bool) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_'))
}

/// A host name of two labels or more, lower-cased and without its trailing dot.
fn host(what: &str, v: &str, underscore: bool) -> Result<String, String> {
    let h = v.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = h.split('.').collect();
    if h.len() > 253 || labels.len() < 2 || !labels.iter().all(|l| dns_label(l, underscore)) {
        return Err(format!(
            "{what}: '{v}' is not a host name (letters, digits and hyphens in dot-separated \
             parts, e.g. mx.new.example)"
        ));
    }
    Ok(h)
}

/// A DKIM selector (RFC 6376: one or more dot-separated labels), lower-cased.
fn selector(v: &str) -> Result<String, String> {
    let s = v.to_ascii_lowercase();
    if s.len() > 253 || !s.split('.').all(|l| dns_label(l, true)) {
        return Err(format!(
            "DKIM selectors: '{v}' is not a selector (letters, digits, hyphens and \
             underscores, e.g. selector1); separate several with commas"
        ));
    }
    Ok(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod dns_params_tests {
    use super::*;

    fn form(mx: &str, spf: &str, dkim: &str) -> (String, String, String) {
        (mx.into(), spf.into(), dkim.into())
    }

    trait Parse {
        fn parse(&self) -> Result<DnsParams, String>;
    }

    impl Parse for (String, String, String) {
        fn parse(&self) -> Result<DnsParams, String> {
            DnsParams::parse(&self.0, &self.1, &self.2)
        }
    }

    #[test]
    fn dns_parameters_are_normalised() {
        let p = form(
            " MX.New.Example. ",
            "_spf.Provider.example",
            "sel1, sel2 sel1,,s-3._x",
        )
        .parse()
        .unwrap();
        assert_eq!(p.new_mx, "mx.new.example");
        assert_eq!(p.spf_include.as_deref(), Some("_spf.provider.example"));
        assert_eq!(p.dkim_selectors, ["sel1", "sel2", "s-3._x"]);
        let p = form("mx.new.example", " ", "").parse().unwrap();
        assert_eq!((p.spf_include, p.dkim_selectors.len()), (None, 0));
    }

    #[test]
    fn bad_dns_parameters_say_which_and_why() {
        for (f, says) in [
            (form("", "", ""), "new MX host: enter"),
            (
                form("bad host!", "", ""),
                "new MX host: 'bad host!' is not a host name",
            ),
            (form("localhost", "", ""), "not a host name"),
            (form("-mx.example", "", ""), "not a host name"),
            (form("_mx.example", "", ""), "not a host name"),
            (
                form("mx.example", "spf..example", ""),
                "SPF include: 'spf..example'",
            ),
            (form("mx.example", "", "sel1, s/2"), "DKIM selectors: 's/2'"),
        ] {
            let e = f.parse().map(|_| ()).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let many = (0..11)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            form("mx.example", "", &many)
                .parse()
                .unwrap_err()
                .contains("at most 10")
        );
    }
}
