//! `mailshift clients export`: the client reconfiguration kit of a batch as static files
//! (Thunderbird autoconfig, Outlook autodiscover, Apple profiles, settings sheets), for
//! clients that keep connecting to the old server after the DNS change. What goes in
//! the files is decided in `mailshift_clients::kit`; this module reads the store and
//! writes them.

use crate::fleet::FleetDb;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use mailshift_clients::kit::{self, KitOptions, ServerChoice};
use mailshift_clients::{PasswordNote, ProfileSigner, UserSettings};
use mailshift_core::endpoint::Security;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Write a batch's client settings (autoconfig, autodiscover, Apple profiles,
    /// printable sheets) as static files for a web server
    #[command(
        long_about = "Write the client reconfiguration kit of a batch to DIR.\n\n\
        When a mail client keeps connecting to the old server after the DNS change, give it \
        the new server's settings rather than relying on DNS. DIR receives:\n\
        - mail/config-v1.1.xml and .well-known/autoconfig/mail/config-v1.1.xml: Thunderbird \
        autoconfig (also read by K-9/Thunderbird for Android, Evolution, KMail);\n\
        - autodiscover/autodiscover.xml: Outlook's autodiscover answer;\n\
        - clients/ADDRESS.mobileconfig: an Apple profile per user (signed with --sign-cert \
        and --sign-key);\n\
        - clients/ADDRESS.html: each user's settings page and printable sheet;\n\
        - index.html (every user) and README.txt (what to serve where, DNS records).\n\n\
        The new IMAP server comes from the batch's mailboxes (their destination); \
        --imap-host/--imap-port/--imap-security set or override it. The submission (SMTP) \
        server is not known to the batch: give --smtp-host.\n\n\
        No password is written unless --include-passwords is given together with \
        --temporary-password-from: then each user's destination password (sealed in the \
        fleet database; needs MAILSHIFT_SECRET_KEY) goes into their profile and sheet.\n\n\
        Exit status: 0 when every mailbox of the batch got its files; 1 when some were \
        left out (listed); 2 on bad usage."
    )]
    Export(Box<ExportArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SecurityArg {
    /// TLS from the first byte (IMAP 993, submission 465)
    Tls,
    /// STARTTLS (IMAP 143, submission 587)
    Starttls,
}

impl From<SecurityArg> for Security {
    fn from(s: SecurityArg) -> Security {
        match s {
            SecurityArg::Tls => Security::Tls,
            SecurityArg::Starttls => Security::StartTls,
        }
    }
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The batch
    #[arg(long, value_name = "NAME")]
    batch: String,
    /// Directory to write (created; an earlier export there is replaced)
    dir: PathBuf,
    /// The mail domain (default: the batch's, or the one its addresses share)
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// What clients call the account (default: the domain)
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    /// Organisation shown in Apple profiles and on the sheets
    #[arg(long, value_name = "NAME")]
    organization: Option<String>,
    /// The new IMAP server clients use (default: the batch's destination)
    #[arg(long, value_name = "HOST")]
    imap_host: Option<String>,
    #[arg(long, value_name = "PORT")]
    imap_port: Option<u16>,
    #[arg(long, value_enum, value_name = "SECURITY")]
    imap_security: Option<SecurityArg>,
    /// The new submission (SMTP) server (required: the batch does not know it)
    #[arg(long, value_name = "HOST")]
    smtp_host: Option<String>,
    /// Default 587 (STARTTLS), or 465 with --smtp-security tls
    #[arg(long, value_name = "PORT")]
    smtp_port: Option<u16>,
    #[arg(long, value_enum, value_name = "SECURITY")]
    smtp_security: Option<SecurityArg>,
    /// Users get a temporary password, and this says how ("in a text message from the
    /// IT desk"); without it the sheets say the password is unchanged
    #[arg(long, value_name = "TEXT")]
    temporary_password_from: Option<String>,
    /// Put each user's temporary password (the stored destination password) into their
    /// profile and sheet (needs --temporary-password-from and the credentials key)
    #[arg(long, requires = "temporary_password_from")]
    include_passwords: bool,
    /// Sign the Apple profiles with this certificate (PEM; further certificates in the
    /// file are sent as its chain)
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, unencrypted, RSA)
    #[arg(long, value_name = "FILE", requires = "sign_cert")]
    sign_key: Option<PathBuf>,
    /// More chain certificates (PEM)
    #[arg(long, value_name = "FILE", requires = "sign_cert")]
    sign_chain: Option<PathBuf>,
}

