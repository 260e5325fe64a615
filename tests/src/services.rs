//! Private PostgreSQL and RabbitMQ servers that a test may crash and start again.
//!
//! The shared instances on 127.0.0.1:5432 and :5672 serve every test running in parallel,
//! so a test about outages must never touch them. [`PrivatePostgres`] and [`PrivateRabbit`]
//! run the same Debian packages as throwaway servers, each in its own temporary directory,
//! as a child process in its own process group, on loopback ports of its own. Dropping one
//! stops every process it started.
//!
//! Their ports are reserved by a [`PortHold`] for their whole life, so a server that is
//! killed and started again comes back on the same port, which nobody took in between.
//! Readiness is awaited on conditions (an answering port, `pg_isready`, an AMQP greeting)
//! with deadlines; a failure panics with the server's log. Every method blocks (a RabbitMQ
//! start takes seconds): async tests call them through `tokio::task::spawn_blocking` or
//! from a plain `#[test]` that drives its own runtime.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// A loopback port reserved by a socket that is bound (with `SO_REUSEADDR`) but never
/// listens.
///
/// While it is held, a connection to the port is refused unless a server listens on it,
/// the kernel gives the port to no `bind(port 0)` and to no outgoing connection, and a
/// `bind` without `SO_REUSEADDR` fails. A server that sets `SO_REUSEADDR` (PostgreSQL,
/// Erlang/RabbitMQ, Dovecot, std and tokio listeners all do) still binds and listens on
/// it, so the hold can stay for the whole life of a server that is stopped and started.
/// A hold can not be taken on a port where something listens.
pub struct PortHold {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl std::fmt::Debug for PortHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortHold")
            .field("port", &self.port)
            .finish()
    }
}

impl PortHold {
    /// Holds a free loopback port chosen by the kernel.
    pub fn new() -> PortHold {
        PortHold::on(0).expect("reserving a free loopback port")
    }

    /// Holds `127.0.0.1:port` (e.g. the port of a server that just stopped; its
    /// connections left in TIME_WAIT do not prevent this).
    pub fn on(port: u16) -> std::io::Result<PortHold> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let port = socket.local_addr()?.port();
        Ok(PortHold {
            _socket: socket,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for PortHold {
    fn default() -> Self {
        PortHold::new()
    }
}

/// Sends `signal` (a name such as `QUIT`) to a process, or to a process group if
/// `target` starts with `-`.
fn signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `limit` for `child` to exit; true if it did.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills a child's whole process group (the child leads it) and reaps the child.
fn kill_group(child: &mut Child) {
    // Signalled before reaping, so the group id can not have been reused yet.
    signal("KILL", &format!("-{}", child.id()));
    let _ = child.kill();
    let _ = child.wait();
}

fn port_answers(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(s)
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn dump_log_if_panicking(what: &str, log: impl FnOnce() -> String) {
    if std::thread::panicking() {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "---- {what} log (last 200 lines) ----\n{}\n---- end of {what} log ----",
            tail(&log(), 200)
        );
    }
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => (u, g),
        _ => panic!("no system user `{user}` (is its Debian package installed?)"),
    }
}

fn unique_suffix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// Debian's PostgreSQL server binaries (the newest of `/usr/lib/postgresql/*/bin`).
struct PgBin {
    dir: PathBuf,
    /// `15.20` from `postgres --version`.
    version: String,
}

fn pg_bin() -> &'static PgBin {
    static BIN: OnceLock<PgBin> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                    .then_some((major, bin))
            })
            .collect();
        found.sort();
        let Some((_, dir)) = found.pop() else {
            panic!(
                "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin \
                 (install Debian's `postgresql` package; scripts/test does)"
            );
        };
        let out = Command::new(dir.join("postgres"))
            .arg("--version")
            .output()
            .expect("running postgres --version");
        // "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
        let version = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        PgBin { dir, version }
    })
}

