//! Client discovery: the DNS records mail clients read to find their servers, which keep
//! sending users to the old provider after the switch if nobody repoints them. SRV
//! records of RFC 6186/8314 (`_imaps._tcp`, `_imap._tcp`, `_submissions._tcp`,
//! `_submission._tcp`) and Outlook's `_autodiscover._tcp`, and the `autoconfig.DOMAIN`
//! (Thunderbird) and `autodiscover.DOMAIN` (Outlook) hosts, by CNAME or address.

use crate::lookup::{Dns, Failure, Server, Srv, host_name};
use mailshift_core::cutover::Finding;
use std::net::IpAddr;

/// The providers' client-facing hosts (besides the MX hosts).
#[derive(Clone, Debug, Default)]
pub struct ClientHosts {
    pub new_imap: Option<String>,
    pub old_imap: Option<String>,
    pub new_smtp: Option<String>,
    pub old_smtp: Option<String>,
}

/// Whose server a record points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    New,
    Old,
    Unknown,
}

/// The parent of a host (`imap.old.example` -> `old.example`), when it still has two
/// labels: a provider's hosts usually share it.
fn parent(host: &str) -> Option<&str> {
    let (_, rest) = host.split_once('.')?;
    rest.contains('.').then_some(rest)
}

fn family(target: &str, hosts: &[String]) -> bool {
    hosts
        .iter()
        .any(|h| parent(h).is_some_and(|p| target == p || target.ends_with(&format!(".{p}"))))
}

/// Classifies a host: one of the given hosts exactly, else a host under the same parent
/// as one side's hosts (and not the other's).
pub fn side_of(target: &str, new: &[String], old: &[String]) -> Side {
    let t = host_name(target);
    if new.iter().any(|h| host_name(h) == t) {
        return Side::New;
    }
    if old.iter().any(|h| host_name(h) == t) {
        return Side::Old;
    }
    match (family(&t, new), family(&t, old)) {
        (true, false) => Side::New,
        (false, true) => Side::Old,
        _ => Side::Unknown,
    }
}

/// What a discovery name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Srv(Vec<Srv>),
    Cname(String),
    Addresses(Vec<IpAddr>),
    Nothing,
    Failed(Failure),
}

/// The SRV services a mail client looks up, with the kind of host each should name.
pub const SRV_NAMES: [(&str, &str); 5] = [
    ("_imaps._tcp", "imap"),
    ("_imap._tcp", "imap"),
    ("_submissions._tcp", "smtp"),
    ("_submission._tcp", "smtp"),
    ("_autodiscover._tcp", "web"),
];

