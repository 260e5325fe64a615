//! The independent observer: a small IMAP client (async-imap over plain TCP on 127.0.0.1)
//! that fills mailboxes from a corpus and fingerprints what a server holds.
//!
//! Folder keys are delimiter-independent: the server name is decoded from modified UTF-7
//! and its components are joined with `/` (`"Archive/2023"` on both a `/` and a `.`
//! server). A folder name that itself contains `/` on a `.` server is therefore ambiguous.
//!
//! Dovecot normalises line endings (bare LF is served as CRLF) and does not keep the zone
//! offset of INTERNALDATE (see [`crate::dovecot`]); [`diff`] ignores offsets for that
//! reason, [`diff_strict`] compares them too.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use anyhow::{Context, anyhow};
use async_imap::imap_proto::{Response, Status};
use async_imap::types::{Flag, Name, NameAttribute};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::corpus::{self, CorpusFolder, Msg};

/// An authenticated async-imap session over plain TCP.
pub type ImapSession = async_imap::Session<TcpStream>;

/// Folder key (`/`-joined UTF-8 path) -> the folder's messages, sorted.
pub type Snapshot = BTreeMap<String, Vec<MsgPrint>>;

/// Fingerprint of one message as a server holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgPrint {
    /// Lower-case hex SHA-256 of the full raw `BODY[]`.
    pub sha256: String,
    /// Flags and keywords, sorted, without `\Recent`.
    pub flags: Vec<String>,
    /// INTERNALDATE as unix seconds.
    pub internal_date: i64,
    /// Zone offset of INTERNALDATE in seconds east of UTC.
    pub tz_offset_secs: i32,
    /// Length of the raw `BODY[]` in bytes.
    pub size: u64,
    /// UID on the server (0 for corpus prints); ignored by [`diff`].
    pub uid: u32,
    /// `Subject:` header (lossy UTF-8), for diagnostics only.
    pub subject: String,
}

/// Quote a string as an IMAP quoted string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn is_inbox(path: &[String]) -> bool {
    path.len() == 1 && path[0].eq_ignore_ascii_case("INBOX")
}

/// Server (modified UTF-7) name of a `/`-joined UTF-8 folder path.
fn server_name(key: &str, delimiter: &str) -> String {
    let joined = key.split('/').collect::<Vec<_>>().join(delimiter);
    utf7_imap::encode_utf7_imap(joined)
}

/// Snapshot key of a server (modified UTF-7) mailbox name.
fn folder_key(name: &str, delimiter: Option<&str>) -> String {
    let decoded = if name.is_ascii() {
        utf7_imap::decode_utf7_imap(name.to_owned())
    } else {
        name.to_owned() // already UTF-8 (UTF8=ACCEPT servers)
    };
    match delimiter {
        Some(d) if !d.is_empty() && d != "/" => decoded.split(d).collect::<Vec<_>>().join("/"),
        _ => decoded,
    }
}

pub(crate) fn flag_string(flag: &Flag<'_>) -> Option<String> {
    Some(match flag {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => return None,
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(s) => s.to_string(),
    })
}

fn normalise_flags(mut flags: Vec<String>) -> Vec<String> {
    flags.retain(|f| !f.eq_ignore_ascii_case("\\Recent"));
    flags.sort();
    flags.dedup();
    flags
}

fn subject_of(raw: &[u8]) -> String {
    corpus::header(raw, "subject")
        .map(|s| String::from_utf8_lossy(&s).into_owned())
        .unwrap_or_default()
}

