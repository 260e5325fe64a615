//! A tiny OTLP/HTTP receiver (JSON encoding) on loopback: it accepts every export
//! request and keeps the spans, so a test can follow one trace across processes.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One received span, flattened.
#[derive(Clone, Debug)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// `(key, value as text)`.
    pub attributes: Vec<(String, String)>,
}

pub struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind otlp");
        let port = listener.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let b = b.clone();
                tokio::spawn(async move {
                    // HTTP/1.1 requests with Content-Length bodies, possibly kept alive.
                    let mut buf: Vec<u8> = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 8192];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 65536];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: Vec<u8> = buf[head_end..head_end + len].to_vec();
                        buf.drain(..head_end + len);
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                            b.lock().expect("bodies").push(v);
                        }
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { port, bodies, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        let text = |v: &serde_json::Value| -> String {
            let val = &v["value"];
            for k in ["stringValue", "intValue", "boolValue", "doubleValue"] {
                if let Some(x) = val.get(k) {
                    return match x {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                }
            }
            val.to_string()
        };
        let mut out = Vec::new();
        for body in self.bodies.lock().expect("bodies").iter() {
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .map(text)
                    .unwrap_or_default();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for sp in ss["spans"].as_array().into_iter().flatten() {
                        out.push(Span {
                            service: service.clone(),
                            name: sp["name"].as_str().unwrap_or("").to_string(),
                            trace_id: sp["traceId"].as_str().unwrap_or("").to_string(),
                            span_id: sp["spanId"].as_str().unwrap_or("").to_string(),
                            parent_span_id: sp["parentSpanId"].as_str().unwrap_or("").to_string(),
                            attributes: sp["attributes"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|a| (a["key"].as_str().unwrap_or("").to_string(), text(a)))
                                .collect(),
                        });
                    }
                }
            }
        }
        out
    }
}
