//! Self-tests of the servers that outage tests crash and bring back: a private PostgreSQL
//! (crash, then the same data on the same port), a private RabbitMQ node (SIGKILL, then a
//! durable quorum queue's messages after the restart) and a Dovecot stopped and started
//! again on the same port. None of them touches the shared 5432/5672 instances.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mailshift_tests::corpus::{self, CorpusSpec};
use mailshift_tests::dovecot::{Dovecot, DovecotOptions};
use mailshift_tests::imap;
use mailshift_tests::services::{PrivatePostgres, PrivateRabbit};

fn assert_refused(port: u16, what: &str) {
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => panic!("{what}: port {port} still accepts connections"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{what}: {e}"),
    }
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn postgres_crash_ends_sessions_and_start_again_brings_the_same_data_back() {
    let t = Instant::now();
    let pg = PrivatePostgres::start();
    let started = t.elapsed();
    let port = pg.port();
    assert_ne!(port, 5432);
    assert_eq!(
        pg.url("app"),
        format!("postgres://postgres@127.0.0.1:{port}/app")
    );
    pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE jobs (id int PRIMARY KEY, state text NOT NULL); \
         INSERT INTO jobs SELECT g, 'done' FROM generate_series(1, 1000) g",
    );

    // A session busy when the server crashes.
    let mut busy = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", "app", "-c", "SELECT pg_sleep(60)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until(Duration::from_secs(10), "the busy session", || {
        pg.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'",
        )
        .trim()
            == "1"
    });

    let t = Instant::now();
    pg.stop_immediate();
    let stopped = t.elapsed();
    assert!(!pg.is_up());
    assert_refused(port, "crashed PostgreSQL");
    assert!(!pg.psql_output("app", "SELECT 1").status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = busy.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the busy session outlived the crash"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the busy session ended without an error");

    let t = Instant::now();
    pg.start_again();
    let restarted = t.elapsed();
    assert_eq!(pg.port(), port);
    assert!(pg.is_up());
    assert_eq!(
        pg.psql("app", "SELECT count(*), min(state) FROM jobs")
            .trim(),
        "1000|done"
    );
    assert!(
        pg.log().contains("not properly shut down"),
        "no crash recovery in the log:\n{}",
        pg.log()
    );
    eprintln!(
        "private PostgreSQL: start {started:?}, crash {stopped:?}, start again {restarted:?}"
    );

    let dir = pg.dir().to_owned();
    drop(pg);
    assert_refused(port, "dropped PostgreSQL");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

const MESSAGES: usize = 50;

async fn publish(url: &str, queue: &str) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, args).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..MESSAGES {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("job-{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "message {i} not confirmed");
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Every message of `queue`, fetched one by one. A quorum queue may need a moment after a
/// restart to elect its leader: errors are retried until a deadline.
async fn drain(url: &str, queue: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let conn = Connection::connect(url, ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            let mut got = Vec::new();
            while let Some(m) = ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await?
            {
                got.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
            }
            let _ = conn.close(200, "done".into()).await;
            Ok::<_, lapin::Error>(got)
        };
        // A leaderless quorum queue fails basic.get only after RabbitMQ's own 60 s.
        let error = match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(got)) => return got,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 10 s".to_owned(),
        };
        assert!(Instant::now() < deadline, "cannot read {queue}: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn rabbit_killed_with_sigkill_restarts_with_its_durable_quorum_queue() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    let rabbit = PrivateRabbit::start();
    let started = t.elapsed();
    let port = rabbit.port();
    assert_ne!(port, 5672);
    assert_eq!(
        rabbit.url(),
        format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
    );
    assert!(rabbit.node().starts_with("mailshift-test-"));
    let queue = "mailshift.test.durable";
    rt.block_on(publish(&rabbit.url(), queue));
    // The CLI reaches this node (and not the shared one) with the node's cookie.
    let listed = rabbit.rabbitmqctl(&["list_queues", "name", "type"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(queue) && l.contains("quorum")),
        "{queue} not listed by rabbitmqctl:\n{listed}"
    );

    let t = Instant::now();
    rabbit.kill9();
    let killed = t.elapsed();
    assert!(!rabbit.is_up());
    assert_refused(port, "killed RabbitMQ");

    let t = Instant::now();
    rabbit.restart();
    let restarted = t.elapsed();
    assert_eq!(rabbit.port(), port);
    assert!(rabbit.is_up());
    let got = rt.block_on(drain(&rabbit.url(), queue));
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("job-{i}")).collect();
    assert_eq!(got, expected, "the quorum queue lost or reordered messages");
    eprintln!("private RabbitMQ: start {started:?}, kill -9 {killed:?}, restart {restarted:?}");

    let dir = rabbit.dir().to_owned();
    drop(rabbit);
    assert_refused(port, "dropped RabbitMQ");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn dovecot_stopped_refuses_connections_and_comes_back_on_the_same_port_with_its_mail() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut server = Dovecot::start(DovecotOptions::default()).unwrap();
    let port = server.port();
    server.add_user("alice", "alice-Pw1");
    let mail = corpus::generate(&CorpusSpec {
        seed: 16,
        messages: 40,
        big_attachments: 0,
    });
    rt.block_on(imap::populate(port, "alice", "alice-Pw1", &mail))
        .unwrap();
    let before = rt
        .block_on(imap::snapshot(port, "alice", "alice-Pw1"))
        .unwrap();

    // A session open when the server goes away is closed.
    let open = TcpStream::connect(("127.0.0.1", port)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut open = BufReader::new(open);
    let mut greeting = String::new();
    open.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");

    let t = Instant::now();
    server.stop();
    let stopped = t.elapsed();
    let mut rest = Vec::new();
    match open.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the open session outlived the stop"
        ),
    }
    assert_refused(port, "stopped Dovecot");
    server.stop(); // a second stop changes nothing

    let t = Instant::now();
    server.start_again().unwrap();
    let restarted = t.elapsed();
    assert_eq!(server.port(), port);
    let after = rt
        .block_on(imap::snapshot(port, "alice", "alice-Pw1"))
        .unwrap();
    assert_eq!(before, after, "the mail changed across the outage");
    eprintln!("Dovecot: stop {stopped:?}, start again {restarted:?}");
}
