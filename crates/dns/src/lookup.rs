//! Queries to one nameserver at a time, so answers can be compared server by server.
//! No cache (TTLs are read fresh), a timeout and one retry on every query, and every
//! failure classified (NXDOMAIN, no data, SERVFAIL, refused, timeout, unreachable).

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Whether a server answers for the zone itself or resolves on behalf of clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Authoritative,
    Recursive,
}

/// A nameserver to ask.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Server {
    /// How the operator knows it: the NS host name, or the address given.
    pub name: String,
    pub addr: SocketAddr,
    pub role: Role,
}

impl Server {
    pub fn new(name: impl Into<String>, addr: SocketAddr, role: Role) -> Server {
        Server {
            name: name.into(),
            addr,
            role,
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name == self.addr.to_string() || self.name == self.addr.ip().to_string() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.name, self.addr)
        }
    }
}

/// Parses `IP` or `IP:PORT` (`[v6]:PORT`), port 53 by default.
pub fn parse_server(s: &str, role: Role) -> Result<Server, String> {
    let addr = if let Ok(a) = s.parse::<SocketAddr>() {
        a
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, 53)
    } else {
        return Err(format!(
            "`{s}` is not a nameserver address: give an IP address, optionally with :PORT \
             (e.g. 9.9.9.9 or 127.0.0.1:5353)"
        ));
    };
    Ok(Server::new(s, addr, role))
}

/// Why a query produced no records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum Failure {
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of this type.
    NoData,
    ServFail,
    Refused,
    Timeout,
    /// Network error talking to the server.
    Unreachable(String),
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NxDomain => f.write_str("the name does not exist (NXDOMAIN)"),
            Failure::NoData => f.write_str("no such record"),
            Failure::ServFail => f.write_str("the server failed (SERVFAIL)"),
            Failure::Refused => f.write_str("the server refused the query (REFUSED)"),
            Failure::Timeout => f.write_str("no answer in time"),
            Failure::Unreachable(e) => write!(f, "unreachable: {e}"),
            Failure::Other(e) => f.write_str(e),
        }
    }
}

fn classify(e: &NetError) -> Failure {
    use hickory_resolver::net::DnsError;
    match e {
        NetError::Timeout => Failure::Timeout,
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Failure::NxDomain,
            ResponseCode::ServFail => Failure::ServFail,
            ResponseCode::Refused => Failure::Refused,
            _ => Failure::NoData,
        },
        NetError::Dns(DnsError::ResponseCode(code)) => match *code {
            ResponseCode::NXDomain => Failure::NxDomain,
            ResponseCode::ServFail => Failure::ServFail,
            ResponseCode::Refused => Failure::Refused,
            c => Failure::Other(format!("error response {c}")),
        },
        NetError::Io(io) => Failure::Unreachable(io.to_string()),
        NetError::NoConnections => Failure::Unreachable("no connection to the server".into()),
        other => {
            let text = other.to_string();
            if text.contains("timed out") {
                Failure::Timeout
            } else {
                Failure::Other(text)
            }
        }
    }
}

/// One MX record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Mx {
    pub preference: u16,
    /// Lower-case host name without the trailing dot.
    pub host: String,
}

/// One SRV record (RFC 2782): where a service of a domain is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Lower-case host name without the trailing dot; `""` for `.` ("no such service").
    pub target: String,
}

/// One TLSA record (RFC 6698): usage, selector, matching type and the data in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: String,
}

/// Records of one type with the TTL they carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Answer<T> {
    pub records: Vec<T>,
    pub ttl: u32,
}

pub type Outcome<T> = Result<Answer<T>, Failure>;

