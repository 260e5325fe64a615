//! The batch page's cutover timeline and the domain's shown phase: dates people read
//! (`Sat 28 Nov 09:00 UTC`, `in 3 days`), a "today" marker between what is past and what
//! is ahead, past steps not done named overdue, CLI commands as code.
//!
//! Which steps are done or overdue is core's (`core::steps`); this module words and
//! draws it. Pure: every function takes "now" (and what is known of the domain) as arguments, so
//! the wording is unit-tested to the minute.

use chrono::{DateTime, Datelike, Utc};
use mailshift_core::cutover::{CutoverPlan, Level, Phase};
use mailshift_core::steps::{Evidence, Status, status};
use maud::{Markup, html};

/// `Sat 28 Nov 09:00 UTC` (with the year when it is not `now`'s): every time on the
/// dashboard is in UTC, so steps and the marker compare at a glance.
pub(crate) fn date_text(t: i64, now: i64) -> String {
    let (Some(t), Some(now)) = (utc(t), utc(now)) else {
        return "-".into();
    };
    if t.year() == now.year() {
        t.format("%a %d %b %H:%M UTC").to_string()
    } else {
        t.format("%a %d %b %Y %H:%M UTC").to_string()
    }
}

fn utc(t: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t, 0)
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// How far `t` is from `now`, as a person says it: `now`, `in 5 minutes`, `2 hours ago`
/// within the same (UTC) day; `tomorrow`, `yesterday`, `in 3 days`, `4 days ago` by
/// calendar days otherwise.
pub(crate) fn relative(t: i64, now: i64) -> String {
    let (Some(at), Some(today)) = (utc(t), utc(now)) else {
        return String::new();
    };
    let days = (at.date_naive() - today.date_naive()).num_days();
    let secs = t - now;
    match days {
        0 if secs.abs() < 60 => "now".into(),
        0 if secs.abs() < 3600 => ago_or_in(secs, plural(secs.abs() / 60, "minute")),
        0 => ago_or_in(secs, plural(secs.abs() / 3600, "hour")),
        1 => "tomorrow".into(),
        -1 => "yesterday".into(),
        d => ago_or_in(d, plural(d.abs(), "day")),
    }
}

fn ago_or_in(sign: i64, amount: String) -> String {
    if sign < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A step's text with its `commands` in `<code>` (the plan writes them between
/// backticks, as the terminal shows them). An unmatched backtick is kept as it is.
pub(crate) fn with_code(text: &str) -> Markup {
    let parts: Vec<&str> = text.split('`').collect();
    // An even count of parts means an odd count of backticks: the last one is unmatched.
    let closed = parts.len() % 2 == 1;
    html! {
        @for (i, p) in parts.iter().enumerate() {
            @if i % 2 == 1 && (closed || i + 1 < parts.len()) { code { (p) } }
            @else if i % 2 == 1 { "`" (p) }
            @else { (p) }
        }
    }
}

/// Which step of [`mailshift_core::cutover::plan`]'s timeline a step is, by its day.
/// What the page knows of the domain, for [`steps::status`].
pub(crate) fn evidence(
    phase: Phase,
    dns: Option<&mailshift_dns::check::Report>,
    all_synced: bool,
) -> Evidence {
    Evidence {
        phase,
        dns_errors: dns.map(dns_errors),
        ttl_ok: dns.and_then(|r| {
            r.findings
                .iter()
                .find(|f| f.check == "ttl")
                .map(|f| f.level == Level::Ok)
        }),
        all_synced,
    }
}

pub(crate) fn dns_errors(r: &mailshift_dns::check::Report) -> usize {
    r.findings
        .iter()
        .filter(|f| f.level == Level::Error)
        .count()
}

/// The row's style.
fn class(s: Status) -> &'static str {
    match s {
        Status::Done => "done",
        Status::Overdue => "overdue",
        Status::InProgress => "current",
        Status::Ahead => "ahead",
        Status::Past => "past",
    }
}

/// The timeline table: steps in order, the "today" row before the first step still
/// ahead.
pub(crate) fn timeline(p: &CutoverPlan, e: &Evidence, now: i64) -> Markup {
    let marker_at = p
        .steps
        .iter()
        .position(|s| s.at.timestamp() > now)
        .unwrap_or(p.steps.len());
    let today = html! {
        tr #today.today {
            td { "Today" }
            td { (date_text(now, now)) }
            td colspan="2" { "Steps above are behind us; steps below are ahead." }
        }
    };
    html! {
        table #timeline {
            thead { tr { th { "Day" } th { "When" } th { "Step" } th { "Status" } } }
            tbody {
                @for (i, s) in p.steps.iter().enumerate() {
                    @if i == marker_at { (today) }
                    @let st = status(s, e, now);
                    tr class=(format!("step {}", class(st))) data-day=(s.day) {
                        td { (s.day) }
                        td {
                            (date_text(s.at.timestamp(), now)) br;
                            span.muted { (relative(s.at.timestamp(), now)) }
                            @if let Some(u) = s.until {
                                br; span.muted { "until " (date_text(u.timestamp(), now)) " (" (relative(u.timestamp(), now)) ")" }
                            }
                        }
                        td { (with_code(&s.what)) }
                        td { span class=(format!("state {}", class(st))) { (st.as_str()) } }
                    }
                }
                @if marker_at == p.steps.len() { (today) }
            }
        }
    }
}

