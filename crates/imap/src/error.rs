//! The IMAP adapter's error type and its classification into the domain's error kinds.
//!
//! A NO or BAD is classified by its response code (RFC 5530 and friends) first; the
//! server's free text is only a fallback for servers that send no code, and the phrases
//! matched there are listed in [`classify_text`].

use mailshift_core::{Error, ErrorKind};
use std::time::Duration;

/// A response code of a tagged NO/BAD, as far as it changes a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    /// `[TRYCREATE]`: the target folder does not exist.
    TryCreate,
    /// `[CANNOT]`: the operation (often a folder name) is not allowed.
    Cannot,
    /// `[NOPERM]`: no permission for that folder.
    NoPerm,
    /// `[NONEXISTENT]`: the folder does not exist.
    NonExistent,
    /// `[ALREADYEXISTS]`.
    AlreadyExists,
    /// `[OVERQUOTA]`.
    OverQuota,
    /// `[LIMIT]` (a size or count limit) or `[TOOBIG]`.
    Limit,
    /// `[UNAVAILABLE]`, `[INUSE]`: try again later.
    Unavailable,
    /// `[AUTHENTICATIONFAILED]`, `[AUTHORIZATIONFAILED]`, `[EXPIRED]`.
    Auth,
    /// `[SERVERBUG]`, `[CORRUPTION]`: the server is in trouble, maybe briefly.
    ServerBug,
    /// Any other code, upper case.
    Other(String),
}

impl Code {
    /// The code at the start of a response text (`[OVERQUOTA] Quota exceeded`).
    pub fn parse_leading(text: &str) -> Option<(Code, &str)> {
        let rest = text.trim_start().strip_prefix('[')?;
        let end = rest.find(']')?;
        let atom = rest[..end].split_whitespace().next()?.to_ascii_uppercase();
        let code = match atom.as_str() {
            "TRYCREATE" => Code::TryCreate,
            "CANNOT" => Code::Cannot,
            "NOPERM" => Code::NoPerm,
            "NONEXISTENT" => Code::NonExistent,
            "ALREADYEXISTS" => Code::AlreadyExists,
            "OVERQUOTA" => Code::OverQuota,
            "LIMIT" | "TOOBIG" => Code::Limit,
            "UNAVAILABLE" | "INUSE" => Code::Unavailable,
            "AUTHENTICATIONFAILED" | "AUTHORIZATIONFAILED" | "EXPIRED" => Code::Auth,
            "SERVERBUG" | "CORRUPTION" => Code::ServerBug,
            _ => Code::Other(atom),
        };
        Some((code, rest[end + 1..].trim_start()))
    }

    fn name(&self) -> &str {
        match self {
            Code::TryCreate => "TRYCREATE",
            Code::Cannot => "CANNOT",
            Code::NoPerm => "NOPERM",
            Code::NonExistent => "NONEXISTENT",
            Code::AlreadyExists => "ALREADYEXISTS",
            Code::OverQuota => "OVERQUOTA",
            Code::Limit => "LIMIT",
            Code::Unavailable => "UNAVAILABLE",
            Code::Auth => "AUTHENTICATIONFAILED",
            Code::ServerBug => "SERVERBUG",
            Code::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]", self.name())
    }
}

/// Everything that can go wrong talking to one server. Messages name the side (source or
/// destination) and the server, never a password.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to {server}: {reason}{hint}")]
    Connect {
        server: String,
        reason: String,
        /// What to check, when the cause is recognisable (wrong port, unknown host).
        hint: String,
        /// Nothing accepts connections there, or the host does not resolve (not a
        /// dropped or slow connection).
        unreachable: bool,
    },
    #[error("TLS with {server} failed: {reason}{hint}")]
    Tls {
        server: String,
        reason: String,
        hint: String,
    },
    #[error(
        "{server} does not offer STARTTLS, so the password would travel in plain text; \
         use imaps:// if the server has implicit TLS, or allow plain text on a trusted \
         network: `migrate --from-allow-plaintext` / `--to-allow-plaintext`, or for a fleet \
         mailbox `batch import --allow-plaintext` / `mailbox add --allow-plaintext`"
    )]
    PlaintextRefused { server: String },
    #[error(
        "{server} offered STARTTLS but refused it ({reason}); mailshift does not fall back \
         to plain text after a failed STARTTLS (someone may be tampering with the \
         connection)"
    )]
    StartTlsFailed { server: String, reason: String },
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
    #[error("{op} refused by the server: {}{text}", code.as_ref().map(|c| format!("{c} ")).unwrap_or_default())]
    No {
        op: String,
        code: Option<Code>,
        text: String,
    },
    #[error("{op}: the server answered BAD: {text}")]
    Bad { op: String, text: String },
    #[error("{op}: unexpected server response: {text}")]
    Protocol { op: String, text: String },
    /// A literal larger than mailshift accepts (a message above the ceiling, or a
    /// server announcing more than it said the message holds).
    #[error(
        "{op}: the server announced {announced} bytes, more than the {limit} bytes mailshift \
         accepts here; the connection was closed before reading them"
    )]
    LiteralTooLarge {
        op: String,
        announced: u64,
        limit: u64,
    },
    #[error("{0}")]
    Unsupported(String),
}

