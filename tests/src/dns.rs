//! A real authoritative DNS server on loopback (hickory-server, in process), serving
//! test zones over UDP and TCP on a free port. Zones can be changed while it runs (new
//! MX, new serial), so tests can watch a switch propagate.

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, SRV, TLSA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// One record of a test zone; names are relative to the zone (`@` for the apex).
#[derive(Clone, Debug)]
pub enum Rec {
    Mx(u16, String),
    Txt(String),
    Ns(String),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// An alias to another name.
    Cname(String),
    /// `priority weight port target` (RFC 2782); target `.` means "no such service".
    Srv(u16, u16, u16, String),
    /// `usage selector matching data-in-hex` (RFC 6698), e.g. `3 1 1 ab12...`.
    Tlsa(u8, u8, u8, String),
}

/// A test zone: its origin, default TTL and records `(name, ttl, record)`.
#[derive(Clone, Debug)]
pub struct Zone {
    pub origin: String,
    pub records: Vec<(String, u32, Rec)>,
}

impl Zone {
    pub fn new(origin: &str) -> Zone {
        Zone {
            origin: origin.trim_end_matches('.').to_string(),
            records: Vec::new(),
        }
    }

    pub fn with(mut self, name: &str, ttl: u32, rec: Rec) -> Zone {
        self.records.push((name.to_string(), ttl, rec));
        self
    }

    pub fn mx(self, ttl: u32, pref: u16, host: &str) -> Zone {
        self.with("@", ttl, Rec::Mx(pref, host.to_string()))
    }

    pub fn txt(self, name: &str, text: &str) -> Zone {
        self.with(name, 300, Rec::Txt(text.to_string()))
    }
}

fn fqdn(name: &str, origin: &str) -> Name {
    let full = if name == "@" {
        format!("{origin}.")
    } else if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.{origin}.")
    };
    Name::from_str(&full).expect("valid test DNS name")
}

fn rdata(rec: &Rec, origin: &str) -> RData {
    match rec {
        Rec::Mx(p, h) => RData::MX(MX::new(*p, fqdn(h, origin))),
        // A TXT string holds at most 255 bytes: longer texts (DKIM keys) are split.
        Rec::Txt(t) => RData::TXT(TXT::new(
            t.as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect(),
        )),
        Rec::Ns(h) => RData::NS(NS(fqdn(h, origin))),
        Rec::A(ip) => RData::A(A(*ip)),
        Rec::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rec::Cname(h) => RData::CNAME(CNAME(fqdn(h, origin))),
        Rec::Srv(prio, weight, port, target) => {
            let target = if target == "." {
                Name::root()
            } else {
                fqdn(target, origin)
            };
            RData::SRV(SRV::new(*prio, *weight, *port, target))
        }
        Rec::Tlsa(usage, selector, matching, hex_data) => RData::TLSA(TLSA::new(
            CertUsage::from(*usage),
            Selector::from(*selector),
            Matching::from(*matching),
            hex::decode(hex_data).expect("TLSA data in hex"),
        )),
    }
}

fn soa(origin: &str, serial: u32) -> Record {
    Record::from_rdata(
        fqdn("@", origin),
        3600,
        RData::SOA(SOA::new(
            fqdn("ns1", origin),
            fqdn("hostmaster", origin),
            serial,
            3600,
            600,
            86400,
            60,
        )),
    )
}

type Handler = InMemoryZoneHandler<TokioRuntimeProvider>;

/// A running authoritative server. Stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zones: HashMap<String, (Arc<Handler>, std::sync::atomic::AtomicU32)>,
    _server: Server<Catalog>,
}

impl DnsServer {
    /// Serves `zones` on a free loopback port (UDP and TCP on the same port).
    pub async fn start(zones: &[Zone]) -> DnsServer {
        let mut catalog = Catalog::new();
        let mut handlers = HashMap::new();
        for z in zones {
            let mut h = Handler::empty(fqdn("@", &z.origin), ZoneType::Primary, AxfrPolicy::Deny);
            h.upsert_mut(soa(&z.origin, 1), 1);
            for (name, ttl, rec) in &z.records {
                let r = Record::from_rdata(fqdn(name, &z.origin), *ttl, rdata(rec, &z.origin));
                assert!(
                    h.upsert_mut(r, 1),
                    "test zone {}: cannot add {name}",
                    z.origin
                );
            }
            let h = Arc::new(h);
            catalog.upsert(
                LowerName::new(&fqdn("@", &z.origin)),
                vec![h.clone() as Arc<dyn ZoneHandler>],
            );
            handlers.insert(z.origin.clone(), (h, std::sync::atomic::AtomicU32::new(1)));
        }
        // UDP and TCP on one port: bind TCP first, then UDP on its port (retry if taken).
        for _ in 0..50 {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind tcp");
            let addr = tcp.local_addr().expect("tcp addr");
            let Ok(udp) = tokio::net::UdpSocket::bind(addr).await else {
                continue;
            };
            let mut server = Server::new(catalog);
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
            return DnsServer {
                addr,
                zones: handlers,
                _server: server,
            };
        }
        panic!("no free loopback port for a DNS server");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the MX set of a zone's apex and bumps its serial.
    pub async fn set_mx(&self, origin: &str, ttl: u32, mx: &[(u16, &str)]) {
        let (h, serial) = self
            .zones
            .get(origin)
            .expect("zone served by this test server");
        let serial = serial.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let apex = fqdn("@", origin);
        h.records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(&apex), RecordType::MX));
        for (p, host) in mx {
            let r = Record::from_rdata(
                apex.clone(),
                ttl,
                rdata(&Rec::Mx(*p, host.to_string()), origin),
            );
            assert!(h.upsert(r, serial).await, "cannot set MX {host}");
        }
        assert!(
            h.upsert(soa(origin, serial), serial).await,
            "cannot bump the serial"
        );
    }
}

impl DnsServer {
    /// Replaces the TXT records at `name` (relative to the zone, `@` for the apex) and
    /// bumps the serial: e.g. a DKIM key or an SPF record changed while a test runs.
    pub async fn set_txt(&self, origin: &str, name: &str, texts: &[&str]) {
        let (h, serial) = self
            .zones
            .get(origin)
            .expect("zone served by this test server");
        let serial = serial.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let owner = fqdn(name, origin);
        h.records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(&owner), RecordType::TXT));
        for t in texts {
            let r = Record::from_rdata(owner.clone(), 300, rdata(&Rec::Txt(t.to_string()), origin));
            assert!(h.upsert(r, serial).await, "cannot set TXT {name}");
        }
        assert!(
            h.upsert(soa(origin, serial), serial).await,
            "cannot bump the serial"
        );
    }
}

/// A UDP socket that receives queries and never answers: a nameserver that times out.
pub fn silent_server() -> (std::net::UdpSocket, SocketAddr) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let a = s.local_addr().expect("udp addr");
    (s, a)
}

/// A nameserver that answers every query with SERVFAIL (a broken or DNSSEC-failing
/// server), until the returned socket's thread is dropped with the process.
pub fn servfail_server() -> SocketAddr {
    use hickory_server::proto::op::{Message, OpCode, ResponseCode};
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let a = s.local_addr().expect("udp addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::error_msg(q.metadata.id, OpCode::Query, ResponseCode::ServFail);
            r.queries = q.queries.clone();
            if let Ok(bytes) = r.to_vec() {
                let _ = s.send_to(&bytes, peer);
            }
        }
    });
    a
}
