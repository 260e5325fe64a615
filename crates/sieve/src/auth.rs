//! Logging in with AUTHENTICATE (RFC 5804 2.1): SASL PLAIN with a password,
//! OAUTHBEARER (RFC 7628) or XOAUTH2 with a bearer token, each as a base64 initial
//! response. Neither secret ever reaches a message, a trace or a Debug output.

use crate::command;
use crate::connect::SieveAuth;
use crate::error::{SieveError, clean_text};
use crate::response::{Line, StatusKind, Value};
use crate::session::Connection;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mailshift_core::sieve::SieveCapabilities;
use secrecy::ExposeSecret;

/// PLAIN: `\0user\0password`.
fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// `user=U^Aauth=Bearer T^A^A` (Google's and Microsoft's XOAUTH2).
fn xoauth2(user: &str, token: &str) -> Vec<u8> {
    format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// RFC 7628 OAUTHBEARER initial response.
fn oauthbearer(user: &str, host: &str, port: u16, token: &str) -> Vec<u8> {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    format!("n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01").into_bytes()
}

pub(crate) struct Login<'a> {
    pub auth: &'a SieveAuth,
    pub user: &'a str,
    pub host: &'a str,
    pub port: u16,
}

/// Logs in with the mechanism that fits the credentials and the server's SASL list.
pub(crate) async fn login(
    conn: &mut Connection,
    caps: &SieveCapabilities,
    l: Login<'_>,
) -> Result<(), SieveError> {
    let server = conn.server().to_string();
    let offers = |m: &str| caps.sasl.iter().any(|s| s.eq_ignore_ascii_case(m));
    let (mechanism, initial) = match l.auth {
        SieveAuth::Password(pw) => {
            if !offers("PLAIN") {
                return Err(SieveError::Unsupported(format!(
                    "{server} offers no SASL PLAIN login (it offers: {}); log in with an OAuth \
                     token if it takes one, or enable PLAIN over TLS on the server",
                    listed(&caps.sasl)
                )));
            }
            ("PLAIN", plain(l.user, pw.expose_secret()))
        }
        SieveAuth::Bearer(token) => {
            if offers("OAUTHBEARER") {
                (
                    "OAUTHBEARER",
                    oauthbearer(l.user, l.host, l.port, token.expose_secret()),
                )
            } else if offers("XOAUTH2") {
                ("XOAUTH2", xoauth2(l.user, token.expose_secret()))
            } else {
                return Err(SieveError::Unsupported(format!(
                    "{server} offers neither OAUTHBEARER nor XOAUTH2 (it offers: {}), so an \
                     OAuth token cannot be used; log in with a password instead",
                    listed(&caps.sasl)
                )));
            }
        }
    };
    let cmd = command::authenticate(mechanism, &B64.encode(initial));
    conn.send(&cmd).await?;
    let mut challenges = 0;
    loop {
        match conn.read_line("AUTHENTICATE").await? {
            Line::Data(v) if matches!(v.as_slice(), [Value::Str(_)]) => {
                // A failing OAUTHBEARER/XOAUTH2 sends its error as a challenge and waits
                // for an answer before its NO; anything else is unexpected: abort.
                challenges += 1;
                let answer = match mechanism {
                    _ if challenges > 2 => "*".to_string(),
                    "OAUTHBEARER" => B64.encode(b"\x01"),
                    "XOAUTH2" => String::new(),
                    _ => "*".to_string(),
                };
                conn.send(&command::sasl_response(&answer)).await?;
            }
            Line::Data(_) => {
                return Err(SieveError::Protocol {
                    server,
                    op: "AUTHENTICATE".into(),
                    what: "a data line that is not a SASL challenge".into(),
                });
            }
            Line::Status(s) => {
                return match s.kind {
                    StatusKind::Ok => Ok(()),
                    StatusKind::Bye => Err(SieveError::Bye {
                        server,
                        op: "AUTHENTICATE".into(),
                        text: clean_text(&s.text()),
                    }),
                    StatusKind::No => {
                        let mut reason = clean_text(&s.text());
                        if let Some(code) = &s.code {
                            reason = format!("{reason} ({})", code.name);
                        }
                        Err(match l.auth {
                            SieveAuth::Password(_) => SieveError::Auth {
                                server,
                                user: l.user.to_string(),
                                reason,
                            },
                            SieveAuth::Bearer(_) => SieveError::Token {
                                server,
                                user: l.user.to_string(),
                                mechanism,
                                reason,
                            },
                        })
                    }
                };
            }
        }
    }
}

fn listed(mechs: &[String]) -> String {
    if mechs.is_empty() {
        "nothing".into()
    } else {
        mechs.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_responses_follow_the_specs() {
        assert_eq!(plain("u", "p"), b"\0u\0p");
        assert_eq!(B64.encode(plain("alice", "pw")), "AGFsaWNlAHB3");
        assert_eq!(
            xoauth2("a@b.c", "T"),
            b"user=a@b.c\x01auth=Bearer T\x01\x01"
        );
        assert_eq!(
            oauthbearer("u,=x", "sieve.example", 4190, "T"),
            b"n,a=u=2C=3Dx,\x01host=sieve.example\x01port=4190\x01auth=Bearer T\x01\x01"
        );
    }
}
