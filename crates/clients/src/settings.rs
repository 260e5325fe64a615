//! What a mail client needs to know about the new server, per domain and per user, and
//! the validation of the addresses that reach us from outside (URLs, request bodies).
//! Pure data: no I/O.

use mailshift_core::endpoint::{Endpoint, Security};
use secrecy::SecretString;

/// One server a client connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// `Tls`: TLS from the first byte (993, 465); `StartTls`: upgraded (143, 587).
    pub security: Security,
}

impl Server {
    /// The IMAP server of a mailbox's destination endpoint.
    pub fn from_endpoint(e: &Endpoint) -> Server {
        Server {
            host: e.host.clone(),
            port: e.port,
            security: e.security,
        }
    }

    /// The usual submission port for a security: 465 (implicit TLS, RFC 8314) or 587.
    pub fn submission_port(security: Security) -> u16 {
        match security {
            Security::Tls => 465,
            Security::StartTls => 587,
        }
    }

    /// The usual IMAP port for a security: 993 or 143.
    pub fn imap_port(security: Security) -> u16 {
        match security {
            Security::Tls => 993,
            Security::StartTls => 143,
        }
    }
}

/// How users log in on the new server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginForm {
    /// With their full address (`alice@acme.example`).
    Address,
    /// With the part before the `@` (`alice`).
    LocalPart,
    /// With a name of their own that cannot be derived from the address (kept per user,
    /// see [`UserSettings::login`]). Public discovery answers then carry no login name,
    /// so that they reveal nothing about who exists: the client asks the user, and the
    /// user's sheet tells them.
    PerUser,
}

impl LoginForm {
    /// The login for `address` when it can be derived from it.
    pub fn derive(&self, address: &str) -> Option<String> {
        match self {
            LoginForm::Address => Some(address.to_string()),
            LoginForm::LocalPart => address.rsplit_once('@').map(|(l, _)| l.to_string()),
            LoginForm::PerUser => None,
        }
    }

    /// The form shared by every (address, login) pair: the address, its local part, or
    /// neither.
    pub fn infer<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> LoginForm {
        let pairs: Vec<_> = pairs.into_iter().collect();
        if pairs.is_empty() || pairs.iter().all(|(a, l)| a.eq_ignore_ascii_case(l)) {
            LoginForm::Address
        } else if pairs
            .iter()
            .all(|(a, l)| LoginForm::LocalPart.derive(a).as_deref() == Some(*l))
        {
            LoginForm::LocalPart
        } else {
            LoginForm::PerUser
        }
    }
}

/// What users are told about their password on the new server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordNote {
    /// The same password as on the old server.
    Unchanged,
    /// A temporary password, handed out as `source` says ("in a text message from your
    /// IT desk").
    Temporary { source: String },
}

/// Everything a client needs that is the same for every user of a mail domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSettings {
    /// The mail domain (`acme.example`), lowercase.
    pub domain: String,
    /// What clients call the account ("Acme Mail").
    pub display_name: String,
    /// Shown in Apple profiles as the organisation, and on the sheet.
    pub organization: Option<String>,
    pub imap: Server,
    /// The submission server (SMTP with authentication).
    pub smtp: Server,
    pub login: LoginForm,
    pub password: PasswordNote,
}

/// One user's settings on top of their domain's.
#[derive(Clone, Debug)]
pub struct UserSettings {
    /// Their address, as validated by [`normalize_address`].
    pub address: String,
    /// Their full name when known (the sender name in Apple profiles).
    pub name: Option<String>,
    /// What they log in with on the new server.
    pub login: String,
    /// Their temporary password, only when the operator asked to hand it out in the
    /// files (`--include-passwords`). Never logged (`SecretString` redacts itself).
    pub password: Option<SecretString>,
}

impl UserSettings {
    pub fn new(address: &str, login: &str) -> UserSettings {
        UserSettings {
            address: address.to_string(),
            name: None,
            login: login.to_string(),
            password: None,
        }
    }

    pub fn local_part(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map(|(l, _)| l)
            .unwrap_or(&self.address)
    }
}

/// Longest address accepted (RFC 5321's path limit).
pub const MAX_ADDRESS_LEN: usize = 254;

/// Checks an address that came from outside (a URL, a request body, a spreadsheet) and
/// returns it with its domain lowercased, or None. Only unquoted addresses with
/// `atext` local parts are accepted, so an address is always safe in a file name and a
/// URL path segment once percent-encoded.
pub fn normalize_address(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_ADDRESS_LEN {
        return None;
    }
    let (local, domain) = raw.rsplit_once('@')?;
    if local.is_empty() || local.len() > 64 || !local.chars().all(is_atext_or_dot) {
        return None;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return None;
    }
    let domain = normalize_domain(domain)?;
    Some(format!("{local}@{domain}"))
}

/// A DNS domain name (letters, digits, hyphens, dots), lowercased; None otherwise.
pub fn normalize_domain(raw: &str) -> Option<String> {
    let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() || d.len() > 253 {
        return None;
    }
    let ok = d.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    ok.then_some(d)
}

/// The domain of an address already checked by [`normalize_address`].
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

fn is_atext_or_dot(c: char) -> bool {
    // RFC 5322 atext without '/' (which would make a path of a file name) plus '.'.
    c.is_ascii_alphanumeric() || "!#$%&'*+=?^_`{|}~-.".contains(c)
}

/// Percent-encodes an address for a URL path segment (`%`, `#`, `?` and friends are
/// valid in a local part).
pub fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@!$&'*+=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded path segment; None when it is not valid UTF-8.
pub fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_their_domain_lowercased() {
        assert_eq!(
            normalize_address(" Alice.B@ACME.Example ").as_deref(),
            Some("Alice.B@acme.example")
        );
        assert_eq!(
            normalize_address("o'brien+tag@acme.example").as_deref(),
            Some("o'brien+tag@acme.example")
        );
        for bad in [
            "",
            "alice",
            "@acme.example",
            "alice@",
            "a/b@acme.example",
            "../x@acme.example",
            "a..b@acme.example",
            "al ice@acme.example",
            "\"q\"@acme.example",
            "alice@acme_example",
            "alice@-acme.example",
            "alice@acme..example",
            "<x>@acme.example",
            "alice@acme.example/evil",
        ] {
            assert_eq!(normalize_address(bad), None, "{bad}");
        }
        let long = format!("{}@acme.example", "a".repeat(65));
        assert_eq!(normalize_address(&long), None);
    }

    #[test]
    fn login_forms_derive_and_are_inferred() {
        assert_eq!(
            LoginForm::LocalPart.derive("bob@acme.example").as_deref(),
            Some("bob")
        );
        assert_eq!(LoginForm::PerUser.derive("bob@acme.example"), None);
        assert_eq!(
            LoginForm::infer([("a@x.example", "a@x.example")]),
            LoginForm::Address
        );
        assert_eq!(
            LoginForm::infer([("a@x.example", "a"), ("b@x.example", "b")]),
            LoginForm::LocalPart
        );
        assert_eq!(
            LoginForm::infer([("a@x.example", "a"), ("b@x.example", "bee")]),
            LoginForm::PerUser
        );
    }

    #[test]
    fn url_segments_round_trip() {
        let a = "a%b#c?d@acme.example";
        let s = url_segment(a);
        assert!(!s.contains('#') && !s.contains('?'));
        assert_eq!(url_decode(&s).as_deref(), Some(a));
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%4"), None);
    }
}
