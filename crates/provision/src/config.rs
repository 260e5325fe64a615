//! A batch's provisioning backend as the operator describes it in a TOML file
//! (`mailshift provision --backend-config FILE`), checked before anything is stored.
//! The checked configuration is kept (sealed) in the fleet's database as JSON, so later
//! runs need no file.
//!
//! ```toml
//! backend = "sql"                                   # PostfixAdmin's tables by default
//! url = "postgres://postfix:SECRET@db.example/postfix"
//! ```
//!
//! ```toml
//! backend = "command"
//! program = "/usr/local/bin/panel-provision"
//! ```
//!
//! Every key is described in docs/provisioning.md.

use crate::error::ProvisionError;
use crate::hash::CryptScheme;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One backend and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum BackendConfig {
    Sql(Box<SqlConfig>),
    Command(Box<CommandConfig>),
}

/// Value written to `active` columns (PostfixAdmin: boolean `true`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ActiveValue {
    Bool(bool),
    Int(i64),
}

/// Unit of the mailbox table's quota column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaUnit {
    /// PostfixAdmin's.
    #[default]
    Bytes,
    Kib,
    Mib,
}

impl QuotaUnit {
    pub fn divisor(self) -> u64 {
        match self {
            QuotaUnit::Bytes => 1,
            QuotaUnit::Kib => 1 << 10,
            QuotaUnit::Mib => 1 << 20,
        }
    }
}

/// Postfix + Dovecot's SQL layout: PostfixAdmin's `domain`, `mailbox` and `alias`
/// tables, or an in-house schema mapped onto them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// `postgres://USER:PASSWORD@HOST[:PORT]/DATABASE`.
    pub url: String,
    /// How plaintext and temporary passwords are hashed (carried hashes are stored as
    /// they are, with their `{SCHEME}` prefix).
    #[serde(default)]
    pub password_scheme: CryptScheme,
    /// The mailbox's maildir column: `{domain}`, `{local_part}` and `{address}` are
    /// replaced (PostfixAdmin's `domain/local_part/`).
    #[serde(default = "default_maildir")]
    pub maildir_template: String,
    #[serde(default)]
    pub quota_unit: QuotaUnit,
    #[serde(default = "default_active")]
    pub active_value: ActiveValue,
    #[serde(default)]
    pub mailbox: MailboxTable,
    #[serde(default)]
    pub alias: AliasTable,
    #[serde(default)]
    pub domain: DomainTable,
}

fn default_maildir() -> String {
    "{domain}/{local_part}/".into()
}

fn default_active() -> ActiveValue {
    ActiveValue::Bool(true)
}

/// Table and column names of mailboxes; an empty column name is not written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxTable {
    /// `table` or `schema.table`.
    pub table: String,
    pub username: String,
    pub password: String,
    pub name: String,
    pub maildir: String,
    pub quota: String,
    pub local_part: String,
    pub domain: String,
    pub created: String,
    pub modified: String,
    pub active: String,
}

impl Default for MailboxTable {
    fn default() -> Self {
        MailboxTable {
            table: "mailbox".into(),
            username: "username".into(),
            password: "password".into(),
            name: "name".into(),
            maildir: "maildir".into(),
            quota: "quota".into(),
            local_part: "local_part".into(),
            domain: "domain".into(),
            created: "created".into(),
            modified: "modified".into(),
            active: "active".into(),
        }
    }
}

/// Table and column names of aliases and forwards; `goto` holds the comma-separated
/// targets. An empty `table` means the schema has no alias table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AliasTable {
    pub table: String,
    pub address: String,
    pub goto: String,
    pub domain: String,
    pub created: String,
    pub modified: String,
    pub active: String,
    /// Also write the alias `address -> address` of every new mailbox, as PostfixAdmin
    /// does (Postfix finds the mailbox through it when a catch-all exists).
    pub mailbox_self_alias: bool,
}

impl Default for AliasTable {
    fn default() -> Self {
        AliasTable {
            table: "alias".into(),
            address: "address".into(),
            goto: "goto".into(),
            domain: "domain".into(),
            created: "created".into(),
            modified: "modified".into(),
            active: "active".into(),
            mailbox_self_alias: true,
        }
    }
}

/// Table and column names of domains; an empty `table` means there is none (no domain
/// is created).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainTable {
    pub table: String,
    pub domain: String,
    pub description: String,
    pub created: String,
    pub modified: String,
    pub active: String,
}

impl Default for DomainTable {
    fn default() -> Self {
        DomainTable {
            table: "domain".into(),
            domain: "domain".into(),
            description: "description".into(),
            created: "created".into(),
            modified: "modified".into(),
            active: "active".into(),
        }
    }
}

