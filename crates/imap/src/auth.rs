//! Logging in: LOGIN or AUTHENTICATE PLAIN with a password, XOAUTH2 or OAUTHBEARER with
//! an OAuth 2.0 access token. Tokens are read afresh (file or command) at every login,
//! so a long run survives their expiry; neither passwords nor tokens ever reach a
//! message or a log.

use crate::connect::Stream;
use crate::error::ImapError;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::Duration;

/// How to log in to one server.
#[derive(Clone)]
pub enum Auth {
    /// AUTHENTICATE PLAIN when the server offers it (UTF-8 safe), otherwise LOGIN.
    Password(SecretString),
    /// XOAUTH2 (Google, Microsoft) or OAUTHBEARER (RFC 7628), whichever the server offers.
    OAuth2(TokenSource),
}

/// Where an access token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A file holding the token (refreshed by something else).
    File(PathBuf),
    /// A shell command printing the token on stdout (e.g. a refresh-token helper).
    Command(String),
}

impl TokenSource {
    /// The current token; errors never include the token or the command line (which
    /// may carry a client secret).
    pub async fn token(&self, server: &str) -> Result<SecretString, ImapError> {
        let fail = |reason: String| ImapError::Token {
            server: server.to_string(),
            reason,
        };
        let raw = match self {
            TokenSource::File(p) => tokio::fs::read_to_string(p)
                .await
                .map_err(|e| fail(format!("cannot read the token file {}: {e}", p.display())))?,
            TokenSource::Command(cmd) => {
                let run = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output();
                let out = tokio::time::timeout(Duration::from_secs(60), run)
                    .await
                    .map_err(|_| fail("the token command did not finish within 60 s".into()))?
                    .map_err(|e| fail(format!("cannot run the token command: {e}")))?;
                if !out.status.success() {
                    return Err(fail(format!("the token command failed ({})", out.status)));
                }
                String::from_utf8(out.stdout).map_err(|_| {
                    fail("the token command printed something that is not text".into())
                })?
            }
        };
        let token = raw.trim().to_string();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(fail("the token is empty or not a single line".into()));
        }
        Ok(SecretString::from(token))
    }
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

/// PLAIN: `\0user\0password`.
fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// Sends `first` to the first challenge; an empty response to any further one (a
/// failing XOAUTH2/OAUTHBEARER sends its error as a challenge and waits for it).
struct Once(Option<Vec<u8>>);

impl async_imap::Authenticator for Once {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        self.0.take().unwrap_or_default()
    }
}

/// Capabilities the server announces before login (upper case).
pub(crate) async fn capabilities(
    client: &mut async_imap::Client<Stream>,
    server: &str,
) -> Result<Vec<String>, ImapError> {
    // async-imap hands untagged responses of a raw command to a channel; CAPABILITY's
    // one untagged line is all this needs.
    let (tx, rx) = async_channel::bounded(16);
    client
        .run_command_and_check_ok("CAPABILITY", Some(tx))
        .await
        .map_err(|e| ImapError::Io {
            op: format!("CAPABILITY with {server}"),
            reason: e.to_string(),
        })?;
    let mut caps = Vec::new();
    while let Ok(r) = rx.try_recv() {
        if let async_imap::types::UnsolicitedResponse::Other(data) = r
            && let imap_proto::Response::Capabilities(list) = data.parsed()
        {
            for c in list {
                caps.push(match c {
                    imap_proto::Capability::Imap4rev1 => "IMAP4REV1".to_string(),
                    imap_proto::Capability::Auth(a) => format!("AUTH={}", a.to_ascii_uppercase()),
                    imap_proto::Capability::Atom(a) => a.to_ascii_uppercase(),
                });
            }
        }
    }
    Ok(caps)
}

pub(crate) struct Login<'a> {
    pub auth: &'a Auth,
    pub user: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub server: &'a str,
}

