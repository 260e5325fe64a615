//! A private certificate authority for tests ([`TestCa`], openssl CLI) and a small
//! HTTPS server on loopback ([`HttpsServer`], tokio-rustls) that serves fixed files, e.g.
//! an MTA-STS policy at `/.well-known/mta-sts.txt` with a certificate for
//! `mta-sts.DOMAIN` signed by the test CA. [`HttpsServer::hanging`] accepts connections
//! and never answers, like a dead policy host behind a firewall that drops nothing.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running the openssl CLI (install Debian's `openssl` package)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A throwaway certificate authority (ECDSA P-256) in its own temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
    serial: AtomicUsize,
}

impl TestCa {
    pub fn new() -> anyhow::Result<TestCa> {
        let dir = tempfile::Builder::new()
            .prefix("mailshift-ca-")
            .tempdir()
            .context("creating the CA directory")?;
        // Servers running as other users (postfix) read certificates from here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=mailshift test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        Ok(TestCa {
            dir,
            serial: AtomicUsize::new(0),
        })
    }

    /// The CA certificate (PEM), to trust with `--ca-file`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a server certificate for `names` (host names or IP addresses); returns
    /// (certificate PEM, key PEM), both world-readable.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let n = self.serial.fetch_add(1, Ordering::SeqCst);
        let dir = self.dir.path();
        let (cert, key, csr, ext) = (
            format!("server{n}.pem"),
            format!("server{n}.key"),
            format!("server{n}.csr"),
            format!("server{n}.ext"),
        );
        let first = names.first().copied().unwrap_or("localhost");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={first}"),
            ],
        )?;
        let sans = names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={sans}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "3650",
                "-extfile",
                &ext,
            ],
        )?;
        for f in [&cert, &key] {
            std::fs::set_permissions(
                dir.join(f),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )?;
        }
        Ok((dir.join(cert), dir.join(key)))
    }
}

/// One file the server answers with.
#[derive(Clone, Debug)]
pub struct Route {
    pub path: String,
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Route {
    /// `200 text/plain` at `path`.
    pub fn text(path: &str, body: &str) -> Route {
        Route {
            path: path.into(),
            status: 200,
            content_type: "text/plain".into(),
            body: body.into(),
        }
    }
}

/// A running HTTPS (or silent) server on 127.0.0.1; stops when dropped.
pub struct HttpsServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsServer {
    /// Serves `routes` over TLS with a certificate for `names` issued by `ca`; other
    /// paths get 404.
    pub async fn start(ca: &TestCa, names: &[&str], routes: Vec<Route>) -> HttpsServer {
        let (cert, key) = ca.issue(names).expect("issue a test certificate");
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
            .expect("read certificate")
            .map(|c| c.expect("certificate PEM"))
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("read key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind https");
        let addr = listener.local_addr().expect("https addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let routes = Arc::new(routes);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let routes = routes.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 2048];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, ctype, body) = match routes.iter().find(|r| r.path == path) {
                        Some(r) => (r.status, r.content_type.clone(), r.body.clone()),
                        None => (404, "text/plain".into(), "not found\n".into()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        HttpsServer {
            addr,
            requests,
            task,
        }
    }

    /// Accepts TCP connections and never sends a byte (no TLS handshake, no answer).
    pub async fn hanging() -> HttpsServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(tcp);
            }
        });
        HttpsServer {
            addr,
            requests,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections that sent a request (or, for a hanging server, connected).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