/// How the operator's program receives a password.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordForm {
    /// A `{SCHEME}` hash: carried hashes of `hash_schemes` as they are, plaintext and
    /// temporary passwords hashed with `password_scheme`.
    #[default]
    Hash,
    /// Plaintext and temporary passwords in clear (panels that hash themselves: cPanel's
    /// UAPI, Plesk, Microsoft 365); carried hashes of `hash_schemes` as hashes.
    Plaintext,
}

/// An operator's program run once per action, with a JSON document on its standard input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Path of the program (run directly, not through a shell).
    pub program: PathBuf,
    /// Fixed arguments (never a secret: command lines are visible to every local user).
    #[serde(default)]
    pub args: Vec<String>,
    /// The program answers `{"action": "lookup"}` with what exists; otherwise mailshift
    /// relies on its own record of what it did.
    #[serde(default)]
    pub lookup: bool,
    #[serde(default)]
    pub password: PasswordForm,
    /// Schemes of carried hashes the program can store as they are (`["*"]`: all of
    /// them); others fall back to the plaintext or a temporary password.
    #[serde(default)]
    pub hash_schemes: Vec<String>,
    #[serde(default)]
    pub password_scheme: CryptScheme,
    /// Seconds one run may take before it is stopped.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    60
}

/// `name` or `schema.name`, letters, digits and `_` only: identifiers are quoted by the
/// query builder, and this keeps configuration typos from reaching the database.
fn identifier(what: &str, name: &str, required: bool) -> Result<(), ProvisionError> {
    if name.is_empty() {
        return if required {
            Err(ProvisionError::Config(format!("{what} must be set")))
        } else {
            Ok(())
        };
    }
    let ok = name.split('.').count() <= 2
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::Config(format!(
            "{what} '{name}' is not a table or column name (letters, digits and _, optionally schema.table)"
        )))
    }
}

