//! [`MemServer`]: an in-memory mail server behind the `MailSource`/`MailTarget` ports.

use async_trait::async_trait;
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::{FlagSet, PermanentFlags};
use mailshift_core::folder::{ListedFolder, SpecialUse};
use mailshift_core::plan::MessageMeta;
use mailshift_core::ports::{
    AppendItem, Appended, Capabilities, Connector, FetchedHeader, FetchedMessage, FolderStatus,
    HostPauses, LocatedMessage, MailSource, MailTarget, ServerIdentity, Transfer,
};
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a session is asked to do, for fault scripts and the change counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Connect,
    List,
    Examine,
    Select,
    Status,
    ListMessages,
    Fetch,
    FetchHeaders,
    Search,
    Create,
    Append,
    Store,
    Expunge,
    Move,
    Delete,
}

impl Op {
    fn writes(self) -> bool {
        matches!(
            self,
            Op::Create | Op::Append | Op::Store | Op::Expunge | Op::Move | Op::Delete | Op::Select
        )
    }
}

/// A scripted failure: the `skip`+1-th to `skip`+`times`-th matching operations fail with
/// `kind` (a dropped connection also breaks the session).
#[derive(Clone, Debug)]
pub struct Fault {
    pub op: Op,
    pub skip: usize,
    pub times: usize,
    pub kind: ErrorKind,
    /// Only APPENDs (or FETCHes) of a batch holding a message of exactly this size (a
    /// refused message; a message the source lies about).
    pub size: Option<usize>,
}

impl Fault {
    pub fn on(op: Op, kind: ErrorKind) -> Fault {
        Fault {
            op,
            skip: 0,
            times: 1,
            kind,
            size: None,
        }
    }

    pub fn skip(mut self, n: usize) -> Fault {
        self.skip = n;
        self
    }

    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }

    pub fn for_size(mut self, size: usize) -> Fault {
        self.size = Some(size);
        self
    }
}

#[derive(Clone, Debug)]
struct Msg {
    raw: Vec<u8>,
    flags: FlagSet,
    date: String,
    modseq: u64,
}

#[derive(Clone, Debug)]
struct Folder {
    uidvalidity: u32,
    uidnext: u32,
    messages: BTreeMap<u32, Msg>,
    special: Option<SpecialUse>,
    modseq: u64,
}

#[derive(Debug)]
struct State {
    folders: BTreeMap<String, Folder>,
    delimiter: char,
    caps: Capabilities,
    faults: Vec<Fault>,
    /// Commands that change the server (CREATE, APPEND, STORE, ...; SELECT counts: a
    /// source must only ever be EXAMINEd).
    writes: usize,
    /// Every command asked of the server, refused ones included, by kind.
    calls: BTreeMap<Op, usize>,
    next_validity: u32,
    /// Names the server refuses to create (e.g. containing '.').
    refused_chars: Vec<char>,
    identity: ServerIdentity,
}

/// An in-memory mail server; clones share it.
#[derive(Clone, Debug)]
pub struct MemServer(Arc<Mutex<State>>);

fn all_caps() -> Capabilities {
    Capabilities {
        uidplus: true,
        multiappend: true,
        literal_plus: true,
        literal_minus: false,
        condstore: true,
        qresync: false,
        move_: true,
        special_use: true,
        idle: false,
        append_limit: None,
        quota: false,
    }
}

impl Default for MemServer {
    fn default() -> Self {
        MemServer::new()
    }
}

