//! The new provider's sending side, from Debian's packages, on loopback: a private
//! Postfix instance ([`Submission`]) with submission on implicit TLS and on STARTTLS,
//! SASL logins checked by a test Dovecot's auth service, DKIM signing by an OpenDKIM
//! milter, and delivery into that Dovecot over LMTP.
//!
//! Facts worth knowing when writing tests against it:
//! * Must run as root. Postfix is started with `postfix -c DIR start` (its own
//!   `config_directory`, `queue_directory`, `data_directory`, `syslog_name`, loopback-only
//!   listeners on free ports, nothing chrooted) and stopped with `postfix -c DIR stop`
//!   on drop. Its log is `DIR/postfix.log` (`maillog_file`; `maillog_file_prefixes` must
//!   cover it or Postfix exits without a word).
//! * The Dovecot must be started with [`DovecotOptions::lmtp`](crate::dovecot::DovecotOptions)
//!   and hold the users as full addresses (`alice@deliver.test`): Postfix's SASL and
//!   LMTP both ask it.
//! * Every recipient domain in [`SubmissionOptions::domains`] is delivered to Dovecot;
//!   unknown users bounce at LMTP time (Postfix does not check recipients itself).
//! * OpenDKIM (`opendkim -f`, in its own process group) signs every message from
//!   127.0.0.1 or from a logged-in client with the one key of [`DkimKey`], whatever the
//!   From domain: a From of another domain gives a valid but unaligned signature.
//!   OpenDKIM logs only to syslog; its stderr is in `DIR/opendkim.log`.
//! * Mail to an address in [`SubmissionOptions::hold`] is accepted and put on hold
//!   (`postsuper -H`-style): it never arrives.

use crate::dovecot::Dovecot;
use crate::https::TestCa;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A DKIM key pair made by `opendkim-genkey`.
#[derive(Clone, Debug)]
pub struct DkimKey {
    /// The signing domain (`d=`).
    pub domain: String,
    pub selector: String,
    /// The private key (PEM).
    pub private: PathBuf,
    /// The TXT record to publish at `SELECTOR._domainkey.DOMAIN`
    /// (`v=DKIM1; h=sha256; k=rsa; p=...`).
    pub record: String,
}

/// The quoted strings of a zone-file TXT record, joined.
fn quoted_strings(zone: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in zone.chars() {
        match c {
            '"' => inside = !inside,
            c if inside => out.push(c),
            _ => {}
        }
    }
    out
}

