//! DNS for the cutover. Owns every DNS query mailshift makes: MX and TTL as each
//! authoritative and recursive nameserver sees them, SPF/DKIM/DMARC readiness, and the
//! MX propagation watch. Every lookup has a timeout; every failure becomes a finding.
pub mod check;
pub mod lookup;
pub mod observer;
pub mod records;
