//! SPF, DKIM and DMARC readiness: the records are parsed with mail-auth (the parser
//! a real MTA uses), then judged for a switch to a new provider. SPF includes are
//! followed through DNS within the RFC 7208 limit of 10 lookups.

use crate::lookup::{Dns, Failure, Server, host_name};
use base64::Engine;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::{Dmarc, Policy};
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};
use mailshift_core::cutover::Finding;

/// RFC 7208 4.6.4: at most 10 mechanisms/modifiers that cause DNS lookups.
pub const SPF_LOOKUP_LIMIT: usize = 10;

/// The first answer any of the servers gives for a TXT name (the next server is asked
/// only when one fails to answer at all).
pub async fn txt_any(dns: &Dns, servers: &[Server], name: &str) -> Result<Vec<String>, Failure> {
    let mut last = Failure::Other("no resolver to ask".into());
    for s in servers {
        match dns.txt(s, name).await {
            Ok(a) => return Ok(a.records),
            Err(e @ (Failure::NxDomain | Failure::NoData)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn is_spf(txt: &str) -> bool {
    let t = txt.trim_start();
    t.len() >= 6
        && t[..6].eq_ignore_ascii_case("v=spf1")
        && t[6..].chars().next().is_none_or(|c| c == ' ')
}

fn literal(m: &Macro) -> Option<String> {
    match m {
        Macro::Literal(b) => Some(host_name(&String::from_utf8_lossy(b))),
        _ => None,
    }
}

/// What walking an SPF tree found.
#[derive(Default, Debug)]
struct Walk {
    lookups: usize,
    includes: Vec<String>,
    problems: Vec<String>,
}

/// Counts lookups and collects included domains, depth first, in evaluation order.
async fn walk(dns: &Dns, servers: &[Server], spf: &Spf, out: &mut Walk, depth: usize) {
    let mut follow = Vec::new();
    for d in spf.directives.iter() {
        match &d.mechanism {
            Mechanism::Include { macro_string } => {
                out.lookups += 1;
                if let Some(dom) = literal(macro_string) {
                    follow.push(dom);
                }
            }
            Mechanism::A { .. }
            | Mechanism::Mx { .. }
            | Mechanism::Ptr { .. }
            | Mechanism::Exists { .. } => out.lookups += 1,
            _ => {}
        }
    }
    if let Some(r) = &spf.redirect {
        out.lookups += 1;
        if let Some(dom) = literal(r) {
            follow.push(dom);
        }
    }
    for dom in follow {
        out.includes.push(dom.clone());
        if depth >= 10 || out.lookups > SPF_LOOKUP_LIMIT {
            continue;
        }
        match txt_any(dns, servers, &dom).await {
            Ok(txts) => {
                let spfs: Vec<&String> = txts.iter().filter(|t| is_spf(t)).collect();
                match spfs.as_slice() {
                    [one] => match Spf::parse(one.as_bytes()) {
                        Ok(inner) => Box::pin(walk(dns, servers, &inner, out, depth + 1)).await,
                        Err(e) => out
                            .problems
                            .push(format!("the SPF record of {dom} does not parse ({e})")),
                    },
                    [] => out
                        .problems
                        .push(format!("{dom} (included) has no SPF record")),
                    _ => out
                        .problems
                        .push(format!("{dom} (included) has {} SPF records", spfs.len())),
                }
            }
            Err(e) => out.problems.push(format!("{dom} (included): {e}")),
        }
    }
}

/// SPF of `domain`: one record, valid, not `+all`, within 10 lookups, and (when
/// given) authorising the new provider's include.
pub async fn check_spf(
    dns: &Dns,
    servers: &[Server],
    domain: &str,
    new_include: Option<&str>,
) -> Vec<Finding> {
    let txts = match txt_any(dns, servers, domain).await {
        Ok(t) => t,
        Err(Failure::NxDomain | Failure::NoData) => Vec::new(),
        Err(e) => {
            return vec![Finding::error(
                "spf",
                format!("cannot read the TXT records of {domain}: {e}"),
                "check that the resolvers answer, then run the check again",
            )];
        }
    };
    let spfs: Vec<&String> = txts.iter().filter(|t| is_spf(t)).collect();
    let suggestion = new_include.map_or_else(
        || "v=spf1 include:<new provider> ~all".to_string(),
        |i| format!("v=spf1 include:{i} ~all"),
    );
    let record = match spfs.as_slice() {
        [] => {
            return vec![Finding::error(
                "spf",
                format!(
                    "{domain} publishes no SPF record: receivers cannot tell legitimate mail from forgeries"
                ),
                format!("publish one TXT record at {domain}: `{suggestion}`"),
            )];
        }
        [one] => one.as_str(),
        many => {
            return vec![Finding::error(
                "spf",
                format!(
                    "{domain} publishes {} SPF records; receivers treat that as a permanent error \
                     (RFC 7208 3.2), so SPF fails for all its mail",
                    many.len()
                ),
                "merge them into a single `v=spf1 ...` TXT record",
            )];
        }
    };
    let spf = match Spf::parse(record.as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            return vec![Finding::error(
                "spf",
                format!("the SPF record of {domain} does not parse ({e}): `{record}`"),
                format!("fix its syntax, e.g. `{suggestion}`"),
            )];
        }
    };
    let mut out = Vec::new();
    let all = spf
        .directives
        .iter()
        .find(|d| d.mechanism == Mechanism::All);
    match all.map(|d| &d.qualifier) {
        Some(Qualifier::Pass) => out.push(Finding::error(
            "spf",
            format!("the SPF record of {domain} ends in `+all`: it authorises every server on the Internet"),
            "end it with `~all` or `-all`",
        )),
        None if spf.redirect.is_none() => out.push(Finding::warn(
            "spf",
            format!("the SPF record of {domain} has no `all`: unlisted senders get a neutral result"),
            "end it with `~all` or `-all`",
        )),
        _ => {}
    }
    let mut w = Walk::default();
    walk(dns, servers, &spf, &mut w, 0).await;
    if w.lookups > SPF_LOOKUP_LIMIT {
        out.push(Finding::error(
            "spf",
            format!(
                "the SPF record of {domain} needs {} DNS lookups; the limit is {SPF_LOOKUP_LIMIT}, \
                 beyond which receivers return a permanent error",
                w.lookups
            ),
            "flatten includes or drop unused ones to stay within 10 lookups",
        ));
    }
    for p in &w.problems {
        out.push(Finding::error(
            "spf",
            format!("SPF of {domain}: {p} (receivers return a permanent error)"),
            "fix or remove that include",
        ));
    }
    match new_include.map(host_name) {
        Some(inc) if w.includes.contains(&inc) => out.push(Finding::ok(
            "spf",
            format!("SPF of {domain} authorises the new provider (include:{inc}); {} DNS lookup(s)", w.lookups),
        )),
        Some(inc) => out.push(Finding::error(
            "spf",
            format!(
                "SPF of {domain} does not authorise the new provider: no include:{inc} (record: `{record}`)"
            ),
            format!("add `include:{inc}` before the `all`, before the switch"),
        )),
        None => out.push(Finding::ok(
            "spf",
            format!(
                "SPF of {domain} is valid ({} DNS lookup(s)); pass --spf-include to check it authorises the new provider",
                w.lookups
            ),
        )),
    }
    out
}

/// The size in bits of a DKIM public key (`p=`), RSA (SubjectPublicKeyInfo or
/// PKCS#1) or Ed25519.
pub fn dkim_key_bits(record: &str) -> Option<(String, usize)> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let mut k = "rsa".to_string();
    let mut p = None;
    for tag in record.split(';') {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        match name.trim() {
            "k" => k = value.trim().to_ascii_lowercase(),
            "p" => {
                p = Some(
                    value
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect::<String>(),
                )
            }
            _ => {}
        }
    }
    let der = base64::engine::general_purpose::STANDARD.decode(p?).ok()?;
    if k == "ed25519" {
        return Some(("Ed25519".into(), der.len() * 8));
    }
    let key = rsa::RsaPublicKey::from_public_key_der(&der)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&der))
        .ok()?;
    Some(("RSA".into(), key.n().bits()))
}

