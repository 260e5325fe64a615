//! In-memory fakes of mailshift's own ports, for the engine's unit tests (no network, no
//! database, milliseconds per test):
//!
//! - [`MemServer`]: a mail server whose sessions implement `MailSource` and `MailTarget`
//!   (UIDs, UIDVALIDITY, flags, MODSEQ, UIDPLUS and friends as capabilities), with
//!   scriptable [`Fault`]s (refusals with a code's kind, dropped connections, throttling,
//!   unreachable servers) and a count of the commands that change it, so a test can say
//!   "the source was never written";
//! - [`MemConnector`]: both servers of one mailbox;
//! - [`MemStore`]: the state store and the fleet's mailbox store, as SeaStore behaves;
//! - [`ManualClock`]: a clock tests move by hand.
//!
//! These are fakes of mailshift's traits, never of IMAP, SQL or AMQP: the adapters are
//! tested against real servers elsewhere.

mod server;
mod store;

pub use server::{Contents, Fault, MemConnector, MemServer, Op};
pub use store::MemStore;

use mailshift_core::ports::Clock;
use std::sync::atomic::{AtomicI64, Ordering};

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(t: i64) -> ManualClock {
        ManualClock(AtomicI64::new(t))
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn set(&self, t: i64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A small RFC 5322 message whose header and body are unique to `n` (and `tag`).
pub fn message(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: sender{n}@example.com\r\nTo: alice@example.com\r\nSubject: {tag} {n}\r\n\
         Message-ID: <{tag}-{n}@example.com>\r\n\r\nBody of {tag} message {n}.\r\n"
    )
    .into_bytes()
}