/// A freshly initialised data directory (trust auth, superuser `postgres`, UTF8), made
/// once per PostgreSQL version and machine and copied for every server: `initdb` costs
/// about a second, a copy a fraction of that. It lives in the system temp directory under
/// a name with the version and this recipe's revision; delete it to force a new one.
fn pg_template(bin: &PgBin, uid: u32, gid: u32) -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let done =
            std::env::temp_dir().join(format!("mailshift-tests-pg{}-template-r1", bin.version));
        if done.join("PG_VERSION").is_file() {
            return done;
        }
        let work = tempfile::Builder::new()
            .prefix("mailshift-pg-initdb-")
            .tempdir()
            .expect("creating a directory for initdb");
        std::os::unix::fs::chown(work.path(), Some(uid), Some(gid)).expect("chown initdb dir");
        let data = work.path().join("data");
        let out = Command::new(bin.dir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(work.path())
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Atomic: another test process racing us either finds no template or a whole one.
        if let Err(e) = std::fs::rename(&data, &done) {
            assert!(
                done.join("PG_VERSION").is_file(),
                "could not move the initdb result to {}: {e}",
                done.display()
            );
        }
        done
    })
}

/// A throwaway PostgreSQL server (Debian's binaries, run as the `postgres` system user)
/// in a temporary directory: trust auth for user `postgres`, listening on 127.0.0.1 on a
/// port of its own (and on a unix socket in its directory), `fsync = off`.
///
/// Commits still reach the kernel before they are acknowledged (`synchronous_commit` is
/// left on), so a crash of the server ([`PrivatePostgres::stop_immediate`]) loses nothing
/// a client saw committed: only an operating-system crash would.
///
/// Killed (with every backend) on drop; its directory goes with it.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    hold: PortHold,
    uid: u32,
    gid: u32,
    /// The postmaster while it runs; `None` after [`PrivatePostgres::stop_immediate`].
    server: Mutex<Option<Child>>,
}

impl std::fmt::Debug for PrivatePostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivatePostgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port())
            .finish()
    }
}

