//! One logged-in IMAP session, usable as a source (read-only: EXAMINE, BODY.PEEK) or as a
//! destination (CREATE, SELECT, MULTIAPPEND). Every command runs under the configured
//! timeout; after a timeout or I/O error the session is marked broken and must be dropped.

use crate::connect::ServerConfig;
use crate::error::ImapError;
use crate::raw::{self, Sess, quote};
use async_trait::async_trait;
use imap_proto::rfc4315::UidSetMember;
use imap_proto::{
    AttributeValue, Capability, MailboxDatum, NameAttribute, Response, ResponseCode, Status,
};
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::{FlagSet, PermanentFlags};
use mailshift_core::folder::{ListedFolder, SpecialUse};
use mailshift_core::plan::MessageMeta;
use mailshift_core::ports::{
    AppendItem, Appended, Capabilities, FetchedHeader, FetchedMessage, FolderStatus,
    LocatedMessage, MailSource, MailTarget, Transfer,
};
use mailshift_core::uidset;
use std::future::Future;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub struct ImapSession {
    sess: Sess,
    cfg: ServerConfig,
    caps: Capabilities,
    /// Messages in the selected folder, kept current from EXISTS responses.
    exists: u32,
    selected: Option<String>,
    broken: bool,
}

impl Drop for ImapSession {
    fn drop(&mut self) {
        metrics::gauge!("mailshift_imap_connections", "server" => self.cfg.endpoint.host_port())
            .decrement(1.0);
    }
}

impl ImapSession {
    pub(crate) async fn start(mut sess: Sess, cfg: ServerConfig) -> Result<Self, ImapError> {
        let mut names: Vec<String> = Vec::new();
        raw::command(&mut sess, "CAPABILITY", "CAPABILITY", |r| {
            if let Response::Capabilities(list) = r {
                for c in list {
                    match c {
                        Capability::Imap4rev1 => names.push("IMAP4REV1".into()),
                        Capability::Atom(a) => names.push(a.to_ascii_uppercase()),
                        Capability::Auth(a) => {
                            names.push(format!("AUTH={}", a.to_ascii_uppercase()))
                        }
                    }
                }
            }
            Ok(())
        })
        .await?;
        let caps = parse_capabilities(&names);
        tracing::debug!(server = %cfg.label(), capabilities = ?names, "logged in");
        if cfg.compress && names.iter().any(|n| n == "COMPRESS=DEFLATE") {
            // RFC 4978: everything after this is DEFLATE-compressed both ways; message
            // bodies shrink by half or more, which counts on slow links.
            sess = match tokio::time::timeout(
                cfg.timeout,
                sess.compress(|d| {
                    tokio::io::BufWriter::with_capacity(
                        64 * 1024,
                        crate::connect::Transport::Deflate(Box::new(d)),
                    )
                }),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(ImapError::Io {
                        op: format!("COMPRESS DEFLATE with {}", cfg.label()),
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(ImapError::Timeout {
                        op: "COMPRESS DEFLATE".into(),
                        after: cfg.timeout,
                    });
                }
            };
            tracing::debug!(server = %cfg.label(), "compression on");
        }
        if names.iter().any(|n| n == "ID") {
            // RFC 2971: some providers throttle or refuse clients that do not say who
            // they are. What the server answers is only logged.
            match tokio::time::timeout(
                cfg.timeout,
                sess.id([
                    ("name", Some("mailshift")),
                    ("version", Some(env!("CARGO_PKG_VERSION"))),
                ]),
            )
            .await
            {
                Ok(Ok(server)) => tracing::debug!(server = %cfg.label(), id = ?server, "ID"),
                Ok(Err(e)) => tracing::debug!(server = %cfg.label(), error = %e, "ID refused"),
                Err(_) => {
                    return Err(ImapError::Timeout {
                        op: "ID".into(),
                        after: cfg.timeout,
                    });
                }
            }
        }
        metrics::gauge!("mailshift_imap_connections", "server" => cfg.endpoint.host_port())
            .increment(1.0);
        Ok(ImapSession {
            sess,
            cfg,
            caps,
            exists: 0,
            selected: None,
            broken: false,
        })
    }

    /// Whether the session failed in a way that leaves the protocol state unknown.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.sess.logout()).await;
    }

