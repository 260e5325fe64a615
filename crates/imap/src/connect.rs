//! Opening an authenticated session: TCP, implicit TLS or STARTTLS (certificates always
//! verified), the plain-text policy, and login. Owns the transport type.

use crate::auth::Auth;
use crate::error::ImapError;
use crate::guard::{GuardControl, LiteralGuard};
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
    /// The largest literal (message) accepted from this server, in bytes.
    pub max_literal: u64,
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
/// with DEFLATE (RFC 4978) once the session has negotiated it; with a literal guard on
/// the layer the response parser reads.
pub struct Transport {
    kind: Kind,
    guard: Option<LiteralGuard>,
}

enum Kind {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Deflate(Box<async_imap::DeflateStream<Stream>>),
}

impl Transport {
    fn plain(tcp: TcpStream) -> Transport {
        Transport {
            kind: Kind::Plain(tcp),
            guard: None,
        }
    }

    /// A compressed layer over `inner`, watched by a new guard.
    pub(crate) fn deflate(inner: async_imap::DeflateStream<Stream>, guard: LiteralGuard) -> Self {
        Transport {
            kind: Kind::Deflate(Box::new(inner)),
            guard: Some(guard),
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Plain(_) => "Transport::Plain",
            Kind::Tls(_) => "Transport::Tls",
            Kind::Deflate(_) => "Transport::Deflate",
        })
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        let r = match &mut this.kind {
            Kind::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Kind::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Kind::Deflate(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let (Poll::Ready(Ok(())), Some(g)) = (&r, this.guard.as_mut())
            && let Err(too_large) = g.scan(&buf.filled()[start..])
        {
            // The announcement never reaches the parser, so nothing is allocated for it.
            buf.set_filled(start);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, too_large)));
        }
        r
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().kind {
            Kind::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Kind::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Kind::Deflate(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            Kind::Plain(s) => Pin::new(s).poll_flush(cx),
            Kind::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Kind::Deflate(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            Kind::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Kind::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Kind::Deflate(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
        hint: String::new(),
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

async fn tls_wrap(
    cfg: &ServerConfig,
    tcp: TcpStream,
    guard: &Arc<GuardControl>,
) -> Result<Transport, ImapError> {
    let config = tls_config(cfg)?;
    let name = rustls::pki_types::ServerName::try_from(cfg.endpoint.host.clone()).map_err(|e| {
        ImapError::Tls {
            server: cfg.label(),
            reason: format!("invalid server name: {e}"),
            hint: String::new(),
        }
    })?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let reason = e.to_string();
            // A plain-text server answering a TLS ClientHello with its greeting.
            let hint = if reason.contains("InvalidContentType") || reason.contains("corrupt message")
            {
                format!(
                    "; the server answered in plain text, so {} is not a TLS port: use imap://{}@{}:{} (STARTTLS) or the server's TLS port (usually 993)",
                    cfg.endpoint.port, cfg.endpoint.user, cfg.endpoint.host, cfg.endpoint.port
                )
            } else if reason.contains("certificate") || reason.contains("Certificate") {
                "; if the server uses a private CA, pass its certificate with --from-ca-file/--to-ca-file"
                    .to_string()
            } else {
                String::new()
            };
            ImapError::Tls {
                server: cfg.label(),
                reason,
                hint,
            }
        })?;
    Ok(Transport {
        kind: Kind::Tls(Box::new(tls)),
        guard: Some(LiteralGuard::new(guard.clone())),
    })
}

/// What the TCP connect error means for the user.
fn connect_error(cfg: &ServerConfig, e: &io::Error) -> ImapError {
    let hint = match e.kind() {
        io::ErrorKind::ConnectionRefused => format!(
            "; nothing accepts connections on port {} of {}: check the port (IMAP is 143 with STARTTLS, 993 with TLS) and that the server runs",
            cfg.endpoint.port, cfg.endpoint.host
        ),
        _ if e.to_string().contains("failed to lookup address")
            || e.to_string().contains("Name or service not known") =>
        {
            format!(
                "; the host name {} does not resolve: check its spelling",
                cfg.endpoint.host
            )
        }
        _ => String::new(),
    };
    // Nothing listens there, or the name or route does not exist: an address to check
    // (said at once by a one-off command), an outage to wait out in the fleet.
    let unreachable = matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    ) || !hint.is_empty();
    ImapError::Connect {
        server: cfg.label(),
        reason: e.to_string(),
        hint,
        unreachable,
    }
}

/// How long a server has to greet: a client talking plain text to a TLS port waits
/// for a greeting that never comes.
const GREETING_TIMEOUT: Duration = Duration::from_secs(20);

/// The greeting's wait: within the whole connection's time (`cfg.timeout`), so that the
/// silence is named as such (a TLS port?) rather than as a timeout to retry.
fn greeting_timeout(cfg: &ServerConfig) -> Duration {
    GREETING_TIMEOUT.min(cfg.timeout.mul_f64(0.75))
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
        .map_err(|e| connect_error(cfg, &e))?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    let io_err = |op: &str, e: &dyn fmt::Display| ImapError::Io {
        op: format!("{op} with {server}"),
        reason: e.to_string(),
    };
    let guard = GuardControl::new(cfg.max_literal);

    let transport = match cfg.endpoint.security {
        Security::Tls => tls_wrap(cfg, tcp, &guard).await?,
        Security::StartTls => Transport::plain(tcp),
    };
    let mut client = async_imap::Client::new(BufWriter::with_capacity(64 * 1024, transport));
    match tokio::time::timeout(greeting_timeout(cfg), read_greeting(&mut client, &server)).await {
        Ok(r) => r?,
        Err(_) => {
            let reason = format!(
                "no greeting within {:.1}s",
                greeting_timeout(cfg).as_secs_f64()
            );
            return Err(match cfg.endpoint.security {
                // Silence on a plain connection is what a TLS port does while it waits
                // for our handshake: a TLS mismatch to fix, not an outage to retry.
                Security::StartTls => ImapError::Tls {
                    server: server.clone(),
                    reason,
                    hint: format!(
                        "; port {} may expect TLS from the first byte (usually 993): use imaps://{}@{}:{}",
                        cfg.endpoint.port, cfg.endpoint.user, cfg.endpoint.host, cfg.endpoint.port
                    ),
                },
                Security::Tls => ImapError::Connect {
                    server: server.clone(),
                    reason,
                    hint: String::new(),
                    unreachable: false,
                },
            });
        }
    }

    if cfg.endpoint.security == Security::StartTls {
        let caps = crate::auth::capabilities(&mut client, &server).await?;
        if caps.iter().any(|c| c == "STARTTLS") {
            // Advertised: it must work. A refusal here is what a man in the middle
            // stripping TLS looks like; the password is never sent in plain text then.
            match client.run_command_and_check_ok("STARTTLS", None).await {
                Ok(()) => {}
                Err(async_imap::error::Error::No(t) | async_imap::error::Error::Bad(t)) => {
                    return Err(ImapError::StartTlsFailed {
                        server,
                        reason: crate::raw::clean_server_text(&t),
                    });
                }
                Err(e) => return Err(io_err("STARTTLS", &e)),
            }
            let tcp = match client.into_inner().into_inner().kind {
                Kind::Plain(tcp) => tcp,
                Kind::Tls(_) | Kind::Deflate(_) => {
                    return Err(ImapError::Unsupported(
                        "STARTTLS on a TLS connection".into(),
                    ));
                }
            };
            let tls = tls_wrap(cfg, tcp, &guard).await?;
            client = async_imap::Client::new(BufWriter::with_capacity(64 * 1024, tls));
        } else if cfg.allow_plaintext {
            warn_plaintext_once(&server);
            // Watch the plain stream too.
            client.get_mut().get_mut().guard = Some(LiteralGuard::new(guard.clone()));
        } else {
            return Err(ImapError::PlaintextRefused { server });
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
    ImapSession::start(session, cfg.clone(), peer, guard).await
}

/// One warning per server and process, not one per connection: a migration opens
/// dozens, and the warning would tear the progress bars.
fn warn_plaintext_once(server: &str) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut w = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if !w.iter().any(|s| s == server) {
        w.push(server.to_string());
        tracing::warn!(server = %server, "no STARTTLS: logging in over plain text as allowed");
    }
}

async fn read_greeting(
    client: &mut async_imap::Client<Stream>,
    server: &str,
) -> Result<(), ImapError> {
    let greeting = client
        .read_response()
        .await
        .map_err(|e| crate::raw::stream_error(&format!("greeting from {server}"), e))?;
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
                crate::raw::clean(outcome.information.as_deref().unwrap_or(""))
            ),
            hint: String::new(),
            unreachable: false,
        }),
        Some(_) => Err(ImapError::Protocol {
            op: format!("greeting from {server}"),
            text: "the server's first line is not an IMAP greeting".into(),
        }),
        None => Err(ImapError::Connect {
            server: server.to_string(),
            reason: "the server closed the connection before greeting".into(),
            hint: String::new(),
            unreachable: false,
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
    /// The largest message accepted from a server, in bytes.
    pub max_literal: u64,
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
                max_literal: self.max_literal,
            })
        };
        Ok(std::sync::Arc::new(ImapConnector {
            source: config(&m.source, creds.source_password, Side::Source)?,
            target: config(&m.dest, creds.dest_password, Side::Destination)?,
        }))
    }
}
