//! DNS for the cutover. Owns every DNS query mailshift makes: MX and TTL as each
//! authoritative and recursive nameserver sees them, SPF/DKIM/DMARC readiness, the
//! records that govern delivery after the switch (MTA-STS and its policy file, TLS-RPT,
//! DANE TLSA, client discovery), the authentication of a received message (DKIM, SPF,
//! DMARC as a receiver computes them), and the MX propagation watch. Every lookup has a
//! timeout; every failure becomes a finding.
pub mod authenticate;
pub mod check;
pub mod dane;
pub mod discovery;
pub mod lookup;
pub mod mta_sts;
pub mod observer;
pub mod records;