/// Judges one discovery record. `ips` gives the addresses of the new and old hosts
/// (for names published as A/AAAA rather than CNAME).
pub fn judge(
    name: &str,
    kind: &str,
    found: &Found,
    hosts: &ClientHosts,
    new: &[String],
    old: &[String],
    ips: &(Vec<IpAddr>, Vec<IpAddr>),
) -> Option<Finding> {
    let flags = if kind == "smtp" {
        "--old-smtp-host/--new-smtp-host"
    } else {
        "--old-imap-host/--new-imap-host"
    };
    let suggestion = match kind {
        "imap" => hosts.new_imap.clone(),
        "smtp" => hosts.new_smtp.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "the new provider's host".into());
    let (target, side) = match found {
        Found::Nothing => return None,
        Found::Failed(Failure::Refused) => return None,
        Found::Failed(e) => {
            return Some(Finding::warn(
                "discovery",
                format!("cannot read {name}: {e}"),
                "check the resolvers and run the check again",
            ));
        }
        Found::Srv(records) => {
            let live: Vec<&Srv> = records.iter().filter(|r| !r.target.is_empty()).collect();
            if live.is_empty() {
                return Some(Finding::ok(
                    "discovery",
                    format!("{name} says the service is not offered (target `.`)"),
                ));
            }
            let sides: Vec<Side> = live.iter().map(|r| side_of(&r.target, new, old)).collect();
            let text = live
                .iter()
                .map(|r| format!("{}:{}", r.target, r.port))
                .collect::<Vec<_>>()
                .join(", ");
            let side = if sides.contains(&Side::Old) {
                Side::Old
            } else if sides.iter().all(|s| *s == Side::New) {
                Side::New
            } else {
                Side::Unknown
            };
            if side == Side::Old {
                let port = live.first().map_or(0, |r| r.port);
                return Some(Finding::warn(
                    "discovery",
                    format!(
                        "{name} still sends mail clients to the old provider ({text}): accounts set up \
                         from it after the switch use the old server"
                    ),
                    format!(
                        "at the switch, publish `{name}. SRV 0 1 {port} {suggestion}.` instead"
                    ),
                ));
            }
            (text, side)
        }
        Found::Cname(t) => (t.clone(), side_of(t, new, old)),
        Found::Addresses(a) => {
            let side = if a.iter().any(|ip| ips.1.contains(ip)) {
                Side::Old
            } else if !a.is_empty() && a.iter().all(|ip| ips.0.contains(ip)) {
                Side::New
            } else {
                Side::Unknown
            };
            (
                a.iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                side,
            )
        }
    };
    Some(match side {
        Side::Old => Finding::warn(
            "discovery",
            format!(
                "{name} still points at the old provider ({target}): mail clients that configure \
                 themselves from it keep using the old server"
            ),
            format!(
                "at the switch, point {name} at the new provider's {kind} service ({suggestion})"
            ),
        ),
        Side::New => Finding::ok(
            "discovery",
            format!("{name} points at the new provider ({target})"),
        ),
        Side::Unknown if new.is_empty() && old.is_empty() => Finding::ok(
            "discovery",
            format!("{name} points at {target}; pass {flags} to check whose server that is"),
        ),
        Side::Unknown => Finding::ok(
            "discovery",
            format!(
                "{name} points at {target}, neither the old nor the new provider's host as given"
            ),
        ),
    })
}

