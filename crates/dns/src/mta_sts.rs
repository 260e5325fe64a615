//! MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): the records that make senders refuse to
//! deliver to an MX a domain's policy does not list. Owns the `_mta-sts` TXT record, the
//! policy file fetched over HTTPS from `mta-sts.DOMAIN` (resolved through the configured
//! nameservers, certificates verified, short timeout, size cap), its parsing and MX
//! patterns, and the judgement against the new MX and the switch time.

use crate::lookup::{Dns, Failure, Server, host_name};
use crate::records::txt_any;
use chrono::{DateTime, Duration as ChronoDuration, FixedOffset};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{MtaSts, ReportUri, TlsRpt};
use mailshift_core::cutover::{Finding, stamp};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// RFC 8461 3.3: senders should not accept policies larger than 64 KiB.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// RFC 8461 3.2: `max_age` is at most one year.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// How a policy asks senders to behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse to deliver to an MX that is not listed or has no valid certificate.
    Enforce,
    /// Deliver anyway, but report failures (TLS-RPT).
    Testing,
    /// No policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub mode: Mode,
    /// MX patterns: host names, or `*.example.com` for any one label.
    pub mx: Vec<String>,
    /// Seconds senders may cache the policy.
    pub max_age: u64,
}

/// Parses a policy file (RFC 8461 3.2): `key: value` lines, CRLF or LF.
pub fn parse_policy(body: &str) -> Result<Policy, String> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line `{}` is not `key: value`", line.trim()));
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "version" => version = Some(value.to_string()),
            "mode" => {
                mode = Some(match value.to_ascii_lowercase().as_str() {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("unknown mode `{other}`")),
                })
            }
            "max_age" => {
                max_age = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("max_age `{value}` is not a number of seconds"))?,
                )
            }
            "mx" => mx.push(host_name(value)),
            // Unknown keys are ignored (extensions).
            _ => {}
        }
    }
    match version.as_deref() {
        Some("STSv1") => {}
        Some(v) => return Err(format!("version `{v}` is not STSv1")),
        None => return Err("no `version: STSv1` line".into()),
    }
    let mode = mode.ok_or("no `mode` line")?;
    let max_age = max_age.ok_or("no `max_age` line")?;
    if max_age > MAX_AGE_LIMIT {
        return Err(format!(
            "max_age {max_age} is above the limit of {MAX_AGE_LIMIT} s (one year)"
        ));
    }
    if mx.is_empty() && mode != Mode::None {
        return Err("no `mx` line: no MX can be valid under this policy".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// Whether an MX host matches a policy pattern (RFC 8461 4.1): equal, or `*.` followed
/// by the host's parent, the wildcard standing for exactly one label.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (host_name(pattern), host_name(host));
    match p.strip_prefix("*.") {
        Some(parent) => h
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => p == h,
    }
}

/// `3 d 4 h`, `2 h`, `45 min`: a human length for a number of seconds.
pub fn human_secs(s: u64) -> String {
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, _) => format!("{h} h"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// Judges a fetched policy against the new MX and the switch time.
pub fn judge_policy(
    domain: &str,
    id: &str,
    url: &str,
    policy: &Policy,
    new_mx: &str,
    switch_at: Option<DateTime<FixedOffset>>,
    now: DateTime<FixedOffset>,
) -> Vec<Finding> {
    let new_mx = host_name(new_mx);
    let age = human_secs(policy.max_age);
    if policy.mode == Mode::None {
        return vec![Finding::ok(
            "mta-sts",
            format!(
                "the MTA-STS policy of {domain} is in mode none (id {id}): senders enforce nothing"
            ),
        )];
    }
    if let Some(p) = policy.mx.iter().find(|p| mx_matches(p, &new_mx)) {
        return vec![Finding::ok(
            "mta-sts",
            format!(
                "the MTA-STS policy of {domain} (mode {}, max_age {age}, id {id}) lists the new MX {new_mx} (mx: {p})",
                policy.mode.as_str()
            ),
        )];
    }
    let listed = policy.mx.join(", ");
    let effect = match policy.mode {
        Mode::Enforce => format!(
            "senders that apply MTA-STS will refuse to deliver to {new_mx}, silently, for up to \
             max_age ({age}) after they last fetched the policy"
        ),
        _ => format!(
            "senders deliver anyway but report every message as a policy failure, and the \
             day the mode becomes enforce they refuse {new_mx} for up to max_age ({age})"
        ),
    };
    let deadline = switch_at.map(|s| s - ChronoDuration::seconds(policy.max_age as i64));
    let when = match (switch_at, deadline) {
        (Some(s), Some(d)) if d > now => format!(
            "at least max_age ({age}) before the switch at {}: by {}",
            stamp(s),
            stamp(d)
        ),
        (Some(s), Some(_)) => format!(
            "now: the switch at {} is less than max_age ({age}) away, so senders that cached \
             the old policy may refuse mail for up to {age} after it; lower max_age or delay the switch",
            stamp(s)
        ),
        _ => format!("at least max_age ({age}) before the switch (give --switch-at for the date)"),
    };
    vec![Finding::error(
        "mta-sts",
        format!(
            "the MTA-STS policy of {domain} (mode {}, id {id}) does not list the new MX {new_mx} \
             (mx: {listed}): {effect}",
            policy.mode.as_str()
        ),
        format!(
            "add `mx: {new_mx}` to {url} and change the `id=` of the TXT record _mta-sts.{domain}, {when}"
        ),
    )]
}

/// Where and how the policy is fetched.
#[derive(Clone, Debug)]
pub struct Fetch {
    /// An extra CA certificate (PEM) to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// HTTPS port of the policy host (443; tests serve elsewhere).
    pub port: u16,
    /// The whole fetch, connection included.
    pub timeout: Duration,
}

impl Default for Fetch {
    fn default() -> Fetch {
        Fetch {
            ca_file: None,
            port: 443,
            timeout: Duration::from_secs(10),
        }
    }
}

impl Fetch {
    /// The policy URL of a domain.
    pub fn url(&self, domain: &str) -> String {
        if self.port == 443 {
            format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
        } else {
            format!(
                "https://mta-sts.{domain}:{}/.well-known/mta-sts.txt",
                self.port
            )
        }
    }
}

/// A fetched policy body with its media type.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub body: String,
    pub content_type: Option<String>,
}

fn tls_config(ca_file: Option<&PathBuf>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A broken system certificate must not stop the others from working.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "the CA file {} holds no PEM certificate",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The full error chain of an HTTP failure (reqwest's top message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// Fetches the policy of `domain`: `mta-sts.DOMAIN` resolved through `servers`, the
/// certificate verified, no redirects (RFC 8461 3.3), at most [`MAX_POLICY_BYTES`],
/// all within `fetch.timeout`.
pub async fn fetch_policy(
    dns: &Dns,
    servers: &[Server],
    domain: &str,
    fetch: &Fetch,
) -> Result<Fetched, String> {
    let host = format!("mta-sts.{domain}");
    let mut addrs = None;
    let mut last = Failure::Other("no resolver to ask".into());
    for s in servers {
        match dns.ips(s, &host).await {
            Ok(a) => {
                addrs = Some(a.records);
                break;
            }
            Err(e @ (Failure::NxDomain | Failure::NoData)) => {
                last = e;
                break;
            }
            Err(e) => last = e,
        }
    }
    let Some(ips) = addrs else {
        return Err(format!("{host} has no address: {last}"));
    };
    let addrs: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, fetch.port))
        .collect();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(fetch.ca_file.as_ref())?)
        .resolve_to_addrs(&host, &addrs)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(fetch.timeout)
        .timeout(fetch.timeout)
        .build()
        .map_err(|e| chain(&e))?;
    let url = fetch.url(domain);
    let get = async {
        let mut resp = client.get(&url).send().await.map_err(|e| chain(&e))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(format!(
                "HTTP {status}: a redirect, which senders must not follow (RFC 8461 3.3)"
            ));
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_POLICY_BYTES {
                return Err(format!(
                    "the policy is larger than {} KiB, which senders refuse",
                    MAX_POLICY_BYTES / 1024
                ));
            }
        }
        let body = String::from_utf8(body).map_err(|_| "the policy is not UTF-8 text")?;
        Ok(Fetched { body, content_type })
    };
    // reqwest's timeout covers the request; this also bounds the body loop.
    tokio::time::timeout(fetch.timeout + Duration::from_secs(1), get)
        .await
        .map_err(|_| format!("no complete answer within {:?}", fetch.timeout))?
}

