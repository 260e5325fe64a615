//! [`ProvisionError`], the one error type of this crate, and its conversion to
//! `mailshift_core::Error` at the port boundary. No message quotes a password, a hash or
//! a database password: backends are named by [`crate::config::BackendConfig::describe`]
//! and driver or program output is scrubbed of the secrets in play.

use mailshift_core::{Error, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The backend configuration file is wrong.
    #[error("provisioning configuration: {0}")]
    Config(String),
    /// The backend cannot be reached.
    #[error("{backend}: cannot connect: {detail}")]
    Connect { backend: String, detail: String },
    /// The backend refused or failed a query or an action.
    #[error("{backend}: {op}: {detail}")]
    Failed {
        backend: String,
        op: String,
        detail: String,
    },
    /// The operator's program did not finish in time (it was killed).
    #[error("{backend}: {op}: no answer within {secs} s (the program was stopped)")]
    Timeout {
        backend: String,
        op: String,
        secs: u64,
    },
}

impl From<ProvisionError> for Error {
    fn from(e: ProvisionError) -> Self {
        let kind = match e {
            ProvisionError::Config(_) => ErrorKind::Usage,
            ProvisionError::Connect { .. } | ProvisionError::Timeout { .. } => ErrorKind::Network,
            ProvisionError::Failed { .. } => ErrorKind::Refused,
        };
        Error::new(kind, e.to_string())
    }
}

/// `text` with every non-empty secret replaced.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s, "[redacted]");
    }
    out
}

/// The last lines of a program's stderr, at most `max` characters, scrubbed.
pub(crate) fn tail(stderr: &[u8], secrets: &[&str], max: usize) -> String {
    let text = scrub(String::from_utf8_lossy(stderr).trim(), secrets);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(10)..].join(" | ");
    if out.chars().count() > max {
        let skip = out.chars().count() - max;
        out = format!("...{}", out.chars().skip(skip).collect::<String>());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbed_and_truncated() {
        let err = b"line1\nbad password hunter2 for ann\n";
        let t = tail(err, &["hunter2"], 1000);
        assert_eq!(t, "line1 | bad password [redacted] for ann");
        let long = "x".repeat(5000);
        assert!(tail(long.as_bytes(), &[], 100).len() <= 103);
    }
}