/// Marks a directory as ours, so that a re-export may replace it.
const MARKER: &str = ".mailshift-clients";

pub async fn clients(cmd: ClientsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientsCommand::Export(a) => export(*a).await,
    }
}

async fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    // Everything that can be refused is checked before anything is written.
    let signer = match (&a.sign_cert, &a.sign_key) {
        (Some(c), Some(k)) => {
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
            let chain = a.sign_chain.as_deref().map(read).transpose()?;
            Some(ProfileSigner::from_pem(
                &read(c)?,
                &read(k)?,
                chain.as_deref(),
            )?)
        }
        _ => None,
    };
    check_dir(&a.dir)?;
    let store = a.db.open(a.include_passwords).await?;
    let batch = store.batch(&a.batch).await?;
    let mailboxes = store.mailboxes(Some(&a.batch)).await?;
    let batch = match batch {
        Some(b) => b,
        None if !mailboxes.is_empty() => mailshift_core::batch::BatchRecord::new(&a.batch, None, 0),
        None => anyhow::bail!(
            "there is no batch '{}' (see mailshift batch status for the batches)",
            a.batch
        ),
    };
    let options = KitOptions {
        domain: a.domain.clone(),
        display_name: a.display_name.clone(),
        organization: a.organization.clone(),
        imap: ServerChoice {
            host: a.imap_host.clone(),
            port: a.imap_port,
            security: a.imap_security.map(Into::into),
        },
        smtp: ServerChoice {
            host: a.smtp_host.clone(),
            port: a.smtp_port,
            security: a.smtp_security.map(Into::into),
        },
        password: match &a.temporary_password_from {
            Some(source) => PasswordNote::Temporary {
                source: source.clone(),
            },
            None => PasswordNote::Unchanged,
        },
    };
    let kit = kit::derive(&batch, &mailboxes, &options)?;
    let mut users: Vec<UserSettings> = Vec::with_capacity(kit.users.len());
    for (migration, mut user) in kit.users {
        if a.include_passwords {
            let (_, creds) = store
                .mailbox_credentials(migration)
                .await
                .with_context(|| format!("cannot open the stored password of {}", user.address))?;
            user.password = Some(creds.dest_password);
        }
        users.push(user);
    }
    let files = kit::static_files(&kit.domain, &users, signer.as_ref())?;
    write(&a.dir, &files)?;

    let d = &kit.domain;
    let sec = mailshift_clients::render::security_label;
    eprintln!(
        "wrote the client settings of {} user(s) of {} to {}: IMAP {}:{} ({}), submission {}:{} ({}){}{}",
        users.len(),
        d.domain,
        a.dir.display(),
        d.imap.host,
        d.imap.port,
        sec(d.imap.security),
        d.smtp.host,
        d.smtp.port,
        sec(d.smtp.security),
        match &signer {
            Some(s) => format!(", profiles signed by {}", s.subject()),
            None => String::new(),
        },
        if a.include_passwords {
            "; the files under clients/ contain temporary passwords: do not publish them"
        } else {
            ""
        },
    );
    eprintln!(
        "see {} for what to serve where",
        a.dir.join("README.txt").display()
    );
    if kit.skipped.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("left out {} mailbox(es):", kit.skipped.len());
    for s in &kit.skipped {
        eprintln!("  {s}");
    }
    Ok(ExitCode::from(1))
}

/// DIR must be new, empty or an earlier export.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the directory {}", dir.display()))?;
    let empty = entries.next().is_none();
    anyhow::ensure!(
        empty || dir.join(MARKER).exists(),
        "{} is not empty and holds no earlier export: give a new or empty directory",
        dir.display()
    );
    Ok(())
}