impl BackendConfig {
    /// Parses and checks an operator's TOML file.
    pub fn from_toml(text: &str) -> Result<BackendConfig, ProvisionError> {
        let c: BackendConfig =
            toml::from_str(text).map_err(|e| ProvisionError::Config(e.message().to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// The stored (JSON) form, as [`Self::to_stored`] wrote it.
    pub fn from_stored(text: &SecretString) -> Result<BackendConfig, ProvisionError> {
        use secrecy::ExposeSecret;
        let c: BackendConfig = serde_json::from_str(text.expose_secret())
            .map_err(|e| ProvisionError::Config(format!("stored configuration unreadable: {e}")))?;
        c.check()?;
        Ok(c)
    }

    /// JSON to store sealed (it may hold a database password).
    pub fn to_stored(&self) -> SecretString {
        SecretString::from(serde_json::to_string(self).unwrap_or_default())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Sql(_) => "sql",
            BackendConfig::Command(_) => "command",
        }
    }

    /// `sql postgres://postfix@db.example:5432/postfix`, `command /usr/local/bin/x`: no
    /// secret.
    pub fn describe(&self) -> String {
        match self {
            BackendConfig::Sql(s) => format!("sql {}", describe_url(&s.url)),
            BackendConfig::Command(c) => format!("command {}", c.program.display()),
        }
    }

    fn check(&self) -> Result<(), ProvisionError> {
        match self {
            BackendConfig::Sql(s) => {
                if !(s.url.starts_with("postgres://") || s.url.starts_with("postgresql://")) {
                    return Err(ProvisionError::Config(format!(
                        "url {} is not a PostgreSQL URL (postgres://USER:PASSWORD@HOST/DATABASE)",
                        describe_url(&s.url)
                    )));
                }
                let m = &s.mailbox;
                identifier("mailbox.table", &m.table, true)?;
                identifier("mailbox.username", &m.username, true)?;
                identifier("mailbox.password", &m.password, true)?;
                for (what, name) in [
                    ("mailbox.name", &m.name),
                    ("mailbox.maildir", &m.maildir),
                    ("mailbox.quota", &m.quota),
                    ("mailbox.local_part", &m.local_part),
                    ("mailbox.domain", &m.domain),
                    ("mailbox.created", &m.created),
                    ("mailbox.modified", &m.modified),
                    ("mailbox.active", &m.active),
                ] {
                    identifier(what, name, false)?;
                }
                let a = &s.alias;
                identifier("alias.table", &a.table, false)?;
                if !a.table.is_empty() {
                    identifier("alias.address", &a.address, true)?;
                    identifier("alias.goto", &a.goto, true)?;
                    for (what, name) in [
                        ("alias.domain", &a.domain),
                        ("alias.created", &a.created),
                        ("alias.modified", &a.modified),
                        ("alias.active", &a.active),
                    ] {
                        identifier(what, name, false)?;
                    }
                }
                let d = &s.domain;
                identifier("domain.table", &d.table, false)?;
                if !d.table.is_empty() {
                    identifier("domain.domain", &d.domain, true)?;
                    for (what, name) in [
                        ("domain.description", &d.description),
                        ("domain.created", &d.created),
                        ("domain.modified", &d.modified),
                        ("domain.active", &d.active),
                    ] {
                        identifier(what, name, false)?;
                    }
                }
                if s.maildir_template.contains(['\n', '\r', '\0']) {
                    return Err(ProvisionError::Config(
                        "maildir_template contains a line break".into(),
                    ));
                }
                Ok(())
            }
            BackendConfig::Command(c) => {
                if c.program.as_os_str().is_empty() {
                    return Err(ProvisionError::Config("program must be set".into()));
                }
                if c.timeout_secs == 0 || c.timeout_secs > 3600 {
                    return Err(ProvisionError::Config(
                        "timeout_secs must be between 1 and 3600".into(),
                    ));
                }
                for s in &c.hash_schemes {
                    if s != "*"
                        && !mailshift_core::provision::HASH_SCHEMES
                            .iter()
                            .any(|k| k.eq_ignore_ascii_case(s))
                    {
                        return Err(ProvisionError::Config(format!(
                            "hash_schemes: '{s}' is not one of *, {}",
                            mailshift_core::provision::HASH_SCHEMES.join(", ")
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A database URL without its password, query or fragment.
pub fn describe_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(unparsable url)"),
            None => "(unparsable url)".into(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn postfixadmin_defaults_and_an_in_house_mapping() {
        let c =
            BackendConfig::from_toml("backend = \"sql\"\nurl = \"postgres://pf:s3cret@db/pf\"\n")
                .unwrap();
        let BackendConfig::Sql(s) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(s.mailbox.table, "mailbox");
        assert_eq!(s.alias.goto, "goto");
        assert_eq!(s.maildir_template, "{domain}/{local_part}/");
        assert_eq!(c.describe(), "sql postgres://pf@db/pf");
        assert!(!c.describe().contains("s3cret"));
        let stored = c.to_stored();
        assert!(stored.expose_secret().contains("s3cret"));
        assert_eq!(BackendConfig::from_stored(&stored).unwrap(), c);

        let c = BackendConfig::from_toml(
            r#"
            backend = "sql"
            url = "postgresql://mail@127.0.0.1/mail"
            quota_unit = "mib"
            active_value = 1
            [mailbox]
            table = "mail.users"
            username = "email"
            password = "pw_hash"
            name = ""
            local_part = ""
            [alias]
            table = ""
            [domain]
            table = ""
            "#,
        )
        .unwrap();
        let BackendConfig::Sql(s) = c else { panic!() };
        assert_eq!(s.mailbox.table, "mail.users");
        assert_eq!(s.mailbox.maildir, "maildir");
        assert_eq!(s.active_value, ActiveValue::Int(1));
        assert_eq!(s.quota_unit, QuotaUnit::Mib);
    }

    #[test]
    fn mistakes_are_caught_before_anything_is_stored() {
        for (toml, want) in [
            ("backend = \"ldap\"", "ldap"),
            ("backend = \"sql\"", "url"),
            (
                "backend = \"sql\"\nurl = \"mysql://x@y/z\"",
                "not a PostgreSQL URL",
            ),
            (
                "backend = \"sql\"\nurl = \"postgres://x@y/z\"\n[mailbox]\ntable = \"mailbox; drop table x\"",
                "is not a table or column name",
            ),
            (
                "backend = \"sql\"\nurl = \"postgres://x@y/z\"\n[mailbox]\nusername = \"\"",
                "mailbox.username must be set",
            ),
            (
                "backend = \"sql\"\nurl = \"postgres://x@y/z\"\nwhat = 1",
                "what",
            ),
            (
                "backend = \"command\"\nprogram = \"/bin/x\"\ntimeout_secs = 0",
                "timeout_secs",
            ),
            (
                "backend = \"command\"\nprogram = \"/bin/x\"\nhash_schemes = [\"NTLM\"]",
                "NTLM",
            ),
        ] {
            let e = BackendConfig::from_toml(toml).unwrap_err().to_string();
            assert!(e.contains(want), "{toml}: {e}");
        }
        let c = BackendConfig::from_toml("backend = \"command\"\nprogram = \"/bin/x\"\n").unwrap();
        let BackendConfig::Command(c) = c else {
            panic!()
        };
        assert_eq!(c.timeout_secs, 60);
        assert_eq!(c.password, PasswordForm::Hash);
        assert!(!c.lookup);
    }
}
