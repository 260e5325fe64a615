//! The probe message: a short, plain, well-formed text message (everything receivers
//! expect of legitimate mail: Date, Message-ID, MIME headers) that carries a unique id
//! in a header and in its Message-ID, so it can be found again among other mail.

use chrono::{DateTime, FixedOffset};

/// The header that carries the probe id.
pub const PROBE_HEADER: &str = "X-Mailshift-Probe";

/// A new probe id (random, 32 hex digits).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The domain part of an address, lower case.
pub fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// The raw probe (CRLF line ends).
pub fn build(id: &str, from: &str, to: &str, now: DateTime<FixedOffset>) -> Vec<u8> {
    let domain = domain_of(from).unwrap_or_else(|| "mailshift.invalid".into());
    let lines = [
        format!("From: <{from}>"),
        format!("To: <{to}>"),
        format!(
            "Subject: mailshift delivery test {}",
            &id[..id.len().min(8)]
        ),
        format!("Date: {}", now.to_rfc2822()),
        format!("Message-ID: <mailshift-probe-{id}@{domain}>"),
        format!("{PROBE_HEADER}: {id}"),
        "MIME-Version: 1.0".into(),
        "Content-Type: text/plain; charset=us-ascii".into(),
        "Content-Transfer-Encoding: 7bit".into(),
        String::new(),
        "This message was sent by mailshift to check that mail sent through the new".into(),
        format!("server for {domain} arrives and authenticates (DKIM, SPF, DMARC)."),
        "It can be deleted.".into(),
        String::new(),
    ];
    lines.join("\r\n").into_bytes()
}

/// Whether a header section belongs to the probe `id`.
pub fn is_probe(header: &[u8], id: &str) -> bool {
    let text = String::from_utf8_lossy(header);
    text.contains(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_well_formed_and_recognisable() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T10:00:00+01:00").unwrap();
        let raw = build(
            "0123456789abcdef",
            "alice@Example.com",
            "alice@example.com",
            now,
        );
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains("\r\nX-Mailshift-Probe: 0123456789abcdef\r\n"));
        assert!(text.contains("Message-ID: <mailshift-probe-0123456789abcdef@example.com>"));
        assert!(text.contains("Date: Fri, 4 Dec 2026 10:00:00 +0100"));
        assert!(!text.replace("\r\n", "").contains('\n'), "CRLF only");
        assert!(text.contains("\r\n\r\nThis message"));
        assert!(is_probe(&raw, "0123456789abcdef"));
        assert!(!is_probe(&raw, "fedcba"));
        assert_eq!(new_id().len(), 32);
        assert_eq!(domain_of("a@B.example."), Some("b.example".into()));
        assert_eq!(domain_of("nobody"), None);
    }
}