impl PrivatePostgres {
    /// Starts a new server; returns once it accepts queries. Panics (with the server's
    /// log) if it does not within 30 s.
    pub fn start() -> PrivatePostgres {
        let bin = pg_bin();
        let (uid, gid) = user_ids("postgres");
        let template = pg_template(bin, uid, gid);
        let dir = tempfile::Builder::new()
            .prefix("mailshift-pg-")
            .tempdir()
            .expect("creating the server directory");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown server dir");
        let out = Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(dir.path().join("data"))
            .output()
            .expect("running cp");
        assert!(
            out.status.success(),
            "copying the template cluster {} failed (delete it to have it made again): {}",
            template.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PrivatePostgres {
            dir,
            hold: PortHold::new(),
            uid,
            gid,
            server: Mutex::new(None),
        };
        pg.spawn();
        pg
    }

    fn spawn(&self) {
        let mut server = lock(&self.server);
        assert!(
            server.is_none(),
            "the private PostgreSQL is already running"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the server log");
        let dir = self.dir.path();
        let settings = [
            "listen_addresses=127.0.0.1".to_owned(),
            format!("unix_socket_directories={}", dir.display()),
            "fsync=off".to_owned(),
            "full_page_writes=off".to_owned(),
            "max_connections=200".to_owned(),
        ];
        let mut cmd = Command::new(pg_bin().dir.join("postgres"));
        cmd.arg("-D")
            .arg(dir.join("data"))
            .arg("-p")
            .arg(self.port().to_string());
        for s in &settings {
            cmd.arg("-c").arg(s);
        }
        let child = cmd
            .current_dir(dir)
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawning postgres");
        *server = Some(child);
        self.wait_up(&mut server);
    }

    fn wait_up(&self, server: &mut Option<Child>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = server.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                *server = None;
                panic!(
                    "the private PostgreSQL on port {} exited with {status} while starting:\n{}",
                    self.port(),
                    self.log()
                );
            }
            if self.is_up() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private PostgreSQL did not accept connections on port {} within 30 s:\n{}",
                self.port(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// TCP port on 127.0.0.1 (the same after [`PrivatePostgres::start_again`]).
    pub fn port(&self) -> u16 {
        self.hold.port()
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port())
    }

    /// Creates database `name` (letters, digits and `_` only).
    pub fn create_database(&self, name: &str) {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad database name {name:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Runs `sql` in `db` with psql (unaligned, tuples only) and returns its output;
    /// panics with psql's output and the server log if it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_output(db, sql);
        assert!(
            out.status.success(),
            "psql on the private PostgreSQL (port {}, database {db}) failed for {sql:?}:\n{}{}\n\
             ---- server log ----\n{}",
            self.port(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 50)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`PrivatePostgres::psql`], for a test that expects a failure.
    pub fn psql_output(&self, db: &str, sql: &str) -> Output {
        Command::new(pg_bin().dir.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-p", &self.port().to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .expect("running psql")
    }

    /// True if the server accepts connections (TCP, then `pg_isready`).
    pub fn is_up(&self) -> bool {
        if port_answers(self.port()).is_none() {
            return false;
        }
        Command::new(pg_bin().dir.join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-t",
                "2",
            ])
            .args(["-p", &self.port().to_string()])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Crashes the server as `pg_ctl stop -m immediate` does (SIGQUIT to the postmaster):
    /// every session ends at once, nothing is checkpointed, and the next start runs crash
    /// recovery. Returns once every server process is gone. Does nothing if it is stopped.
    pub fn stop_immediate(&self) {
        let Some(mut child) = lock(&self.server).take() else {
            return;
        };
        signal("QUIT", &child.id().to_string());
        // The postmaster kills its backends (SIGKILL after 5 s) before it exits.
        if !wait_exit(&mut child, Duration::from_secs(15)) {
            kill_group(&mut child);
        }
    }

    /// Starts the stopped server again on the same port with the same data; returns once
    /// it accepts queries (after its crash recovery). Panics if it is running.
    pub fn start_again(&self) {
        self.spawn();
    }

    /// The server's log (all its starts).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's directory (`data/`, `postgres.log`, the unix socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        dump_log_if_panicking(
            &format!("private PostgreSQL (port {})", self.port()),
            || self.log(),
        );
        if let Some(mut child) = lock(&self.server).take() {
            // An immediate shutdown still removes the server's SysV shared-memory
            // segment; SIGKILL would leak one per server.
            signal("QUIT", &child.id().to_string());
            if !wait_exit(&mut child, Duration::from_secs(10)) {
                kill_group(&mut child);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------------------

/// Upstream start scripts (the `/usr/sbin` wrappers would switch to the `rabbitmq` user).
const RABBIT_SBIN: &str = "/usr/lib/rabbitmq/bin";

/// A throwaway RabbitMQ node (Debian's `rabbitmq-server`) in a temporary directory: its own
/// node name (`mailshift-test-PID-N-RAND@localhost`), AMQP port and distribution port (both on
/// 127.0.0.1), data, logs, config, Erlang cookie and `HOME`, and no plugins (so nothing
/// binds a fixed port such as 15672 or 15692). The shared `epmd` is used (and started on
/// 127.0.0.1 if none runs); it is left alone on drop.
///
/// User `guest`/`guest` works from loopback. Killed (SIGKILL to its process group) on
/// drop; its directory goes with it.
pub struct PrivateRabbit {
    dir: tempfile::TempDir,
    node: String,
    amqp: PortHold,
    dist: PortHold,
    /// The Erlang VM (the start script execs it) while the node runs.
    server: Mutex<Option<Child>>,
}

impl std::fmt::Debug for PrivateRabbit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateRabbit")
            .field("node", &self.node)
            .field("port", &self.port())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl PrivateRabbit {
    /// Starts a new node; returns once it greets AMQP clients. Panics (with the node's log)
    /// if it does not within 60 s. Takes a few seconds (the Erlang VM loads every RabbitMQ
    /// module at boot).
    pub fn start() -> PrivateRabbit {
        if !Path::new(RABBIT_SBIN).join("rabbitmq-server").is_file() {
            panic!(
                "{RABBIT_SBIN}/rabbitmq-server not found (install Debian's `rabbitmq-server` \
                 package; scripts/test does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("mailshift-rabbit-")
            .tempdir()
            .expect("creating the node directory");
        let amqp = PortHold::new();
        let dist = PortHold::new();
        let root = dir.path();
        for sub in ["mnesia", "log"] {
            std::fs::create_dir(root.join(sub)).expect("creating node directories");
        }
        let write = |name: &str, content: &str| {
            std::fs::write(root.join(name), content).expect("writing node configuration");
        };
        write("enabled_plugins", "[].\n");
        // The classic (Erlang terms) format: no cuttlefish schema translation at boot.
        write(
            "rabbitmq.config",
            &format!(
                "[{{rabbit, [{{tcp_listeners, [{{\"127.0.0.1\", {}}}]}}]}}].\n",
                amqp.port()
            ),
        );
        // Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the shared node.
        write("rabbitmq-env.conf", "");
        let cookie: String = rand::random::<[u8; 20]>()
            .iter()
            .map(|b| char::from(b'A' + b % 26))
            .collect();
        let cookie_path = root.join(".erlang.cookie");
        write(".erlang.cookie", &cookie);
        std::fs::set_permissions(&cookie_path, std::fs::Permissions::from_mode(0o400))
            .expect("chmod the Erlang cookie");
        let rabbit = PrivateRabbit {
            // Random too: a node orphaned by a killed test process keeps its name in epmd,
            // and a later process may get the same pid.
            node: format!(
                "mailshift-test-{}-{:04x}@localhost",
                unique_suffix(),
                rand::random::<u16>()
            ),
            dir,
            amqp,
            dist,
            server: Mutex::new(None),
        };
        rabbit.spawn();
        rabbit
    }

    /// The environment of this node's scripts (server and CLI), without any inherited
    /// `RABBITMQ_*`/`ERL_*` setting that could point them at another node.
    fn command(&self, script: &str) -> Command {
        let root = self.dir.path();
        let mut cmd = Command::new(Path::new(RABBIT_SBIN).join(script));
        for (k, _) in std::env::vars_os() {
            if k.to_str()
                .is_some_and(|k| k.starts_with("RABBITMQ_") || k.starts_with("ERL_"))
            {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(root)
            .env("HOME", root)
            .env("RABBITMQ_CONF_ENV_FILE", root.join("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&self) {
        let mut server = lock(&self.server);
        assert!(server.is_none(), "the private RabbitMQ is already running");
        let root = self.dir.path();
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("console.log"))
            .expect("opening the console log");
        let child = self
            .command("rabbitmq-server")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port().to_string())
            .env("RABBITMQ_DIST_PORT", self.dist.port().to_string())
            .env("RABBITMQ_MNESIA_BASE", root.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", root.join("log"))
            .env("RABBITMQ_CONFIG_FILE", root.join("rabbitmq.config"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                root.join("advanced.config"),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                root.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", root.join("rabbitmq.pid"))
            // The script then execs the Erlang VM instead of waiting on it, so the child
            // is the VM: reaping it means its sockets are closed. `-noinput` because
            // ALLOW_INPUT would otherwise leave it reading stdin.
            .env("RABBITMQ_ALLOW_INPUT", "1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-noinput -kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdout(console.try_clone().expect("cloning the log handle"))
            .stderr(console)
            .process_group(0)
            .spawn()
            .expect("spawning rabbitmq-server");
        *server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = server.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                kill_group(child);
                *server = None;
                panic!(
                    "the private RabbitMQ node {} exited with {status} while starting:\n{}",
                    self.node,
                    tail(&self.log(), 100)
                );
            }
            if self.is_up() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private RabbitMQ node {} did not greet AMQP clients on port {} within \
                 60 s:\n{}",
                self.node,
                self.port(),
                tail(&self.log(), 100)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// AMQP port on 127.0.0.1 (the same after [`PrivateRabbit::restart`]).
    pub fn port(&self) -> u16 {
        self.amqp.port()
    }

    /// Erlang node name, e.g. `mailshift-test-1234-0-9f3a@localhost`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port())
    }

    /// True if the node answers the AMQP protocol header with `connection.start`.
    pub fn is_up(&self) -> bool {
        let Some(mut s) = port_answers(self.port()) else {
            return false;
        };
        let mut frame = [0u8; 7];
        s.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
            && s.read_exact(&mut frame).is_ok()
            // A method frame (type 1) on channel 0.
            && frame[..3] == [1, 0, 0]
    }

    /// Crashes the node: SIGKILL to the Erlang VM and every process of its group, as an
    /// out-of-memory kill would. Returns once they are gone. Does nothing if it is stopped.
    ///
    /// Just before, the node's DETS tables are synced ([`PrivateRabbit::flush`]): RabbitMQ
    /// 3.10 keeps quorum-queue registrations in DETS, which writes them up to 3 s late, and
    /// a queue whose registration is lost comes back without a leader and without its
    /// messages. Tests crash a broker seconds after declaring their queues; production
    /// brokers crash long after, which is what this reproduces.
    pub fn kill9(&self) {
        let mut server = lock(&self.server);
        let Some(child) = server.as_mut() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            self.flush();
        }
        if let Some(mut child) = server.take() {
            kill_group(&mut child);
        }
    }

    /// Syncs every DETS table of the running node to disk (through `erl_call`, in a few
    /// milliseconds). Panics if the node can not be reached.
    pub fn flush(&self) {
        let erl_call = ["/usr/lib/erlang/bin/erl_call", "/usr/bin/erl_call"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("erl_call not found (Debian's erlang-base, a dependency of rabbitmq-server)");
        let mut child = Command::new(erl_call)
            .args(["-sname", &self.node, "-e"])
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running erl_call");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"[dets:sync(T) || T <- dets:all()].\n");
        }
        let out = child.wait_with_output().expect("waiting for erl_call");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("{ok,"),
            "syncing the DETS tables of RabbitMQ node {} failed: {stdout}{}",
            self.node,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the node again with the same name, ports and data (durable queues and their
    /// persistent messages come back); kills it first if it still runs. Returns once it
    /// greets AMQP clients.
    pub fn restart(&self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `rabbitmqctl -n NODE ARGS` against this node (with its cookie) and returns
    /// stdout; panics with the CLI's output and the node's log if it fails.
    pub fn rabbitmqctl(&self, args: &[&str]) -> String {
        let out = self.rabbitmqctl_output(args);
        assert!(
            out.status.success(),
            "rabbitmqctl -n {} {} failed with {}:\n{}{}\n---- node log ----\n{}",
            self.node,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 50)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`PrivateRabbit::rabbitmqctl`], for a test that expects a failure.
    pub fn rabbitmqctl_output(&self, args: &[&str]) -> Output {
        self.command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .expect("running rabbitmqctl")
    }

    /// The node's log file and console output (all its starts).
    pub fn log(&self) -> String {
        let root = self.dir.path();
        let mut log = read_lossy(&root.join("log").join(format!("{}.log", self.node)));
        let console = read_lossy(&root.join("console.log"));
        if !console.is_empty() {
            let _ = write!(log, "\n---- console ----\n{console}");
        }
        log
    }

    /// The node's directory (config, cookie, `mnesia/`, `log/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        dump_log_if_panicking(&format!("private RabbitMQ {}", self.node), || self.log());
        // No flush: it could panic, and a panic while unwinding aborts.
        if let Some(mut child) = lock(&self.server).take() {
            kill_group(&mut child);
        }
    }
}