    /// Runs one operation under the timeout; classifies and labels its error.
    async fn timed<'a, T, F>(
        &'a mut self,
        op: String,
        f: impl FnOnce(&'a mut Self) -> F,
    ) -> mailshift_core::Result<T>
    where
        F: Future<Output = Result<T, ImapError>> + 'a,
    {
        use tracing::Instrument;
        let label = self.cfg.label();
        let after = self.cfg.timeout;
        let (pauses, host) = (self.cfg.pauses.clone(), self.cfg.endpoint.host_port());
        let command = command_of(&op);
        // One span per IMAP command: its name, the side and the folder; never
        // credentials or message content.
        let span = tracing::info_span!(
            "imap.command",
            command,
            side = %self.cfg.side,
            server = %host,
            folder = self.selected.as_deref().unwrap_or(""),
            error = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(after, f(self))
            .instrument(span.clone())
            .await;
        metrics::histogram!("mailshift_imap_command_duration_seconds", "command" => command)
            .record(started.elapsed().as_secs_f64());
        let result = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let e = mailshift_core::Error::from(e).context(label);
                if let mailshift_core::ErrorKind::Throttled(hint) = &e.kind {
                    // Every session of this process holds back from this server.
                    let wait = hint.unwrap_or(std::time::Duration::from_secs(5));
                    pauses.pause(&host, wait);
                }
                Err(e)
            }
            Err(_) => {
                Err(mailshift_core::Error::from(ImapError::Timeout { op, after }).context(label))
            }
        };
        if let Err(e) = &result {
            span.record("error", e.kind.as_str());
        }
        result
    }

    async fn open(&mut self, folder: &str, read_only: bool) -> Result<FolderStatus, ImapError> {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        let cond = if self.caps.condstore {
            " (CONDSTORE)"
        } else {
            ""
        };
        let cmd = format!("{verb} {}{cond}", quote(folder)?);
        let op = format!("{verb} {folder}");
        let mut st = FolderStatus {
            uidvalidity: 0,
            uidnext: None,
            exists: 0,
            highest_modseq: None,
            permanent_flags: PermanentFlags::unrestricted(),
        };
        let mut saw_validity = false;
        let mut saw_permanent = false;
        self.selected = None;
        let result = raw::command(&mut self.sess, &cmd, &op, |r| {
            match r {
                Response::Data {
                    status: Status::Ok,
                    outcome,
                } => match &outcome.code {
                    Some(ResponseCode::UidValidity(v)) => {
                        st.uidvalidity = *v;
                        saw_validity = true;
                    }
                    Some(ResponseCode::UidNext(v)) => st.uidnext = Some(*v),
                    Some(ResponseCode::HighestModSeq(v)) => st.highest_modseq = Some(*v),
                    Some(ResponseCode::PermanentFlags(flags)) => {
                        saw_permanent = true;
                        st.permanent_flags.any_keyword = flags.iter().any(|f| f == "\\*");
                        st.permanent_flags.keywords = flags
                            .iter()
                            .filter(|f| !f.starts_with('\\'))
                            .map(|f| f.to_string())
                            .collect();
                    }
                    _ => {}
                },
                Response::MailboxData(MailboxDatum::Exists(n)) => st.exists = *n,
                _ => {}
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            return Err(self.note_error(e));
        }
        if !saw_permanent {
            st.permanent_flags = PermanentFlags::unrestricted();
        }
        if !saw_validity {
            return Err(ImapError::Protocol {
                op,
                text: "no UIDVALIDITY in the reply; mailshift needs UIDs to copy safely".into(),
            });
        }
        self.exists = st.exists;
        self.selected = Some(folder.to_string());
        Ok(st)
    }

    fn note_error(&mut self, e: ImapError) -> ImapError {
        if matches!(
            e,
            ImapError::Io { .. } | ImapError::Timeout { .. } | ImapError::Protocol { .. }
        ) {
            self.broken = true;
        }
        e
    }

    fn require_selected(&self, op: &str) -> Result<&str, ImapError> {
        self.selected.as_deref().ok_or_else(|| ImapError::Protocol {
            op: op.to_string(),
            text: "no folder selected".into(),
        })
    }

    async fn list_inner(&mut self) -> Result<(Vec<ListedFolder>, Option<char>), ImapError> {
        let cmd = if self.caps.special_use {
            "LIST \"\" \"*\" RETURN (SPECIAL-USE)"
        } else {
            "LIST \"\" \"*\""
        };
        let mut out = Vec::new();
        let mut delim: Option<char> = None;
        let r = raw::command(&mut self.sess, cmd, "LIST", |r| {
            if let Response::MailboxData(MailboxDatum::List(data)) = r {
                let d = data.delimiter.as_deref().and_then(|d| d.chars().next());
                if delim.is_none() {
                    delim = d;
                }
                let mut special = None;
                let mut selectable = true;
                for a in &data.name_attributes {
                    match a {
                        NameAttribute::NoSelect => selectable = false,
                        NameAttribute::All => special = Some(SpecialUse::All),
                        NameAttribute::Archive => special = Some(SpecialUse::Archive),
                        NameAttribute::Drafts => special = Some(SpecialUse::Drafts),
                        NameAttribute::Flagged => special = Some(SpecialUse::Flagged),
                        NameAttribute::Junk => special = Some(SpecialUse::Junk),
                        NameAttribute::Sent => special = Some(SpecialUse::Sent),
                        NameAttribute::Trash => special = Some(SpecialUse::Trash),
                        NameAttribute::Extension(e) => {
                            if e.eq_ignore_ascii_case("\\NonExistent") {
                                selectable = false;
                            } else if let Some(s) = SpecialUse::from_attribute(e) {
                                special = Some(s);
                            }
                        }
                        _ => {}
                    }
                }
                out.push(ListedFolder {
                    raw: data.name.to_string(),
                    delimiter: d,
                    special_use: special,
                    selectable,
                });
            }
            Ok(())
        })
        .await;
        r.map_err(|e| self.note_error(e))?;
        if delim.is_none() {
            raw::command(&mut self.sess, "LIST \"\" \"\"", "LIST", |r| {
                if let Response::MailboxData(MailboxDatum::List(data)) = r {
                    delim = data.delimiter.as_deref().and_then(|d| d.chars().next());
                }
                Ok(())
            })
            .await
            .map_err(|e| self.note_error(e))?;
        }
        Ok((out, delim))
    }

    async fn list_messages_inner(&mut self, from_uid: u32) -> Result<Vec<MessageMeta>, ImapError> {
        let from = from_uid.max(1);
        self.list_set(&format!("{from}:*"), from).await
    }

    /// UID, size, flags and date of the messages in a UID set, ascending; UIDs below
    /// `min_uid` are dropped (`N:*` returns the highest message even below N).
    async fn list_set(&mut self, set: &str, min_uid: u32) -> Result<Vec<MessageMeta>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        if self.exists == 0 || set.is_empty() {
            return Ok(Vec::new());
        }
        let from = min_uid;
        let cmd = format!("UID FETCH {set} (UID RFC822.SIZE FLAGS INTERNALDATE)");
        let mut out = Vec::with_capacity(self.exists as usize);
        let r = raw::command(
            &mut self.sess,
            &cmd,
            &format!("listing messages of {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut m = MessageMeta {
                        uid: 0,
                        size: 0,
                        flags: FlagSet::new(),
                        internal_date: String::new(),
                    };
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => m.uid = *u,
                            AttributeValue::Rfc822Size(s) => m.size = *s,
                            AttributeValue::Flags(f) => {
                                m.flags = f.iter().map(|s| s.as_ref()).collect()
                            }
                            AttributeValue::InternalDate(d) => m.internal_date = d.to_string(),
                            _ => {}
                        }
                    }
                    // `N:*` also returns the highest message when N is above it.
                    if m.uid >= from && !m.internal_date.is_empty() {
                        out.push(m);
                    }
                }
                Ok(())
            },
        )
        .await;
        r.map_err(|e| self.note_error(e))?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    async fn fetch_inner(&mut self, uids: &[u32]) -> Result<Vec<FetchedMessage>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = format!(
            "UID FETCH {} (UID FLAGS INTERNALDATE BODY.PEEK[])",
            uidset::compress(uids)
        );
        let mut out: Vec<FetchedMessage> = Vec::with_capacity(uids.len());
        let r = raw::command(
            &mut self.sess,
            &cmd,
            &format!("fetching messages of {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut uid = None;
                    let mut flags = FlagSet::new();
                    let mut date = None;
                    let mut body = None;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Flags(f) => {
                                flags = f.iter().map(|s| s.as_ref()).collect()
                            }
                            AttributeValue::InternalDate(d) => date = Some(d.to_string()),
                            AttributeValue::BodySection {
                                section: None,
                                data: Some(d),
                                ..
                            } => body = Some(d.to_vec()),
                            AttributeValue::Rfc822(Some(d)) => body = Some(d.to_vec()),
                            _ => {}
                        }
                    }
                    // Unsolicited FETCH (flag updates of other messages) carries no body.
                    if let (Some(uid), Some(internal_date), Some(raw)) = (uid, date, body) {
                        out.push(FetchedMessage {
                            uid,
                            flags,
                            internal_date,
                            raw,
                        });
                    }
                }
                Ok(())
            },
        )
        .await;
        r.map_err(|e| self.note_error(e))?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    async fn create_inner(&mut self, folder: &str) -> Result<(), ImapError> {
        let cmd = format!("CREATE {}", quote(folder)?);
        match raw::command(
            &mut self.sess,
            &cmd,
            &format!("creating folder {folder}"),
            |_| Ok(()),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(ImapError::No { text, .. })
                if text.to_ascii_lowercase().contains("alreadyexists")
                    || text.to_ascii_lowercase().contains("already exists") =>
            {
                Ok(())
            }
            Err(e) => Err(self.note_error(e)),
        }
    }

    fn uses_sync_literal(&self, len: usize) -> bool {
        !(self.caps.literal_plus || (self.caps.literal_minus && len <= 4096))
    }

    fn item_head(&self, item: &AppendItem<'_>) -> String {
        let plus = if self.uses_sync_literal(item.raw.len()) {
            ""
        } else {
            "+"
        };
        let flags = if item.flags.is_empty() {
            String::new()
        } else {
            format!("{} ", item.flags.to_imap_list())
        };
        format!(
            "{flags}\"{}\" {{{}{plus}}}",
            item.internal_date,
            item.raw.len()
        )
    }

    async fn append_inner(
        &mut self,
        folder: &str,
        items: &[AppendItem<'_>],
    ) -> Result<Appended, ImapError> {
        if items.is_empty() {
            return Ok(Appended::Unknown);
        }
        if items.len() > 1 && !self.caps.multiappend {
            return Err(ImapError::Unsupported(format!(
                "{} has no MULTIAPPEND; append one message at a time",
                self.cfg.label()
            )));
        }
        let op = format!("appending {} message(s) to {folder}", items.len());
        let first = format!("APPEND {} {}", quote(folder)?, self.item_head(&items[0]));
        let tag = match self.sess.run_command(&first).await {
            Ok(t) => t,
            Err(e) => {
                return Err(self.note_error(ImapError::Io {
                    op,
                    reason: e.to_string(),
                }));
            }
        };
        let mut exists = self.exists;
        let res = self.send_literals(&tag, &op, items, &mut exists).await;
        let res = match res {
            Ok(()) => {
                raw::finish(&mut self.sess, &tag, &op, |r| {
                    if let Response::MailboxData(MailboxDatum::Exists(n)) = r {
                        exists = *n;
                    }
                    Ok(())
                })
                .await
            }
            Err(e) => Err(e),
        };
        self.exists = exists;
        let done = res.map_err(|e| self.note_error(e))?;
        match done.append_uid {
            Some((validity, ranges)) => {
                let uids = uidset::expand(&ranges);
                if uids.len() == items.len() {
                    Ok(Appended::Uids {
                        uidvalidity: validity,
                        uids,
                    })
                } else {
                    Ok(Appended::Unknown)
                }
            }
            None => Ok(Appended::Unknown),
        }
    }

    /// Writes the literals of an APPEND whose first line is sent, waiting for the
    /// server's go-ahead only for synchronising literals.
    async fn send_literals(
        &mut self,
        tag: &imap_proto::RequestId,
        op: &str,
        items: &[AppendItem<'_>],
        exists: &mut u32,
    ) -> Result<(), ImapError> {
        let io = |e: std::io::Error| ImapError::Io {
            op: op.to_string(),
            reason: e.to_string(),
        };
        for (i, item) in items.iter().enumerate() {
            let sync = self.uses_sync_literal(item.raw.len());
            if i > 0 {
                let head = format!(" {}\r\n", self.item_head(item));
                self.sess
                    .get_mut()
                    .write_all(head.as_bytes())
                    .await
                    .map_err(io)?;
                if sync {
                    self.sess.get_mut().flush().await.map_err(io)?;
                }
            }
            if sync {
                self.wait_continuation(tag, op, exists).await?;
            }
            self.sess.get_mut().write_all(item.raw).await.map_err(io)?;
        }
        self.sess.get_mut().write_all(b"\r\n").await.map_err(io)?;
        self.sess.get_mut().flush().await.map_err(io)?;
        Ok(())
    }

    async fn wait_continuation(
        &mut self,
        tag: &imap_proto::RequestId,
        op: &str,
        exists: &mut u32,
    ) -> Result<(), ImapError> {
        loop {
            let step = raw::read_with(&mut self.sess, op, |resp| match resp {
                Response::Continue(_) => Some(Ok(())),
                Response::Done {
                    tag: t, outcome, ..
                } if t == tag => Some(Err(ImapError::No {
                    op: op.to_string(),
                    text: raw::clean(outcome.information.as_deref().unwrap_or("refused")),
                })),
                Response::MailboxData(MailboxDatum::Exists(n)) => {
                    *exists = *n;
                    None
                }
                _ => None,
            })
            .await?;
            if let Some(r) = step {
                return r;
            }
        }
    }

    /// Runs a command on the selected folder, tracking EXISTS/EXPUNGE and collecting
    /// COPYUID (tagged or untagged, as MOVE sends it).
    async fn run_tracked(
        &mut self,
        cmd: &str,
        op: &str,
        copy_uid: &mut Vec<(u32, u32)>,
    ) -> Result<(), ImapError> {
        let mut exists = self.exists;
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        let collect = |code: &Option<ResponseCode<'_>>, pairs: &mut Vec<(u32, u32)>| {
            if let Some(ResponseCode::CopyUid(_, from, to)) = code {
                let a = uidset::expand(&ranges(from));
                let b = uidset::expand(&ranges(to));
                if a.len() == b.len() {
                    pairs.extend(a.into_iter().zip(b));
                }
            }
        };
        let tag = self.sess.run_command(cmd).await.map_err(|e| ImapError::Io {
            op: op.to_string(),
            reason: e.to_string(),
        });
        let tag = match tag {
            Ok(t) => t,
            Err(e) => return Err(self.note_error(e)),
        };
        let r = loop {
            let step = raw::read_with(&mut self.sess, op, |resp| match resp {
                Response::Done {
                    tag: t,
                    status: Status::Ok,
                    outcome,
                } if *t == tag => {
                    collect(&outcome.code, &mut pairs);
                    Some(Ok(()))
                }
                Response::Done {
                    tag: t, outcome, ..
                } if *t == tag => Some(Err(ImapError::No {
                    op: op.to_string(),
                    text: raw::clean(outcome.information.as_deref().unwrap_or("refused")),
                })),
                Response::Data {
                    status: Status::Ok,
                    outcome,
                } => {
                    collect(&outcome.code, &mut pairs);
                    None
                }
                Response::MailboxData(MailboxDatum::Exists(n)) => {
                    exists = *n;
                    None
                }
                Response::Expunge(_) => {
                    exists = exists.saturating_sub(1);
                    None
                }
                _ => None,
            })
            .await;
            match step {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        self.exists = exists;
        copy_uid.extend(pairs);
        r.map_err(|e| self.note_error(e))
    }

    async fn fetch_headers_inner(&mut self, uids: &[u32]) -> Result<Vec<FetchedHeader>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = format!(
            "UID FETCH {} (UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER])",
            sorted_set(uids)
        );
        let mut out = Vec::with_capacity(uids.len());
        let r = raw::command(
            &mut self.sess,
            &cmd,
            &format!("fetching headers of {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut uid = None;
                    let mut size = 0;
                    let mut flags = FlagSet::new();
                    let mut date = None;
                    let mut header = None;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Rfc822Size(n) => size = *n,
                            AttributeValue::Flags(f) => {
                                flags = f.iter().map(|s| s.as_ref()).collect()
                            }
                            AttributeValue::InternalDate(d) => date = Some(d.to_string()),
                            AttributeValue::BodySection { data: Some(d), .. } => {
                                header = Some(d.to_vec())
                            }
                            AttributeValue::BodySection { data: None, .. } => {
                                header = Some(Vec::new())
                            }
                            _ => {}
                        }
                    }
                    if let (Some(uid), Some(internal_date), Some(header)) = (uid, date, header) {
                        out.push(FetchedHeader {
                            uid,
                            size,
                            flags,
                            internal_date,
                            header,
                        });
                    }
                }
                Ok(())
            },
        )
        .await;
        r.map_err(|e| self.note_error(e))?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    async fn uids_inner(&mut self) -> Result<Vec<u32>, ImapError> {
        let folder = self.require_selected("UID SEARCH")?.to_string();
        if self.exists == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(self.exists as usize);
        raw::command(
            &mut self.sess,
            "UID SEARCH ALL",
            &format!("listing UIDs of {folder}"),
            |r| {
                if let Response::MailboxData(MailboxDatum::Search(ids)) = r {
                    out.extend_from_slice(ids);
                }
                Ok(())
            },
        )
        .await
        .map_err(|e| self.note_error(e))?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    async fn changed_since_inner(&mut self, modseq: u64) -> Result<Vec<(u32, FlagSet)>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        if self.exists == 0 {
            return Ok(Vec::new());
        }
        let cmd = format!("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {modseq})");
        let mut out = Vec::new();
        raw::command(
            &mut self.sess,
            &cmd,
            &format!("listing flag changes of {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut uid = None;
                    let mut flags = None;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Flags(f) => {
                                flags = Some(f.iter().map(|s| s.as_ref()).collect::<FlagSet>())
                            }
                            _ => {}
                        }
                    }
                    if let (Some(uid), Some(flags)) = (uid, flags) {
                        out.push((uid, flags));
                    }
                }
                Ok(())
            },
        )
        .await
        .map_err(|e| self.note_error(e))?;
        out.sort_by_key(|(u, _)| *u);
        out.dedup_by_key(|(u, _)| *u);
        Ok(out)
    }

    async fn wait_inner(&mut self, timeout: Duration) -> Result<bool, ImapError> {
        let folder = self.require_selected("IDLE")?.to_string();
        let op = format!("waiting for new mail in {folder}");
        let before = self.exists;
        if !self.caps.idle {
            tokio::time::sleep(timeout).await;
            let mut exists = before;
            raw::command(&mut self.sess, "NOOP", &op, |r| {
                if let Response::MailboxData(MailboxDatum::Exists(n)) = r {
                    exists = *n;
                }
                Ok(())
            })
            .await
            .map_err(|e| self.note_error(e))?;
            self.exists = exists;
            return Ok(exists != before);
        }
        let tag = match self.sess.run_command("IDLE").await {
            Ok(t) => t,
            Err(e) => {
                return Err(self.note_error(ImapError::Io {
                    op,
                    reason: e.to_string(),
                }));
            }
        };
        let mut exists = before;
        // The go-ahead first, then any EXISTS until the deadline.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = false;
        let mut idling = false;
        loop {
            let read = raw::read_with(&mut self.sess, &op, |resp| match resp {
                Response::Continue(_) => Some(true),
                Response::MailboxData(MailboxDatum::Exists(n)) => {
                    exists = *n;
                    Some(false)
                }
                Response::Expunge(_) => {
                    exists = exists.saturating_sub(1);
                    None
                }
                _ => None,
            });
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(Some(true))) => idling = true,
                Ok(Ok(Some(false))) => {
                    if exists > before {
                        changed = true;
                        break;
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(self.note_error(e)),
                Err(_) => break,
            }
            if !idling && tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let io = |e: std::io::Error| ImapError::Io {
            op: op.clone(),
            reason: e.to_string(),
        };
        let w = self.sess.get_mut();
        let sent = async {
            w.write_all(b"DONE\r\n").await?;
            w.flush().await
        }
        .await;
        if let Err(e) = sent {
            return Err(self.note_error(io(e)));
        }
        let r = raw::finish(&mut self.sess, &tag, &op, |r| {
            if let Response::MailboxData(MailboxDatum::Exists(n)) = r {
                exists = *n;
            }
            Ok(())
        })
        .await;
        r.map_err(|e| self.note_error(e))?;
        self.exists = exists;
        Ok(changed || exists > before)
    }

    async fn set_flags_inner(&mut self, uids: &[u32], flags: &FlagSet) -> Result<(), ImapError> {
        let folder = self.require_selected("UID STORE")?.to_string();
        if uids.is_empty() {
            return Ok(());
        }
        let cmd = format!(
            "UID STORE {} FLAGS.SILENT {}",
            sorted_set(uids),
            flags.to_imap_list()
        );
        self.run_tracked(&cmd, &format!("setting flags in {folder}"), &mut Vec::new())
            .await
    }

    async fn expunge_inner(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        let folder = self.require_selected("UID EXPUNGE")?.to_string();
        if uids.is_empty() {
            return Ok(());
        }
        let set = sorted_set(uids);
        let op = format!("deleting messages in {folder}");
        if !self.caps.uidplus {
            // Without UID EXPUNGE, EXPUNGE removes every \Deleted message of the folder:
            // safe only when no other message carries \Deleted (a user's pending delete).
            let mut marked: Vec<u32> = Vec::new();
            raw::command(
                &mut self.sess,
                "UID SEARCH DELETED",
                &format!("listing deleted messages of {folder}"),
                |r| {
                    if let Response::MailboxData(MailboxDatum::Search(ids)) = r {
                        marked.extend_from_slice(ids);
                    }
                    Ok(())
                },
            )
            .await
            .map_err(|e| self.note_error(e))?;
            let ours: std::collections::HashSet<u32> = uids.iter().copied().collect();
            if marked.iter().any(|u| !ours.contains(u)) {
                return Err(ImapError::Unsupported(format!(
                    "{} has no UIDPLUS and {folder} holds messages a user marked \\Deleted: \
                     mailshift cannot delete single messages there without expunging those too",
                    self.cfg.label()
                )));
            }
            self.run_tracked(
                &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
                &op,
                &mut Vec::new(),
            )
            .await?;
            return self.run_tracked("EXPUNGE", &op, &mut Vec::new()).await;
        }
        self.run_tracked(
            &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
            &op,
            &mut Vec::new(),
        )
        .await?;
        self.run_tracked(&format!("UID EXPUNGE {set}"), &op, &mut Vec::new())
            .await
    }

    async fn transfer_inner(
        &mut self,
        uids: &[u32],
        to: &str,
        how: Transfer,
    ) -> Result<Vec<(u32, u32)>, ImapError> {
        let folder = self.require_selected("UID MOVE")?.to_string();
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = sorted_set(uids);
        let mut pairs = Vec::new();
        let op = format!("moving messages from {folder} to {to}");
        match how {
            Transfer::Move if self.caps.move_ => {
                self.run_tracked(&format!("UID MOVE {set} {}", quote(to)?), &op, &mut pairs)
                    .await?;
            }
            Transfer::Move => {
                self.run_tracked(&format!("UID COPY {set} {}", quote(to)?), &op, &mut pairs)
                    .await?;
                self.expunge_inner(uids).await?;
            }
            Transfer::Copy => {
                self.run_tracked(&format!("UID COPY {set} {}", quote(to)?), &op, &mut pairs)
                    .await?;
            }
        }
        Ok(pairs)
    }

    async fn delete_folder_inner(&mut self, folder: &str) -> Result<(), ImapError> {
        if self.selected.as_deref() == Some(folder) {
            // Some servers refuse to delete the selected folder.
            self.run_tracked("UNSELECT", "UNSELECT", &mut Vec::new())
                .await
                .ok();
            self.selected = None;
        }
        self.run_tracked(
            &format!("DELETE {}", quote(folder)?),
            &format!("deleting folder {folder}"),
            &mut Vec::new(),
        )
        .await
    }

    async fn locate_inner(&mut self, from_uid: u32) -> Result<Vec<LocatedMessage>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        // Refresh EXISTS first: messages may have been appended since SELECT.
        let mut exists = self.exists;
        raw::command(&mut self.sess, "NOOP", "NOOP", |r| {
            if let Response::MailboxData(MailboxDatum::Exists(n)) = r {
                exists = *n;
            }
            Ok(())
        })
        .await
        .map_err(|e| self.note_error(e))?;
        self.exists = exists;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let from = from_uid.max(1);
        let cmd = format!("UID FETCH {from}:* (UID RFC822.SIZE BODY.PEEK[])");
        let mut out = Vec::new();
        let r = raw::command(
            &mut self.sess,
            &cmd,
            &format!("locating messages in {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut uid = None;
                    let mut body: Option<Fingerprint> = None;
                    let mut size = 0;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Rfc822Size(s) => size = *s,
                            AttributeValue::BodySection {
                                section: None,
                                data: Some(d),
                                ..
                            } => body = Some(Fingerprint::of(d)),
                            _ => {}
                        }
                    }
                    if let (Some(uid), Some(fingerprint)) = (uid, body)
                        && uid >= from
                    {
                        out.push(LocatedMessage {
                            uid,
                            size,
                            fingerprint,
                        });
                    }
                }
                Ok(())
            },
        )
        .await;
        r.map_err(|e| self.note_error(e))?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }
}