/// Logs in with the best mechanism both sides support.
pub(crate) async fn login(
    mut client: async_imap::Client<Stream>,
    l: Login<'_>,
) -> Result<async_imap::Session<Stream>, ImapError> {
    let caps = capabilities(&mut client, l.server).await?;
    let has = |c: &str| caps.iter().any(|x| x == c);
    let refused = |text: &str| ImapError::Auth {
        server: l.server.to_string(),
        user: l.user.to_string(),
        reason: crate::raw::clean_server_text(text),
    };
    let io = |e: &dyn std::fmt::Display| ImapError::Io {
        op: format!("login with {}", l.server),
        reason: e.to_string(),
    };
    let (mechanism, first) = match l.auth {
        Auth::Password(pw) if has("AUTH=PLAIN") => ("PLAIN", plain(l.user, pw.expose_secret())),
        Auth::Password(pw) => {
            if has("LOGINDISABLED") {
                return Err(ImapError::Unsupported(format!(
                    "{} disables LOGIN and offers no AUTH=PLAIN: it needs another mechanism \
                     (OAuth 2.0: --from/--to-oauth-token-cmd)",
                    l.server
                )));
            }
            return match client.login(l.user, pw.expose_secret()).await {
                Ok(s) => Ok(s),
                Err((async_imap::error::Error::No(t) | async_imap::error::Error::Bad(t), _)) => {
                    Err(refused(&t))
                }
                Err((e, _)) => Err(io(&e)),
            };
        }
        Auth::OAuth2(src) => {
            let token = src.token(l.server).await?;
            if has("AUTH=OAUTHBEARER") {
                (
                    "OAUTHBEARER",
                    oauthbearer(l.user, l.host, l.port, token.expose_secret()),
                )
            } else if has("AUTH=XOAUTH2") {
                ("XOAUTH2", xoauth2(l.user, token.expose_secret()))
            } else {
                return Err(ImapError::Unsupported(format!(
                    "{} offers neither XOAUTH2 nor OAUTHBEARER, so an OAuth token cannot be used; \
                     log in with a password instead",
                    l.server
                )));
            }
        }
    };
    match client.authenticate(mechanism, Once(Some(first))).await {
        Ok(s) => Ok(s),
        Err((async_imap::error::Error::No(t) | async_imap::error::Error::Bad(t), _)) => {
            Err(match l.auth {
                Auth::OAuth2(_) => ImapError::Token {
                    server: l.server.to_string(),
                    reason: format!(
                        "{mechanism} login as {} refused: {} (an expired or wrong token, or missing \
                     IMAP scope)",
                        l.user,
                        crate::raw::clean_server_text(&t)
                    ),
                },
                Auth::Password(_) => refused(&t),
            })
        }
        Err((e, _)) => Err(io(&e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn initial_responses_follow_the_specs() {
        assert_eq!(
            xoauth2("a@b.c", "T"),
            b"user=a@b.c\x01auth=Bearer T\x01\x01"
        );
        assert_eq!(
            oauthbearer("u,=x", "imap.example", 993, "T"),
            b"n,a=u=2C=3Dx,\x01host=imap.example\x01port=993\x01auth=Bearer T\x01\x01"
        );
        assert_eq!(plain("u", "p"), b"\0u\0p");
    }

    #[tokio::test]
    async fn tokens_come_from_files_and_commands_without_leaking() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "tok123\n").unwrap();
        let t = TokenSource::File(f).token("srv").await.unwrap();
        assert_eq!(t.expose_secret(), "tok123");
        let t = TokenSource::Command("echo abc".into())
            .token("srv")
            .await
            .unwrap();
        assert_eq!(t.expose_secret(), "abc");
        let e = TokenSource::Command("echo secret-cmd >&2; exit 3".into())
            .token("srv")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("token command failed") && !e.contains("secret-cmd"),
            "{e}"
        );
        let e = TokenSource::Command("echo two words".into())
            .token("srv")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("single line"));
    }
}
