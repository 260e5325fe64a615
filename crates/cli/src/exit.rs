//! The exit statuses of every command, in one table (also in the README and `--help`):
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done: everything copied, in sync, ready |
//! | 1 | done with differences or per-item failures (messages refused, folders that differ, findings with errors) |
//! | 2 | usage: a bad option, file or address; the same account on both sides |
//! | 3 | a server cannot be reached (unknown host, refused connection, timeout) |
//! | 4 | a login was refused (password, token) |
//! | 5 | TLS failed, or a login would have sent the password in plain text |
//! | 6 | busy: another run holds this state file or these mailboxes |
//! | 130 | interrupted (Ctrl-C, SIGTERM); everything done so far is checkpointed |

use mailshift_core::ErrorKind;

pub const OK: u8 = 0;
pub const INCOMPLETE: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNREACHABLE: u8 = 3;
pub const AUTH: u8 = 4;
pub const TLS: u8 = 5;
pub const BUSY: u8 = 6;
pub const INTERRUPTED: u8 = 130;

/// An error that knows its exit status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }
}

/// The status for a domain error kind.
pub fn for_kind(kind: &ErrorKind) -> u8 {
    match kind {
        ErrorKind::Usage => USAGE,
        ErrorKind::Auth => AUTH,
        ErrorKind::Tls | ErrorKind::Insecure => TLS,
        ErrorKind::Unreachable | ErrorKind::Network => UNREACHABLE,
        ErrorKind::Interrupted => INTERRUPTED,
        _ => INCOMPLETE,
    }
}

/// The status for an error that ended a command.
pub fn for_error(e: &anyhow::Error) -> u8 {
    if let Some(f) = e.downcast_ref::<Failure>() {
        return f.code;
    }
    if e.downcast_ref::<crate::lock::Busy>().is_some() {
        return BUSY;
    }
    if let Some(core) = e.downcast_ref::<mailshift_core::Error>() {
        return for_kind(&core.kind);
    }
    USAGE
}

/// The worst status of the errors that stopped a run before it could start (both sides
/// are tried at once, so there may be two).
pub fn for_start_errors<'a>(kinds: impl Iterator<Item = &'a str>) -> u8 {
    let mut code = INCOMPLETE;
    for k in kinds {
        let c = match k {
            "usage" => USAGE,
            "auth" => AUTH,
            "tls" | "insecure" => TLS,
            "unreachable" | "network" => UNREACHABLE,
            _ => INCOMPLETE,
        };
        // A mistake to fix beats a condition to wait for.
        let rank = |c: u8| match c {
            USAGE => 5,
            AUTH => 4,
            TLS => 3,
            UNREACHABLE => 2,
            _ => 1,
        };
        if rank(c) > rank(code) {
            code = c;
        }
    }
    code
}

/// What a status means, in the words of the table above (for `--json` error documents).
pub fn meaning(code: u8) -> &'static str {
    match code {
        OK => "done",
        INCOMPLETE => "done with differences or per-item failures",
        USAGE => "usage: a bad option, file or address",
        UNREACHABLE => "a server cannot be reached",
        AUTH => "a login was refused",
        TLS => "TLS failed, or a login would have sent the password in plain text",
        BUSY => "busy: another run holds this state file or these mailboxes",
        INTERRUPTED => "interrupted; everything done so far is checkpointed",
        _ => "failed",
    }
}