fn ranges(set: &[UidSetMember]) -> Vec<(u32, u32)> {
    set.iter()
        .map(|m| match m {
            UidSetMember::Uid(u) => (*u, *u),
            UidSetMember::UidRange(r) => (*r.start(), *r.end()),
        })
        .collect()
}

fn sorted_set(uids: &[u32]) -> String {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    uidset::compress(&v)
}

fn parse_capabilities(names: &[String]) -> Capabilities {
    let has = |n: &str| names.iter().any(|c| c == n);
    Capabilities {
        uidplus: has("UIDPLUS"),
        multiappend: has("MULTIAPPEND"),
        literal_plus: has("LITERAL+"),
        literal_minus: has("LITERAL-"),
        condstore: has("CONDSTORE") || has("QRESYNC"),
        quota: has("QUOTA"),
        qresync: has("QRESYNC"),
        move_: has("MOVE"),
        special_use: has("SPECIAL-USE"),
        idle: has("IDLE"),
        append_limit: names
            .iter()
            .find_map(|c| c.strip_prefix("APPENDLIMIT=").and_then(|n| n.parse().ok())),
    }
}

#[async_trait]
impl MailSource for ImapSession {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    async fn list_folders(&mut self) -> mailshift_core::Result<(Vec<ListedFolder>, Option<char>)> {
        self.timed("LIST".into(), |s| s.list_inner()).await
    }

