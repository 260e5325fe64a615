//! The fleet scheduler's eye on DNS: a domain's MX switch counts as observed when every
//! authoritative nameserver returns only the new MX.

use crate::check::{authoritative, propagation};
use crate::lookup::{Dns, Role, parse_server};
use async_trait::async_trait;
use mailshift_core::cutover::DomainConfig;
use mailshift_core::ports::MxObserver;
use mailshift_core::{Error, ErrorKind, Result};
use std::time::Duration;

pub struct DnsObserver {
    dns: Dns,
}

impl DnsObserver {
    pub fn new(timeout: Duration) -> DnsObserver {
        DnsObserver {
            dns: Dns::new(timeout),
        }
    }
}

#[async_trait]
impl MxObserver for DnsObserver {
    async fn observe(&self, d: &DomainConfig) -> Result<(bool, String)> {
        let Some(new_mx) = &d.new_mx else {
            return Ok((false, "no new MX configured".into()));
        };
        let parse = |list: &[String], role| -> Result<Vec<_>> {
            list.iter()
                .map(|s| parse_server(s, role).map_err(|e| Error::new(ErrorKind::Usage, e)))
                .collect()
        };
        let mut servers = parse(&d.authoritative, Role::Authoritative)?;
        if servers.is_empty() {
            let mut resolvers = parse(&d.nameservers, Role::Recursive)?;
            if resolvers.is_empty() {
                resolvers = Dns::system_resolvers();
            }
            let mut findings = Vec::new();
            servers = authoritative(&self.dns, &d.name, &resolvers, &mut findings).await;
            if servers.is_empty() {
                let why: Vec<String> = findings.into_iter().map(|f| f.message).collect();
                return Err(Error::new(ErrorKind::Network, why.join("; ")));
            }
        }
        let p = propagation(&self.dns, &d.name, &servers, new_mx, d.old_mx.as_deref()).await;
        Ok((
            p.complete(),
            format!(
                "{}/{} authoritative nameservers see {new_mx}",
                p.seeing_new, p.total
            ),
        ))
    }
}
