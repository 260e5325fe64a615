//! The dashboard: server-rendered HTML (maud escapes every value), one stylesheet served
//! by the binary itself, no script and nothing fetched from elsewhere, so it works
//! offline and behind strict proxies. Pages of running batches refresh themselves.

use super::App;
use super::api::{ApiError, csv_response, known};
use super::auth::{COOKIE, Caller, check_form};
use axum::Form;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use mailshift_engine::batches::{self as ops, Action, BatchView, ImportOptions};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

const STYLE: &str = r#"
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:.7rem 1.5rem;display:flex;justify-content:space-between;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:1.2rem 1.5rem;max-width:1300px}
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e4e7ec;vertical-align:top}
th{background:#eef0f4;font-weight:600;font-size:.85rem;text-transform:uppercase;letter-spacing:.03em}
.bar{background:#e4e7ec;border-radius:4px;height:.7rem;min-width:8rem;overflow:hidden}
.bar>span{display:block;height:100%;background:#2f7d4f}
.state{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.8rem;background:#e4e7ec}
.state.running,.state.synced,.state.ok,.state.done{background:#d5f0df;color:#1c5a35}
.state.failed,.state.error,.state.FAIL{background:#fbdcdc;color:#8a1f1f}
.state.paused,.state.warning,.state.scheduled,.state.syncing{background:#fff0c7;color:#6b4e00}
.err{color:#8a1f1f;font-size:.88rem}.muted{color:#6b7280;font-size:.88rem}
form.inline{display:inline}button{font:inherit;padding:.35rem .8rem;border-radius:4px;border:1px solid #1d2330;background:#1d2330;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1d2330}button:disabled{opacity:.4;cursor:not-allowed}
fieldset{background:#fff;border:1px solid #e4e7ec;padding:1rem;display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:.6rem}
label{display:flex;flex-direction:column;font-size:.85rem;gap:.2rem}input{font:inherit;padding:.3rem}
.totals{display:flex;gap:1.5rem;flex-wrap:wrap;margin:.6rem 0}.totals div{background:#fff;padding:.6rem 1rem;box-shadow:0 1px 2px #0001}
.totals b{display:block;font-size:1.3rem}.flash{background:#eef6ff;border:1px solid #b6d4fe;padding:.6rem 1rem;margin-bottom:1rem}
"#;

pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

fn page(title: &str, caller: Option<&Caller>, refresh: Option<u32>, body: Markup) -> Html<String> {
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

pub(crate) async fn login_form() -> Html<String> {
    login_page(None)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

pub(crate) async fn login(State(app): State<App>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim();
    match app.store.check_token(token).await {
        Ok(Some(_)) => {
            let secure = if app.secure_cookie { "; Secure" } else { "" };
            (
                StatusCode::SEE_OTHER,
                [
                    (
                        header::SET_COOKIE,
                        format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}"),
                    ),
                    (header::LOCATION, "/".to_string()),
                ],
            )
                .into_response()
        }
        Ok(None) => (
            StatusCode::UNAUTHORIZED,
            login_page(Some("this token is not valid (revoked, or mistyped)")),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a token");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                message_page("Unavailable", "the fleet database is unreachable"),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
}

pub(crate) async fn logout(
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = check_form(&c, &headers, &f.csrf) {
        return r.into_response();
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            ),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

fn bar(percent: Option<f64>) -> Markup {
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

pub(crate) async fn home(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
) -> Result<Html<String>, ApiError> {
    let mut views = Vec::new();
    for n in ops::batch_names(&*app.store).await? {
        views.push(ops::batch_view(&*app.store, &n, ops::Page::NONE).await?);
    }
    let domains = app.store.domains().await?;
    let body = html! {
        h1 { "Batches" }
        @if views.is_empty() { p.muted { "No batch yet: import a CSV below." } }
        @else {
            table #batches {
                thead { tr { th { "Batch" } th { "State" } th { "Mailboxes" } th { "Synced" } th { "Failed" } th { "Messages" } th { "Progress" } } }
                tbody {
                    @for v in &views {
                        tr data-batch=(v.name) {
                            td { a href=(format!("/batches/{}", urlencode(&v.name))) { (v.name) } }
                            td { span class=(format!("state {}", v.state)) { (v.state) } }
                            td { (v.totals.mailboxes) }
                            td { (v.totals.synced) }
                            td { @if v.totals.failed > 0 { span.err { (v.totals.failed) } } @else { "0" } }
                            td { (v.totals.messages_copied) @if let Some(t) = v.totals.messages_total { " of " (t) } }
                            td { (bar(v.totals.percent)) @if let Some(p) = v.totals.percent { span.muted { (p) "%" } } }
                        }
                    }
                }
            }
        }
        @if !domains.is_empty() {
            h2 { "Domains" }
            table #domains {
                thead { tr { th { "Domain" } th { "Cutover phase" } th { "Since" } th { "Switch" } } }
                tbody {
                    @for d in &domains {
                        tr { td { (d.config.name) } td { span.state { (d.phase.as_str()) } } td { (ops::stamp(d.phase_since)) } td { (d.config.switch_at.clone().unwrap_or_else(|| "-".into())) } }
                    }
                }
            }
        }
        h2 { "Import a CSV" }
        @if c.read_only { p.muted { "Read-only token: importing is not allowed." } }
        @else {
            form #import-form method="post" action="/import" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(c.csrf);
                fieldset {
                    label { "Batch name" input #batch-name name="name" required; }
                    label { "CSV file" input #csv-file type="file" name="file" accept=".csv,.txt,text/csv" required; }
                    label { "Domain (optional)" input name="domain"; }
                    label { "Old server (when the file has none)" input name="source_host"; }
                    label { "New server (when the file has none)" input name="dest_host"; }
                    label { "Old server port" input name="source_port" inputmode="numeric"; }
                    label { "New server port" input name="dest_port" inputmode="numeric"; }
                    label { span { input type="checkbox" name="starttls" value="1"; " STARTTLS (port 143) by default" } }
                    label { span { input #allow-plaintext type="checkbox" name="allow_plaintext" value="1"; " allow plain-text logins (trusted networks only)" } }
                }
                p { button #import type="submit" { "Import" } }
            }
            p.muted { "Columns: source_host, source_user, source_password, dest_host, dest_user, dest_password, and optionally source_port, dest_port, tls, folder_map, exclude. imapsync (host1;user1;password1;host2;user2;password2) and Exchange (EmailAddress,UserName,Password) files are accepted too." }
        }
    };
    Ok(page("Batches", Some(&c), None, body))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) async fn import(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut fields: std::collections::HashMap<String, String> = Default::default();
    let mut file: Option<Vec<u8>> = None;
    loop {
        match form.next_field().await {
            Ok(Some(f)) => {
                let name = f.name().unwrap_or_default().to_string();
                match f.bytes().await {
                    Ok(b) if name == "file" => file = Some(b.to_vec()),
                    Ok(b) => {
                        fields.insert(name, String::from_utf8_lossy(&b).trim().to_string());
                    }
                    Err(e) => {
                        return (
                            StatusCode::BAD_REQUEST,
                            message_page(
                                "Import failed",
                                &format!("the upload was cut short: {e}"),
                            ),
                        )
                            .into_response();
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    message_page(
                        "Import failed",
                        &format!("the upload is not a valid form: {e}"),
                    ),
                )
                    .into_response();
            }
        }
    }
    if let Err(r) = check_form(
        &c,
        &headers,
        fields.get("csrf").map(String::as_str).unwrap_or(""),
    ) {
        return r.into_response();
    }
    let name = fields.get("name").cloned().unwrap_or_default();
    let Some(bytes) = file else {
        return (
            StatusCode::BAD_REQUEST,
            message_page("Import failed", "choose a CSV file to import"),
        )
            .into_response();
    };
    let text = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
    let port = |k: &str| -> Result<Option<u16>, String> {
        text(k)
            .map(|v| {
                v.parse::<u16>()
                    .map_err(|_| format!("{k} '{v}' is not a port number (1-65535)"))
            })
            .transpose()
    };
    let (source_port, dest_port) = match (port("source_port"), port("dest_port")) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => {
            return (StatusCode::BAD_REQUEST, message_page("Import failed", &e)).into_response();
        }
    };
    let o = ImportOptions {
        domain: text("domain"),
        source_host: text("source_host"),
        dest_host: text("dest_host"),
        source_port,
        dest_port,
        starttls: fields.contains_key("starttls"),
        allow_plaintext: fields.contains_key("allow_plaintext"),
    };
    match ops::import_csv(&*app.store, &name, &bytes, &o, &|_, _| {}).await {
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            message_page("Import failed", &format!("{e:#}")),
        )
            .into_response(),
        Ok(out) => {
            let body = html! {
                h1 { "Import into " (out.batch) }
                p #import-result { "Imported " (out.imported.len()) " mailbox(es)" @if !out.rejected.is_empty() { "; " (out.rejected.len()) " row(s) rejected" } "." }
                @if !out.rejected.is_empty() {
                    table #rejected { thead { tr { th { "Line" } th { "Why it was rejected" } } }
                        tbody { @for r in &out.rejected { tr { td { (r.line) } td { (r.reason) } } } } }
                    p.muted { "Fix these rows and import the file again: rows already imported are updated, not duplicated." }
                }
                p { a #to-batch href=(format!("/batches/{}", urlencode(&out.batch))) { "Open batch " (out.batch) } }
            };
            page("Import", Some(&c), None, body).into_response()
        }
    }
}

/// Mailboxes per page of the batch page.
const PAGE: usize = 500;

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    offset: usize,
}

pub(crate) async fn batch(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, ApiError> {
    known(&app, &name).await?;
    let shown = ops::Page {
        offset: q.offset,
        limit: PAGE,
    };
    let v = ops::batch_view(&*app.store, &name, shown).await?;
    let verifying = app
        .verifying
        .lock()
        .map(|s| s.contains(&name))
        .unwrap_or(false);
    let busy = verifying
        || (matches!(v.state.as_str(), "running" | "completing" | "scheduled")
            && v.totals.syncing + v.totals.pending > 0);
    let dns = app.dns.lock().ok().and_then(|m| {
        v.domain
            .as_ref()
            .and_then(|d| m.get(&d.config.name).cloned())
    });
    let body = batch_body(&v, &c, verifying, dns.as_ref());
    Ok(page(
        &format!("Batch {name}"),
        Some(&c),
        busy.then_some(3),
        body,
    ))
}

fn batch_body(
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
    let plan: Option<mailshift_core::cutover::CutoverPlan> = v
        .domain
        .as_ref()
        .and_then(|d| d.plan.as_deref())
        .and_then(|p| serde_json::from_str(p).ok());
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
            a #report-csv href=(format!("/batches/{}/report.csv", urlencode(&v.name))) { "Report (CSV)" } " · "
            a href=(format!("/batches/{}/report.json", urlencode(&v.name))) { "Report (JSON)" }
        }
        p.muted {
            "Start " (when(b.start_at)) " · every " (b.interval_secs.map(duration).unwrap_or_else(|| "scheduler's interval".into()))
            " · switch " (when(b.switch_at)) " · complete " (when(b.complete_at))
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
            h2 { "Domain " (d.config.name) }
            p { "Cutover phase " span.state { (d.phase.as_str()) } " since " (ops::stamp(d.phase_since))
                @if let Some(s) = d.switched_at { " · MX switch seen " (ops::stamp(s)) } }
            p {
                (action("dns-check", "Check DNS now", d.config.new_mx.is_some()))
                @if d.config.new_mx.is_none() { span.muted { "record the new MX with mailshift plan --database … --new-mx HOST to check DNS" } }
            }
            @if let Some((at, r)) = dns {
                p { "DNS readiness " span class=(format!("state {}", level(&r.level))) { (level(&r.level)) } span.muted { " checked " (ops::stamp(*at)) } }
                table #dns { thead { tr { th { "Check" } th { "Level" } th { "Finding" } } }
                    tbody { @for f in &r.findings { tr { td { (f.check) } td { span class=(format!("state {}", level(&f.level))) { (level(&f.level)) } } td { (f.message) @if let Some(fix) = &f.fix { br; span.muted { (fix) } } } } } } }
            }
            @if let Some(p) = &plan {
                h2 { "Timeline" }
                table #timeline { tbody { @for s in &p.steps { tr { td { (s.day) } td { (s.at.to_rfc3339()) } td { (s.what) } } } } }
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
                        td { (m.source) br; span.muted { "→ " (m.dest) } }
                        td { span class=(format!("state {}", m.status)) { (m.status) } @if m.jobs_left > 0 { br; span.muted { (m.jobs_left) " folder job(s) left" } } }
                        td { (bar(m.progress.percent)) @if let Some(p) = m.progress.percent { span.muted { (p) "%" } } }
                        td { (m.progress.messages_copied) @if let Some(t) = m.progress.messages_total { " / " (t) } br;
                             span.muted { (size(m.progress.bytes_copied)) @if let Some(t) = m.progress.bytes_total { " / " (size(t)) } } }
                        td { @if let Some(r) = m.progress.rate { (format!("{r:.1} msg/s")) } @else { "-" }
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

fn level(l: &mailshift_core::cutover::Level) -> String {
    serde_json::to_value(l)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(crate) async fn action(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = check_form(&c, &headers, &f.csrf) {
        return r.into_response();
    }
    if let Err(e) = known(&app, &name).await {
        return e.into_response();
    }
    let back = Redirect::to(&format!("/batches/{}", urlencode(&name))).into_response();
    match f.action.as_str() {
        "verify" => {
            let fresh = app
                .verifying
                .lock()
                .map(|mut s| s.insert(name.clone()))
                .unwrap_or(false);
            if fresh {
                let app = app.clone();
                tokio::spawn(async move {
                    if let Err(e) = ops::verify_batch(&*app.store, &*app.connectors(), &name).await
                    {
                        tracing::warn!(batch = %name, error = %e, "batch verify failed");
                    }
                    if let Ok(mut s) = app.verifying.lock() {
                        s.remove(&name);
                    }
                });
            }
            back
        }
        "dns-check" => {
            let domain = ops::batch_view(&*app.store, &name, ops::Page::NONE)
                .await
                .ok()
                .and_then(|v| v.domain);
            if let Some(d) = domain {
                match crate::dns::check_domain(&d.config).await {
                    Ok(r) => {
                        if let Ok(mut m) = app.dns.lock() {
                            m.insert(d.config.name.clone(), (ops::now(), r));
                        }
                    }
                    Err(e) => {
                        return (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            message_page("DNS check", &format!("{e:#}")),
                        )
                            .into_response();
                    }
                }
            }
            back
        }
        other => match Action::parse(other) {
            None => (
                StatusCode::BAD_REQUEST,
                message_page("Unknown action", other),
            )
                .into_response(),
            Some(a) => match ops::act(&*app.store, &name, a, None).await {
                Ok(_) => back,
                Err(e) => (
                    StatusCode::CONFLICT,
                    message_page("Not possible", &format!("{e:#}")),
                )
                    .into_response(),
            },
        },
    }
}

pub(crate) async fn report_csv(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    known(&app, &name).await?;
    let r = ops::report(&*app.store, &*app.connectors(), &name, false).await?;
    Ok(csv_response(&name, ops::report_csv(&r)?))
}

pub(crate) async fn report_json(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    known(&app, &name).await?;
    let r = ops::report(&*app.store, &*app.connectors(), &name, false).await?;
    Ok(axum::Json(r).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ScheduleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    start_at: String,
    #[serde(default)]
    interval: String,
    #[serde(default)]
    switch_at: String,
    #[serde(default)]
    complete_at: String,
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    per_host: String,
}

fn schedule_change(f: &ScheduleForm) -> Result<ops::ScheduleChange, String> {
    let time = |label: &str, v: &str| -> Result<Option<i64>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        crate::dns::parse_time(v)
            .map(|t| Some(t.timestamp()))
            .map_err(|e| format!("{label}: {e}"))
    };
    let count = |label: &str, v: &str| -> Result<Option<u32>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<u32>()
            .map(Some)
            .map_err(|_| format!("{label}: '{v}' is not a whole number"))
    };
    let interval = match f.interval.trim() {
        "" => None,
        v => Some(mailshift_core::batch::parse_interval(v)?),
    };
    Ok(ops::ScheduleChange {
        start_at: time("start at", &f.start_at)?,
        interval_secs: interval,
        switch_at: time("MX switch at", &f.switch_at)?,
        complete_at: time("complete at", &f.complete_at)?,
        concurrency: count("mailboxes at once", &f.concurrency)?,
        host_concurrency: count("per old server", &f.per_host)?,
        domain: None,
    })
}

pub(crate) async fn schedule(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ScheduleForm>,
) -> Response {
    if let Err(r) = check_form(&c, &headers, &f.csrf) {
        return r.into_response();
    }
    if let Err(e) = known(&app, &name).await {
        return e.into_response();
    }
    let change = match schedule_change(&f) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                message_page("Schedule not saved", &e),
            )
                .into_response();
        }
    };
    match ops::schedule(&*app.store, &name, &change).await {
        Ok(_) => Redirect::to(&format!("/batches/{}", urlencode(&name))).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            message_page("Schedule not saved", &format!("{e:#}")),
        )
            .into_response(),
    }
}