async fn first<T, F, Fut>(servers: &[Server], ask: F) -> Result<Vec<T>, Failure>
where
    F: Fn(Server) -> Fut,
    Fut: std::future::Future<Output = crate::lookup::Outcome<T>>,
{
    let mut last = Failure::Other("no resolver to ask".into());
    for s in servers {
        match ask(s.clone()).await {
            Ok(a) => return Ok(a.records),
            Err(e @ (Failure::NxDomain | Failure::NoData)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn found<T>(r: Result<Vec<T>, Failure>, wrap: impl FnOnce(Vec<T>) -> Found) -> Found {
    match r {
        Ok(v) if v.is_empty() => Found::Nothing,
        Ok(v) => wrap(v),
        Err(Failure::NxDomain | Failure::NoData) => Found::Nothing,
        Err(e) => Found::Failed(e),
    }
}

async fn addresses(dns: &Dns, servers: &[Server], hosts: &[String]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for h in hosts {
        if let Ok(ips) = first(servers, |s| async move { dns.ips(&s, h).await }).await {
            out.extend(ips);
        }
    }
    out
}

/// Every discovery record of `domain`, judged against the providers' hosts (the MX
/// hosts count as each provider's).
pub async fn check_discovery(
    dns: &Dns,
    servers: &[Server],
    domain: &str,
    hosts: &ClientHosts,
    new_mx: &str,
    old_mx: &[String],
) -> Vec<Finding> {
    let mut new: Vec<String> = [hosts.new_imap.as_deref(), hosts.new_smtp.as_deref()]
        .into_iter()
        .flatten()
        .map(host_name)
        .collect();
    new.push(host_name(new_mx));
    let mut old: Vec<String> = [hosts.old_imap.as_deref(), hosts.old_smtp.as_deref()]
        .into_iter()
        .flatten()
        .map(host_name)
        .collect();
    old.extend(old_mx.iter().map(|h| host_name(h)));
    let mut records: Vec<(String, &str, Found)> = Vec::new();
    for (prefix, kind) in SRV_NAMES {
        let name = format!("{prefix}.{domain}");
        let r = first(servers, |s| {
            let name = name.clone();
            async move { dns.srv(&s, &name).await }
        })
        .await;
        records.push((name, kind, found(r, Found::Srv)));
    }
    for (label, kind) in [("autoconfig", "web"), ("autodiscover", "web")] {
        let name = format!("{label}.{domain}");
        let cname = first(servers, |s| {
            let name = name.clone();
            async move { dns.cname(&s, &name).await }
        })
        .await;
        let f = match found(cname, |mut v| Found::Cname(v.remove(0))) {
            Found::Nothing => {
                let a = first(servers, |s| {
                    let name = name.clone();
                    async move { dns.ips(&s, &name).await }
                })
                .await;
                found(a, Found::Addresses)
            }
            other => other,
        };
        records.push((name, kind, f));
    }
    let ips = if records
        .iter()
        .any(|(_, _, f)| matches!(f, Found::Addresses(_)))
    {
        (
            addresses(dns, servers, &new).await,
            addresses(dns, servers, &old).await,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let out: Vec<Finding> = records
        .iter()
        .filter_map(|(name, kind, f)| judge(name, kind, f, hosts, &new, &old, &ips))
        .collect();
    if out.is_empty() {
        return vec![Finding::ok(
            "discovery",
            format!(
                "{domain} publishes no client discovery records (SRV _imaps/_imap/_submissions/\
                 _submission/_autodiscover, autoconfig, autodiscover)"
            ),
        )];
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mailshift_core::cutover::Level;

    fn v(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hosts_are_classified_exactly_then_by_family() {
        let new = v(&["imap.new.example", "mta.new.example"]);
        let old = v(&["mx.old.example"]);
        assert_eq!(side_of("IMAP.new.example.", &new, &old), Side::New);
        assert_eq!(side_of("imap.old.example", &new, &old), Side::Old);
        assert_eq!(side_of("pop.eu.old.example", &new, &old), Side::Old);
        assert_eq!(side_of("mail.customer.example", &new, &old), Side::Unknown);
        // Parents of one label (`example`) say nothing.
        assert_eq!(side_of("x.example", &v(&["a.example"]), &[]), Side::Unknown);
    }

    #[test]
    fn records_pointing_at_the_old_provider_are_warnings_with_a_replacement() {
        let hosts = ClientHosts {
            new_imap: Some("imap.new.example".into()),
            ..ClientHosts::default()
        };
        let new = v(&["imap.new.example", "mta.new.example"]);
        let old = v(&["mx.old.example", "imap.old.example"]);
        let none = (Vec::new(), Vec::new());
        let srv = Found::Srv(vec![Srv {
            priority: 0,
            weight: 1,
            port: 993,
            target: "imap.old.example".into(),
        }]);
        let f = judge(
            "_imaps._tcp.example.com",
            "imap",
            &srv,
            &hosts,
            &new,
            &old,
            &none,
        )
        .unwrap();
        assert_eq!(f.level, Level::Warn);
        assert_eq!(
            f.fix.as_deref(),
            Some(
                "at the switch, publish `_imaps._tcp.example.com. SRV 0 1 993 imap.new.example.` instead"
            )
        );
        let f = judge(
            "autoconfig.example.com",
            "web",
            &Found::Cname("autoconfig.new.example".into()),
            &hosts,
            &new,
            &old,
            &none,
        )
        .unwrap();
        assert_eq!(f.level, Level::Ok);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let f = judge(
            "autodiscover.example.com",
            "web",
            &Found::Addresses(vec![ip]),
            &hosts,
            &new,
            &old,
            &(Vec::new(), vec![ip]),
        )
        .unwrap();
        assert_eq!(f.level, Level::Warn);
        assert!(judge("x", "imap", &Found::Nothing, &hosts, &new, &old, &none).is_none());
    }
}
