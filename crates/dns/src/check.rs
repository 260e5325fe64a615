//! `dns check` and `dns watch`: the MX of a domain as every authoritative nameserver and
//! every resolver sees it, which MX is active (old, new, mixed), and the readiness
//! findings (TTL, SPF, DKIM, DMARC) for a switch.

use crate::lookup::{Answer, Dns, Failure, Mx, Role, Server, host_name};
use crate::records;
use crate::{dane, discovery, mta_sts};
use chrono::{DateTime, FixedOffset};
use mailshift_core::cutover::{Finding, Level, ttl_advice, worst};
use serde::Serialize;
use std::net::SocketAddr;

/// What one server's MX answer points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sees {
    /// Only the old MX (or, without `--old-mx`, anything but the new one).
    Old,
    /// Only the new MX.
    New,
    /// Both old and new.
    Mixed,
    /// MX hosts that are neither old nor new.
    Other,
    /// No answer (see the failure).
    Unknown,
}

/// Classifies an MX set against the old and new MX hosts.
pub fn sees(mx: &[Mx], new_mx: &str, old_mx: Option<&str>) -> Sees {
    let new_mx = host_name(new_mx);
    let old_mx = old_mx.map(host_name);
    let has_new = mx.iter().any(|m| m.host == new_mx);
    let has_old = match &old_mx {
        Some(o) => mx.iter().any(|m| &m.host == o),
        None => mx.iter().any(|m| m.host != new_mx),
    };
    match (has_new, has_old) {
        (true, true) => Sees::Mixed,
        (true, false) => Sees::New,
        (false, true) => Sees::Old,
        (false, false) if mx.is_empty() => Sees::Unknown,
        (false, false) => Sees::Other,
    }
}

/// One server's view of the MX.
#[derive(Clone, Debug)]
pub struct View {
    pub server: Server,
    pub mx: Result<Answer<Mx>, Failure>,
    pub sees: Sees,
}

/// Plain JSON, not Rust's `{"Ok": ...}`/`{"Err": ...}`: `mx` and `ttl` are null when
/// the server gave no answer, and `failure` says why.
impl Serialize for View {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut v = s.serialize_struct("View", 5)?;
        v.serialize_field("server", &self.server)?;
        v.serialize_field("sees", &self.sees)?;
        match &self.mx {
            Ok(a) => {
                v.serialize_field("mx", &a.records)?;
                v.serialize_field("ttl", &a.ttl)?;
                v.serialize_field("failure", &None::<Failure>)?;
            }
            Err(f) => {
                v.serialize_field("mx", &None::<Vec<Mx>>)?;
                v.serialize_field("ttl", &None::<u32>)?;
                v.serialize_field("failure", f)?;
            }
        }
        v.end()
    }
}

/// Where to ask and what to compare with.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub new_mx: String,
    pub old_mx: Option<String>,
    pub spf_include: Option<String>,
    pub dkim_selectors: Vec<String>,
    /// Recursive resolvers; the system's when empty.
    pub resolvers: Vec<Server>,
    /// Authoritative servers; found through NS when empty.
    pub authoritative: Vec<Server>,
    pub switch_at: Option<DateTime<FixedOffset>>,
    /// How the MTA-STS policy is fetched (extra CA, port, timeout).
    pub mta_sts: mta_sts::Fetch,
    /// The providers' IMAP and submission hosts, to judge client discovery records.
    pub client_hosts: discovery::ClientHosts,
}

/// The old MX hosts: the given one, or whatever the authoritative servers publish
/// besides the new MX.
pub fn old_mx_hosts(o: &Options, views: &[View]) -> Vec<String> {
    if let Some(old) = &o.old_mx {
        return vec![host_name(old)];
    }
    let new = host_name(&o.new_mx);
    let mut out: Vec<String> = Vec::new();
    for v in views
        .iter()
        .filter(|v| v.server.role == Role::Authoritative)
    {
        for m in v.mx.iter().flat_map(|a| a.records.iter()) {
            if m.host != new && !out.contains(&m.host) {
                out.push(m.host.clone());
            }
        }
    }
    out
}

