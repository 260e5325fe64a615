//! Throwaway Dovecot (Debian's dovecot-imapd 2.3) IMAP servers on loopback ports.
//!
//! Every [`Dovecot`] has its own temporary directory (config, `base_dir`, `state_dir`, log,
//! passwd-file, TLS material and Maildirs), its own `instance_name` and its own ports, and
//! runs in the foreground (`dovecot -F -c CONF`) as a child process in its own process
//! group, so [`Drop`] can stop it and every helper it forked.
//!
//! Facts worth knowing when writing tests against it:
//! * Must run as root (Dovecot binds, forks and `setuid`s). Mail processes run as the
//!   system user `vmail` (created with uid/gid 5000 on first use if it does not exist; an
//!   existing `vmail` is reused whatever its ids).
//! * Storage is Maildir. With delimiter `/` it uses `LAYOUT=fs` (one directory per folder,
//!   so folder names may contain `.`); with delimiter `.` the native Maildir++ layout.
//!   Folder names are stored modified-UTF-7 on disk.
//! * Dovecot stores messages with LF line endings and serves them with CRLF: a message with
//!   bare LFs comes back with CRLFs (the corpus is all CRLF, so it round-trips byte-exactly).
//! * Maildir keeps INTERNALDATE as a file mtime: the instant is preserved, the timezone
//!   offset is not (FETCH returns it in the server's zone, `+0000` here). Hence
//!   [`crate::imap::diff`] ignores offsets and [`crate::imap::diff_strict`] does not.
//! * `quota_max_mail_size` makes a too-big APPEND fail with `NO [LIMIT] Mail size is larger
//!   than the maximum size allowed by server configuration`.
//! * `imap_capability` replaces the post-login CAPABILITY; before login Dovecot still adds
//!   `STARTTLS` / `AUTH=` items. The server keeps *supporting* everything (MULTIAPPEND,
//!   LITERAL+, ...), it only stops advertising it.
//! * `mail_max_userip_connections` is raised to 500 (Dovecot's default of 10 per user and IP
//!   would throttle a parallel migrator on 127.0.0.1).
//! * Parent folders created implicitly (CREATE `Work/Clients/Acme`) are listed as
//!   `\Noselect \HasChildren`.
//! * With [`DovecotOptions::oauth2_introspection_url`] the server also offers
//!   `AUTH=XOAUTH2 AUTH=OAUTHBEARER`: those two mechanisms go to an `oauth2` passdb that
//!   asks the URL (`introspection_mode = post`, RFC 7662: `token=...` in a form body) and
//!   wants `{"active":true,"username":"USER"}` back (USER must equal the login name, lower
//!   case); PLAIN/LOGIN keep using the passwd-file. The auth cache is off (`auth_cache_size
//!   = 0`, Dovecot's default, set explicitly), so every login asks the URL again and an
//!   expired token is refused at the next login. Sessions already logged in are not
//!   re-checked. See [`crate::oauth::OAuthServer`].
//! * [`Dovecot::stop`] and [`Dovecot::start_again`] make an outage: sessions end, the ports
//!   refuse connections (reserved meanwhile), then the same server, users and mail return.
//! * With [`DovecotOptions::sieve`] the server also runs Pigeonhole's ManageSieve
//!   (RFC 5804; Debian's `dovecot-sieve` and `dovecot-managesieved`) on its own port
//!   ([`Dovecot::sieve_port`]; with `tls` also STARTTLS there and an implicit-TLS port).
//!   Scripts live outside the Maildir (a `sieve` directory in the mail root would be a
//!   folder with `LAYOUT=fs`): `DIR/sieve/USER/scripts/NAME.sieve`, the active one being
//!   the symlink `DIR/sieve/USER/active.sieve -> scripts/NAME.sieve`.
//!   [`Dovecot::put_sieve_script`] writes them there directly and [`Dovecot::sieve_scripts`]
//!   reads them back, so tests set up and judge scripts without any ManageSieve client.
//!   `sieve_extensions = -vacation` ([`DovecotOptions::sieve_extensions`]) takes an
//!   extension away: CHECKSCRIPT/PUTSCRIPT then answer `NO {N}` with a literal text such
//!   as ``line 1: error: require command: unknown Sieve capability `vacation'.``
//!   Pigeonhole stores a script byte for byte as PUTSCRIPT sent it.
//! * With [`DovecotOptions::pgsql_database`] the passdb and userdb are PostfixAdmin's
//!   `mailbox` table in that PostgreSQL database (Debian's `dovecot-pgsql`): the user logs
//!   in as `username` with `password` (a `{SCHEME}` hash, SHA512-CRYPT by default) while
//!   `active` is true, and the row's `quota` (bytes, 0 = none) is the storage quota that
//!   GETQUOTAROOT reports. No auth cache: a row added is a login at once. See
//!   [`crate::postfixadmin`]. The passwd-file ([`Dovecot::add_user`]) is not read then.
//! * With [`DovecotOptions::lmtp`] the server also accepts mail over LMTP and offers its
//!   auth service to an MTA (Postfix's `smtpd_sasl_type = dovecot`), each on a loopback
//!   port ([`Dovecot::lmtp_port`], [`Dovecot::auth_port`]); LMTP recipients are looked up
//!   by their full address, so users are added as `alice@example.test`.
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How a test server is configured. `Default` is a plain `/`-delimited server.
#[derive(Clone, Debug)]
pub struct DovecotOptions {
    /// Hierarchy delimiter of the inbox namespace: `'/'` or `'.'`.
    pub delimiter: char,
    /// `(mailbox name as the server names it (UTF-8, with its delimiter), "\\Sent")` pairs,
    /// emitted as `mailbox "NAME" { special_use = \Sent }` (auto = no) in the namespace.
    pub special_use: Vec<(String, String)>,
    /// Largest accepted message in bytes (quota plugin `quota_max_mail_size`).
    pub max_mail_size: Option<u64>,
    /// Offer COMPRESS=DEFLATE (the `imap_zlib` plugin).
    pub compress: bool,
    /// A storage quota per user (`quota_rule = *:storage=...`, e.g. `"1M"`), reported by
    /// GETQUOTAROOT.
    pub quota_storage: Option<String>,
    /// Personal namespace prefix, e.g. `"INBOX."` (Courier/cPanel style: every folder
    /// lives under INBOX).
    pub prefix: Option<String>,
    /// `imap_capability` override, e.g. `"IMAP4rev1"` for a bare server.
    pub capability: Option<String>,
    /// Also listen with implicit TLS and offer STARTTLS, with a throwaway CA and a server
    /// certificate for `localhost` / `127.0.0.1`.
    pub tls: bool,
    /// fsync mail as a production server does (`mail_fsync = optimized`); off by default
    /// so tests run fast. Benchmarks turn it on.
    pub fsync: bool,
    /// Also accept OAuth 2.0 logins (XOAUTH2, OAUTHBEARER) checked by an `oauth2` passdb
    /// against this token-introspection endpoint (e.g. [`crate::oauth::OAuthServer::url`]).
    /// Password logins (PLAIN, LOGIN) keep working against the passwd-file.
    pub oauth2_introspection_url: Option<String>,
    /// With `oauth2_introspection_url`: offer XOAUTH2 only (as Google and Microsoft do),
    /// not OAUTHBEARER.
    pub oauth2_xoauth2_only: bool,
    /// Also run ManageSieve (Pigeonhole) on a free loopback port, with per-user script
    /// storage in the instance directory.
    pub sieve: bool,
    /// With `sieve`: Pigeonhole's `sieve_extensions` setting, e.g. `"-vacation"` to take
    /// the vacation extension away (scripts using it are then refused).
    pub sieve_extensions: Option<String>,
    /// Users come from PostfixAdmin's `mailbox` table of this database on
    /// 127.0.0.1:5432 (user `postgres`), instead of the passwd-file.
    pub pgsql_database: Option<String>,
    /// Also listen for LMTP deliveries and for an MTA's SASL auth requests (the mail
    /// store behind a test submission server, see [`crate::smtp`]).
    pub lmtp: bool,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            delimiter: '/',
            special_use: Vec::new(),
            max_mail_size: None,
            capability: None,
            tls: false,
            fsync: false,
            oauth2_introspection_url: None,
            prefix: None,
            compress: false,
            quota_storage: None,
            oauth2_xoauth2_only: false,
            sieve: false,
            sieve_extensions: None,
            pgsql_database: None,
            lmtp: false,
        }
    }
}