/// `_mta-sts.DOMAIN` and the policy it announces, judged against the new MX.
pub async fn check_mta_sts(
    dns: &Dns,
    servers: &[Server],
    domain: &str,
    new_mx: &str,
    fetch: &Fetch,
    switch_at: Option<DateTime<FixedOffset>>,
    now: DateTime<FixedOffset>,
) -> Vec<Finding> {
    let name = format!("_mta-sts.{domain}");
    let txts = match txt_any(dns, servers, &name).await {
        Ok(t) => t,
        Err(Failure::NxDomain | Failure::NoData) => Vec::new(),
        Err(e) => {
            return vec![Finding::warn(
                "mta-sts",
                format!("cannot read {name}: {e}"),
                "check the resolvers and run the check again",
            )];
        }
    };
    let records: Vec<&String> = txts
        .iter()
        .filter(|t| t.trim_start().to_ascii_lowercase().starts_with("v=stsv1"))
        .collect();
    let record = match records.as_slice() {
        [] => {
            return vec![Finding::ok(
                "mta-sts",
                format!(
                    "{domain} publishes no MTA-STS policy ({name}): senders do not require TLS to its MX"
                ),
            )];
        }
        [one] => one.as_str(),
        many => {
            return vec![Finding::warn(
                "mta-sts",
                format!(
                    "{name} has {} MTA-STS records: senders treat that as no policy (RFC 8461 3.1), \
                     but those that cached one keep applying it",
                    many.len()
                ),
                "keep exactly one `v=STSv1; id=...` record",
            )];
        }
    };
    let id = match MtaSts::parse(record.as_bytes()) {
        Ok(m) => m.id,
        Err(e) => {
            return vec![Finding::warn(
                "mta-sts",
                format!("the MTA-STS record at {name} is invalid ({e}): `{record}`"),
                format!("publish `v=STSv1; id=YYYYMMDDNN` at {name}"),
            )];
        }
    };
    let url = fetch.url(domain);
    let fetched = match fetch_policy(dns, servers, domain, fetch).await {
        Ok(f) => f,
        Err(e) => {
            return vec![Finding::warn(
                "mta-sts",
                format!(
                    "{name} announces an MTA-STS policy (id {id}) but {url} cannot be fetched ({e}): \
                     senders that cached the policy keep applying it for up to its max_age, so \
                     whether the new MX is listed cannot be checked"
                ),
                format!(
                    "serve the policy at {url} (valid certificate for mta-sts.{domain}, text/plain) \
                     listing the new MX, or remove {name} and the policy together"
                ),
            )];
        }
    };
    let mut out = Vec::new();
    let text_plain = fetched.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/plain"))
    });
    if !text_plain {
        out.push(Finding::warn(
            "mta-sts",
            format!(
                "{url} is served as {} instead of text/plain: senders may ignore the policy",
                fetched.content_type.as_deref().unwrap_or("no media type")
            ),
            "serve the policy file with `Content-Type: text/plain`",
        ));
    }
    match parse_policy(&fetched.body) {
        Ok(p) => out.extend(judge_policy(domain, &id, &url, &p, new_mx, switch_at, now)),
        Err(e) => out.push(Finding::warn(
            "mta-sts",
            format!(
                "the MTA-STS policy at {url} is invalid ({e}): senders ignore it, except those \
                 that cached an earlier valid one"
            ),
            "fix the policy file (version: STSv1, mode, mx, max_age lines) and change the id",
        )),
    }
    out
}

