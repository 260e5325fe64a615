//! Where a mailbox lives: `imap://user@host:port` (STARTTLS) or `imaps://user@host:port`
//! (implicit TLS). An endpoint never holds a password, so it can be printed anywhere.

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// `imaps://`: TLS from the first byte (default port 993).
    Tls,
    /// `imap://`: plain TCP upgraded with STARTTLS (default port 143). Without STARTTLS on
    /// the server, login is refused unless plain text was explicitly allowed.
    StartTls,
}

/// A server and the user to log in as.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub security: Security,
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl Endpoint {
    /// `host:port`, the key for per-server connection limits.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.security {
            Security::Tls => "imaps",
            Security::StartTls => "imap",
        };
        write!(f, "{scheme}://{}@{}:{}", self.user, self.host, self.port)
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::usage(format!(
                "{why} (expected imap://USER@HOST[:PORT] or imaps://USER@HOST[:PORT])"
            ))
        };
        let (security, rest) = if let Some(rest) = s.strip_prefix("imaps://") {
            (Security::Tls, rest)
        } else if let Some(rest) = s.strip_prefix("imap://") {
            (Security::StartTls, rest)
        } else {
            return Err(bad("unsupported server address"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') {
            return Err(bad("a server address takes no path or query"));
        }
        // The user may itself contain '@' (alice@example.com): the host follows the last one.
        let Some((userinfo, hostport)) = rest.rsplit_once('@') else {
            return Err(bad("the user is missing"));
        };
        if userinfo.contains(':') {
            // Never echo the string: it holds a password.
            return Err(Error::usage(
                "a password was given inside the server address; pass it with \
                 --from-password-file/--to-password-file or MAILSHIFT_FROM_PASSWORD/\
                 MAILSHIFT_TO_PASSWORD instead",
            ));
        }
        let user = percent_decode(userinfo).ok_or_else(|| bad("the user is not valid UTF-8"))?;
        if user.is_empty() {
            return Err(bad("the user is empty"));
        }
        if user.chars().any(char::is_control) {
            // CR/LF would end the LOGIN line early and start another command.
            return Err(Error::usage(
                "the user contains a control character (CR, LF, NUL, TAB...), which no \
                 server accepts in a login; check how the address was written",
            ));
        }
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("the port is invalid"))?;
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        if host.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("the host contains a space or control character"));
        }
        let port = port.unwrap_or(match security {
            Security::Tls => 993,
            Security::StartTls => 143,
        });
        Ok(Endpoint {
            security,
            host,
            port,
            user,
        })
    }
}

fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(inner) = s.strip_prefix('[') {
        // [::1]:143
        let (host, after) = inner.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok().filter(|&p| p != 0)?))),
        None => Some((s.to_string(), None)),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_with_default_ports() {
        let e: Endpoint = "imap://alice@old.example".parse().unwrap();
        assert_eq!(e.security, Security::StartTls);
        assert_eq!(e.port, 143);
        let e: Endpoint = "imaps://alice@new.example".parse().unwrap();
        assert_eq!(e.security, Security::Tls);
        assert_eq!(e.port, 993);
        assert_eq!(e.to_string(), "imaps://alice@new.example:993");
    }

    #[test]
    fn control_characters_in_the_user_are_refused() {
        for bad in [
            "imap://ali%0D%0Ace@h",
            "imap://ali%00ce@h",
            "imap://ali\nce@h",
            "imap://a%09b@h",
        ] {
            let e = bad.parse::<Endpoint>().unwrap_err();
            assert!(
                e.message.contains("control character"),
                "{bad}: {}",
                e.message
            );
        }
        assert!("imap://alice@ho st".parse::<Endpoint>().is_err());
    }

    #[test]
    fn user_may_be_an_address() {
        let e: Endpoint = "imap://alice@example.com@mail.example:1143"
            .parse()
            .unwrap();
        assert_eq!(e.user, "alice@example.com");
        assert_eq!(e.host, "mail.example");
        assert_eq!(e.port, 1143);
        let e: Endpoint = "imap://bob%40example.com@[::1]:143".parse().unwrap();
        assert_eq!(e.user, "bob@example.com");
        assert_eq!(e.host, "::1");
    }

    #[test]
    fn refuses_passwords_without_echoing_them() {
        let err = "imap://alice:hunter2@host".parse::<Endpoint>().unwrap_err();
        assert!(!err.message.contains("hunter2"));
        assert!(err.message.contains("password"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "http://a@b",
            "imap://host",
            "imap://a@b:99999",
            "imap://a@b/INBOX",
            "imap://a@:1",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
