//! What a receiver concludes, turned into findings an operator can act on: DKIM (valid,
//! aligned with From), SPF (the handing-over address authorised), DMARC, the receiving
//! server's own Authentication-Results, and where and when the probe arrived. Pure.

use crate::authres::AuthResults;
use mailshift_core::cutover::Finding;
use mailshift_dns::authenticate::{Authentication, DkimCheck, Verdict};
use std::time::Duration;

/// `2.4 s`, `85 ms`.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn dkim_failure(c: &DkimCheck, from: &str) -> Finding {
    let key = format!("{}._domainkey.{}", c.selector, c.domain);
    let reason = c.reason.as_deref().unwrap_or("no reason given");
    let body_changed = reason.to_ascii_lowercase().contains("body hash");
    match c.result {
        Verdict::Fail if body_changed => Finding::error(
            "dkim",
            format!(
                "the DKIM signature d={} s={} fails: the body was changed after signing ({reason})",
                c.domain, c.selector
            ),
            "find what rewrites the body after the signing step (footer, disclaimer, content filter) and sign after it",
        ),
        Verdict::Fail => Finding::error(
            "dkim",
            format!(
                "the DKIM signature d={} s={} does not verify with the key published at {key} \
                 ({reason}): the key in DNS is not the one the new server signs with",
                c.domain, c.selector
            ),
            format!(
                "publish the new provider's current public key at {key} (or fix its signing key), then test again"
            ),
        ),
        Verdict::PermError | Verdict::Neutral => Finding::error(
            "dkim",
            format!(
                "the DKIM signature d={} s={} cannot be checked ({reason}): receivers treat the message as unsigned",
                c.domain, c.selector
            ),
            format!(
                "publish a valid key at {key} (`v=DKIM1; k=rsa; p=...`) for the From domain {from}"
            ),
        ),
        Verdict::TempError => Finding::warn(
            "dkim",
            format!("the DKIM key at {key} could not be fetched ({reason}); receivers retry later"),
            "check that the nameservers answer for the key, then test again",
        ),
        _ => Finding::error(
            "dkim",
            format!(
                "the DKIM signature d={} s={} gave {}",
                c.domain,
                c.selector,
                c.result.as_str()
            ),
            format!("check the key at {key}"),
        ),
    }
}