/// Normalises a host name: lower case, no trailing dot.
pub fn host_name(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Asks nameservers, one at a time, with a bounded time per query.
pub struct Dns {
    timeout: Duration,
    resolvers: Mutex<HashMap<Server, Arc<TokioResolver>>>,
}

impl Dns {
    pub fn new(timeout: Duration) -> Dns {
        Dns {
            timeout,
            resolvers: Mutex::new(HashMap::new()),
        }
    }

    /// The recursive resolvers of this machine (/etc/resolv.conf).
    pub fn system_resolvers() -> Vec<Server> {
        let Ok((config, _)) = hickory_resolver::system_conf::read_system_conf() else {
            return Vec::new();
        };
        let mut out: Vec<Server> = Vec::new();
        for ns in config.name_servers() {
            let port = ns.connections.first().map(|c| c.port).unwrap_or(53);
            let s = Server::new(
                ns.ip.to_string(),
                SocketAddr::new(ns.ip, port),
                Role::Recursive,
            );
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    fn resolver(&self, server: &Server) -> Result<Arc<TokioResolver>, Failure> {
        let mut map = self.resolvers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(server) {
            return Ok(r.clone());
        }
        let mut udp = ConnectionConfig::udp();
        udp.port = server.addr.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.addr.port();
        let ns = NameServerConfig::new(server.addr.ip(), true, vec![udp, tcp]);
        let mut opts = ResolverOpts::default();
        opts.timeout = self.timeout;
        opts.attempts = 2;
        opts.cache_size = 0;
        opts.ndots = 0;
        opts.edns0 = true;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        // An authoritative server answers from its zone; asking it to recurse would
        // make some refuse.
        opts.recursion_desired = server.role == Role::Recursive;
        opts.num_concurrent_reqs = 1;
        let r = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| Failure::Other(format!("cannot set up a resolver for {server}: {e}")))?;
        let r = Arc::new(r);
        map.insert(server.clone(), r.clone());
        Ok(r)
    }

    async fn lookup(
        &self,
        server: &Server,
        name: &str,
        kind: RecordType,
    ) -> Result<(Vec<RData>, u32), Failure> {
        let fqdn = format!("{}.", host_name(name));
        let r = self.resolver(server)?;
        // hickory has its own timeout per attempt; this bounds the whole lookup too.
        let res = tokio::time::timeout(self.timeout * 3, r.lookup(fqdn.as_str(), kind)).await;
        let lookup = match res {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(l)) => l,
        };
        let mut ttl = u32::MAX;
        let mut out = Vec::new();
        for rec in lookup.answers() {
            if rec.record_type() == kind {
                ttl = ttl.min(rec.ttl);
                out.push(rec.data.clone());
            }
        }
        if out.is_empty() {
            return Err(Failure::NoData);
        }
        Ok((out, ttl))
    }

    pub async fn mx(&self, server: &Server, domain: &str) -> Outcome<Mx> {
        let (data, ttl) = self.lookup(server, domain, RecordType::MX).await?;
        let mut records: Vec<Mx> = data
            .into_iter()
            .filter_map(|d| match d {
                RData::MX(mx) => Some(Mx {
                    preference: mx.preference,
                    host: host_name(&mx.exchange.to_string()),
                }),
                _ => None,
            })
            .collect();
        records.sort();
        Ok(Answer { records, ttl })
    }

    /// TXT records, each one's strings joined (as SPF/DKIM/DMARC require).
    pub async fn txt(&self, server: &Server, name: &str) -> Outcome<String> {
        let (data, ttl) = self.lookup(server, name, RecordType::TXT).await?;
        let records = data
            .into_iter()
            .filter_map(|d| match d {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect();
        Ok(Answer { records, ttl })
    }

    pub async fn ns(&self, server: &Server, domain: &str) -> Outcome<String> {
        let (data, ttl) = self.lookup(server, domain, RecordType::NS).await?;
        let mut records: Vec<String> = data
            .into_iter()
            .filter_map(|d| match d {
                RData::NS(ns) => Some(host_name(&ns.0.to_string())),
                _ => None,
            })
            .collect();
        records.sort();
        Ok(Answer { records, ttl })
    }

    /// SRV records (RFC 2782), sorted by priority then weight.
    pub async fn srv(&self, server: &Server, name: &str) -> Outcome<Srv> {
        let (data, ttl) = self.lookup(server, name, RecordType::SRV).await?;
        let mut records: Vec<Srv> = data
            .into_iter()
            .filter_map(|d| match d {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: host_name(&s.target.to_string()),
                }),
                _ => None,
            })
            .collect();
        records.sort();
        Ok(Answer { records, ttl })
    }

    /// TLSA records (RFC 6698), e.g. at `_25._tcp.MX`.
    pub async fn tlsa(&self, server: &Server, name: &str) -> Outcome<Tlsa> {
        let (data, ttl) = self.lookup(server, name, RecordType::TLSA).await?;
        let records = data
            .into_iter()
            .filter_map(|d| match d {
                RData::TLSA(t) => Some(Tlsa {
                    usage: u8::from(t.cert_usage),
                    selector: u8::from(t.selector),
                    matching: u8::from(t.matching),
                    data: t.cert_data.iter().map(|b| format!("{b:02x}")).collect(),
                }),
                _ => None,
            })
            .collect();
        Ok(Answer { records, ttl })
    }

    /// The CNAME target of a name, if it is an alias.
    pub async fn cname(&self, server: &Server, name: &str) -> Outcome<String> {
        let (data, ttl) = self.lookup(server, name, RecordType::CNAME).await?;
        let records = data
            .into_iter()
            .filter_map(|d| match d {
                RData::CNAME(c) => Some(host_name(&c.0.to_string())),
                _ => None,
            })
            .collect();
        Ok(Answer { records, ttl })
    }

    /// IPv4 and IPv6 addresses of a host.
    pub async fn ips(&self, server: &Server, host: &str) -> Outcome<IpAddr> {
        let v4 = self.lookup(server, host, RecordType::A).await;
        let v6 = self.lookup(server, host, RecordType::AAAA).await;
        let mut records = Vec::new();
        let mut ttl = u32::MAX;
        for (data, t) in [&v4, &v6].into_iter().flatten() {
            ttl = ttl.min(*t);
            for d in data {
                match d {
                    RData::A(a) => records.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => records.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        if records.is_empty() {
            return Err(match (v4, v6) {
                (Err(e), _) if e != Failure::NoData => e,
                (_, Err(e)) if e != Failure::NoData => e,
                _ => Failure::NoData,
            });
        }
        Ok(Answer { records, ttl })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_a_default_port_or_say_why_not() {
        let s = parse_server("127.0.0.1:5353", Role::Authoritative).unwrap();
        assert_eq!(s.addr.port(), 5353);
        assert_eq!(
            parse_server("9.9.9.9", Role::Recursive)
                .unwrap()
                .addr
                .port(),
            53
        );
        assert_eq!(
            parse_server("[::1]:54", Role::Recursive)
                .unwrap()
                .addr
                .port(),
            54
        );
        assert!(
            parse_server("dns.google", Role::Recursive)
                .unwrap_err()
                .contains("IP address")
        );
    }

    #[test]
    fn host_names_are_normalised() {
        assert_eq!(host_name("MX.Example.COM."), "mx.example.com");
    }
}
