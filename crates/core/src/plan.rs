//! Copy plans: which source messages still have to be copied, and how they are grouped
//! into batches (one fetch and one MULTIAPPEND each) so memory stays bounded by what is in
//! flight, never by the size of the mailbox.

use crate::flags::FlagSet;
use std::collections::HashSet;

/// What a source listing says about one message, before its body is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub size: u32,
    pub flags: FlagSet,
    /// IMAP date-time exactly as the server sent it.
    pub internal_date: String,
}

/// How big one batch may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_messages: usize,
    /// A single message larger than this still travels, alone in its batch.
    pub max_bytes: u64,
    /// New messages are listed (metadata only) this many UIDs at a time, so memory does
    /// not grow with the folder.
    pub list_window: usize,
    /// Messages bigger than this are not fetched at all (reported as too large): a
    /// server announcing a gigantic literal cannot make mailshift allocate it.
    pub max_message_bytes: u64,
}

/// Default ceiling of one message: far above what mail servers accept (Gmail 35 MB,
/// Exchange Online 150 MB), far below what would strain a worker's memory.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 256 << 20;

impl Default for BatchLimits {
    fn default() -> Self {
        // MULTIAPPEND commits once per batch: a few hundred messages amortise the
        // destination's commit; 4 MiB keeps two batches per connection well inside the
        // memory budget.
        BatchLimits {
            max_messages: 400,
            max_bytes: 4 << 20,
            list_window: 5_000,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl BatchLimits {
    /// Smaller batches for a retry after failures: a quarter per failed attempt (down to
    /// one message, 64 KiB), so a link that drops every few megabytes still lets each
    /// attempt complete, and checkpoint, a batch.
    pub fn for_attempt(&self, attempt: u32) -> BatchLimits {
        let shift = (attempt.saturating_sub(1) * 2).min(16);
        BatchLimits {
            max_messages: (self.max_messages >> shift).max(1),
            max_bytes: (self.max_bytes >> shift).max(64 << 10).min(self.max_bytes),
            list_window: self.list_window,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

/// The messages of `listing` that still need copying: above the checkpoint, or recorded
/// as failed before (a re-run retries them), and not already copied.
pub fn pending_messages<'a>(
    listing: &'a [MessageMeta],
    highest_done: u32,
    copied: &HashSet<u32>,
    failed: &HashSet<u32>,
) -> Vec<&'a MessageMeta> {
    listing
        .iter()
        .filter(|m| (m.uid > highest_done || failed.contains(&m.uid)) && !copied.contains(&m.uid))
        .collect()
}

/// Splits messages (in UID order) into batches within `limits`. The first batch holds an
/// eighth of the usual count (when that is 64 or more): its checkpoint comes, and the
/// progress a person watches moves, within a second instead of after a full batch; the
/// pipeline fetches the next batch meanwhile, so it costs one round trip.
pub fn batches<'a>(messages: &[&'a MessageMeta], limits: BatchLimits) -> Vec<Vec<&'a MessageMeta>> {
    let mut out: Vec<Vec<&MessageMeta>> = Vec::new();
    let mut cur: Vec<&MessageMeta> = Vec::new();
    let mut bytes = 0u64;
    let first = if limits.max_messages >= 64 {
        limits.max_messages / 8
    } else {
        limits.max_messages
    };
    for &m in messages {
        let size = u64::from(m.size);
        let max = if out.is_empty() {
            first
        } else {
            limits.max_messages
        };
        if !cur.is_empty() && (cur.len() >= max || bytes + size > limits.max_bytes) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        cur.push(m);
        bytes += size;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    #[test]
    fn retries_use_smaller_batches() {
        let l = BatchLimits::default();
        assert_eq!(l.for_attempt(1), l);
        assert_eq!(l.for_attempt(2).max_bytes, 1 << 20);
        assert_eq!(l.for_attempt(3).max_messages, 25);
        assert_eq!(l.for_attempt(30).max_messages, 1);
        assert_eq!(l.for_attempt(30).max_bytes, 64 << 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, size: u32) -> MessageMeta {
        MessageMeta {
            uid,
            size,
            flags: FlagSet::new(),
            internal_date: String::new(),
        }
    }

    #[test]
    fn pending_skips_copied_and_retries_failed() {
        let listing: Vec<_> = (1..=6).map(|u| meta(u, 10)).collect();
        let copied: HashSet<u32> = [1, 2, 5].into_iter().collect();
        let failed: HashSet<u32> = [3].into_iter().collect();
        let p: Vec<u32> = pending_messages(&listing, 4, &copied, &failed)
            .iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(p, vec![3, 6]);
    }

    #[test]
    fn batches_respect_limits_and_let_giants_through() {
        let listing = [
            meta(1, 10),
            meta(2, 10),
            meta(3, 100),
            meta(4, 10),
            meta(5, 10),
            meta(6, 10),
        ];
        let refs: Vec<&MessageMeta> = listing.iter().collect();
        let b = batches(
            &refs,
            BatchLimits {
                max_messages: 2,
                max_bytes: 50,
                ..BatchLimits::default()
            },
        );
        let uids: Vec<Vec<u32>> = b
            .iter()
            .map(|b| b.iter().map(|m| m.uid).collect())
            .collect();
        assert_eq!(uids, vec![vec![1, 2], vec![3], vec![4, 5], vec![6]]);
    }

    #[test]
    fn the_first_batch_is_small_the_others_full() {
        let listing: Vec<_> = (1..=1000).map(|u| meta(u, 10)).collect();
        let refs: Vec<&MessageMeta> = listing.iter().collect();
        let sizes: Vec<usize> = batches(&refs, BatchLimits::default())
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![50, 400, 400, 150]);
    }
}
