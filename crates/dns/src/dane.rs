//! DANE for SMTP (RFC 7672): TLSA records at `_25._tcp.MX` on the old and the new MX
//! hosts. Senders that validate DANE authenticate the MX's certificate with them; an old
//! MX with TLSA records and a new one without means those senders lose that protection
//! (and any TLSA record the new provider publishes later must match its certificate).

use crate::lookup::{Dns, Failure, Server, Tlsa, host_name};
use mailshift_core::cutover::Finding;

/// What the TLSA lookup of one MX host found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsaState {
    Records(Vec<Tlsa>),
    None,
    /// The lookup failed for another reason than "no such record".
    Unknown(Failure),
}

/// The first answer any server gives for `_25._tcp.HOST`.
pub async fn tlsa_of(dns: &Dns, servers: &[Server], host: &str) -> TlsaState {
    let name = format!("_25._tcp.{}", host_name(host));
    let mut last = Failure::Other("no resolver to ask".into());
    for s in servers {
        match dns.tlsa(s, &name).await {
            Ok(a) => return TlsaState::Records(a.records),
            Err(Failure::NxDomain | Failure::NoData) => return TlsaState::None,
            Err(e) => last = e,
        }
    }
    TlsaState::Unknown(last)
}

fn usage(t: &Tlsa) -> String {
    let u = match t.usage {
        0 => "PKIX-TA",
        1 => "PKIX-EE",
        2 => "DANE-TA",
        3 => "DANE-EE",
        _ => "private",
    };
    format!("{u} {} {}", t.selector, t.matching)
}

/// Compares the old MX hosts' TLSA records with the new MX's.
pub fn judge_dane(old: &[(String, TlsaState)], new_mx: &str, new: &TlsaState) -> Vec<Finding> {
    let new_mx = host_name(new_mx);
    let mut out = Vec::new();
    let old_with: Vec<&(String, TlsaState)> = old
        .iter()
        .filter(|(_, s)| matches!(s, TlsaState::Records(r) if !r.is_empty()))
        .collect();
    for (host, s) in old {
        if let TlsaState::Unknown(e) = s
            && *e != Failure::Refused
        {
            out.push(Finding::warn(
                "dane",
                format!("cannot read the TLSA records of the old MX {host} (_25._tcp.{host}): {e}"),
                "check the resolvers and run the check again",
            ));
        }
    }
    match new {
        TlsaState::Records(r) => out.push(Finding::ok(
            "dane",
            format!(
                "the new MX {new_mx} publishes {} TLSA record(s) at _25._tcp.{new_mx} ({}): check \
                 with the new provider that they match its certificate before the switch",
                r.len(),
                r.iter().map(usage).collect::<Vec<_>>().join(", ")
            ),
        )),
        TlsaState::None if !old_with.is_empty() => {
            let hosts = old_with
                .iter()
                .map(|(h, _)| format!("_25._tcp.{h}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(Finding::warn(
                "dane",
                format!(
                    "the old MX has DANE TLSA records ({hosts}) but the new MX {new_mx} has none: \
                     senders that validate DANE lose the authenticated TLS they had, and their \
                     TLS reports will show the downgrade"
                ),
                format!(
                    "ask the new provider for TLSA records for {new_mx} (its zone must be DNSSEC-signed) \
                     and publish them before the switch, or accept the downgrade knowingly"
                ),
            ));
        }
        TlsaState::None => out.push(Finding::ok(
            "dane",
            "no DANE TLSA records on the old or the new MX",
        )),
        TlsaState::Unknown(Failure::Refused) => {}
        TlsaState::Unknown(e) => out.push(Finding::warn(
            "dane",
            format!("cannot read the TLSA records of the new MX {new_mx} (_25._tcp.{new_mx}): {e}"),
            "check the resolvers and run the check again",
        )),
    }
    out
}

/// TLSA of the old MX hosts and of the new MX, judged.
pub async fn check_dane(
    dns: &Dns,
    servers: &[Server],
    old_mx: &[String],
    new_mx: &str,
) -> Vec<Finding> {
    let mut old = Vec::new();
    for h in old_mx {
        let h = host_name(h);
        if h == host_name(new_mx) || old.iter().any(|(o, _)| o == &h) {
            continue;
        }
        let s = tlsa_of(dns, servers, &h).await;
        old.push((h, s));
    }
    let new = tlsa_of(dns, servers, new_mx).await;
    judge_dane(&old, new_mx, &new)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mailshift_core::cutover::Level;

    fn rec() -> TlsaState {
        TlsaState::Records(vec![Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: "ab".repeat(32),
        }])
    }

    #[test]
    fn tlsa_on_the_old_mx_only_is_a_warning() {
        let f = judge_dane(
            &[("mx.old.example".into(), rec())],
            "mta.new.example",
            &TlsaState::None,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Warn);
        assert!(f[0].message.contains("_25._tcp.mx.old.example"));
        let f = judge_dane(
            &[("mx.old.example".into(), rec())],
            "mta.new.example",
            &rec(),
        );
        assert_eq!(f[0].level, Level::Ok);
        assert!(f[0].message.contains("DANE-EE 1 1"));
        let f = judge_dane(
            &[("mx.old.example".into(), TlsaState::None)],
            "mta.new.example",
            &TlsaState::None,
        );
        assert_eq!(f[0].level, Level::Ok);
        // A server that does not serve the old provider's zone (REFUSED) is not a finding.
        let f = judge_dane(
            &[(
                "mx.old.example".into(),
                TlsaState::Unknown(Failure::Refused),
            )],
            "mta.new.example",
            &TlsaState::None,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Ok);
    }
}