    async fn examine(&mut self, folder: &str) -> mailshift_core::Result<FolderStatus> {
        self.timed(format!("EXAMINE {folder}"), |s| s.open(folder, true))
            .await
    }

    async fn list_messages(&mut self, from_uid: u32) -> mailshift_core::Result<Vec<MessageMeta>> {
        self.timed("listing messages".into(), |s| {
            s.list_messages_inner(from_uid)
        })
        .await
    }

    async fn list_messages_of(&mut self, uids: &[u32]) -> mailshift_core::Result<Vec<MessageMeta>> {
        let set = sorted_set(uids);
        self.timed("listing messages".into(), |s| async move {
            s.list_set(&set, 1).await
        })
        .await
    }

    async fn fetch_messages(
        &mut self,
        uids: &[u32],
    ) -> mailshift_core::Result<Vec<FetchedMessage>> {
        self.timed("fetching messages".into(), |s| s.fetch_inner(uids))
            .await
    }

    async fn fetch_headers(&mut self, uids: &[u32]) -> mailshift_core::Result<Vec<FetchedHeader>> {
        self.timed("fetching headers".into(), |s| s.fetch_headers_inner(uids))
            .await
    }

    async fn uids(&mut self) -> mailshift_core::Result<Vec<u32>> {
        self.timed("UID SEARCH".into(), |s| s.uids_inner()).await
    }

