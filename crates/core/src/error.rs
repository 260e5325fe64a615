//! The one error type of the domain and of the ports, with a classification that callers
//! use to decide between retrying, skipping a message and giving up on a folder.

use std::time::Duration;

/// What went wrong, as far as the caller's decision is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad user input (URL, folder map, regex). Fix the command line.
    Usage,
    /// The server refused our credentials.
    Auth,
    /// The connection dropped, or an operation timed out.
    Network,
    /// The server cannot be reached at all: unknown host, connection refused, no route.
    /// Worth waiting for in the fleet (a restart, a failover); at the start of a
    /// one-off command it usually means a mistyped address, said at once.
    Unreachable,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The server would require a plain-text login and it was not allowed.
    Insecure,
    /// The server asked us to slow down; retry after the hint if any.
    Throttled(Option<Duration>),
    /// One message was refused because it is too large for the destination.
    TooLarge,
    /// One message was refused because the destination mailbox is full.
    Quota,
    /// The server refused a command (NO) for another reason, without a response code
    /// that says why: treated as concerning the message(s) of the command.
    Refused,
    /// The server refused something about a whole folder (`[CANNOT]` a name it does not
    /// allow, `[NOPERM]`, `[TRYCREATE]`, `[NONEXISTENT]`): splitting a batch cannot help.
    FolderRefused,
    /// The server said something we could not understand (BAD, parse error).
    Protocol,
    /// The state store failed.
    Store,
    /// The job queue failed.
    Queue,
    /// A folder's UIDVALIDITY changed: the stored checkpoint no longer applies.
    UidValidityChanged,
    /// The pass was asked to stop (shutdown) after a checkpoint; the job is handed back.
    Interrupted,
    /// The pass must wait for other folders (a label view after its label folders); the
    /// job comes back after this long, without counting as an attempt.
    Deferred(Duration),
}

impl ErrorKind {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorKind::Network
                | ErrorKind::Unreachable
                | ErrorKind::Throttled(_)
                | ErrorKind::Store
                | ErrorKind::Queue
        )
    }

    /// Whether the cause lies outside the mailbox (a broker, a database, a server that
    /// cannot be reached or asks to slow down): worth waiting for, never a reason to mark
    /// a mailbox failed.
    pub fn is_infrastructure(&self) -> bool {
        self.is_retryable()
    }

    /// Whether this refusal concerns one message only (the rest of the folder can go on).
    pub fn is_per_message(&self) -> bool {
        matches!(
            self,
            ErrorKind::TooLarge | ErrorKind::Quota | ErrorKind::Refused
        )
    }

    /// A short stable name, for JSON output and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::Auth => "auth",
            ErrorKind::Network => "network",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Tls => "tls",
            ErrorKind::Insecure => "insecure",
            ErrorKind::Throttled(_) => "throttled",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::Quota => "quota",
            ErrorKind::Refused => "refused",
            ErrorKind::FolderRefused => "folder-refused",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Store => "store",
            ErrorKind::Queue => "queue",
            ErrorKind::UidValidityChanged => "uidvalidity-changed",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Deferred(_) => "deferred",
        }
    }
}

/// An error with its classification and a message a user can act on.
///
/// Messages are lowercase, without trailing punctuation, and never contain a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Usage, message)
    }

    /// Prefixes the message with where it happened ("source INBOX: ...").
    pub fn context(mut self, place: impl std::fmt::Display) -> Self {
        self.message = format!("{place}: {}", self.message);
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