/// `_smtp._tls.DOMAIN` (TLS-RPT, RFC 8460): where senders report TLS failures.
pub async fn check_tls_rpt(dns: &Dns, servers: &[Server], domain: &str) -> Finding {
    let name = format!("_smtp._tls.{domain}");
    let txts = match txt_any(dns, servers, &name).await {
        Ok(t) => t,
        Err(Failure::NxDomain | Failure::NoData) => Vec::new(),
        Err(e) => {
            return Finding::warn(
                "tls-rpt",
                format!("cannot read {name}: {e}"),
                "check the resolvers and run the check again",
            );
        }
    };
    let records: Vec<&String> = txts
        .iter()
        .filter(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("v=tlsrptv1")
        })
        .collect();
    match records.as_slice() {
        [] => Finding::ok(
            "tls-rpt",
            format!(
                "no TLS-RPT record at {name} (optional): senders do not report TLS failures to the new MX"
            ),
        ),
        [one] => match TlsRpt::parse(one.as_bytes()) {
            Ok(r) if !r.rua.is_empty() => {
                let to = r
                    .rua
                    .iter()
                    .map(|u| match u {
                        ReportUri::Mail(m) => format!("mailto:{m}"),
                        ReportUri::Http(h) => h.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                Finding::ok("tls-rpt", format!("TLS-RPT reports go to {to}"))
            }
            Ok(_) => Finding::warn(
                "tls-rpt",
                format!("the TLS-RPT record at {name} has no report address (rua): `{one}`"),
                format!("publish `v=TLSRPTv1; rua=mailto:tls-reports@{domain}`"),
            ),
            Err(e) => Finding::warn(
                "tls-rpt",
                format!("the TLS-RPT record at {name} is invalid ({e}): `{one}`"),
                format!("publish `v=TLSRPTv1; rua=mailto:tls-reports@{domain}`"),
            ),
        },
        many => Finding::warn(
            "tls-rpt",
            format!(
                "{name} has {} TLS-RPT records: senders ignore them all (RFC 8460 3)",
                many.len()
            ),
            "keep exactly one `v=TLSRPTv1; rua=...` record",
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mailshift_core::cutover::Level;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn policies_parse_with_crlf_or_lf_and_reject_what_senders_reject() {
        let p = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: MX1.Example.com\r\nmx: *.mail.example.net\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, vec!["mx1.example.com", "*.mail.example.net"]);
        assert_eq!(p.max_age, 604_800);
        let lf = parse_policy(
            "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 86400\nextension: x\n",
        )
        .unwrap();
        assert_eq!(lf.mode, Mode::Testing);
        assert!(parse_policy("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1").is_err());
        assert!(parse_policy("version: STSv1\nmode: strict\nmx: a\nmax_age: 1").is_err());
        assert!(parse_policy("version: STSv1\nmode: enforce\nmax_age: 1").is_err());
        assert!(
            parse_policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999").is_err()
        );
        assert!(parse_policy("<html>not a policy</html>").is_err());
        assert!(parse_policy("version: STSv1\nmode: none\nmax_age: 86400").is_ok());
    }

    #[test]
    fn wildcards_stand_for_exactly_one_label() {
        assert!(mx_matches("mx.new.example", "MX.new.example."));
        assert!(mx_matches("*.new.example", "mx1.new.example"));
        assert!(!mx_matches("*.new.example", "new.example"));
        assert!(!mx_matches("*.new.example", "a.b.new.example"));
        assert!(!mx_matches("mx.new.example", "mx.old.example"));
    }

    #[test]
    fn an_enforced_policy_without_the_new_mx_is_an_error_with_a_deadline() {
        let p = Policy {
            mode: Mode::Enforce,
            mx: vec!["mx.old.example".into()],
            max_age: 7 * 86_400,
        };
        let now = t("2026-11-20T10:00:00+01:00");
        let f = judge_policy(
            "example.com",
            "2026",
            "https://mta-sts.example.com/.well-known/mta-sts.txt",
            &p,
            "mta.new.example",
            Some(t("2026-12-05T06:00:00+01:00")),
            now,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Error);
        assert!(
            f[0].message
                .contains("refuse to deliver to mta.new.example"),
            "{f:?}"
        );
        let fix = f[0].fix.as_deref().unwrap();
        assert!(fix.contains("add `mx: mta.new.example`"), "{fix}");
        assert!(fix.contains("by 2026-11-28 06:00 +01:00"), "{fix}");
        // Too late for the whole max_age: said so.
        let late = judge_policy(
            "example.com",
            "2026",
            "u",
            &p,
            "mta.new.example",
            Some(t("2026-11-22T06:00:00+01:00")),
            now,
        );
        assert!(
            late[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("less than max_age")
        );
        // Testing mode is an error too (reports now, refusals once enforced).
        let testing = Policy {
            mode: Mode::Testing,
            ..p.clone()
        };
        let f = judge_policy(
            "example.com",
            "1",
            "u",
            &testing,
            "mta.new.example",
            None,
            now,
        );
        assert_eq!(f[0].level, Level::Error);
        // Listed (by wildcard): ok. Mode none: ok.
        let listed = Policy {
            mx: vec!["mx.old.example".into(), "*.new.example".into()],
            ..p.clone()
        };
        let f = judge_policy(
            "example.com",
            "1",
            "u",
            &listed,
            "mta.new.example",
            None,
            now,
        );
        assert_eq!(f[0].level, Level::Ok);
        let none = Policy {
            mode: Mode::None,
            ..p
        };
        let f = judge_policy("example.com", "1", "u", &none, "mta.new.example", None, now);
        assert_eq!(f[0].level, Level::Ok);
    }

    #[test]
    fn ages_read_as_humans_say_them() {
        assert_eq!(human_secs(604_800), "7 d");
        assert_eq!(human_secs(90_000), "1 d 1 h");
        assert_eq!(human_secs(7200), "2 h");
        assert_eq!(human_secs(300), "5 min");
        assert_eq!(human_secs(42), "42 s");
    }
}