/// DKIM, SPF and DMARC as computed from DNS, and the receiver's own results.
pub fn judge_authentication(
    domain: &str,
    auth: &Authentication,
    handover: &str,
    receiver: &[AuthResults],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let from = auth
        .from_domain
        .clone()
        .unwrap_or_else(|| domain.to_string());
    if auth.from_domain.as_deref().is_some_and(|f| f != domain) {
        out.push(Finding::warn(
            "from",
            format!(
                "the probe's From domain is {from}, not {domain}: the checks below are about {from}"
            ),
            format!("send the probe as an address of {domain} (--from)"),
        ));
    }

    // DKIM: one aligned, valid signature is what DMARC (and forwarded mail) needs.
    let aligned_pass: Vec<&DkimCheck> = auth
        .dkim
        .iter()
        .filter(|c| c.result == Verdict::Pass && c.aligned)
        .collect();
    if auth.dkim.is_empty() {
        out.push(Finding::error(
            "dkim",
            format!("the probe carries no DKIM signature: the new server does not sign mail from {from}"),
            format!(
                "enable DKIM signing for {from} at the new provider and publish its key (check with `dns check --dkim-selector`)"
            ),
        ));
    } else if let Some(ok) = aligned_pass.first() {
        out.push(Finding::ok(
            "dkim",
            format!(
                "DKIM signature d={} s={} is valid and aligned with the From domain {from}",
                ok.domain, ok.selector
            ),
        ));
        for c in auth.dkim.iter().filter(|c| c.result != Verdict::Pass) {
            let mut f = dkim_failure(c, &from);
            f.level = mailshift_core::cutover::Level::Warn;
            out.push(f);
        }
    } else {
        for c in &auth.dkim {
            if c.result == Verdict::Pass {
                out.push(Finding::error(
                    "dkim",
                    format!(
                        "the DKIM signature is valid but signed by d={}, which is not aligned with the \
                         From domain {from}: DMARC then rests on SPF alone, which forwarding breaks",
                        c.domain
                    ),
                    format!(
                        "have the new provider sign mail from {from} with d={from} (a key of its own \
                         published at SELECTOR._domainkey.{from})"
                    ),
                ));
            } else {
                out.push(dkim_failure(c, &from));
            }
        }
    }

    // SPF: the address that hands the message to receivers must be authorised.
    let s = &auth.spf;
    let who = if s.mail_from.is_empty() {
        format!("HELO {}", s.helo)
    } else {
        format!("MAIL FROM {}", s.mail_from)
    };
    match s.result {
        Verdict::Pass if s.aligned => out.push(Finding::ok(
            "spf",
            format!("SPF of {} passes for {} ({handover}); {who}", s.domain, s.ip),
        )),
        Verdict::Pass => out.push(Finding::warn(
            "spf",
            format!(
                "SPF passes for {} but for the domain {} ({who}), not aligned with the From domain {from}",
                s.ip, s.domain
            ),
            format!("fine if DKIM is aligned; to align SPF too, use a bounce address of {from}"),
        )),
        Verdict::Fail | Verdict::SoftFail => out.push(Finding::error(
            "spf",
            format!(
                "SPF of {} does not authorise {} ({handover}): result {}; {who}",
                s.domain,
                s.ip,
                s.result.as_str()
            ),
            format!(
                "add the new provider to the SPF record of {} (its include, or ip4:/ip6:{}) before the switch",
                s.domain, s.ip
            ),
        )),
        Verdict::None => out.push(Finding::error(
            "spf",
            format!("{} publishes no SPF record ({who}, sent from {})", s.domain, s.ip),
            format!("publish `v=spf1 include:<new provider> ~all` at {}", s.domain),
        )),
        Verdict::PermError => out.push(Finding::error(
            "spf",
            format!(
                "the SPF record of {} is broken (permerror): receivers treat SPF as failed",
                s.domain
            ),
            format!("run `mailshift dns check {}` and fix the SPF findings", s.domain),
        )),
        Verdict::Neutral | Verdict::TempError => out.push(Finding::warn(
            "spf",
            format!(
                "SPF of {} gives {} for {} ({handover})",
                s.domain,
                s.result.as_str(),
                s.ip
            ),
            "authorise the new provider explicitly in SPF and test again",
        )),
    }

    // DMARC: the verdict that decides inbox, spam or reject.
    let d = &auth.dmarc;
    let policy = d.policy.as_deref().unwrap_or("none");
    if !d.published && d.result == Verdict::TempError {
        out.push(Finding::warn(
            "dmarc",
            format!(
                "the DMARC policy of {from} could not be looked up (a DNS query for _dmarc.{from} or \
                 a parent domain failed): receivers that see the same failure defer or judge alone"
            ),
            "check that the nameservers answer for _dmarc and its parent domains, then test again",
        ));
    } else if !d.published {
        out.push(Finding::warn(
            "dmarc",
            format!("{from} publishes no DMARC policy: receivers judge the probe on their own"),
            format!("publish `v=DMARC1; p=none; rua=mailto:dmarc@{from}` at _dmarc.{from}"),
        ));
    } else {
        match d.result {
            Verdict::Pass => out.push(Finding::ok(
                "dmarc",
                format!(
                    "DMARC passes for {from} (dkim {}, spf {}; policy {policy})",
                    d.dkim.as_str(),
                    d.spf.as_str()
                ),
            )),
            Verdict::TempError => out.push(Finding::warn(
                "dmarc",
                format!("DMARC of {from} could not be evaluated (temperror)"),
                "check that the nameservers answer, then test again",
            )),
            _ => out.push(Finding::error(
                "dmarc",
                format!(
                    "DMARC fails for {from}: neither DKIM ({}) nor SPF ({}) passes aligned with the \
                     From domain, and the policy asks receivers to {}",
                    d.dkim.as_str(),
                    d.spf.as_str(),
                    match policy {
                        "reject" => "reject it",
                        "quarantine" => "put it in spam",
                        _ => "decide for themselves (p=none)",
                    }
                ),
                "fix the DKIM and SPF findings above before the switch",
            )),
        }
    }

    // The receiving server's own view, when it wrote one.
    if receiver.is_empty() {
        out.push(Finding::ok(
            "receiver",
            "the receiving server added no Authentication-Results header (the verdicts above are mailshift's)",
        ));
    }
    for r in receiver {
        let relevant: Vec<_> = r
            .results
            .iter()
            .filter(|m| matches!(m.method.as_str(), "dkim" | "spf" | "dmarc" | "arc"))
            .collect();
        if relevant.is_empty() {
            continue;
        }
        let text = relevant
            .iter()
            .map(|m| format!("{}={}", m.method, m.result))
            .collect::<Vec<_>>()
            .join(" ");
        let bad: Vec<String> = relevant
            .iter()
            .filter(|m| {
                matches!(
                    m.verdict(),
                    Some(Verdict::Fail | Verdict::SoftFail | Verdict::PermError)
                )
            })
            .map(|m| match (&m.reason, &m.comment) {
                (Some(r), _) => format!("{}={} ({r})", m.method, m.result),
                (None, Some(c)) => format!("{}={} ({c})", m.method, m.result),
                _ => format!("{}={}", m.method, m.result),
            })
            .collect();
        let doubtful = relevant.iter().any(|m| {
            matches!(
                m.verdict(),
                Some(Verdict::None | Verdict::Neutral | Verdict::TempError) | None
            )
        });
        out.push(if !bad.is_empty() {
            Finding::error(
                "receiver",
                format!(
                    "the receiving server {} reports {}",
                    r.authserv_id,
                    bad.join(", ")
                ),
                "fix the matching DKIM/SPF/DMARC finding; the receiver's verdict is what users see",
            )
        } else if doubtful {
            Finding::warn(
                "receiver",
                format!("the receiving server {} reports {text}", r.authserv_id),
                "aim for dkim=pass spf=pass dmarc=pass at the receiver",
            )
        } else {
            Finding::ok(
                "receiver",
                format!("the receiving server {} reports {text}", r.authserv_id),
            )
        });
    }
    out
}