impl DkimKey {
    /// Generates a 2048-bit RSA key in `dir` (created if missing).
    pub fn generate(dir: &Path, domain: &str, selector: &str) -> anyhow::Result<DkimKey> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("opendkim-genkey")
            .args(["-b", "2048", "-d", domain, "-s", selector, "-D"])
            .arg(dir)
            .output()
            .context("running opendkim-genkey (install Debian's `opendkim-tools`)")?;
        if !out.status.success() {
            bail!(
                "opendkim-genkey failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let zone = std::fs::read_to_string(dir.join(format!("{selector}.txt")))?;
        let record = quoted_strings(&zone);
        anyhow::ensure!(record.contains("p="), "no key in {zone}");
        Ok(DkimKey {
            domain: domain.into(),
            selector: selector.into(),
            private: dir.join(format!("{selector}.private")),
            record,
        })
    }
}

/// How the submission server is set up.
#[derive(Clone, Debug)]
pub struct SubmissionOptions {
    /// `myhostname`: the name in its greeting and `Received` headers.
    pub hostname: String,
    /// Domains whose mail is delivered into the Dovecot.
    pub domains: Vec<String>,
    /// Sign with this key (OpenDKIM); no signing when `None`.
    pub dkim: Option<DkimKey>,
    /// Recipients whose mail is accepted but held, never delivered.
    pub hold: Vec<String>,
}

impl Default for SubmissionOptions {
    fn default() -> Self {
        SubmissionOptions {
            hostname: "mta.new.test".into(),
            domains: Vec::new(),
            dkim: None,
            hold: Vec::new(),
        }
    }
}

fn free_port() -> anyhow::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free loopback port")
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn port_answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// A greeting `220` on a plain port.
fn greets(port: u16) -> bool {
    let Ok(s) = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(300),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let ok = BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("220");
    let _ = (&s).write_all(b"QUIT\r\n");
    ok
}

/// The OpenDKIM milter.
struct OpenDkim {
    child: Child,
    port: u16,
}

impl OpenDkim {
    fn start(dir: &Path, key: &DkimKey) -> anyhow::Result<OpenDkim> {
        let listener = free_port()?;
        let port = listener.local_addr()?.port();
        let key_ref = format!("{}._domainkey.{}", key.selector, key.domain);
        std::fs::write(
            dir.join("KeyTable"),
            format!(
                "{key_ref} {}:{}:{}\n",
                key.domain,
                key.selector,
                key.private.display()
            ),
        )?;
        // Every sender, whatever its domain, is signed with this one key.
        std::fs::write(dir.join("SigningTable"), format!("* {key_ref}\n"))?;
        let conf = dir.join("opendkim.conf");
        std::fs::write(
            &conf,
            format!(
                "# Generated by mailshift-tests.\n\
                 Syslog no\n\
                 Background no\n\
                 Mode s\n\
                 Socket inet:{port}@127.0.0.1\n\
                 PidFile {dir}/opendkim.pid\n\
                 KeyTable file:{dir}/KeyTable\n\
                 SigningTable refile:{dir}/SigningTable\n\
                 Canonicalization relaxed/relaxed\n\
                 SignatureAlgorithm rsa-sha256\n\
                 RequireSafeKeys no\n\
                 InternalHosts 127.0.0.1\n",
                dir = dir.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("opendkim.log"))?;
        drop(listener);
        let child = Command::new("opendkim")
            .arg("-f")
            .arg("-x")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("spawning opendkim (install Debian's `opendkim`)")?;
        let mut me = OpenDkim { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !port_answers(port) {
            if let Some(status) = me.child.try_wait()? {
                bail!(
                    "opendkim exited with {status}: {}",
                    std::fs::read_to_string(dir.join("opendkim.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("opendkim did not listen on port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(me)
    }
}

impl Drop for OpenDkim {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running submission server (Postfix + OpenDKIM) delivering into a Dovecot; stopped
/// on drop.
pub struct Submission {
    dir: tempfile::TempDir,
    smtps_port: u16,
    submission_port: u16,
    ca: TestCa,
    _opendkim: Option<OpenDkim>,
    hostname: String,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("dir", &self.dir.path())
            .field("smtps_port", &self.smtps_port)
            .field("submission_port", &self.submission_port)
            .finish()
    }
}

impl Submission {
    /// Starts OpenDKIM (if asked) and Postfix; returns once both submission ports greet.
    pub fn start(dovecot: &Dovecot, opts: SubmissionOptions) -> anyhow::Result<Submission> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let (Some(lmtp), Some(auth)) = (dovecot.lmtp_port(), dovecot.auth_port()) else {
            bail!("the Dovecot behind a submission server needs DovecotOptions {{ lmtp: true }}");
        };
        let dir = tempfile::Builder::new()
            .prefix("mailshift-postfix-")
            .tempdir()
            .context("creating the Postfix directory")?;
        let root = dir.path();
        chmod(root, 0o755)?;
        for sub in ["etc", "queue", "data", "dkim"] {
            std::fs::create_dir(root.join(sub))?;
            chmod(&root.join(sub), 0o755)?;
        }
        let status = Command::new("chown")
            .args(["postfix"])
            .arg(root.join("data"))
            .status()
            .context("chown postfix (is Debian's `postfix` installed?)")?;
        anyhow::ensure!(status.success(), "chown postfix {}", root.display());

        let ca = TestCa::new()?;
        let (cert, key) = ca.issue(&[&opts.hostname, "localhost", "127.0.0.1"])?;
        let opendkim = match &opts.dkim {
            Some(k) => Some(OpenDkim::start(&root.join("dkim"), k)?),
            None => None,
        };

        let smtps = free_port()?;
        let submission = free_port()?;
        let (smtps_port, submission_port) =
            (smtps.local_addr()?.port(), submission.local_addr()?.port());
        let name = format!(
            "postfix-mailshift-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let hold = if opts.hold.is_empty() {
            String::new()
        } else {
            format!(
                "check_recipient_access inline:{{{}}}, ",
                opts.hold
                    .iter()
                    .map(|a| format!("{a}=HOLD"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let milters = match &opendkim {
            Some(o) => format!(
                "smtpd_milters = inet:127.0.0.1:{}\nnon_smtpd_milters = $smtpd_milters\n\
                 milter_default_action = tempfail\nmilter_protocol = 6\n",
                o.port
            ),
            None => String::new(),
        };
        let d = root.display();
        std::fs::write(
            root.join("etc/main.cf"),
            format!(
                "# Generated by mailshift-tests: a throwaway submission server.\n\
                 compatibility_level = 3.6\n\
                 queue_directory = {d}/queue\n\
                 data_directory = {d}/data\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 syslog_name = {name}\n\
                 maillog_file = {d}/postfix.log\n\
                 maillog_file_prefixes = {d}\n\
                 myhostname = {host}\n\
                 myorigin = $myhostname\n\
                 mydestination =\n\
                 local_transport = error:no local delivery on this test server\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 biff = no\n\
                 smtputf8_enable = no\n\
                 virtual_mailbox_domains = {domains}\n\
                 virtual_transport = lmtp:inet:127.0.0.1:{lmtp}\n\
                 smtpd_reject_unlisted_recipient = no\n\
                 smtpd_sasl_auth_enable = yes\n\
                 smtpd_sasl_type = dovecot\n\
                 smtpd_sasl_path = inet:127.0.0.1:{auth}\n\
                 smtpd_tls_cert_file = {cert}\n\
                 smtpd_tls_key_file = {key}\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_auth_only = yes\n\
                 smtpd_relay_restrictions = permit_sasl_authenticated, reject\n\
                 smtpd_recipient_restrictions = {hold}permit_sasl_authenticated, reject\n\
                 {milters}",
                host = opts.hostname,
                domains = opts.domains.join(", "),
                cert = cert.display(),
                key = key.display(),
            ),
        )?;
        let service = |cmd: &str| format!("{cmd}\n");
        let mut master = String::new();
        master.push_str(&format!(
            "127.0.0.1:{smtps_port} inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n  \
             -o smtpd_tls_security_level=encrypt\n\
             127.0.0.1:{submission_port} inet n - n - - smtpd\n  \
             -o smtpd_tls_security_level=encrypt\n"
        ));
        for line in [
            "pickup    unix  n - n 60 1 pickup",
            "cleanup   unix  n - n - 0 cleanup",
            "qmgr      unix  n - n 300 1 qmgr",
            "tlsmgr    unix  - - n 1000? 1 tlsmgr",
            "rewrite   unix  - - n - - trivial-rewrite",
            "bounce    unix  - - n - 0 bounce",
            "defer     unix  - - n - 0 bounce",
            "trace     unix  - - n - 0 bounce",
            "verify    unix  - - n - 1 verify",
            "flush     unix  n - n 1000? 0 flush",
            "proxymap  unix  - - n - - proxymap",
            "smtp      unix  - - n - - smtp",
            "showq     unix  n - n - - showq",
            "error     unix  - - n - - error",
            "retry     unix  - - n - - error",
            "discard   unix  - - n - - discard",
            "lmtp      unix  - - n - - lmtp",
            "anvil     unix  - - n - 1 anvil",
            "scache    unix  - - n - 1 scache",
            "postlog   unix-dgram n - n - 1 postlogd",
        ] {
            master.push_str(&service(line));
        }
        std::fs::write(root.join("etc/master.cf"), master)?;
        drop(smtps);
        drop(submission);
        let out = Command::new("postfix")
            .arg("-c")
            .arg(root.join("etc"))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .context("running `postfix start` (is Debian's `postfix` installed?)")?;
        let me = Submission {
            dir,
            smtps_port,
            submission_port,
            ca,
            _opendkim: opendkim,
            hostname: opts.hostname.clone(),
        };
        if !out.status.success() {
            bail!(
                "postfix start failed ({}): {}{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                me.log()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(greets(submission_port) && port_answers(smtps_port)) {
            if Instant::now() > deadline {
                bail!(
                    "postfix did not greet on port {submission_port} within 30 s:\n{}",
                    me.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// Implicit-TLS submission port (RFC 8314, "465") on 127.0.0.1.
    pub fn smtps_port(&self) -> u16 {
        self.smtps_port
    }

    /// STARTTLS submission port ("587") on 127.0.0.1.
    pub fn submission_port(&self) -> u16 {
        self.submission_port
    }

    /// The CA that signed the server certificate (for `localhost`, `127.0.0.1` and the
    /// host name).
    pub fn ca_pem(&self) -> PathBuf {
        self.ca.ca_pem()
    }

    /// The CA itself, to issue more certificates (e.g. for an HTTPS policy host).
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Postfix's log plus OpenDKIM's stderr.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for f in ["postfix.log", "dkim/opendkim.log"] {
            if let Ok(mut file) = std::fs::File::open(self.dir.path().join(f)) {
                let mut buf = Vec::new();
                let _ = file.read_to_end(&mut buf);
                out.push_str(&String::from_utf8_lossy(&buf));
            }
        }
        out
    }
}

impl Drop for Submission {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(150)..];
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "---- postfix/opendkim log ({}), last {} lines ----",
                self.dir.path().display(),
                tail.len()
            );
            for l in tail {
                let _ = writeln!(err, "{l}");
            }
            let _ = writeln!(err, "---- end of postfix log ----");
        }
        let etc = self.dir.path().join("etc");
        let master = std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let stopped = Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = Command::new("postfix")
                .arg("-c")
                .arg(&etc)
                .arg("abort")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // `stop` returns before the master has exited: wait for it, so the queue
        // directory is not removed under a running daemon; kill it if it lingers.
        if let Some(pid) = master {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while proc.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
            if proc.exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}
