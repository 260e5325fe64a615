//! The ManageSieve adapter's one error type, and its classification into the domain's
//! error kinds at the port boundary. Messages name the side and server (and the script
//! when there is one) and say what to do; they never hold a password, a token or a
//! script's content.

use crate::response::ParseError;
use mailshift_core::{Error, ErrorKind};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SieveError {
    #[error(
        "cannot connect to {server}: {reason}; check the host and port (ManageSieve usually listens on 4190)"
    )]
    Connect { server: String, reason: String },
    #[error("TLS with {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error(
        "{server} does not offer STARTTLS, so the password would travel in plain text; \
         use sieves:// if the server has implicit TLS, or allow plain text on a trusted network"
    )]
    PlaintextRefused { server: String },
    #[error(
        "{server} refused STARTTLS although it offers it: {reason}; not continuing in plain \
         text, check the server's TLS setup"
    )]
    StartTlsRefused { server: String, reason: String },
    #[error("login as {user} on {server} was refused: {reason}; check the user name and password")]
    Auth {
        server: String,
        user: String,
        reason: String,
    },
    #[error(
        "{mechanism} login as {user} on {server} was refused: {reason}; the token may have \
         expired or lack the scope for ManageSieve"
    )]
    Token {
        server: String,
        user: String,
        mechanism: &'static str,
        reason: String,
    },
    #[error(
        "{op} with {server} timed out after {after:?}; the server is overloaded or unreachable, try again later"
    )]
    Timeout {
        server: String,
        op: String,
        after: Duration,
    },
    #[error("connection to {server} lost during {op}: {reason}")]
    Io {
        server: String,
        op: String,
        reason: String,
    },
    #[error("{server} closed the connection during {op}: {text}")]
    Bye {
        server: String,
        op: String,
        text: String,
    },
    /// A NO about a command; `script` names the script it concerned.
    #[error("{server} refused {op}{}: {text}{}", script_part(.script), hint_part(.code.as_deref(), .op))]
    Refused {
        server: String,
        op: &'static str,
        script: Option<String>,
        /// The response code's name, upper case (`QUOTA/MAXSCRIPTS`).
        code: Option<String>,
        text: String,
    },
    #[error("{server} answered {op} with something unexpected: {what}")]
    Protocol {
        server: String,
        op: String,
        what: String,
    },
    #[error("{0}")]
    Unsupported(String),
}

fn script_part(script: &Option<String>) -> String {
    script
        .as_ref()
        .map(|s| format!(" of script {s:?}"))
        .unwrap_or_default()
}

/// What the user can do about a refusal, from its response code and command.
fn hint_part(code: Option<&str>, op: &str) -> &'static str {
    match code.map(Code) {
        Some(c) if c.is("QUOTA") && c.0.ends_with("/MAXSCRIPTS") => {
            "; the destination allows no more scripts: remove unused ones there or raise its limit"
        }
        Some(c) if c.is("QUOTA") && c.0.ends_with("/MAXSIZE") => {
            "; the script is larger than the destination allows: raise its limit or shorten the script"
        }
        Some(c) if c.is("QUOTA") => {
            "; the destination's Sieve quota is full: free space there or raise the quota"
        }
        Some(c) if c.is("NONEXISTENT") => "; the script no longer exists: run again",
        Some(c) if c.is("TRYLATER") => "; the server is busy: try again later",
        _ if op == "CHECKSCRIPT" || op == "PUTSCRIPT" => {
            "; the destination cannot run this script as it is: enable the missing extension \
             there, or adapt the script and run again"
        }
        _ => "",
    }
}

/// A response code's name, as the adapter keeps it.
struct Code<'a>(&'a str);

impl Code<'_> {
    fn is(&self, base: &str) -> bool {
        self.0.split('/').next() == Some(base)
    }
}