/// The records that govern delivery after the switch: MTA-STS and TLS-RPT, DANE TLSA
/// on the MX hosts, and the client discovery records.
pub async fn delivery_findings(
    dns: &Dns,
    readers: &[Server],
    domain: &str,
    o: &Options,
    old_mx: &[String],
    now: DateTime<FixedOffset>,
) -> Vec<Finding> {
    let (sts, rpt, dane, disc) = tokio::join!(
        mta_sts::check_mta_sts(
            dns,
            readers,
            domain,
            &o.new_mx,
            &o.mta_sts,
            o.switch_at,
            now
        ),
        mta_sts::check_tls_rpt(dns, readers, domain),
        dane::check_dane(dns, readers, old_mx, &o.new_mx),
        discovery::check_discovery(dns, readers, domain, &o.client_hosts, &o.new_mx, old_mx),
    );
    let mut out = sts;
    out.push(rpt);
    out.extend(dane);
    out.extend(disc);
    out
}

/// The result of `dns check`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub domain: String,
    /// What the authoritative servers agree on (`unknown` if they do not answer).
    pub active: Sees,
    pub views: Vec<View>,
    pub findings: Vec<Finding>,
    pub level: Level,
}

/// Finds the domain's authoritative servers: NS through the resolvers, then their
/// addresses. Failures are findings.
pub async fn authoritative(
    dns: &Dns,
    domain: &str,
    resolvers: &[Server],
    findings: &mut Vec<Finding>,
) -> Vec<Server> {
    let mut last =
        Failure::Other("no resolver configured (none given, none in /etc/resolv.conf)".into());
    let mut names = None;
    for r in resolvers {
        match dns.ns(r, domain).await {
            Ok(a) => {
                names = Some(a.records);
                break;
            }
            Err(e @ (Failure::NxDomain | Failure::NoData)) => {
                last = e;
                break;
            }
            Err(e) => last = e,
        }
    }
    let Some(names) = names else {
        findings.push(Finding::error(
            "ns",
            format!("cannot find the authoritative nameservers of {domain}: {last}"),
            match last {
                Failure::NxDomain => "check the spelling of the domain and that it is registered".to_string(),
                _ => "give them with --authoritative IP[:PORT], or check the resolvers (--nameserver)".to_string(),
            },
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names {
        let mut got = None;
        for r in resolvers {
            if let Ok(a) = dns.ips(r, &name).await {
                got = Some(a.records);
                break;
            }
        }
        match got {
            Some(ips) => {
                for ip in ips {
                    out.push(Server::new(
                        name.clone(),
                        SocketAddr::new(ip, 53),
                        Role::Authoritative,
                    ));
                }
            }
            None => findings.push(Finding::warn(
                "ns",
                format!("nameserver {name} of {domain} has no address"),
                format!("fix the A/AAAA record of {name} or remove it from the NS set"),
            )),
        }
    }
    out
}

/// Asks every server for the MX, concurrently.
pub async fn views(
    dns: &Dns,
    domain: &str,
    servers: &[Server],
    new_mx: &str,
    old_mx: Option<&str>,
) -> Vec<View> {
    let asks = servers.iter().map(|s| async move {
        let mx = dns.mx(s, domain).await;
        let seen = match &mx {
            Ok(a) => sees(&a.records, new_mx, old_mx),
            Err(_) => Sees::Unknown,
        };
        View {
            server: s.clone(),
            mx,
            sees: seen,
        }
    });
    futures::future::join_all(asks).await
}

fn mx_text(mx: &[Mx]) -> String {
    mx.iter()
        .map(|m| format!("{} {}", m.preference, m.host))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Findings about the MX views: failures, disagreements, which MX is active, TTL.
pub fn judge_mx(
    domain: &str,
    views: &[View],
    o: &Options,
    now: DateTime<FixedOffset>,
) -> (Sees, Vec<Finding>) {
    let mut out = Vec::new();
    let auth: Vec<&View> = views
        .iter()
        .filter(|v| v.server.role == Role::Authoritative)
        .collect();
    let mut answered: Vec<(&View, &Answer<Mx>)> = Vec::new();
    for v in views {
        match &v.mx {
            Ok(a) => answered.push((v, a)),
            Err(Failure::NoData) => out.push(Finding::error(
                "mx",
                format!(
                    "{domain} has no MX record at {}: mail falls back to its A record or bounces",
                    v.server
                ),
                format!("publish `{domain}. MX 10 {}.`", host_name(&o.new_mx)),
            )),
            Err(Failure::NxDomain) => out.push(Finding::error(
                "mx",
                format!(
                    "{domain} does not exist according to {} (NXDOMAIN)",
                    v.server
                ),
                "check the domain name and its delegation",
            )),
            Err(e) => {
                let msg = format!(
                    "{} ({}) gave no MX for {domain}: {e}",
                    v.server,
                    match v.server.role {
                        Role::Authoritative => "authoritative",
                        Role::Recursive => "resolver",
                    }
                );
                if v.server.role == Role::Authoritative {
                    out.push(Finding::error(
                        "mx",
                        msg,
                        "fix or remove that nameserver: resolvers that ask it get no answer",
                    ));
                } else {
                    out.push(Finding::warn(
                        "mx",
                        msg,
                        "use another resolver (--nameserver) or check this one",
                    ));
                }
            }
        }
    }
    // What the authoritative servers say is the truth; resolvers may lag (cache) or lie.
    let auth_sets: Vec<&Vec<Mx>> = auth
        .iter()
        .filter_map(|v| v.mx.as_ref().ok())
        .map(|a| &a.records)
        .collect();
    let agreed = auth_sets.windows(2).all(|w| w[0] == w[1]);
    if !agreed {
        let detail = auth
            .iter()
            .filter_map(|v| {
                v.mx.as_ref()
                    .ok()
                    .map(|a| format!("{}: {}", v.server, mx_text(&a.records)))
            })
            .collect::<Vec<_>>()
            .join("; ");
        out.push(Finding::warn(
            "mx",
            format!("the authoritative nameservers of {domain} disagree ({detail})"),
            "wait for the zone transfer (compare SOA serials) or fix the lagging server",
        ));
    }
    let active = match auth_sets.first() {
        Some(first) if agreed => sees(first, &o.new_mx, o.old_mx.as_deref()),
        Some(_) => Sees::Mixed,
        None => Sees::Unknown,
    };
    if let Some(truth) = auth_sets.first().filter(|_| agreed) {
        for (v, a) in &answered {
            if v.server.role == Role::Recursive && &a.records != *truth {
                let cached = sees(&a.records, &o.new_mx, o.old_mx.as_deref()) == Sees::Old
                    && active == Sees::New;
                out.push(Finding::warn(
                    "mx",
                    if cached {
                        format!(
                            "resolver {} still returns the old MX ({}); it may cache it for up to {} s",
                            v.server,
                            mx_text(&a.records),
                            a.ttl
                        )
                    } else {
                        format!(
                            "resolver {} returns an MX the authoritative servers do not publish ({} instead of {})",
                            v.server,
                            mx_text(&a.records),
                            mx_text(truth)
                        )
                    },
                    "wait for the TTL to expire, or stop relying on that resolver",
                ));
            }
        }
    }
    if let Some(truth) = auth_sets.first() {
        let text = mx_text(truth);
        out.push(Finding::ok(
            "mx",
            match active {
                Sees::New => format!("the new MX is active: {text}"),
                Sees::Old => format!("the old MX is active: {text} (switch on D-Day)"),
                Sees::Mixed => format!("old and new MX are both published: {text}"),
                Sees::Other => {
                    format!("the MX points at neither the old nor the new server: {text}")
                }
                Sees::Unknown => format!("MX: {text}"),
            },
        ));
        if active == Sees::Other {
            out.push(Finding::warn(
                "mx",
                format!(
                    "{domain}'s MX ({text}) is neither {} nor the given old MX",
                    host_name(&o.new_mx)
                ),
                "check --new-mx/--old-mx",
            ));
        }
    }
    // TTL as the zone publishes it (resolvers show what is left of their cache).
    let ttl = auth
        .iter()
        .filter_map(|v| v.mx.as_ref().ok().map(|a| a.ttl))
        .max()
        .or_else(|| answered.iter().map(|(_, a)| a.ttl).max());
    if let Some(ttl) = ttl {
        out.push(ttl_advice(ttl, o.switch_at, now));
    }
    (active, out)
}

/// `dns check`: every finding about the domain's readiness for the switch.
pub async fn check(dns: &Dns, domain: &str, o: &Options, now: DateTime<FixedOffset>) -> Report {
    let domain = host_name(domain);
    let mut findings = Vec::new();
    let resolvers = if o.resolvers.is_empty() {
        Dns::system_resolvers()
    } else {
        o.resolvers.clone()
    };
    let auth = if o.authoritative.is_empty() {
        authoritative(dns, &domain, &resolvers, &mut findings).await
    } else {
        o.authoritative.clone()
    };
    let mut servers = auth.clone();
    servers.extend(resolvers.iter().cloned());
    let views = views(dns, &domain, &servers, &o.new_mx, o.old_mx.as_deref()).await;
    let (active, mx) = judge_mx(&domain, &views, o, now);
    findings.extend(mx);
    // Records are read where the world reads them (resolvers), or from the zone itself
    // when no resolver is available.
    let readers = if resolvers.is_empty() {
        &auth
    } else {
        &resolvers
    };
    findings.extend(records::check_spf(dns, readers, &domain, o.spf_include.as_deref()).await);
    if o.dkim_selectors.is_empty() {
        findings.push(Finding::warn(
            "dkim",
            "no DKIM selector given: the new provider's signing key was not checked",
            "pass --dkim-selector SEL (the selector the new provider signs with)",
        ));
    }
    for sel in &o.dkim_selectors {
        findings.push(records::check_dkim(dns, readers, &domain, sel).await);
    }
    findings.push(records::check_dmarc(dns, readers, &domain).await);
    let old_mx = old_mx_hosts(o, &views);
    findings.extend(delivery_findings(dns, readers, &domain, o, &old_mx, now).await);
    let level = worst(&findings);
    Report {
        domain,
        active,
        views,
        findings,
        level,
    }
}

/// One round of `dns watch`: how many servers see only the new MX.
#[derive(Clone, Debug, Serialize)]
pub struct Propagation {
    pub seeing_new: usize,
    pub total: usize,
    pub views: Vec<View>,
    /// When to look again: the shortest TTL seen (bounded), so no change is missed
    /// for longer than a cache would hold it.
    pub next_in_secs: u64,
}

impl Propagation {
    pub fn complete(&self) -> bool {
        self.total > 0 && self.seeing_new == self.total
    }

    pub fn percent(&self) -> u32 {
        (self.seeing_new * 100).checked_div(self.total).unwrap_or(0) as u32
    }
}

pub async fn propagation(
    dns: &Dns,
    domain: &str,
    servers: &[Server],
    new_mx: &str,
    old_mx: Option<&str>,
) -> Propagation {
    let views = views(dns, &host_name(domain), servers, new_mx, old_mx).await;
    let seeing_new = views.iter().filter(|v| v.sees == Sees::New).count();
    let ttl = views
        .iter()
        .filter_map(|v| v.mx.as_ref().ok().map(|a| u64::from(a.ttl)))
        .min()
        .unwrap_or(30);
    Propagation {
        seeing_new,
        total: views.len(),
        views,
        next_in_secs: ttl.clamp(1, 60),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mx(hosts: &[&str]) -> Vec<Mx> {
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Mx {
                preference: 10 * (i as u16 + 1),
                host: h.to_string(),
            })
            .collect()
    }

    #[test]
    fn mx_sets_are_classified_old_new_mixed_or_other() {
        let new = "mta.new.example.";
        assert_eq!(
            sees(&mx(&["mta.new.example"]), new, Some("mx.old.example")),
            Sees::New
        );
        assert_eq!(
            sees(&mx(&["mx.old.example"]), new, Some("mx.old.example")),
            Sees::Old
        );
        assert_eq!(
            sees(
                &mx(&["mx.old.example", "mta.new.example"]),
                new,
                Some("mx.old.example")
            ),
            Sees::Mixed
        );
        assert_eq!(
            sees(&mx(&["elsewhere.example"]), new, Some("mx.old.example")),
            Sees::Other
        );
        assert_eq!(sees(&mx(&["elsewhere.example"]), new, None), Sees::Old);
        assert_eq!(sees(&[], new, None), Sees::Unknown);
    }
}
