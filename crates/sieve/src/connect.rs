//! Opening an authenticated ManageSieve session: TCP, implicit TLS or STARTTLS
//! (certificates always verified, system roots plus an optional CA file), the plain-text
//! policy, login, and the post-login capabilities. The policy is the IMAP adapter's:
//! plain text only when explicitly allowed *and* the server offers no STARTTLS; a server
//! that offers STARTTLS and then fails it ends the connection, never a fallback.

use crate::auth;
use crate::error::SieveError;
use crate::response::{Limits, StatusKind};
use crate::session::{Connection, SieveSession};
use mailshift_core::endpoint::Security;
use mailshift_core::sieve::{SieveEndpoint, SieveSource, SieveTarget};
use secrecy::SecretString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// Which side of the migration a server is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// How to log in.
#[derive(Clone)]
pub enum SieveAuth {
    /// SASL PLAIN (RFC 4616).
    Password(SecretString),
    /// An OAuth 2.0 access token: OAUTHBEARER (RFC 7628) when offered, else XOAUTH2.
    /// The caller obtains it (e.g. with the IMAP adapter's `TokenSource`), fresh per login.
    Bearer(SecretString),
}

impl fmt::Debug for SieveAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SieveAuth::Password(_) => "Password(<redacted>)",
            SieveAuth::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

/// How to reach and log in to one ManageSieve server.
#[derive(Clone)]
pub struct SieveConfig {
    pub endpoint: SieveEndpoint,
    pub auth: SieveAuth,
    pub side: Side,
    /// Allow a plain-text login when the server offers no STARTTLS.
    pub allow_plaintext: bool,
    /// An extra CA certificate (PEM) to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting (through login) and for each command.
    pub timeout: Duration,
}

impl fmt::Debug for SieveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SieveConfig")
            .field("endpoint", &self.endpoint.to_string())
            .field("side", &self.side)
            .field("auth", &self.auth)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

impl SieveConfig {
    /// "source sieve://alice@old.example:4190", the prefix of every message about it.
    pub fn label(&self) -> String {
        format!("{} {}", self.side, self.endpoint)
    }
}

/// The byte stream: plain TCP (before STARTTLS, or when plain text is allowed) or TLS.
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn tls_config(cfg: &SieveConfig) -> Result<Arc<rustls::ClientConfig>, SieveError> {
    let server = cfg.label();
    let tls_err = |reason: String| SieveError::Tls {
        server: server.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system certificate must not stop the others from working.
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| tls_err(format!("cannot read CA file {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| tls_err(format!("CA file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| tls_err(format!("CA file {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(tls_err(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn tls_wrap(cfg: &SieveConfig, tcp: TcpStream) -> Result<Transport, SieveError> {
    let config = tls_config(cfg)?;
    let name = rustls::pki_types::ServerName::try_from(cfg.endpoint.host.clone()).map_err(|e| {
        SieveError::Tls {
            server: cfg.label(),
            reason: format!("invalid server name: {e}"),
        }
    })?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| SieveError::Tls {
            server: cfg.label(),
            reason: e.to_string(),
        })?;
    Ok(Transport::Tls(Box::new(tls)))
}

/// Connects and logs in, within `cfg.timeout`.
pub async fn connect(cfg: &SieveConfig) -> Result<SieveSession, SieveError> {
    match tokio::time::timeout(cfg.timeout, connect_inner(cfg)).await {
        Ok(r) => r,
        Err(_) => Err(SieveError::Timeout {
            server: cfg.label(),
            op: "connecting and logging in".into(),
            after: cfg.timeout,
        }),
    }
}

/// A session on the old server, typed so that nothing can write to it.
pub async fn connect_source(cfg: &SieveConfig) -> mailshift_core::Result<Box<dyn SieveSource>> {
    Ok(Box::new(connect(cfg).await?))
}

/// A session on the new server.
pub async fn connect_target(cfg: &SieveConfig) -> mailshift_core::Result<Box<dyn SieveTarget>> {
    Ok(Box::new(connect(cfg).await?))
}

async fn connect_inner(cfg: &SieveConfig) -> Result<SieveSession, SieveError> {
    let server = cfg.label();
    let tcp = TcpStream::connect((cfg.endpoint.host.as_str(), cfg.endpoint.port))
        .await
        .map_err(|e| SieveError::Connect {
            server: server.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let transport = match cfg.endpoint.security {
        Security::Tls => tls_wrap(cfg, tcp).await?,
        Security::StartTls => Transport::Plain(tcp),
    };
    let mut conn = Connection::new(transport, server.clone(), Limits::default(), cfg.timeout);
    let mut caps = conn.greeting().await?;

    if cfg.endpoint.security == Security::StartTls {
        if caps.starttls {
            let (_, status) = conn.run(crate::command::starttls()).await?;
            if status.kind != StatusKind::Ok {
                return Err(SieveError::StartTlsRefused {
                    server,
                    reason: crate::error::clean_text(&status.text()),
                });
            }
            let tcp = conn.into_plain()?;
            conn = Connection::new(
                tls_wrap(cfg, tcp).await?,
                server.clone(),
                Limits::default(),
                cfg.timeout,
            );
            // RFC 5804 2.2: the server re-issues its capabilities over TLS.
            caps = conn.greeting().await?;
        } else if cfg.allow_plaintext {
            tracing::warn!(server = %server, "no STARTTLS: logging in to ManageSieve over plain text as allowed");
        } else {
            return Err(SieveError::PlaintextRefused { server });
        }
    }

    auth::login(
        &mut conn,
        &caps,
        auth::Login {
            auth: &cfg.auth,
            user: &cfg.endpoint.user,
            host: &cfg.endpoint.host,
            port: cfg.endpoint.port,
        },
    )
    .await?;
    let mut session = SieveSession::new(conn, caps, cfg.endpoint.user.clone());
    session.refresh_capabilities().await?;
    Ok(session)
}
