//! Authenticating a received message as a receiving server would: DKIM signatures
//! checked against the keys in DNS, SPF of the address that handed the message over,
//! and the DMARC result of the From domain, all with mail-auth (the library an MTA
//! uses) and resolved through the nameservers the operator chose. The outcome is plain
//! data, so it can be judged by pure functions and printed as JSON.

use crate::lookup::{Server, host_name};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult,
    dmarc::verify::DmarcParameters,
};
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

/// Why a message could not be authenticated at all.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticateError {
    #[error("the received message does not parse as an RFC 5322 message")]
    Parse,
    #[error("cannot set up a resolver for {servers}: {reason}")]
    Resolver { servers: String, reason: String },
    #[error("authenticating the message took longer than {0:?} (slow or silent nameservers)")]
    Timeout(Duration),
}

/// A result as RFC 8601 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::SoftFail => "softfail",
            Verdict::Neutral => "neutral",
            Verdict::None => "none",
            Verdict::TempError => "temperror",
            Verdict::PermError => "permerror",
        }
    }

    /// From an Authentication-Results token (`pass`, `hardfail`, `temperror`, ...).
    pub fn parse(s: &str) -> Option<Verdict> {
        Some(match s.to_ascii_lowercase().as_str() {
            "pass" => Verdict::Pass,
            "fail" | "hardfail" => Verdict::Fail,
            "softfail" => Verdict::SoftFail,
            "neutral" | "policy" => Verdict::Neutral,
            "none" => Verdict::None,
            "temperror" | "temperr" => Verdict::TempError,
            "permerror" | "permerr" => Verdict::PermError,
            _ => return None,
        })
    }
}

/// One DKIM signature of the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DkimCheck {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    pub result: Verdict,
    /// What went wrong, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `d=` is the From domain or shares its parent (relaxed alignment, RFC 7489 3.1.1).
    pub aligned: bool,
}

/// SPF of the envelope sender for the address that handed the message over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpfCheck {
    pub ip: IpAddr,
    pub helo: String,
    pub mail_from: String,
    /// The domain whose record was evaluated (of MAIL FROM, or of HELO when it is empty).
    pub domain: String,
    pub result: Verdict,
    /// The SPF domain is the From domain or shares its parent.
    pub aligned: bool,
}

/// The DMARC outcome for the From domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DmarcCheck {
    pub from_domain: String,
    /// Whether a DMARC policy was found for the From domain (the other fields mean little
    /// without one; `result` is `temperror` when the lookup failed).
    pub published: bool,
    /// `pass` when an aligned DKIM or SPF pass exists.
    pub result: Verdict,
    pub dkim: Verdict,
    pub spf: Verdict,
    /// `none`, `quarantine` or `reject`: what the domain asks receivers to do on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// Everything a receiver concludes about a message's authenticity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Authentication {
    /// The domain of the From header (lower case), if it has one.
    pub from_domain: Option<String>,
    pub dkim: Vec<DkimCheck>,
    pub spf: SpfCheck,
    pub dmarc: DmarcCheck,
}

/// Who handed the message over, as the receiving server saw it.
#[derive(Clone, Debug)]
pub struct Handover {
    pub ip: IpAddr,
    /// The name the sender gave in HELO/EHLO.
    pub helo: String,
    /// The envelope sender (`MAIL FROM`), empty for bounces.
    pub mail_from: String,
}

/// Relaxed alignment without a public-suffix list: equal, or one is a subdomain of the
/// other (`mail.example.com` ~ `example.com`).
pub fn aligned(a: &str, b: &str) -> bool {
    let (a, b) = (host_name(a), host_name(b));
    !a.is_empty()
        && !b.is_empty()
        && (a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}")))
}

