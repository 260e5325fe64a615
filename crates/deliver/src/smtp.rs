//! The submission adapter: SMTP AUTH over implicit TLS (`smtps://`, port 465) or
//! STARTTLS (`smtp://`, port 587, TLS required) with lettre and rustls, certificates
//! verified against the system roots plus an optional private CA. Implements the
//! [`Submitter`] port. Passwords and tokens go to lettre only; lettre's own types
//! (whose `Debug` would show them) are never formatted.

use crate::error::DeliverError;
use async_trait::async_trait;
use lettre::AsyncTransport;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, Error as SmtpError};
use mailshift_core::submission::{Accepted, Envelope, Submitter};
use mailshift_imap::TokenSource;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How the submission connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte (RFC 8314), port 465 by default.
    Tls,
    /// `smtp://`: STARTTLS, required (never a plain-text login), port 587 by default.
    StartTls,
}

/// A submission server and the account to log in as. Never holds a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub security: SmtpSecurity,
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl fmt::Display for SmtpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.security {
            SmtpSecurity::Tls => "smtps",
            SmtpSecurity::StartTls => "smtp",
        };
        write!(f, "{scheme}://{}@{}:{}", self.user, self.host, self.port)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl FromStr for SmtpEndpoint {
    type Err = DeliverError;

    fn from_str(s: &str) -> Result<Self, DeliverError> {
        let bad = |why: &str| DeliverError::Endpoint(why.to_string());
        let (security, rest) = if let Some(r) = s.strip_prefix("smtps://") {
            (SmtpSecurity::Tls, r)
        } else if let Some(r) = s.strip_prefix("smtp://") {
            (SmtpSecurity::StartTls, r)
        } else {
            return Err(bad("unsupported submission address"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') {
            return Err(bad("a submission address takes no path or query"));
        }
        let Some((userinfo, hostport)) = rest.rsplit_once('@') else {
            return Err(bad("the user is missing"));
        };
        if userinfo.contains(':') {
            // Never echo the string: it holds a password.
            return Err(bad(
                "a password was given inside the submission address; pass it with \
                 --smtp-password-file or MAILSHIFT_SMTP_PASSWORD instead",
            ));
        }
        let user = percent_decode(userinfo).ok_or_else(|| bad("the user is not valid UTF-8"))?;
        if user.is_empty() {
            return Err(bad("the user is empty"));
        }
        let default_port = match security {
            SmtpSecurity::Tls => 465,
            SmtpSecurity::StartTls => 587,
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| bad(&format!("`{p}` is not a port")))?;
                (h, port)
            }
            _ => (hostport, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        Ok(SmtpEndpoint {
            security,
            host: host.to_ascii_lowercase(),
            port,
            user,
        })
    }
}

/// How to log in to the submission service.
#[derive(Clone)]
pub enum SmtpAuth {
    /// AUTH PLAIN, or LOGIN where PLAIN is not offered.
    Password(SecretString),
    /// AUTH XOAUTH2 with an access token read afresh at every login.
    OAuth2(TokenSource),
}

impl fmt::Debug for SmtpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpAuth::Password(_) => f.write_str("Password(<redacted>)"),
            SmtpAuth::OAuth2(_) => f.write_str("OAuth2(<token source>)"),
        }
    }
}

/// The submission adapter.
#[derive(Clone, Debug)]
pub struct SmtpSubmitter {
    pub endpoint: SmtpEndpoint,
    pub auth: SmtpAuth,
    /// An extra CA certificate (PEM) to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting and for each SMTP command.
    pub timeout: Duration,
}

