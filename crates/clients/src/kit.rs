//! A batch's kit: the domain and user settings derived from the batch's mailboxes
//! (their destination endpoints) and the operator's choices, and the static files that
//! carry them (`mailshift clients export`). Pure: the caller reads the store and
//! writes the files.

use crate::error::{Error, Result};
use crate::render;
use crate::settings::{
    DomainSettings, LoginForm, PasswordNote, Server, UserSettings, domain_of, normalize_address,
    normalize_domain, url_segment,
};
use crate::sign::ProfileSigner;
use mailshift_core::batch::BatchRecord;
use mailshift_core::endpoint::{Endpoint, Security};
use mailshift_core::ports::MailboxRecord;
use std::collections::BTreeSet;
use uuid::Uuid;

/// A server given (or overridden) by the operator; unset fields come from the batch.
#[derive(Clone, Debug, Default)]
pub struct ServerChoice {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Option<Security>,
}

/// What the operator chose on the command line.
#[derive(Clone, Debug)]
pub struct KitOptions {
    /// The mail domain when the batch does not say.
    pub domain: Option<String>,
    pub display_name: Option<String>,
    pub organization: Option<String>,
    pub imap: ServerChoice,
    pub smtp: ServerChoice,
    pub password: PasswordNote,
}

/// The settings of one batch.
#[derive(Clone, Debug)]
pub struct Kit {
    pub domain: DomainSettings,
    /// Users with the migration they belong to (to fetch a password when asked).
    pub users: Vec<(Uuid, UserSettings)>,
    /// Mailboxes left out, with why.
    pub skipped: Vec<String>,
}

