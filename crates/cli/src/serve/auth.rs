//! Who is calling: the API token from `Authorization: Bearer` or the dashboard's session
//! cookie, checked against the stored hashes; and the CSRF token of dashboard forms.
//!
//! The session cookie is not the token: it is the token sealed (AES-256-GCM, the fleet's
//! credentials key) together with its expiry, so a stolen cookie expires, reveals
//! nothing, and works on every `serve` of the fleet; each request still checks the token
//! itself, so revoking it ends its sessions.

use super::App;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub(crate) const COOKIE: &str = "mailshift_session";

/// Issues and opens dashboard sessions.
pub(crate) struct Sessions {
    pub key: mailshift_store::SecretKey,
    pub ttl: std::time::Duration,
}

impl Sessions {
    /// A session cookie value for `token`: `EXPIRY.SEALED`, the expiry bound into the seal.
    pub fn issue(&self, token: &str) -> String {
        let expires = chrono::Utc::now().timestamp() + self.ttl.as_secs() as i64;
        let sealed = self.key.seal(
            &secrecy::SecretString::from(token.to_string()),
            &format!("session/{expires}"),
        );
        format!("{expires}.{sealed}")
    }

    /// The token of a session cookie that is genuine and not expired.
    pub fn open(&self, cookie: &str) -> Option<secrecy::SecretString> {
        let (expires, sealed) = cookie.split_once('.')?;
        let at: i64 = expires.parse().ok()?;
        if at <= chrono::Utc::now().timestamp() {
            return None;
        }
        self.key.open(sealed, &format!("session/{at}")).ok()
    }
}

/// The authenticated caller, in each protected request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub name: String,
    pub read_only: bool,
    /// Came with the session cookie (a browser), not a bearer token.
    pub by_cookie: bool,
    /// The CSRF token forms of this session must carry.
    pub csrf: String,
}

pub(crate) fn csrf_for(token: &str) -> String {
    hex::encode(Sha256::digest(format!("mailshift-csrf:{token}").as_bytes()))
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

pub(crate) fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

pub(crate) fn unauthorized(path: &str, why: &str) -> Response {
    if is_api(path) {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"mailshift\"")],
            axum::Json(serde_json::json!({ "error": why })),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            super::views::login_page(Some(why)),
        )
            .into_response()
    }
}

/// Lets a request through only with a valid token; adds its [`Caller`].
pub(crate) async fn require(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let (token, by_cookie) = match bearer(req.headers()) {
        Some(t) => (t.to_string(), false),
        None => match cookie(req.headers(), COOKIE) {
            Some(c) => match app.sessions.open(c) {
                Some(t) => {
                    use secrecy::ExposeSecret;
                    (t.expose_secret().to_string(), true)
                }
                None => {
                    return unauthorized(&path, "your session has ended: log in again");
                }
            },
            None => {
                return unauthorized(&path, "an API token is required (mailshift token create)");
            }
        },
    };
    let info = match app.store.check_token(&token).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            return unauthorized(
                &path,
                "this token is not valid (revoked, expired, or mistyped)",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a token");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the fleet database is unreachable",
            )
                .into_response();
        }
    };
    let writes = req.method() != Method::GET && req.method() != Method::HEAD;
    if writes && by_cookie && is_api(&path) {
        // A browser attaches cookies to any site's requests: API writes need the header.
        return (
            StatusCode::FORBIDDEN,
            axum::Json(
                serde_json::json!({"error": "API writes need an Authorization: Bearer token"}),
            ),
        )
            .into_response();
    }
    if writes && info.read_only && path != "/logout" {
        let msg = format!(
            "token '{}' is read-only: it may look but not change anything",
            info.name
        );
        return if is_api(&path) {
            (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({ "error": msg })),
            )
                .into_response()
        } else {
            (
                StatusCode::FORBIDDEN,
                super::views::message_page("Not allowed", &msg),
            )
                .into_response()
        };
    }
    req.extensions_mut().insert(Caller {
        name: info.name,
        read_only: info.read_only,
        by_cookie,
        csrf: csrf_for(&token),
    });
    next.run(req).await
}

/// Why a dashboard form was refused.
pub(crate) struct Refused(&'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            super::views::message_page("Not allowed", self.0),
        )
            .into_response()
    }
}

/// A dashboard form's CSRF field must match the session's, and a cross-site Origin is
/// refused outright.
pub(crate) fn check_form(caller: &Caller, headers: &HeaderMap, csrf: &str) -> Result<(), Refused> {
    if let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        let same = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host);
        if !same && origin != "null" {
            return Err(Refused("a form from another site was refused"));
        }
    }
    let a = caller.csrf.as_bytes();
    let b = csrf.as_bytes();
    let equal = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if !caller.by_cookie || !equal {
        return Err(Refused(
            "the form's security token is missing or stale; reload the page and try again",
        ));
    }
    Ok(())
}
