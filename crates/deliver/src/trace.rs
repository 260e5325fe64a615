//! Reading a delivered message's trace: its header fields (unfolded), the `Received`
//! hops (RFC 5321 4.4, parsed tolerantly: every MTA words them a little differently),
//! the envelope sender (`Return-Path`), and which hop handed the message to the
//! receiving side, i.e. the address a receiver checks SPF for.

use std::net::IpAddr;

/// The header fields of a raw message, unfolded, in order (name as written).
pub fn header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// All values of one header field (case-insensitive), top first.
pub fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// One `Received` hop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hop {
    /// The name the sending side gave (HELO/EHLO), after `from`.
    pub helo: Option<String>,
    /// The sending side's address, from the `[...]` in the `from` clause.
    pub ip: Option<IpAddr>,
    /// The receiving host, after `by`.
    pub by: Option<String>,
    /// The protocol, after `with` (`ESMTPSA`, `LMTP`, ...), upper case.
    pub with: Option<String>,
    /// The sender logged in (RFC 3848 `...A` protocols, or an "Authenticated sender").
    pub authenticated: bool,
}

impl Hop {
    /// A hop between two SMTP servers (not a local delivery, not a login).
    pub fn is_smtp_relay(&self) -> bool {
        !self.authenticated
            && self
                .with
                .as_deref()
                .is_some_and(|w| w.contains("SMTP") && !w.starts_with("LMTP"))
    }
}

/// Removes comments (nested parentheses) and returns them separately.
fn split_comments(s: &str) -> (String, String) {
    let mut text = String::new();
    let mut comments = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                if depth == 1 {
                    text.push(' ');
                    continue;
                }
            }
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    comments.push(' ');
                    continue;
                }
            }
            _ => {}
        }
        if depth > 0 {
            comments.push(c);
        } else {
            text.push(c);
        }
    }
    (text, comments)
}

/// The first bracketed IP address in `s` (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
fn bracketed_ip(s: &str) -> Option<IpAddr> {
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            break;
        };
        let inner = &after[..close];
        let inner = inner
            .strip_prefix("IPv6:")
            .or_else(|| inner.strip_prefix("ipv6:"))
            .unwrap_or(inner);
        if let Ok(ip) = inner.parse::<IpAddr>() {
            return Some(ip);
        }
        rest = &after[close + 1..];
    }
    None
}

/// Parses one `Received` value.
pub fn parse_received(value: &str) -> Hop {
    // The date follows the last `;`.
    let body = value.rsplit_once(';').map_or(value, |(b, _)| b);
    let (text, comments) = split_comments(body);
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |kw: &str| {
        words
            .windows(2)
            .find(|w| w[0].eq_ignore_ascii_case(kw))
            .map(|w| w[1].trim_end_matches('.').to_ascii_lowercase())
    };
    let mut hop = Hop {
        helo: after("from"),
        by: after("by"),
        with: after("with").map(|w| w.to_ascii_uppercase()),
        ..Hop::default()
    };
    // The address sits in the `from` clause: in its comment (Postfix, Exim, Dovecot) or
    // bare (`from [192.0.2.1]`).
    let from_part = match body.to_ascii_lowercase().find(" by ") {
        Some(i) => &body[..i],
        None => body,
    };
    hop.ip = bracketed_ip(from_part).or_else(|| {
        hop.helo
            .as_deref()
            .and_then(|h| h.trim_matches(['[', ']']).parse().ok())
    });
    let proto_auth = hop.with.as_deref().is_some_and(|w| {
        matches!(
            w,
            "ESMTPA"
                | "ESMTPSA"
                | "LMTPA"
                | "LMTPSA"
                | "UTF8SMTPA"
                | "UTF8SMTPSA"
                | "UTF8LMTPA"
                | "UTF8LMTPSA"
        )
    });
    hop.authenticated = proto_auth
        || comments
            .to_ascii_lowercase()
            .contains("authenticated sender")
        || comments.to_ascii_lowercase().contains("authenticated user");
    hop
}

/// Every `Received` hop, top (last added) first.
pub fn hops(fields: &[(String, String)]) -> Vec<Hop> {
    values(fields, "Received")
        .into_iter()
        .map(parse_received)
        .collect()
}

/// The envelope sender the final server recorded (`Return-Path: <a@b>`).
pub fn return_path(fields: &[(String, String)]) -> Option<String> {
    values(fields, "Return-Path").first().map(|v| {
        v.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim()
            .to_string()
    })
}

fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Where the address judged by SPF comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoverSource {
    /// A `Received` hop from the new provider's servers to the receiving side.
    Hop { ip: IpAddr, helo: String },
    /// No such hop (the probe was delivered on the new server itself): the submission
    /// server's own host, which receivers elsewhere see as the sender.
    SubmissionHost(String),
}

/// Picks the hop a receiver checks SPF for: above the login (the submission hop), the
/// most recent SMTP relay from a public address, else the most recent SMTP relay at
/// all; without one, the host that took the submission.
pub fn handover(hops: &[Hop]) -> Option<HandoverSource> {
    let sub = hops.iter().rposition(|h| h.authenticated);
    let above = match sub {
        Some(i) => &hops[..i],
        None => hops,
    };
    let relays: Vec<&Hop> = above
        .iter()
        .filter(|h| h.is_smtp_relay() && h.ip.is_some())
        .collect();
    let pick = relays
        .iter()
        .find(|h| h.ip.as_ref().is_some_and(is_public))
        .or_else(|| relays.first());
    if let Some(h) = pick
        && let Some(ip) = h.ip
    {
        return Some(HandoverSource::Hop {
            ip,
            helo: h.helo.clone().unwrap_or_default(),
        });
    }
    sub.and_then(|i| hops[i].by.clone())
        .map(HandoverSource::SubmissionHost)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LOCAL: &[u8] = b"Return-Path: <alice@deliver.test>\r\n\
Delivered-To: alice@deliver.test\r\n\
Received: from mta.new.test\r\n\tby host with LMTP\r\n\tid abc\r\n\t(envelope-from <alice@deliver.test>)\r\n\tfor <alice@deliver.test>; Tue, 01 Dec 2026 22:00:00 +0000\r\n\
Received: from [127.0.0.1] (localhost [127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\t(No client certificate requested)\r\n\t(Authenticated sender: alice@deliver.test)\r\n\tby mta.new.test (Postfix) with ESMTPSA id 4ABC\r\n\tfor <alice@deliver.test>; Tue,  1 Dec 2026 22:00:00 +0000 (UTC)\r\n\
Subject: x\r\n\r\nbody\r\nReceived: not a header\r\n";

    #[test]
    fn headers_are_unfolded_and_stop_at_the_body() {
        let f = header_fields(LOCAL);
        assert_eq!(values(&f, "received").len(), 2);
        assert_eq!(return_path(&f).as_deref(), Some("alice@deliver.test"));
        assert!(values(&f, "Received")[0].starts_with("from mta.new.test by host with LMTP"));
    }

    #[test]
    fn a_local_delivery_falls_back_to_the_submission_host() {
        let h = hops(&header_fields(LOCAL));
        assert_eq!(h[0].with.as_deref(), Some("LMTP"));
        assert!(!h[0].authenticated);
        assert!(h[1].authenticated);
        assert_eq!(h[1].by.as_deref(), Some("mta.new.test"));
        assert_eq!(h[1].ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            handover(&h),
            Some(HandoverSource::SubmissionHost("mta.new.test".into()))
        );
    }

    #[test]
    fn the_receivers_edge_hop_is_found_above_the_login() {
        let raw = b"Received: from mx.receiver.example (10.0.0.5) by store.receiver.example with ESMTP; d\r\n\
Received: from out.new.example (out.new.example. [203.0.113.25])\r\n        by mx.receiver.example with ESMTPS id x; Tue, 1 Dec 2026\r\n\
Received: from smtp.new.example ([10.1.1.1]) by out.new.example with ESMTP; d\r\n\
Received: from laptop ([198.51.100.7]) by smtp.new.example with ESMTPSA id y; d\r\n\r\n";
        let h = hops(&header_fields(raw));
        assert_eq!(h.len(), 4);
        assert_eq!(
            handover(&h),
            Some(HandoverSource::Hop {
                ip: "203.0.113.25".parse().unwrap(),
                helo: "out.new.example".into()
            })
        );
        // IPv6 literals and bare addresses.
        let hop = parse_received("from [IPv6:2001:db8::5] by x with ESMTPS; d");
        assert_eq!(hop.ip, Some("2001:db8::5".parse().unwrap()));
        let hop = parse_received("from [192.0.2.9] by x with SMTP; d");
        assert_eq!(hop.ip, Some("192.0.2.9".parse().unwrap()));
        assert!(hop.is_smtp_relay());
    }
}
