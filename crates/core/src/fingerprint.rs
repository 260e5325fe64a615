//! Content fingerprints: how mailshift recognises a message without trusting UIDs or
//! Message-IDs (which may be missing or duplicated).

use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256 of the full raw message as the server returns it for `BODY[]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(raw: &[u8]) -> Self {
        Fingerprint(Sha256::digest(raw).into())
    }

    /// Fingerprint of the header section alone, as `BODY[HEADER]` returns it: recognises a
    /// message (with its size) without downloading the body. A mismatch only costs a
    /// re-copy, never a wrong match of different headers.
    pub fn of_header(raw: &[u8]) -> Self {
        Fingerprint::of(header_section(raw))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Fingerprint(arr))
    }
}

/// The header section of a raw message, blank line included (the whole message when it
/// has no body).
pub fn header_section(raw: &[u8]) -> &[u8] {
    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        return &raw[..i + 4];
    }
    if let Some(i) = raw.windows(2).position(|w| w == b"\n\n") {
        return &raw[..i + 2];
    }
    raw
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let fp = Fingerprint::of(b"hello");
        assert_eq!(
            fp.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
        assert_eq!(Fingerprint::from_hex("zz"), None);
    }

    #[test]
    fn header_section_ends_at_the_blank_line() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_section(b"A: b\n\nbody"), b"A: b\n\n");
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
    }
}
