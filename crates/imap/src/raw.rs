//! Raw commands over an async-imap session: send a tagged command, hand every untagged
//! response to a callback as it arrives (so large FETCH results stream instead of piling
//! up), and turn the tagged reply into a result.

use crate::connect::Stream;
use crate::error::ImapError;
use imap_proto::rfc4315::UidSetMember;
use imap_proto::{Response, ResponseCode, Status};

pub(crate) type Sess = async_imap::Session<Stream>;

/// The tagged OK of a command (only what callers use of its response code).
pub(crate) struct Done {
    /// APPENDUID: the UIDVALIDITY and the UID ranges assigned.
    pub append_uid: Option<(u32, Vec<(u32, u32)>)>,
}

/// Sends `cmd` and reads until its tagged reply.
pub(crate) async fn command<F>(
    sess: &mut Sess,
    cmd: &str,
    op: &str,
    on_untagged: F,
) -> Result<Done, ImapError>
where
    F: FnMut(&Response<'_>) -> Result<(), ImapError>,
{
    let tag = sess.run_command(cmd).await.map_err(|e| ImapError::Io {
        op: op.to_string(),
        reason: e.to_string(),
    })?;
    finish(sess, &tag, op, on_untagged).await
}

/// Reads responses until the tagged reply for `tag`.
pub(crate) async fn finish<F>(
    sess: &mut Sess,
    tag: &imap_proto::RequestId,
    op: &str,
    mut on_untagged: F,
) -> Result<Done, ImapError>
where
    F: FnMut(&Response<'_>) -> Result<(), ImapError>,
{
    loop {
        let step = read_with(sess, op, |resp| step(resp, tag, op, &mut on_untagged)).await?;
        if let Some(done) = step {
            return done;
        }
    }
}

/// Handles one response while waiting for `tag`: `Some` once the command has ended.
fn step<F>(
    resp: &Response<'_>,
    tag: &imap_proto::RequestId,
    op: &str,
    on_untagged: &mut F,
) -> Option<Result<Done, ImapError>>
where
    F: FnMut(&Response<'_>) -> Result<(), ImapError>,
{
    {
        match resp {
            Response::Done {
                tag: t,
                status,
                outcome,
            } if t == tag => {
                let text = outcome_text(outcome.code.as_ref(), outcome.information.as_deref());
                Some(match status {
                    Status::Ok => Ok(Done {
                        append_uid: match &outcome.code {
                            Some(ResponseCode::AppendUid(v, set)) => Some((
                                *v,
                                set.iter()
                                    .map(|m| match m {
                                        UidSetMember::Uid(u) => (*u, *u),
                                        UidSetMember::UidRange(r) => (*r.start(), *r.end()),
                                    })
                                    .collect(),
                            )),
                            _ => None,
                        },
                    }),
                    Status::No => Err(ImapError::No {
                        op: op.to_string(),
                        text,
                    }),
                    Status::Bad => Err(ImapError::Bad {
                        op: op.to_string(),
                        text,
                    }),
                    _ => Err(ImapError::Protocol {
                        op: op.to_string(),
                        text,
                    }),
                })
            }
            Response::Data {
                status: Status::Bye,
                outcome,
            } => Some(Err(ImapError::Io {
                op: op.to_string(),
                reason: format!(
                    "the server closed the session: {}",
                    clean(outcome.information.as_deref().unwrap_or(""))
                ),
            })),
            other => on_untagged(other).err().map(Err),
        }
    }
}

/// Reads one response and hands it to `f`; a closed connection is an error.
pub(crate) async fn read_with<T>(
    sess: &mut Sess,
    op: &str,
    f: impl FnOnce(&Response<'_>) -> T,
) -> Result<T, ImapError> {
    match sess.read_response().await {
        Ok(Some(r)) => Ok(f(r.parsed())),
        Ok(None) => Err(ImapError::Io {
            op: op.to_string(),
            reason: "the server closed the connection".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::Other => Err(ImapError::Protocol {
            op: op.to_string(),
            text: truncate(&e.to_string(), 300),
        }),
        Err(e) => Err(ImapError::Io {
            op: op.to_string(),
            reason: e.to_string(),
        }),
    }
}

fn outcome_text(code: Option<&ResponseCode<'_>>, info: Option<&str>) -> String {
    let info = clean(info.unwrap_or(""));
    match code {
        Some(c) => format!("[{c:?}] {info}"),
        None => info,
    }
}

/// A quoted IMAP string. Mailbox names are 7-bit (modified UTF-7); CR and LF cannot occur.
pub(crate) fn quote(s: &str) -> Result<String, ImapError> {
    if s.contains(['\r', '\n']) || !s.is_ascii() {
        return Err(ImapError::Unsupported(format!(
            "folder name {s:?} cannot be sent as an IMAP quoted string"
        )));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// Server text made safe to print: no control characters, bounded length.
pub(crate) fn clean(s: &str) -> String {
    truncate(
        &s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>(),
        300,
    )
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.trim().to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>().trim())
    }
}

/// async-imap formats NO/BAD as `code: ..., info: Some("text")`; keep the server's text.
pub(crate) fn clean_server_text(s: &str) -> String {
    if let Some(start) = s.find("info: Some(\"") {
        let rest = &s[start + "info: Some(\"".len()..];
        if let Some(end) = rest.rfind("\")") {
            return clean(&rest[..end]);
        }
    }
    clean(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(quote("Sent Items").unwrap(), "\"Sent Items\"");
        assert_eq!(quote("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert!(quote("a\r\nb").is_err());
    }

    #[test]
    fn extracts_server_text() {
        assert_eq!(
            clean_server_text(
                "code: Some(AuthenticationFailed), info: Some(\"Authentication failed.\")"
            ),
            "Authentication failed."
        );
    }
}