/// Where the probe ended up, if anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub folder: String,
    /// The folder is the mailbox's Junk (spam) folder.
    pub junk: bool,
    /// From the submission server's acceptance to the probe being visible over IMAP.
    pub after: Duration,
}

/// The delivery finding: arrived (where, how fast) or not within the timeout.
pub fn judge_arrival(
    arrival: Option<&Arrival>,
    timeout: Duration,
    to: &str,
    queue_id: Option<&str>,
) -> Finding {
    match arrival {
        Some(a) if a.junk => Finding::error(
            "delivery",
            format!(
                "the probe arrived after {} but in the spam folder {} of {to}",
                human(a.after),
                a.folder
            ),
            "fix the authentication findings; if they all pass, the new server's sending reputation is the cause: \
             warm it up or ask the provider",
        ),
        Some(a) => Finding::ok(
            "delivery",
            format!(
                "the probe arrived in {} of {to} {} after the submission server accepted it",
                a.folder,
                human(a.after)
            ),
        ),
        None => Finding::error(
            "delivery",
            format!(
                "the probe did not arrive in {to} within {} of being accepted",
                human(timeout)
            ),
            match queue_id {
                Some(id) => format!(
                    "look for queue id {id} in the new server's mail log (deferred, bounced or filtered), \
                     check the probe address and mailbox (--to, --imap), or allow longer (--timeout)"
                ),
                None => "look for the probe in the new server's mail log (deferred, bounced or filtered), \
                     check the probe address and mailbox (--to, --imap), or allow longer (--timeout)"
                    .to_string(),
            },
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mailshift_core::cutover::{Level, worst};
    use mailshift_dns::authenticate::{DmarcCheck, SpfCheck};

    fn good() -> Authentication {
        Authentication {
            from_domain: Some("example.com".into()),
            dkim: vec![DkimCheck {
                domain: "example.com".into(),
                selector: "sel1".into(),
                result: Verdict::Pass,
                reason: None,
                aligned: true,
            }],
            spf: SpfCheck {
                ip: "192.0.2.25".parse().unwrap(),
                helo: "out.new.example".into(),
                mail_from: "alice@example.com".into(),
                domain: "example.com".into(),
                result: Verdict::Pass,
                aligned: true,
            },
            dmarc: DmarcCheck {
                from_domain: "example.com".into(),
                published: true,
                result: Verdict::Pass,
                dkim: Verdict::Pass,
                spf: Verdict::Pass,
                policy: Some("quarantine".into()),
            },
        }
    }

    fn by(f: &[Finding], check: &str) -> Vec<(Level, String)> {
        f.iter()
            .filter(|x| x.check == check)
            .map(|x| (x.level, x.message.clone()))
            .collect()
    }

    #[test]
    fn a_correct_setup_is_all_ok() {
        let f = judge_authentication("example.com", &good(), "relay", &[]);
        assert_eq!(worst(&f), Level::Ok, "{f:?}");
    }

    #[test]
    fn each_broken_piece_is_an_error_naming_its_cause() {
        let mut a = good();
        a.dkim[0].result = Verdict::Fail;
        a.dkim[0].reason = Some("signature verification failed".into());
        a.dmarc.dkim = Verdict::Fail;
        let f = judge_authentication("example.com", &a, "relay", &[]);
        let d = by(&f, "dkim");
        assert_eq!(d[0].0, Level::Error);
        assert!(
            d[0].1.contains("not the one the new server signs with"),
            "{d:?}"
        );

        let mut a = good();
        a.spf.result = Verdict::Fail;
        let f = judge_authentication("example.com", &a, "relay", &[]);
        assert!(by(&f, "spf")[0].1.contains("does not authorise 192.0.2.25"));
        assert_eq!(by(&f, "spf")[0].0, Level::Error);

        let mut a = good();
        a.dkim[0].domain = "provider.example".into();
        a.dkim[0].aligned = false;
        let f = judge_authentication("example.com", &a, "relay", &[]);
        let d = by(&f, "dkim");
        assert_eq!(d[0].0, Level::Error);
        assert!(d[0].1.contains("not aligned"), "{d:?}");

        let mut a = good();
        a.dkim.clear();
        a.spf.result = Verdict::SoftFail;
        a.dmarc.result = Verdict::Fail;
        a.dmarc.dkim = Verdict::None;
        a.dmarc.spf = Verdict::None;
        a.dmarc.policy = Some("reject".into());
        let f = judge_authentication("example.com", &a, "relay", &[]);
        assert!(by(&f, "dkim")[0].1.contains("no DKIM signature"));
        assert!(by(&f, "dmarc")[0].1.contains("reject it"));
    }

    #[test]
    fn the_receivers_results_are_reported() {
        let r = crate::authres::parse(
            "mx.receiver.example; dkim=fail reason=\"bad signature\"; spf=pass; dmarc=pass",
        )
        .unwrap();
        let f = judge_authentication("example.com", &good(), "relay", &[r]);
        let rec = by(&f, "receiver");
        assert_eq!(rec[0].0, Level::Error);
        assert!(rec[0].1.contains("dkim=fail (bad signature)"), "{rec:?}");
        let r =
            crate::authres::parse("mx.receiver.example; dkim=pass; spf=pass; dmarc=pass").unwrap();
        let f = judge_authentication("example.com", &good(), "relay", &[r]);
        assert_eq!(by(&f, "receiver")[0].0, Level::Ok);
    }

    #[test]
    fn arrival_in_spam_or_not_at_all_is_an_error() {
        let a = Arrival {
            folder: "Junk".into(),
            junk: true,
            after: Duration::from_millis(2400),
        };
        let f = judge_arrival(Some(&a), Duration::from_secs(120), "a@example.com", None);
        assert_eq!(f.level, Level::Error);
        assert!(f.message.contains("spam folder Junk"));
        let f = judge_arrival(None, Duration::from_secs(5), "a@example.com", Some("4ABC"));
        assert_eq!(f.level, Level::Error);
        assert!(f.fix.unwrap().contains("queue id 4ABC"));
        let ok = Arrival {
            junk: false,
            folder: "INBOX".into(),
            ..a
        };
        let f = judge_arrival(Some(&ok), Duration::from_secs(5), "a@example.com", None);
        assert_eq!(f.level, Level::Ok);
        assert!(f.message.contains("2.4 s"));
    }
}
