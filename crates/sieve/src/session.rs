//! A logged-in ManageSieve session: sending commands, reading their responses within the
//! parser's limits and a timeout per command, and the `SieveSource`/`SieveTarget` ports.
//! A session whose stream is in an unknown state (a timeout or an I/O or parse error in
//! the middle of a response) refuses further commands instead of misreading replies.

use crate::command::{self, Command};
use crate::connect::Transport;
use crate::error::{SieveError, clean_text};
use crate::response::{Limits, Line, Status, StatusKind, Value, parse_line};
use async_trait::async_trait;
use mailshift_core::sieve::{Checked, ListedScript, SieveCapabilities, SieveSource, SieveTarget};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes one response (all its lines) may bring, on top of the per-line limits.
const MAX_RESPONSE: usize = 32 * 1024 * 1024;

/// The framed byte stream of one server.
pub(crate) struct Connection {
    stream: Transport,
    buf: Vec<u8>,
    server: String,
    limits: Limits,
    timeout: Duration,
    broken: Option<String>,
}

impl Connection {
    pub(crate) fn new(
        stream: Transport,
        server: String,
        limits: Limits,
        timeout: Duration,
    ) -> Connection {
        Connection {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            server,
            limits,
            timeout,
            broken: None,
        }
    }

    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// The TCP stream for STARTTLS. Bytes the server sent after its OK would be read as
    /// if they came over TLS (an injection attack): refuse them.
    pub(crate) fn into_plain(self) -> Result<TcpStream, SieveError> {
        if !self.buf.is_empty() {
            return Err(SieveError::Protocol {
                server: self.server,
                op: "STARTTLS".into(),
                what: "data after the OK, before the TLS handshake".into(),
            });
        }
        match self.stream {
            Transport::Plain(tcp) => Ok(tcp),
            Transport::Tls(_) => Err(SieveError::Protocol {
                server: self.server,
                op: "STARTTLS".into(),
                what: "STARTTLS on a connection that already uses TLS".into(),
            }),
        }
    }

    fn io(&mut self, op: &str, reason: String) -> SieveError {
        self.broken = Some(format!("{op} failed"));
        SieveError::Io {
            server: self.server.clone(),
            op: op.to_string(),
            reason,
        }
    }

    pub(crate) async fn send(&mut self, cmd: &Command) -> Result<(), SieveError> {
        if let Some(why) = &self.broken {
            return Err(SieveError::Io {
                server: self.server.clone(),
                op: cmd.name.to_string(),
                reason: format!("the session is unusable since {why}; reconnect"),
            });
        }
        tracing::debug!(server = %self.server, command = cmd.name, bytes = cmd.bytes.len(), "managesieve command");
        let r = async {
            self.stream.write_all(&cmd.bytes).await?;
            self.stream.flush().await
        }
        .await;
        r.map_err(|e| self.io(cmd.name, e.to_string()))
    }

    /// The next complete line.
    pub(crate) async fn read_line(&mut self, op: &str) -> Result<Line, SieveError> {
        loop {
            if !self.buf.is_empty() {
                match parse_line(&self.buf, &self.limits) {
                    Ok(Some((line, n))) => {
                        self.buf.drain(..n);
                        return Ok(line);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.broken = Some(format!("a malformed {op} response"));
                        return Err(SieveError::parse(&self.server, op, e));
                    }
                }
            }
            self.buf.reserve(16 * 1024);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(self.io(op, "the server closed the connection".into()));
                }
                Ok(_) => {}
                Err(e) => return Err(self.io(op, e.to_string())),
            }
        }
    }

    /// Data lines up to the final status. A BYE is an error: the server is gone.
    async fn response(&mut self, op: &str) -> Result<(Vec<Vec<Value>>, Status), SieveError> {
        let mut data = Vec::new();
        let mut total = 0usize;
        loop {
            match self.read_line(op).await? {
                Line::Data(v) => {
                    total += v
                        .iter()
                        .map(|x| match x {
                            Value::Atom(a) => a.len() + 1,
                            Value::Str(s) => s.len() + 3,
                        })
                        .sum::<usize>();
                    if total > MAX_RESPONSE {
                        self.broken = Some(format!("an oversized {op} response"));
                        return Err(SieveError::Protocol {
                            server: self.server.clone(),
                            op: op.to_string(),
                            what: format!("a response of more than {MAX_RESPONSE} bytes"),
                        });
                    }
                    data.push(v);
                }
                Line::Status(s) if s.kind == StatusKind::Bye => {
                    self.broken = Some("the server said BYE".into());
                    return Err(SieveError::Bye {
                        server: self.server.clone(),
                        op: op.to_string(),
                        text: clean_text(&s.text()),
                    });
                }
                Line::Status(s) => return Ok((data, s)),
            }
        }
    }

    /// Sends a command and reads its whole response, within the timeout. A NO comes back
    /// as a status for the caller to judge.
    pub(crate) async fn run(
        &mut self,
        cmd: Command,
    ) -> Result<(Vec<Vec<Value>>, Status), SieveError> {
        let timeout = self.timeout;
        let r = tokio::time::timeout(timeout, async {
            self.send(&cmd).await?;
            self.response(cmd.name).await
        })
        .await;
        match r {
            Ok(r) => r,
            Err(_) => {
                self.broken = Some(format!("{} timed out", cmd.name));
                Err(SieveError::Timeout {
                    server: self.server.clone(),
                    op: cmd.name.to_string(),
                    after: timeout,
                })
            }
        }
    }

    /// Capability lines and their OK: the greeting, the re-issue after STARTTLS, and the
    /// answer to CAPABILITY.
    pub(crate) async fn greeting(&mut self) -> Result<SieveCapabilities, SieveError> {
        let (lines, status) = self.response("greeting").await?;
        if status.kind != StatusKind::Ok {
            return Err(SieveError::Connect {
                server: self.server.clone(),
                reason: format!(
                    "the server refused the session: {}",
                    clean_text(&status.text())
                ),
            });
        }
        Ok(capabilities(&lines))
    }
}

