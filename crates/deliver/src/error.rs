//! The one error type of the deliverability crate, converted to `mailshift_core::Error`
//! at the port boundary. Messages name the server and what to do, never a secret.

use mailshift_core::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// A submission address that does not parse.
    #[error(
        "{0} (expected smtps://USER@HOST[:PORT] for implicit TLS, port 465, or smtp://USER@HOST[:PORT] for STARTTLS, port 587)"
    )]
    Endpoint(String),
    /// The submission server refused the credentials.
    #[error(
        "{server}: login as {user} refused ({reason}); check the password or token and that the account may send mail"
    )]
    Auth {
        server: String,
        user: String,
        reason: String,
    },
    /// The server offers no login mechanism mailshift can use with these credentials.
    #[error("{server}: {reason}")]
    Unsupported { server: String, reason: String },
    /// The server refused the message (MAIL FROM, RCPT TO or DATA).
    #[error(
        "{server}: the probe was refused ({reason}); check that {user} may send as the From address and to the probe address"
    )]
    Refused {
        server: String,
        user: String,
        reason: String,
    },
    /// TLS failed (certificate, handshake).
    #[error("{server}: TLS failed ({reason}); for a private CA pass --ca-file")]
    Tls { server: String, reason: String },
    /// Connecting, a dropped connection or a timeout.
    #[error("{server}: {reason}")]
    Network { server: String, reason: String },
    /// The OAuth token could not be read.
    #[error("{0}")]
    Token(String),
}

impl DeliverError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DeliverError::Endpoint(_) => ErrorKind::Usage,
            DeliverError::Auth { .. } | DeliverError::Token(_) => ErrorKind::Auth,
            DeliverError::Unsupported { .. } => ErrorKind::Refused,
            DeliverError::Refused { .. } => ErrorKind::Refused,
            DeliverError::Tls { .. } => ErrorKind::Tls,
            DeliverError::Network { .. } => ErrorKind::Network,
        }
    }
}

impl From<DeliverError> for mailshift_core::Error {
    fn from(e: DeliverError) -> Self {
        mailshift_core::Error::new(e.kind(), e.to_string())
    }
}
