//! The dashboard's handlers: each reads its form ([`super::forms`]), calls the batch
//! service and renders a view ([`super::views`]). Server-rendered HTML, no script;
//! pages of running batches refresh themselves.

use super::App;
use super::api::{ApiError, csv_response, known};
use super::auth::{COOKIE, Caller, check_form};
use super::forms::{
    CsrfForm, DnsForm, LoginForm, PageQuery, PasswordForm, ScheduleForm, schedule_change,
};
use super::timeline::{date_text, phase_text, relative};
use super::views::{
    PAGE, bar, batch_body, login_page, mailbox_body, message_page, page, urlencode,
};
use axum::Form;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use mailshift_engine::batches::{self as ops, Action, ImportOptions};
use maud::html;

pub(crate) async fn login_form() -> Html<String> {
    login_page(None)
}

pub(crate) async fn login(State(app): State<App>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim();
    match app.store.check_token(token).await {
        Ok(Some(_)) => {
            let secure = if app.secure_cookie { "; Secure" } else { "" };
            let session = app.sessions.issue(token);
            let max_age = app.sessions.ttl.as_secs();
            (
                StatusCode::SEE_OTHER,
                [
                    (
                        header::SET_COOKIE,
                        format!(
                            "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
                        ),
                    ),
                    (header::LOCATION, "/".to_string()),
                ],
            )
                .into_response()
        }
        Ok(None) => (
            StatusCode::UNAUTHORIZED,
            login_page(Some(
                "this token is not valid (revoked, expired, or mistyped)",
            )),
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

pub(crate) async fn home(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
) -> Result<Html<String>, ApiError> {
    let mut views = Vec::new();
    for n in ops::batch_names(&*app.store).await? {
        views.push(ops::batch_view(&*app.store, &n, ops::Page::NONE).await?);
    }
    let domains = app.store.domains().await?;
    let checks = app.dns.lock().map(|m| m.clone()).unwrap_or_default();
    let now = ops::now();
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
                        @let (phase, class) = phase_text(d.phase, checks.get(&d.config.name).map(|(_, r)| r));
                        @let switch = d.config.switch_at.as_deref().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                        tr { td { (d.config.name) } td { span class=(format!("state {class}")) { (phase) } } td { (ops::stamp(d.phase_since)) }
                             td { @match switch { Some(t) => { (date_text(t.timestamp(), now)) " " span.muted { "(" (relative(t.timestamp(), now)) ")" } }, None => "-" } } }
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
                    label { "Domain (optional)" input #import-domain name="domain"; }
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
        "delete" => match ops::delete_batch(&*app.store, &name).await {
            Ok(_) => Redirect::to("/").into_response(),
            Err(e) => (
                StatusCode::CONFLICT,
                message_page("Not possible", &e.message),
            )
                .into_response(),
        },
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

/// The batch page's "DNS check parameters" form: stored on the batch's domain.
pub(crate) async fn dns_params(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(f): Form<DnsForm>,
) -> Response {
    if let Err(r) = check_form(&c, &headers, &f.csrf) {
        return r.into_response();
    }
    if let Err(e) = known(&app, &name).await {
        return e.into_response();
    }
    let params = match f.parse() {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                message_page("DNS parameters not saved", &e),
            )
                .into_response();
        }
    };
    let domain = match ops::batch_view(&*app.store, &name, ops::Page::NONE).await {
        Ok(v) => v.domain.map(|d| d.config.name),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(domain) = domain else {
        return (
            StatusCode::CONFLICT,
            message_page(
                "DNS parameters not saved",
                &format!("batch {name} has no domain cutover to record them on"),
            ),
        )
            .into_response();
    };
    match ops::set_dns_params(&*app.store, &domain, &params).await {
        Ok(()) => {
            // The latest check was made with the old parameters: it no longer says
            // whether the domain is ready.
            if let Ok(mut m) = app.dns.lock() {
                m.remove(&domain);
            }
            Redirect::to(&format!("/batches/{}", urlencode(&name))).into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            message_page("DNS parameters not saved", &format!("{e:#}")),
        )
            .into_response(),
    }
}

/// A mailbox's page (by id).
pub(crate) async fn mailbox(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Path(id): Path<uuid::Uuid>,
) -> Result<Html<String>, ApiError> {
    let d = ops::mailbox_detail(&*app.store, &id.to_string())
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.message))?;
    // Refreshes itself while something is due to change: a pass copying or planned.
    let busy = d.mailbox.jobs_left > 0 || d.mailbox.status == "pending";
    let title = format!("Mailbox {}", d.mailbox.address);
    Ok(page(
        &title,
        Some(&c),
        busy.then_some(3),
        mailbox_body(&d, &c),
    ))
}

/// The mailbox page's "fix password" form.
pub(crate) async fn mailbox_password(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Path(id): Path<uuid::Uuid>,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Err(r) = check_form(&c, &headers, &f.csrf) {
        return r.into_response();
    }
    let (side, password) = match f.parse() {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                message_page("Password not saved", &e),
            )
                .into_response();
        }
    };
    match ops::set_password(&*app.store, &id.to_string(), side, &password).await {
        Ok(_) => Redirect::to(&format!("/mailboxes/{id}")).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            message_page("Password not saved", &e.message),
        )
            .into_response(),
    }
}

/// The mailbox page's actions: retry, remove.
pub(crate) async fn mailbox_action(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Path(id): Path<uuid::Uuid>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = check_form(&c, &headers, &f.csrf) {
        return r.into_response();
    }
    let id_text = id.to_string();
    let done = match f.action.as_str() {
        "retry" => ops::retry_mailbox(&*app.store, &id_text)
            .await
            .map(|_| format!("/mailboxes/{id}")),
        "remove" => ops::remove_mailbox(&*app.store, &id_text, false)
            .await
            .map(|m| match m.batch {
                Some(b) => format!("/batches/{}", urlencode(&b)),
                None => "/".to_string(),
            }),
        other => {
            return (
                StatusCode::BAD_REQUEST,
                message_page("Unknown action", other),
            )
                .into_response();
        }
    };
    match done {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            message_page("Not possible", &e.message),
        )
            .into_response(),
    }
}