/// Reads capability lines (`"NAME" ["VALUE"]`); unknown ones are ignored.
pub(crate) fn capabilities(lines: &[Vec<Value>]) -> SieveCapabilities {
    let mut caps = SieveCapabilities::default();
    for line in lines {
        let Some(name) = line.first().map(Value::text) else {
            continue;
        };
        let value = line.get(1).map(Value::text);
        let words = |v: &Option<String>| -> Vec<String> {
            v.as_deref()
                .unwrap_or_default()
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect()
        };
        match name.to_ascii_uppercase().as_str() {
            "IMPLEMENTATION" => caps.implementation = value,
            "SIEVE" => {
                caps.extensions = words(&value)
                    .into_iter()
                    .map(|w| w.to_ascii_lowercase())
                    .collect();
            }
            "SASL" => {
                caps.sasl = words(&value)
                    .into_iter()
                    .map(|w| w.to_ascii_uppercase())
                    .collect();
            }
            "STARTTLS" => caps.starttls = true,
            "MAXREDIRECTS" => caps.max_redirects = value.and_then(|v| v.trim().parse().ok()),
            "NOTIFY" => caps.notify = words(&value),
            "VERSION" => caps.version = value,
            "OWNER" => caps.owner = value,
            _ => {}
        }
    }
    caps
}

/// A logged-in ManageSieve session on one server; implements [`SieveSource`] and
/// [`SieveTarget`]. Hand the old server's session out as a `SieveSource` only
/// ([`crate::connect_source`]).
pub struct SieveSession {
    conn: Connection,
    caps: SieveCapabilities,
    user: String,
}

impl std::fmt::Debug for SieveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SieveSession")
            .field("server", &self.conn.server)
            .field("user", &self.user)
            .finish()
    }
}

impl SieveSession {
    pub(crate) fn new(conn: Connection, caps: SieveCapabilities, user: String) -> SieveSession {
        SieveSession { conn, caps, user }
    }

    /// "destination sieve://alice@new.example:4190".
    pub fn server(&self) -> &str {
        &self.conn.server
    }

    /// CAPABILITY after login (adds MAXREDIRECTS, OWNER; keeps the login-time SASL list
    /// and STARTTLS, which servers stop announcing once logged in).
    pub(crate) async fn refresh_capabilities(&mut self) -> Result<(), SieveError> {
        let (lines, status) = self.conn.run(command::capability()).await?;
        self.ok(status, "CAPABILITY", None)?;
        let mut caps = capabilities(&lines);
        if caps.sasl.is_empty() {
            caps.sasl = std::mem::take(&mut self.caps.sasl);
        }
        caps.starttls |= self.caps.starttls;
        self.caps = caps;
        Ok(())
    }

    fn ok(
        &self,
        status: Status,
        op: &'static str,
        script: Option<&str>,
    ) -> Result<Status, SieveError> {
        match status.kind {
            StatusKind::Ok => Ok(status),
            StatusKind::No | StatusKind::Bye => Err(SieveError::Refused {
                server: self.conn.server.clone(),
                op,
                script: script.map(str::to_string),
                text: clean_text(&status.text()),
                code: status.code.map(|c| c.name),
            }),
        }
    }

    fn unexpected(&self, op: &str, what: &str) -> SieveError {
        SieveError::Protocol {
            server: self.conn.server.clone(),
            op: op.to_string(),
            what: what.to_string(),
        }
    }

