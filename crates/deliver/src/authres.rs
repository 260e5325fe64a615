//! `Authentication-Results` (RFC 8601) as receiving servers write them: an authserv-id,
//! then `method=result` entries with an optional `reason=` and `ptype.property=value`
//! properties, separated by `;`, with comments anywhere. Parsed tolerantly (real
//! servers bend the grammar): what cannot be read is skipped, never an error.

use mailshift_dns::authenticate::Verdict;
use serde::Serialize;

/// One method's result (`dkim=pass header.d=example.com`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MethodResult {
    /// `dkim`, `spf`, `dmarc`, `arc`, `iprev`, ... (lower case, version dropped).
    pub method: String,
    /// The result token as written, lower case.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `header.d=example.com`, `smtp.mailfrom=...` in order.
    pub properties: Vec<(String, String)>,
    /// Comment text, e.g. Gmail's "domain of ... designates ... as permitted sender".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl MethodResult {
    pub fn verdict(&self) -> Option<Verdict> {
        Verdict::parse(&self.result)
    }
}

/// One `Authentication-Results` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthResults {
    /// The server that wrote it.
    pub authserv_id: String,
    pub results: Vec<MethodResult>,
}

/// Splits on `sep` outside quoted strings and comments; comments are kept in place.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            c if c == sep && !quoted && depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// Takes comments out of `s`: (text without comments, joined comment text).
fn uncomment(s: &str) -> (String, String) {
    let mut text = String::new();
    let mut comment = String::new();
    let (mut depth, mut quoted) = (0usize, false);
    for c in s.chars() {
        match c {
            '"' if depth == 0 => {
                quoted = !quoted;
                text.push(c);
            }
            '(' if !quoted => {
                if depth > 0 {
                    comment.push(c);
                } else if !comment.is_empty() {
                    comment.push_str("; ");
                }
                depth += 1;
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth > 0 {
                    comment.push(c);
                } else {
                    text.push(' ');
                }
            }
            c if depth > 0 => comment.push(c),
            c => text.push(c),
        }
    }
    (text, comment.trim().to_string())
}

/// Whitespace-separated tokens, quoted strings kept whole (quotes removed).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses one header value; `None` if not even an authserv-id can be read.
pub fn parse(value: &str) -> Option<AuthResults> {
    let mut parts = split_top(value, ';').into_iter();
    let (head, _) = uncomment(&parts.next()?);
    let authserv_id = tokens(&head).into_iter().next()?.to_ascii_lowercase();
    let mut results = Vec::new();
    for part in parts {
        let (text, comment) = uncomment(&part);
        // `key = value` is legal (CFWS around `=`): glue it back before splitting.
        let glued = text.replace(" =", "=").replace("= ", "=");
        let mut toks = tokens(&glued).into_iter();
        let Some(first) = toks.next() else {
            continue;
        };
        let Some((method, result)) = first.split_once('=') else {
            continue; // `none` (no results) or something unreadable
        };
        let method = method
            .split('/')
            .next()
            .unwrap_or(method)
            .to_ascii_lowercase();
        let mut r = MethodResult {
            method,
            result: result.to_ascii_lowercase(),
            reason: None,
            properties: Vec::new(),
            comment: (!comment.is_empty()).then_some(comment),
        };
        for t in toks {
            if let Some((k, v)) = t.split_once('=') {
                if k.eq_ignore_ascii_case("reason") {
                    r.reason = Some(v.to_string());
                } else {
                    r.properties.push((k.to_ascii_lowercase(), v.to_string()));
                }
            }
        }
        results.push(r);
    }
    Some(AuthResults {
        authserv_id,
        results,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gmail_style_results_parse_with_comments_and_properties() {
        let v = "mx.google.com;\r\n       dkim=pass header.i=@example.com header.s=sel1 header.b=AbC+/1;\r\n       spf=pass (google.com: domain of alice@example.com designates 203.0.113.25 as permitted sender) smtp.mailfrom=alice@example.com;\r\n       dmarc=pass (p=QUARANTINE sp=QUARANTINE dis=NONE) header.from=example.com";
        let r = parse(v).unwrap();
        assert_eq!(r.authserv_id, "mx.google.com");
        assert_eq!(r.results.len(), 3);
        assert_eq!(r.results[0].method, "dkim");
        assert_eq!(r.results[0].verdict(), Some(Verdict::Pass));
        assert_eq!(
            r.results[0].properties[1],
            ("header.s".to_string(), "sel1".to_string())
        );
        assert!(
            r.results[1]
                .comment
                .as_deref()
                .unwrap()
                .contains("designates 203.0.113.25")
        );
        assert_eq!(
            r.results[2].properties,
            vec![("header.from".into(), "example.com".into())]
        );
    }

    #[test]
    fn odd_but_real_headers_do_not_break_the_parser() {
        // Version after the id, a reason, a method version, spaces around `=`,
        // a `;` inside a quoted reason, and a `none` entry.
        let r = parse(
            "mx.example.net 1; dkim/1 = fail reason=\"signature; verification failed\" header.d=example.com (bad sig); spf=softfail smtp.mailfrom=example.com; none",
        )
        .unwrap();
        assert_eq!(r.authserv_id, "mx.example.net");
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.results[0].method, "dkim");
        assert_eq!(r.results[0].verdict(), Some(Verdict::Fail));
        assert_eq!(
            r.results[0].reason.as_deref(),
            Some("signature; verification failed")
        );
        assert_eq!(r.results[0].comment.as_deref(), Some("bad sig"));
        assert_eq!(r.results[1].verdict(), Some(Verdict::SoftFail));
        let none = parse("mx.example.net; none").unwrap();
        assert!(none.results.is_empty());
        assert!(parse("   ").is_none());
        // Unbalanced comment: still readable up to where it breaks.
        assert!(parse("host; dkim=pass (unterminated").is_some());
    }
}
