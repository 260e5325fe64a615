//! The literal guard: watches what a server sends for literal announcements (`{N}\r\n`)
//! and refuses one larger than the current limit before the response parser sees it.
//! async-imap reserves a buffer of the announced size up front (up to 512 MiB), so a
//! hostile server announcing a huge literal and dribbling it would otherwise make every
//! connection allocate that much. The guard sits under the parser, on the plain (or
//! decompressed) byte stream, and keeps only a few bytes of state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A literal above the limit (the error inside the `io::Error` the transport returns).
#[derive(Debug)]
pub struct TooLarge {
    pub announced: u64,
    pub limit: u64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "literal of {} bytes announced, limit {}",
            self.announced, self.limit
        )
    }
}

impl std::error::Error for TooLarge {}

/// The limit, shared between a session (which tightens it around a FETCH whose sizes it
/// knows) and its transport.
#[derive(Debug)]
pub struct GuardControl {
    limit: AtomicU64,
    ceiling: u64,
    enabled: AtomicBool,
}

impl GuardControl {
    pub fn new(ceiling: u64) -> Arc<GuardControl> {
        Arc::new(GuardControl {
            limit: AtomicU64::new(ceiling),
            ceiling,
            enabled: AtomicBool::new(true),
        })
    }

    /// The largest literal accepted until [`GuardControl::reset`].
    pub fn expect_at_most(&self, bytes: u64) {
        self.limit.store(bytes.min(self.ceiling), Ordering::SeqCst);
    }

    pub fn reset(&self) {
        self.limit.store(self.ceiling, Ordering::SeqCst);
    }

    /// Stops watching (the stream below a compression layer carries compressed bytes:
    /// the layer above it is watched instead).
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    fn limit(&self) -> Option<u64> {
        self.enabled
            .load(Ordering::SeqCst)
            .then(|| self.limit.load(Ordering::SeqCst))
    }
}

/// Scanner state of one direction of one connection.
#[derive(Debug)]
pub struct LiteralGuard {
    control: Arc<GuardControl>,
    /// Bytes still to skip inside a literal.
    in_literal: u64,
    /// The last bytes of the current line (enough for `{20 digits}\r`).
    tail: [u8; 24],
    tail_len: usize,
}

impl LiteralGuard {
    pub fn new(control: Arc<GuardControl>) -> LiteralGuard {
        LiteralGuard {
            control,
            in_literal: 0,
            tail: [0; 24],
            tail_len: 0,
        }
    }

    fn push_tail(&mut self, bytes: &[u8]) {
        let keep = self.tail.len();
        if bytes.len() >= keep {
            self.tail.copy_from_slice(&bytes[bytes.len() - keep..]);
            self.tail_len = keep;
            return;
        }
        let total = self.tail_len + bytes.len();
        if total > keep {
            let drop = total - keep;
            self.tail.copy_within(drop..self.tail_len, 0);
            self.tail_len -= drop;
        }
        self.tail[self.tail_len..self.tail_len + bytes.len()].copy_from_slice(bytes);
        self.tail_len += bytes.len();
    }

    /// The literal announced by a line whose bytes before `\n` end in the tail.
    fn announced(&self) -> Option<u64> {
        let t = &self.tail[..self.tail_len];
        let t = t.strip_suffix(b"\r")?.strip_suffix(b"}")?;
        let open = t.iter().rposition(|&b| b == b'{')?;
        let digits = &t[open + 1..];
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// Scans bytes just received; an error means a literal above the limit was announced.
    pub fn scan(&mut self, mut data: &[u8]) -> Result<(), TooLarge> {
        let Some(limit) = self.control.limit() else {
            return Ok(());
        };
        while !data.is_empty() {
            if self.in_literal > 0 {
                let n = (self.in_literal as usize).min(data.len());
                self.in_literal -= n as u64;
                data = &data[n..];
                continue;
            }
            match data.iter().position(|&b| b == b'\n') {
                None => {
                    self.push_tail(data);
                    return Ok(());
                }
                Some(i) => {
                    self.push_tail(&data[..i]);
                    data = &data[i + 1..];
                    if let Some(n) = self.announced() {
                        if n > limit {
                            return Err(TooLarge {
                                announced: n,
                                limit,
                            });
                        }
                        self.in_literal = n;
                    }
                    self.tail_len = 0;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limit: u64) -> LiteralGuard {
        LiteralGuard::new(GuardControl::new(limit))
    }

    #[test]
    fn small_literals_pass_and_their_bytes_are_skipped() {
        let mut g = guard(100);
        // A literal whose content itself looks like an announcement is not one.
        let resp = b"* 1 FETCH (UID 5 BODY[] {12}\r\nx {999999}\r\n)\r\n* 2 FETCH (UID 6)\r\n";
        assert!(g.scan(resp).is_ok());
        // Split at every position: the state carries across reads.
        for cut in 0..resp.len() {
            let mut g = guard(100);
            assert!(g.scan(&resp[..cut]).is_ok(), "cut {cut}");
            assert!(g.scan(&resp[cut..]).is_ok(), "cut {cut}");
        }
    }

    #[test]
    fn a_huge_announcement_is_refused_wherever_it_is_cut() {
        let resp = b"* 1 FETCH (UID 5 BODY[] {536870912}\r\nxxxx";
        for cut in 0..resp.len() {
            let mut g = guard(1 << 20);
            let a = g.scan(&resp[..cut]);
            let b = g.scan(&resp[cut..]);
            let err = a.err().or(b.err()).expect("refused");
            assert_eq!(err.announced, 536_870_912);
            assert_eq!(err.limit, 1 << 20);
        }
    }

    #[test]
    fn the_limit_follows_the_session_and_can_be_switched_off() {
        let control = GuardControl::new(1000);
        let mut g = LiteralGuard::new(control.clone());
        control.expect_at_most(10);
        assert!(g.scan(b"* LIST () \"/\" {11}\r\n").is_err());
        control.reset();
        let mut g = LiteralGuard::new(control.clone());
        assert!(g.scan(b"* LIST () \"/\" {11}\r\nhello world\r\n").is_ok());
        control.disable();
        assert!(g.scan(b"* X {99999999}\r\n").is_ok());
    }
}