impl SieveError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SieveError::Connect { .. }
            | SieveError::Timeout { .. }
            | SieveError::Io { .. }
            | SieveError::Bye { .. } => ErrorKind::Network,
            SieveError::Tls { .. } | SieveError::StartTlsRefused { .. } => ErrorKind::Tls,
            SieveError::PlaintextRefused { .. } => ErrorKind::Insecure,
            SieveError::Auth { .. } | SieveError::Token { .. } => ErrorKind::Auth,
            SieveError::Refused { code, .. } => match code.as_deref().map(Code) {
                Some(c) if c.is("QUOTA") && c.0.ends_with("/MAXSIZE") => ErrorKind::TooLarge,
                Some(c) if c.is("QUOTA") => ErrorKind::Quota,
                Some(c) if c.is("TRYLATER") => ErrorKind::Throttled(None),
                _ => ErrorKind::Refused,
            },
            SieveError::Protocol { .. } | SieveError::Unsupported(_) => ErrorKind::Protocol,
        }
    }
}

impl From<SieveError> for Error {
    fn from(e: SieveError) -> Self {
        Error::new(e.kind(), e.to_string())
    }
}

impl SieveError {
    pub(crate) fn parse(server: &str, op: &str, e: ParseError) -> SieveError {
        SieveError::Protocol {
            server: server.to_string(),
            op: op.to_string(),
            what: e.to_string(),
        }
    }
}

/// A server's text made fit for one line of a message: line breaks become "; " (each
/// line without its final period), control characters go, and a runaway text is cut.
pub(crate) fn clean_text(text: &str) -> String {
    let joined = text
        .lines()
        .map(|l| l.trim().trim_end_matches('.'))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let mut out: String = joined.chars().filter(|c| !c.is_control()).collect();
    const MAX: usize = 2000;
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    if out.is_empty() {
        out.push_str("no reason given");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(name: &str) -> Option<String> {
        Some(name.into())
    }

    fn refused(op: &'static str, c: Option<String>) -> SieveError {
        SieveError::Refused {
            server: "destination sieve://a@h:4190".into(),
            op,
            script: Some("vacation".into()),
            code: c,
            text: "line 1: error: unknown Sieve capability `vacation'".into(),
        }
    }

    #[test]
    fn refusals_are_classified_per_script() {
        let e = refused("CHECKSCRIPT", None);
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert!(e.kind().is_per_message());
        let m = e.to_string();
        assert!(
            m.starts_with(
                "destination sieve://a@h:4190 refused CHECKSCRIPT of script \"vacation\": line 1"
            ),
            "{m}"
        );
        assert!(m.contains("enable the missing extension"), "{m}");
        assert_eq!(
            refused("PUTSCRIPT", code("QUOTA/MAXSCRIPTS")).kind(),
            ErrorKind::Quota
        );
        assert!(
            refused("PUTSCRIPT", code("QUOTA/MAXSCRIPTS"))
                .to_string()
                .contains("allows no more scripts")
        );
        assert_eq!(
            refused("PUTSCRIPT", code("QUOTA/MAXSIZE")).kind(),
            ErrorKind::TooLarge
        );
        assert_eq!(refused("PUTSCRIPT", code("QUOTA")).kind(), ErrorKind::Quota);
        assert_eq!(
            refused("GETSCRIPT", code("TRYLATER")).kind(),
            ErrorKind::Throttled(None)
        );
        // Session failures are not per script.
        let auth = SieveError::Auth {
            server: "s".into(),
            user: "u".into(),
            reason: "Authentication failed.".into(),
        };
        assert_eq!(auth.kind(), ErrorKind::Auth);
        assert!(!auth.kind().is_per_message());
        let bye = SieveError::Bye {
            server: "s".into(),
            op: "LISTSCRIPTS".into(),
            text: "Disconnected for inactivity".into(),
        };
        assert!(bye.kind().is_retryable());
    }

    #[test]
    fn server_texts_become_one_line() {
        assert_eq!(
            clean_text("line 1: error: x.\r\nerror: validation failed.\r\n"),
            "line 1: error: x; error: validation failed"
        );
        assert_eq!(clean_text("a\u{7}b"), "ab");
        assert_eq!(clean_text(""), "no reason given");
        let long = "é".repeat(3000);
        assert!(clean_text(&long).ends_with("..."));
    }
}
