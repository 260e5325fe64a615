//! The IMAP adapter's error type and its classification into the domain's error kinds.

use mailshift_core::{Error, ErrorKind};
use std::time::Duration;

/// Everything that can go wrong talking to one server. Messages name the side (source or
/// destination) and the server, never a password.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("TLS with {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error(
        "{server} does not offer STARTTLS, so the password would travel in plain text; \
         use imaps:// if the server has implicit TLS, or pass --allow-plaintext on a trusted network"
    )]
    PlaintextRefused { server: String },
    #[error("login as {user} on {server} was refused: {reason}; check the user name and password")]
    Auth {
        server: String,
        user: String,
        reason: String,
    },
    /// An OAuth token could not be obtained or was refused.
    #[error("OAuth login to {server}: {reason}")]
    Token { server: String, reason: String },
    #[error("{op} timed out after {}s", .after.as_secs())]
    Timeout { op: String, after: Duration },
    #[error("connection lost during {op}: {reason}")]
    Io { op: String, reason: String },
    /// The server answered NO; `text` is its own explanation.
    #[error("{op} refused by the server: {text}")]
    No { op: String, text: String },
    #[error("{op}: the server answered BAD: {text}")]
    Bad { op: String, text: String },
    #[error("{op}: unexpected server response: {text}")]
    Protocol { op: String, text: String },
    #[error("{0}")]
    Unsupported(String),
}

impl ImapError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImapError::Connect { .. } | ImapError::Timeout { .. } | ImapError::Io { .. } => {
                ErrorKind::Network
            }
            ImapError::Tls { .. } => ErrorKind::Tls,
            ImapError::PlaintextRefused { .. } => ErrorKind::Insecure,
            ImapError::Auth { .. } | ImapError::Token { .. } => ErrorKind::Auth,
            ImapError::No { text, .. } => classify_no(text),
            ImapError::Bad { .. } | ImapError::Protocol { .. } | ImapError::Unsupported(_) => {
                ErrorKind::Protocol
            }
        }
    }
}

/// Reads RFC 5530 response codes and common server phrasings of a NO.
pub(crate) fn classify_no(text: &str) -> ErrorKind {
    let t = text.to_ascii_lowercase();
    if t.contains("[overquota]") || t.contains("quota") {
        ErrorKind::Quota
    } else if t.contains("[limit]")
        || t.contains("[toobig]")
        || t.contains("too large")
        || t.contains("too big")
        || t.contains("maximum size")
        || t.contains("size limit")
    {
        ErrorKind::TooLarge
    } else if t.contains("[unavailable]") || t.contains("throttl") || t.contains("[inuse]") {
        ErrorKind::Throttled(suggested_backoff(&t))
    } else {
        ErrorKind::Refused
    }
}

/// Exchange: "Request is throttled. Suggested Backoff Time: 28 milliseconds".
fn suggested_backoff(lower: &str) -> Option<Duration> {
    let idx = lower.find("backoff time:")?;
    let rest = lower[idx + "backoff time:".len()..].trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(Duration::from_millis)
}

impl From<ImapError> for Error {
    fn from(e: ImapError) -> Self {
        Error::new(e.kind(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_refusals() {
        assert_eq!(
            classify_no("[OVERQUOTA] Quota exceeded (mailbox for user is full)"),
            ErrorKind::Quota
        );
        assert_eq!(
            classify_no(
                "[LIMIT] Mail size is larger than the maximum size allowed by server configuration"
            ),
            ErrorKind::TooLarge
        );
        assert_eq!(
            classify_no("Request is throttled. Suggested Backoff Time: 250 milliseconds"),
            ErrorKind::Throttled(Some(Duration::from_millis(250)))
        );
        assert_eq!(
            classify_no("[CANNOT] Invalid mailbox name"),
            ErrorKind::Refused
        );
    }
}
