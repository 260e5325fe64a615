//! The public routes mail clients fetch, without a token:
//!
//! - `GET /.well-known/autoconfig/mail/config-v1.1.xml` and `GET /mail/config-v1.1.xml`
//!   (the `autoconfig.DOMAIN` host form), domain from `?emailaddress=` or the `Host`;
//! - `POST /autodiscover/autodiscover.xml` (and `/Autodiscover/Autodiscover.xml`);
//! - `GET /clients/{address}.mobileconfig` and `GET /clients/{address}` (the page).
//!
//! What they reveal: discovery answers depend on the domain and the address as given,
//! never on whether the address exists; per-user files answer one opaque 404 for an
//! unknown address and a malformed one alike. Every route is rate-limited per client
//! IP (a token bucket per address, [`RateLimit`]) and bodies are bounded.
//!
//! Client IPs come from axum's `ConnectInfo<SocketAddr>` (serve the app with
//! `into_make_service_with_connect_info::<SocketAddr>()`); without it every client
//! shares one bucket. Behind a reverse proxy set [`Options::trust_forwarded_for`].

use crate::directory::ClientDirectory;
use crate::render;
use crate::settings::{
    DomainSettings, domain_of, normalize_address, normalize_domain, url_segment,
};
use crate::sign::ProfileSigner;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests per client IP: a bucket of `burst` refilled at `per_minute`.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    /// 30 a minute, 20 at once: a client's discovery takes a handful; an enumeration
    /// of addresses is slowed to a crawl.
    fn default() -> Self {
        RateLimit {
            per_minute: NonZeroU32::MIN.saturating_add(29),
            burst: NonZeroU32::MIN.saturating_add(19),
        }
    }
}

/// How the routes behave.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub rate: RateLimit,
    /// Signs the Apple profiles served when set.
    pub signer: Option<Arc<ProfileSigner>>,
    /// Take the client IP from the last `X-Forwarded-For` entry (the one our own
    /// reverse proxy added) instead of the TCP peer.
    pub trust_forwarded_for: bool,
}

#[derive(Clone)]
struct Clients {
    dir: Arc<dyn ClientDirectory>,
    signer: Option<Arc<ProfileSigner>>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
    /// Requests seen, to prune the limiter's idle buckets now and then.
    seen: Arc<AtomicU64>,
}

/// The public routes, ready to be merged into an app of any state.
pub fn router<S>(dir: Arc<dyn ClientDirectory>, options: Options) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let quota = Quota::per_minute(options.rate.per_minute).allow_burst(options.rate.burst);
    let state = Clients {
        dir,
        signer: options.signer,
        limiter: Arc::new(RateLimiter::keyed(quota)),
        trust_forwarded_for: options.trust_forwarded_for,
        seen: Arc::default(),
    };
    Router::new()
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(autoconfig),
        )
        .route("/mail/config-v1.1.xml", get(autoconfig))
        .route("/autodiscover/autodiscover.xml", post(autodiscover))
        .route("/Autodiscover/Autodiscover.xml", post(autodiscover))
        .route("/clients/{file}", get(per_user))
        .layer(DefaultBodyLimit::max(
            render::autodiscover::MAX_REQUEST_BYTES,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limit))
        .with_state(state)
}

async fn limit(State(c): State<Clients>, req: Request, next: Next) -> Response {
    let ip = client_ip(&req, c.trust_forwarded_for);
    if c.seen.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
        c.limiter.retain_recent();
        c.limiter.shrink_to_fit();
    }
    match c.limiter.check_key(&ip) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until
                .wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ))
                .as_secs()
                .max(1);
            let mut res = text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests, try again later\n",
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            res
        }
    }
}

fn client_ip(req: &Request, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return ip;
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The one answer for every per-user file that is not served, whatever the reason.
fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn unavailable(e: &crate::Error) -> Response {
    tracing::warn!(error = %e, "client directory unavailable");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the settings cannot be read right now, try again later\n",
    )
}

