//! A forward HTTP proxy on 127.0.0.1 that tunnels every `CONNECT NAME:80` to one
//! loopback port, whatever the name, and refuses every other port: with `ALL_PROXY`
//! pointing at it, an HTTP client that looks names up (`autoconfig.acme.example`)
//! reaches the test's web server without DNS, and nothing leaves the machine. It
//! records the request lines it was sent, so a test can check which URLs a client
//! tried.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops accepting when dropped.
pub struct WebProxy {
    pub port: u16,
    asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebProxy {
    /// Starts a proxy to `127.0.0.1:target` (inside a tokio runtime).
    pub async fn start(target: u16) -> WebProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, target, log.clone()));
            }
        });
        WebProxy { port, asked, task }
    }

    /// `http://127.0.0.1:PORT`, for `ALL_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines received so far (`CONNECT autoconfig.acme.example:80 HTTP/1.1`).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for WebProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tunnel(mut client: TcpStream, target: u16, log: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or("").to_string();
    log.lock().unwrap().push(line.clone());
    let mut parts = line.split(' ');
    let (method, authority) = (parts.next(), parts.next().unwrap_or(""));
    if method != Some("CONNECT") || !authority.ends_with(":80") {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
