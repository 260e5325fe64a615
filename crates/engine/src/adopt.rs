//! Destination-side idempotence: before copying, messages the destination folder already
//! holds but the state does not account for (a lost or new state file, another spelling
//! of a server address, a restored database, another tool's earlier copy) are recognised
//! by content and recorded instead of appended again.
//!
//! Recognition is by size and a SHA-256 of the header section, read with `BODY.PEEK
//! [HEADER]` on both sides: no body is downloaded for a match that is unambiguous (one
//! source message and one destination message with that key). Where a key is shared
//! (identical headers and size), the full contents decide. An empty destination folder,
//! or one whose every message is accounted for, costs nothing beyond its counters.

use mailshift_core::Result;
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::{FlagSet, PermanentFlags};
use mailshift_core::job::FolderJob;
use mailshift_core::ports::{
    CopiedMessage, FetchedHeader, FolderState, FolderStatus, MailSource, MailTarget, StateStore,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Header sections asked for at once.
const CHUNK: usize = 500;

type Key = (u32, Fingerprint);

/// Destination messages nobody's state accounts for, by content key.
pub struct DestIndex {
    by_key: HashMap<Key, Vec<(u32, FlagSet)>>,
    sizes: HashSet<u32>,
}

impl DestIndex {
    /// Whether a source message of this size may match something.
    pub fn may_hold(&self, size: u32) -> bool {
        self.sizes.contains(&size)
    }
}

/// What adoption recognised.
#[derive(Debug, Default)]
pub struct Adopted {
    pub messages: Vec<CopiedMessage>,
    pub bytes: u64,
    /// Destination copies whose flags were brought in line with the source.
    pub reflagged: u64,
}

/// Indexes what the selected destination folder holds beyond what this folder's state
/// (`known`) and the states of other source folders merged into it account for; None
/// when there is nothing unaccounted for.
pub async fn index_destination(
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    job: &FolderJob,
    state: &FolderState,
    known: &[&CopiedMessage],
    dstat: &FolderStatus,
) -> Result<Option<DestIndex>> {
    if dstat.exists == 0 {
        return Ok(None);
    }
    // Other source folders copied into the same destination folder (merged by a map).
    let siblings: Vec<FolderState> = store
        .folders(job.migration_id)
        .await?
        .into_iter()
        .filter(|s| s.id != state.id && s.dest_folder == job.dest_folder)
        .collect();
    if siblings.is_empty() && dstat.exists as usize <= known.len() {
        return Ok(None);
    }
    // The destination is listed before the siblings' states are read: a sibling that
    // appends meanwhile has announced its batch (pending) first, so its arrivals are
    // excluded below either way.
    let dest_uids = target.uids().await?;
    let mut accounted: HashSet<u32> = known.iter().filter_map(|c| c.dest_uid).collect();
    let mut unplaced: Vec<Key> = known
        .iter()
        .filter(|c| c.dest_uid.is_none())
        .filter_map(|c| c.header_fingerprint.map(|h| (c.size, h)))
        .collect();
    let mut in_flight_from = u32::MAX;
    for s in &siblings {
        for c in store.copied(s.id).await? {
            match c.dest_uid {
                Some(d) => {
                    accounted.insert(d);
                }
                None => unplaced.extend(c.header_fingerprint.map(|h| (c.size, h))),
            }
        }
        if let Some(p) = &s.pending {
            in_flight_from = in_flight_from.min(p.dest_uidnext);
        }
    }
    let candidates: Vec<u32> = dest_uids
        .into_iter()
        .filter(|u| !accounted.contains(u) && *u < in_flight_from)
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let mut by_key: HashMap<Key, Vec<(u32, FlagSet)>> = HashMap::new();
    for chunk in candidates.chunks(CHUNK) {
        for h in target.fetch_headers(chunk).await? {
            by_key.entry(key(&h)).or_default().push((h.uid, h.flags));
        }
    }
    // Copies recorded without their destination UID (no UIDPLUS) answer for one each.
    for k in unplaced {
        if let Some(v) = by_key.get_mut(&k) {
            v.pop();
        }
    }
    by_key.retain(|_, v| !v.is_empty());
    if by_key.is_empty() {
        return Ok(None);
    }
    let sizes = by_key.keys().map(|(s, _)| *s).collect();
    Ok(Some(DestIndex { by_key, sizes }))
}

fn key(h: &FetchedHeader) -> Key {
    (h.size, Fingerprint::of(&h.header))
}

/// Matches the pending source messages `pending` (UID, size) against the index and
/// returns what is already there. The destination folder must be selected and the
/// source folder examined.
pub async fn match_pending(
    source: &mut dyn MailSource,
    target: &mut dyn MailTarget,
    mut index: DestIndex,
    pending: &[(u32, u32)],
    permanent: &PermanentFlags,
) -> Result<Adopted> {
    let wanted: Vec<u32> = pending
        .iter()
        .filter(|(_, size)| index.may_hold(*size))
        .map(|(uid, _)| *uid)
        .collect();
    let mut src_by_key: BTreeMap<Key, Vec<FetchedHeader>> = BTreeMap::new();
    for chunk in wanted.chunks(CHUNK) {
        for h in source.fetch_headers(chunk).await? {
            let k = key(&h);
            if index.by_key.contains_key(&k) {
                src_by_key.entry(k).or_default().push(h);
            }
        }
    }
    let mut out = Adopted::default();
    let mut reflag: BTreeMap<String, (FlagSet, Vec<u32>)> = BTreeMap::new();
    for (k, sources) in src_by_key {
        let Some(dests) = index.by_key.remove(&k) else {
            continue;
        };
        let pairs: Vec<(FetchedHeader, (u32, FlagSet), Fingerprint)> =
            if sources.len() == 1 && dests.len() == 1 {
                // Unambiguous: one message with these headers and size on each side.
                let s = sources.into_iter().next();
                let d = dests.into_iter().next();
                match (s, d) {
                    (Some(s), Some(d)) => vec![(s, d, k.1)],
                    _ => Vec::new(),
                }
            } else {
                by_content(source, target, sources, dests).await?
            };
        for (s, (dest_uid, dest_flags), fp) in pairs {
            let mut flags = s.flags.clone();
            flags.restrict_to(permanent);
            if flags != dest_flags {
                reflag
                    .entry(flags.to_storage())
                    .or_insert_with(|| (flags.clone(), Vec::new()))
                    .1
                    .push(dest_uid);
            }
            out.bytes += u64::from(s.size);
            out.messages.push(CopiedMessage {
                source_uid: s.uid,
                dest_uid: Some(dest_uid),
                flags,
                size: s.size,
                // The full content's hash when it was compared, else the header's: a
                // later lookup by full fingerprint then misses and falls back to
                // adoption by header, never to a wrong match.
                fingerprint: fp,
                header_fingerprint: Some(k.1),
            });
        }
    }
    for (flags, uids) in reflag.values() {
        target.set_flags(uids, flags).await?;
        out.reflagged += uids.len() as u64;
    }
    out.messages.sort_by_key(|c| c.source_uid);
    Ok(out)
}

/// Pairs messages sharing headers and size by their full contents (downloads both
/// sides of that group, a few at a time).
async fn by_content(
    source: &mut dyn MailSource,
    target: &mut dyn MailTarget,
    sources: Vec<FetchedHeader>,
    dests: Vec<(u32, FlagSet)>,
) -> Result<Vec<(FetchedHeader, (u32, FlagSet), Fingerprint)>> {
    let mut dest_by_fp: HashMap<Fingerprint, Vec<(u32, FlagSet)>> = HashMap::new();
    let flags_of: HashMap<u32, FlagSet> = dests.iter().cloned().collect();
    for chunk in dests.chunks(50) {
        let uids: Vec<u32> = chunk.iter().map(|(u, _)| *u).collect();
        for m in target.locate(&uids).await? {
            let f = flags_of.get(&m.uid).cloned().unwrap_or_default();
            dest_by_fp
                .entry(m.fingerprint)
                .or_default()
                .push((m.uid, f));
        }
    }
    for v in dest_by_fp.values_mut() {
        // Lowest UID first.
        v.sort_by_key(|(uid, _)| std::cmp::Reverse(*uid));
    }
    let mut out = Vec::new();
    let largest = sources.iter().map(|s| u64::from(s.size)).max().unwrap_or(0);
    let by_uid: HashMap<u32, FetchedHeader> = sources.into_iter().map(|s| (s.uid, s)).collect();
    let mut uids: Vec<u32> = by_uid.keys().copied().collect();
    uids.sort_unstable();
    for chunk in uids.chunks(50) {
        for m in source.fetch_messages(chunk, largest).await? {
            let fp = Fingerprint::of(&m.raw);
            if let (Some(d), Some(s)) = (
                dest_by_fp.get_mut(&fp).and_then(Vec::pop),
                by_uid.get(&m.uid),
            ) {
                out.push((s.clone(), d, fp));
            }
        }
    }
    Ok(out)
}