fn xml(content_type: &'static str, body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `emailaddress` of a query string, decoded.
fn query_address(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "emailaddress").then(|| crate::settings::url_decode(&v.replace('+', " ")))?
    })
}

/// The domain an autoconfig request is about: the address's, else the host's
/// (`autoconfig.acme.example` or `acme.example`).
fn autoconfig_domain(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(addr) = query_address(query) {
        return normalize_address(&addr).map(|a| domain_of(&a).to_string());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = normalize_domain(host)?;
    Some(
        host.strip_prefix("autoconfig.")
            .map(str::to_string)
            .unwrap_or(host),
    )
}

async fn autoconfig(
    State(c): State<Clients>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(domain) = autoconfig_domain(query.as_deref(), &headers) else {
        return not_found();
    };
    match c.dir.domain(&domain).await {
        Ok(Some(d)) => xml("application/xml; charset=utf-8", render::autoconfig(&d)),
        Ok(None) => not_found(),
        Err(e) => unavailable(&e),
    }
}

async fn autodiscover(State(c): State<Clients>, body: Bytes) -> Response {
    const XML: &str = "text/xml; charset=utf-8";
    let req = match render::parse_request(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{e}\n"),
            )
                .into_response();
        }
    };
    let Some(address) = normalize_address(&req.email) else {
        return text(
            StatusCode::BAD_REQUEST,
            "malformed autodiscover request: <EMailAddress> is not an email address\n",
        );
    };
    if !req.wants_outlook_settings() {
        return xml(
            XML,
            render::error_response(601, "Provider is not available"),
        );
    }
    match c.dir.domain(domain_of(&address)).await {
        Ok(Some(d)) => xml(XML, render::settings_response(&d, &address)),
        Ok(None) => xml(XML, render::error_response(600, "Invalid Request")),
        Err(e) => unavailable(&e),
    }
}

async fn per_user(State(c): State<Clients>, Path(file): Path<String>) -> Response {
    let (raw, profile) = match file.strip_suffix(".mobileconfig") {
        Some(a) => (a, true),
        None => (file.strip_suffix(".html").unwrap_or(&file), false),
    };
    let Some(address) = normalize_address(raw) else {
        return not_found();
    };
    let user = match c.dir.user(&address).await {
        Ok(Some(u)) => u,
        Ok(None) => return not_found(),
        Err(e) => return unavailable(&e),
    };
    let domain: DomainSettings = match c.dir.domain(domain_of(&user.address)).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found(),
        Err(e) => return unavailable(&e),
    };
    if profile {
        profile_response(&c, &domain, &user)
    } else {
        let href = format!("./{}.mobileconfig", url_segment(&user.address));
        let page = render::settings_page(&domain, &user, Some(&href));
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                ),
            ],
            page,
        )
            .into_response()
    }
}

fn profile_response(c: &Clients, d: &DomainSettings, u: &crate::UserSettings) -> Response {
    let signed = render::mobileconfig(d, u).and_then(|p| match &c.signer {
        Some(s) => s.sign(&p),
        None => Ok(p),
    });
    match signed {
        Ok(body) => {
            let disposition = format!("attachment; filename=\"{}.mobileconfig\"", d.domain);
            let mut res = (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
                    (header::CACHE_CONTROL, "no-store"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                body,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot build an Apple profile");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the profile cannot be built\n",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_autoconfig_domain_comes_from_the_address_or_the_host() {
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("autoconfig.Acme.Example:8080"),
        );
        assert_eq!(autoconfig_domain(None, &h).as_deref(), Some("acme.example"));
        assert_eq!(
            autoconfig_domain(Some("emailaddress=bob%40other.example"), &h).as_deref(),
            Some("other.example")
        );
        assert_eq!(autoconfig_domain(Some("emailaddress=nonsense"), &h), None);
        h.insert(header::HOST, HeaderValue::from_static("acme.example"));
        assert_eq!(
            autoconfig_domain(Some("x=1"), &h).as_deref(),
            Some("acme.example")
        );
        h.insert(header::HOST, HeaderValue::from_static("[::1]:80"));
        assert_eq!(autoconfig_domain(None, &h), None);
    }
}
