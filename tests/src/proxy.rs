//! A fault-injecting TCP proxy in front of a test server: it can cut every connection
//! after about N bytes, delay traffic, answer chosen IMAP commands with a throttling
//! `NO` (as Exchange does) instead of passing them on, or play a hostile server that
//! announces a huge literal for a message and then dribbles. Plain-text IMAP only.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answer the next `times` commands named `command` (e.g. `EXAMINE`) with `reply`
/// (`NO ...` text after the tag).
#[derive(Clone, Debug)]
pub struct Throttle {
    pub command: String,
    pub times: usize,
    pub reply: String,
}

#[derive(Default)]
struct Control {
    /// Cut a connection once it has carried this many bytes (both directions); 0: never.
    cut_after: AtomicU64,
    delay_ms: AtomicU64,
    throttle: Mutex<Option<Throttle>>,
    cuts: AtomicUsize,
    throttled: AtomicUsize,
    /// Bytes carried, both directions, all connections.
    bytes: AtomicU64,
    connections: AtomicUsize,
    /// `(n, huge)`: a literal of exactly `n` bytes coming from the server is announced
    /// as `huge` instead, and the connection then sends nothing more.
    inflate: Mutex<Option<(u64, u64)>>,
    inflated: AtomicUsize,
}

/// A running proxy; stops accepting when dropped (open connections end with the test).
pub struct Proxy {
    port: u16,
    ctl: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let ctl = Arc::new(Control::default());
        let c = ctl.clone();
        let task = tokio::spawn(async move {
            let mut n: u64 = 0;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                n += 1;
                c.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(client, server, c.clone(), n));
            }
        });
        Proxy { port, ctl, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts every connection after about `bytes` bytes (varied by up to a quarter from
    /// one connection to the next, so cuts do not always fall at the same place).
    pub fn cut_every(&self, bytes: u64) {
        self.ctl.cut_after.store(bytes, Ordering::SeqCst);
    }

    pub fn delay(&self, d: Duration) {
        self.ctl
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn throttle(&self, t: Throttle) {
        *self.ctl.throttle.lock().expect("throttle lock") = Some(t);
    }

    /// Plays a hostile server: the literal of a message of exactly `size` bytes is
    /// announced as `huge` bytes, after which that connection stalls (sends nothing
    /// more) until the client gives up.
    pub fn inflate_literal(&self, size: u64, huge: u64) {
        *self.ctl.inflate.lock().expect("inflate lock") = Some((size, huge));
    }

    /// Literals inflated so far.
    pub fn inflated(&self) -> usize {
        self.ctl.inflated.load(Ordering::SeqCst)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.ctl.cuts.load(Ordering::SeqCst)
    }

    /// Commands answered with the throttling reply so far.
    pub fn throttled(&self) -> usize {
        self.ctl.throttled.load(Ordering::SeqCst)
    }

    /// Bytes carried so far (both directions, every connection).
    pub fn bytes(&self) -> u64 {
        self.ctl.bytes.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.ctl.connections.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, server: TcpStream, ctl: Arc<Control>, n: u64) {
    let base = ctl.cut_after.load(Ordering::SeqCst);
    // Deterministic variation per connection: 75% .. 125% of the base.
    let limit = if base == 0 {
        u64::MAX
    } else {
        base * 3 / 4 + (n.wrapping_mul(2_654_435_761) % (base / 2).max(1))
    };
    let carried = Arc::new(AtomicU64::new(0));
    let (mut cr, cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let down = {
        let (cw, carried, ctl) = (cw.clone(), carried.clone(), ctl.clone());
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut held: Vec<u8> = Vec::new();
            while let Ok(k) = sr.read(&mut buf).await {
                if k == 0 {
                    break;
                }
                let inflate = *ctl.inflate.lock().expect("inflate lock");
                if let Some((size, huge)) = inflate {
                    held.extend_from_slice(&buf[..k]);
                    match inflated(&mut held, size, huge) {
                        Some(head) => {
                            ctl.inflated.fetch_add(1, Ordering::SeqCst);
                            let _ = cw.lock().await.write_all(&head).await;
                            // Dribble nothing more: the client must give up by itself.
                            std::future::pending::<()>().await;
                        }
                        None => {
                            let out = take_safe(&mut held);
                            if cw.lock().await.write_all(&out).await.is_err() {
                                break;
                            }
                            continue;
                        }
                    }
                }
                let d = ctl.delay_ms.load(Ordering::SeqCst);
                if d > 0 {
                    tokio::time::sleep(Duration::from_millis(d)).await;
                }
                let before = carried.fetch_add(k as u64, Ordering::SeqCst);
                ctl.bytes.fetch_add(k as u64, Ordering::SeqCst);
                let k = if before + k as u64 > limit {
                    (limit.saturating_sub(before)) as usize
                } else {
                    k
                };
                if cw.lock().await.write_all(&buf[..k]).await.is_err() {
                    break;
                }
                if before + (k as u64) >= limit {
                    ctl.cuts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
    };
    let up = {
        let (cw, carried, ctl) = (cw.clone(), carried.clone(), ctl.clone());
        async move {
            // Client-to-server: parse command lines (skipping literals) so a chosen
            // command can be answered here instead of reaching the server.
            let mut pending: Vec<u8> = Vec::new();
            let mut literal_left: usize = 0;
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(k) = cr.read(&mut buf).await {
                if k == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..k]);
                let mut out: Vec<u8> = Vec::new();
                // Without a throttling rule the bytes pass as they are (they may not be
                // lines at all once a session is compressed).
                let parse = ctl.throttle.lock().map(|t| t.is_some()).unwrap_or(false);
                if !parse {
                    out.append(&mut pending);
                    literal_left = 0;
                }
                loop {
                    if !parse {
                        break;
                    }
                    if literal_left > 0 {
                        let take = literal_left.min(pending.len());
                        out.extend(pending.drain(..take));
                        literal_left -= take;
                        if literal_left > 0 {
                            break;
                        }
                        continue;
                    }
                    let Some(end) = pending.windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    let line: Vec<u8> = pending.drain(..end + 2).collect();
                    literal_left = literal_len(&line);
                    if literal_left == 0
                        && let Some(reply) = throttled(&ctl, &line)
                    {
                        if cw.lock().await.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    out.extend_from_slice(&line);
                }
                if out.is_empty() {
                    continue;
                }
                let before = carried.fetch_add(out.len() as u64, Ordering::SeqCst);
                ctl.bytes.fetch_add(out.len() as u64, Ordering::SeqCst);
                let mut send = &out[..];
                if before + out.len() as u64 > limit {
                    send = &out[..limit.saturating_sub(before) as usize];
                }
                if sw.write_all(send).await.is_err() {
                    break;
                }
                if before + out.len() as u64 >= limit {
                    ctl.cuts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
    };
    // Whichever side ends first ends the connection: a cut drops both halves.
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

/// `{123}` or `{123+}` at the end of a line: the literal that follows.
fn literal_len(line: &[u8]) -> usize {
    let l = line.strip_suffix(b"\r\n").unwrap_or(line);
    let Some(l) = l.strip_suffix(b"}") else {
        return 0;
    };
    let Some(open) = l.iter().rposition(|b| *b == b'{') else {
        return 0;
    };
    let inner = &l[open + 1..];
    let inner = inner
        .strip_suffix(b"+")
        .or(inner.strip_suffix(b"-"))
        .unwrap_or(inner);
    std::str::from_utf8(inner)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn throttled(ctl: &Control, line: &[u8]) -> Option<String> {
    let mut guard = ctl.throttle.lock().ok()?;
    let t = guard.as_mut()?;
    if t.times == 0 {
        return None;
    }
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let tag = words.next()?;
    let mut cmd = words.next()?.to_ascii_uppercase();
    if cmd == "UID" {
        cmd = format!("UID {}", words.next()?.to_ascii_uppercase());
    }
    if cmd != t.command.to_ascii_uppercase() {
        return None;
    }
    t.times -= 1;
    ctl.throttled.fetch_add(1, Ordering::SeqCst);
    Some(format!("{tag} {}\r\n", t.reply))
}

/// With `data` from the server so far: when it holds the announcement of a literal of
/// `size` bytes, everything up to that announcement with `huge` announced instead.
fn inflated(data: &mut Vec<u8>, size: u64, huge: u64) -> Option<Vec<u8>> {
    let needle = format!("{{{size}}}\r\n");
    let at = data
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    let mut head = data[..at].to_vec();
    head.extend_from_slice(format!("{{{huge}}}\r\n").as_bytes());
    data.clear();
    Some(head)
}

/// Takes what can be forwarded from `data`, keeping back an unfinished literal
/// announcement (a `{` with no line end after it yet: the server sends the rest soon).
fn take_safe(data: &mut Vec<u8>) -> Vec<u8> {
    let keep = match data.iter().rposition(|b| *b == b'{') {
        Some(open) if !data[open..].contains(&b'\n') && data.len() - open < 24 => open,
        _ => data.len(),
    };
    let rest = data.split_off(keep);
    std::mem::replace(data, rest)
}