impl MemServer {
    /// A server with INBOX, '/' as delimiter and UIDPLUS, MULTIAPPEND, CONDSTORE, MOVE.
    pub fn new() -> MemServer {
        let mut folders = BTreeMap::new();
        folders.insert(
            "INBOX".to_string(),
            Folder {
                uidvalidity: 1000,
                uidnext: 1,
                messages: BTreeMap::new(),
                special: None,
                modseq: 1,
            },
        );
        MemServer(Arc::new(Mutex::new(State {
            folders,
            delimiter: '/',
            caps: all_caps(),
            faults: Vec::new(),
            writes: 0,
            calls: BTreeMap::new(),
            next_validity: 1001,
            refused_chars: Vec::new(),
            identity: ServerIdentity::default(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes what the server advertises.
    pub fn with_caps(self, f: impl FnOnce(&mut Capabilities)) -> MemServer {
        f(&mut self.lock().caps);
        self
    }

    /// Refuses to create folders whose name holds one of these characters (`[CANNOT]`).
    pub fn refusing_chars(self, chars: &[char]) -> MemServer {
        self.lock().refused_chars = chars.to_vec();
        self
    }

    /// Says who it is (the peer address and ID a session reports).
    pub fn with_identity(self, identity: ServerIdentity) -> MemServer {
        self.lock().identity = identity;
        self
    }

    pub fn fault(&self, f: Fault) {
        self.lock().faults.push(f);
    }

    /// Changing commands run so far (a source must stay at 0).
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// How many `op` commands were asked of the server so far, refused ones included.
    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    pub fn create(&self, name: &str, special: Option<SpecialUse>) {
        let mut st = self.lock();
        let v = st.next_validity;
        st.next_validity += 1;
        st.folders.entry(name.to_string()).or_insert(Folder {
            uidvalidity: v,
            uidnext: 1,
            messages: BTreeMap::new(),
            special,
            modseq: 1,
        });
    }

    /// Appends a message (creating the folder if needed); returns its UID.
    pub fn put(&self, folder: &str, raw: &[u8], flags: &[&str]) -> u32 {
        self.create(folder, None);
        let mut st = self.lock();
        let Some(f) = st.folders.get_mut(folder) else {
            return 0;
        };
        let uid = f.uidnext;
        f.uidnext += 1;
        f.modseq += 1;
        let mut fs = FlagSet::new();
        for fl in flags {
            fs.insert(fl);
        }
        let modseq = f.modseq;
        f.messages.insert(
            uid,
            Msg {
                raw: raw.to_vec(),
                flags: fs,
                date: "01-Jan-2024 10:00:00 +0000".into(),
                modseq,
            },
        );
        uid
    }

    /// Expunges a message (as a user would).
    pub fn remove(&self, folder: &str, uid: u32) {
        let mut st = self.lock();
        if let Some(f) = st.folders.get_mut(folder) {
            f.messages.remove(&uid);
            f.modseq += 1;
        }
    }

    /// Sets a message's flags (as a user would).
    pub fn flag(&self, folder: &str, uid: u32, flags: &[&str]) {
        let mut st = self.lock();
        if let Some(f) = st.folders.get_mut(folder) {
            f.modseq += 1;
            let m = f.modseq;
            if let Some(msg) = f.messages.get_mut(&uid) {
                let mut fs = FlagSet::new();
                for fl in flags {
                    fs.insert(fl);
                }
                msg.flags = fs;
                msg.modseq = m;
            }
        }
    }

    /// Deletes and recreates a folder with its messages (new UIDVALIDITY, new UIDs).
    pub fn recreate(&self, folder: &str) {
        let mut st = self.lock();
        let v = st.next_validity;
        st.next_validity += 1;
        if let Some(f) = st.folders.get_mut(folder) {
            let msgs: Vec<Msg> = f.messages.values().cloned().collect();
            f.uidvalidity = v;
            f.messages.clear();
            f.uidnext = 1;
            for m in msgs {
                let uid = f.uidnext;
                f.uidnext += 1;
                f.messages.insert(uid, m);
            }
            f.modseq += 1;
        }
    }

    /// Every folder's messages as (raw, flags), in UID order: what a user would see.
    pub fn contents(&self) -> Contents {
        self.lock()
            .folders
            .iter()
            .map(|(name, f)| {
                (
                    name.clone(),
                    f.messages
                        .values()
                        .map(|m| (m.raw.clone(), m.flags.iter().map(str::to_string).collect()))
                        .collect(),
                )
            })
            .collect()
    }

    /// Messages in one folder.
    pub fn count(&self, folder: &str) -> usize {
        self.lock()
            .folders
            .get(folder)
            .map(|f| f.messages.len())
            .unwrap_or(0)
    }

    pub fn session(&self) -> MemSession {
        let caps = self.lock().caps.clone();
        MemSession {
            server: self.clone(),
            caps,
            selected: None,
            broken: false,
        }
    }

    /// Opens a session, unless a connect fault says otherwise.
    pub fn connect(&self) -> Result<MemSession> {
        let mut st = self.lock();
        trip(&mut st, Op::Connect, None)?;
        drop(st);
        Ok(self.session())
    }
}

/// Applies the first matching fault, if any is due.
fn trip(st: &mut State, op: Op, sizes: Option<&[usize]>) -> Result<()> {
    *st.calls.entry(op).or_default() += 1;
    if op.writes() {
        st.writes += 1;
    }
    for f in st.faults.iter_mut() {
        if f.op != op || f.times == 0 {
            continue;
        }
        if let Some(size) = f.size
            && !sizes.is_some_and(|s| s.contains(&size))
        {
            continue;
        }
        if f.skip > 0 {
            f.skip -= 1;
            continue;
        }
        f.times -= 1;
        return Err(Error::new(
            f.kind.clone(),
            format!("scripted {:?} failure: {}", op, f.kind.as_str()),
        ));
    }
    Ok(())
}

/// A server's folders as a user sees them: each message's bytes and flags, by UID.
pub type Contents = BTreeMap<String, Vec<(Vec<u8>, Vec<String>)>>;

/// One session on a [`MemServer`].
pub struct MemSession {
    server: MemServer,
    caps: Capabilities,
    selected: Option<String>,
    broken: bool,
}

impl MemSession {
    fn run<T>(
        &mut self,
        op: Op,
        sizes: Option<&[usize]>,
        f: impl FnOnce(&mut State, Option<&str>) -> Result<T>,
    ) -> Result<T> {
        if self.broken {
            return Err(Error::new(ErrorKind::Network, "the connection was lost"));
        }
        let mut st = self.server.lock();
        if let Err(e) = trip(&mut st, op, sizes) {
            // A refused literal leaves the connection mid-response: unusable too.
            if matches!(e.kind, ErrorKind::Network | ErrorKind::Unreachable)
                || (op == Op::Fetch && e.kind == ErrorKind::TooLarge)
            {
                self.broken = true;
            }
            return Err(e);
        }
        f(&mut st, self.selected.as_deref())
    }

    fn status_of(f: &Folder) -> FolderStatus {
        FolderStatus {
            uidvalidity: f.uidvalidity,
            uidnext: Some(f.uidnext),
            exists: f.messages.len() as u32,
            highest_modseq: Some(f.modseq),
            permanent_flags: PermanentFlags::unrestricted(),
        }
    }
}

fn folder<'a>(st: &'a mut State, name: Option<&str>) -> Result<&'a mut Folder> {
    let name = name.ok_or_else(|| Error::new(ErrorKind::Protocol, "no folder selected"))?;
    st.folders
        .get_mut(name)
        .ok_or_else(|| Error::new(ErrorKind::FolderRefused, format!("no folder {name}")))
}

fn listed(st: &State) -> (Vec<ListedFolder>, Option<char>) {
    let out = st
        .folders
        .iter()
        .map(|(name, f)| ListedFolder {
            raw: name.clone(),
            delimiter: Some(st.delimiter),
            special_use: f.special,
            selectable: true,
        })
        .collect();
    (out, Some(st.delimiter))
}

fn meta(uid: u32, m: &Msg) -> MessageMeta {
    MessageMeta {
        uid,
        size: m.raw.len() as u32,
        flags: m.flags.clone(),
        internal_date: m.date.clone(),
    }
}

fn header(uid: u32, m: &Msg) -> FetchedHeader {
    FetchedHeader {
        uid,
        size: m.raw.len() as u32,
        flags: m.flags.clone(),
        internal_date: m.date.clone(),
        header: mailshift_core::fingerprint::header_section(&m.raw).to_vec(),
    }
}

#[async_trait]
impl MailSource for MemSession {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn identity(&self) -> ServerIdentity {
        self.server.lock().identity.clone()
    }
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)> {
        self.run(Op::List, None, |st, _| Ok(listed(st)))
    }
    async fn examine(&mut self, name: &str) -> Result<FolderStatus> {
        let r = self.run(Op::Examine, None, |st, _| {
            Ok(Self::status_of(folder(st, Some(name))?))
        })?;
        self.selected = Some(name.to_string());
        Ok(r)
    }
    async fn status(&mut self, name: &str) -> Result<FolderStatus> {
        self.run(Op::Status, None, |st, _| {
            Ok(Self::status_of(folder(st, Some(name))?))
        })
    }
    async fn list_messages(&mut self, from_uid: u32) -> Result<Vec<MessageMeta>> {
        self.run(Op::ListMessages, None, |st, sel| {
            Ok(folder(st, sel)?
                .messages
                .range(from_uid.max(1)..)
                .map(|(u, m)| meta(*u, m))
                .collect())
        })
    }
    async fn list_messages_of(&mut self, uids: &[u32]) -> Result<Vec<MessageMeta>> {
        self.run(Op::ListMessages, None, |st, sel| {
            let f = folder(st, sel)?;
            let mut v: Vec<MessageMeta> = uids
                .iter()
                .filter_map(|u| f.messages.get(u).map(|m| meta(*u, m)))
                .collect();
            v.sort_by_key(|m| m.uid);
            v.dedup_by_key(|m| m.uid);
            Ok(v)
        })
    }
    async fn fetch_messages(&mut self, uids: &[u32], _largest: u64) -> Result<Vec<FetchedMessage>> {
        let sizes: Vec<usize> = {
            let mut st = self.server.lock();
            match folder(&mut st, self.selected.as_deref()) {
                Ok(f) => uids
                    .iter()
                    .filter_map(|u| f.messages.get(u).map(|m| m.raw.len()))
                    .collect(),
                Err(_) => Vec::new(),
            }
        };
        self.run(Op::Fetch, Some(&sizes), |st, sel| {
            let f = folder(st, sel)?;
            let mut v: Vec<FetchedMessage> = uids
                .iter()
                .filter_map(|u| {
                    f.messages.get(u).map(|m| FetchedMessage {
                        uid: *u,
                        flags: m.flags.clone(),
                        internal_date: m.date.clone(),
                        raw: m.raw.clone(),
                    })
                })
                .collect();
            v.sort_by_key(|m| m.uid);
            v.dedup_by_key(|m| m.uid);
            Ok(v)
        })
    }
    async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<FetchedHeader>> {
        self.run(Op::FetchHeaders, None, |st, sel| {
            let f = folder(st, sel)?;
            let mut v: Vec<FetchedHeader> = uids
                .iter()
                .filter_map(|u| f.messages.get(u).map(|m| header(*u, m)))
                .collect();
            v.sort_by_key(|h| h.uid);
            v.dedup_by_key(|h| h.uid);
            Ok(v)
        })
    }
    async fn uids(&mut self) -> Result<Vec<u32>> {
        self.run(Op::Search, None, |st, sel| {
            Ok(folder(st, sel)?.messages.keys().copied().collect())
        })
    }
    async fn changed_since(&mut self, modseq: u64) -> Result<Vec<(u32, FlagSet)>> {
        self.run(Op::ListMessages, None, |st, sel| {
            Ok(folder(st, sel)?
                .messages
                .iter()
                .filter(|(_, m)| m.modseq > modseq)
                .map(|(u, m)| (*u, m.flags.clone()))
                .collect())
        })
    }
    async fn wait_for_change(&mut self, timeout: Duration) -> Result<bool> {
        tokio_free_sleep(timeout);
        Ok(false)
    }
}

/// The fake never waits: a test that asks for IDLE gets "nothing happened" at once.
fn tokio_free_sleep(_: Duration) {}

#[async_trait]
impl MailTarget for MemSession {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn identity(&self) -> ServerIdentity {
        self.server.lock().identity.clone()
    }
    async fn list_folders(&mut self) -> Result<(Vec<ListedFolder>, Option<char>)> {
        self.run(Op::List, None, |st, _| Ok(listed(st)))
    }
    async fn create_folder(&mut self, name: &str) -> Result<()> {
        self.run(Op::Create, None, |st, _| {
            if let Some(c) = st.refused_chars.iter().find(|c| name.contains(**c)) {
                return Err(Error::new(
                    ErrorKind::FolderRefused,
                    format!("[CANNOT] character not allowed in mailbox name: '{c}'"),
                ));
            }
            let v = st.next_validity;
            st.next_validity += 1;
            st.folders.entry(name.to_string()).or_insert(Folder {
                uidvalidity: v,
                uidnext: 1,
                messages: BTreeMap::new(),
                special: None,
                modseq: 1,
            });
            Ok(())
        })
    }
    async fn select(&mut self, name: &str) -> Result<FolderStatus> {
        let r = self.run(Op::Select, None, |st, _| {
            Ok(Self::status_of(folder(st, Some(name))?))
        })?;
        self.selected = Some(name.to_string());
        Ok(r)
    }
    async fn status(&mut self, name: &str) -> Result<FolderStatus> {
        self.run(Op::Status, None, |st, _| {
            Ok(Self::status_of(folder(st, Some(name))?))
        })
    }
    async fn uids(&mut self) -> Result<Vec<u32>> {
        MailSource::uids(self).await
    }
    async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<FetchedHeader>> {
        MailSource::fetch_headers(self, uids).await
    }
    async fn locate(&mut self, uids: &[u32]) -> Result<Vec<LocatedMessage>> {
        self.run(Op::Fetch, None, |st, sel| {
            let f = folder(st, sel)?;
            Ok(uids
                .iter()
                .filter_map(|u| {
                    f.messages.get(u).map(|m| LocatedMessage {
                        uid: *u,
                        size: m.raw.len() as u32,
                        fingerprint: Fingerprint::of(&m.raw),
                    })
                })
                .collect())
        })
    }
    async fn append(&mut self, name: &str, items: &[AppendItem<'_>]) -> Result<Appended> {
        if items.len() > 1 && !self.caps.multiappend {
            return Err(Error::new(ErrorKind::Protocol, "no MULTIAPPEND"));
        }
        let sizes: Vec<usize> = items.iter().map(|i| i.raw.len()).collect();
        let uidplus = self.caps.uidplus;
        self.run(Op::Append, Some(&sizes), |st, _| {
            let f = folder(st, Some(name))
                .map_err(|e| Error::new(ErrorKind::FolderRefused, format!("[TRYCREATE] {e}")))?;
            let mut uids = Vec::new();
            for i in items {
                let uid = f.uidnext;
                f.uidnext += 1;
                f.modseq += 1;
                f.messages.insert(
                    uid,
                    Msg {
                        raw: i.raw.to_vec(),
                        flags: i.flags.clone(),
                        date: i.internal_date.to_string(),
                        modseq: f.modseq,
                    },
                );
                uids.push(uid);
            }
            Ok(if uidplus {
                Appended::Uids {
                    uidvalidity: f.uidvalidity,
                    uids,
                }
            } else {
                Appended::Unknown
            })
        })
    }
    async fn locate_since(&mut self, from_uid: u32) -> Result<Vec<LocatedMessage>> {
        self.run(Op::Fetch, None, |st, sel| {
            Ok(folder(st, sel)?
                .messages
                .range(from_uid.max(1)..)
                .map(|(u, m)| LocatedMessage {
                    uid: *u,
                    size: m.raw.len() as u32,
                    fingerprint: Fingerprint::of(&m.raw),
                })
                .collect())
        })
    }
    async fn set_flags(&mut self, uids: &[u32], flags: &FlagSet) -> Result<()> {
        self.run(Op::Store, None, |st, sel| {
            let f = folder(st, sel)?;
            f.modseq += 1;
            let m = f.modseq;
            for u in uids {
                if let Some(msg) = f.messages.get_mut(u) {
                    msg.flags = flags.clone();
                    msg.modseq = m;
                }
            }
            Ok(())
        })
    }
    async fn expunge(&mut self, uids: &[u32]) -> Result<()> {
        if !self.caps.uidplus {
            return Err(Error::new(ErrorKind::Protocol, "no UIDPLUS"));
        }
        self.run(Op::Expunge, None, |st, sel| {
            let f = folder(st, sel)?;
            for u in uids {
                f.messages.remove(u);
            }
            f.modseq += 1;
            Ok(())
        })
    }
    async fn expunge_restoring(&mut self, uids: &[u32]) -> Result<()> {
        self.run(Op::Expunge, None, |st, sel| {
            let f = folder(st, sel)?;
            for u in uids {
                f.messages.remove(u);
            }
            f.modseq += 1;
            Ok(())
        })
    }
    async fn transfer(&mut self, uids: &[u32], to: &str, how: Transfer) -> Result<Vec<(u32, u32)>> {
        let uidplus = self.caps.uidplus;
        self.run(Op::Move, None, |st, sel| {
            let from = sel.ok_or_else(|| Error::new(ErrorKind::Protocol, "no folder selected"))?;
            let moving: Vec<(u32, Msg)> = {
                let f = folder(st, Some(from))?;
                uids.iter()
                    .filter_map(|u| f.messages.get(u).map(|m| (*u, m.clone())))
                    .collect()
            };
            let mut pairs = Vec::new();
            {
                let t = folder(st, Some(to))?;
                for (u, m) in &moving {
                    let n = t.uidnext;
                    t.uidnext += 1;
                    t.modseq += 1;
                    t.messages.insert(n, m.clone());
                    pairs.push((*u, n));
                }
            }
            if how == Transfer::Move {
                let f = folder(st, Some(from))?;
                for (u, _) in &moving {
                    f.messages.remove(u);
                }
                f.modseq += 1;
            }
            Ok(if uidplus { pairs } else { Vec::new() })
        })
    }
    async fn delete_folder(&mut self, name: &str) -> Result<()> {
        self.run(Op::Delete, None, |st, _| {
            st.folders.remove(name);
            Ok(())
        })
    }
}

/// Both servers of one mailbox.
pub struct MemConnector {
    pub source: MemServer,
    pub target: MemServer,
    pub pauses: Arc<HostPauses>,
}

impl MemConnector {
    pub fn new(source: &MemServer, target: &MemServer) -> MemConnector {
        MemConnector {
            source: source.clone(),
            target: target.clone(),
            pauses: Arc::new(HostPauses::default()),
        }
    }
}

#[async_trait]
impl Connector for MemConnector {
    async fn source(&self) -> Result<Box<dyn MailSource>> {
        Ok(Box::new(self.source.connect()?))
    }
    async fn target(&self) -> Result<Box<dyn MailTarget>> {
        Ok(Box::new(self.target.connect()?))
    }
    async fn target_reader(&self) -> Result<Box<dyn MailSource>> {
        Ok(Box::new(self.target.connect()?))
    }
    fn hosts(&self) -> (String, String) {
        ("source:143".into(), "target:143".into())
    }
    fn throttled_for(&self) -> Option<Duration> {
        self.pauses
            .remaining("source:143")
            .max(self.pauses.remaining("target:143"))
    }
}