fn sha256_hex(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// Parse an IMAP date-time (`"17-Jul-2023 02:44:25 -0700"`, day possibly space-padded)
/// into (unix seconds, offset seconds east).
pub fn parse_internal_date(s: &str) -> anyhow::Result<(i64, i32)> {
    let dt = chrono::DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z")
        .with_context(|| format!("bad IMAP date-time {s:?}"))?;
    Ok((dt.timestamp(), dt.offset().local_minus_utc()))
}

/// Connect to 127.0.0.1:`port` over plain TCP, read the greeting and LOGIN.
pub async fn login(port: u16, user: &str, password: &str) -> anyhow::Result<ImapSession> {
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    tcp.set_nodelay(true)?;
    let mut client = async_imap::Client::new(tcp);
    client
        .read_response()
        .await?
        .context("connection closed before the greeting")?;
    client
        .login(user, password)
        .await
        .map_err(|(e, _)| anyhow!("LOGIN {user} on port {port}: {e}"))
}

/// A LIST reply's mailbox name as the server means it: imap-proto hands over a quoted
/// string with its escapes (`\"`, `\\`) still in place, and async-imap would quote
/// them again on EXAMINE.
fn listed_name(n: &Name) -> String {
    let raw = n.name();
    if !raw.contains('\\') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn list_all(s: &mut ImapSession) -> anyhow::Result<Vec<Name>> {
    let names: Vec<Name> = s.list(Some(""), Some("*")).await?.try_collect().await?;
    Ok(names)
}

/// The hierarchy delimiter the server reports for the personal namespace (`LIST "" ""`);
/// `"/"` if the server reports NIL (flat namespace).
pub async fn delimiter(s: &mut ImapSession) -> anyhow::Result<String> {
    // async-imap sends the pattern unquoted: `None` becomes `""`.
    let names: Vec<Name> = s.list(Some(""), None).await?.try_collect().await?;
    let first = names.first().context("LIST \"\" \"\" returned nothing")?;
    Ok(first.delimiter().unwrap_or("/").to_owned())
}

fn flag_list(flags: &[String]) -> String {
    format!("({})", flags.join(" "))
}

/// MULTIAPPEND with LITERAL+ (one round trip for the whole batch).
async fn multiappend(s: &mut ImapSession, mailbox: &str, msgs: &[Msg]) -> anyhow::Result<()> {
    let Some((first, rest)) = msgs.split_first() else {
        return Ok(());
    };
    let tag = s
        .run_command(format!(
            "APPEND {} {} \"{}\" {{{}+}}",
            quote(mailbox),
            flag_list(&first.flags),
            first.internal_date,
            first.raw.len()
        ))
        .await?;
    {
        let stream = s.get_mut();
        stream.write_all(&first.raw).await?;
        for m in rest {
            let head = format!(
                " {} \"{}\" {{{}+}}\r\n",
                flag_list(&m.flags),
                m.internal_date,
                m.raw.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&m.raw).await?;
        }
        stream.write_all(b"\r\n").await?;
        stream.flush().await?;
    }
    loop {
        let resp = s
            .read_response()
            .await?
            .context("connection closed during APPEND")?;
        if let Response::Done {
            tag: t,
            status,
            outcome,
        } = resp.parsed()
            && t.0 == tag.0
        {
            return match status {
                Status::Ok => Ok(()),
                _ => Err(anyhow!(
                    "APPEND of {} messages to {mailbox} refused: {status:?} {}",
                    msgs.len(),
                    outcome.information.as_deref().unwrap_or("")
                )),
            };
        }
    }
}

/// One APPEND with a synchronising literal; a refusal carries the server's text.
pub(crate) async fn append_one(
    s: &mut ImapSession,
    mailbox: &str,
    msg: &Msg,
) -> anyhow::Result<()> {
    let tag = s
        .run_command(format!(
            "APPEND {} {} \"{}\" {{{}}}",
            quote(mailbox),
            flag_list(&msg.flags),
            msg.internal_date,
            msg.raw.len()
        ))
        .await?;
    let mut sent = false;
    loop {
        let resp = s
            .read_response()
            .await?
            .context("connection closed during APPEND")?;
        match resp.parsed() {
            Response::Continue { .. } if !sent => {
                let stream = s.get_mut();
                stream.write_all(&msg.raw).await?;
                stream.write_all(b"\r\n").await?;
                stream.flush().await?;
                sent = true;
            }
            Response::Done {
                tag: t,
                status,
                outcome,
            } if t.0 == tag.0 => {
                return match status {
                    Status::Ok => Ok(()),
                    _ => Err(anyhow!(
                        "APPEND to {mailbox} refused: {status:?} {}",
                        outcome.information.as_deref().unwrap_or("")
                    )),
                };
            }
            _ => {}
        }
    }
}

const APPEND_CONNECTIONS: usize = 4;
const BATCH_MESSAGES: usize = 500;
const BATCH_BYTES: usize = 8 << 20;

/// Create every corpus folder (modified UTF-7, parents first, existing ones kept) and
/// APPEND its messages with their flags and internal dates, in corpus order per folder.
/// Uses MULTIAPPEND + LITERAL+ batches over 4 connections when the server advertises
/// both, one APPEND per message otherwise.
pub async fn populate(
    port: u16,
    user: &str,
    password: &str,
    corpus: &[CorpusFolder],
) -> anyhow::Result<()> {
    let mut s = login(port, user, password).await?;
    let delim = delimiter(&mut s).await?;
    let existing: BTreeSet<String> = list_all(&mut s).await?.iter().map(listed_name).collect();
    let caps = s.capabilities().await?;
    let batched = caps.has_str("MULTIAPPEND") && caps.has_str("LITERAL+");

    let mut folders: Vec<&CorpusFolder> = corpus.iter().collect();
    folders.sort_by(|a, b| a.path.cmp(&b.path));
    for f in &folders {
        if is_inbox(&f.path) {
            continue;
        }
        let name = server_name(&f.key(), &delim);
        if !existing.contains(&name) {
            s.create(&name)
                .await
                .with_context(|| format!("CREATE {name}"))?;
        }
    }
    s.logout().await.ok();

    // Biggest folders first so the connections finish together.
    folders.sort_by_key(|f| std::cmp::Reverse(f.messages.len()));
    let queue: Mutex<VecDeque<&CorpusFolder>> = Mutex::new(folders.into_iter().collect());
    let worker = || async {
        let mut s = login(port, user, password).await?;
        loop {
            let Some(folder) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
                break;
            };
            let name = if is_inbox(&folder.path) {
                "INBOX".to_owned()
            } else {
                server_name(&folder.key(), &delim)
            };
            if batched {
                let mut start = 0;
                while start < folder.messages.len() {
                    let mut end = start;
                    let mut bytes = 0;
                    while end < folder.messages.len()
                        && end - start < BATCH_MESSAGES
                        && (end == start || bytes + folder.messages[end].raw.len() <= BATCH_BYTES)
                    {
                        bytes += folder.messages[end].raw.len();
                        end += 1;
                    }
                    multiappend(&mut s, &name, &folder.messages[start..end]).await?;
                    start = end;
                }
            } else {
                for m in &folder.messages {
                    append_one(&mut s, &name, m).await?;
                }
            }
        }
        s.logout().await.ok();
        anyhow::Ok(())
    };
    futures::future::try_join_all((0..APPEND_CONNECTIONS).map(|_| worker())).await?;
    Ok(())
}

/// APPEND one message to the folder `folder_path` (`/`-joined UTF-8 path, e.g.
/// `"Archive/2023"`), translated to the server's delimiter and modified UTF-7.
pub async fn append(
    port: u16,
    user: &str,
    password: &str,
    folder_path: &str,
    msg: &Msg,
) -> anyhow::Result<()> {
    let mut s = login(port, user, password).await?;
    let delim = delimiter(&mut s).await?;
    let name = server_name(folder_path, &delim);
    let res = append_one(&mut s, &name, msg).await;
    s.logout().await.ok();
    res
}

/// Replace the flags of message `uid` in `folder_path` (`/`-joined UTF-8 path) with
/// `flags` (UID STORE ... FLAGS.SILENT).
pub async fn set_flags(
    port: u16,
    user: &str,
    password: &str,
    folder_path: &str,
    uid: u32,
    flags: &[&str],
) -> anyhow::Result<()> {
    let mut s = login(port, user, password).await?;
    let delim = delimiter(&mut s).await?;
    s.select(server_name(folder_path, &delim)).await?;
    let _: Vec<_> = s
        .uid_store(
            uid.to_string(),
            format!("FLAGS.SILENT ({})", flags.join(" ")),
        )
        .await?
        .try_collect()
        .await?;
    s.logout().await.ok();
    Ok(())
}

fn selectable(n: &Name) -> bool {
    !n.attributes().iter().any(|a| match a {
        NameAttribute::NoSelect => true,
        NameAttribute::Extension(e) => e.eq_ignore_ascii_case("\\NonExistent"),
        _ => false,
    })
}

/// Special-use attributes the server reports (folder key -> `"\\Sent"` ...).
pub async fn special_uses(
    port: u16,
    user: &str,
    password: &str,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut s = login(port, user, password).await?;
    let mut out = BTreeMap::new();
    for n in list_all(&mut s).await? {
        let uses: Vec<String> = n
            .attributes()
            .iter()
            .filter_map(|a| match a {
                NameAttribute::All => Some("\\All"),
                NameAttribute::Archive => Some("\\Archive"),
                NameAttribute::Drafts => Some("\\Drafts"),
                NameAttribute::Flagged => Some("\\Flagged"),
                NameAttribute::Junk => Some("\\Junk"),
                NameAttribute::Sent => Some("\\Sent"),
                NameAttribute::Trash => Some("\\Trash"),
                _ => None,
            })
            .map(str::to_owned)
            .collect();
        if !uses.is_empty() {
            out.insert(folder_key(&listed_name(&n), n.delimiter()), uses);
        }
    }
    s.logout().await.ok();
    Ok(out)
}

/// Fingerprint every selectable folder: LIST "" "*", EXAMINE (read-only, so `\Seen` is
/// never changed) and `UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])`.
pub async fn snapshot(port: u16, user: &str, password: &str) -> anyhow::Result<Snapshot> {
    let mut s = login(port, user, password).await?;
    let names = list_all(&mut s).await?;
    let mut snap = Snapshot::new();
    for n in names.iter().filter(|n| selectable(n)) {
        let name = listed_name(n);
        let key = folder_key(&name, n.delimiter());
        let mb = s
            .examine(&name)
            .await
            .with_context(|| format!("EXAMINE {name}"))?;
        let mut prints = Vec::with_capacity(mb.exists as usize);
        if mb.exists > 0 {
            let mut fetches = s
                .uid_fetch("1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
                .await?;
            while let Some(f) = fetches.try_next().await? {
                let raw = f
                    .body()
                    .with_context(|| format!("no BODY[] in a FETCH from {key}"))?;
                let date = f
                    .internal_date()
                    .with_context(|| format!("no INTERNALDATE in a FETCH from {key}"))?;
                prints.push(MsgPrint {
                    sha256: sha256_hex(raw),
                    flags: normalise_flags(f.flags().filter_map(|x| flag_string(&x)).collect()),
                    internal_date: date.timestamp(),
                    tz_offset_secs: date.offset().local_minus_utc(),
                    size: raw.len() as u64,
                    uid: f.uid.unwrap_or(0),
                    subject: subject_of(raw),
                });
            }
        }
        prints.sort();
        snap.insert(key, prints);
    }
    s.logout().await.ok();
    Ok(snap)
}

/// What a server should hold after [`populate`] of `corpus` (uids are 0).
pub fn corpus_snapshot(corpus: &[CorpusFolder]) -> Snapshot {
    corpus
        .iter()
        .map(|f| {
            let mut prints: Vec<MsgPrint> = f
                .messages
                .iter()
                .map(|m| {
                    let (internal_date, tz_offset_secs) = parse_internal_date(&m.internal_date)
                        .expect("corpus internal dates are valid");
                    MsgPrint {
                        sha256: sha256_hex(&m.raw),
                        flags: normalise_flags(m.flags.clone()),
                        internal_date,
                        tz_offset_secs,
                        size: m.raw.len() as u64,
                        uid: 0,
                        subject: subject_of(&m.raw),
                    }
                })
                .collect();
            prints.sort();
            (f.key(), prints)
        })
        .collect()
}

/// Differences between two snapshots, ignoring uids and INTERNALDATE zone offsets
/// (Dovecot's Maildir does not keep them). Compares per folder the multiset of
/// (sha256, flags, internal_date). An extra *empty* folder that is an ancestor of an
/// expected folder (e.g. `Work` for `Work/Clients/Acme`) is not a difference. An empty
/// Vec means identical.
pub fn diff(expected: &Snapshot, actual: &Snapshot) -> Vec<String> {
    diff_impl(expected, actual, false)
}

/// Like [`diff`], but the INTERNALDATE zone offset must match too.
pub fn diff_strict(expected: &Snapshot, actual: &Snapshot) -> Vec<String> {
    diff_impl(expected, actual, true)
}

const MAX_LINES_PER_FOLDER: usize = 40;

type Key = (String, Vec<String>, i64, i32);

fn describe(p: &MsgPrint, with_tz: bool) -> String {
    let date = chrono::DateTime::from_timestamp(p.internal_date, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| p.internal_date.to_string());
    let tz = if with_tz {
        format!(" tz {:+}s", p.tz_offset_secs)
    } else {
        String::new()
    };
    format!(
        "{:?} (sha256 {}, flags [{}], date {date}{tz})",
        p.subject,
        &p.sha256[..p.sha256.len().min(12)],
        p.flags.join(" ")
    )
}

fn diff_impl(expected: &Snapshot, actual: &Snapshot, with_tz: bool) -> Vec<String> {
    let mut out = Vec::new();
    let key = |p: &MsgPrint| -> Key {
        (
            p.sha256.clone(),
            p.flags.clone(),
            p.internal_date,
            if with_tz { p.tz_offset_secs } else { 0 },
        )
    };
    for (folder, exp) in expected {
        let Some(act) = actual.get(folder) else {
            out.push(format!(
                "missing folder {folder:?} ({} messages)",
                exp.len()
            ));
            continue;
        };
        // Multiset difference.
        let mut counts: BTreeMap<Key, (Vec<&MsgPrint>, Vec<&MsgPrint>)> = BTreeMap::new();
        for p in exp {
            counts.entry(key(p)).or_default().0.push(p);
        }
        for p in act {
            counts.entry(key(p)).or_default().1.push(p);
        }
        let mut missing: Vec<&MsgPrint> = Vec::new();
        let mut extra: Vec<&MsgPrint> = Vec::new();
        for (e, a) in counts.values() {
            if e.len() > a.len() {
                missing.extend(&e[a.len()..]);
            } else {
                extra.extend(&a[e.len()..]);
            }
        }
        let mut lines = Vec::new();
        // Same bytes on both sides but different flags/date: report as a change.
        let mut unmatched_extra: Vec<&MsgPrint> = Vec::new();
        for x in extra {
            if let Some(pos) = missing.iter().position(|m| m.sha256 == x.sha256) {
                let m = missing.remove(pos);
                lines.push(format!(
                    "{folder}: message changed: expected {} but found {}",
                    describe(m, with_tz),
                    describe(x, with_tz)
                ));
            } else {
                unmatched_extra.push(x);
            }
        }
        for m in missing {
            lines.push(format!(
                "{folder}: missing message {}",
                describe(m, with_tz)
            ));
        }
        for x in unmatched_extra {
            lines.push(format!("{folder}: extra message {}", describe(x, with_tz)));
        }
        if lines.len() > MAX_LINES_PER_FOLDER {
            let more = lines.len() - MAX_LINES_PER_FOLDER;
            lines.truncate(MAX_LINES_PER_FOLDER);
            lines.push(format!("{folder}: ... and {more} more differences"));
        }
        out.extend(lines);
    }
    for (folder, act) in actual {
        if expected.contains_key(folder) {
            continue;
        }
        let is_ancestor = expected.keys().any(|k| {
            k.len() > folder.len()
                && k.starts_with(folder.as_str())
                && k[folder.len()..].starts_with('/')
        });
        if act.is_empty() && is_ancestor {
            continue;
        }
        out.push(format!("extra folder {folder:?} ({} messages)", act.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse() {
        assert_eq!(
            parse_internal_date("17-Jul-2023 02:44:25 -0700").unwrap(),
            (1_689_587_065, -7 * 3600)
        );
        assert_eq!(
            parse_internal_date(" 7-Jul-2023 02:44:25 +0530").unwrap().1,
            5 * 3600 + 1800
        );
        assert!(parse_internal_date("7-Jul-2023 02:44:25 +0000").is_ok());
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(
            server_name("Projects/Q&A [internal]", "."),
            "Projects.Q&-A [internal]"
        );
        assert_eq!(
            folder_key("Projects.Q&-A [internal]", Some(".")),
            "Projects/Q&A [internal]"
        );
        assert_eq!(
            folder_key(&server_name("Réunions", "/"), Some("/")),
            "Réunions"
        );
        assert_eq!(folder_key(&server_name("日本語", "."), Some(".")), "日本語");
    }

    #[test]
    fn diff_reports() {
        let p = |sha: &str, flags: &[&str]| MsgPrint {
            sha256: sha.into(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            internal_date: 1,
            tz_offset_secs: 0,
            size: 1,
            uid: 0,
            subject: "s".into(),
        };
        let mut a = Snapshot::new();
        a.insert(
            "INBOX".into(),
            vec![p("aa", &[]), p("aa", &[]), p("bb", &["\\Seen"])],
        );
        a.insert("Work/Clients/Acme".into(), vec![]);
        let mut b = a.clone();
        b.insert("Work".into(), vec![]);
        b.insert("Work/Clients".into(), vec![]);
        assert!(diff(&a, &b).is_empty());
        b.get_mut("INBOX").unwrap()[0].uid = 9;
        b.get_mut("INBOX").unwrap()[0].tz_offset_secs = 3600;
        assert!(diff(&a, &b).is_empty());
        assert_eq!(diff_strict(&a, &b).len(), 1);
        b.insert(
            "INBOX".into(),
            vec![p("aa", &[]), p("bb", &[]), p("cc", &[])],
        );
        b.insert("Lists".into(), vec![]);
        let d = diff(&a, &b);
        assert_eq!(d.len(), 4, "{d:#?}");
        b.remove("Work/Clients/Acme");
        assert_eq!(diff(&a, &b).len(), 5);
    }
}
