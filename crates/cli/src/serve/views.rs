//! The dashboard's markup: the page frame, the login and message pages, the batch page's
//! body and the small formatters they share. maud escapes every value; no script.

use super::auth::Caller;
use super::timeline;
use axum::response::Html;
use mailshift_engine::batches::{self as ops, BatchView};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// Mailboxes per page of the batch page.
pub(crate) const PAGE: usize = 500;

pub(crate) fn page(
    title: &str,
    caller: Option<&Caller>,
    refresh: Option<u32>,
    body: Markup,
) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(s) = refresh { meta http-equiv="refresh" content=(s); }
                    title { (title) " · mailshift" }
                    link rel="stylesheet" href="/static/style.css";
                }
                body {
                    header {
                        a href="/" { "mailshift" }
                        @if let Some(c) = caller {
                            span {
                                span.muted style="color:#cbd2dc" { "token " (c.name) @if c.read_only { " (read-only)" } " " }
                                form.inline method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(c.csrf);
                                    button.secondary type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

pub(crate) fn login_page(why: Option<&str>) -> Html<String> {
    page(
        "Log in",
        None,
        None,
        html! {
            h1 { "Log in" }
            @if let Some(w) = why { p.err { (w) } }
            form method="post" action="/login" {
                fieldset {
                    label { "API token" input #token type="password" name="token" autocomplete="off" required; }
                }
                p { button #login type="submit" { "Log in" } }
            }
            p.muted { "Create a token on the fleet's machine with " code { "mailshift token create --name NAME" } "." }
        },
    )
}

pub(crate) fn message_page(title: &str, msg: &str) -> Html<String> {
    page(
        title,
        None,
        None,
        html! { h1 { (title) } p { (msg) } p { a href="/" { "Back" } } },
    )
}

pub(crate) fn bar(percent: Option<f64>) -> Markup {
    html! {
        @match percent {
            Some(p) => div.bar title=(format!("{p}%")) { span style=(format!("width:{p}%")) {} },
            None => span.muted { "not counted yet" },
        }
    }
}

fn when(t: Option<i64>) -> String {
    t.map(ops::stamp).unwrap_or_else(|| "-".into())
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} KiB", b.div_ceil(1024)),
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn batch_body(
    v: &BatchView,
    c: &Caller,
    verifying: bool,
    dns: Option<&(i64, mailshift_dns::check::Report)>,
) -> Markup {
    let b = &v.batch;
    let action = |id: &str, label: &str, enabled: bool| {
        html! {
            form.inline method="post" action=(format!("/batches/{}/action", urlencode(&v.name))) {
                input type="hidden" name="csrf" value=(c.csrf);
                input type="hidden" name="action" value=(id);
                button id=(format!("action-{id}")) type="submit" disabled[c.read_only || !enabled] { (label) }
            }
            " "
        }
    };
    let now = ops::now();
    let (plan, derived) = domain_plan(v.domain.as_ref());
    let report = dns.map(|(_, r)| r);
    html! {
        h1 { "Batch " (v.name) " " span #batch-state class=(format!("state {}", v.state)) { (v.state) } }
        @if verifying { p.flash { "Checking the credentials of every mailbox…" } }
        div.totals {
            div { "Mailboxes" b { (v.totals.mailboxes) } }
            div { "Synced" b #synced-count { (v.totals.synced) } }
            div { "Copying" b { (v.totals.syncing) } }
            div { "Failed" b { (v.totals.failed) } }
            div { "Messages" b { (v.totals.messages_copied) @if let Some(t) = v.totals.messages_total { " / " (t) } } }
            div { "Progress" b #batch-percent data-percent=(v.totals.percent.map(|p| p.to_string()).unwrap_or_default()) {
                @match v.totals.percent { Some(p) => (format!("{p}%")), None => "-" } } }
        }
        p {
            (action("verify", "Verify credentials", !verifying))
            (action("start", "Start", matches!(b.state, mailshift_core::batch::BatchState::Draft)))
            (action("pause", "Pause", matches!(b.state, mailshift_core::batch::BatchState::Running | mailshift_core::batch::BatchState::Completing)))
            (action("resume", "Resume", matches!(b.state, mailshift_core::batch::BatchState::Paused)))
            (action("retry-failed", "Retry failed", v.totals.failed > 0))
            (action("delete", "Delete batch", v.deletable()))
            a #report-csv href=(format!("/batches/{}/report.csv", urlencode(&v.name))) { "Report (CSV)" } " · "
            a href=(format!("/batches/{}/report.json", urlencode(&v.name))) { "Report (JSON)" }
        }
        p.muted #schedule-line {
            "Start " (when(b.start_at)) " · every " (b.interval_secs.map(duration).unwrap_or_else(|| "scheduler's interval".into()))
            " · switch " (switch_text(b.switch_at, v.domain.as_ref())) " · complete " (when(b.complete_at))
            " · " (b.concurrency.map(|n| format!("{n} mailboxes at once")).unwrap_or_else(|| "no concurrency cap".into()))
            @if let Some(h) = b.host_concurrency { " · " (h) " per old server" }
        }
        @if !c.read_only && !matches!(b.state, mailshift_core::batch::BatchState::Completed) {
            details {
                summary { "Change the schedule" }
                form #schedule-form method="post" action=(format!("/batches/{}/schedule", urlencode(&v.name))) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    fieldset {
                        label { "Start at" input name="start_at" placeholder="2026-12-01T20:00+01:00"; }
                        label { "Pass every" input name="interval" placeholder="4h"; }
                        label { "MX switch at" input name="switch_at" placeholder="2026-12-05T06:00+01:00"; }
                        label { "Complete at" input name="complete_at" placeholder="2026-12-08T06:00+01:00"; }
                        label { "Mailboxes at once" input name="concurrency" inputmode="numeric"; }
                        label { "… per old server" input name="per_host" inputmode="numeric"; }
                    }
                    p.muted { "Times with their UTC offset. Empty fields are left as they are." }
                    p { button #schedule type="submit" { "Save schedule" } }
                }
            }
        }
        @if let Some(d) = &v.domain {
            @let (phase, phase_class) = timeline::phase_text(d.phase, report);
            h2 { "Domain " (d.config.name) }
            p { "Cutover phase " span #cutover-phase class=(format!("state {phase_class}")) { (phase) } " since " (ops::stamp(d.phase_since))
                @if let Some(s) = d.switched_at { " · MX switch seen " (ops::stamp(s)) } }
            p {
                (action("dns-check", "Check DNS now", d.config.new_mx.is_some()))
                @if d.config.new_mx.is_none() { span.muted { "set the new MX below to check DNS" } }
            }
            @if let Some((at, r)) = dns {
                p { "DNS readiness " span #dns-level class=(format!("state {}", level(&r.level))) { (level(&r.level)) }
                    span.muted { " checked " (ops::stamp(*at)) " · " (timeline::dns_errors(r)) " error(s)" } }
                table #dns { thead { tr { th { "Check" } th { "Level" } th { "Finding" } } }
                    tbody { @for f in &r.findings { tr { td { (f.check) } td { span class=(format!("state {}", level(&f.level))) { (level(&f.level)) } } td { (timeline::with_code(&f.message)) @if let Some(fix) = &f.fix { br; span.muted { (timeline::with_code(fix)) } } } } } } }
            }
            @if !c.read_only { (dns_form(&v.name, &d.config, c)) }
            @if let Some(p) = &plan {
                h2 { "Timeline" }
                @if derived { p.muted { "Derived from the switch date with the default options; " code { "mailshift plan --database …" } " records one with yours." } }
                (timeline::timeline(p, &timeline::evidence(d.phase, report, v.totals.mailboxes > 0 && v.totals.synced == v.totals.mailboxes), now))
            }
        }
        h2 { "Mailboxes" }
        @if v.totals.mailboxes > v.mailboxes.len() {
            @let base = format!("/batches/{}", urlencode(&v.name));
            p #paging {
                "Mailboxes " (v.offset + 1) "-" (v.offset + v.mailboxes.len()) " of " (v.totals.mailboxes) " "
                @if v.offset > 0 { a href=(format!("{base}?offset={}", v.offset.saturating_sub(PAGE))) { "previous" } " " }
                @if v.offset + v.mailboxes.len() < v.totals.mailboxes { a href=(format!("{base}?offset={}", v.offset + PAGE)) { "next" } }
            }
        }
        table #mailboxes {
            thead { tr { th { "Mailbox" } th { "Status" } th { "Progress" } th { "Copied" } th { "Rate / ETA" } th { "Last pass" } th { "Check / error" } } }
            tbody {
                @for m in &v.mailboxes {
                    tr data-source=(m.source) data-status=(m.status) {
                        td { a.mailbox href=(format!("/mailboxes/{}", m.id)) { (m.address) } br; span.muted { (m.source) " → " (m.dest) } }
                        td { span class=(format!("state {}", m.status)) { (m.status) } @if m.jobs_left > 0 { br; span.muted { (m.jobs_left) " folder job(s) left" } } }
                        td { (bar(m.progress.percent)) @if let Some(p) = m.progress.percent { span.muted { (p) "%" } } }
                        td { (m.progress.messages_copied) @if let Some(t) = m.progress.messages_total { " / " (t) } br;
                             span.muted { (size(m.progress.bytes_copied)) @if let Some(t) = m.progress.bytes_total { " / " (size(t)) } } }
                        td.rate { @if let Some(r) = m.progress.rate { (format!("{r:.1} msg/s")) } @else { "-" }
                             @if let Some(e) = m.progress.eta_secs { br; span.muted { "ETA " (duration(e)) } } }
                        td { (when(m.last_pass_at)) }
                        td {
                            @if let Some(ch) = &m.check {
                                span class=(if ch.ready { "state ok" } else { "state FAIL" }) { @if ch.ready { "ready" } @else { "not ready" } }
                                " " span.muted { "login " (ops::Login::text(ch.source_login)) "/" (ops::Login::text(ch.dest_login)) }
                                @for p in &ch.problems { br; span.err { (p) } }
                                @for w in &ch.warnings { br; span.muted { (w) } }
                            }
                            @if let Some(e) = &m.last_error { br; span.err { (e) } }
                        }
                    }
                }
            }
        }
        (PreEscaped(""))
    }
}

/// A mailbox's page: where it stands, its folders, its credential check, and what an
/// account manager can do about it (fix a password, retry it, remove it).
pub(crate) fn mailbox_body(d: &ops::MailboxDetail, c: &Caller) -> Markup {
    let m = &d.mailbox;
    let form = |path: &str| format!("/mailboxes/{}/{path}", m.id);
    html! {
        p.muted { @if let Some(b) = &m.batch { "Batch " a href=(format!("/batches/{}", urlencode(b))) { (b) } } }
        h1 { "Mailbox " (m.address) " " span #mailbox-status class=(format!("state {}", m.status)) { (m.status) } }
        p.muted { "Old server " (m.source) br; "New server " (m.dest) }
        div.totals {
            div { "Messages" b #mailbox-copied { (m.progress.messages_copied) @if let Some(t) = m.progress.messages_total { " / " (t) } } }
            div { "Copied" b { (size(m.progress.bytes_copied)) } }
            div { "Progress" b { @match m.progress.percent { Some(p) => (format!("{p}%")), None => "-" } } }
            div { "Folder jobs left" b { (m.jobs_left) } }
            div { "Last pass" b { (when(m.last_pass_at)) } }
            div { "Next pass" b { (when(m.next_pass_at)) } }
        }
        @if let Some(e) = &m.last_error { p #mailbox-error { span.err { (e) } } }
        @if let Some(w) = &m.warning { p { span.muted { (w) } } }
        h2 { "Credential check" }
        @match &m.check {
            Some(ch) => {
                p {
                    span class=(if ch.ready { "state ok" } else { "state FAIL" }) { @if ch.ready { "ready" } @else { "not ready" } }
                    " " span.muted { "login old " (ops::Login::text(ch.source_login)) ", new " (ops::Login::text(ch.dest_login))
                        @if let Some(t) = ch.checked_at { " · checked " (ops::stamp(t)) } }
                }
                @for p in &ch.problems { p { span.err { (p) } } }
                @for w in &ch.warnings { p { span.muted { (w) } } }
            }
            None => { p.muted { "Not checked yet: use Verify credentials on the batch page." } }
        }
        @if !c.read_only {
            h2 { "Fix a password" }
            form #password-form method="post" action=(form("password")) autocomplete="off" {
                input type="hidden" name="csrf" value=(c.csrf);
                fieldset {
                    label for="side" { "Server" }
                    select #side name="side" {
                        option value="dest" { "New server (" (m.dest) ")" }
                        option value="source" { "Old server (" (m.source) ")" }
                    }
                    label for="password" { "New password" }
                    input #password type="password" name="password" autocomplete="new-password" required;
                }
                p.muted { "Stored sealed and used from the next pass on; a failed mailbox is retried." }
                p { button #set-password type="submit" { "Save password" } }
            }
            h2 { "Actions" }
            p {
                form.inline method="post" action=(form("action")) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    input type="hidden" name="action" value="retry";
                    button #action-retry type="submit" disabled[m.status != "failed"] { "Retry this mailbox" }
                }
                " "
                form.inline method="post" action=(form("action")) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    input type="hidden" name="action" value="remove";
                    button #action-remove.secondary type="submit" disabled[m.jobs_left > 0] { "Remove from the fleet" }
                }
            }
            p.muted { "Removing changes nothing on either server." }
        }
        h2 { "Folders" }
        table #folders {
            thead { tr { th { "Old server" } th { "New server" } th { "Copied" } th { "Refused" } } }
            tbody {
                @for f in &d.folders {
                    tr {
                        td { (f.source_folder) } td { (f.dest_folder) }
                        td { (f.messages_copied) br; span.muted { (size(f.bytes_copied)) } }
                        td { @if f.refused.is_empty() { "-" } @else { (f.refused.len()) @for r in &f.refused { br; span.err { (r) } } } }
                    }
                }
            }
        }
        @if d.folders.is_empty() { p.muted { "No folder copied yet." } }
    }
}

/// The batch's switch date, or else its domain's (saying so: the batch page must not
/// show "switch -" for a domain whose switch is planned).
fn switch_text(
    batch: Option<i64>,
    domain: Option<&mailshift_core::cutover::DomainRecord>,
) -> String {
    if let Some(t) = batch {
        return ops::stamp(t);
    }
    domain
        .and_then(|d| Some((d, domain_switch(d)?)))
        .map(|(d, t)| {
            format!(
                "{} (from domain {}'s cutover)",
                ops::stamp(t),
                d.config.name
            )
        })
        .unwrap_or_else(|| "-".into())
}

/// The domain's recorded switch date (RFC 3339 in its configuration), in unix seconds.
fn domain_switch(d: &mailshift_core::cutover::DomainRecord) -> Option<i64> {
    d.config
        .switch_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp())
}