/// A user's Sieve scripts as stored on disk ([`Dovecot::sieve_scripts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SieveScripts {
    /// Script name -> content, byte for byte.
    pub scripts: std::collections::BTreeMap<String, Vec<u8>>,
    /// Script name -> file modification time (a rewrite with equal content shows here).
    pub modified: std::collections::BTreeMap<String, std::time::SystemTime>,
    /// The script the active link points to.
    pub active: Option<String>,
}

/// A running Dovecot instance; stopped (with all its processes) on drop.
pub struct Dovecot {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    sieve_port: Option<u16>,
    sieve_tls_port: Option<u16>,
    /// LMTP and auth-service ports, with [`DovecotOptions::lmtp`].
    lmtp_ports: Option<(u16, u16)>,
    ca_pem: Option<PathBuf>,
    uid: u32,
    gid: u32,
    name: String,
    passwd_lock: Mutex<()>,
    /// Set by [`Dovecot::stop`]: holds its ports until [`Dovecot::start_again`].
    stopped: Option<Vec<crate::services::PortHold>>,
}

impl std::fmt::Debug for Dovecot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dovecot")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("sieve_port", &self.sieve_port)
            .finish()
    }
}

/// uid/gid of the `vmail` user, created once per process if missing.
fn vmail_ids() -> anyhow::Result<(u32, u32)> {
    static IDS: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    IDS.get_or_init(|| {
        let lookup = || -> Option<(u32, u32)> {
            let id = |flag: &str| -> Option<u32> {
                let out = Command::new("id").args([flag, "vmail"]).output().ok()?;
                if !out.status.success() {
                    return None;
                }
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            };
            Some((id("-u")?, id("-g")?))
        };
        if let Some(ids) = lookup() {
            return Ok(ids);
        }
        let quiet = |cmd: &mut Command| {
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // Preferred: uid = gid = 5000. Fall back to whatever ids the system hands out.
        let group_ok = quiet(Command::new("groupadd").args(["-g", "5000", "vmail"]))
            || quiet(Command::new("groupadd").args(["--system", "vmail"]));
        let base = [
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
        ];
        let mut useradd = Command::new("useradd");
        useradd.args(base).args(["--uid", "5000"]);
        if group_ok {
            useradd.args(["--gid", "vmail"]);
        }
        if !quiet(useradd.arg("vmail")) {
            let mut retry = Command::new("useradd");
            retry.args(base);
            if group_ok {
                retry.args(["--gid", "vmail"]);
            }
            quiet(retry.arg("vmail"));
        }
        lookup()
            .ok_or_else(|| "could not find or create the system user `vmail` (are we root?)".into())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn free_port() -> anyhow::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free loopback port")
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))
}

/// Quote a string for a Dovecot config file.
fn conf_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn run_openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running the openssl CLI (install Debian's `openssl` package)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Make a throwaway CA and a `localhost`/`127.0.0.1` server certificate it signs.
/// Returns (ca.pem, server.pem, server.key).
fn make_certs(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    run_openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3650",
            "-subj",
            "/CN=mailshift test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    run_openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    run_openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
        ],
    )?;
    Ok((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}

struct Layout<'a> {
    dir: &'a Path,
    name: &'a str,
    port: u16,
    tls: Option<(u16, &'a Path, &'a Path)>,
    /// ManageSieve port and, with TLS, its implicit-TLS port.
    sieve: Option<(u16, Option<u16>)>,
    /// (LMTP port, auth port).
    lmtp: Option<(u16, u16)>,
    uid: u32,
    gid: u32,
}

fn render_config(opts: &DovecotOptions, l: &Layout<'_>) -> String {
    let d = l.dir.display();
    let mut c = String::new();
    let layout = if opts.delimiter == '/' {
        ":LAYOUT=fs"
    } else {
        ""
    };
    let oauth2 = opts.oauth2_introspection_url.is_some();
    let oauth_mechs = if opts.oauth2_xoauth2_only {
        "xoauth2"
    } else {
        "xoauth2 oauthbearer"
    };
    let passdbs = if oauth2 {
        // Passwords for PLAIN/LOGIN only, tokens for XOAUTH2/OAUTHBEARER only: neither
        // passdb sees the other's secrets. No auth cache, so expiry is seen at once.
        format!(
            "auth_cache_size = 0\n\
             passdb {{\n  driver = passwd-file\n  mechanisms = plain login\n  \
             args = scheme=PLAIN {d}/passwd\n}}\n\
             passdb {{\n  driver = oauth2\n  mechanisms = {oauth_mechs}\n  \
             args = {d}/{OAUTH2_CONF}\n}}"
        )
    } else if opts.pgsql_database.is_some() {
        format!(
            "auth_cache_size = 0\n\
             passdb {{\n  driver = sql\n  args = {d}/{SQL_CONF}\n}}"
        )
    } else {
        format!("passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {d}/passwd\n}}")
    };
    let userdb = if opts.pgsql_database.is_some() {
        format!("userdb {{\n  driver = sql\n  args = {d}/{SQL_CONF}\n}}")
    } else {
        format!("userdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}")
    };
    let _ = writeln!(
        c,
        "# Generated by mailshift-tests: a throwaway test server.\n\
         instance_name = {name}\n\
         base_dir = {d}/run\n\
         state_dir = {d}/state\n\
         log_path = {d}/dovecot.log\n\
         listen = 127.0.0.1\n\
         protocols = {protocols}\n\
         shutdown_clients = yes\n\
         verbose_proctitle = yes\n\
         auth_mechanisms = {mechanisms}\n\
         disable_plaintext_auth = no\n\
         auth_verbose = yes\n\
         mail_location = maildir:{d}/mail/%u{layout}\n\
         mail_uid = {uid}\n\
         mail_gid = {gid}\n\
         first_valid_uid = {uid}\n\
         first_valid_gid = {gid}\n\
         mail_fsync = {fsync}\n\
         mail_max_userip_connections = 500\n\
         {passdbs}\n\
         {userdb}",
        name = l.name,
        protocols = match (l.sieve.is_some(), l.lmtp.is_some()) {
            (true, true) => "imap sieve lmtp",
            (true, false) => "imap sieve",
            (false, true) => "imap lmtp",
            (false, false) => "imap",
        },
        fsync = if opts.fsync { "optimized" } else { "never" },
        mechanisms = if oauth2 && opts.oauth2_xoauth2_only {
            "plain login xoauth2"
        } else if oauth2 {
            "plain login xoauth2 oauthbearer"
        } else {
            "plain login"
        },
        uid = l.uid,
        gid = l.gid,
    );
    match l.tls {
        Some((_, cert, key)) => {
            let _ = writeln!(
                c,
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}",
                cert.display(),
                key.display()
            );
        }
        None => c.push_str("ssl = no\n"),
    }
    if let Some(cap) = &opts.capability {
        let _ = writeln!(c, "imap_capability = {cap}");
    }
    let mut imap_plugins: Vec<&str> = Vec::new();
    let mut plugin_settings: Vec<String> = Vec::new();
    if opts.max_mail_size.is_some() || opts.quota_storage.is_some() || opts.pgsql_database.is_some()
    {
        let _ = writeln!(c, "mail_plugins = $mail_plugins quota");
        plugin_settings.push("quota = maildir:User quota".into());
        if let Some(max) = opts.max_mail_size {
            plugin_settings.push(format!("quota_max_mail_size = {max}"));
        }
        if let Some(storage) = &opts.quota_storage {
            plugin_settings.push(format!("quota_rule = *:storage={storage}"));
        }
        imap_plugins.push("imap_quota");
    }
    if l.sieve.is_some() {
        // Outside the Maildir: with LAYOUT=fs a `sieve` directory there is a folder.
        plugin_settings.push(format!(
            "sieve = file:{d}/sieve/%u/scripts;active={d}/sieve/%u/active.sieve"
        ));
        if let Some(ext) = &opts.sieve_extensions {
            plugin_settings.push(format!("sieve_extensions = {ext}"));
        }
    }
    if !plugin_settings.is_empty() {
        c.push_str("plugin {\n");
        for setting in &plugin_settings {
            let _ = writeln!(c, "  {setting}");
        }
        c.push_str("}\n");
    }
    if opts.compress {
        imap_plugins.push("imap_zlib");
    }
    if !imap_plugins.is_empty() {
        let _ = writeln!(
            c,
            "protocol imap {{\n  mail_plugins = $mail_plugins {}\n}}",
            imap_plugins.join(" ")
        );
    }
    let _ = writeln!(
        c,
        "namespace inbox {{\n  inbox = yes\n  separator = {}",
        opts.delimiter
    );
    if let Some(p) = &opts.prefix {
        let _ = writeln!(c, "  prefix = {p}");
    }
    for (name, use_) in &opts.special_use {
        let _ = writeln!(
            c,
            "  mailbox {} {{\n    special_use = {use_}\n    auto = no\n  }}",
            conf_quote(name)
        );
    }
    c.push_str("}\n");
    let tls_port = l.tls.map_or(0, |(p, _, _)| p);
    let _ = writeln!(
        c,
        "service imap-login {{\n  inet_listener imap {{\n    port = {}\n  }}\n  \
         inet_listener imaps {{\n    port = {tls_port}\n    ssl = yes\n  }}\n}}",
        l.port
    );
    if let Some((port, tls_port)) = l.sieve {
        let _ = writeln!(
            c,
            "service managesieve-login {{\n  inet_listener sieve {{\n    port = {port}\n  }}"
        );
        if let Some(tls_port) = tls_port {
            let _ = writeln!(
                c,
                "  inet_listener sieve_tls {{\n    port = {tls_port}\n    ssl = yes\n  }}"
            );
        }
        c.push_str("}\n");
    }
    // Nothing else listens on TCP: pop3/lmtp/submission are not in `protocols`, and
    // doveadm has only its unix socket by default.
    if let Some((lmtp, auth)) = l.lmtp {
        // Recipients are full addresses, looked up as they come (no domain stripping).
        let _ = writeln!(
            c,
            "service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp}\n  }}\n}}\n\
             service auth {{\n  inet_listener auth-mta {{\n    address = 127.0.0.1\n    port = {auth}\n  }}\n}}\n\
             protocol lmtp {{\n  postmaster_address = postmaster@localhost\n}}"
        );
    }
    c
}

