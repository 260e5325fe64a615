//! One logged-in IMAP session, usable as a source (read-only: EXAMINE, BODY.PEEK) or as a
//! destination (CREATE, SELECT, MULTIAPPEND). Every command runs under the configured
//! timeout; after a timeout or I/O error the session is marked broken and must be dropped.

use crate::connect::ServerConfig;
use crate::error::ImapError;
use crate::guard::{GuardControl, LiteralGuard};
use crate::raw::{self, Sess};
use async_trait::async_trait;
use imap_proto::rfc4315::UidSetMember;
use imap_proto::{Capability, Response};
use mailshift_core::flags::FlagSet;
use mailshift_core::folder::ListedFolder;
use mailshift_core::plan::MessageMeta;
use mailshift_core::ports::{
    AppendItem, Appended, Capabilities, FetchedHeader, FetchedMessage, FolderStatus,
    LocatedMessage, MailSource, MailTarget, ServerIdentity, Transfer,
};
use mailshift_core::uidset;
use std::future::Future;
use std::time::Duration;

mod append;
mod change;
mod fetch;
mod idle;
mod list;
mod select;

pub struct ImapSession {
    sess: Sess,
    cfg: ServerConfig,
    caps: Capabilities,
    /// Who answered: the address connected to and the server's ID answer.
    identity: ServerIdentity,
    /// The literal guard's limit for this session's transport.
    guard: std::sync::Arc<GuardControl>,
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
    pub(crate) async fn start(
        mut sess: Sess,
        cfg: ServerConfig,
        peer: Option<std::net::SocketAddr>,
        mut guard: std::sync::Arc<GuardControl>,
    ) -> Result<Self, ImapError> {
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
            // Below the compression layer the bytes are compressed: the guard moves up.
            guard.disable();
            let outer = GuardControl::new(cfg.max_literal);
            let watcher = LiteralGuard::new(outer.clone());
            guard = outer;
            sess = match tokio::time::timeout(
                cfg.timeout,
                sess.compress(move |d| {
                    tokio::io::BufWriter::with_capacity(
                        64 * 1024,
                        crate::connect::Transport::deflate(d, watcher),
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
        let mut id_fields = Vec::new();
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
                Ok(Ok(server)) => {
                    tracing::debug!(server = %cfg.label(), id = ?server, "ID");
                    if let Some(map) = server {
                        id_fields = map.into_iter().collect::<Vec<(String, String)>>();
                        id_fields.sort();
                    }
                }
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
            identity: ServerIdentity {
                peer,
                id: id_fields,
            },
            guard,
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

    fn identity(&self) -> ServerIdentity {
        self.identity.clone()
    }

    async fn status(&mut self, folder: &str) -> mailshift_core::Result<FolderStatus> {
        self.timed(format!("STATUS {folder}"), |s| s.status_inner(folder))
            .await
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
        largest: u64,
    ) -> mailshift_core::Result<Vec<FetchedMessage>> {
        self.timed("fetching messages".into(), |s| s.fetch_inner(uids, largest))
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

    fn identity(&self) -> ServerIdentity {
        self.identity.clone()
    }

    async fn status(&mut self, folder: &str) -> mailshift_core::Result<FolderStatus> {
        self.timed(format!("STATUS {folder}"), |s| s.status_inner(folder))
            .await
    }

    async fn uids(&mut self) -> mailshift_core::Result<Vec<u32>> {
        self.timed("UID SEARCH".into(), |s| s.uids_inner()).await
    }

    async fn fetch_headers(&mut self, uids: &[u32]) -> mailshift_core::Result<Vec<FetchedHeader>> {
        self.timed("fetching headers".into(), |s| s.fetch_headers_inner(uids))
            .await
    }

    async fn locate(&mut self, uids: &[u32]) -> mailshift_core::Result<Vec<LocatedMessage>> {
        let set = sorted_set(uids);
        self.timed("locating messages".into(), |s| async move {
            s.locate_set(&set, 1).await
        })
        .await
    }

    async fn expunge_restoring(&mut self, uids: &[u32]) -> mailshift_core::Result<()> {
        self.timed("EXPUNGE".into(), |s| s.expunge_restoring_inner(uids))
            .await
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
    const NAMED: [&str; 12] = [
        "LIST",
        "EXAMINE",
        "SELECT",
        "STATUS",
        "EXPUNGE",
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