/// What a reply code says about the failure: a refused login, or a refused message.
pub fn is_auth_code(code: u16) -> bool {
    // 530 authentication required, 534 mechanism too weak, 535 credentials invalid,
    // 538 encryption required for the mechanism (RFC 4954).
    matches!(code, 530 | 534 | 535 | 538)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

impl SmtpSubmitter {
    fn label(&self) -> String {
        format!("submission server {}", self.endpoint)
    }

    fn classify(&self, e: &SmtpError) -> DeliverError {
        let server = self.label();
        let reason = chain(e);
        let code = e.status().and_then(|c| c.to_string().parse::<u16>().ok());
        if code.is_some_and(is_auth_code) {
            return DeliverError::Auth {
                server,
                user: self.endpoint.user.clone(),
                reason,
            };
        }
        if e.is_tls() {
            return DeliverError::Tls { server, reason };
        }
        if e.is_permanent() || e.is_transient() {
            return DeliverError::Refused {
                server,
                user: self.endpoint.user.clone(),
                reason,
            };
        }
        if e.is_client() && reason.contains("does not expect a challenge") {
            // XOAUTH2: a refused token is answered with a challenge carrying the error.
            return DeliverError::Auth {
                server,
                user: self.endpoint.user.clone(),
                reason: "the server answered the token with an error challenge: an expired, \
                         revoked or wrong token, or one without the mail-sending scope"
                    .into(),
            };
        }
        if e.is_client() && reason.contains("authentication mechanism") {
            return DeliverError::Unsupported {
                server,
                reason: format!(
                    "the server offers no login mechanism for these credentials ({reason}): \
                     PLAIN or LOGIN for a password, XOAUTH2 for a token"
                ),
            };
        }
        if e.is_timeout() {
            return DeliverError::Network {
                server,
                reason: format!("no answer within {:?} ({reason})", self.timeout),
            };
        }
        DeliverError::Network { server, reason }
    }

    async fn transport(&self) -> Result<AsyncSmtpTransport<lettre::Tokio1Executor>, DeliverError> {
        let ep = &self.endpoint;
        let tls_err = |reason: String| DeliverError::Tls {
            server: self.label(),
            reason,
        };
        let mut params = TlsParameters::builder(ep.host.clone());
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| tls_err(format!("cannot read the CA file {}: {e}", path.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| tls_err(format!("CA file {}: {e}", path.display())))?;
            params = params.add_root_certificate(cert);
        }
        let params = params.build_rustls().map_err(|e| tls_err(chain(&e)))?;
        let tls = match ep.security {
            SmtpSecurity::Tls => Tls::Wrapper(params),
            SmtpSecurity::StartTls => Tls::Required(params),
        };
        let (credentials, mechanisms) = match &self.auth {
            SmtpAuth::Password(pw) => (
                Credentials::new(ep.user.clone(), pw.expose_secret().to_string()),
                vec![Mechanism::Plain, Mechanism::Login],
            ),
            SmtpAuth::OAuth2(src) => {
                let token = src
                    .token(&self.label())
                    .await
                    .map_err(|e| DeliverError::Token(e.to_string()))?;
                (
                    Credentials::new(ep.user.clone(), token.expose_secret().to_string()),
                    vec![Mechanism::Xoauth2],
                )
            }
        };
        Ok(
            AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(ep.host.clone())
                .port(ep.port)
                .tls(tls)
                .credentials(credentials)
                .authentication(mechanisms)
                .timeout(Some(self.timeout))
                .build(),
        )
    }

    /// The whole exchange is bounded too: lettre's timeout applies per command.
    fn overall(&self) -> Duration {
        self.timeout * 4
    }
}

fn address(s: &str) -> Result<lettre::Address, DeliverError> {
    s.parse::<lettre::Address>()
        .map_err(|e| DeliverError::Endpoint(format!("`{s}` is not a mail address: {e}")))
}

#[async_trait]
impl Submitter for SmtpSubmitter {
    fn label(&self) -> String {
        self.endpoint.to_string()
    }

    async fn submit(&self, envelope: &Envelope, raw: &[u8]) -> mailshift_core::Result<Accepted> {
        let from = address(&envelope.mail_from)?;
        let to = envelope
            .rcpt_to
            .iter()
            .map(|r| address(r))
            .collect::<Result<Vec<_>, _>>()?;
        let env = lettre::address::Envelope::new(Some(from), to)
            .map_err(|e| DeliverError::Endpoint(format!("bad envelope: {e}")))?;
        let transport = self.transport().await?;
        let sent = tokio::time::timeout(self.overall(), transport.send_raw(&env, raw))
            .await
            .map_err(|_| DeliverError::Network {
                server: self.label(),
                reason: format!(
                    "the submission did not complete within {:?}",
                    self.overall()
                ),
            })?;
        match sent {
            Ok(resp) => Ok(Accepted {
                reply: format!(
                    "{} {}",
                    resp.code(),
                    resp.message().collect::<Vec<_>>().join(" ")
                ),
            }),
            Err(e) => Err(self.classify(&e).into()),
        }
    }

    async fn check_login(&self) -> mailshift_core::Result<()> {
        let transport = self.transport().await?;
        match tokio::time::timeout(self.overall(), transport.test_connection()).await {
            Err(_) => Err(DeliverError::Network {
                server: self.label(),
                reason: format!("no login within {:?}", self.overall()),
            }
            .into()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.classify(&e).into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn submission_addresses_parse_with_default_ports() {
        let e: SmtpEndpoint = "smtps://alice@example.com@smtp.new.example"
            .parse()
            .unwrap();
        assert_eq!(e.security, SmtpSecurity::Tls);
        assert_eq!(e.user, "alice@example.com");
        assert_eq!(e.host, "smtp.new.example");
        assert_eq!(e.port, 465);
        let e: SmtpEndpoint = "smtp://bob%40example.com@127.0.0.1:2587".parse().unwrap();
        assert_eq!(e.security, SmtpSecurity::StartTls);
        assert_eq!(e.user, "bob@example.com");
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2587));
        assert_eq!(e.to_string(), "smtp://bob@example.com@127.0.0.1:2587");
        let e: SmtpEndpoint = "smtps://u@[::1]:465".parse().unwrap();
        assert_eq!(e.host, "::1");
        let err = "smtps://u:secret-pw@h".parse::<SmtpEndpoint>().unwrap_err();
        assert!(!err.to_string().contains("secret-pw"), "{err}");
        assert!("imap://u@h".parse::<SmtpEndpoint>().is_err());
        assert!("smtps://h".parse::<SmtpEndpoint>().is_err());
    }

    #[test]
    fn login_refusals_are_told_apart_by_their_code() {
        assert!(is_auth_code(535));
        assert!(is_auth_code(530));
        assert!(!is_auth_code(550));
        assert!(!is_auth_code(454));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let s = SmtpSubmitter {
            endpoint: "smtps://u@h".parse().unwrap(),
            auth: SmtpAuth::Password(SecretString::from("hunter2-secret".to_string())),
            ca_file: None,
            timeout: Duration::from_secs(5),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