fn write(dir: &Path, files: &[kit::KitFile]) -> anyhow::Result<()> {
    // An earlier export's per-user files go: a user who left the batch keeps none.
    let clients = dir.join("clients");
    if clients.exists() {
        std::fs::remove_dir_all(&clients)
            .with_context(|| format!("cannot remove the earlier {}", clients.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "written by mailshift clients export\n")
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        write_file(&path, &f.body, f.secret)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, body: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if secret {
        o.mode(0o600);
    }
    o.open(path)?.write_all(body)
}

/// `mailshift serve --clients-batch`: the discovery routes read the batches' current
/// mailboxes from the fleet store at each request (a mailbox added later is known at
/// once). Passwords are never read here.
pub(crate) struct StoreDirectory {
    pub store: crate::fleet::Store,
    pub batches: Vec<String>,
    pub options: KitOptions,
}

impl StoreDirectory {
    async fn kits(&self) -> mailshift_clients::Result<Vec<kit::Kit>> {
        let fail = |e: mailshift_core::Error| mailshift_clients::Error::Directory(e.message);
        let mut out = Vec::with_capacity(self.batches.len());
        for name in &self.batches {
            let mailboxes = self.store.mailboxes(Some(name)).await.map_err(fail)?;
            let batch = match self.store.batch(name).await.map_err(fail)? {
                Some(b) => b,
                None if !mailboxes.is_empty() => {
                    mailshift_core::batch::BatchRecord::new(name, None, 0)
                }
                None => continue,
            };
            out.push(kit::derive(&batch, &mailboxes, &self.options)?);
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl mailshift_clients::ClientDirectory for StoreDirectory {
    async fn domain(
        &self,
        domain: &str,
    ) -> mailshift_clients::Result<Option<mailshift_clients::DomainSettings>> {
        Ok(self
            .kits()
            .await?
            .into_iter()
            .map(|k| k.domain)
            .find(|d| d.domain.eq_ignore_ascii_case(domain)))
    }

    async fn user(&self, address: &str) -> mailshift_clients::Result<Option<UserSettings>> {
        Ok(self
            .kits()
            .await?
            .into_iter()
            .flat_map(|k| k.users)
            .map(|(_, mut u)| {
                u.password = None;
                u
            })
            .find(|u| u.address.eq_ignore_ascii_case(address)))
    }
}

/// The client settings `serve` answers with (`--clients-batch` and its companions).
#[derive(Args, Clone, Debug, Default)]
pub struct ServeClientsArgs {
    /// Also answer mail clients' discovery (Thunderbird autoconfig, Outlook autodiscover,
    /// Apple profiles, settings sheets under /clients/) for this batch's domain, without
    /// a login (repeatable). Point autoconfig.DOMAIN and autodiscover.DOMAIN here.
    #[arg(long = "clients-batch", value_name = "NAME")]
    pub batches: Vec<String>,
    /// The new IMAP server clients are given (default: the batch's destination)
    #[arg(long = "clients-imap-host", value_name = "HOST", requires = "batches")]
    pub imap_host: Option<String>,
    /// The new submission (SMTP) server clients are given (required with --clients-batch)
    #[arg(long = "clients-smtp-host", value_name = "HOST", requires = "batches")]
    pub smtp_host: Option<String>,
    /// Default 587 (STARTTLS)
    #[arg(long = "clients-smtp-port", value_name = "PORT", requires = "batches")]
    pub smtp_port: Option<u16>,
    /// What clients call the account (default: the domain)
    #[arg(
        long = "clients-display-name",
        value_name = "NAME",
        requires = "batches"
    )]
    pub display_name: Option<String>,
}

impl ServeClientsArgs {
    /// The directory to serve, or None without `--clients-batch`.
    pub(crate) fn directory(
        &self,
        store: &crate::fleet::Store,
    ) -> anyhow::Result<Option<StoreDirectory>> {
        if self.batches.is_empty() {
            return Ok(None);
        }
        if self.smtp_host.is_none() {
            anyhow::bail!(
                "--clients-batch needs --clients-smtp-host: the batch knows the new IMAP \
                 server but not the submission server clients should send through"
            );
        }
        Ok(Some(StoreDirectory {
            store: store.clone(),
            batches: self.batches.clone(),
            options: KitOptions {
                domain: None,
                display_name: self.display_name.clone(),
                organization: None,
                imap: ServerChoice {
                    host: self.imap_host.clone(),
                    port: None,
                    security: None,
                },
                smtp: ServerChoice {
                    host: self.smtp_host.clone(),
                    port: self.smtp_port,
                    security: None,
                },
                password: PasswordNote::Unchanged,
            },
        }))
    }
}
