//! Opening an authenticated session: TCP, implicit TLS or STARTTLS (certificates always
//! verified), the plain-text policy, and login. Owns the transport type.

use crate::auth::Auth;
use crate::error::ImapError;
use crate::session::ImapSession;
use async_trait::async_trait;
use mailshift_core::endpoint::{Endpoint, Security};
use mailshift_core::ports::{Connector, HostPauses, MailSource, MailTarget};
use secrecy::SecretString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// Which side of the migration a server is, for error messages.
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

/// How to reach and log in to one server.
#[derive(Clone)]
pub struct ServerConfig {
    pub endpoint: Endpoint,
    pub auth: Auth,
    pub side: Side,
    /// Allow a plain-text login when the server offers no STARTTLS.
    pub allow_plaintext: bool,
    /// An extra CA certificate (PEM) to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting and for each command.
    pub timeout: Duration,
    /// Throttling pauses per server, shared by every session of the process.
    pub pauses: Arc<HostPauses>,
    /// Compress the session (COMPRESS=DEFLATE) when the server offers it.
    pub compress: bool,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("endpoint", &self.endpoint.to_string())
            .field("side", &self.side)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ServerConfig {
    /// "source imap://alice@old.example:143", the prefix of every error about this server.
    pub fn label(&self) -> String {
        format!("{} {}", self.side, self.endpoint)
    }
}

/// The byte stream under async-imap: plain TCP, TLS over TCP, or either compressed
/// with DEFLATE (RFC 4978) once the session has negotiated it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Deflate(Box<async_imap::DeflateStream<Stream>>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Plain(_) => "Transport::Plain",
            Transport::Tls(_) => "Transport::Tls",
            Transport::Deflate(_) => "Transport::Deflate",
        })
    }
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
            Transport::Deflate(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Transport::Deflate(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Deflate(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Deflate(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Writes are buffered: async-imap writes a command in several small pieces.
pub type Stream = BufWriter<Transport>;

fn tls_config(cfg: &ServerConfig) -> Result<Arc<rustls::ClientConfig>, ImapError> {
    let server = cfg.label();
    let tls_err = |reason: String| ImapError::Tls {
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

async fn tls_wrap(cfg: &ServerConfig, tcp: TcpStream) -> Result<Transport, ImapError> {
    let config = tls_config(cfg)?;
    let name = rustls::pki_types::ServerName::try_from(cfg.endpoint.host.clone()).map_err(|e| {
        ImapError::Tls {
            server: cfg.label(),
            reason: format!("invalid server name: {e}"),
        }
    })?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ImapError::Tls {
            server: cfg.label(),
            reason: e.to_string(),
        })?;
    Ok(Transport::Tls(Box::new(tls)))
}

/// Connects and logs in, within `cfg.timeout`.
pub async fn connect(cfg: &ServerConfig) -> Result<ImapSession, ImapError> {
    match tokio::time::timeout(cfg.timeout, connect_inner(cfg)).await {
        Ok(r) => r,
        Err(_) => Err(ImapError::Timeout {
            op: format!("connecting to {}", cfg.label()),
            after: cfg.timeout,
        }),
    }
}

async fn connect_inner(cfg: &ServerConfig) -> Result<ImapSession, ImapError> {
    let server = cfg.label();
    let tcp = TcpStream::connect((cfg.endpoint.host.as_str(), cfg.endpoint.port))
        .await
        .map_err(|e| ImapError::Connect {
            server: server.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let io_err = |op: &str, e: &dyn fmt::Display| ImapError::Io {
        op: format!("{op} with {server}"),
        reason: e.to_string(),
    };

    let transport = match cfg.endpoint.security {
        Security::Tls => tls_wrap(cfg, tcp).await?,
        Security::StartTls => Transport::Plain(tcp),
    };
    let mut client = async_imap::Client::new(BufWriter::with_capacity(64 * 1024, transport));
    read_greeting(&mut client, &server).await?;

    if cfg.endpoint.security == Security::StartTls {
        match client.run_command_and_check_ok("STARTTLS", None).await {
            Ok(()) => {
                let tcp = match client.into_inner().into_inner() {
                    Transport::Plain(tcp) => tcp,
                    Transport::Tls(_) | Transport::Deflate(_) => {
                        return Err(ImapError::Unsupported(
                            "STARTTLS on a TLS connection".into(),
                        ));
                    }
                };
                let tls = tls_wrap(cfg, tcp).await?;
                client = async_imap::Client::new(BufWriter::with_capacity(64 * 1024, tls));
            }
            Err(async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)) => {
                if !cfg.allow_plaintext {
                    return Err(ImapError::PlaintextRefused { server });
                }
                tracing::warn!(server = %server, "no STARTTLS: logging in over plain text as allowed");
            }
            Err(e) => return Err(io_err("STARTTLS", &e)),
        }
    }

    let session = crate::auth::login(
        client,
        crate::auth::Login {
            auth: &cfg.auth,
            user: &cfg.endpoint.user,
            host: &cfg.endpoint.host,
            port: cfg.endpoint.port,
            server: &server,
        },
    )
    .await?;
    ImapSession::start(session, cfg.clone()).await
}

async fn read_greeting(
    client: &mut async_imap::Client<Stream>,
    server: &str,
) -> Result<(), ImapError> {
    let greeting = client.read_response().await.map_err(|e| ImapError::Io {
        op: format!("greeting from {server}"),
        reason: e.to_string(),
    })?;
    match greeting.as_ref().map(|g| g.parsed()) {
        Some(imap_proto::Response::Data {
            status: imap_proto::Status::Ok | imap_proto::Status::PreAuth,
            ..
        }) => Ok(()),
        Some(imap_proto::Response::Data {
            status: imap_proto::Status::Bye,
            outcome,
        }) => Err(ImapError::Connect {
            server: server.to_string(),
            reason: format!(
                "the server said goodbye: {}",
                outcome.information.as_deref().unwrap_or("")
            ),
        }),
        Some(other) => Err(ImapError::Protocol {
            op: format!("greeting from {server}"),
            text: format!("{other:?}"),
        }),
        None => Err(ImapError::Connect {
            server: server.to_string(),
            reason: "the server closed the connection before greeting".into(),
        }),
    }
}

/// Opens sessions to both servers of one mailbox.
#[derive(Clone, Debug)]
pub struct ImapConnector {
    pub source: ServerConfig,
    pub target: ServerConfig,
}

#[async_trait]
impl Connector for ImapConnector {
    async fn source(&self) -> mailshift_core::Result<Box<dyn MailSource>> {
        Ok(Box::new(connect(&self.source).await?))
    }

    async fn target(&self) -> mailshift_core::Result<Box<dyn MailTarget>> {
        Ok(Box::new(connect(&self.target).await?))
    }

    async fn target_reader(&self) -> mailshift_core::Result<Box<dyn MailSource>> {
        Ok(Box::new(connect(&self.target).await?))
    }

    fn hosts(&self) -> (String, String) {
        (
            self.source.endpoint.host_port(),
            self.target.endpoint.host_port(),
        )
    }

    fn throttled_for(&self) -> Option<Duration> {
        let (s, t) = self.hosts();
        let a = self.source.pauses.remaining(&s);
        let b = self.target.pauses.remaining(&t);
        a.max(b)
    }
}

/// Fleet mode: the servers and credentials of a migration come from the registered
/// mailbox (credentials opened from the store only when a session is needed).
pub struct FleetConnectors {
    pub store: std::sync::Arc<dyn mailshift_core::ports::MailboxStore>,
    pub timeout: Duration,
    /// Extra CA certificate trusted for both sides (tests, private CAs).
    pub ca_file: Option<PathBuf>,
    /// Throttling pauses per server, shared by all the process's migrations.
    pub pauses: Arc<HostPauses>,
}

#[async_trait]
impl mailshift_core::ports::Connectors for FleetConnectors {
    async fn connector(
        &self,
        migration: uuid::Uuid,
    ) -> mailshift_core::Result<std::sync::Arc<dyn Connector>> {
        let (m, creds) = self.store.mailbox_credentials(migration).await?;
        let config = |endpoint: &str, password: SecretString, side: Side| {
            Ok::<_, mailshift_core::Error>(ServerConfig {
                endpoint: endpoint.parse()?,
                auth: Auth::Password(password),
                side,
                allow_plaintext: m.options.allow_plaintext,
                ca_file: self.ca_file.clone(),
                timeout: self.timeout,
                pauses: self.pauses.clone(),
                compress: true,
            })
        };
        Ok(std::sync::Arc::new(ImapConnector {
            source: config(&m.source, creds.source_password, Side::Source)?,
            target: config(&m.dest, creds.dest_password, Side::Destination)?,
        }))
    }
}
