//! `mailshift serve`: the HTTP JSON API (`/api/v1`, described by `docs/openapi.yaml`) and
//! the server-rendered dashboard for account managers, on the fleet's database.
//!
//! Security model: every route but `/health` needs an API token (`mailshift token
//! create`). The API takes it as `Authorization: Bearer`; the dashboard keeps it in an
//! HttpOnly, SameSite=Strict cookie after `/login`. Dashboard forms that change anything
//! also carry a CSRF token derived from the session's token (which another site cannot
//! read), and the API refuses cookie-authenticated writes. Read-only tokens may look but
//! not act. Tokens are stored hashed; nothing here logs one.
//!
//! By concern: routes and the request span here; [`api`] (JSON handlers), [`pages`]
//! (dashboard handlers), [`forms`] (what the dashboard's forms send), [`views`]
//! (markup), [`timeline`] (the cutover timeline and shown phase), [`assets`] (the
//! stylesheet), [`auth`] (tokens, cookie, CSRF).

mod api;
mod assets;
mod auth;
mod forms;
mod pages;
mod timeline;
mod views;

use crate::fleet::FleetDb;
use axum::Router;
use axum::routing::{delete, get, post, put};
use clap::Args;
use mailshift_engine::lifecycle::Shutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    db: FleetDb,
    /// Address to listen on (use a reverse proxy with TLS to expose it beyond localhost)
    #[arg(
        long,
        env = "MAILSHIFT_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    listen: SocketAddr,
    /// Seconds a connection or an IMAP command may take in verify and report
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
    /// Mark the session cookie Secure (set this when users reach the dashboard over HTTPS)
    #[arg(long)]
    secure_cookie: bool,
    #[command(flatten)]
    clients: crate::clients::ServeClientsArgs,
    /// How long a dashboard login lasts, e.g. 12h, 30m
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = crate::migrate::parse_duration)]
    session: std::time::Duration,
    /// Seconds a client may take to send a request's headers (for tests)
    #[arg(long, default_value_t = 10, value_name = "SECS", hide = true)]
    header_timeout: u64,
    /// Seconds a client may take to send a request's body (for tests)
    #[arg(long, default_value_t = 60, value_name = "SECS", hide = true)]
    body_timeout: u64,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    pub store: crate::fleet::Store,
    /// Dashboard sessions (sealed under the fleet's key).
    pub sessions: Arc<auth::Sessions>,
    /// The process's stop request (long checks end early at a stop).
    pub stop: Arc<Shutdown>,
    pub timeout: u64,
    pub secure_cookie: bool,
    pub metrics: Option<PrometheusHandle>,
    /// Latest DNS readiness per domain (unix time, report), from the dashboard's button.
    pub dns: Arc<Mutex<HashMap<String, (i64, mailshift_dns::check::Report)>>>,
    /// Batches whose `verify` runs in the background (started from the dashboard).
    pub verifying: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl App {
    /// Connectors to the mailboxes' servers, for checks and reports.
    pub fn connectors(&self) -> Arc<dyn mailshift_core::ports::Connectors> {
        crate::fleet::connectors(&self.store, self.timeout, Some(self.stop.clone()))
    }
}

pub fn router(app: App) -> Router {
    let protected = Router::new()
        .route("/", get(pages::home))
        .route("/import", post(pages::import))
        .route("/batches/{name}", get(pages::batch))
        .route("/batches/{name}/action", post(pages::action))
        .route("/batches/{name}/schedule", post(pages::schedule))
        .route("/batches/{name}/dns", post(pages::dns_params))
        .route("/batches/{name}/report.csv", get(pages::report_csv))
        .route("/batches/{name}/report.json", get(pages::report_json))
        .route("/mailboxes/{id}", get(pages::mailbox))
        .route("/mailboxes/{id}/password", post(pages::mailbox_password))
        .route("/mailboxes/{id}/action", post(pages::mailbox_action))
        .route("/logout", post(pages::logout))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/batches", get(api::list).post(api::import))
        .route(
            "/api/v1/batches/{name}",
            get(api::show).delete(api::delete_batch),
        )
        .route("/api/v1/mailboxes/{mailbox}", delete(api::remove_mailbox))
        .route(
            "/api/v1/mailboxes/{mailbox}/password",
            put(api::set_password),
        )
        .route("/api/v1/batches/{name}/verify", post(api::verify))
        .route("/api/v1/batches/{name}/schedule", post(api::schedule))
        .route("/api/v1/batches/{name}/report", get(api::report))
        .route("/api/v1/batches/{name}/{action}", post(api::act))
        .route("/api/v1/domains", get(api::domains))
        .route("/api/v1/me", get(api::me))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require,
        ));
    Router::new()
        .route("/health", get(api::health))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/static/style.css", get(assets::style))
        .merge(protected)
        .layer(axum::middleware::from_fn(observe))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(app)
}