impl ImapError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImapError::Connect {
                unreachable: true, ..
            } => ErrorKind::Unreachable,
            ImapError::Connect { .. } | ImapError::Timeout { .. } | ImapError::Io { .. } => {
                ErrorKind::Network
            }
            ImapError::Tls { .. } => ErrorKind::Tls,
            ImapError::PlaintextRefused { .. } | ImapError::StartTlsFailed { .. } => {
                ErrorKind::Insecure
            }
            ImapError::Auth { .. } | ImapError::Token { .. } => ErrorKind::Auth,
            ImapError::No { code, text, .. } => match code {
                Some(c) => classify_code(c, text),
                None => classify_text(text),
            },
            ImapError::LiteralTooLarge { .. } => ErrorKind::TooLarge,
            ImapError::Bad { .. } | ImapError::Protocol { .. } | ImapError::Unsupported(_) => {
                ErrorKind::Protocol
            }
        }
    }
}

/// What a response code means for the caller's decision.
pub(crate) fn classify_code(code: &Code, text: &str) -> ErrorKind {
    match code {
        Code::OverQuota => ErrorKind::Quota,
        Code::Limit => ErrorKind::TooLarge,
        Code::Unavailable => ErrorKind::Throttled(suggested_backoff(&text.to_ascii_lowercase())),
        Code::ServerBug => ErrorKind::Network,
        Code::Auth => ErrorKind::Auth,
        Code::TryCreate | Code::Cannot | Code::NoPerm | Code::NonExistent => {
            ErrorKind::FolderRefused
        }
        Code::AlreadyExists => ErrorKind::FolderRefused,
        Code::Other(_) => classify_text(text),
    }
}

/// The fallback for a NO without a known code. Matched phrases (lower case): "quota"
/// (Quota); "too large", "too big", "maximum size", "size limit" (TooLarge); "throttl"
/// with Exchange's "Suggested Backoff Time: N milliseconds" (Throttled). Anything else
/// is a refusal of the command's message(s).
pub(crate) fn classify_text(text: &str) -> ErrorKind {
    let t = text.to_ascii_lowercase();
    if t.contains("quota") {
        ErrorKind::Quota
    } else if t.contains("too large")
        || t.contains("too big")
        || t.contains("maximum size")
        || t.contains("size limit")
    {
        ErrorKind::TooLarge
    } else if t.contains("throttl") {
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

    fn no(text: &str) -> ErrorKind {
        let (code, rest) = match Code::parse_leading(text) {
            Some((c, r)) => (Some(c), r.to_string()),
            None => (None, text.to_string()),
        };
        ImapError::No {
            op: "APPEND".into(),
            code,
            text: rest,
        }
        .kind()
    }

    #[test]
    fn codes_decide_before_text() {
        assert_eq!(
            no("[OVERQUOTA] Quota exceeded (mailbox for user is full)"),
            ErrorKind::Quota
        );
        assert_eq!(
            no("[LIMIT] Mail size is larger than the maximum size allowed"),
            ErrorKind::TooLarge
        );
        // Folder-level refusals never split a batch into single APPENDs.
        assert_eq!(
            no("[TRYCREATE] Mailbox doesn't exist: Foo"),
            ErrorKind::FolderRefused
        );
        assert_eq!(
            no("[CANNOT] Character not allowed in mailbox name: '.'"),
            ErrorKind::FolderRefused
        );
        assert!(!no("[CANNOT] Invalid mailbox name").is_per_message());
        assert_eq!(
            no("[UNAVAILABLE] Request is throttled. Suggested Backoff Time: 250 milliseconds"),
            ErrorKind::Throttled(Some(Duration::from_millis(250)))
        );
    }

    #[test]
    fn text_is_the_fallback() {
        assert_eq!(
            no("Request is throttled. Suggested Backoff Time: 250 milliseconds"),
            ErrorKind::Throttled(Some(Duration::from_millis(250)))
        );
        assert_eq!(no("Message too large"), ErrorKind::TooLarge);
        assert_eq!(no("Mailbox over quota"), ErrorKind::Quota);
        assert_eq!(no("Something odd"), ErrorKind::Refused);
        assert_eq!(no("[XWEIRD] Message too large"), ErrorKind::TooLarge);
    }

    #[test]
    fn messages_show_the_code() {
        let e = ImapError::No {
            op: "CREATE Projects/v1.2".into(),
            code: Some(Code::Cannot),
            text: "Character not allowed".into(),
        };
        assert_eq!(
            e.to_string(),
            "CREATE Projects/v1.2 refused by the server: [CANNOT] Character not allowed"
        );
    }
}
