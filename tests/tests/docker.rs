#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The container image end to end: every mailshift command of a fleet migration runs in
//! the image `scripts/docker-image` built from the release binary (docker/Dockerfile), as
//! its non-root user, with a read-only root filesystem and no capabilities, on the host
//! network, against the real PostgreSQL (127.0.0.1:5432), RabbitMQ (127.0.0.1:5672) and two
//! throwaway Dovecot servers. The destination is then compared with the source over IMAP
//! by the harness, independently of mailshift's records.
//!
//! Ignored by a plain `cargo test`: it needs a Docker engine and the image.
//! `scripts/docker-e2e` (run by CI) builds both and runs this file with `--ignored`,
//! naming the image in `MAILSHIFT_DOCKER_IMAGE`.

use mailshift_tests::fleet::{AMQP, Db, Fleet, dst_pw, free_port, servers, src_pw, uuid_like};
use mailshift_tests::imap;
use mailshift_tests::pair::{assert_same, text};
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn image() -> String {
    std::env::var("MAILSHIFT_DOCKER_IMAGE").unwrap_or_else(|_| {
        panic!("MAILSHIFT_DOCKER_IMAGE is not set: run scripts/docker-e2e, which builds the image")
    })
}

/// Containers this test started, removed (`docker rm -f`) when it ends, passed or not.
struct Containers {
    prefix: String,
    started: std::cell::RefCell<Vec<String>>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        for name in self.started.borrow().iter() {
            let _ = Command::new("docker")
                .args(["rm", "-f", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Containers {
    fn new() -> Containers {
        Containers {
            prefix: format!("mailshift-e2e-{}", uuid_like().replace('_', "-")),
            started: Default::default(),
        }
    }

    /// `docker run --name NAME --network host`, NAME registered for removal.
    fn docker_run(&self, role: &str) -> (Command, String) {
        let name = format!("{}-{role}", self.prefix);
        self.started.borrow_mut().push(name.clone());
        let mut c = Command::new("docker");
        c.args(["run", "--name", &name, "--network", "host"])
            .env_remove("RUST_LOG");
        (c, name)
    }

    /// mailshift in the image, as the hardened, unprivileged container a production
    /// deployment would use. Each `env` value reaches the container through the docker
    /// client's environment (`-e NAME`), never its command line.
    fn run(&self, role: &str, env: &[(&str, &str)], args: &[&str], limit: Duration) -> Output {
        self.run_with(role, &[], env, args, limit)
    }

    /// [`Self::run`] with more `docker run` options (mounts).
    fn run_with(
        &self,
        role: &str,
        docker_args: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
        limit: Duration,
    ) -> Output {
        let (mut c, name) = self.docker_run(role);
        c.args(["--rm", "--read-only", "--cap-drop", "ALL"])
            .args(["--security-opt", "no-new-privileges"])
            .args(docker_args);
        for (k, v) in env {
            c.arg("-e").arg(k).env(k, v);
        }
        c.arg(image()).args(args);
        let started = Instant::now();
        let out = run_until(c, &name, limit);
        eprintln!(
            "docker e2e: {role}: mailshift {} -> {} in {:.1}s",
            args.join(" "),
            out.status,
            started.elapsed().as_secs_f64()
        );
        out
    }
}

/// Runs `cmd` (a `docker run --name NAME ...`), reading its output as it comes; after
/// `limit` the container is killed and the test fails with what it printed.
fn run_until(mut cmd: Command, name: &str, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker (is the docker client installed?)");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = Command::new("docker").args(["kill", name]).output();
            let status = child.wait().unwrap();
            let out = Output {
                status,
                stdout: stdout.join().unwrap(),
                stderr: stderr.join().unwrap(),
            };
            panic!("container {name} still ran after {limit:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Docker engine and the image: run scripts/docker-e2e"]
async fn a_fleet_of_containers_migrates_mailboxes_byte_for_byte() {
    let image = image();
    let containers = Containers::new();
    let quick = Duration::from_secs(60);

    // The image runs as its unprivileged user, not root.
    assert_eq!(
        docker(&["image", "inspect", "--format", "{{.Config.User}}", &image]),
        "10001:10001"
    );
    assert_eq!(
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "id",
            &image,
            "-u"
        ]),
        "10001"
    );

    let users = ["ann", "ben"];
    let (src, dst, before) = servers(&users, 120, 700).await;
    let key_out = containers.run("new-key", &[], &["db", "new-key"], quick);
    assert!(key_out.status.success(), "db new-key: {}", text(&key_out));
    let fleet = Fleet {
        db: Db::create(),
        key: String::from_utf8(key_out.stdout)
            .unwrap()
            .trim()
            .to_string(),
        queue: format!("mailshift.docker.{}", uuid_like()),
        amqp: AMQP.to_string(),
    };
    let db_url = fleet.db.url();
    let env = [
        ("MAILSHIFT_DATABASE_URL", db_url.as_str()),
        ("MAILSHIFT_AMQP_URL", AMQP),
        ("MAILSHIFT_SECRET_KEY", fleet.key.as_str()),
    ];
    let mut outputs = Vec::new();

    let out = containers.run("migrate", &env, &["db", "migrate"], quick);
    assert!(out.status.success(), "db migrate: {}", text(&out));
    outputs.push(out);

    for u in users {
        let (spw, dpw) = (src_pw(u), dst_pw(u));
        let mut with_pw = env.to_vec();
        with_pw.push(("MAILSHIFT_FROM_PASSWORD", &spw));
        with_pw.push(("MAILSHIFT_TO_PASSWORD", &dpw));
        let (from, to) = (src.url(u), dst.url(u));
        let args = [
            "mailbox",
            "add",
            "--batch",
            "docker",
            "--allow-plaintext",
            "--from",
            &from,
            "--to",
            &to,
        ];
        let out = containers.run(&format!("add-{u}"), &with_pw, &args, quick);
        assert!(out.status.success(), "mailbox add {u}: {}", text(&out));
        outputs.push(out);
    }

    let queue = fleet.queue.as_str();
    let out = containers.run(
        "scheduler",
        &env,
        &["scheduler", "--once", "--queue", queue],
        quick,
    );
    assert!(out.status.success(), "scheduler --once: {}", text(&out));
    outputs.push(out);

    let out = containers.run(
        "worker",
        &env,
        &[
            "worker",
            "--queue",
            queue,
            "--concurrency",
            "2",
            "--exit-when-idle",
            "5",
        ],
        Duration::from_secs(240),
    );
    assert!(out.status.success(), "worker: {}", text(&out));
    outputs.push(out);

    // Judged over IMAP, not from mailshift's records: every message, byte for byte,
    // with its flags and date, in the folder it belongs to.
    for (i, u) in users.iter().enumerate() {
        let got = imap::snapshot(dst.port(), u, &dst_pw(u)).await.unwrap();
        assert_same(
            &before[i],
            &got,
            &format!("mailbox {u} (migrated in containers)"),
        );
    }

    // The fleet's own account agrees.
    let out = containers.run("status", &env, &["status", "--json"], quick);
    assert!(out.status.success(), "status: {}", text(&out));
    let status: serde_json::Value = mailshift_tests::schema::check(&out.stdout);
    let rows = status["mailboxes"].as_array().unwrap();
    assert_eq!(rows.len(), users.len(), "{status:#}");
    for (i, u) in users.iter().enumerate() {
        let row = rows
            .iter()
            .find(|r| {
                r["source"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("//{u}@"))
            })
            .unwrap_or_else(|| panic!("no status row for {u}: {status:#}"));
        let expected: usize = before[i].values().map(Vec::len).sum();
        assert_eq!(row["status"], "synced", "{status:#}");
        assert_eq!(row["messages_copied"], expected, "{status:#}");
    }
    outputs.push(out);

    for out in &outputs {
        let all = text(out);
        for u in users {
            assert!(
                !all.contains(&src_pw(u)) && !all.contains(&dst_pw(u)),
                "a password in a container's output:\n{all}"
            );
        }
    }
    drop(src);
    drop(dst);
}

/// The compose stack's demo Dovecot image (docker/dovecot/, built on the local base image
/// by `docker compose build dovecot-old`; `MAILSHIFT_DEMO_DOVECOT_IMAGE`), run as the old
/// and the new demo server with their own configuration files and users, on free host
/// ports: its seeding script fills alice's old mailbox, a containerised one-shot
/// `mailshift migrate` (state on a tmpfs) copies it, and the harness compares both
/// servers over IMAP.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Docker engine and the images: run scripts/docker-e2e"]
async fn the_demo_dovecot_servers_of_the_compose_stack_are_seeded_and_migrated() {
    let demo = std::env::var("MAILSHIFT_DEMO_DOVECOT_IMAGE").unwrap_or_else(|_| {
        panic!("MAILSHIFT_DEMO_DOVECOT_IMAGE is not set: run scripts/docker-e2e")
    });
    let containers = Containers::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("docker/dovecot");
    let conf = tempfile::tempdir().unwrap();
    let (user, old_pw, new_pw) = (
        "alice@demo.example",
        "alice-old-DEMO-ONLY",
        "alice-new-DEMO-ONLY",
    );

    // Each server as in docker/compose.yaml (users-*, *.conf as layout) plus a listener on
    // a free port instead of 143: the host network is shared.
    let mut ports = Vec::new();
    for side in ["old", "new"] {
        let port = free_port();
        let local = conf.path().join(format!("{side}.conf"));
        std::fs::write(
            &local,
            format!(
                "!include /etc/dovecot/layout.conf\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let mount = |from: &std::path::Path, to: &str| format!("{}:{to}:ro", from.display());
        let (mut c, name) = containers.docker_run(&format!("dovecot-{side}"));
        let out = c
            .args(["-d", "-v"])
            .arg(mount(
                &repo.join(format!("users-{side}")),
                "/etc/dovecot/users",
            ))
            .arg("-v")
            .arg(mount(
                &repo.join(format!("{side}.conf")),
                "/etc/dovecot/layout.conf",
            ))
            .arg("-v")
            .arg(mount(&local, "/etc/dovecot/local.conf"))
            .arg(&demo)
            .output()
            .unwrap();
        assert!(out.status.success(), "docker run {name}: {}", text(&out));
        wait_for_greeting(port, &name).await;
        ports.push(port);
    }
    let (old, new) = (ports[0], ports[1]);

    // docker/dovecot/seed.sh, as the demo-seed service runs it.
    let (mut c, name) = containers.docker_run("demo-seed");
    let seed_port = old.to_string();
    let accounts = format!("{user}:{old_pw}");
    c.args(["--rm", "-e", "SEED_HOST=127.0.0.1", "-e", "SEED_DELIM=."])
        .args(["-e", "SEED_PORT", "-e", "SEED_ACCOUNTS"])
        .env("SEED_PORT", &seed_port)
        .env("SEED_ACCOUNTS", &accounts)
        .args([demo.as_str(), "mailshift-demo-seed"]);
    let out = run_until(c, &name, Duration::from_secs(120));
    assert!(out.status.success(), "demo-seed: {}", text(&out));
    let before = imap::snapshot(old, user, old_pw).await.unwrap();
    let seeded: usize = before.values().map(Vec::len).sum();
    assert_eq!(
        seeded, 20,
        "the seed script appends 20 messages: {before:#?}"
    );

    let env = [
        ("MAILSHIFT_FROM_PASSWORD", old_pw),
        ("MAILSHIFT_TO_PASSWORD", new_pw),
    ];
    let (from, to) = (
        format!("imap://{user}@127.0.0.1:{old}"),
        format!("imap://{user}@127.0.0.1:{new}"),
    );
    let state = [
        "--tmpfs",
        "/var/lib/mailshift:uid=10001,gid=10001,mode=0700",
    ];
    let out = containers.run_with(
        "migrate",
        &state,
        &env,
        &["migrate", "--allow-plaintext", "--from", &from, "--to", &to],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "migrate: {}", text(&out));
    let out = containers.run(
        "verify",
        &env,
        &["verify", "--allow-plaintext", "--from", &from, "--to", &to],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "verify: {}", text(&out));

    // The old server's Outlook-style special-use folders become the new one's own.
    let expected: imap::Snapshot = before
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "Sent Items" => ("Sent".to_string(), v),
            "Deleted Items" => ("Trash".to_string(), v),
            _ => (k, v),
        })
        .collect();
    let got = imap::snapshot(new, user, new_pw).await.unwrap();
    assert_same(
        &expected,
        &got,
        "the demo mailbox (migrated in a container)",
    );
}

/// Waits (30 s at most) until an IMAP server greets on 127.0.0.1:`port`.
async fn wait_for_greeting(port: u16, name: &str) {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).await.is_ok() && &buf == b"* OK" {
                return;
            }
        }
        if Instant::now() >= deadline {
            let logs = Command::new("docker")
                .args(["logs", name])
                .output()
                .unwrap();
            panic!("{name} does not greet on port {port}: {}", text(&logs));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