    async fn changed_since(&mut self, modseq: u64) -> mailshift_core::Result<Vec<(u32, FlagSet)>> {
        self.timed("listing flag changes".into(), |s| {
            s.changed_since_inner(modseq)
        })
        .await
    }

    async fn wait_for_change(&mut self, timeout: Duration) -> mailshift_core::Result<bool> {
        // The command timeout applies on top of the wait itself.
        let label = self.cfg.label();
        let after = self.cfg.timeout + timeout;
        match tokio::time::timeout(after, self.wait_inner(timeout)).await {
            Ok(r) => r.map_err(|e| mailshift_core::Error::from(e).context(label)),
            Err(_) => {
                self.broken = true;
                Err(mailshift_core::Error::from(ImapError::Timeout {
                    op: "IDLE".into(),
                    after,
                })
                .context(label))
            }
        }
    }
}

#[async_trait]
impl MailTarget for ImapSession {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    async fn storage_quota(&mut self) -> mailshift_core::Result<Option<(u64, u64)>> {
        if !self.caps.quota {
            return Ok(None);
        }
        self.timed("GETQUOTAROOT".into(), |s| async move {
            let (_, quotas) = s
                .sess
                .get_quota_root("INBOX")
                .await
                .map_err(|e| ImapError::Io {
                    op: "GETQUOTAROOT INBOX".into(),
                    reason: e.to_string(),
                })?;
            // STORAGE is counted in units of 1024 octets (RFC 9208).
            Ok(quotas
                .iter()
                .flat_map(|q| q.resources.iter())
                .find(|r| matches!(r.name, async_imap::types::QuotaResourceName::Storage))
                .map(|r| (r.usage * 1024, r.limit * 1024)))
        })
        .await
    }