/// A DKIM public key at `selector._domainkey.domain`: present, parseable, strong enough.
pub async fn check_dkim(dns: &Dns, servers: &[Server], domain: &str, selector: &str) -> Finding {
    let check = format!("dkim:{selector}");
    let name = format!("{selector}._domainkey.{domain}");
    let txts = match txt_any(dns, servers, &name).await {
        Ok(t) => t,
        Err(Failure::NxDomain | Failure::NoData) => {
            return Finding::error(
                check,
                format!(
                    "no DKIM key published at {name}: mail signed by the new provider will fail DKIM"
                ),
                format!("publish the new provider's public key as a TXT record at {name}"),
            );
        }
        Err(e) => {
            return Finding::error(
                check,
                format!("cannot read {name}: {e}"),
                "check the resolvers and run the check again",
            );
        }
    };
    let Some(record) = txts.iter().find(|t| t.contains("p=")) else {
        return Finding::error(
            check,
            format!("{name} has TXT records but no DKIM key (no `p=` tag)"),
            format!("publish `v=DKIM1; k=rsa; p=<base64 key>` at {name}"),
        );
    };
    if let Err(e) = DomainKey::parse(record.as_bytes()) {
        return Finding::error(
            check,
            format!("the DKIM record at {name} is not a usable key ({e})"),
            format!("re-publish the key exactly as the new provider gives it at {name}"),
        );
    }
    match dkim_key_bits(record) {
        Some((kind, bits)) if kind == "RSA" && bits < 1024 => Finding::error(
            check,
            format!(
                "the DKIM key at {name} is RSA {bits} bits: receivers ignore keys under 1024 bits"
            ),
            "publish a 2048-bit RSA key",
        ),
        Some((kind, bits)) if kind == "RSA" && bits < 2048 => Finding::warn(
            check,
            format!("the DKIM key at {name} is RSA {bits} bits: valid but weak"),
            "rotate to a 2048-bit RSA key",
        ),
        Some((kind, bits)) => Finding::ok(check, format!("DKIM key at {name}: {kind} {bits} bits")),
        None => Finding::ok(check, format!("DKIM key at {name} parses")),
    }
}