/// The phase as the page shows it, and its style: a domain the scheduler calls ready is
/// not shown as plainly ready while the latest DNS check has errors.
pub(crate) fn phase_text(
    phase: Phase,
    dns: Option<&mailshift_dns::check::Report>,
) -> (String, &'static str) {
    let errors = dns.map(dns_errors).unwrap_or(0);
    match phase {
        Phase::Ready if errors > 0 => (
            format!(
                "ready to switch — blocked: DNS check has {}",
                plural(errors as i64, "error")
            ),
            "blocked",
        ),
        Phase::Ready if dns.is_none() => {
            ("ready to switch — DNS not checked yet".into(), "warning")
        }
        Phase::Ready => ("ready to switch".into(), "ok"),
        p => (p.as_str().to_string(), ""),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mailshift_core::cutover::{Finding, PlanOptions, plan};

    fn t(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn dates_read_in_utc_with_the_year_only_when_another() {
        let now = t("2026-11-25T12:00:00Z");
        assert_eq!(
            date_text(t("2026-11-28T09:00:00+01:00"), now),
            "Sat 28 Nov 08:00 UTC"
        );
        assert_eq!(
            date_text(t("2027-01-02T09:00:00Z"), now),
            "Sat 02 Jan 2027 09:00 UTC"
        );
    }

    #[test]
    fn relative_wording_depends_only_on_the_two_times() {
        let now = t("2026-12-02T11:30:00Z");
        let at = |s| relative(t(s), now);
        assert_eq!(at("2026-12-02T11:30:20Z"), "now");
        assert_eq!(at("2026-12-02T11:31:00Z"), "in 1 minute");
        assert_eq!(at("2026-12-02T11:05:00Z"), "25 minutes ago");
        assert_eq!(at("2026-12-02T09:30:00Z"), "2 hours ago");
        assert_eq!(at("2026-12-02T23:59:00Z"), "in 12 hours");
        assert_eq!(at("2026-12-03T00:10:00Z"), "tomorrow");
        assert_eq!(at("2026-12-01T23:00:00Z"), "yesterday");
        assert_eq!(at("2026-12-05T06:00:00Z"), "in 3 days");
        assert_eq!(at("2026-11-25T13:00:00Z"), "7 days ago");
    }

    #[test]
    fn commands_between_backticks_become_code() {
        assert_eq!(
            with_code("run `mailshift dns check a.example` then `x`").into_string(),
            "run <code>mailshift dns check a.example</code> then <code>x</code>"
        );
        assert_eq!(with_code("no command").into_string(), "no command");
        assert_eq!(
            with_code("odd ` tick <b>").into_string(),
            "odd ` tick &lt;b&gt;"
        );
    }

    fn evidence(phase: Phase) -> Evidence {
        Evidence {
            phase,
            dns_errors: None,
            ttl_ok: None,
            all_synced: false,
        }
    }

    #[test]
    fn overdue_steps_are_named_and_the_marker_sits_between() {
        let p = plan(
            "example.com",
            &PlanOptions::new(DateTime::parse_from_rfc3339("2026-12-05T06:00:00+01:00").unwrap()),
        );
        // D-3 at 09:00 local has passed; the TTL may still be lowered until D-2 06:00;
        // the incremental passes run; D-1 is ahead.
        let now = t("2026-12-02T15:00:00+01:00");
        let e = evidence(Phase::Syncing);
        let html = timeline(&p, &e, now).into_string();
        let marker = html.find("id=\"today\"").unwrap();
        let ahead = html.find("data-day=\"D-1\"").unwrap();
        let current = html.find("data-day=\"D-3..D-1\"").unwrap();
        assert!(current < marker && marker < ahead, "{html}");
        assert!(!html.contains('`'), "{html}");
        assert!(html.contains("<code>mailshift dns check example.com</code>"));
        assert!(html.contains("overdue"));
    }

    fn report(levels: &[Level]) -> mailshift_dns::check::Report {
        mailshift_dns::check::Report {
            domain: "example.com".into(),
            active: mailshift_dns::check::Sees::Old,
            views: Vec::new(),
            findings: levels
                .iter()
                .map(|l| Finding {
                    check: "spf".into(),
                    level: *l,
                    message: String::new(),
                    fix: None,
                })
                .collect(),
            level: levels.iter().copied().max().unwrap_or(Level::Ok),
        }
    }

    #[test]
    fn ready_is_not_claimed_over_dns_errors() {
        let bad = report(&[Level::Error, Level::Ok, Level::Error]);
        assert_eq!(
            phase_text(Phase::Ready, Some(&bad)).0,
            "ready to switch — blocked: DNS check has 2 errors"
        );
        assert_eq!(
            phase_text(Phase::Ready, Some(&report(&[Level::Warn]))).0,
            "ready to switch"
        );
        assert!(phase_text(Phase::Ready, None).0.contains("not checked"));
        assert_eq!(phase_text(Phase::Syncing, Some(&bad)).0, "syncing");
    }
}
