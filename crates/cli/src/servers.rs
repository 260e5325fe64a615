//! The two servers of a command (`migrate`, `verify`): URLs, passwords, TLS consent, CA
//! files, folder rules; and turning them into an IMAP connector.

use anyhow::{Context, bail};
use clap::Args;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_imap::{ImapConnector, ServerConfig, Side};
use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct Servers {
    /// Old server: imap://USER@HOST[:PORT] (STARTTLS, port 143) or imaps://USER@HOST[:PORT] (TLS, port 993)
    #[arg(long, value_name = "URL")]
    pub(crate) from: String,
    /// New server, same form as --from
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    /// File holding the old server's password (otherwise MAILSHIFT_FROM_PASSWORD)
    #[arg(long, value_name = "FILE")]
    pub(crate) from_password_file: Option<PathBuf>,
    /// File holding the new server's password (otherwise MAILSHIFT_TO_PASSWORD)
    #[arg(long, value_name = "FILE")]
    pub(crate) to_password_file: Option<PathBuf>,
    /// Send a source folder (and its subfolders) elsewhere: 'SOURCE=DEST', each written
    /// with its own server's hierarchy delimiter. Repeatable
    #[arg(long = "map", value_name = "SRC=DST")]
    pub(crate) maps: Vec<String>,
    /// Skip source folders whose name matches this regular expression. Repeatable
    #[arg(long = "exclude", value_name = "REGEX")]
    pub(crate) excludes: Vec<String>,
    /// Allow logging in without TLS when a server offers no STARTTLS (trusted networks only)
    #[arg(long)]
    pub(crate) allow_plaintext: bool,
    /// Trust this CA certificate (PEM) for the old server, besides the system's
    #[arg(long, value_name = "FILE")]
    pub(crate) from_ca_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for the new server, besides the system's
    #[arg(long, value_name = "FILE")]
    pub(crate) to_ca_file: Option<PathBuf>,
    /// Seconds a connection or a single IMAP command may take
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) timeout: u64,
}

impl Servers {
    /// Parses the endpoints and rules and reads the passwords.
    pub fn connect(&self) -> anyhow::Result<(Endpoint, Endpoint, FolderRules, ImapConnector)> {
        let source: Endpoint = self.from.parse().context("--from")?;
        let dest: Endpoint = self.to.parse().context("--to")?;
        let from_pw = password(
            &self.from_password_file,
            "MAILSHIFT_FROM_PASSWORD",
            "source",
            "--from-password-file",
        )?;
        let to_pw = password(
            &self.to_password_file,
            "MAILSHIFT_TO_PASSWORD",
            "destination",
            "--to-password-file",
        )?;
        let rules = FolderRules::new(&self.maps, &self.excludes)?;
        let timeout = Duration::from_secs(self.timeout.max(1));
        let connector = ImapConnector {
            source: ServerConfig {
                endpoint: source.clone(),
                password: from_pw,
                side: Side::Source,
                allow_plaintext: self.allow_plaintext,
                ca_file: self.from_ca_file.clone(),
                timeout,
            },
            target: ServerConfig {
                endpoint: dest.clone(),
                password: to_pw,
                side: Side::Destination,
                allow_plaintext: self.allow_plaintext,
                ca_file: self.to_ca_file.clone(),
                timeout,
            },
        };
        Ok((source, dest, rules, connector))
    }
}

pub(crate) fn password(
    file: &Option<PathBuf>,
    var: &str,
    side: &str,
    flag: &str,
) -> anyhow::Result<SecretString> {
    if let Some(path) = file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {side} password file {}", path.display()))?;
        let pw = raw.strip_suffix('\n').unwrap_or(&raw);
        let pw = pw.strip_suffix('\r').unwrap_or(pw);
        if pw.is_empty() {
            bail!("the {side} password file {} is empty", path.display());
        }
        return Ok(SecretString::from(pw.to_string()));
    }
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ => bail!("no password for the {side} server: pass {flag} FILE or set {var}"),
    }
}
