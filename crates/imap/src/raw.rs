//! Raw commands over an async-imap session: send a tagged command, hand every untagged
//! response to a callback as it arrives (so large FETCH results stream instead of piling
//! up), and turn the tagged reply into a result.

use crate::connect::Stream;
use crate::error::{Code, ImapError};
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
    mut on_untagged: F,
) -> Result<Done, ImapError>
where
    F: FnMut(&Response<'_>) -> Result<(), ImapError>,
{
    command_raw(sess, cmd, op, |r, _| on_untagged(r)).await
}

/// Like [`command`], handing the callback the bytes of each response too.
pub(crate) async fn command_raw<F>(
    sess: &mut Sess,
    cmd: &str,
    op: &str,
    on_untagged: F,
) -> Result<Done, ImapError>
where
    F: FnMut(&Response<'_>, &[u8]) -> Result<(), ImapError>,
{
    let tag = sess.run_command(cmd).await.map_err(|e| ImapError::Io {
        op: op.to_string(),
        reason: e.to_string(),
    })?;
    finish_raw(sess, &tag, op, on_untagged).await
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
    finish_raw(sess, tag, op, |r, _| on_untagged(r)).await
}

async fn finish_raw<F>(
    sess: &mut Sess,
    tag: &imap_proto::RequestId,
    op: &str,
    mut on_untagged: F,
) -> Result<Done, ImapError>
where
    F: FnMut(&Response<'_>, &[u8]) -> Result<(), ImapError>,
{
    loop {
        let step = read_raw(sess, op, |resp, raw| {
            step(resp, tag, op, &mut |r: &Response<'_>| on_untagged(r, raw))
        })
        .await?;
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
                let (code, text) =
                    outcome_code(outcome.code.as_ref(), outcome.information.as_deref());
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
                        code,
                        text,
                    }),
                    Status::Bad => Err(ImapError::Bad {
                        op: op.to_string(),
                        text: with_code(code.as_ref(), text),
                    }),
                    _ => Err(ImapError::Protocol {
                        op: op.to_string(),
                        text: with_code(code.as_ref(), text),
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
    read_raw(sess, op, |r, _| f(r)).await
}

/// Like [`read_with`], also handing over the bytes the response was parsed from (they
/// start with the response; more may follow).
pub(crate) async fn read_raw<T>(
    sess: &mut Sess,
    op: &str,
    f: impl FnOnce(&Response<'_>, &[u8]) -> T,
) -> Result<T, ImapError> {
    match sess.read_response().await {
        Ok(Some(r)) => Ok(f(r.parsed(), r.borrow_owner())),
        Ok(None) => Err(ImapError::Io {
            op: op.to_string(),
            reason: "the server closed the connection".into(),
        }),
        Err(e) => Err(stream_error(op, e)),
    }
}

/// An error of the response stream. The parser's own message quotes the whole input
/// buffer (a message body, possibly megabytes): it never reaches a message.
pub(crate) fn stream_error(op: &str, e: std::io::Error) -> ImapError {
    if let Some(limit) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<crate::guard::TooLarge>())
    {
        return ImapError::LiteralTooLarge {
            op: op.to_string(),
            announced: limit.announced,
            limit: limit.limit,
        };
    }
    match e.kind() {
        std::io::ErrorKind::Other => ImapError::Protocol {
            op: op.to_string(),
            text: "the server sent a response mailshift cannot parse".into(),
        },
        _ => ImapError::Io {
            op: op.to_string(),
            reason: truncate(&e.to_string(), 200),
        },
    }
}

/// The response code of a tagged reply (parsed by imap-proto, or at the start of the
/// text for the codes it does not know) and the text after it.
pub(crate) fn outcome_code(
    code: Option<&ResponseCode<'_>>,
    info: Option<&str>,
) -> (Option<Code>, String) {
    let info = clean(info.unwrap_or(""));
    match code {
        Some(ResponseCode::TryCreate) => (Some(Code::TryCreate), info),
        Some(other) => (
            Some(Code::Other(format!("{other:?}").to_ascii_uppercase())),
            info,
        ),
        None => match Code::parse_leading(&info) {
            Some((c, rest)) => (Some(c), rest.to_string()),
            None => (None, info),
        },
    }
}

fn with_code(code: Option<&Code>, text: String) -> String {
    match code {
        Some(c) => format!("{c} {text}"),
        None => text,
    }
}

/// A quoted IMAP string. Mailbox names are 7-bit (modified UTF-7); CR and LF cannot occur.
pub(crate) fn quote(s: &str) -> Result<String, ImapError> {
    if s.contains(['\r', '\n', '\0']) || !s.is_ascii() {
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

/// Undoes the escaping of an IMAP quoted string (`\\` and `\"`), which imap-proto
/// leaves in place.
pub(crate) fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => out.push(c),
            }
        } else {
            out.push(c);
        }
    }
    out
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