/// The domain's plan as `mailshift plan` stored it; else, or when the switch date was
/// moved since (a batch's schedule records it on the domain, not in the plan), one
/// derived from the recorded switch date with the default options (true): the timeline
/// never shows dates around a switch that is no longer planned.
fn domain_plan(
    d: Option<&mailshift_core::cutover::DomainRecord>,
) -> (Option<mailshift_core::cutover::CutoverPlan>, bool) {
    use mailshift_core::cutover;
    let Some(d) = d else { return (None, false) };
    let switch = d
        .config
        .switch_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let stored: Option<cutover::CutoverPlan> =
        d.plan.as_deref().and_then(|p| serde_json::from_str(p).ok());
    if let Some(p) = stored
        && switch.is_none_or(|s| s == p.switch_at)
    {
        return (Some(p), false);
    }
    let Some(switch) = switch else {
        return (None, false);
    };
    let mut o = cutover::PlanOptions::new(switch);
    // Bounded: a nonsense period must not overflow the plan's date arithmetic.
    let secs = d.config.dual_reception_secs.min(365 * 86_400);
    o.dual_reception = chrono::Duration::seconds(i64::try_from(secs).unwrap_or(0));
    (Some(cutover::plan(&d.config.name, &o)), true)
}

/// The form that sets what "Check DNS now" checks: the new MX, the SPF include and the
/// DKIM selectors, stored on the domain's cutover.
fn dns_form(batch: &str, d: &mailshift_core::cutover::DomainConfig, c: &Caller) -> Markup {
    html! {
        details #dns-params open[d.new_mx.is_none()] {
            summary { "DNS check parameters" }
            form #dns-form method="post" action=(format!("/batches/{}/dns", urlencode(batch))) {
                input type="hidden" name="csrf" value=(c.csrf);
                fieldset {
                    label { "New MX host" input #new-mx name="new_mx" value=(d.new_mx.clone().unwrap_or_default()) placeholder="mx.new.example" required; }
                    label { "SPF include (optional)" input #spf-include name="spf_include" value=(d.spf_include.clone().unwrap_or_default()) placeholder="spf.new.example"; }
                    label { "DKIM selectors (optional)" input #dkim-selectors name="dkim_selectors" value=(d.dkim_selectors.join(", ")) placeholder="selector1, selector2"; }
                }
                p.muted { "Stored on the domain's cutover (as " code { "mailshift plan --new-mx" } " records it). Empty optional fields are cleared." }
                p { button #save-dns type="submit" { "Save DNS parameters" } }
            }
        }
    }
}

fn level(l: &mailshift_core::cutover::Level) -> String {
    serde_json::to_value(l)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mailshift_core::cutover::{DomainConfig, DomainRecord, Phase, PlanOptions, plan};

    fn domain(switch_at: Option<&str>, planned: Option<&str>) -> DomainRecord {
        DomainRecord {
            config: DomainConfig {
                name: "example.com".into(),
                switch_at: switch_at.map(str::to_string),
                dual_reception_secs: 72 * 3600,
                ..Default::default()
            },
            phase: Phase::Syncing,
            phase_since: 0,
            switched_at: None,
            final_pass_at: None,
            plan: planned.map(|s| {
                let at = chrono::DateTime::parse_from_rfc3339(s).unwrap();
                serde_json::to_string(&plan("example.com", &PlanOptions::new(at))).unwrap()
            }),
            report: None,
        }
    }

    #[test]
    fn the_schedule_line_falls_back_to_the_domains_switch_and_says_so() {
        let d = domain(Some("2026-12-05T06:00:00+01:00"), None);
        assert_eq!(
            switch_text(None, Some(&d)),
            "2026-12-05 05:00 UTC (from domain example.com's cutover)"
        );
        assert_eq!(switch_text(Some(0), Some(&d)), "1970-01-01 00:00 UTC");
        assert_eq!(switch_text(None, Some(&domain(None, None))), "-");
        assert_eq!(switch_text(None, None), "-");
    }

    #[test]
    fn the_timeline_follows_the_recorded_switch() {
        let planned = "2026-12-05T06:00:00+01:00";
        let (p, derived) = domain_plan(Some(&domain(Some(planned), Some(planned))));
        assert!(!derived);
        assert_eq!(p.unwrap().switch_at.to_rfc3339(), planned);
        // Moved by a batch's schedule since: derived from the new date.
        let moved = "2026-12-12T05:00:00+00:00";
        let (p, derived) = domain_plan(Some(&domain(Some(moved), Some(planned))));
        assert!(derived);
        assert_eq!(p.unwrap().switch_at.to_rfc3339(), moved);
        assert_eq!(domain_plan(Some(&domain(None, None))).0, None);
    }
}