/// A mail-auth authenticator asking exactly these servers (the system's resolvers when
/// none are given), with no cache so every answer is fresh.
pub fn authenticator(
    servers: &[Server],
    timeout: Duration,
) -> Result<MessageAuthenticator, AuthenticateError> {
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 2;
    opts.cache_size = 0;
    opts.ndots = 0;
    opts.edns0 = true;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    let names = servers
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let fail = |e: &dyn std::fmt::Display| AuthenticateError::Resolver {
        servers: if names.is_empty() {
            "the system resolvers".into()
        } else {
            names.clone()
        },
        reason: e.to_string(),
    };
    if servers.is_empty() {
        let (config, _) =
            hickory_resolver::system_conf::read_system_conf().map_err(|e| fail(&e))?;
        return MessageAuthenticator::new(config, opts).map_err(|e| fail(&e));
    }
    let ns = servers
        .iter()
        .map(|s| {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.addr.port();
            NameServerConfig::new(s.addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    MessageAuthenticator::new(ResolverConfig::from_name_servers(ns), opts).map_err(|e| fail(&e))
}

fn dkim_verdict(r: &DkimResult) -> (Verdict, Option<String>) {
    match r {
        DkimResult::Pass => (Verdict::Pass, None),
        DkimResult::Neutral(e) => (Verdict::Neutral, Some(e.to_string())),
        DkimResult::Fail(e) => (Verdict::Fail, Some(e.to_string())),
        DkimResult::PermError(e) => (Verdict::PermError, Some(e.to_string())),
        DkimResult::TempError(e) => (Verdict::TempError, Some(e.to_string())),
        DkimResult::None => (Verdict::None, None),
    }
}

fn spf_verdict(r: SpfResult) -> Verdict {
    match r {
        SpfResult::Pass => Verdict::Pass,
        SpfResult::Fail => Verdict::Fail,
        SpfResult::SoftFail => Verdict::SoftFail,
        SpfResult::Neutral => Verdict::Neutral,
        SpfResult::TempError => Verdict::TempError,
        SpfResult::PermError => Verdict::PermError,
        SpfResult::None => Verdict::None,
    }
}

fn dmarc_verdict(r: &DmarcResult) -> Verdict {
    match r {
        DmarcResult::Pass => Verdict::Pass,
        DmarcResult::Fail(_) => Verdict::Fail,
        DmarcResult::TempError(_) => Verdict::TempError,
        DmarcResult::PermError(_) => Verdict::PermError,
        DmarcResult::None => Verdict::None,
    }
}

/// Authenticates `raw` as received from `from`, asking `servers` for keys and records.
pub async fn authenticate(
    servers: &[Server],
    timeout: Duration,
    raw: &[u8],
    from: &Handover,
) -> Result<Authentication, AuthenticateError> {
    let auth = authenticator(servers, timeout)?;
    // Each lookup is bounded by the resolver; this bounds the whole evaluation (SPF may
    // chain ten lookups, DKIM one per signature, DMARC a tree walk).
    let limit = timeout * 20;
    tokio::time::timeout(limit, run(&auth, raw, from))
        .await
        .map_err(|_| AuthenticateError::Timeout(limit))?
}

async fn run(
    auth: &MessageAuthenticator,
    raw: &[u8],
    from: &Handover,
) -> Result<Authentication, AuthenticateError> {
    let msg = AuthenticatedMessage::parse(raw).ok_or(AuthenticateError::Parse)?;
    let from_domain = msg
        .from
        .first()
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| host_name(d));
    let dkim_out = auth.verify_dkim(&msg).await;
    let dkim = dkim_out
        .iter()
        .map(|o| {
            let (result, reason) = dkim_verdict(o.result());
            let (domain, selector) = o
                .signature()
                .map(|s| (host_name(&s.d), s.s.clone()))
                .unwrap_or_default();
            DkimCheck {
                aligned: from_domain.as_deref().is_some_and(|f| aligned(&domain, f)),
                domain,
                selector,
                result,
                reason,
            }
        })
        .collect();
    let helo = host_name(&from.helo);
    let spf_out = auth
        .verify_spf(SpfParameters::verify_mail_from(
            from.ip,
            &helo,
            "mailshift.invalid",
            &from.mail_from,
        ))
        .await;
    let mail_from_domain = from
        .mail_from
        .rsplit_once('@')
        .map(|(_, d)| host_name(d))
        .unwrap_or_else(|| helo.clone());
    let spf_domain = host_name(spf_out.domain());
    let spf = SpfCheck {
        ip: from.ip,
        helo: helo.clone(),
        mail_from: from.mail_from.clone(),
        aligned: from_domain
            .as_deref()
            .is_some_and(|f| aligned(&spf_domain, f)),
        domain: spf_domain,
        result: spf_verdict(spf_out.result()),
    };
    let dmarc_out = auth
        .verify_dmarc(DmarcParameters::new(
            &msg,
            &dkim_out,
            &mail_from_domain,
            &spf_out,
        ))
        .await;
    let published = dmarc_out.dmarc_record().is_some();
    let dkim_v = dmarc_verdict(dmarc_out.dkim_result());
    let spf_v = dmarc_verdict(dmarc_out.spf_result());
    let result = if !published {
        // No record found, or the policy lookup itself failed (then both are temperror).
        if dkim_v == Verdict::TempError || spf_v == Verdict::TempError {
            Verdict::TempError
        } else {
            Verdict::None
        }
    } else if dkim_v == Verdict::Pass || spf_v == Verdict::Pass {
        Verdict::Pass
    } else if matches!(dkim_v, Verdict::TempError) || matches!(spf_v, Verdict::TempError) {
        Verdict::TempError
    } else {
        Verdict::Fail
    };
    let dmarc = DmarcCheck {
        from_domain: from_domain.clone().unwrap_or_default(),
        published,
        result,
        dkim: dkim_v,
        spf: spf_v,
        policy: published.then(|| {
            match dmarc_out.policy() {
                Policy::None | Policy::Unspecified => "none",
                Policy::Quarantine => "quarantine",
                Policy::Reject => "reject",
            }
            .to_string()
        }),
    };
    Ok(Authentication {
        from_domain,
        dkim,
        spf,
        dmarc,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_relaxed() {
        assert!(aligned("example.com", "EXAMPLE.com."));
        assert!(aligned("mail.example.com", "example.com"));
        assert!(aligned("example.com", "news.example.com"));
        assert!(!aligned("provider.net", "example.com"));
        assert!(!aligned("badexample.com", "example.com"));
        assert!(!aligned("", "example.com"));
    }

    #[test]
    fn verdicts_parse_from_header_tokens() {
        assert_eq!(Verdict::parse("PASS"), Some(Verdict::Pass));
        assert_eq!(Verdict::parse("hardfail"), Some(Verdict::Fail));
        assert_eq!(Verdict::parse("temperror"), Some(Verdict::TempError));
        assert_eq!(Verdict::parse("bogus"), None);
    }
}
