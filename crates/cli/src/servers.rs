//! The two servers of a command (`migrate`, `verify`): URLs, passwords, TLS consent, CA
//! files, folder rules; and turning them into an IMAP connector.

use anyhow::{Context, bail};
use clap::Args;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::folder::FolderRules;
use mailshift_core::ports::HostPauses;
use mailshift_imap::{Auth, ImapConnector, ServerConfig, Side, TokenSource};
use secrecy::SecretString;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Log in to the old server with OAuth 2.0 (XOAUTH2/OAUTHBEARER): a command printing
    /// a fresh access token, run at every login so long runs outlive token expiry
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["from_password_file", "from_oauth_token_file"])]
    pub(crate) from_oauth_token_cmd: Option<String>,
    /// Log in to the old server with the OAuth 2.0 access token in FILE (re-read at every login)
    #[arg(long, value_name = "FILE", conflicts_with = "from_password_file")]
    pub(crate) from_oauth_token_file: Option<PathBuf>,
    /// Same as --from-oauth-token-cmd, for the new server
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["to_password_file", "to_oauth_token_file"])]
    pub(crate) to_oauth_token_cmd: Option<String>,
    /// Same as --from-oauth-token-file, for the new server
    #[arg(long, value_name = "FILE", conflicts_with = "to_password_file")]
    pub(crate) to_oauth_token_file: Option<PathBuf>,
    /// Send a source folder (and its subfolders) elsewhere: 'SOURCE=DEST', each written
    /// with its own server's hierarchy delimiter. Repeatable
    #[arg(long = "map", value_name = "SRC=DST")]
    pub(crate) maps: Vec<String>,
    /// Skip source folders whose name matches this regular expression. Repeatable
    #[arg(long = "exclude", value_name = "REGEX")]
    pub(crate) excludes: Vec<String>,
    /// Allow logging in without TLS to a server that offers no STARTTLS, on both sides
    /// (trusted networks only). Never applies to a server that offers STARTTLS: if its
    /// STARTTLS fails, the run stops
    #[arg(long)]
    pub(crate) allow_plaintext: bool,
    /// The same for the old server only
    #[arg(long)]
    pub(crate) from_allow_plaintext: bool,
    /// The same for the new server only
    #[arg(long)]
    pub(crate) to_allow_plaintext: bool,
    /// Largest message accepted from the old server (bigger ones are reported, never
    /// downloaded), e.g. 256M, 1G
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    pub(crate) max_message_size: u64,
    /// When the new server refuses a folder name, replace FROM by TO in it (e.g. '.=_':
    /// Dovecot's Maildir++ refuses '.'). Repeatable; the first use replaces the default '.=_'
    #[arg(long = "rename-char", value_name = "FROM=TO", value_parser = parse_rename)]
    pub(crate) rename_chars: Vec<(char, char)>,
    /// Trust this CA certificate (PEM) for the old server, besides the system's
    #[arg(long, value_name = "FILE")]
    pub(crate) from_ca_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for the new server, besides the system's
    #[arg(long, value_name = "FILE")]
    pub(crate) to_ca_file: Option<PathBuf>,
    /// Do not compress sessions (COMPRESS=DEFLATE is used whenever a server offers it)
    #[arg(long)]
    pub(crate) no_compress: bool,
    /// Seconds a connection or a single IMAP command may take
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) timeout: u64,
}

impl Servers {
    /// Parses the endpoints and rules and reads the passwords.
    pub fn connect(&self) -> anyhow::Result<(Endpoint, Endpoint, FolderRules, ImapConnector)> {
        let source: Endpoint = self.from.parse().context("--from")?;
        let dest: Endpoint = self.to.parse().context("--to")?;
        let from_auth = match (&self.from_oauth_token_cmd, &self.from_oauth_token_file) {
            (Some(c), _) => Auth::OAuth2(TokenSource::Command(c.clone())),
            (None, Some(f)) => Auth::OAuth2(TokenSource::File(f.clone())),
            (None, None) => Auth::Password(password(
                &self.from_password_file,
                "MAILSHIFT_FROM_PASSWORD",
                "source",
                "--from-password-file",
            )?),
        };
        let to_auth = match (&self.to_oauth_token_cmd, &self.to_oauth_token_file) {
            (Some(c), _) => Auth::OAuth2(TokenSource::Command(c.clone())),
            (None, Some(f)) => Auth::OAuth2(TokenSource::File(f.clone())),
            (None, None) => Auth::Password(password(
                &self.to_password_file,
                "MAILSHIFT_TO_PASSWORD",
                "destination",
                "--to-password-file",
            )?),
        };
        let pauses = Arc::new(HostPauses::default());
        let mut rules = FolderRules::new(&self.maps, &self.excludes)?;
        if !self.rename_chars.is_empty() {
            rules = rules.with_renames(self.rename_chars.clone());
        }
        let timeout = Duration::from_secs(self.timeout.max(1));
        let connector = ImapConnector {
            source: ServerConfig {
                endpoint: source.clone(),
                auth: from_auth,
                side: Side::Source,
                allow_plaintext: self.allow_plaintext || self.from_allow_plaintext,
                ca_file: self.from_ca_file.clone(),
                timeout,
                pauses: pauses.clone(),
                compress: !self.no_compress,
                max_literal: self.max_message_size,
            },
            target: ServerConfig {
                endpoint: dest.clone(),
                auth: to_auth,
                side: Side::Destination,
                allow_plaintext: self.allow_plaintext || self.to_allow_plaintext,
                ca_file: self.to_ca_file.clone(),
                timeout,
                pauses,
                compress: !self.no_compress,
                max_literal: self.max_message_size,
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

/// `256M`, `1G`, `500K`, `1048576` (bytes).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1u64 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1u64 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{s}' is not a size like 256M, 1G or 500K"))
}

fn parse_rename(s: &str) -> Result<(char, char), String> {
    mailshift_core::folder::parse_rename(s).map_err(|e| e.message)
}