/// File name (in the instance directory) of the SQL passdb's and userdb's settings.
const SQL_CONF: &str = "dovecot-sql.conf.ext";

/// PostfixAdmin's `mailbox` table as passdb and userdb (`quota_rule` from its quota).
fn render_sql_config(database: &str) -> String {
    format!(
        "# Generated by mailshift-tests.\n\
         driver = pgsql\n\
         connect = host=127.0.0.1 port=5432 dbname={database} user=postgres\n\
         default_pass_scheme = SHA512-CRYPT\n\
         password_query = SELECT username AS user, password FROM mailbox \
         WHERE username = '%u' AND active = true\n\
         user_query = SELECT '*:bytes=' || quota AS quota_rule FROM mailbox \
         WHERE username = '%u' AND active = true\n\
         iterate_query = SELECT username AS user FROM mailbox WHERE active = true\n"
    )
}

/// `doveadm pw -s SCHEME -p PASSWORD`: the `{SCHEME}...` hash Dovecot itself makes
/// (e.g. `SHA512-CRYPT`, `BLF-CRYPT`). Panics if doveadm fails.
pub fn hash_password(scheme: &str, password: &str) -> String {
    let out = Command::new("doveadm")
        .args(["pw", "-s", scheme, "-p", password])
        .output()
        .expect("running doveadm pw (is dovecot-core installed?)");
    assert!(
        out.status.success(),
        "doveadm pw -s {scheme}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// File name (in the instance directory) of the `oauth2` passdb's settings.
const OAUTH2_CONF: &str = "dovecot-oauth2.conf.ext";

/// Settings of the `oauth2` passdb: RFC 7662 introspection by POST, the user in
/// `username`, the token valid only while `active` is `true`.
fn render_oauth2_config(introspection_url: &str) -> String {
    format!(
        "# Generated by mailshift-tests.\n\
         introspection_mode = post\n\
         introspection_url = {introspection_url}\n\
         username_attribute = username\n\
         active_attribute = active\n\
         active_value = true\n\
         timeout_msecs = 10000\n"
    )
}

/// Connect and read the first greeting line (`* OK` for IMAP, `"IMPLEMENTATION" ...` for
/// ManageSieve).
fn greeting(port: u16) -> std::io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

/// `dovecot -F` on the instance's config, in its own process group, output appended to
/// `stderr.log`.
fn spawn(root: &Path) -> anyhow::Result<Child> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("stderr.log"))?;
    Command::new("dovecot")
        .arg("-F")
        .arg("-c")
        .arg(root.join("dovecot.conf"))
        .stdin(Stdio::null())
        .stdout(stderr.try_clone()?)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .context("spawning `dovecot -F` (is dovecot-imapd installed?)")
}