/// `_dmarc.domain`: one valid record; policy and report address reported.
pub async fn check_dmarc(dns: &Dns, servers: &[Server], domain: &str) -> Finding {
    let name = format!("_dmarc.{domain}");
    let txts = match txt_any(dns, servers, &name).await {
        Ok(t) => t,
        Err(Failure::NxDomain | Failure::NoData) => Vec::new(),
        Err(e) => {
            return Finding::error(
                "dmarc",
                format!("cannot read {name}: {e}"),
                "check the resolvers and run the check again",
            );
        }
    };
    let records: Vec<&String> = txts
        .iter()
        .filter(|t| t.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
        .collect();
    let record = match records.as_slice() {
        [] => {
            return Finding::warn(
                "dmarc",
                format!("{domain} publishes no DMARC record at {name}"),
                format!(
                    "publish `v=DMARC1; p=none; rua=mailto:dmarc@{domain}` at {name} to monitor first"
                ),
            );
        }
        [one] => one.as_str(),
        many => {
            return Finding::error(
                "dmarc",
                format!(
                    "{name} has {} DMARC records; receivers then ignore DMARC (RFC 7489 6.6.3)",
                    many.len()
                ),
                "keep exactly one `v=DMARC1` record",
            );
        }
    };
    let dmarc = match Dmarc::parse(record.as_bytes()) {
        Ok(d) => d,
        Err(e) => {
            return Finding::error(
                "dmarc",
                format!("the DMARC record at {name} is invalid ({e}): `{record}`"),
                format!("fix it, e.g. `v=DMARC1; p=none; rua=mailto:dmarc@{domain}`"),
            );
        }
    };
    let policy = match dmarc.p {
        Policy::None => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
        Policy::Unspecified => {
            return Finding::error(
                "dmarc",
                format!("the DMARC record at {name} has no valid `p=` policy: `{record}`"),
                "set `p=none`, `p=quarantine` or `p=reject`",
            );
        }
    };
    let rua: Vec<&str> = dmarc.rua.iter().map(|u| u.uri.as_str()).collect();
    let rua = if rua.is_empty() {
        "no aggregate reports (rua)".to_string()
    } else {
        format!("reports to {}", rua.join(", "))
    };
    Finding::ok("dmarc", format!("DMARC policy {policy}, {rua}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spf_records_are_recognised_by_their_version_tag() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=abc"));
    }

    #[test]
    fn dkim_key_sizes_are_read_from_spki_keys() {
        // A 1024-bit RSA key in SubjectPublicKeyInfo form (openssl rsa -pubout -outform DER).
        let p = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQD2ETLJ4JSuaib5bX365kLtlJRVt+HonJRHjWNU/PJghusOrmyE8Go413pDxemsZHkUXStXKX3CNIHGU4RDcmrihRJ7OvvWzCY/RkCtUS48ye+YR9U9HHT+zSqYTnuDepK2fans0DTTf4Ko+H20mAw2QrzbJuD4CyMdlQDbxo39+wIDAQAB";
        assert_eq!(
            dkim_key_bits(&format!("v=DKIM1; k=rsa; p={p}")),
            Some(("RSA".into(), 1024))
        );
        assert_eq!(dkim_key_bits("v=DKIM1; p=!!"), None);
    }
}