/// Derives the kit of `batch` from its `mailboxes`.
pub fn derive(batch: &BatchRecord, mailboxes: &[MailboxRecord], o: &KitOptions) -> Result<Kit> {
    let name = &batch.name;
    let mut dests = Vec::new();
    let mut skipped = Vec::new();
    for m in mailboxes {
        match m.dest.parse::<Endpoint>() {
            Ok(e) => dests.push((m, e)),
            Err(e) => skipped.push(format!("{}: destination not readable ({e})", m.dest)),
        }
    }

    let domain = match (&o.domain, &batch.domain) {
        (Some(d), _) | (None, Some(d)) => normalize_domain(d).ok_or_else(|| {
            Error::Kit(format!("'{d}' is not a domain name: give --domain DOMAIN"))
        })?,
        (None, None) => {
            let found: BTreeSet<String> = dests
                .iter()
                .filter_map(|(m, e)| address_of(m, e, None))
                .map(|a| domain_of(&a).to_string())
                .collect();
            match found.len() {
                1 => found.into_iter().next().unwrap_or_default(),
                0 => {
                    return Err(Error::Kit(format!(
                        "the mail domain of batch '{name}' is unknown (no mailbox has an \
                         address for a user): give --domain DOMAIN"
                    )));
                }
                _ => {
                    return Err(Error::Kit(format!(
                        "the mailboxes of batch '{name}' are in {} domains ({}): give \
                         --domain DOMAIN for the one to export",
                        found.len(),
                        found.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
    };

    let imap = imap_server(name, &dests, &o.imap)?;
    let smtp = smtp_server(&o.smtp)?;

    let mut users = Vec::new();
    let mut seen = BTreeSet::new();
    for (m, e) in &dests {
        let Some(address) = address_of(m, e, Some(&domain)) else {
            skipped.push(format!(
                "{}: no email address can be made of its user '{}'",
                m.dest, e.user
            ));
            continue;
        };
        if domain_of(&address) != domain {
            skipped.push(format!("{address}: not in {domain}"));
            continue;
        }
        if !seen.insert(address.to_ascii_lowercase()) {
            skipped.push(format!("{address}: listed twice in the batch"));
            continue;
        }
        users.push((m.migration_id, UserSettings::new(&address, &e.user)));
    }
    users.sort_by(|a, b| a.1.address.cmp(&b.1.address));
    let login = LoginForm::infer(
        users
            .iter()
            .map(|(_, u)| (u.address.as_str(), u.login.as_str())),
    );
    Ok(Kit {
        domain: DomainSettings {
            display_name: o.display_name.clone().unwrap_or_else(|| domain.clone()),
            domain,
            organization: o.organization.clone(),
            imap,
            smtp,
            login,
            password: o.password.clone(),
        },
        users,
        skipped,
    })
}

/// The user's address: the destination user when it is one, else the source user's,
/// else the destination user at the domain.
fn address_of(m: &MailboxRecord, dest: &Endpoint, domain: Option<&str>) -> Option<String> {
    if let Some(a) = normalize_address(&dest.user) {
        return Some(a);
    }
    if let Some(a) = m
        .source
        .parse::<Endpoint>()
        .ok()
        .and_then(|s| normalize_address(&s.user))
    {
        return Some(a);
    }
    normalize_address(&format!("{}@{}", dest.user, domain?))
}

fn imap_server(
    batch: &str,
    dests: &[(&MailboxRecord, Endpoint)],
    c: &ServerChoice,
) -> Result<Server> {
    let servers: BTreeSet<(String, u16, bool)> = dests
        .iter()
        .map(|(_, e)| (e.host.clone(), e.port, e.security == Security::Tls))
        .collect();
    if let Some(host) = &c.host {
        let security = c.security.unwrap_or(match c.port {
            Some(143) => Security::StartTls,
            _ => Security::Tls,
        });
        return Ok(Server {
            host: host.clone(),
            port: c.port.unwrap_or(Server::imap_port(security)),
            security,
        });
    }
    match servers.len() {
        0 => Err(Error::Kit(format!(
            "batch '{batch}' has no mailboxes, so the new server's IMAP endpoint is unknown: \
             give --imap-host (and --imap-port/--imap-security), or import its mailboxes first"
        ))),
        1 => {
            let (host, port, tls) = servers.into_iter().next().unwrap_or_default();
            let security = if tls {
                Security::Tls
            } else {
                Security::StartTls
            };
            Ok(Server {
                host,
                port: c.port.unwrap_or(port),
                security: c.security.unwrap_or(security),
            })
        }
        n => Err(Error::Kit(format!(
            "the mailboxes of batch '{batch}' go to {n} IMAP servers ({}): give --imap-host \
             for the one clients should use",
            servers
                .iter()
                .map(|(h, p, _)| format!("{h}:{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn smtp_server(c: &ServerChoice) -> Result<Server> {
    let Some(host) = &c.host else {
        return Err(Error::Kit(
            "the new server's submission (SMTP) endpoint is unknown (the batch only knows \
             IMAP): give --smtp-host (with --smtp-port and --smtp-security unless it is 587 \
             with STARTTLS)"
                .into(),
        ));
    };
    let security = c.security.unwrap_or(match c.port {
        Some(465) => Security::Tls,
        _ => Security::StartTls,
    });
    Ok(Server {
        host: host.clone(),
        port: c.port.unwrap_or(Server::submission_port(security)),
        security,
    })
}

/// One file of the static kit.
#[derive(Clone)]
pub struct KitFile {
    /// Relative path, `/`-separated.
    pub path: String,
    pub body: Vec<u8>,
    /// Holds a password: to be written readable by its owner only.
    pub secret: bool,
}

impl std::fmt::Debug for KitFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitFile")
            .field("path", &self.path)
            .field("bytes", &self.body.len())
            .field("secret", &self.secret)
            .finish()
    }
}

/// Path of the autoconfig files, of the static autodiscover answer, and of the README.
pub const AUTOCONFIG_PATHS: [&str; 2] = [
    ".well-known/autoconfig/mail/config-v1.1.xml",
    "mail/config-v1.1.xml",
];
pub const AUTODISCOVER_PATH: &str = "autodiscover/autodiscover.xml";

/// Every file of the kit: the autoconfig file under both paths, a static autodiscover
/// answer, each user's profile (signed when `signer` is given) and page, an index and
/// the README for the web server's administrator.
pub fn static_files(
    d: &DomainSettings,
    users: &[UserSettings],
    signer: Option<&ProfileSigner>,
) -> Result<Vec<KitFile>> {
    let mut files = Vec::new();
    let public = |path: &str, body: Vec<u8>| KitFile {
        path: path.to_string(),
        body,
        secret: false,
    };
    let autoconfig = render::autoconfig(d);
    for p in AUTOCONFIG_PATHS {
        files.push(public(p, autoconfig.clone().into_bytes()));
    }
    files.push(public(
        AUTODISCOVER_PATH,
        render::autodiscover::static_response(d).into_bytes(),
    ));
    for u in users {
        let secret = u.password.is_some();
        let seg = url_segment(&u.address);
        let profile = render::mobileconfig(d, u)?;
        let profile = match signer {
            Some(s) => s.sign(&profile)?,
            None => profile,
        };
        files.push(KitFile {
            path: format!("clients/{}.mobileconfig", u.address),
            body: profile,
            secret,
        });
        let href = format!("./{seg}.mobileconfig");
        files.push(KitFile {
            path: format!("clients/{}.html", u.address),
            body: render::settings_page(d, u, Some(&href)).into_bytes(),
            secret,
        });
    }
    files.push(public(
        "index.html",
        render::index_page(d, users, true).into_bytes(),
    ));
    let with_passwords = users.iter().any(|u| u.password.is_some());
    files.push(public(
        "README.txt",
        readme(d, users.len(), signer.map(|s| s.subject()), with_passwords).into_bytes(),
    ));
    Ok(files)
}

fn readme(d: &DomainSettings, users: usize, signer: Option<String>, passwords: bool) -> String {
    let dom = &d.domain;
    let sec = render::security_label;
    let submission_srv = match d.smtp.security {
        Security::Tls => "_submissions._tcp",
        Security::StartTls => "_submission._tcp",
    };
    let imap_srv = match d.imap.security {
        Security::Tls => "_imaps._tcp",
        Security::StartTls => "_imap._tcp",
    };
    let signed = match signer {
        Some(s) => format!("signed by {s}"),
        None => "unsigned (devices show \"Not Verified\"; sign them with --sign-cert/--sign-key)"
            .to_string(),
    };
    let warning = if passwords {
        "\nWARNING: the files under clients/ contain temporary passwords. Do NOT publish\n\
         clients/: hand each user their own sheet or profile (mail, print, MDM), or serve\n\
         it only behind authentication. Delete this directory once users are set up.\n"
    } else {
        ""
    };
    format!(
        "Client settings kit for {dom} ({display})
Generated by `mailshift clients export`. {users} user(s).
{warning}
New server
  IMAP        {ih}:{ip} ({isec})
  Submission  {sh}:{sp} ({ssec}), authentication required
  Password    {pw}

What to serve where
  Thunderbird and others look up, for alice@{dom}:
    http(s)://autoconfig.{dom}/mail/config-v1.1.xml?emailaddress=alice@{dom}
    https://{dom}/.well-known/autoconfig/mail/config-v1.1.xml
  Serve mail/config-v1.1.xml and .well-known/autoconfig/mail/config-v1.1.xml from
  this directory on both host names (Content-Type: application/xml). The query
  string does not matter: the file is the same for every user.

  Outlook POSTs to https://{dom}/autodiscover/autodiscover.xml and
  https://autodiscover.{dom}/autodiscover/autodiscover.xml. A static web server
  refuses POST: answer it with autodiscover/autodiscover.xml (Content-Type:
  text/xml), e.g. nginx's `error_page 405 =200 $uri;`. The static answer carries no
  login name (Outlook then uses the address); `mailshift serve`'s public routes
  answer per address.

  clients/ADDRESS.mobileconfig: Apple profiles, {signed}.
    Content-Type: application/x-apple-aspen-config
  clients/ADDRESS.html: each user's settings page and printable sheet.
  index.html and README.txt: for you, not for publishing (they list every user).

nginx example (TLS settings omitted)
  server {{
      server_name autoconfig.{dom} autodiscover.{dom} {dom};
      root /srv/mailshift-clients;        # this directory
      location = /index.html {{ deny all; }}
      location = /README.txt {{ deny all; }}
      location ~ ^/(mail|\\.well-known/autoconfig/mail)/config-v1\\.1\\.xml$ {{
          default_type application/xml;
          add_header Cache-Control no-cache;
      }}
      location ~* ^/autodiscover/autodiscover\\.xml$ {{
          default_type text/xml;
          try_files /{AUTODISCOVER_PATH} =404;
          error_page 405 =200 /{AUTODISCOVER_PATH};
      }}
      location /clients/ {{
          types {{ application/x-apple-aspen-config mobileconfig; text/html html; }}
          try_files $uri $uri.html =404;
          add_header Cache-Control no-store;
      }}
  }}

DNS
  autoconfig.{dom}.    CNAME  (your web server)
  autodiscover.{dom}.  CNAME  (your web server)
  {imap_srv}.{dom}.    SRV 0 1 {ip} {ih}.
  {submission_srv}.{dom}. SRV 0 1 {sp} {sh}.
",
        display = d.display_name,
        ih = d.imap.host,
        ip = d.imap.port,
        isec = sec(d.imap.security),
        sh = d.smtp.host,
        sp = d.smtp.port,
        ssec = sec(d.smtp.security),
        pw = match &d.password {
            PasswordNote::Unchanged => "unchanged".to_string(),
            PasswordNote::Temporary { source } => format!("temporary, {source}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailshift_core::ports::MailboxOptions;

    fn mailbox(source: &str, dest: &str) -> MailboxRecord {
        MailboxRecord {
            id: Uuid::new_v4(),
            migration_id: Uuid::new_v4(),
            batch: Some("acme".into()),
            source: source.into(),
            dest: dest.into(),
            options: MailboxOptions::default(),
            status: mailshift_core::mailbox::MailboxStatus::Pending,
            last_error: None,
            warning: None,
            pass_id: None,
            last_pass_at: None,
            next_pass_at: None,
            jobs_left: 0,
            source_messages: None,
            source_bytes: None,
            checked: None,
            pass_started_at: None,
            copied_at_start: None,
        }
    }

    fn options() -> KitOptions {
        KitOptions {
            domain: None,
            display_name: Some("Acme Mail".into()),
            organization: None,
            imap: ServerChoice::default(),
            smtp: ServerChoice {
                host: Some("smtp.new.example".into()),
                ..ServerChoice::default()
            },
            password: PasswordNote::Unchanged,
        }
    }

    fn batch(domain: Option<&str>) -> BatchRecord {
        BatchRecord::new("acme", domain, 0)
    }

    #[test]
    fn a_batch_gives_its_new_server_and_users() {
        let mbs = [
            mailbox(
                "imap://alice@old.example",
                "imaps://alice@acme.example@imap.new.example",
            ),
            mailbox(
                "imap://bob@old.example",
                "imaps://bob@acme.example@imap.new.example",
            ),
        ];
        let k = derive(&batch(Some("Acme.Example")), &mbs, &options()).unwrap();
        assert_eq!(k.domain.domain, "acme.example");
        assert_eq!(
            k.domain.imap,
            Server {
                host: "imap.new.example".into(),
                port: 993,
                security: Security::Tls
            }
        );
        assert_eq!(
            k.domain.smtp,
            Server {
                host: "smtp.new.example".into(),
                port: 587,
                security: Security::StartTls
            }
        );
        assert_eq!(k.domain.login, LoginForm::Address);
        let addrs: Vec<_> = k.users.iter().map(|(_, u)| u.address.as_str()).collect();
        assert_eq!(addrs, ["alice@acme.example", "bob@acme.example"]);
        assert!(k.skipped.is_empty());
    }

    #[test]
    fn addresses_come_from_the_source_or_the_domain_when_logins_are_names() {
        let mbs = [
            // Source user is the address, destination login a name.
            mailbox(
                "imap://carol@acme.example@old.example",
                "imap://c.smith@imap.new.example",
            ),
            // Neither: name at the domain.
            mailbox("imap://dave@old.example", "imap://dave@imap.new.example"),
        ];
        let k = derive(
            &batch(None),
            &mbs,
            &KitOptions {
                domain: Some("acme.example".into()),
                ..options()
            },
        )
        .unwrap();
        let users: Vec<_> = k
            .users
            .iter()
            .map(|(_, u)| (u.address.as_str(), u.login.as_str()))
            .collect();
        assert_eq!(
            users,
            [
                ("carol@acme.example", "c.smith"),
                ("dave@acme.example", "dave")
            ]
        );
        assert_eq!(k.domain.login, LoginForm::PerUser);
        assert_eq!(k.domain.imap.security, Security::StartTls);
        assert_eq!(k.domain.imap.port, 143);
    }

    #[test]
    fn the_domain_is_inferred_when_unambiguous() {
        let mbs = [mailbox(
            "imap://a@old.example",
            "imaps://a@acme.example@imap.new.example",
        )];
        assert_eq!(
            derive(&batch(None), &mbs, &options())
                .unwrap()
                .domain
                .domain,
            "acme.example"
        );
        let mbs = [
            mailbox(
                "imap://a@old.example",
                "imaps://a@acme.example@imap.new.example",
            ),
            mailbox(
                "imap://b@old.example",
                "imaps://b@other.example@imap.new.example",
            ),
        ];
        let err = derive(&batch(None), &mbs, &options())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 domains (acme.example, other.example)"),
            "{err}"
        );
        assert!(err.contains("--domain"), "{err}");
        // With the domain given, the other one is skipped and said.
        let k = derive(&batch(Some("acme.example")), &mbs, &options()).unwrap();
        assert_eq!(k.users.len(), 1);
        assert_eq!(k.skipped, ["b@other.example: not in acme.example"]);
    }

    #[test]
    fn missing_endpoints_are_clear_errors() {
        let err = derive(&batch(Some("acme.example")), &[], &options())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no mailboxes") && err.contains("--imap-host"),
            "{err}"
        );
        let mbs = [mailbox(
            "imap://a@old.example",
            "imaps://a@acme.example@imap.new.example",
        )];
        let mut o = options();
        o.smtp.host = None;
        let err = derive(&batch(Some("acme.example")), &mbs, &o)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("submission (SMTP)") && err.contains("--smtp-host"),
            "{err}"
        );
        let mbs = [
            mailbox(
                "imap://a@old.example",
                "imaps://a@acme.example@imap1.new.example",
            ),
            mailbox(
                "imap://b@old.example",
                "imaps://b@acme.example@imap2.new.example",
            ),
        ];
        let err = derive(&batch(Some("acme.example")), &mbs, &options())
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 IMAP servers"), "{err}");
        // Overrides settle both.
        let mut o = options();
        o.imap.host = Some("imap.new.example".into());
        o.smtp = ServerChoice {
            host: Some("smtp.new.example".into()),
            port: Some(465),
            security: None,
        };
        let k = derive(&batch(Some("acme.example")), &mbs, &o).unwrap();
        assert_eq!(k.domain.imap.port, 993);
        assert_eq!(k.domain.smtp.security, Security::Tls);
        assert_eq!(k.users.len(), 2);
        // No mailbox but the IMAP host given: the domain files alone.
        let k = derive(&batch(Some("acme.example")), &[], &o).unwrap();
        assert!(k.users.is_empty());
    }

    #[test]
    fn the_static_kit_has_every_file_and_no_password() {
        let mbs = [mailbox(
            "imap://a@old.example",
            "imaps://alice@acme.example@imap.new.example",
        )];
        let k = derive(&batch(Some("acme.example")), &mbs, &options()).unwrap();
        let users: Vec<_> = k.users.iter().map(|(_, u)| u.clone()).collect();
        let files = static_files(&k.domain, &users, None).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".well-known/autoconfig/mail/config-v1.1.xml",
                "mail/config-v1.1.xml",
                "autodiscover/autodiscover.xml",
                "clients/alice@acme.example.mobileconfig",
                "clients/alice@acme.example.html",
                "index.html",
                "README.txt",
            ]
        );
        assert!(files.iter().all(|f| !f.secret));
        let readme = String::from_utf8(files[6].body.clone()).unwrap();
        assert!(readme.contains("_imaps._tcp.acme.example.    SRV 0 1 993 imap.new.example."));
        assert!(readme.contains("_submission._tcp.acme.example. SRV 0 1 587 smtp.new.example."));
        assert!(!readme.contains("WARNING"));
        let mut with_pw = users.clone();
        with_pw[0].password = Some("Temp-1".to_string().into());
        let files = static_files(&k.domain, &with_pw, None).unwrap();
        assert!(files[3].secret && files[4].secret && !files[0].secret);
        assert!(String::from_utf8_lossy(&files[6].body).contains("WARNING"));
        assert!(!format!("{files:?}").contains("Temp-1"));
    }
}