impl Dovecot {
    /// Start an instance (synchronously); returns once the IMAP port answers its greeting.
    /// Free loopback ports are picked by the OS; a start that loses a port race is retried.
    pub fn start(opts: DovecotOptions) -> anyhow::Result<Dovecot> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start(&opts) {
                Ok(d) => return Ok(d),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("dovecot did not start")))
    }

    fn try_start(opts: &DovecotOptions) -> anyhow::Result<Dovecot> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        anyhow::ensure!(
            matches!(opts.delimiter, '/' | '.'),
            "delimiter must be '/' or '.'"
        );
        let (uid, gid) = vmail_ids()?;
        let dir = tempfile::Builder::new()
            .prefix("mailshift-dovecot-")
            .tempdir()
            .context("creating the instance directory")?;
        let root = dir.path();
        // The dovecot/dovenull users must be able to traverse to every file.
        chmod(root, 0o755)?;
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir(root.join(sub))?;
            chmod(&root.join(sub), 0o755)?;
        }
        chown(&root.join("mail"), uid, gid)?;
        if opts.sieve {
            let sieve = root.join("sieve");
            std::fs::create_dir(&sieve)?;
            chmod(&sieve, 0o755)?;
            chown(&sieve, uid, gid)?;
        }
        std::fs::write(root.join("passwd"), "")?;
        chmod(&root.join("passwd"), 0o644)?;

        let certs = if opts.tls {
            Some(make_certs(&root.join("tls"))?)
        } else {
            None
        };

        // Hold the listeners until just before dovecot binds, so two ports of the same
        // instance can not collide.
        let plain = free_port()?;
        let tls_listener = if opts.tls { Some(free_port()?) } else { None };
        let sieve_listener = if opts.sieve { Some(free_port()?) } else { None };
        let sieve_tls_listener = if opts.sieve && opts.tls {
            Some(free_port()?)
        } else {
            None
        };
        let lmtp_listeners = if opts.lmtp {
            Some((free_port()?, free_port()?))
        } else {
            None
        };
        let lmtp_ports = match &lmtp_listeners {
            Some((a, b)) => Some((a.local_addr()?.port(), b.local_addr()?.port())),
            None => None,
        };
        let port = plain.local_addr()?.port();
        let port_of = |l: &Option<TcpListener>| -> anyhow::Result<Option<u16>> {
            Ok(match l {
                Some(l) => Some(l.local_addr()?.port()),
                None => None,
            })
        };
        let tls_port = port_of(&tls_listener)?;
        let sieve_port = port_of(&sieve_listener)?;
        let sieve_tls_port = port_of(&sieve_tls_listener)?;
        let name = format!(
            "mailshift-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let conf = render_config(
            opts,
            &Layout {
                dir: root,
                name: &name,
                port,
                tls: match (&certs, tls_port) {
                    (Some((_, cert, key)), Some(p)) => Some((p, cert.as_path(), key.as_path())),
                    _ => None,
                },
                sieve: sieve_port.map(|p| (p, sieve_tls_port)),
                lmtp: lmtp_ports,
                uid,
                gid,
            },
        );
        if let Some(url) = &opts.oauth2_introspection_url {
            anyhow::ensure!(
                !url.contains(['\n', '\r']),
                "bad oauth2 introspection URL {url:?}"
            );
            let path = root.join(OAUTH2_CONF);
            std::fs::write(&path, render_oauth2_config(url))?;
            chmod(&path, 0o644)?;
        }
        if let Some(db) = &opts.pgsql_database {
            anyhow::ensure!(
                db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad database name {db:?}"
            );
            let path = root.join(SQL_CONF);
            std::fs::write(&path, render_sql_config(db))?;
            chmod(&path, 0o644)?;
        }
        let conf_path = root.join("dovecot.conf");
        std::fs::write(&conf_path, conf)?;
        chmod(&conf_path, 0o644)?;
        drop(plain);
        drop(tls_listener);
        drop(sieve_listener);
        drop(sieve_tls_listener);
        drop(lmtp_listeners);
        let child = spawn(root)?;
        let mut dovecot = Dovecot {
            child,
            dir,
            port,
            tls_port,
            sieve_port,
            sieve_tls_port,
            lmtp_ports,
            ca_pem: certs.map(|(ca, _, _)| ca),
            uid,
            gid,
            name,
            passwd_lock: Mutex::new(()),
            stopped: None,
        };
        dovecot.wait_ready()?;
        Ok(dovecot)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "dovecot exited with {status} before answering:\n{}",
                    self.log()
                );
            }
            if greeting(self.port).is_ok_and(|line| line.starts_with("* OK"))
                && self.sieve_port.is_none_or(|p| {
                    greeting(p).is_ok_and(|line| line.starts_with("\"IMPLEMENTATION\""))
                })
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "dovecot did not greet on port {} within 20 s:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Plain IMAP port on 127.0.0.1 (STARTTLS is offered when `tls` was set).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Implicit-TLS IMAP port on 127.0.0.1, when `tls` was set.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// ManageSieve port on 127.0.0.1, when `sieve` was set (STARTTLS offered with `tls`).
    pub fn sieve_port(&self) -> Option<u16> {
        self.sieve_port
    }

    /// Implicit-TLS ManageSieve port on 127.0.0.1, when `sieve` and `tls` were set.
    pub fn sieve_tls_port(&self) -> Option<u16> {
        self.sieve_tls_port
    }

    /// `sieve://USER@127.0.0.1:PORT` (panics without `sieve`).
    pub fn sieve_url(&self, user: &str) -> String {
        let port = self
            .sieve_port
            .expect("started without DovecotOptions::sieve");
        format!("sieve://{user}@127.0.0.1:{port}")
    }

    /// Directory holding the user's scripts (`NAME.sieve`), whether or not it exists yet.
    pub fn sieve_dir(&self, user: &str) -> PathBuf {
        self.dir.path().join("sieve").join(user).join("scripts")
    }

    fn sieve_active_link(&self, user: &str) -> PathBuf {
        self.dir
            .path()
            .join("sieve")
            .join(user)
            .join("active.sieve")
    }

    /// Puts a script straight into the user's storage, as Pigeonhole lays it out (owned by
    /// the mail user), replacing one of the same name; with `active`, makes it the active
    /// script. No ManageSieve involved. Panics on a name with `/` or on a write failure.
    pub fn put_sieve_script(&self, user: &str, name: &str, content: &[u8], active: bool) {
        assert!(
            self.sieve_port.is_some(),
            "started without DovecotOptions::sieve"
        );
        assert!(
            !name.is_empty() && !name.contains(['/', '\0']),
            "bad script name {name:?}"
        );
        let scripts = self.sieve_dir(user);
        for dir in [scripts.parent().expect("user dir"), scripts.as_path()] {
            if !dir.exists() {
                std::fs::create_dir(dir).expect("creating the sieve directory");
                chmod(dir, 0o700).expect("chmod sieve directory");
                chown(dir, self.uid, self.gid).expect("chown sieve directory");
            }
        }
        let file = format!("{name}.sieve");
        let tmp = scripts.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, content).expect("writing the script");
        chmod(&tmp, 0o600).expect("chmod script");
        chown(&tmp, self.uid, self.gid).expect("chown script");
        std::fs::rename(&tmp, scripts.join(&file)).expect("renaming the script");
        if active {
            let link = self.sieve_active_link(user);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new("scripts").join(&file), &link)
                .expect("linking the active script");
            std::os::unix::fs::lchown(&link, Some(self.uid), Some(self.gid))
                .expect("chown active link");
        }
    }

    /// The user's scripts as they are on disk, read without ManageSieve: an independent
    /// view of what a client did (or did not) change.
    pub fn sieve_scripts(&self, user: &str) -> SieveScripts {
        let mut out = SieveScripts::default();
        if let Ok(entries) = std::fs::read_dir(self.sieve_dir(user)) {
            for entry in entries {
                let entry = entry.expect("reading the sieve directory");
                let file = entry.file_name().to_string_lossy().into_owned();
                let Some(name) = file.strip_suffix(".sieve") else {
                    continue;
                };
                if !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                let path = entry.path();
                let content = std::fs::read(&path).expect("reading a script");
                let meta = std::fs::metadata(&path).expect("script metadata");
                out.scripts.insert(name.to_string(), content);
                out.modified
                    .insert(name.to_string(), meta.modified().expect("mtime"));
            }
        }
        if let Ok(target) = std::fs::read_link(self.sieve_active_link(user)) {
            out.active = target
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .and_then(|f| f.strip_suffix(".sieve").map(str::to_string));
        }
        out
    }

    /// LMTP port on 127.0.0.1, with [`DovecotOptions::lmtp`].
    pub fn lmtp_port(&self) -> Option<u16> {
        self.lmtp_ports.map(|(l, _)| l)
    }

    /// Port of the auth service for an MTA (Postfix `smtpd_sasl_path = inet:...`), with
    /// [`DovecotOptions::lmtp`].
    pub fn auth_port(&self) -> Option<u16> {
        self.lmtp_ports.map(|(_, a)| a)
    }

    /// PEM file of the throwaway CA that signs the server certificate, when `tls` was set.
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.ca_pem.clone()
    }

    /// Add a user with a `{PLAIN}` password to the passwd-file. Dovecot re-reads the file
    /// when it changes, so the user can log in immediately. Panics if `user` or `password`
    /// contains `:` or a line break, or if the file cannot be written.
    pub fn add_user(&self, user: &str, password: &str) {
        assert!(
            !user.contains([':', '\n', '\r', '/']) && !user.is_empty(),
            "bad user name {user:?}"
        );
        assert!(
            !password.contains([':', '\n', '\r']),
            "password may not contain ':' or line breaks"
        );
        let _guard = self.passwd_lock.lock().unwrap_or_else(|e| e.into_inner());
        let passwd = self.dir.path().join("passwd");
        let mut content = std::fs::read_to_string(&passwd).expect("reading passwd-file");
        let home = self.maildir(user);
        let _ = writeln!(
            content,
            "{user}:{{PLAIN}}{password}:{}:{}::{}::",
            self.uid,
            self.gid,
            home.display()
        );
        // Write a new file and rename it over the old one: a new inode is a change that
        // Dovecot notices even within the same second.
        let tmp = self.dir.path().join("passwd.tmp");
        std::fs::write(&tmp, content).expect("writing passwd-file");
        chmod(&tmp, 0o644).expect("chmod passwd-file");
        std::fs::rename(&tmp, &passwd).expect("replacing passwd-file");
    }

    /// Changes an existing user's password (as an administrator would mid-migration).
    pub fn set_password(&self, user: &str, password: &str) {
        assert!(!password.contains([':', '\n', '\r']), "bad password");
        let _guard = self.passwd_lock.lock().unwrap_or_else(|e| e.into_inner());
        let passwd = self.dir.path().join("passwd");
        let content = std::fs::read_to_string(&passwd).expect("reading passwd-file");
        let prefix = format!("{user}:");
        let content: String = content
            .lines()
            .map(|l| match l.strip_prefix(&prefix) {
                Some(rest) => {
                    let after = rest.split_once(':').map(|(_, a)| a).unwrap_or("");
                    format!("{user}:{{PLAIN}}{password}:{after}\n")
                }
                None => format!("{l}\n"),
            })
            .collect();
        // Dovecot notices the change by mtime (seconds) and inode: make both differ.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let tmp = self.dir.path().join("passwd.tmp");
        std::fs::write(&tmp, content).expect("writing passwd-file");
        chmod(&tmp, 0o644).expect("chmod passwd-file");
        std::fs::rename(&tmp, &passwd).expect("replacing passwd-file");
    }

    /// `imap://USER@127.0.0.1:PORT` (the user is not percent-encoded).
    pub fn url(&self, user: &str) -> String {
        format!("imap://{user}@127.0.0.1:{}", self.port)
    }

    /// Content of the instance's log file (plus anything Dovecot wrote to stderr).
    pub fn log(&self) -> String {
        let mut log = String::new();
        for name in ["stderr.log", "dovecot.log"] {
            if let Ok(mut f) = std::fs::File::open(self.dir.path().join(name)) {
                let mut buf = Vec::new();
                let _ = f.read_to_end(&mut buf);
                log.push_str(&String::from_utf8_lossy(&buf));
            }
        }
        log
    }

    /// The user's Maildir root (INBOX's `cur`/`new`/`tmp` live directly in it).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// Dovecot `instance_name` (its processes are titled `dovecot-NAME/...`).
    pub fn instance_name(&self) -> &str {
        &self.name
    }

    /// The instance's private directory (config, log, passwd-file, mail, TLS material).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server as an outage would: every connection is closed (by a clean
    /// shutdown: SIGTERM, which takes about a second) and new ones are refused, while its
    /// directory, users and mail stay. Its ports stay reserved (see [`crate::services::PortHold`]) for
    /// [`Dovecot::start_again`]. Does nothing if it is stopped.
    pub fn stop(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        self.terminate();
        let holds = std::iter::once(self.port)
            .chain(self.tls_port)
            .filter_map(|p| crate::services::PortHold::on(p).ok())
            .collect();
        self.stopped = Some(holds);
    }

    /// Starts a stopped server again on the same ports with the same users and mail;
    /// returns once it greets. Does nothing if it runs.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let Some(holds) = self.stopped.take() else {
            return Ok(());
        };
        match spawn(self.dir.path()) {
            Ok(child) => self.child = child,
            Err(e) => {
                self.stopped = Some(holds);
                return Err(e);
            }
        }
        // Dovecot binds with SO_REUSEADDR, so the holds may go only once it listens.
        let ready = self.wait_ready();
        drop(holds);
        ready
    }

    /// SIGTERM to the master (it stops its children and exits), then SIGKILL to whatever
    /// is left of its process group.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever is left in its process group (the master itself if it hung, its log
        // process, an imap process) gets SIGKILL.
        self.signal_group("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "---- dovecot log ({}, port {}), last {} lines ----",
                self.dir.path().display(),
                self.port,
                tail.len()
            );
            for l in tail {
                let _ = writeln!(err, "{l}");
            }
            let _ = writeln!(err, "---- end of dovecot log ----");
        }
        // A stopped server has no processes left (and its group id may be reused).
        if self.stopped.is_none() {
            self.terminate();
        }
    }
}