    async fn list_folders(&mut self) -> mailshift_core::Result<(Vec<ListedFolder>, Option<char>)> {
        self.timed("LIST".into(), |s| s.list_inner()).await
    }

    async fn create_folder(&mut self, folder: &str) -> mailshift_core::Result<()> {
        self.timed(format!("CREATE {folder}"), |s| s.create_inner(folder))
            .await
    }

    async fn select(&mut self, folder: &str) -> mailshift_core::Result<FolderStatus> {
        self.timed(format!("SELECT {folder}"), |s| s.open(folder, false))
            .await
    }

    async fn append(
        &mut self,
        folder: &str,
        items: &[AppendItem<'_>],
    ) -> mailshift_core::Result<Appended> {
        self.timed(format!("APPEND to {folder}"), |s| {
            s.append_inner(folder, items)
        })
        .await
    }

    async fn locate_since(&mut self, from_uid: u32) -> mailshift_core::Result<Vec<LocatedMessage>> {
        self.timed("locating messages".into(), |s| s.locate_inner(from_uid))
            .await
    }

    async fn set_flags(&mut self, uids: &[u32], flags: &FlagSet) -> mailshift_core::Result<()> {
        self.timed("UID STORE".into(), |s| s.set_flags_inner(uids, flags))
            .await
    }

    async fn expunge(&mut self, uids: &[u32]) -> mailshift_core::Result<()> {
        self.timed("UID EXPUNGE".into(), |s| s.expunge_inner(uids))
            .await
    }

    async fn transfer(
        &mut self,
        uids: &[u32],
        to: &str,
        how: Transfer,
    ) -> mailshift_core::Result<Vec<(u32, u32)>> {
        self.timed(format!("UID MOVE to {to}"), |s| {
            s.transfer_inner(uids, to, how)
        })
        .await
    }

    async fn delete_folder(&mut self, folder: &str) -> mailshift_core::Result<()> {
        self.timed(format!("DELETE {folder}"), |s| {
            s.delete_folder_inner(folder)
        })
        .await
    }
}

/// The IMAP command behind an operation's description, as a metric/span label.
fn command_of(op: &str) -> &'static str {
    const NAMED: [&str; 10] = [
        "LIST",
        "EXAMINE",
        "SELECT",
        "CREATE",
        "DELETE",
        "UID SEARCH",
        "UID STORE",
        "UID EXPUNGE",
        "UID MOVE",
        "APPEND",
    ];
    if let Some(c) = NAMED.iter().find(|c| op.starts_with(**c)) {
        return c;
    }
    if op.starts_with("listing") || op.starts_with("fetching") || op.starts_with("locating") {
        return "UID FETCH";
    }
    "OTHER"
}
