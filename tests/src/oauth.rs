//! A tiny OAuth 2.0 authorization server for Dovecot's `oauth2` passdb: it hands out
//! opaque bearer tokens ([`OAuthServer::issue`]) and answers token-introspection requests
//! (RFC 7662) on `http://127.0.0.1:PORT/introspect` with `{"active":true,"username":...}`
//! while a token is valid and `{"active":false}` once it expired, was revoked or was never
//! issued.
//!
//! It accepts the token the three ways Dovecot 2.3 can send it (`introspection_mode`):
//! `post` (form body `token=...`, the default the harness configures), `get` (appended to
//! the URL, e.g. `introspection_url = .../introspect?token=`) and `auth`
//! (`Authorization: Bearer ...`). One request per connection (`Connection: close`), which
//! Dovecot's HTTP client handles. Every introspection is recorded ([`OAuthServer::log`]).
//!
//! Like [`crate::proxy::Proxy`] it runs as tasks of the calling Tokio runtime: a test that
//! blocks a worker thread (e.g. `std::process::Command::output`) must leave another one
//! free (`flavor = "multi_thread"`), or run the blocking call on `spawn_blocking`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One introspection request as the server answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// The token asked about (empty if the request carried none).
    pub token: String,
    /// Whether it was answered `"active": true`.
    pub active: bool,
    /// The user answered for an active token.
    pub username: Option<String>,
    /// When it was answered.
    pub at: Instant,
}

struct Grant {
    user: String,
    expires_at: Instant,
    revoked: bool,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Grant>,
    log: Vec<Introspection>,
    issued: u64,
}

/// A running introspection server; stops accepting when dropped.
pub struct OAuthServer {
    port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthServer")
            .field("port", &self.port)
            .finish()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OAuthServer {
    /// Listens on a free loopback port.
    pub async fn start() -> OAuthServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OAuth introspection server");
        let port = listener.local_addr().expect("introspection addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    // A stuck client must not keep a task forever.
                    let _ = tokio::time::timeout(Duration::from_secs(30), serve(conn, s)).await;
                });
            }
        });
        OAuthServer { port, state, task }
    }

    /// The introspection endpoint, `http://127.0.0.1:PORT/introspect` (for
    /// `introspection_mode = post` or `auth`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new opaque token for `user`, active for `valid_for` from now.
    pub fn issue(&self, user: &str, valid_for: Duration) -> String {
        let mut st = self.lock();
        st.issued += 1;
        let token = format!(
            "mst{}-{}",
            st.issued,
            hex::encode(rand::random::<[u8; 16]>())
        );
        st.tokens.insert(
            token.clone(),
            Grant {
                user: user.to_string(),
                expires_at: Instant::now() + valid_for,
                revoked: false,
            },
        );
        token
    }

    /// Ends a token's validity now (as expiry or revocation would): from now on it is
    /// introspected as `{"active":false}`.
    pub fn revoke(&self, token: &str) {
        if let Some(g) = self.lock().tokens.get_mut(token) {
            g.revoked = true;
        }
    }

    /// Whether `token` would be answered as active now.
    pub fn is_active(&self, token: &str) -> bool {
        active_user(&self.lock(), token).is_some()
    }

    /// Introspection requests answered so far.
    pub fn requests(&self) -> usize {
        self.lock().log.len()
    }

    /// Every introspection answered so far, oldest first.
    pub fn log(&self) -> Vec<Introspection> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn active_user(st: &State, token: &str) -> Option<String> {
    st.tokens
        .get(token)
        .filter(|g| !g.revoked && Instant::now() < g.expires_at)
        .map(|g| g.user.clone())
}

/// Reads one HTTP/1.1 request, answers it and closes the connection.
async fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut content_length = 0usize;
    let mut bearer = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("authorization")
            && value.len() > 7
            && value[..7].eq_ignore_ascii_case("bearer ")
        {
            bearer = Some(value[7..].trim().to_string());
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < content_length.min(64 * 1024) {
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(k) => body.extend_from_slice(&chunk[..k]),
        }
    }

    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let response = if path != "/introspect" {
        http_response(
            "404 Not Found",
            r#"{"error":"not_found","error_description":"unknown endpoint"}"#,
        )
    } else {
        let token = bearer
            .or_else(|| {
                (method == "POST")
                    .then(|| form_value(&String::from_utf8_lossy(&body), "token"))
                    .flatten()
            })
            .or_else(|| form_value(query, "token"))
            .or_else(|| form_value(query, "access_token"))
            .unwrap_or_default();
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let user = active_user(&st, &token);
        let json = match &user {
            Some(u) => {
                let exp = st
                    .tokens
                    .get(&token)
                    .map(|g| g.expires_at.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                let exp = SystemTime::now()
                    .checked_add(exp)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                serde_json::json!({
                    "active": true,
                    "username": u,
                    "scope": "imap",
                    "token_type": "Bearer",
                    "exp": exp,
                })
            }
            None => serde_json::json!({ "active": false }),
        };
        st.log.push(Introspection {
            token,
            active: user.is_some(),
            username: user,
            at: Instant::now(),
        });
        http_response("200 OK", &json.to_string())
    };
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

fn http_response(status: &str, json: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The percent-decoded value of `key` in an `a=1&b=2` string.
fn form_value(s: &str, key: &str) -> Option<String> {
    s.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match b.get(i + 1..i + 3).and_then(|h| hex::decode(h).ok()) {
                Some(v) => {
                    out.extend_from_slice(&v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved characters (for building test requests).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_decoded() {
        assert_eq!(
            form_value("a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_value("token=%zz%4", "token").as_deref(), Some("%zz%4"));
        assert_eq!(form_value("a=1", "token"), None);
        assert_eq!(percent_decode(&percent_encode("a b/é%")), "a b/é%");
    }
}
