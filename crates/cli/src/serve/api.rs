//! The JSON API under `/api/v1` (see `docs/openapi.yaml`), plus `/health` and `/metrics`.

use super::App;
use super::auth::Caller;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailshift_engine::batches::{self as ops, Action, ImportOptions, ScheduleChange};
use serde::Deserialize;

/// An API error: a status and a message a user can act on.
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}"))
    }
}

impl From<mailshift_core::Error> for ApiError {
    fn from(e: mailshift_core::Error) -> Self {
        // A request the service refuses (a bad schedule, an unknown action for this
        // state) is the caller's to fix; anything else is ours.
        let status = if e.kind == mailshift_core::ErrorKind::Usage {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(status, e.message)
    }
}

impl From<csv::Error> for ApiError {
    fn from(e: csv::Error) -> Self {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the report as CSV: {e}"),
        )
    }
}

type ApiResult = Result<Response, ApiError>;

/// 404 unless the batch exists (a row, or mailboxes naming it).
pub(crate) async fn known(app: &App, name: &str) -> Result<(), ApiError> {
    if app.store.batch(name).await?.is_some() || !app.store.mailboxes(Some(name)).await?.is_empty()
    {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no batch named '{name}' (import one first)"),
        ))
    }
}

pub(crate) async fn health(State(app): State<App>) -> Response {
    match app.store.batches().await {
        Ok(_) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "error": e.message})),
        )
            .into_response(),
    }
}

pub(crate) async fn metrics(State(app): State<App>) -> Response {
    match &app.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process",
        )
            .into_response(),
    }
}

pub(crate) async fn me(Extension(c): Extension<Caller>) -> Response {
    Json(serde_json::json!({"token": c.name, "read_only": c.read_only})).into_response()
}

pub(crate) async fn list(State(app): State<App>) -> ApiResult {
    let mut out = Vec::new();
    for n in ops::batch_names(&*app.store).await? {
        let v = ops::batch_view(&*app.store, &n, ops::Page::NONE).await?;
        out.push(serde_json::json!({
            "name": v.name,
            "state": v.state,
            "domain": v.batch.domain,
            "totals": v.totals,
        }));
    }
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ImportQuery {
    name: String,
    domain: Option<String>,
    source_host: Option<String>,
    dest_host: Option<String>,
    source_port: Option<u16>,
    dest_port: Option<u16>,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    allow_plaintext: bool,
}

pub(crate) async fn import(
    State(app): State<App>,
    Query(q): Query<ImportQuery>,
    body: Bytes,
) -> ApiResult {
    let o = ImportOptions {
        domain: q.domain,
        source_host: q.source_host,
        dest_host: q.dest_host,
        source_port: q.source_port,
        dest_port: q.dest_port,
        starttls: q.starttls,
        allow_plaintext: q.allow_plaintext,
    };
    let out = ops::import_csv(&*app.store, &q.name, &body, &o, &|_, _| {}).await?;
    let status = if out.imported.is_empty() && !out.rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

/// Mailboxes listed per page unless `limit` says otherwise (at most `MAX_PAGE`).
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

pub(crate) async fn show(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    known(&app, &name).await?;
    let page = ops::Page {
        offset: q.offset,
        limit: q.limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE),
    };
    Ok(Json(ops::batch_view(&*app.store, &name, page).await?).into_response())
}

pub(crate) async fn verify(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    known(&app, &name).await?;
    let rows = ops::verify_batch(&*app.store, &*app.connectors(), &name).await?;
    let ready = rows.iter().filter(|r| r.ready).count();
    Ok(Json(serde_json::json!({
        "batch": name,
        "ready": ready,
        "mailboxes": rows,
    }))
    .into_response())
}

pub(crate) async fn schedule(
    State(app): State<App>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    // Any content type: a JSON body is what is documented, and curl users forget the header.
    let change: ScheduleChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))?;
    known(&app, &name).await?;
    let b = ops::schedule(&*app.store, &name, &change).await?;
    Ok(Json(b).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct ActBody {
    /// Start then instead of now (`start` and `resume`): RFC 3339 or unix seconds.
    #[serde(default, with = "mailshift_core::time::unix_opt")]
    at: Option<i64>,
}

pub(crate) async fn act(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let Some(action) = Action::parse(&action) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no action '{action}': use start, pause, resume, retry-failed, verify or schedule"
            ),
        ));
    };
    known(&app, &name).await?;
    let at = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<ActBody>(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))?
            .at
    };
    let (b, said) = ops::act(&*app.store, &name, action, at)
        .await
        .map_err(|e| ApiError(StatusCode::CONFLICT, format!("{e:#}")))?;
    Ok(Json(serde_json::json!({
        "batch": b,
        "state": b.display_state(ops::now()),
        "message": said,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct ReportQuery {
    format: Option<String>,
    #[serde(default)]
    deep: bool,
}

pub(crate) async fn report(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<ReportQuery>,
) -> ApiResult {
    known(&app, &name).await?;
    let r = ops::report(&*app.store, &*app.connectors(), &name, q.deep).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(r).into_response()),
        "csv" => Ok(csv_response(&name, ops::report_csv(&r)?)),
        other => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("format '{other}' is not csv or json"),
        )),
    }
}