/// One span, one log line and one counted request per HTTP request, by route (the
/// pattern, never the path with its batch name) and status. Query strings and headers,
/// where tokens travel, are never logged.
async fn observe(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    // The span is the parent of what the request does (IMAP sessions of a verify, say).
    let span = tracing::info_span!(
        "http.request",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = res.status().as_u16();
    span.record("http.response.status_code", status);
    let ms = started.elapsed().as_millis() as u64;
    metrics::counter!(
        "mailshift_http_requests_total",
        "route" => route.clone(),
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
    if route == "/health" {
        tracing::debug!(%method, %route, status, ms, "http request");
    } else {
        tracing::info!(%method, %route, status, ms, "http request");
    }
    res
}

pub async fn serve(a: ServeArgs, shutdown: Arc<Shutdown>) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let Some(store) = shutdown.unless_stopped(a.db.open(true)).await else {
        return Ok(ExitCode::SUCCESS);
    };
    let store = store?;
    let sessions = Arc::new(auth::Sessions {
        key: a.db.key()?.ok_or(mailshift_store::SecretError::Missing)?,
        ttl: a.session.max(std::time::Duration::from_secs(60)),
    });
    let clients = a.clients.directory(&store)?;
    let metrics = crate::telemetry::metrics_handle();
    let app = App {
        store,
        sessions,
        stop: shutdown.clone(),
        timeout: a.timeout,
        secure_cookie: a.secure_cookie,
        metrics,
        dns: Arc::default(),
        verifying: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr().unwrap_or(a.listen);
    tracing::info!(%addr, "serving the API and dashboard");
    eprintln!(
        "mailshift serve: dashboard and API on http://{addr}/ (tokens: mailshift token create)"
    );
    let mut routes = router(app);
    if let Some(dir) = clients {
        eprintln!(
            "mailshift serve: mail client discovery for batch(es) {}",
            dir.batches.join(", ")
        );
        routes = routes.merge(mailshift_clients::http::router(
            Arc::new(dir),
            mailshift_clients::http::Options::default(),
        ));
    }
    let timeouts = Timeouts {
        header: std::time::Duration::from_secs(a.header_timeout.max(1)),
        body: std::time::Duration::from_secs(a.body_timeout.max(1)),
    };
    serve_http(listener, routes, &timeouts, &shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// How long a client may take to send a request's headers, and then its body
/// (`--header-timeout`, `--body-timeout`): a slow or half-sent request is dropped instead
/// of holding a connection for ever.
struct Timeouts {
    header: std::time::Duration,
    body: std::time::Duration,
}

/// How long requests in flight may take to finish after a stop is asked for.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `routes` on `listener` until `shutdown`, then lets the requests in flight
/// finish (up to [`DRAIN`]). hyper's own header timeout needs a timer, which
/// `axum::serve` does not give it: hence this loop over hyper-util's server.
async fn serve_http(
    listener: tokio::net::TcpListener,
    routes: Router,
    timeouts: &Timeouts,
    shutdown: &Shutdown,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let routes = routes.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        timeouts.body,
    ));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = routes
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let service = hyper_util::service::TowerToHyperService::new(app);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running {}s after the stop; stopped anyway",
            DRAIN.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    /// Every API route of the router is described in docs/openapi.yaml.
    #[test]
    fn openapi_describes_every_api_route() {
        let spec = include_str!("../../../../docs/openapi.yaml");
        let routes: Vec<&str> = include_str!("mod.rs")
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".route(\""))
            .filter_map(|l| l.split('"').next())
            .filter(|p| p.starts_with("/api/") || *p == "/health" || *p == "/metrics")
            .collect();
        assert!(routes.len() >= 10, "{routes:?}");
        for r in routes {
            assert!(
                spec.contains(&format!("\n  {r}:")),
                "docs/openapi.yaml does not describe {r}"
            );
        }
    }
}