    pub async fn list(&mut self) -> Result<Vec<ListedScript>, SieveError> {
        let (lines, status) = self.conn.run(command::listscripts()).await?;
        self.ok(status, "LISTSCRIPTS", None)?;
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            let (name, active) = match line.as_slice() {
                [Value::Str(n)] => (n, false),
                [Value::Str(n), Value::Atom(a)] if a.eq_ignore_ascii_case("ACTIVE") => (n, true),
                _ => return Err(self.unexpected("LISTSCRIPTS", "a line that is not a script name")),
            };
            out.push(ListedScript {
                name: String::from_utf8_lossy(name).into_owned(),
                active,
            });
        }
        Ok(out)
    }

    pub async fn get(&mut self, name: &str) -> Result<Vec<u8>, SieveError> {
        let (mut lines, status) = self.conn.run(command::getscript(name)).await?;
        self.ok(status, "GETSCRIPT", Some(name))?;
        match lines.pop().map(|mut l| (l.len(), l.pop())) {
            Some((1, Some(Value::Str(content)))) if lines.is_empty() => Ok(content),
            _ => Err(self.unexpected("GETSCRIPT", "no script (one string) before the OK")),
        }
    }

    pub async fn check(&mut self, name: &str, content: &[u8]) -> Result<Checked, SieveError> {
        if !self.caps.has_checkscript() {
            return Ok(Checked::default());
        }
        let (_, status) = self.conn.run(command::checkscript(content)).await?;
        let status = self.ok(status, "CHECKSCRIPT", Some(name))?;
        Ok(checked(&status))
    }

    pub async fn put(&mut self, name: &str, content: &[u8]) -> Result<Checked, SieveError> {
        let (_, status) = self.conn.run(command::putscript(name, content)).await?;
        let status = self.ok(status, "PUTSCRIPT", Some(name))?;
        Ok(checked(&status))
    }

    pub async fn activate(&mut self, name: Option<&str>) -> Result<(), SieveError> {
        let (_, status) = self.conn.run(command::setactive(name)).await?;
        self.ok(status, "SETACTIVE", name)?;
        Ok(())
    }

    /// LOGOUT, best effort (the server may close first).
    pub async fn logout(mut self) {
        let _ = self.conn.run(command::logout()).await;
        let _ = self.conn.stream.shutdown().await;
    }
}

fn checked(status: &Status) -> Checked {
    let warned = status.code.as_ref().is_some_and(|c| c.is("WARNINGS"));
    Checked {
        warnings: warned.then(|| clean_text(&status.text())),
    }
}

#[async_trait]
impl SieveSource for SieveSession {
    fn capabilities(&self) -> &SieveCapabilities {
        &self.caps
    }

    fn label(&self) -> String {
        self.conn.server.clone()
    }

    async fn list_scripts(&mut self) -> mailshift_core::Result<Vec<ListedScript>> {
        Ok(self.list().await?)
    }

    async fn get_script(&mut self, name: &str) -> mailshift_core::Result<Vec<u8>> {
        Ok(self.get(name).await?)
    }
}

#[async_trait]
impl SieveTarget for SieveSession {
    async fn check_script(
        &mut self,
        name: &str,
        content: &[u8],
    ) -> mailshift_core::Result<Checked> {
        Ok(self.check(name, content).await?)
    }

    async fn put_script(&mut self, name: &str, content: &[u8]) -> mailshift_core::Result<Checked> {
        Ok(self.put(name, content).await?)
    }

    async fn set_active(&mut self, name: Option<&str>) -> mailshift_core::Result<()> {
        Ok(self.activate(name).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.as_bytes().to_vec())
    }

    #[test]
    fn capabilities_of_a_dovecot_greeting() {
        let caps = capabilities(&[
            vec![s("IMPLEMENTATION"), s("Dovecot (Debian) Pigeonhole")],
            vec![s("SIEVE"), s("fileinto reject Envelope vacation")],
            vec![s("NOTIFY"), s("mailto")],
            vec![s("SASL"), s("plain login")],
            vec![s("STARTTLS")],
            vec![s("MAXREDIRECTS"), s("4")],
            vec![s("VERSION"), s("1.0")],
            vec![s("X-UNKNOWN"), s("whatever")],
        ]);
        assert_eq!(
            caps.implementation.as_deref(),
            Some("Dovecot (Debian) Pigeonhole")
        );
        assert!(caps.supports("envelope") && caps.supports("vacation") && !caps.supports("body"));
        assert_eq!(caps.sasl, vec!["PLAIN", "LOGIN"]);
        assert!(caps.starttls && caps.has_checkscript());
        assert_eq!(caps.max_redirects, Some(4));
        assert_eq!(caps.notify, vec!["mailto"]);
        let bare = capabilities(&[vec![s("SIEVE"), s("fileinto")]]);
        assert!(!bare.has_checkscript() && !bare.starttls);
    }

    #[test]
    fn warnings_are_kept() {
        let st = Status {
            kind: StatusKind::Ok,
            code: Some(crate::response::Code {
                name: "WARNINGS".into(),
                args: vec![],
            }),
            text: Some(b"line 3: warning: x\r\n".to_vec()),
        };
        assert_eq!(checked(&st).warnings.as_deref(), Some("line 3: warning: x"));
        let st = Status {
            kind: StatusKind::Ok,
            code: None,
            text: Some(b"PUTSCRIPT completed.".to_vec()),
        };
        assert_eq!(checked(&st).warnings, None);
    }
}