pub(crate) fn csv_response(name: &str, body: String) -> Response {
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"mailshift-{file}-report.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn domains(State(app): State<App>) -> ApiResult {
    let cached = app.dns.lock().map(|m| m.clone()).unwrap_or_default();
    let out: Vec<serde_json::Value> = app
        .store
        .domains()
        .await?
        .into_iter()
        .map(|d| {
            let dns = cached.get(&d.config.name).map(|(at, r)| {
                serde_json::json!({"checked_at": at, "level": r.level, "findings": r.findings})
            });
            serde_json::json!({"domain": d, "dns": dns})
        })
        .collect();
    Ok(Json(out).into_response())
}

/// `DELETE /api/v1/batches/{name}`: the batch and its mailboxes leave the fleet.
pub(crate) async fn delete_batch(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    known(&app, &name).await?;
    let removed = ops::delete_batch(&*app.store, &name)
        .await
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.message))?;
    Ok(Json(serde_json::json!({"batch": name, "mailboxes_removed": removed})).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

/// `DELETE /api/v1/mailboxes/{mailbox}`: the mailbox leaves the fleet.
pub(crate) async fn remove_mailbox(
    State(app): State<App>,
    Path(mailbox): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult {
    let m = ops::find_mailbox(&*app.store, &mailbox)
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.message))?;
    let m = ops::remove_mailbox(&*app.store, &m.id.to_string(), q.force)
        .await
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.message))?;
    Ok(
        Json(serde_json::json!({"removed": {"id": m.id, "source": m.source, "dest": m.dest}}))
            .into_response(),
    )
}

/// (No Debug: it holds a password, wrapped as a secret as soon as it is read.)
#[derive(Deserialize)]
pub(crate) struct PasswordBody {
    side: mailshift_core::ports::Side,
    password: String,
}

/// `PUT /api/v1/mailboxes/{mailbox}/password`: replaces one side's password.
pub(crate) async fn set_password(
    State(app): State<App>,
    Path(mailbox): Path<String>,
    body: Bytes,
) -> ApiResult {
    // Never echo the body back: it holds a password.
    let b: PasswordBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"side\": \"source\"|\"dest\", \"password\": \"...\"}".into(),
        )
    })?;
    let m = ops::find_mailbox(&*app.store, &mailbox)
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.message))?;
    let password = secrecy::SecretString::from(b.password);
    let (m, said) = ops::set_password(&*app.store, &m.id.to_string(), b.side, &password).await?;
    Ok(Json(serde_json::json!({"mailbox": m.id, "side": b.side, "message": said})).into_response())
}
