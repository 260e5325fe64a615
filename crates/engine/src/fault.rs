//! Fault points for crash tests: `MAILSHIFT_FAULT=NAME[:N]` aborts the process the Nth
//! time (default: the first) execution reaches the point called NAME, exactly as a
//! SIGKILL there would. Tests use it to stop a run at a precise place (say, after the
//! destination accepted a batch but before its checkpoint) instead of racing a timer.
//! Unset, a fault point costs one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

fn spec() -> Option<&'static (String, u32)> {
    static SPEC: OnceLock<Option<(String, u32)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let raw = std::env::var("MAILSHIFT_FAULT").ok()?;
        let (name, nth) = match raw.split_once(':') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
            None => (raw, 1),
        };
        Some((name, nth.max(1)))
    })
    .as_ref()
}

/// Aborts the process if `MAILSHIFT_FAULT` names this point and its count is reached.
pub fn point(name: &str) {
    static HITS: AtomicU32 = AtomicU32::new(0);
    if let Some((wanted, nth)) = spec()
        && wanted == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth
    {
        eprintln!("mailshift: fault point '{name}' reached (MAILSHIFT_FAULT); aborting");
        std::process::abort();
    }
}
