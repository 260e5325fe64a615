//! [`StoreError`], the one error type of this crate, and its conversion to
//! `mailshift_core::Error` at the `StateStore` boundary. Also owns how a database is named
//! in messages ([`describe`]): a SQLite file by its path, a PostgreSQL database by its URL
//! without password or query. No message of this crate contains a secret.

use mailshift_core::{Error, ErrorKind};
use sea_orm::DbErr;
use uuid::Uuid;

/// What can go wrong with the state store. `place` is always [`describe`]d.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported state database url {place}: expected sqlite://PATH or postgres://...")]
    Url { place: String },
    /// Connecting (or creating the SQLite file) failed. `detail` is scrubbed of the URL.
    #[error("cannot open the state database {place}: {detail}")]
    Open { place: String, detail: String },
    /// Applying the schema migrations failed.
    #[error("cannot migrate the state database {place}: {source}")]
    Migrate { place: String, source: DbErr },
    /// A query failed; `op` says what the store was doing.
    #[error("state database {place}: {op}: {source}")]
    Query {
        place: String,
        op: &'static str,
        source: DbErr,
    },
    /// The folder row a caller referred to does not exist.
    #[error("state database {place}: no folder with id {id}")]
    NoFolder { place: String, id: Uuid },
    /// Sealing or opening credentials failed (no key, wrong key).
    #[error("state database {place}: {source}")]
    Secret {
        place: String,
        source: crate::secrets::SecretError,
    },
    /// No mailbox is registered for a migration.
    #[error("state database {place}: no mailbox for migration {id}")]
    NoMailbox { place: String, id: Uuid },
    /// A row with the same unique name exists.
    #[error("state database {place}: {what}")]
    Conflict { place: String, what: String },
    /// A stored value cannot be decoded (out-of-range number, bad fingerprint, bad JSON).
    #[error("state database {place}: corrupt {what}")]
    Corrupt { place: String, what: String },
}

impl StoreError {
    /// Whether the same operation may succeed later (a lost connection, a lock timeout),
    /// as opposed to a bad URL or corrupt data.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Open { .. } | StoreError::Query { .. } | StoreError::Migrate { .. }
        )
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        let kind = match e {
            // Only `SeaStore::connect` returns it: the user must fix the URL.
            StoreError::Url { .. } => ErrorKind::Usage,
            // Configuration, not a transient failure: retrying cannot help.
            StoreError::Secret { .. }
            | StoreError::NoMailbox { .. }
            | StoreError::Conflict { .. } => ErrorKind::Usage,
            _ => ErrorKind::Store,
        };
        Error::new(kind, e.to_string())
    }
}

/// How a database is named in messages: the file of a SQLite URL, or a PostgreSQL URL
/// without password, query and fragment (`postgres://user@host:5432/db`).
pub(crate) fn describe(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or(rest);
        return if path.is_empty() {
            ":memory:".to_string()
        } else {
            path.to_string()
        };
    }
    match url::Url::parse(url) {
        Ok(mut u) => {
            // Both only fail for URLs that cannot have them; nothing to hide then.
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(unparsable url)"),
            None => "(unparsable url)".to_string(),
        },
    }
}

/// A driver message with the raw URL replaced by `place` and the password (raw or
/// percent-decoded) masked, in case the driver quoted either.
pub(crate) fn scrub(detail: &str, url: &str, place: &str) -> String {
    let mut out = detail.replace(url, place);
    if let Ok(u) = url::Url::parse(url) {
        if let Some(pw) = u.password().filter(|p| !p.is_empty()) {
            out = out.replace(pw, "***");
            let decoded: String = url::form_urlencoded::parse(format!("p={pw}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default();
            if !decoded.is_empty() {
                out = out.replace(&decoded, "***");
            }
        }
        for (k, v) in u.query_pairs() {
            if k.contains("password") && !v.is_empty() {
                out = out.replace(v.as_ref(), "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_without_secrets() {
        assert_eq!(describe("sqlite:///var/lib/x.db?mode=rwc"), "/var/lib/x.db");
        assert_eq!(describe("sqlite://rel.db"), "rel.db");
        assert_eq!(describe("sqlite::memory:"), ":memory:");
        assert_eq!(
            describe("postgres://u:s3cret@db.example:5432/ms?password=s3cret&sslmode=require"),
            "postgres://u@db.example:5432/ms"
        );
        assert!(!describe("postgres://u:s3cret@[bad").contains("s3cret"));
    }

    #[test]
    fn scrubs_url_and_password() {
        let url = "postgres://u:p%40ss@h/db";
        let msg = scrub(
            "cannot parse 'postgres://u:p%40ss@h/db' (p@ss, p%40ss)",
            url,
            "postgres://u@h/db",
        );
        assert!(!msg.contains("p@ss") && !msg.contains("p%40ss"), "{msg}");
        assert!(msg.contains("postgres://u@h/db"));
    }
}
